"""``sleepcl run`` (train a population of runs, print their accuracy) and ``sleepcl results`` (list, export)."""

from __future__ import annotations

import argparse
import itertools
import math
import sys
from pathlib import Path
from typing import Any, Sequence

from .common import (MEMORY_HELP, STORE_ENV, THREADS_HELP, add_cluster_argument, check_writable, cluster_executor,
                     console, finite_float, mean_se, open_store, positive_int_list, progress_bar)

__all__ = ["add_results_parser", "add_run_parser", "cmd_results", "cmd_run", "print_summary"]

COLUMNS = ("strategy,benchmark,network,final_free,rounds,schedule,seed,epochs,retrain_epochs,average_accuracy,"
           "final_free_fraction")  # what `sleepcl results` shows by default
SHOWN_TASKS = 10  # tasks printed a column each by `sleepcl run`


# -- sleepcl run -------------------------------------------------------------------------------------

def add_run_parser(sub: argparse._SubParsersAction) -> None:
    from ..config import PAPER_DEFAULTS
    from ..data.split import BENCHMARKS
    from ..data.transforms import MAX_TASKS
    from ..engine.density import LAYER_DENSITIES
    from ..models import NETWORKS
    from ..schedule import SCHEDULES
    from ..strategies import NIGHTS, STRATEGIES

    mlp, vgg = PAPER_DEFAULTS["mlp"], PAPER_DEFAULTS["vgg"]
    p = sub.add_parser(
        "run", help="train a population of runs and print per-task accuracy",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description=(
            "Train one strategy on a task sequence for every combination of --seeds, --final-free and "
            "--rounds, as one population (one batched pass for all members). Defaults for epochs, "
            f"batch size and learning rate are the paper's Table 2: MLP E={mlp['epochs']} B={mlp['retrain_epochs']} "
            f"batch {mlp['batch_size']} lr {mlp['lr']}; VGG E={vgg['epochs']} B={vgg['retrain_epochs']} "
            f"batch {vgg['batch_size']} lr {vgg['lr']}. Finished runs are kept in a results store and "
            "found there when the same config runs again."))
    p.add_argument("--benchmark", default="mnist-5k", choices=BENCHMARKS, metavar="BENCHMARK",
                   help="task sequence: a dataset (mnist, fashion-mnist, cifar10, mnist-5k) cut into 5 binary tasks "
                        "of class pairs (0,1),(2,3),... or --class-groups; or permuted-DATASET / rotated-DATASET "
                        f"(e.g. permuted-mnist-5k): up to {MAX_TASKS} tasks of all 10 classes, each task seeing the "
                        "images through its own pixel permutation or rotation; mnist-5k works offline")
    def strategy_name(text: str) -> str:
        if text in STRATEGIES or ":" in text:
            return text
        raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from {', '.join(STRATEGIES)}, or give your "
                                         "own class as path/to/file.py:Class or package.module:Class)")

    p.add_argument("--strategy", default="packnet", metavar="STRATEGY", type=strategy_name,
                   help="; ".join(f"{name}: {cls.summary}" for name, cls in STRATEGIES.items()) +
                        "; or your own Strategy subclass as path/to/file.py:Class or package.module:Class")
    p.add_argument("--night", default=None, choices=list(NIGHTS),
                   help="rounds: prune-then-retrain nights after each task, to the capacity schedule of --final-free "
                        "and --rounds (E training + B retraining epochs); none: no night (E + B training epochs). "
                        "Default: the strategy's own (rounds for packnet, memory, memory-grow, multinet; none for "
                        "the others)")
    p.add_argument("--strategy-option", action="append", default=[], metavar="KEY=VALUE",
                   help="a parameter of the strategy, e.g. lambda=400 for ewc (repeat for several)")
    p.add_argument("--model", "--network", dest="network", default=None, metavar="NETWORK",
                   help=f"{' or '.join(NETWORKS)} (the paper's MLP 784-256-256 and small VGG; default: mlp for the "
                        "MNIST family, vgg for cifar10), or your own model: a function returning an nn.Module, as "
                        "package.module:function or path/to/file.py:function")
    p.add_argument("--head", default=None, metavar="LAYER",
                   help="with --model: the model's classifier layer, replaced by one head per task (default: its "
                        "last nn.Linear)")
    p.add_argument("--final-free", default="0.9", metavar="P[,P...]",
                   help="p: fraction of weights left free after the last task; a list makes one member per value")
    p.add_argument("--rounds", default="1", metavar="N[,N...]",
                   help="N: prune-then-retrain rounds per night (1 = original PackNet); a list makes one member per value")
    p.add_argument("--schedule", default="uniform", choices=list(SCHEDULES),
                   help="how the night is split into rounds: uniform (the paper's), lengthening, cubic")
    p.add_argument("--epochs", type=int, default=None, help="E: training epochs per task (default: Table 2)")
    p.add_argument("--retrain-epochs", type=int, default=None,
                   help="B: retraining budget per night, shared by the N rounds (R = B/N each; default: Table 2)")
    p.add_argument("--seeds", default="0", help="member seeds: a range 0-9, a list 0,3,7, or both 0-2,5")
    p.add_argument("--batch-size", type=int, default=None, help="default: Table 2")
    p.add_argument("--lr", type=finite_float, default=None, help="Adam learning rate (default: Table 2)")
    p.add_argument("--prune-scope", default="layer", choices=("layer", "global"),
                   help="rank weights by magnitude within each layer (PackNet) or across all layers")
    p.add_argument("--layer-density", default=None, choices=LAYER_DENSITIES,
                   help="layer-wise pruning: every layer keeps the same fraction (uniform: the paper's; the default "
                        "for the built-in networks) or small layers a larger share (erk: Erdős–Rényi-Kernel, as "
                        "sparse-training libraries do; the default for your own --model)")
    p.add_argument("--tasks", type=int, default=None,
                   help=f"number of tasks: 1-5 class pairs (default 5; with --class-groups, one per group); "
                        f"permuted/rotated 1-{MAX_TASKS} (default 5, or one per entry of --permutations/--rotations)")
    p.add_argument("--class-groups", default=None, metavar="C,C|C,C,...",
                   help="Split tasks of any classes: each task's classes (labels in this order), tasks separated "
                        "by |, e.g. '0,1,2|3,4,5|6,7,8,9'")
    p.add_argument("--transform-seed", type=int, default=0,
                   help="permuted/rotated: seeds task t's permutation (default_rng([seed, t])) or the rotation angles")
    p.add_argument("--permutations", default=None, metavar="SEED,...",
                   help="permuted: one permutation seed per task instead of --transform-seed, a range 3-9, or "
                        "'identity' (the images as they are), e.g. identity,1-49")
    p.add_argument("--rotations", default=None, metavar="DEG,...",
                   help="rotated: one angle in degrees per task instead of seeded golden-angle steps, e.g. 0,45,90 "
                        "(a list starting with a minus sign: --rotations=-45,45)")
    p.add_argument("--eval-every", type=int, default=1, metavar="K",
                   help="evaluate every task seen so far after every K-th task only (and always after the last); the "
                        "accuracy matrix's other rows are null. Evaluating all seen tasks after each of T tasks costs "
                        "T(T+1)/2 task evaluations; training is the same whatever K is")
    p.add_argument("--val-size", type=finite_float, default=0.1,
                   help="validation data held out of each task's training set: a fraction < 1 or a count")
    p.add_argument("--train-size", type=int, default=None, metavar="N",
                   help="keep N training samples per task (stratified by class, fixed seed; default: all), "
                        "for a network too slow for the whole dataset on this machine")
    p.add_argument("--test-size", type=int, default=None, metavar="N",
                   help="keep N test samples per task (stratified by class, fixed seed; default: all)")
    p.add_argument("--class-order-seed", type=int, default=None,
                   help="shuffle the classes before pairing them (default: classes in order)")
    p.add_argument("--widths", default=None, help="layer widths, e.g. 256,256 (MLP) or 32,64,128,128,1024 (VGG)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, or auto (CUDA when present)")
    p.add_argument("--data-dir", default=None, help="folder with the dataset's standard files")
    p.add_argument("--download", action="store_true", help="download missing dataset files (needs a network)")
    p.add_argument("--output", default=None, metavar="FILE", help="write the JSON records (a list, one per member) here")
    p.add_argument("--store", default=None, metavar="FILE",
                   help=f"results store (SQLite); default ${STORE_ENV} or ~/.cache/sleepcl/runs.sqlite")
    p.add_argument("--no-store", action="store_true", help="neither read nor write the results store")
    p.add_argument("--force", action="store_true", help="train again even if the store holds the run")
    p.add_argument("--max-population", type=int, default=None,
                   help="split populations larger than this (default: as many members as fit in memory)")
    p.add_argument("--max-memory", default=None, metavar="SIZE", help=MEMORY_HELP)
    p.add_argument("--threads", type=int, default=None,
                   help=THREADS_HELP)
    add_cluster_argument(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--explain", action="store_true",
                   help="print every parameter of the network and what the strategy does with it (owned and "
                        "pruned, per task, shared, classifier), then stop before any training")
    p.set_defaults(func=cmd_run)


