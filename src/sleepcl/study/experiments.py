"""The study's experiments as data: presets, and the run configs each experiment needs (no training here).

Five experiments, each a function of :class:`StudySettings` (a preset resolved for one benchmark):

============ ============== ============================================================================
name         paper          what it trains
============ ============== ============================================================================
pruning      Figure 1       PackNet, Memory, Multinet over a grid of final free fractions p
matching     Table 1, Fig 3 PackNet at a few p (targets) and the baselines over the grid (monotone fit),
                            plus the paper's ``minimize_scalar`` search, which asks for runs as it goes
budget       Figure 2       PackNet at fixed retraining budget B, N over the divisors of B, several p
nobudget     Figure 4       PackNet with R epochs per round fixed, so B = R * N grows with N
schedules    extension      uniform / lengthening / cubic sleep schedules at the same B, several N and p
============ ============== ============================================================================

Presets: ``paper`` (Table 2 hyperparameters, the paper's grids and seed counts: 5 seeds for the
pruning/matching experiments, 10 for Figure 2), ``quick`` (minutes on 2 CPU cores: fewer epochs, seeds
and grid points, epochs scaled to the benchmark's size), ``vgg-cpu`` (the paper's VGG protocol -- E, B,
batch, Figure 2's N and p, 10 seeds -- scaled to hours on 2 CPU cores: half the widths, a subsample of
each task's data, a larger learning rate; meant for ``fashion-mnist-32``) and ``tiny`` (seconds; for
tests and smoke runs).

Configs are built so that experiments share runs wherever they can: a config's identity is its hash, so
the PackNet runs at ``N = 1`` of Figure 2 are the Figure 1 runs, the uniform schedule of the schedules
experiment is Figure 2's, and ``study all`` trains each distinct config once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from ..config import BENCHMARK_NAMES, PAPER_DEFAULTS, RunConfig, default_network
from ..schedule import SCHEDULES

__all__ = [
    "BASELINES",
    "EXPERIMENTS",
    "PRESETS",
    "StudySettings",
    "divisors",
    "experiment_configs",
    "make_config",
    "matching_bounds",
    "settings",
    "study_configs",
]

EXPERIMENTS: tuple[str, ...] = ("pruning", "matching", "budget", "nobudget", "schedules")
PRESETS: tuple[str, ...] = ("quick", "paper", "vgg-cpu", "tiny")
# The idealized baselines PackNet is matched against. A further baseline (e.g. a grow-only Memory) is one more
# entry here: Figure 1, the matching grid, both matching methods, the claims and the report all follow it.
BASELINES: tuple[str, ...] = ("memory", "multinet")
STRATEGIES: tuple[str, ...] = ("packnet", *BASELINES)

TITLES: dict[str, str] = {  # what each experiment is; which figure of the paper: study.paper.figure_label
    "pruning": "Accuracy against final free fraction",
    "matching": "Matching PackNet's accuracy with fewer weights",
    "budget": "Sleep cycles on a fixed retraining budget",
    "nobudget": "Sleep cycles without a budget",
    "schedules": "Sleep schedules at a fixed budget",
}


def divisors(n: int) -> tuple[int, ...]:
    """The divisors of ``n`` in increasing order (the N a uniform schedule allows for budget ``n``)."""
    if n < 1:
        raise ValueError(f"need a positive budget, got {n}")
    return tuple(d for d in range(1, n + 1) if n % d == 0)


@dataclass(frozen=True)
class StudySettings:
    """One preset resolved for one benchmark: everything the experiments need to make their configs."""

    preset: str
    benchmark: str
    network: str
    epochs: int                      # E (training epochs per task)
    retrain_epochs: int              # B (the night's budget)
    batch_size: int
    lr: float
    widths: tuple[int, ...] | None   # None: the paper's architecture
    n_tasks: int
    seeds: tuple[int, ...]           # pruning, matching, nobudget
    budget_seeds: tuple[int, ...]    # budget and schedules (Figure 2: 10 in the paper)
    pruning_grid: tuple[float, ...]
    matching_ps: tuple[float, ...]
    matching_compression_bounds: tuple[float, float]  # search p' where (1-p)/(1-p') lies in this range
    matching_bounds_factor: float | None  # if set: search within this factor of the monotone fit's compression
    matching_xatol: float            # minimize_scalar tolerance in log(1 - p)
    matching_maxiter: int
    n_bootstrap: int
    budget_ps: tuple[float, ...]
    budget_rounds: tuple[int, ...]   # N: the divisors of B
    nobudget_ps: tuple[float, ...]
    nobudget_round_epochs: int       # R
    nobudget_rounds: tuple[int, ...]
    schedules: tuple[str, ...]
    schedules_ps: tuple[float, ...]
    schedules_rounds: tuple[int, ...]
    train_size: int | None = None     # training samples kept per task (None: all); RunConfig.extra
    test_size: int | None = None      # test samples kept per task (None: all)
    baselines: tuple[str, ...] = BASELINES  # matched against PackNet in Figure 1 and Table 1 (--baselines)

    @property
    def strategies(self) -> tuple[str, ...]:
        """PackNet and the baselines: the strategies of Figure 1."""
        return ("packnet", *self.baselines)

    def __post_init__(self) -> None:
        if not self.baselines or "packnet" in self.baselines or len(set(self.baselines)) != len(self.baselines):
            raise ValueError(f"baselines must be distinct strategies other than packnet, got {self.baselines}")
        missing = [p for p in self.matching_ps if p not in self.pruning_grid]
        if missing:
            raise ValueError(f"matching p {missing} must be points of the pruning grid {self.pruning_grid}")
        bad_n = [n for n in self.budget_rounds if self.retrain_epochs % n]
        if bad_n:
            raise ValueError(f"budget rounds {bad_n} do not divide B={self.retrain_epochs}")
        if not set(self.schedules_ps) <= set(self.budget_ps):
            raise ValueError("schedule p values must be budget p values (the uniform runs are shared)")
        if not set(self.schedules_rounds) <= set(self.budget_rounds):
            raise ValueError("schedule rounds must be budget rounds (the uniform runs are shared)")
        unknown = [s for s in self.schedules if s not in SCHEDULES]
        if unknown or "uniform" not in self.schedules:
            raise ValueError(f"schedules must include 'uniform' and be among {list(SCHEDULES)}, got {self.schedules}")
        lo, hi = self.matching_compression_bounds
        if not 0 < lo < 1 < hi:
            raise ValueError(f"matching compression bounds must satisfy 0 < lo < 1 < hi, got {(lo, hi)}")
        if self.matching_bounds_factor is not None and not self.matching_bounds_factor > 1:
            raise ValueError(f"matching_bounds_factor must be > 1 (or None), got {self.matching_bounds_factor}")

    def describe(self) -> str:
        arch = "x".join(str(w) for w in self.widths) if self.widths else "the paper's"
        data = "".join(f", {n} {what} samples per task" for what, n in (("training", self.train_size),
                                                                         ("test", self.test_size)) if n)
        return (f"{self.network.upper()} ({arch} widths), {self.n_tasks} tasks, E={self.epochs}, "
                f"B={self.retrain_epochs}, batch {self.batch_size}, Adam lr {self.lr:g}{data}")

    def extra(self) -> dict[str, int]:
        """The run configs' ``extra``: the per-task subsamples, where set (empty: all data, the usual hash)."""
        return {k: v for k, v in (("train_size", self.train_size), ("test_size", self.test_size)) if v}

    def with_seeds(self, seeds: Sequence[int]) -> "StudySettings":
        """The same settings with every experiment's seeds replaced by ``seeds`` (``--seeds``)."""
        seeds = tuple(int(s) for s in seeds)
        if not seeds:
            raise ValueError("--seeds names no seed")
        return dataclasses.replace(self, seeds=seeds, budget_seeds=seeds)


