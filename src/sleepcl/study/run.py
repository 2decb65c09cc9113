"""Running the study: every experiment's runs through :func:`sleepcl.runs.runner.run_configs` and its store.

The fixed grids of all requested experiments go into ONE ``run_configs`` call, so runs that can share a
population do (all seeds x p x N of PackNet at one budget train as one batched network), and a run that
two experiments need is trained once. Then the matching experiment's ``minimize_scalar`` searches run.

How the paper's search becomes resumable and batched. ``minimize_scalar`` calls its objective one point
at a time; here each objective value is "the mean accuracy of ``baseline`` at p' over the preset's
seeds", read from the store. When a search reaches a point the store does not hold, it stops (an
internal exception) and names the point. All six searches (3 PackNet p x 2 baselines) are replayed
together, the points they are waiting for are trained in one ``run_configs`` call (one population per
baseline), and the searches are replayed again from the start. Replaying is exact -- the optimizer is
deterministic given the same objective values -- and costs nothing next to training. So an interrupted
study resumes its searches exactly where they stopped, and a report can replay them without training.

Search interval: the preset's fixed compression bounds (the paper preset), or -- with
``matching_bounds_factor`` (the quick preset) -- a factor either side of the cheap monotone-fit estimate
from the Figure 1 grid, so that a handful of evaluations brackets the answer. The grid is trained before
any search starts, so the interval is fixed by then and replays stay exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from ..config import RunConfig
from .matching import MatchResult, match_by_minimize_scalar, match_by_monotone_fit
from ..runs.runner import run_configs
from ..runs.store import RunStore
from .experiments import (
    StudySettings,
    expand_names,
    make_config,
    matching_bounds,
    matching_point_configs,
    study_configs,
)

__all__ = ["MatchingSearch", "RecordLookup", "baseline_grid", "matching_searches", "monotone_match", "run_study",
           "search_bounds"]

Runner = Callable[..., list[dict[str, Any]]]
_CHUNK = 500


class RecordLookup:
    """Stored records by config hash, fetched in batches and cached (the store never changes a record)."""

    def __init__(self, store: RunStore | None):
        self.store = store
        self._cache: dict[str, dict[str, Any]] = {}

    def add(self, records: Iterable[dict[str, Any]]) -> None:
        for r in records:
            self._cache[r["config_hash"]] = r

    def fetch(self, hashes: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The stored records among ``hashes`` (absent ones left out)."""
        want = [h for h in dict.fromkeys(hashes) if h not in self._cache]
        if self.store is not None:
            for i in range(0, len(want), _CHUNK):
                self.add(self.store.query(config_hash=want[i:i + _CHUNK]))
        return {h: self._cache[h] for h in hashes if h in self._cache}

    def records(self, configs: Sequence[RunConfig]) -> tuple[list[dict[str, Any]], list[RunConfig]]:
        """(stored records of ``configs``, configs not stored yet)."""
        hashes = [c.hash() for c in configs]
        found = self.fetch(hashes)
        return ([found[h] for h in hashes if h in found], [c for c, h in zip(configs, hashes) if h not in found])


class _NeedRuns(Exception):
    def __init__(self, p: float):
        super().__init__(p)
        self.p = p


@dataclass
class MatchingSearch:
    """One ``minimize_scalar`` search: ``baseline`` matching PackNet at ``p_packnet``.

    ``result`` is set once the search has finished; until then ``waiting_for`` is the p' whose runs it
    needs next (``None`` with no result means the target, or the grid its bounds come from, is not
    stored yet).
    """

    baseline: str
    p_packnet: float
    target: float | None
    bounds: tuple[float, float] | None
    result: MatchResult | None = None
    waiting_for: float | None = None
    evaluations: list[tuple[float, float]] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.result is not None


def _mean_accuracy(records: Sequence[dict[str, Any]]) -> float:
    return float(np.mean([r["average_accuracy"] for r in records]))


def matching_targets(s: StudySettings, lookup: RecordLookup) -> dict[float, float | None]:
    """PackNet's mean average accuracy over the seeds at each matching p (None until all are stored)."""
    out: dict[float, float | None] = {}
    for p in s.matching_ps:
        recs, missing = lookup.records([make_config(s, "packnet", p, seed) for seed in s.seeds])
        out[p] = None if missing else _mean_accuracy(recs)
    return out


def baseline_grid(s: StudySettings, lookup: RecordLookup, baseline: str) -> tuple[list[float], np.ndarray, int]:
    """The Figure 1 grid of ``baseline``: (p values, accuracy seeds x p, grid points left out).

    Grid points lacking a seed are left out (so the matrix is complete); rows are seeds in order.
    """
    cols, ps, left_out = [], [], 0
    for p in s.pruning_grid:
        recs, missing = lookup.records([make_config(s, baseline, p, seed) for seed in s.seeds])
        if missing:
            left_out += 1
            continue
        cols.append([r["average_accuracy"] for r in sorted(recs, key=lambda r: r["config"]["seed"])])
        ps.append(p)
    acc = np.array(cols, dtype=float).T if cols else np.zeros((len(s.seeds), 0))
    return ps, acc, left_out