def run_configs_from_args(args: argparse.Namespace) -> list:
    from ..config import MAX_RUNS, RunConfig, parse_float_list, parse_int_list
    from ..data.split import check_subsample_size, default_n_tasks
    from ..runs.runner import SUBSAMPLES

    check_night_options(args)
    seeds = parse_int_list(args.seeds, "--seeds")
    ps = parse_float_list(args.final_free)
    rounds = parse_int_list(args.rounds, "--rounds")
    count = len(seeds) * len(ps) * len(rounds)
    if count > MAX_RUNS:
        raise ValueError(f"--seeds, --final-free and --rounds make {count:,} runs, more than the {MAX_RUNS:,} one "
                         "command takes; split them over several commands (the results store keeps what each "
                         "finishes)")
    widths = tuple(positive_int_list(args.widths, "--widths")) if args.widths else None
    val_size: float | int = int(args.val_size) if args.val_size >= 1 else args.val_size
    options = parse_options(args.strategy_option, "--strategy-option")
    tasks = dict(class_groups=args.class_groups, permutations=args.permutations, rotations=args.rotations)
    n_tasks = args.tasks if args.tasks is not None else default_n_tasks(args.benchmark, **tasks)
    extra = {what: getattr(args, what) for what in SUBSAMPLES if getattr(args, what) is not None}
    for what, size in extra.items():
        check_subsample_size(size, f"--{what.replace('_', '-')}")
    configs = [RunConfig(benchmark=args.benchmark, strategy=args.strategy, network=args.network, final_free=p,
                         rounds=n, schedule=args.schedule, epochs=args.epochs, retrain_epochs=args.retrain_epochs,
                         seed=s, batch_size=args.batch_size, lr=args.lr, prune_scope=args.prune_scope,
                         layer_density=layer_density(args),
                         val_size=val_size, class_order_seed=args.class_order_seed, n_tasks=n_tasks,
                         widths=widths, strategy_options=options, head=args.head, transform_seed=args.transform_seed,
                         eval_every=args.eval_every, night=args.night, extra=extra, **tasks)
               for p, n, s in itertools.product(ps, rounds, seeds)]
    return [c.resolved() for c in configs]


