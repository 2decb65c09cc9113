"""The paper's study: named experiments with presets, a resumable runner, analysis and the report.

* :mod:`~sleepcl.study.experiments` -- presets and the run configs of each experiment (pure data);
* :mod:`~sleepcl.study.run` -- trains what is missing through :func:`sleepcl.runs.runner.run_configs`;
* :mod:`~sleepcl.study.analysis` -- means, standard errors, matches, best N, the claims checks;
* :mod:`~sleepcl.study.report` -- plots, tables and ``report.md``;
* :mod:`~sleepcl.study.paper` -- the paper's own numbers, in one place;
* :mod:`~sleepcl.cli.study` -- ``sleepcl study`` and ``sleepcl report``.

``run_study`` and ``write_report`` are imported lazily, so ``sleepcl --help`` does not load matplotlib.
"""

from typing import Any

from .experiments import EXPERIMENTS, PRESETS, StudySettings, experiment_configs, settings, study_configs

__all__ = ["EXPERIMENTS", "PRESETS", "StudySettings", "experiment_configs", "run_study", "settings",
           "study_configs", "write_report"]


def __getattr__(name: str) -> Any:
    if name == "run_study":
        from .run import run_study
        return run_study
    if name == "write_report":
        from .report import write_report
        return write_report
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