# --------------------------------------------------------------------------------------------- presets

# Steps per task-epoch differ 15x between mnist-5k (720 training samples per task, 6 steps) and the
# 60,000-image datasets (~10,800 per task, 85 steps), so the quick preset gives the small benchmark more
# epochs, seeds and rounds; on the large ones it keeps E = 1 and the smallest budget whose divisors give
# three N (B = 4), and trims search steps. Every experiment has at least 3 seeds, the fewest with which a
# difference is tested (study.stats.MIN_N). Measured here (2 cores, --threads 2): see the committed reports
# under docs/results/.
_QUICK_SMALL = dict(epochs=6, retrain_epochs=12, seeds=(0, 1, 2), budget_seeds=(0, 1, 2, 3),
                    matching_maxiter=5, nobudget_rounds=(1, 2, 3))
_QUICK_LARGE = dict(epochs=1, retrain_epochs=4, seeds=(0, 1, 2), budget_seeds=(0, 1, 2),
                    matching_maxiter=4, nobudget_rounds=(1, 2))
_QUICK_VGG = dict(epochs=1, retrain_epochs=2, seeds=(0, 1), budget_seeds=(0, 1),
                  matching_maxiter=4, nobudget_rounds=(1, 2))


# The paper's grids for each network (Figures 1-4, Table 1); the rest of the paper preset is shared.
_PAPER_GRIDS = {
    # the grid runs past the paper's p = 0.995 to 0.9998: Memory matches PackNet at 0.995 beyond 0.999 on mnist-5k,
    # and the monotone fit does not extrapolate
    "mlp": dict(pruning_grid=(0.5, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.997, 0.998, 0.999, 0.9995, 0.9998),
                matching_ps=(0.95, 0.99, 0.995), budget_ps=(0.9, 0.95, 0.99, 0.995),
                nobudget_ps=(0.95, 0.99, 0.995), nobudget_rounds=(1, 2, 3, 4), schedules_ps=(0.99, 0.995)),
    "vgg": dict(pruning_grid=(0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99),
                matching_ps=(0.8, 0.9, 0.95), budget_ps=(0.8, 0.9, 0.95),
                nobudget_ps=(0.8, 0.9, 0.95), nobudget_rounds=None, schedules_ps=(0.9, 0.95)),
}