NIGHT_OPTIONS = {"final_free": "0.9", "rounds": "1", "schedule": "uniform", "prune_scope": "layer",
                 "layer_density": "uniform"}
"""The options of the night (pruning), at their defaults: a strategy without a night refuses any other value,
which would only give identical runs under different identities."""


def layer_density(args: argparse.Namespace) -> str:
    """``--layer-density``, or its default: ``erk`` for a user's ``--model`` under layer-wise pruning (its small
    layers starve under uniform density: README, "Your own model"), else ``uniform`` (the paper's protocol)."""
    from ..models import is_factory

    if args.layer_density is not None:
        return args.layer_density
    prunes = _night(args) == "rounds" and args.prune_scope == "layer"
    return "erk" if prunes and args.network is not None and is_factory(args.network) else "uniform"


def _night(args: argparse.Namespace) -> str:
    from ..strategies import strategy_class

    return getattr(args, "night", None) or strategy_class(args.strategy).default_night()


def check_night_options(args: argparse.Namespace) -> None:
    if _night(args) == "rounds":
        return
    given = [f"--{k.replace('_', '-')} {getattr(args, k)}" for k, v in NIGHT_OPTIONS.items()
             if getattr(args, k, None) is not None and str(getattr(args, k)).replace(" ", "") != v]
    if given:
        raise ValueError(f"{', '.join(given)}: {args.strategy} has no night here, so no final free fraction and no "
                         "rounds; these options would only give identical runs under different identities. Drop "
                         "them, or give it a night with --night rounds")


