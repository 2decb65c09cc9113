"""``sleepcl learn``, ``sleepcl predict``, ``sleepcl inspect``: the nightly model from the command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["add_parsers", "cmd_inspect", "cmd_learn", "cmd_predict", "process_started"]

DATA_HELP = ("a .npz file (arrays x and y), a .csv file (a 'label' column + numeric feature columns) or a folder "
             "of images with one subfolder per class")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    from ..models import NETWORKS
    from ..task_inference import DEFAULT_RULE, RULES
    from .common import MEMORY_HELP, finite_float

    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = sub.add_parser(
        "learn", help="add a task to a deployed model in one night (within a time budget)", formatter_class=fmt,
        description=(
            "Add one task, learnt from your own data, to the model file MODEL (created on the first night): train "
            "the free weights, then a night of prune-and-retrain rounds that frees capacity for later tasks. "
            "--budget gives the night's wall-clock budget (counted from the start of the command; the model is "
            "saved before it runs out); --epochs/--retrain-epochs give the paper's epoch budgets instead. The "
            "model file is replaced atomically and the previous night's is kept as MODEL.prev. Data: " + DATA_HELP
            + "; see `python -c 'import sleepcl.data.user as d; help(d)'`."))
    p.add_argument("model", metavar="MODEL", help="the model file (safetensors; created if it does not exist)")
    p.add_argument("--task", required=True, help="name of the new task (unique within the model)")
    p.add_argument("--data", required=True, metavar="FILE", help="training data: " + DATA_HELP)
    p.add_argument("--val-data", default=None, metavar="FILE",
                   help="validation data (same format); default: hold out --val-fraction of --data")
    p.add_argument("--val-fraction", type=finite_float, default=0.1, help="share of --data held out for validation")
    p.add_argument("--label-column", default="label", help="name of the label column in CSV files")
    b = p.add_argument_group("budget (one of)")
    b.add_argument("--budget", default=None, metavar="DURATION",
                   help="wall-clock budget of the night: seconds (90, 90s) or a duration (45m, 1h30m)")
    b.add_argument("--epochs", type=int, default=None,
                   help="E: training epochs (epoch budgets, the paper's setting; default without --budget: Table 2)")
    b.add_argument("--retrain-epochs", type=int, default=None, help="B: the night's retraining epochs (with --epochs)")
    s = p.add_argument_group("the night")
    s.add_argument("--schedule", default="uniform", choices=("uniform", "lengthening", "cubic", "adaptive", "auto"),
                   help="rounds of the night: uniform (the paper's), lengthening (round lengths 1:2:..:N), cubic "
                        "(prune hard early, gently late), adaptive (each round's size from the validation loss the "
                        "last one cost, within the same steps; examples/NIGHTLY.md), auto (probe --candidates on "
                        "validation data, within the same budget, and pick)")
    s.add_argument("--adaptive-target", type=finite_float, default=0.05, metavar="NATS",
                   help="with --schedule adaptive: the excess validation loss a round may cost before the next "
                        "round prunes less far")
    s.add_argument("--adaptive-lookahead", type=finite_float, default=None, metavar="NATS",
                   help="with --schedule adaptive: choose each round's size before it is paid, as the longest whose "
                        "prune (tried on a copy) adds at most NATS of validation loss at once")
    s.add_argument("--rounds", type=int, default=None,
                   help="N: prune-retrain rounds (default 1, the original PackNet; 8 with --policy tolerance)")
    s.add_argument("--candidates", default=None, metavar="S:N,...",
                   help="schedules --schedule auto chooses from (default uniform:1,uniform:2,uniform:4,uniform:8,"
                        "lengthening:4,cubic:4)")
    s.add_argument("--probe-share", type=finite_float, default=0.3, help="share of the night the auto probe may use")
    s.add_argument("--night-share", type=finite_float, default=0.5,
                   help="share of a --budget for the night (the rest trains); 0.5 matches the paper's E = B")
    s.add_argument("--max-epochs", type=int, default=72,
                   help="with --budget: at most this many epochs of training and of night each (Table 2's 72)")
    c = p.add_argument_group("capacity policy (set on the first night; giving it again later re-plans)")
    c.add_argument("--policy", default=None, choices=("fixed", "tolerance"),
                   help="fixed: the paper's fixed fraction per task (--final-free, --expected-tasks); tolerance: "
                        "keep the fewest weights whose validation accuracy stays within --tolerance of the "
                        "unpruned network (default fixed)")
    c.add_argument("--final-free", type=finite_float, default=None, help="p: fraction left free after --expected-tasks (0.9)")
    c.add_argument("--expected-tasks", type=int, default=None, help="T: tasks the capacity is planned for (5)")
    c.add_argument("--tolerance", type=finite_float, default=None, help="allowed validation accuracy drop (0.01)")
    c.add_argument("--min-keep", type=finite_float, default=None,
                   help="tolerance policy: the night prunes down to at most this fraction of the free weights (0.01)")
    n = p.add_argument_group("network (chosen on the first night)")
    n.add_argument("--model", "--network", dest="network", default=None, metavar="NETWORK",
                   help=f"{' or '.join(NETWORKS)} (default mlp), or your own model: a function returning an nn.Module, "
                        "as package.module:function or path/to/file.py:function (see examples/NIGHTLY.md); give it "
                        "again on later nights (the one the file names, or where it is now): a model file's factory "
                        "is imported only when given")
    n.add_argument("--head", default=None, metavar="LAYER",
                   help="with --model: the model's classifier layer, replaced by one head per task (default: its "
                        "last nn.Linear)")
    n.add_argument("--widths", default=None, help="layer widths, e.g. 256,256 (MLP) or 32,64,128,128,1024 (VGG)")
    n.add_argument("--lr", type=finite_float, default=None, help="Adam learning rate (default: Table 2 for the network)")
    n.add_argument("--batch-size", type=int, default=None, help="default: Table 2 for the network")
    n.add_argument("--seed", type=int, default=None, help="initial weights and data order (default 0)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice; 1 can be much faster on a busy machine)")
    p.add_argument("--max-memory", default=None, metavar="SIZE", help=MEMORY_HELP)
    p.add_argument("--quiet", action="store_true", help="print only the final line")
    p.add_argument("--json", action="store_true", help="print the night's history entry as JSON at the end")
    p.set_defaults(func=cmd_learn)

    q = sub.add_parser("predict", help="predict with a deployed model, told the task or not", formatter_class=fmt,
                       description="Predict the classes of task --task for --data (" + DATA_HELP + "). Without "
                                   "--task, infer each sample's task (every task's network answers it, --rule picks "
                                   "the task) and print the inferred tasks. With --output, write a CSV (row or file, "
                                   "[task,] prediction, confidence, label). When the data has labels, print the "
                                   "accuracy; without --task, also the task-inference accuracy and the accuracy over "
                                   "all classes seen (the class-incremental score), which need each sample's true "
                                   "task: the labels give it when each is a class of one task, else --true-task.")
    q.add_argument("model", metavar="MODEL")
    q.add_argument("--task", default=None, help="the task of every sample (default: inferred per sample)")
    q.add_argument("--data", required=True, metavar="FILE")
    q.add_argument("--rule", default=None, choices=RULES,
                   help=f"without --task: how the task is inferred (default {DEFAULT_RULE}; examples/NIGHTLY.md "
                        "compares them)")
    q.add_argument("--true-task", default=None, metavar="NAME",
                   help="without --task, for scoring only: every sample of --data is of task NAME")
    q.add_argument("--output", default=None, metavar="FILE", help="predictions as CSV")
    q.add_argument("--label-column", default="label")
    q.add_argument("--device", default="cpu")
    q.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    q.add_argument("--json", action="store_true", help="print a JSON summary instead of text")
    q.add_argument("--model", "--network", dest="network", default=None, metavar="MODULE:FACTORY",
                   help="for a model of your own network: its factory (the one the model file names, or where it is "
                        "now); sleepcl imports a factory only when it is given here")
    q.set_defaults(func=cmd_predict)

    i = sub.add_parser("inspect", help="show a deployed model: tasks, free capacity, history",
                       description="Show the model's tasks, free capacity per layer and overall, file size, "
                                   "and the history of nights.")
    i.add_argument("model", metavar="MODEL")
    i.add_argument("--json", action="store_true", help="print everything as JSON")
    i.set_defaults(func=cmd_inspect)


def process_started() -> float:
    """``time.perf_counter()`` value of this process's start, when this process is the ``sleepcl`` command.

    A budget covers the whole command (Python, torch and data loading included). Inside another program
    (tests, notebooks calling ``main``) the budget counts from the call instead.
    """
    now = time.perf_counter()
    if not _is_command():
        return now
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        start = int(fields[19]) / os.sysconf("SC_CLK_TCK")
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        age = uptime - start
    except (OSError, ValueError, IndexError):
        return now
    return now - age if 0.0 <= age < 120.0 else now


def _is_command() -> bool:
    """Whether this process is the ``sleepcl`` command itself, not a program calling ``main`` (a test runner:
    ``python -m pytest`` has ``__main__.py`` as its argv[0], so only sleepcl's own entry points count)."""
    if not sys.argv or not sys.argv[0]:
        return False
    prog = Path(sys.argv[0])
    if prog.name == "sleepcl":
        return True
    try:  # python -m sleepcl.cli
        return prog.resolve() == (Path(__file__).parent / "__main__.py").resolve()
    except OSError:
        return False


def cmd_learn(args: argparse.Namespace) -> int:
    started = process_started()
    from ..nightly.learn import learn
    from ..runs.memory import parse_size
    from .common import positive_int_list

    widths = positive_int_list(args.widths, "--widths") if args.widths else None
    max_memory = parse_size(args.max_memory) if args.max_memory else None
    candidates = [c.strip() for c in args.candidates.split(",") if c.strip()] if args.candidates else None
    if candidates and args.schedule != "auto":
        raise ValueError("--candidates goes with --schedule auto")

    def progress(line: str) -> None:
        if not args.quiet:
            print(line, flush=True)

    result = learn(args.model, args.task, args.data, val_data=args.val_data, val_fraction=args.val_fraction,
                   label_column=args.label_column, budget=args.budget, epochs=args.epochs,
                   retrain_epochs=args.retrain_epochs, rounds=args.rounds, schedule=args.schedule,
                   candidates=candidates, probe_share=args.probe_share, adaptive_target=args.adaptive_target,
                   adaptive_lookahead=args.adaptive_lookahead, night_share=args.night_share,
                   max_epochs=args.max_epochs, network=args.network, widths=widths, head=args.head, policy=args.policy,
                   final_free=args.final_free, expected_tasks=args.expected_tasks, tolerance=args.tolerance,
                   min_keep=args.min_keep, lr=args.lr, batch_size=args.batch_size, seed=args.seed,
                   device=args.device, threads=args.threads, max_memory=max_memory, started=started,
                   progress=progress)
    if args.quiet:
        budget = f" of {result['budget_s']:g} s" if result["budget_s"] else ""
        print(f"night {result['night']}: task {result['task']!r} learnt in {result['total_seconds']:.1f} s{budget}; "
              f"validation accuracy {result['val_accuracy']:.4f}; free {result['free_after']:.2%}", flush=True)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    if _is_command():
        # The model file is durable (fsync'ed, renamed, folder fsync'ed) and the output is flushed: leave now.
        # Python's own teardown of torch takes 0.5-1.5 s on a busy 2-core machine, time the planner cannot
        # see and that would push the command past its budget.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from ..nightly.model import predict

    out = predict(args.model, args.task, args.data, output=args.output, label_column=args.label_column,
                  device=args.device, threads=args.threads, rule=args.rule, true_task=args.true_task,
                  factory=args.network)
    if args.json:
        keep = {k: v for k, v in out.items() if k not in ("class_index", "confidence", "logits", "predictions",
                                                          "task_index", "inferred_task")}
        print(json.dumps(keep, indent=2, default=str))
        return 1 if out["output_problem"] else 0
    if args.task is None:
        _print_inferred(out)
    else:
        counts: dict[Any, int] = {}
        for p in out["predictions"]:
            counts[p] = counts.get(p, 0) + 1
        print(f"task {args.task!r}: {out['n']} predictions ("
              + ", ".join(f"{c}: {counts.get(c, 0)}" for c in out["classes"]) + ")")
        if out["accuracy"] is not None:
            print(f"accuracy {out['accuracy']:.4f} ({round(out['accuracy'] * out['n'])}/{out['n']} labelled samples)")
            if out["is_validation_data"]:
                rec = out["recorded_val_accuracy"]
                same = "the same" if rec is not None and abs(rec - out["accuracy"]) < 1e-12 else "DIFFERENT"
                print(f"this is the task's validation data: the history records {rec:.4f} ({same})")
    if out["output_problem"]:
        print(f"sleepcl predict: error: {out['output_problem']}", file=sys.stderr)
        return 1
    if out["output"]:
        print(f"wrote {out['output']}")
    return 0


def _print_inferred(out: dict[str, Any]) -> None:
    """``predict`` without ``--task``: the inferred tasks, a few samples, and the scores when labelled."""
    n = out["n"]
    how = out["rule"] if out["rule_used"] == out["rule"] else \
        f"{out['rule_used']} (the model keeps no score statistics for {out['rule']}: learnt before them)"
    print(f"{n} samples, task inferred by {how}: "
          + ", ".join(f"{t}: {c}" for t, c in out["inferred_counts"].items()))
    for i in range(min(n, 5)):
        print(f"  sample {i}: task {out['inferred_task'][i]!r}, class {out['predictions'][i]!r} "
              f"(confidence {out['confidence'][i]:.3f})")
    if n > 5:
        print(f"  ... ({n - 5} more; --output FILE writes them all)")
    if out["task_accuracy"] is not None:
        k = lambda a: f"{a:.4f} ({round(a * n)}/{n})"  # noqa: E731
        print(f"task-inference accuracy {k(out['task_accuracy'])}")
        print(f"accuracy over all classes seen (task inferred) {k(out['accuracy'])}; told the task "
              f"{k(out['task_aware_accuracy'])}")
    elif out["unscored"]:
        print(f"not scored: {out['unscored']}")


def cmd_inspect(args: argparse.Namespace) -> int:
    from ..nightly.model import inspect

    info = inspect(args.model)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    from rich.table import Table

    from .common import console

    con = console()
    net, inp, pol = info["network"], info["input"], info["policy"]
    if pol["kind"] == "fixed":
        pol_text = f"fixed: {pol['final_free']:.2%} free after {pol['expected_tasks']} tasks"
    else:
        pol_text = f"tolerance: within {pol['tolerance']} of the unpruned accuracy (prunes to >= {pol['min_keep']:.0%})"
    con.print(f"[bold]{info['path']}[/bold]: {info['file_size']} ({info['file_bytes']} bytes), "
              f"{len(info['tasks'])} task(s), {info['free_fraction']:.2%} of {info['weights']} weights free"
              + (f"; previous night in {info['previous']}" if info["previous"] else ""))
    con.print(f"network {net['name']} {tuple(net['widths'])}, input {inp['kind']} {tuple(inp['shape'])} "
              f"({inp['normalisation']} normalisation); capacity policy {pol_text}; "
              f"lr {info['training']['lr']:g}, batch {info['training']['batch_size']}")

    t = Table(title="tasks")
    for col in ("#", "task", "classes", "train", "val", "val accuracy", "weights kept", "share", "night"):
        t.add_column(col, justify="right" if col not in ("task", "classes") else "left")
    for j, task in enumerate(info["tasks"]):
        classes = ", ".join(str(c) for c in task["classes"])
        t.add_row(str(j + 1), task["name"], classes if len(classes) < 40 else classes[:37] + "...",
                  str(task["n_train"]), str(task["n_val"]), f"{task['val_accuracy']:.4f}", str(task["kept_weights"]),
                  f"{task['kept_fraction']:.2%}", str(task["night"]))
    con.print(t)

    t = Table(title="capacity per layer")
    for col in ("layer", "weights", "free", "free %", *[f"task {j + 1}" for j in range(len(info["tasks"]))]):
        t.add_column(col, justify="right")
    for layer in info["layers"]:
        t.add_row(layer["name"], str(layer["weights"]), str(layer["free"]), f"{layer['free_fraction']:.2%}",
                  *[str(c) for c in layer["per_task"]])
    t.add_row("all", str(info["weights"]), str(info["free"]), f"{info['free_fraction']:.2%}",
              *[str(task["kept_weights"]) for task in info["tasks"]], style="bold")
    con.print(t)

    t = Table(title="nights")
    for col in ("night", "task", "started", "budget", "planned", "used", "train", "night", "schedule", "val acc",
                "free after"):
        t.add_column(col, justify="right")
    for h in info["history"]:
        budget = f"{h['budget_s']:g} s" if h.get("budget_s") else "epochs"
        planned = f"{h['planned_s']:.1f} s" if h.get("planned_s") else "-"
        sched = f"{h['schedule']} N={h['rounds']}"
        if h.get("probe"):
            sched += " (auto)"
        t.add_row(str(h["night"]), h["task"], h["started"].replace("+00:00", "Z"), budget, planned,
                  f"{h['seconds']:.1f} s", f"{h['train_steps']} st / {h['train_epochs']:.1f} ep",
                  f"{h['night_steps']} st / {h['night_epochs']:.1f} ep", sched, f"{h['val_accuracy']:.4f}",
                  f"{h['free_after']:.2%}")
    con.print(t)
    return 0