def _paper(network: str) -> dict:
    b = PAPER_DEFAULTS[network]["retrain_epochs"]
    grids = dict(_PAPER_GRIDS[network])
    return dict(
        epochs=PAPER_DEFAULTS[network]["epochs"], retrain_epochs=b, widths=None, n_tasks=5,
        seeds=tuple(range(5)), budget_seeds=tuple(range(10)),
        # The search's interval: compressions 0.5x to 64x (the data shows matches near 10x; the paper's
        # largest is 3.3x), and a tolerance of 1% of the kept fraction 1 - p' (the ratio to within 1%).
        matching_compression_bounds=(0.5, 64.0), matching_bounds_factor=None,
        matching_xatol=1e-2, matching_maxiter=20, n_bootstrap=1000,
        budget_rounds=divisors(b), nobudget_round_epochs=b,
        schedules=tuple(SCHEDULES), schedules_rounds=divisors(b)[1:],
        **{**grids, "nobudget_rounds": grids["nobudget_rounds"] or divisors(b)},
    )


def _quick(benchmark: str, network: str) -> dict:
    if network == "vgg":
        base = _QUICK_VGG
        grid, match = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98), (0.8, 0.9, 0.95)
        budget_ps, nobudget_ps, sched_ps = (0.8, 0.95), (0.8, 0.95), (0.95,)
    elif benchmark == "mnist-5k":
        base = _QUICK_SMALL
        grid, match = (0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.998, 0.999, 0.9995, 0.9998), (0.95, 0.99, 0.995)
        budget_ps, nobudget_ps, sched_ps = (0.95, 0.99, 0.995), (0.99, 0.995), (0.99, 0.995)
    else:
        base = _QUICK_LARGE
        grid, match = (0.8, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9998), (0.95, 0.99, 0.995)
        budget_ps, nobudget_ps, sched_ps = (0.95, 0.99, 0.995), (0.99, 0.995), (0.995,)
    rounds = divisors(base["retrain_epochs"])
    return dict(
        **base, widths=None, n_tasks=5,
        pruning_grid=grid, matching_ps=match, matching_compression_bounds=(0.8, 64.0), matching_bounds_factor=2.0,
        matching_xatol=0.05, n_bootstrap=500,
        budget_ps=budget_ps, budget_rounds=rounds,
        nobudget_ps=nobudget_ps, nobudget_round_epochs=base["retrain_epochs"],
        schedules=tuple(SCHEDULES), schedules_ps=sched_ps,
        schedules_rounds=tuple(n for n in rounds if n > 1)[-2:],
    )