def cmd_run(args: argparse.Namespace) -> int:
    from ..files import write_or_keep
    from ..runs.memory import parse_size
    from ..runs.records import records_json
    from ..runs.runner import run_configs
    from ..threads import torch_threads

    from ..threads import check_threads

    check_threads(args.threads)
    configs = run_configs_from_args(args)
    if args.explain:
        return explain_network(configs[0], args.data_dir, args.download)
    max_memory = parse_size(args.max_memory) if args.max_memory else None
    output = Path(args.output) if args.output else None
    if output is not None:
        check_writable(output)
    log = None if args.quiet else print
    with torch_threads(args.threads), cluster_executor(args) as executor, progress_bar(args) as progress:
        store = None if args.no_store else open_store(args.store)  # once the cluster, if any, has answered
        records = run_configs(configs, device=args.device, data_dir=args.data_dir, download=args.download,
                              store=store, force=args.force, max_population=args.max_population,
                              max_memory=max_memory, progress=progress, log=log, executor=executor)
    print_summary(records)
    if output is None:
        return 0
    kept = None
    if store is not None:
        kept = (f"the {len(records)} records are in the results store {store.path}; `sleepcl results --store "
                f"{store.path} --export FILE.json` writes them out")
    where, problem = write_or_keep(output, records_json(records), kept)
    if problem is not None:
        print(f"sleepcl run: error: {problem}", file=sys.stderr)
        return 1
    print(f"wrote {len(records)} records to {where}")
    return 0


def _kept_range(size: int, free: list[int]) -> str:
    """What each task keeps of a layer of ``size`` weights whose free counts after the tasks are ``free``: one
    number, or the least and the most."""
    kept = [before - after for before, after in zip([size, *free], free)]
    low, high = min(kept), max(kept)
    return f"{low:,}" if low == high else f"{low:,}-{high:,}"


def explain_network(config: Any, data_dir: str | None, download: bool) -> int:
    """``run --explain``: the network's parameters and their roles under the run's strategy, nothing trained."""
    from rich.console import Console
    from rich.table import Table

    from ..engine.population import head_size, planned_free_counts
    from ..models import build_network
    from ..models.base import ROLES
    from ..runs.runner import BenchmarkCache, starvation_notice
    from ..strategies import get_strategy

    strategy = get_strategy(config.strategy, config.strategy_options, night=config.night)
    data = BenchmarkCache(data_dir, download)
    data.check([config])
    bench = data.get(config)
    net = build_network(config.network, bench.input_shape, bench.n_tasks, head_size(bench), config.widths,
                        per_task_norm=strategy.freezes, head=config.head, class_counts=bench.n_classes)
    rows = net.roles(prunes=strategy.prunes, freezes=strategy.freezes,
                     trains_shared_later=strategy.trains_shared(1))
    table = Table(title=f"{config.network} under {config.strategy} on {config.benchmark} "
                        f"({bench.n_tasks} tasks, input {tuple(bench.input_shape)})")
    table.add_column("parameter", overflow="fold")
    table.add_column("shape")
    table.add_column("values", justify="right")
    table.add_column("role")
    shapes = {name: shape for name, shape, _ in rows if name in net.prunable}
    sizes = [int(i.numel()) for i in bench.train]
    planned = planned_free_counts(config, strategy, shapes, sizes) if strategy.prunes and shapes else []
    if planned:  # what each task keeps of every owned layer, as the run will plan it (--layer-density)
        table.add_column("each task keeps", justify="right")
    for name, shape, role in rows:
        row = [name, "x".join(map(str, shape)) or "()", f"{math.prod(shape):,}", role]
        if planned:
            row.append(_kept_range(math.prod(shape), [step[name] for step in planned]) if name in shapes else "")
        table.add_row(*row)
    console = Console()
    console.print(table)
    used = {word for _, _, role in rows for word in role.split(", ")}
    for word, meaning in ROLES.items():
        if word in used:
            console.print(f"  {word}: {meaning}", highlight=False)
    owned = sum(math.prod(shape) for name, shape, _ in rows if name in net.prunable)
    total = sum(math.prod(shape) for name, shape, _ in rows if not name.startswith("head."))
    console.print(f"{owned:,} of the trunk's {total:,} values are owned ({owned / max(1, total):.1%}). A model keeps "
                  "parameters shared by listing their names (or glob patterns) in a `sleepcl_shared` attribute of "
                  "the module its factory returns.", highlight=False)
    notice = starvation_notice(config, shapes, sizes) if strategy.prunes else None
    if notice:
        console.print(f"notice: {notice}", highlight=False, style="yellow")
    return 0