def monotone_match(s: StudySettings, lookup: RecordLookup, baseline: str, p: float, target: float,
                   n_bootstrap: int = 0, target_samples: np.ndarray | None = None) -> MatchResult | None:
    """The cheap match of ``target`` from ``baseline``'s grid (None with fewer than two grid points).

    ``target_samples`` (PackNet's accuracy for each of the preset's seeds, in seed order) puts PackNet's
    uncertainty into the bootstrap too; its seeds are the grid's, so each resample draws them for both.
    """
    ps, acc, _ = baseline_grid(s, lookup, baseline)
    if len(ps) < 2:
        return None
    paired = target_samples is not None and len(target_samples) == acc.shape[0]
    return match_by_monotone_fit(ps, acc, target, n_bootstrap=n_bootstrap, seed=0, p_packnet=p,
                                 target_samples=target_samples, paired=paired)


def search_bounds(s: StudySettings, lookup: RecordLookup, baseline: str, p: float,
                  target: float) -> tuple[float, float] | None:
    """The interval the search explores for p' (None: it has to wait for the grid).

    With ``s.matching_bounds_factor`` the compressions within that factor of the monotone fit's estimate
    (a narrow interval, so a few evaluations bracket the answer); the preset's fixed compression bounds
    when the fit has no estimate or no factor is set. The fit needs the complete grid, so the bounds --
    and therefore the replayed search -- never change once the grid is stored.
    """
    fixed = matching_bounds(s, p)
    if not s.matching_bounds_factor:
        return fixed
    ps, _, left_out = baseline_grid(s, lookup, baseline)
    if left_out:
        return None
    fit = monotone_match(s, lookup, baseline, p, target)
    if fit is None or not fit.in_range:
        return fixed
    f = s.matching_bounds_factor
    lo, hi = 1.0 - (1.0 - p) * f / fit.compression, 1.0 - (1.0 - p) / (fit.compression * f)
    return max(0.0, lo), min(hi, 1.0 - 1e-9)


def matching_searches(s: StudySettings, lookup: RecordLookup) -> list[MatchingSearch]:
    """Replay every search of the matching experiment as far as the stored runs allow."""
    targets = matching_targets(s, lookup)
    out = []
    for p in s.matching_ps:
        for baseline in s.baselines:
            target = targets[p]
            bounds = search_bounds(s, lookup, baseline, p, target) if target is not None else None
            search = MatchingSearch(baseline, p, target, bounds)
            if target is not None and bounds is not None:
                _replay(s, lookup, search)
            out.append(search)
    return out


def _replay(s: StudySettings, lookup: RecordLookup, search: MatchingSearch) -> None:
    seen: list[tuple[float, float]] = []

    def evaluate(q: float) -> float:
        recs, missing = lookup.records(matching_point_configs(s, search.baseline, q))
        if missing:
            raise _NeedRuns(q)
        acc = _mean_accuracy(recs)
        seen.append((q, acc))
        return acc

    try:
        search.result = match_by_minimize_scalar(
            search.target, evaluate, search.bounds, xatol=s.matching_xatol, maxiter=s.matching_maxiter,
            p_packnet=search.p_packnet)
        search.waiting_for = None
    except _NeedRuns as need:
        search.result, search.waiting_for = None, need.p
    search.evaluations = seen


def run_study(names: str | Iterable[str], s: StudySettings, *, store: RunStore | None,
              run: Runner = run_configs, log: Callable[[str], None] | None = None,
              **run_kwargs: Any) -> dict[str, Any]:
    """Train what ``names`` need that ``store`` lacks; return a summary (counts, the matching searches).

    ``run`` is :func:`sleepcl.runs.runner.run_configs` (replaceable for tests); ``run_kwargs`` go to it
    (device, data_dir, download, max_population, progress, force, executor). Training happens in ONE call for the
    fixed grids of all experiments, then one call per round of the matching searches.
    """
    names = expand_names(names)
    say = log or (lambda msg: None)
    lookup = RecordLookup(store)
    configs = study_configs(names, s)
    _, todo = lookup.records(configs)
    force = bool(run_kwargs.get("force"))
    say(f"{len(configs)} runs in the fixed grids of {', '.join(names)}: "
        f"{len(configs) - len(todo)} stored, {len(configs) if force else len(todo)} to train")
    records = run(configs, store=store, **run_kwargs)
    lookup.add(records)
    trained = len(configs) if force else len(todo)
    searches: list[MatchingSearch] = []
    if "matching" in names:
        run_kwargs = {k: v for k, v in run_kwargs.items() if k != "force"}  # searches read back what they train
        for round_ in range(1, 10_000):
            searches = matching_searches(s, lookup)
            need: dict[str, RunConfig] = {}
            for search in searches:
                if search.waiting_for is not None:
                    for c in matching_point_configs(s, search.baseline, search.waiting_for):
                        need.setdefault(c.hash(), c)
            if not need:
                break
            waiting = sorted({(x.baseline, x.waiting_for) for x in searches if x.waiting_for is not None})
            say(f"matching search round {round_}: {len(need)} runs at "
                + ", ".join(f"{b} p'={q:.5f}" for b, q in waiting))
            lookup.add(run(list(need.values()), store=store, **run_kwargs))
            trained += len(need)
    return {"names": names, "configs": len(configs), "trained": trained, "searches": searches}