# The paper's VGG protocol on 2 shared CPU cores (for fashion-mnist-32). Measured here on 2026-12-03 with the
# load average at 6-10 (other jobs on the machine), `sleepcl run --benchmark fashion-mnist-32 --network vgg
# --train-size 128 --test-size 500 --tasks 2 --seeds 0-7 --lr 1e-3 --threads 2` (add --widths): one
# sample-epoch of one member took about 20 ms at the paper's widths, 4.0 ms at half widths and 2.4 ms at
# quarter widths; a test sample 3.3 ms at half widths. The paper's protocol (E + B = 18 epochs of ~10,800
# samples per task, 180 runs) would take weeks; this preset keeps the paper's E, B, batch size, Figure 2's
# p and N and its 10 seeds, and shrinks what costs: half the widths (the quarter-width net stayed at chance
# on task 1 for 2 of 8 seeds), 128 training and 400 test samples per task (~66 s a run, 180 runs), and
# lr 1e-3 instead of 1e-4 (128 samples give 48 steps per task where the paper had ~3,750; at 1e-4 the
# full VGG stayed at chance on task 1 for 1 of 2 seeds).
_VGG_CPU = dict(
    network="vgg", epochs=PAPER_DEFAULTS["vgg"]["epochs"], retrain_epochs=PAPER_DEFAULTS["vgg"]["retrain_epochs"],
    batch_size=PAPER_DEFAULTS["vgg"]["batch_size"], lr=1e-3, widths=(16, 32, 64, 64, 512), n_tasks=5,
    train_size=128, test_size=400, seeds=tuple(range(5)), budget_seeds=tuple(range(10)),
    pruning_grid=(0.8, 0.9, 0.95, 0.98, 0.99), matching_ps=(0.8, 0.9, 0.95),
    matching_compression_bounds=(0.5, 64.0), matching_bounds_factor=2.0, matching_xatol=1e-2, matching_maxiter=20,
    n_bootstrap=1000, budget_ps=(0.8, 0.9, 0.95), budget_rounds=divisors(6),
    nobudget_ps=(0.8, 0.9, 0.95), nobudget_round_epochs=6, nobudget_rounds=divisors(6),
    schedules=tuple(SCHEDULES), schedules_ps=(0.9, 0.95), schedules_rounds=(2, 3, 6),
)


def _tiny(benchmark: str, network: str) -> dict:
    return dict(
        epochs=1, retrain_epochs=2, widths=(16, 16) if network == "mlp" else (4, 4, 8, 8, 16), n_tasks=2,
        seeds=(0, 1), budget_seeds=(0, 1),
        pruning_grid=(0.5, 0.8, 0.9, 0.95, 0.99), matching_ps=(0.8, 0.9), matching_compression_bounds=(0.5, 4.0),
        matching_bounds_factor=None,
        matching_xatol=0.1, matching_maxiter=3, n_bootstrap=50,
        budget_ps=(0.9, 0.95), budget_rounds=(1, 2),
        nobudget_ps=(0.9,), nobudget_round_epochs=1, nobudget_rounds=(1, 2),
        schedules=tuple(SCHEDULES), schedules_ps=(0.9,), schedules_rounds=(2,),
    )