def print_summary(records: Sequence[dict[str, Any]]) -> None:
    """Per-task final accuracy for each member, then mean +- standard error per (p, N) group."""
    from rich.table import Table

    if not records:
        return
    n_tasks = len(records[0]["final_accuracy"])
    first = records[0]["config"]
    # Up to SHOWN_TASKS tasks, a column each; a longer sequence shows its first and last task and the lowest.
    shown = [f"task {j + 1}" for j in range(n_tasks)] if n_tasks <= SHOWN_TASKS else ["task 1", f"task {n_tasks}",
                                                                                      "lowest task"]

    def columns(acc: Sequence[float]) -> list[float]:
        return list(acc) if n_tasks <= SHOWN_TASKS else [acc[0], acc[-1], min(acc)]

    table = Table(title=f"{first['strategy']} on {first['benchmark']} ({first['network']}): final test accuracy per task")
    # the class-incremental score (task inferred, sleepcl.task_inference) beside the task-aware average
    untold = any(r.get("class_incremental_accuracy") is not None for r in records)
    for col in ("seed", "p", "N", *shown, "average", *(["task untold"] if untold else []), "free", "time/member"):
        table.add_column(col, justify="right")
    for r in records:
        c = r["config"]
        per_member = r["timings"]["total"] / r["timings"]["population_size"]
        ci = r.get("class_incremental_accuracy")
        table.add_row(str(c["seed"]), f"{c['final_free']:g}", str(c["rounds"]),
                      *[f"{a:.4f}" for a in columns(r["final_accuracy"])], f"{r['average_accuracy']:.4f}",
                      *([f"{ci:.4f}" if ci is not None else "-"] if untold else []),
                      f"{r['free_fraction_after_task'][-1]:.4f}", f"{per_member:.1f}s")
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["config"]["final_free"], r["config"]["rounds"]), []).append(r)
    for (p, n), rs in groups.items():
        if len(rs) > 1:
            cols = list(zip(*[columns(r["final_accuracy"]) for r in rs]))
            avg = [r["average_accuracy"] for r in rs]
            cis = [r.get("class_incremental_accuracy") for r in rs]
            ci_cell = [mean_se([v for v in cis if v is not None]) if all(v is not None for v in cis) else "-"] \
                if untold else []
            table.add_row("mean±se", f"{p:g}", str(n), *[mean_se(c) for c in cols], mean_se(avg), *ci_cell, "", "",
                          style="bold")
    console().print(table)


# -- sleepcl results ---------------------------------------------------------------------------------

def import_results(files: Sequence[str], store_path: str | None) -> int:
    """``sleepcl results --import``: every file read (a line at a time) and every record checked against the
    record schema before the store is touched; then the files are read again, each record checked again, and
    the runs the store lacks added in one transaction (rolled back if anything changed in between)."""
    from ..runs.records import MAX_IMPORT_RECORDS, check_record, iter_records

    def records(f: str):
        try:
            for k, (i, r) in enumerate(iter_records(f), start=1):
                yield check_record(r, f"{f}: record {k}" if k == i else f"{f}, line {i}: record {k}")
        except (OSError, EOFError) as e:
            raise ValueError(f"--import: cannot read records from {f} ({e})") from e
        except ValueError as e:
            raise ValueError(f"--import: {e}" if str(e).startswith(f) else f"--import: {f}: {e}") from None

    hashes: dict[str, None] = {}
    for f in files:
        if not Path(f).is_file():
            raise ValueError(f"--import: no file {f}" + (" (not a regular file)" if Path(f).exists() else ""))
        for r in records(f):
            hashes[r["config_hash"]] = None
            if len(hashes) > MAX_IMPORT_RECORDS:
                raise ValueError(f"--import: more than {MAX_IMPORT_RECORDS:,} runs in one command; import the files "
                                 "a few at a time")
    store = open_store(store_path)
    new = set(store.missing(hashes))
    count = len(new)

    def new_records():
        for f in files:
            for r in records(f):
                if r["config_hash"] in new:
                    new.discard(r["config_hash"])  # the first record of a run is the one kept
                    yield r

    store.put_many(new_records())
    print(f"imported {count} runs into {store.path} ({len(hashes) - count} of the {len(hashes)} "
          "were already stored and kept)")
    return 0


