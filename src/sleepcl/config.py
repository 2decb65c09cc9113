"""The configuration of one run (one population member), its defaults, validation and identity hash.

Defaults are the paper's Table 2 for each network. A config's hash covers everything that determines
its result and nothing that does not (the device, the data folder), so a finished run can be found again
whatever machine or path produced it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

from .data.datasets import DATASETS
from .data.split import BENCHMARKS, canonical_task_spec, check_tasks, parse_benchmark
from .engine.density import LAYER_DENSITIES
from .models import GENERIC_PATH_VERSION, NETWORKS, factory_digest, is_factory
from .schedule import SCHEDULES, sleep_schedule
from .strategies import NIGHTS, get_strategy, is_strategy_spec, strategy_class, strategy_digest

__all__ = ["MAX_RUNS", "PAPER_DEFAULTS", "RunConfig", "check_population", "default_network", "parse_int_list"]

BENCHMARK_NAMES: tuple[str, ...] = DATASETS
"""The Split benchmarks, one per dataset (the study's); a run may use any of :data:`BENCHMARKS`."""

# Appendix A, Table 2 of the paper.
PAPER_DEFAULTS: dict[str, dict[str, Any]] = {
    "mlp": {"lr": 1e-3, "batch_size": 128, "epochs": 72, "retrain_epochs": 72},
    "vgg": {"lr": 1e-4, "batch_size": 32, "epochs": 12, "retrain_epochs": 6},
}

# The most runs one command line may ask for (and the longest list it may give): far more than any study here
# (the paper preset's largest grid has 480), few enough that listing and checking them takes well under a second.
MAX_RUNS = 10_000
MAX_EPOCHS = 1_000_000  # far beyond any study; a count past int64 would overflow torch's step counters
FLOAT32_MAX = 3.4028234663852886e38
"""The largest learning rate (or any factor applied to the float32 weights) that float32 can hold."""

# Fields that members of one population may differ in: the rest must match (same data stream, steps).
MEMBER_FIELDS = ("seed", "final_free", "rounds", "schedule")

# Fields added after runs were first stored, with their defaults. At its default such a field is left out of a
# run's identity (:meth:`RunConfig.hash`), so every run stored before the field existed keeps its hash and is
# found again (tests/test_config.py pins hashes of runs stored before any of them). A new field goes here.
LATER_FIELDS: dict[str, Any] = {
    "strategy_options": {}, "head": None,  # strategies' own parameters, a user model's classifier
    "class_groups": None, "transform_seed": 0, "permutations": None, "rotations": None,  # long task sequences
    "eval_every": 1,  # evaluate the tasks after every k-th task (and the last)
    "night": None,  # nights as the strategy's default (resolved() also writes None for a choice equal to it)
    "layer_density": "uniform",  # how the kept weights are shared out among the layers (engine/density.py)
}


def default_network(benchmark: str) -> str:
    """The paper's pairing: the MLP for the MNIST family, the small VGG for CIFAR-10 (permuted or rotated too)."""
    try:
        dataset = parse_benchmark(benchmark)[1]
    except ValueError:  # refused with the other checks in validate()
        dataset = benchmark
    return "vgg" if dataset == "cifar10" else "mlp"


def paper_defaults(network: str) -> dict[str, Any]:
    """Table 2's hyperparameters for ``network``; a user's model gets the MLP's (Adam 1e-3, batch 128, E = B = 72)."""
    return PAPER_DEFAULTS.get(network, PAPER_DEFAULTS["mlp"])


@dataclass(frozen=True)
class RunConfig:
    benchmark: str = "mnist-5k"
    strategy: str = "packnet"
    network: str | None = None
    final_free: float = 0.9
    rounds: int = 1
    schedule: str = "uniform"
    epochs: int | None = None
    retrain_epochs: int | None = None
    seed: int = 0
    batch_size: int | None = None
    lr: float | None = None
    prune_scope: str = "layer"
    val_size: float | int = 0.1  # a fraction of each task's training set, or a count per task
    class_order_seed: int | None = None
    n_tasks: int = 5
    widths: tuple[int, ...] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    strategy_options: dict[str, Any] = field(default_factory=dict)  # the strategy's own parameters (e.g. EWC's)
    head: str | None = None  # a user model's classifier layer (default: its last nn.Linear)
    # Long task sequences (sleepcl.data.split, sleepcl.data.transforms); all in LATER_FIELDS.
    class_groups: str | None = None  # Split: each task's classes, "0,1,2|3,4,5|6,7,8,9" (n_tasks = the groups)
    transform_seed: int = 0          # permuted-*/rotated-*: seeds every task's permutation or the angles
    permutations: str | None = None  # permuted-*: one seed per task, or "identity", "identity,1,2,3"
    rotations: str | None = None     # rotated-*: one angle in degrees per task, "0,45,90,135"
    # Evaluate every task seen so far after every k-th task and after the last (whose row is always complete); the
    # rows in between are None in the accuracy matrices. Training is the same whatever k is.
    eval_every: int = 1
    # Nights after each day: "rounds" (prune-then-retrain) or "none"; None is the strategy's default (PackNet,
    # Memory and Multinet take rounds, the others none). In LATER_FIELDS.
    night: str | None = None
    # How the weights the tasks keep are shared out among the layers: "uniform" (every layer the same fraction:
    # the paper's protocol) or "erk" (Erdős–Rényi-Kernel: small layers a larger share; engine/density.py). In
    # LATER_FIELDS.
    layer_density: str = "uniform"

    def resolved(self) -> "RunConfig":
        """This config with every ``None`` default filled in from the paper's Table 2, validated."""
        network = self.network or default_network(self.benchmark)
        defaults = paper_defaults(network)
        filled = dataclasses.replace(
            self,
            network=network,
            epochs=defaults["epochs"] if self.epochs is None else self.epochs,
            retrain_epochs=defaults["retrain_epochs"] if self.retrain_epochs is None else self.retrain_epochs,
            batch_size=defaults["batch_size"] if self.batch_size is None else self.batch_size,
            lr=defaults["lr"] if self.lr is None else self.lr,
            widths=tuple(self.widths) if self.widths else None,
            **{name: canonical_task_spec(name, getattr(self, name))
               for name in ("class_groups", "permutations", "rotations")},
        )
        filled.validate()
        return dataclasses.replace(filled, strategy_options=canonical_options(filled.strategy, filled.strategy_options),
                                   night=canonical_night(filled.strategy, filled.night))

    def validate(self) -> None:
        """Refuse a config that cannot run, with a message that names the problem and the fix."""
        def bad(msg: str) -> None:
            raise ValueError(msg)

        for name in ("final_free", "lr", "val_size"):
            value = getattr(self, name)
            if isinstance(value, float) and not math.isfinite(value):
                bad(f"--{name.replace('_', '-')} must be a finite number, got {value}")
        if self.benchmark not in BENCHMARKS:
            bad(f"unknown benchmark {self.benchmark!r}; choose one of {', '.join(BENCHMARKS)}")
        if self.night is not None and self.night not in NIGHTS:
            bad(f"unknown --night {self.night!r}; choose one of {', '.join(NIGHTS)}")
        if self.network is not None and self.network not in NETWORKS and not is_factory(self.network):
            bad(f"unknown network {self.network!r}; choose one of {', '.join(NETWORKS)} or give a model factory "
                "as package.module:function")
        # an unknown name, a user's class that cannot be loaded, unknown options and bad values, a night it cannot take
        get_strategy(self.strategy, self.strategy_options, night=self.night)
        if self.head is not None and not is_factory(self.network or ""):
            bad("--head names the classifier of your own --model; the built-in networks know theirs")
        if not 0.0 < self.final_free < 1.0:
            bad(f"--final-free p must lie strictly between 0 and 1 (the fraction of weights left free "
                f"after the last task), got {self.final_free}")
        if self.rounds < 1:
            bad(f"--rounds N must be at least 1 (N=1 is the original PackNet), got {self.rounds}")
        if self.schedule not in SCHEDULES:
            bad(f"unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}")
        for name in ("epochs", "retrain_epochs"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= MAX_EPOCHS:
                bad(f"--{name.replace('_', '-')} must be >= 0 and at most {MAX_EPOCHS:,} (the paper trains 72), "
                    f"got {value:,}")
        if self.epochs == 0 and self.retrain_epochs == 0:
            bad("--epochs and --retrain-epochs are both 0: nothing would be trained")
        if self.retrain_epochs is not None:
            if self.retrain_epochs < self.rounds and self.schedule != "uniform":
                bad(f"--retrain-epochs B={self.retrain_epochs} is fewer than N={self.rounds} rounds")
            sleep_schedule(self.schedule, self.retrain_epochs, self.rounds)  # B % N for uniform
        if isinstance(self.eval_every, bool) or not isinstance(self.eval_every, int) or self.eval_every < 1:
            bad(f"--eval-every k must be a whole number >= 1 (evaluate after every k-th task and the last), "
                f"got {self.eval_every!r}")
        if self.batch_size is not None and self.batch_size < 1:
            bad(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.lr is not None and not 0 < self.lr <= FLOAT32_MAX:
            bad(f"--lr must be > 0 and at most {FLOAT32_MAX:.4g} (the weights are float32), got {self.lr}")
        if self.prune_scope not in ("layer", "global"):
            bad(f"unknown prune scope {self.prune_scope!r}; choose 'layer' or 'global'")
        if self.layer_density not in LAYER_DENSITIES:
            bad(f"unknown --layer-density {self.layer_density!r}; choose one of {', '.join(LAYER_DENSITIES)}")
        if self.layer_density != "uniform" and self.prune_scope == "global":
            bad(f"--layer-density {self.layer_density} shares the kept weights out among the layers; --prune-scope "
                "global lets magnitudes decide the layers' shares instead: choose one of the two")
        check_tasks(self.benchmark, self.n_tasks, class_order_seed=self.class_order_seed,
                    class_groups=self.class_groups, transform_seed=self.transform_seed,
                    permutations=self.permutations, rotations=self.rotations)
        if self.val_size < 0 or (isinstance(self.val_size, float) and self.val_size >= 1):
            bad(f"--val-size must be a fraction in [0, 1) or a count >= 1, got {self.val_size}")
        if self.seed < 0:
            bad(f"seeds must be >= 0, got {self.seed}")
        if self.widths is not None and (not self.widths or any(isinstance(w, bool) or not isinstance(w, int) or w < 1
                                                               for w in self.widths)):
            bad(f"--widths takes positive integers like 256,256, got {','.join(map(str, self.widths))}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["widths"] = list(self.widths) if self.widths else None
        d["strategy_options"] = dict(sorted(self.strategy_options.items()))
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        known = {k: v for k, v in d.items() if k in names}
        if known.get("widths") is not None:
            known["widths"] = tuple(known["widths"])
        return cls(**known)

    def identity(self) -> dict[str, Any]:
        """What makes this run this run: the resolved config, less the :data:`LATER_FIELDS` at their defaults,
        plus, for a user's model, a digest of the source file that defines it (so that a stored run is not served
        once the model's code has changed)."""
        d = self.resolved().to_dict()
        for name, default in LATER_FIELDS.items():
            if d.get(name) == default:
                del d[name]
        if is_factory(d["network"]):
            d["model_source"] = factory_digest(d["network"])
            d["generic_path"] = GENERIC_PATH_VERSION  # what the generic path computes changed: stored runs are stale
        if is_strategy_spec(d["strategy"]):
            d["strategy_source"] = strategy_digest(d["strategy"])
        return d

    def hash(self) -> str:
        """sha256 of the canonical JSON of :meth:`identity`: the run's identity in the results store."""
        blob = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()


def canonical_options(strategy: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with those at the strategy's default (``100`` or ``100.0`` for EWC's ``lambda``) left out: EWC
    without options and EWC with ``lambda=100`` are one run with one hash, the hash EWC runs had before options
    were filled in. Other values are kept as given, so every stored run keeps its hash."""
    defaults = strategy_class(strategy).options
    return {key: value for key, value in sorted(options.items())
            if not (key in defaults and value == defaults[key]
                    and isinstance(value, bool) == isinstance(defaults[key], bool))}


def canonical_night(strategy: str, night: str | None) -> str | None:
    """``night``, or None where it is the strategy's default (one run, one hash, whether it was said or not)."""
    return None if night == strategy_class(strategy).default_night() else night


def check_population(configs: Sequence[RunConfig]) -> list[RunConfig]:
    """Resolve ``configs`` and check they can train as one population: same data stream and steps."""
    if not configs:
        raise ValueError("a population needs at least one member")
    resolved = [c.resolved() for c in configs]
    shared = {k: v for k, v in resolved[0].to_dict().items() if k not in MEMBER_FIELDS}
    for c in resolved[1:]:
        for k, v in c.to_dict().items():
            if k not in MEMBER_FIELDS and shared[k] != v:
                raise ValueError(f"members of one population must share {k!r} ({shared[k]!r} vs {v!r}); "
                                 f"only {', '.join(MEMBER_FIELDS)} may differ — run them as separate populations")
    return resolved


def parse_int_list(text: str, flag: str = "--seeds", limit: int = MAX_RUNS) -> list[int]:
    """Parse ``"0-9"``, ``"0,3,7"`` or ``"0-2,5"`` into a list of ints, refusing anything else clearly.

    A list longer than ``limit`` is refused before it is built (``0-10000000000`` answers at once).
    """
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part[1:]:
                lo, hi = part.split("-", 1) if not part.startswith("-") else (part, "")
                a, b = int(lo), int(hi)
                if b < a:
                    raise ValueError
                if len(out) + b - a + 1 > limit:
                    raise OverflowError
                out.extend(range(a, b + 1))
            else:
                out.append(int(part))
        except ValueError:
            raise ValueError(f"cannot read {flag} {text!r} as a list of integers: use a range like 0-9, "
                             f"a list like 0,3,7, or both like 0-2,5") from None
        except OverflowError:
            raise ValueError(f"{flag} {text!r} lists {len(out) + b - a + 1:,} values, more than the {limit:,} one "
                             "command takes; split it over several commands (the results store keeps what each "
                             "finishes)") from None
    if not out:
        raise ValueError(f"no integers in {flag} {text!r}: use a range like 0-9 or a list like 0,3,7")
    if len(out) > limit:
        raise ValueError(f"{flag} {text!r} lists {len(out):,} values, more than the {limit:,} one command takes")
    if len(set(out)) != len(out):
        raise ValueError(f"{flag} {text!r} names some value twice")
    return out


def parse_float_list(text: str) -> list[float]:
    """Parse ``"0.9"`` or ``"0.8,0.9,0.95"``."""
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"cannot read {text!r} as a comma-separated list of numbers, e.g. 0.8,0.9") from None
    if not values:
        raise ValueError(f"no numbers in {text!r}")
    return values


def describe_differences(configs: Sequence[RunConfig]) -> str:
    """A short label per member: the member fields that vary."""
    varying = [k for k in MEMBER_FIELDS if len({getattr(c, k) for c in configs}) > 1]
    return ", ".join(varying)