def settings(preset: str, benchmark: str, *, seeds: Sequence[int] | None = None,
             network: str | None = None, baselines: Sequence[str] | None = None) -> StudySettings:
    """The named preset for ``benchmark``; ``seeds`` (``--seeds``) replaces every experiment's seeds.

    ``network``: a user's model (``package.module:function``) in place of the paper's network for the benchmark;
    it runs the same protocol (epochs, batch size, learning rate, grids) as the paper's network would.
    ``baselines`` (``--baselines``): the strategies matched against PackNet instead of Memory and Multinet,
    e.g. ``("memory", "memory-grow", "multinet")``; each must be a registered strategy.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if benchmark not in BENCHMARK_NAMES:
        raise ValueError(f"unknown benchmark {benchmark!r}; choose one of {', '.join(BENCHMARK_NAMES)}")
    paper_net = default_network(benchmark)
    if preset == "paper":
        values = _paper(paper_net)
    elif preset == "quick":
        values = _quick(benchmark, paper_net)
    elif preset == "vgg-cpu":
        values = dict(_VGG_CPU)
    else:
        values = _tiny(benchmark, paper_net)
    preset_net = values.pop("network", paper_net)
    if network is not None and network != preset_net:
        values["widths"] = None  # the preset's widths are its own network's
    d = PAPER_DEFAULTS[preset_net]
    values = {"batch_size": d["batch_size"], "lr": d["lr"], **values}
    if baselines is not None:
        from ..strategies import STRATEGIES as REGISTERED

        unknown = [b for b in baselines if b not in REGISTERED]
        if unknown:
            raise ValueError(f"--baselines: unknown strateg{'ies' if len(unknown) > 1 else 'y'} {', '.join(unknown)}; "
                             f"choose among {', '.join(sorted(set(REGISTERED) - {'packnet'}))}")
        values["baselines"] = tuple(baselines)
    out = StudySettings(preset=preset, benchmark=benchmark, network=network or preset_net, **values)
    return out.with_seeds(seeds) if seeds is not None else out


# --------------------------------------------------------------------------------------------- configs


def make_config(s: StudySettings, strategy: str, final_free: float, seed: int, *, rounds: int = 1,
                schedule: str = "uniform", retrain_epochs: int | None = None) -> RunConfig:
    """The resolved run config of one study run (every field the study does not vary comes from ``s``)."""
    return RunConfig(
        benchmark=s.benchmark, strategy=strategy, network=s.network, final_free=float(final_free),
        rounds=rounds, schedule=schedule, epochs=s.epochs,
        retrain_epochs=s.retrain_epochs if retrain_epochs is None else retrain_epochs, seed=seed,
        batch_size=s.batch_size, lr=s.lr, n_tasks=s.n_tasks, widths=s.widths, extra=s.extra(),
    ).resolved()


def pruning_configs(s: StudySettings) -> list[RunConfig]:
    return [make_config(s, st, p, seed) for st in s.strategies for p in s.pruning_grid for seed in s.seeds]


def matching_configs(s: StudySettings) -> list[RunConfig]:
    """The static part of matching: PackNet at each target p, the baselines over the grid (monotone fit).

    The ``minimize_scalar`` search asks for more baseline runs as it goes (:mod:`sleepcl.study.run`).
    """
    targets = [make_config(s, "packnet", p, seed) for p in s.matching_ps for seed in s.seeds]
    grid = [make_config(s, st, p, seed) for st in s.baselines for p in s.pruning_grid for seed in s.seeds]
    return targets + grid


def matching_point_configs(s: StudySettings, baseline: str, p: float) -> list[RunConfig]:
    """The seeded runs behind one ``minimize_scalar`` evaluation: ``baseline`` at final free fraction ``p``."""
    return [make_config(s, baseline, p, seed) for seed in s.seeds]


def matching_bounds(s: StudySettings, p: float) -> tuple[float, float]:
    """Search interval for p' given PackNet's p: compressions (1-p)/(1-p') within the preset's bounds."""
    c_lo, c_hi = s.matching_compression_bounds
    return max(0.0, 1.0 - (1.0 - p) / c_lo), 1.0 - (1.0 - p) / c_hi


def budget_configs(s: StudySettings) -> list[RunConfig]:
    return [make_config(s, "packnet", p, seed, rounds=n)
            for p in s.budget_ps for n in s.budget_rounds for seed in s.budget_seeds]


def nobudget_configs(s: StudySettings) -> list[RunConfig]:
    r = s.nobudget_round_epochs
    return [make_config(s, "packnet", p, seed, rounds=n, retrain_epochs=r * n)
            for p in s.nobudget_ps for n in s.nobudget_rounds for seed in s.seeds]


def schedules_configs(s: StudySettings) -> list[RunConfig]:
    """Every schedule at the schedule N values; the uniform ones (and N = 1, where all coincide) are Figure 2's."""
    out = [make_config(s, "packnet", p, seed, rounds=n, schedule=sch)
           for p in s.schedules_ps for sch in s.schedules for n in s.schedules_rounds for seed in s.budget_seeds]
    out += [make_config(s, "packnet", p, seed, rounds=1) for p in s.schedules_ps for seed in s.budget_seeds]
    return out


_BUILDERS: dict[str, Callable[[StudySettings], list[RunConfig]]] = {
    "pruning": pruning_configs,
    "matching": matching_configs,
    "budget": budget_configs,
    "nobudget": nobudget_configs,
    "schedules": schedules_configs,
}


def experiment_configs(name: str, s: StudySettings) -> list[RunConfig]:
    """The fixed grid of runs of experiment ``name`` (for matching: without the search's own runs)."""
    try:
        return _BUILDERS[name](s)
    except KeyError:
        raise ValueError(f"unknown experiment {name!r}; choose one of {', '.join(EXPERIMENTS)} or all") from None


def expand_names(name: str | Iterable[str]) -> list[str]:
    """``"all"`` -> every experiment; a name or list of names -> those, checked, in canonical order."""
    names = [name] if isinstance(name, str) else list(name)
    if "all" in names:
        return list(EXPERIMENTS)
    for n in names:
        if n not in EXPERIMENTS:
            raise ValueError(f"unknown experiment {n!r}; choose one of {', '.join(EXPERIMENTS)} or all")
    return [n for n in EXPERIMENTS if n in names]


def study_configs(names: Iterable[str], s: StudySettings) -> list[RunConfig]:
    """The distinct configs of several experiments (shared runs listed once), in a stable order."""
    seen: dict[str, RunConfig] = {}
    for name in expand_names(list(names)):
        for c in experiment_configs(name, s):
            seen.setdefault(c.hash(), c)
    return list(seen.values())


def cost_epochs(configs: Iterable[RunConfig]) -> int:
    """Member task-epochs (E + B per task, summed) of ``configs``: a rough measure of training cost."""
    return sum(c.n_tasks * (c.epochs + c.retrain_epochs) for c in configs)