def add_results_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("results", help="list, filter and export stored runs",
                       description="List runs in the results store, filtered by config values, and export "
                                   "them as CSV or JSON. Filters: KEY=VALUE, e.g. strategy=packnet final_free=0.9 "
                                   "(a comma list means any of: seed=0,1,2).")
    p.add_argument("filters", nargs="*", metavar="KEY=VALUE")
    p.add_argument("--store", default=None, metavar="FILE", help=f"results store (default ${STORE_ENV} or the user cache)")
    p.add_argument("--export", default=None, metavar="FILE",
                   help="write the selected runs to FILE: .csv (a table), .json, or .jsonl / .jsonl.gz (full "
                        "records, one a line: what --import reads)")
    p.add_argument("--import", dest="import_files", nargs="+", default=None, metavar="FILE",
                   help="add the runs in FILE (.jsonl[.gz] or .json records, e.g. docs/results/runs/*.jsonl.gz) to "
                        "the store, so that `sleepcl study` finds them instead of training; runs already stored are kept")
    p.add_argument("--columns", default=COLUMNS, help="columns to show")
    p.set_defaults(func=cmd_results)


def parse_filters(items: Sequence[str]) -> dict[str, Any]:
    import dataclasses

    from ..config import RunConfig

    known = sorted({f.name for f in dataclasses.fields(RunConfig)} | {"config_hash"})
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"filter {item!r} is not KEY=VALUE (e.g. strategy=packnet)")
        key, value = item.split("=", 1)
        if key.replace("-", "_") not in known:
            raise ValueError(f"filter {item!r}: {key!r} is not a config key; filters take {', '.join(known)}")
        values = [_literal(v) for v in value.split(",")]
        out[key.replace("-", "_")] = values if len(values) > 1 else values[0]
    return out


def parse_options(items: Sequence[str], flag: str) -> dict[str, Any]:
    """``["lambda=400", "mode=online"]`` -> ``{"lambda": 400, "mode": "online"}`` (numbers read as numbers)."""
    out: dict[str, Any] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"{flag} {item!r} is not KEY=VALUE (e.g. lambda=400)")
        if key.strip() in out:
            raise ValueError(f"{flag} gives {key.strip()!r} twice ({key.strip()}={out[key.strip()]!r} and {item!r}); "
                             "give each option once")
        out[key.strip()] = _literal(value.strip())
    return out


def _literal(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"none": None, "null": None, "true": True, "false": False}.get(text.lower(), text)


def cmd_results(args: argparse.Namespace) -> int:
    from ..runs.store import EXPORT_FORMATS

    filters = parse_filters(args.filters)
    if args.import_files:
        return import_results(args.import_files, args.store)
    if args.export:
        export = Path(args.export)
        if not export.name.lower().endswith(tuple(f".{f}" for f in EXPORT_FORMATS)):
            raise ValueError(f"--export {export}: the formats are .csv (one row per run), .json (the full "
                             f"records) and .jsonl / .jsonl.gz (one full record a line, what --import reads); "
                             f"give a file name ending in one of them")
        check_writable(export, "--export", "runs.csv")
    store = open_store(args.store, read_only=True)  # reading never needs to write, so a read-only store lists
    path = store.path
    if args.export:
        try:
            out = store.export(args.export, **filters)
        except OSError as e:
            raise ValueError(f"could not write --export {args.export}: {e.strerror or e}; the runs are still in "
                             f"{path}") from None
        print(f"exported {len(store.query(**filters))} runs to {out}")
        return 0
    df = store.to_dataframe(**filters)
    if df.empty:
        print(f"no runs in {path} match {filters or 'anything'}")
        return 0
    asked = [c.strip() for c in args.columns.split(",") if c.strip()]
    unknown = [c for c in asked if c not in df.columns]
    if unknown and args.columns != COLUMNS:  # the default names columns some stores lack; the user's must exist
        raise ValueError(f"--columns {', '.join(unknown)}: no such column; the runs have "
                         f"{', '.join(map(str, df.columns))}")
    cols = [c for c in asked if c in df.columns]
    from rich.table import Table

    table = Table(title=f"{len(df)} runs in {path}")
    for c in cols:
        table.add_column(c, justify="right")
    for _, row in df[cols].iterrows():
        table.add_row(*[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row])
    console().print(table)
    return 0


