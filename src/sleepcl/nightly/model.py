"""The deployed model: one file that lives across nights.

**File format.** A single `safetensors <https://huggingface.co/docs/safetensors>`_ file. Tensors:

==========================  =====================================================================
``trunk/<name>``            every trunk parameter (``fc0.weight``, ``fc0.bias``, ... or the VGG's, or a
                            user model's), without the population axis; per-task ones (norm layers)
                            with a leading task axis, one row per task learnt (the initial values
                            before the first night)
``buffer/<name>``           the trunk's buffers (norm layers' running statistics), the same way
``owner/<name>``            ``uint8`` owner map of each prunable weight: 0 = free, t = task t
``head/<t>/weight``         task t's output layer ``(classes_t, features)``; ``head/<t>/bias``
``input/mean``, ``input/std``  the input normalisation (fixed on the first night), ``float32``
``strategy/<name>``         the strategy's own state of this model (:meth:`Strategy.state` of its member,
                            without the member axis: EWC's importance, ER's buffer); none for PackNet
==========================  =====================================================================

The safetensors header's ``__metadata__`` holds ``format`` (``sleepcl-nightly``), ``version`` and
``sleepcl``: a JSON document with the network spec (a built-in network and its widths, or a user's model
factory ``package.module:function``, with the names of its per-task tensors, the digest of its architecture
(every parameter's and buffer's name, shape and dtype: the model's identity) and a digest of the factory's source
file, kept as information: an edit of the factory that keeps the architecture loads, with a notice),
the input spec (sample shape, ``uint8`` or
``float32``, normalisation), the capacity policy, the training settings, the tasks (name, owner index,
class list, sizes, validation accuracy) and the history of nights. Being one file, tensors and metadata
are replaced together.

**A user's model runs the user's code**, so a model file whose network is a factory is read only when the user
asks for that code: ``--model`` on the command line (the factory the file names, or where it is now), else the
file is refused before anything is imported; ``sleepcl inspect`` reads the metadata and tensors without building
the network at all.

**Saving** is atomic: the new file is written to a temporary file in the same folder, flushed and
fsync'ed, the current file is hard-linked (or copied) to ``MODEL.prev``, and the temporary file is
renamed over ``MODEL``; the folder is fsync'ed. At every instant ``MODEL`` is a complete file -- the old
or the new -- so a kill at any point leaves a model that loads and predicts exactly as before.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import shutil
import stat
import struct
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import Tensor

from ..engine import ownership
from ..engine.members import Members
from ..files import atomic_write_bytes, check_writable, temporary_in, temporary_pid, write_or_keep
from ..models import Network, build_network, factory_digest, is_factory, load_factory
from ..models.base import MemberRandom
from ..runs.memory import format_bytes
from ..threads import torch_threads
from .schema import check_task_name, validate_meta

__all__ = ["FORMAT", "VERSION", "ModelError", "NightlyModel", "atomic_write", "check_consistent", "check_night_memory",
           "check_task_name", "lock_model", "prev_path", "read_metadata", "real_path", "write_scratch"]

FORMAT = "sleepcl-nightly"
VERSION = 2  # 2: buffers and per-task tensors, user models; files of version 1 (the paper's networks) still load
EVAL_CHUNK = 4096


class ModelError(ValueError):
    """The model file is missing, unreadable, or cannot take what was asked of it."""


def real_path(path: str | Path) -> Path:
    """The file a model path names, symbolic links followed: a model reached through a link is locked, kept as
    ``.prev`` and replaced where it really is, and the link stays a link to it."""
    return Path(os.path.realpath(path))


def prev_path(path: str | Path) -> Path:
    """Where the previous night's file is kept: ``MODEL.prev`` beside the real file (:func:`real_path`)."""
    p = real_path(path)
    return p.with_name(p.name + ".prev")


def damaged(source: str, problem: str) -> ModelError:
    """The error for a model file that is not consistent: what is wrong where, and the way back."""
    prev = prev_path(source)
    if prev.exists():
        back = (f"the previous night's file {prev} is kept: check it with `sleepcl inspect {prev}` and copy it "
                f"over {source} to go back to it")
    else:
        back = f"there is no previous night's file ({prev}): restore {source} from a backup"
    return ModelError(f"{source} is damaged ({problem}); it is left as it is and nothing was done. To go on, {back}")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class NightlyModel:
    """Weights, owner map, per-task heads and the JSON metadata of a deployed model.

    Tasks are numbered by position: task ``j`` (0-based) owns the weights whose owner is ``j + 1``.
    """

    meta: dict[str, Any]
    trunk: dict[str, Tensor]
    owner: dict[str, Tensor]
    heads: list[tuple[Tensor, Tensor]] = field(default_factory=list)
    mean: Tensor = field(default_factory=lambda: torch.zeros(1))
    std: Tensor = field(default_factory=lambda: torch.ones(1))
    buffers: dict[str, Tensor] = field(default_factory=dict)
    strategy: dict[str, Tensor] = field(default_factory=dict)  # the strategy's state (module doc: strategy/<name>)
    # The factory the user allowed to build a user model's network (not stored: asked for on every command).
    factory: str | None = field(default=None, compare=False)

    # -- construction --------------------------------------------------------------------------------

    @classmethod
    def create(cls, *, network: str, widths: tuple[int, ...] | None, input_shape: tuple[int, ...], kind: str,
               mean: np.ndarray, std: np.ndarray, normalisation: str, policy: dict[str, Any],
               training: dict[str, Any], seed: int, head: str | None = None) -> "NightlyModel":
        """A fresh model: the network's own initial weights for ``seed``, every weight free, no task yet."""
        net_shape = net_input_shape(network, input_shape)
        spec: dict[str, Any] = {"name": network, "widths": list(widths or ()), "net_input_shape": list(net_shape)}
        if is_factory(network):
            spec.update(source=factory_digest(network), head=head)
        net = _build(spec, n_tasks=1, head_size=2, factory=network)
        params, buffers = net.member_state(int(seed))
        spec["widths"] = list(getattr(net, "widths", widths or ()))
        spec["per_task"] = sorted(net.per_task)
        if is_factory(network):
            spec["architecture"] = architecture_digest(net)
        trunk = {k: v.contiguous() for k, v in params.items() if not k.startswith("head.")}
        owner = {name: torch.zeros_like(trunk[name], dtype=torch.uint8) for name in net.prunable}
        meta = {
            "format": FORMAT, "version": VERSION, "created": now_iso(), "updated": now_iso(), "network": spec,
            "input": {"shape": list(input_shape), "kind": kind, "normalisation": normalisation},
            "policy": policy, "training": dict(training, seed=int(seed)),
            "tasks": [], "history": [],
        }
        return cls(meta, trunk, owner, [], torch.as_tensor(mean, dtype=torch.float32).contiguous(),
                   torch.as_tensor(std, dtype=torch.float32).contiguous(),
                   {k: v.contiguous() for k, v in buffers.items()}, factory=network if is_factory(network) else None)

    # -- description ---------------------------------------------------------------------------------

    def network(self, n_tasks: int = 1, class_counts: list[int] | None = None) -> Network:
        """The model's network with ``n_tasks`` heads (of as many outputs as the most classes any task has)."""
        counts = class_counts or [2] * n_tasks
        return _build(self.meta["network"], n_tasks=n_tasks, head_size=max(counts), class_counts=counts,
                      factory=self.factory)

    @property
    def per_task(self) -> frozenset[str]:
        """Tensors with a leading task axis (norm layers of a user's model)."""
        return frozenset(self.meta["network"].get("per_task", ()))

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.meta["input"]["shape"])

    @property
    def input_kind(self) -> str:
        return self.meta["input"]["kind"]

    @property
    def tasks(self) -> list[dict[str, Any]]:
        return self.meta["tasks"]

    @property
    def history(self) -> list[dict[str, Any]]:
        return self.meta["history"]

    @property
    def policy(self) -> dict[str, Any]:
        return self.meta["policy"]

    @property
    def prunable(self) -> tuple[str, ...]:
        return tuple(self.owner)

    def task_index(self, name: str) -> int:
        """0-based position of the task called ``name``."""
        for j, t in enumerate(self.tasks):
            if t["name"] == name:
                return j
        known = ", ".join(repr(t["name"]) for t in self.tasks) or "none yet"
        raise ModelError(f"the model has no task {name!r} (tasks: {known})")

    def layer_sizes(self) -> dict[str, int]:
        return {name: o.numel() for name, o in self.owner.items()}

    def free_counts(self) -> dict[str, int]:
        return {name: int((o == ownership.FREE).sum()) for name, o in self.owner.items()}

    def held_counts(self, task_position: int) -> dict[str, int]:
        return {name: int((o == task_position + 1).sum()) for name, o in self.owner.items()}

    def free_fraction(self) -> float:
        return sum(self.free_counts().values()) / sum(self.layer_sizes().values())

    # -- computation ---------------------------------------------------------------------------------

    def normalise(self, x: np.ndarray | Tensor, device: torch.device | str = "cpu") -> Tensor:
        """Raw samples (``uint8`` pixels or ``float32``) -> the network's input: ``(x - mean) / std``."""
        t = torch.as_tensor(x).to(device)
        t = t.to(torch.float32)
        t = (t - self.mean.to(device)) / self.std.to(device)
        return t.reshape(t.shape[0], *self.meta["network"]["net_input_shape"])

    def members(self, n_classes: int, device: torch.device | str, seed: int) -> Members:
        """One member that is this model about to learn a new task of ``n_classes`` classes: every task's head
        (the new one drawn from ``seed``), per-task tensors extended by a row for the new task."""
        t = len(self.tasks)
        counts = [len(task["classes"]) for task in self.tasks] + [n_classes]
        net = self.network(t + 1, counts)
        params = {n: _task_rows(v, t + 1) if n in self.per_task else v for n, v in self.trunk.items()}
        buffers = {n: _task_rows(v, t + 1) if n in self.per_task else v for n, v in self.buffers.items()}
        features = net.feature_dim
        w = torch.zeros(t + 1, net.head_size, features)
        b = torch.zeros(t + 1, net.head_size)
        for j, (hw, hb) in enumerate(self.heads):
            w[j, :len(hb)], b[j, :len(hb)] = hw, hb
        g = torch.Generator().manual_seed(seed)
        bound = 1.0 / math.sqrt(features)
        w[t, :n_classes] = (torch.rand((1, n_classes, features), generator=g) * 2 - 1)[0] * bound
        b[t, :n_classes] = (torch.rand((1, n_classes), generator=g) * 2 - 1)[0] * bound
        params.update({"head.weight": w, "head.bias": b})
        device = torch.device(device)
        return Members(net, {n: v[None].to(device).clone().requires_grad_() for n, v in params.items()},
                       {n: v[None].to(device).clone() for n, v in buffers.items()},
                       {n: v[None].to(device).clone() for n, v in self.owner.items()},
                       MemberRandom([torch.Generator(device=device).manual_seed(seed + 1)]))

    def with_member(self, members: Members, member: int, classes: list[Any],
                    strategy: dict[str, Tensor] | None = None) -> "NightlyModel":
        """A copy of this model holding member ``member`` of ``members`` (which learnt one more task of
        ``classes``); metadata copied. ``strategy``: the strategy's state (:meth:`Strategy.state`, every member's),
        of which member ``member``'s is kept (default: this model's)."""
        import copy

        state = members.member_state(member)
        t = len(self.tasks)
        head_w, head_b = state["params"].pop("head.weight"), state["params"].pop("head.bias")
        heads = [*self.heads, (head_w[t, :len(classes)].cpu().contiguous(), head_b[t, :len(classes)].cpu().contiguous())]
        return NightlyModel(copy.deepcopy(self.meta), {k: v.cpu().contiguous() for k, v in state["params"].items()},
                            {k: v.cpu().contiguous() for k, v in state["owner"].items()}, heads, self.mean, self.std,
                            {k: v.cpu().contiguous() for k, v in state["buffers"].items()},
                            self.strategy if strategy is None else
                            {k: v[member].detach().cpu().contiguous() for k, v in strategy.items()},
                            factory=self.factory)

    @torch.no_grad()
    def logits(self, task_position: int, x: np.ndarray | Tensor, device: torch.device | str = "cpu",
               chunk: int = EVAL_CHUNK) -> Tensor:
        """Logits ``(n, classes)`` of task ``task_position`` for raw samples ``x``, in fixed-size chunks, through
        the task's own network: its own and earlier tasks' weights, its own per-task tensors and head."""
        hw, hb = self.heads[task_position]
        net = self.network(1, [len(hb)])
        j = task_position

        def one(v: Tensor, name: str) -> Tensor:
            return (v[j:j + 1] if name in self.per_task else v)[None].to(device)

        params = {n: one(v, n) for n, v in self.trunk.items()}
        for name, o in self.owner.items():
            params[name] = params[name] * ownership.visible(o, j + 1).to(device)[None]
        params.update({"head.weight": hw[None, None].to(device), "head.bias": hb[None, None].to(device)})
        buffers = {n: one(v, n) for n, v in self.buffers.items()}
        out = []
        for start in range(0, len(x), chunk):
            xb = self.normalise(x[start:start + chunk], device)
            out.append(net.logits(params, xb[None], 0, buffers=buffers)[0].cpu())
        return torch.cat(out) if out else torch.zeros(0, len(hb))

    def accuracy(self, task_position: int, x: np.ndarray, class_index: np.ndarray,
                 device: torch.device | str = "cpu") -> float:
        pred = self.logits(task_position, x, device).argmax(1).numpy()
        return float((pred == class_index).mean())

    # -- files ---------------------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        from safetensors.torch import save

        tensors: dict[str, Tensor] = {}
        for name, t in self.trunk.items():
            tensors[f"trunk/{name}"] = t.detach().cpu().contiguous()
        for name, o in self.owner.items():
            tensors[f"owner/{name}"] = o.cpu().contiguous()
        for name, t in self.buffers.items():
            tensors[f"buffer/{name}"] = t.cpu().contiguous()
        for j, (w, b) in enumerate(self.heads):
            tensors[f"head/{j + 1}/weight"] = w.detach().cpu().contiguous()
            tensors[f"head/{j + 1}/bias"] = b.detach().cpu().contiguous()
        tensors["input/mean"] = self.mean.cpu().contiguous()
        tensors["input/std"] = self.std.cpu().contiguous()
        for name, t in self.strategy.items():
            tensors[f"strategy/{name}"] = t.detach().cpu().contiguous()
        metadata = {"format": FORMAT, "version": str(VERSION), "sleepcl": json.dumps(self.meta, sort_keys=True)}
        return save(tensors, metadata)

    def save(self, path: str | Path) -> Path:
        """Write the model atomically where it really is (:func:`real_path`), keeping the file it replaces as
        ``MODEL.prev``. A model whose weights diverged (NaN or infinite values) is refused and nothing is written:
        the file at ``path`` stays the previous night's."""
        from ..engine.divergence import DIVERGED_HINT, TrainingDiverged, first_nonfinite

        tensors = {**self.trunk, **self.buffers, **{f"head {j + 1}": torch.cat([w.flatten(), b.flatten()])
                                                   for j, (w, b) in enumerate(self.heads)}}
        bad = first_nonfinite(tensors)
        if bad is not None:
            raise TrainingDiverged(f"training diverged: {bad} held NaN or infinite values at the end of the night; "
                                   f"nothing was saved ({path} is as it was). Try {DIVERGED_HINT}")
        self.meta["updated"] = now_iso()
        atomic_write(real_path(path), self.to_bytes(), keep_previous=True)
        return Path(path)

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "model", factory: str | None = None) -> "NightlyModel":
        """The model in ``data``, checked whole: the metadata against its schema (:mod:`.schema`) and the tensors
        against the metadata (:func:`check_consistent`); a file that fails is refused as damaged.

        ``factory``: for a model of a user's factory, the factory the user allows to build it (the one the file
        names, or where it is now); without it such a file is refused before any code is imported. The network
        it builds must have the file's architecture."""
        meta, tensors = _read(data, source)
        spec = meta["network"]
        net = _build(spec, n_tasks=1, head_size=2, factory=factory, source=source)
        params, bufs = net.member_state(0)
        per_task = frozenset(spec.get("per_task", ()))
        rows = max(1, len(meta["tasks"]))

        def expected(state: dict[str, Tensor]) -> dict[str, tuple[int, ...]]:
            return {n: (rows, *v.shape[1:]) if n in per_task else tuple(v.shape) for n, v in state.items()
                    if not n.startswith("head.")}

        def group(prefix: str) -> dict[str, Tensor]:
            return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

        shapes, buffer_shapes = expected(params), expected(bufs)
        trunk, owner, buffers = group("trunk/"), group("owner/"), group("buffer/")
        heads = [(tensors.get(f"head/{j + 1}/weight"), tensors.get(f"head/{j + 1}/bias"))
                 for j in range(len(meta["tasks"]))]
        problem = check_consistent(meta, net, shapes, trunk, owner, heads, tensors) or \
            _check_buffers(buffer_shapes, buffers, {n: v.dtype for n, v in bufs.items()})
        if problem is not None and is_factory(spec["name"]) and "architecture" not in spec \
                and spec.get("source") != factory_digest(factory or spec["name"]):
            raise ModelError(f"{factory or spec['name']} builds another network than the one in {source} ({problem}); "
                             "its source changed since the model was made: restore the code that made it")
        if problem is not None:
            raise damaged(source, problem)
        # the network's own order (safetensors stores tensors in its own order)
        trunk = {name: trunk[name] for name in shapes}
        owner = {name: owner[name] for name in net.prunable}
        buffers = {name: buffers[name] for name in buffer_shapes}
        return cls(meta, trunk, owner, heads, tensors["input/mean"], tensors["input/std"], buffers, group("strategy/"),
                   factory=factory if is_factory(spec["name"]) else None)

    @classmethod
    def load(cls, path: str | Path, factory: str | None = None) -> "NightlyModel":
        """The model file at ``path`` (``factory``: see :meth:`from_bytes`)."""
        p = Path(path)
        if not p.exists():
            prev = prev_path(p)
            hint = f"; the previous night's file {prev} exists: copy it to {p} to go back to it" if prev.exists() else ""
            raise ModelError(f"no model at {p}{hint}")
        if p.is_dir():
            raise ModelError(f"{p} is a folder, not a model file")
        return cls.from_bytes(p.read_bytes(), str(p), factory)


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The JSON metadata of a model file, read from its header only."""
    p = Path(path)
    with open(p, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ModelError(f"{p}: not a sleepcl model (too short)")
        (n,) = struct.unpack("<Q", head)
        if n > 100_000_000:
            raise ModelError(f"{p}: not a sleepcl model (bad header)")
        return _parse_metadata(head + f.read(n), str(p))


def _read(data: bytes, source: str) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """A model file's metadata (checked against the schema) and tensors, read without building its network."""
    from safetensors.torch import load

    meta = _parse_metadata(data, source)
    problem = validate_meta(meta)
    if problem is not None:
        raise damaged(source, f"metadata {problem}")
    try:
        tensors = load(data)
    except Exception as e:  # safetensors raises its own error types
        raise damaged(source, f"the tensors cannot be read: {e}") from e
    return meta, tensors


def _parse_metadata(data: bytes, source: str) -> dict[str, Any]:
    if len(data) < 8:
        raise ModelError(f"{source}: not a sleepcl model (too short)")
    (n,) = struct.unpack("<Q", data[:8])
    try:
        header = json.loads(data[8:8 + n])
        md = header["__metadata__"]
    except (ValueError, KeyError, TypeError):
        raise ModelError(f"{source}: not a sleepcl model (no safetensors header with sleepcl metadata)") from None
    if not isinstance(md, dict) or md.get("format") != FORMAT:
        found = md.get("format") if isinstance(md, dict) else None
        raise ModelError(f"{source}: a safetensors file but not a sleepcl nightly model (format {found!r})")
    version = md.get("version")
    if not isinstance(version, str) or not version.isdigit():
        raise damaged(source, f"its format version {version!r} is not a whole number")
    if int(version) > VERSION:
        raise ModelError(f"{source}: written by a newer sleepcl (format version {version}); upgrade sleepcl")
    try:
        meta = json.loads(md["sleepcl"])
    except (KeyError, TypeError, ValueError):
        raise damaged(source, "its metadata is missing or not JSON") from None
    if not isinstance(meta, dict):
        raise damaged(source, "its metadata is not a JSON object")
    return meta


def architecture_digest(net: Network) -> str:
    """sha256 (16 hex digits) of a network's architecture: every trunk parameter's and buffer's name, shape (one
    task's: per-task tensors without their task axis) and dtype. A model file's identity: the factory that made
    it may be edited or moved as long as it builds this."""
    params, buffers = net.member_state(0)
    rows = sorted((kind, n, list(v.shape[1:] if n in net.per_task else v.shape), str(v.dtype))
                  for kind, group in (("param", params), ("buffer", buffers)) for n, v in group.items()
                  if not n.startswith("head."))
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]


def _build(spec: dict[str, Any], *, n_tasks: int, head_size: int, class_counts: list[int] | None = None,
           factory: str | None = None, source: str = "the model") -> Network:
    """The network a model file's spec names (per-task norm layers: the nightly always freezes).

    A user's factory is imported only when the user gave one (``factory``: the one the spec names or where it is
    now); it must build the spec's architecture. An edited factory source is a notice, not an error."""
    name = spec["name"]
    if is_factory(name):
        if factory is None:
            raise ModelError(f"{source} was made with the model factory {name}; reading it would import and run that "
                             f"code, which sleepcl does only when asked: give --model {name} (or where that factory is "
                             "now) to allow it. `sleepcl inspect` shows the model without it")
        if not is_factory(factory):
            raise ModelError(f"{source} was made with the model factory {name}, not the built-in {factory}")
        try:
            load_factory(factory)
        except ValueError as e:
            raise ModelError(f"{source} needs its model factory, which is missing: {e}. The file is not damaged: put "
                             "the factory's code back, or give --model with where it is now") from None
        if spec.get("source") and factory_digest(factory) != spec["source"]:
            warnings.warn(f"{factory}: its source file changed since {source} was made; the network it builds is "
                          "checked against the file's architecture", stacklevel=2)
        name = factory
    net = build_network(name, spec["net_input_shape"], n_tasks, head_size, spec.get("widths") or None,
                        per_task_norm=True, head=spec.get("head"), class_counts=class_counts)
    if is_factory(name) and spec.get("architecture") and architecture_digest(net) != spec["architecture"]:
        raise ModelError(f"{name} builds another network than the one in {source} (other parameter or buffer names, "
                         "shapes or dtypes): its code changed since the model was made; restore the code that made "
                         "it, or give --model with the factory that did")
    return net


def _task_rows(v: Tensor, rows: int) -> Tensor:
    """A per-task tensor with ``rows`` rows: the stored ones, then copies of the last for new tasks."""
    if v.shape[0] >= rows:
        return v[:rows]
    return torch.cat([v, v[-1:].expand(rows - v.shape[0], *v.shape[1:])])


def net_input_shape(network: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """What the network sees: grey ``(H, W)`` images get one channel, ``(1, H, W)``, as the built-in benchmarks
    give them (a conv net takes ``(C, H, W)``; the built-in MLP flattens whatever it gets)."""
    if network != "mlp" and len(shape) == 2:
        return (1, *shape)
    return tuple(shape)


def _check_buffers(shapes: dict[str, tuple[int, ...]], buffers: dict[str, Tensor],
                   dtypes: dict[str, torch.dtype]) -> str | None:
    """None if every buffer of the network (norm layers' statistics) is there, of its shape, dtype and finite."""
    for name, shape in shapes.items():
        t = buffers.get(name)
        if t is None or tuple(t.shape) != shape or t.dtype != dtypes[name]:
            found = "missing" if t is None else f"{t.dtype} {tuple(t.shape)}"
            return f"buffer {name} should be {dtypes[name]} {shape}, found {found}"
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return f"buffer {name} holds NaN or infinite values"
    extra = sorted(set(buffers) - set(shapes))
    return f"buffers {', '.join(extra[:4])} belong to no layer of the network" if extra else None


def check_consistent(meta: dict[str, Any], net: Network, shapes: dict[str, tuple[int, ...]],
                     trunk: dict[str, Tensor], owner: dict[str, Tensor], heads: list[tuple[Tensor | None, Tensor | None]],
                     tensors: dict[str, Tensor]) -> str | None:
    """None if the tensors agree with the metadata (already checked against the schema), else what does not.

    Checked: the network's input against the data's; every trunk weight (shape, float32, finite); every owner
    map (shape, uint8, no owner beyond the task count); each task's head (one row per class, the network's
    feature width, finite); the input normalisation (shape, finite, std > 0).
    """
    n_tasks = len(meta["tasks"])
    inp = tuple(meta["input"]["shape"])
    stored = tuple(meta["network"]["net_input_shape"])
    if stored != net_input_shape(meta["network"]["name"], inp) and stored != inp:  # (H, W): files made before
        return (f"network.net_input_shape {meta['network']['net_input_shape']} does not fit input.shape "
                f"{list(inp)}")
    for name, shape in shapes.items():
        t = trunk.get(name)
        if t is None or tuple(t.shape) != tuple(shape) or t.dtype != torch.float32:
            found = "missing" if t is None else f"{t.dtype} {tuple(t.shape)}"
            return f"trunk weight {name} should be float32 {tuple(shape)}, found {found}"
        if not bool(torch.isfinite(t).all()):
            return f"trunk weight {name} holds NaN or infinite values"
    for name in net.prunable:
        o = owner.get(name)
        if o is None or tuple(o.shape) != tuple(shapes[name]) or o.dtype != torch.uint8:
            found = "missing" if o is None else f"{o.dtype} {tuple(o.shape)}"
            return f"owner map of {name} should be uint8 {tuple(shapes[name])}, found {found}"
        top = int(o.max()) if o.numel() else 0
        if top > n_tasks:
            return f"owner map of {name} gives weights to task {top}, but the model has {n_tasks} task(s)"
    for j, ((w, b), task) in enumerate(zip(heads, meta["tasks"])):
        k = len(task["classes"])
        if w is None or b is None:
            return f"the head of task {j + 1} ({task['name']!r}) is missing"
        if tuple(w.shape) != (k, net.feature_dim) or tuple(b.shape) != (k,) or w.dtype != torch.float32 \
                or b.dtype != torch.float32:
            return (f"the head of task {j + 1} ({task['name']!r}) is {tuple(w.shape)} + {tuple(b.shape)}, but the task "
                    f"has {k} classes and the network {net.feature_dim} features: float32 ({k}, {net.feature_dim}) "
                    f"+ ({k},) expected")
        if not bool(torch.isfinite(w).all() and torch.isfinite(b).all()):
            return f"the head of task {j + 1} ({task['name']!r}) holds NaN or infinite values"
    extra = sorted(k for k in tensors if k.startswith("head/") and int(k.split("/")[1]) > n_tasks) \
        if all(k.split("/")[1].isdigit() for k in tensors if k.startswith("head/")) else ["head/?"]
    if extra:
        return f"tensors {', '.join(extra[:4])} belong to no task of the metadata ({n_tasks} tasks)"
    for name in ("mean", "std"):
        t = tensors.get(f"input/{name}")
        if t is None or t.dtype != torch.float32:
            return f"input/{name} is missing or not float32"
        try:
            fits = torch.broadcast_shapes(tuple(t.shape), inp) == inp
        except RuntimeError:
            fits = False
        if not fits:
            return f"input/{name} has shape {tuple(t.shape)}, which does not fit samples of shape {inp}"
        if not bool(torch.isfinite(t).all()):
            return f"input/{name} holds NaN or infinite values"
    if not bool((tensors["input/std"] > 0).all()):
        return "input/std holds values <= 0 (the inputs would be divided by them)"
    return None


# -- atomic files -------------------------------------------------------------------------------------

def atomic_write(path: Path, data: bytes, *, keep_previous: bool = True) -> Path:
    """Replace ``path`` by ``data`` so that ``path`` is always a complete file, old or new.

    :func:`sleepcl.files.atomic_write_bytes` (a private temporary file in the same folder, fsync, rename, fsync of
    the folder), first keeping the old file as ``path.prev`` (a hard link to it, or a copy, made under a private
    temporary name and renamed). Stale temporary files of killed writers are removed first.
    """
    folder = path.absolute().parent
    folder.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    if keep_previous and path.exists():
        _keep_previous(path, prev_path(path), folder)
    atomic_write_bytes(path, data)
    return path


def _keep_previous(path: Path, prev: Path, folder: Path) -> None:
    fd, tmp = temporary_in(folder, prev.name)
    try:
        os.close(fd)
        os.unlink(tmp)  # the random name is free again: link() creates it, or fails, never follows anything there
        try:
            os.link(path, tmp)  # the old file itself, not a copy: no window where it is half-written
        except OSError:
            with open(path, "rb") as src, os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as dst:
                shutil.copyfileobj(src, dst)
                dst.flush()
                os.fsync(dst.fileno())
            shutil.copymode(path, tmp)
        os.replace(tmp, prev)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_scratch(path: str | Path, data: bytes) -> None:
    """Write ``data`` durably to a private scratch file beside the model and remove it: how long a save takes,
    measured without touching the model (the night's warm-up)."""
    fd, tmp = temporary_in(real_path(path).parent, real_path(path).name, suffix=".warmup")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    finally:
        tmp.unlink(missing_ok=True)


def _remove_stale_temporaries(path: Path) -> None:
    folder = path.absolute().parent
    for name in (path.name, prev_path(path).name):
        for tmp in folder.glob(f".{name}.*.tmp"):
            pid = temporary_pid(tmp, name)
            if pid is not None and not _alive(pid):
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def lock_model(path: Path) -> Iterator[None]:
    """Hold ``MODEL.lock`` for the night, so two ``learn`` runs never write the same model at once (the lock of
    the real file: two names of one model, a link and its target, share it).

    The lock file is opened with ``O_NOFOLLOW`` (a link planted at its name is refused, never followed to create
    or open its target) and removed on release when the model does not exist (a refused first night leaves
    nothing behind). A lock file removed while another process waited on it is detected (its inode is no longer
    the name's) and the lock taken again on the new file.
    """
    import fcntl

    real = real_path(path)
    lock = real.with_name(real.name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise ModelError(f"{lock} (the lock of {path}) is a symbolic link; sleepcl never follows a link "
                                 "there. Remove it and run again") from None
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise ModelError(f"another `sleepcl learn` is working on {path} (lock {lock}); wait for it to finish") from None
            raise
        try:
            same = os.path.samestat(os.fstat(fd), os.lstat(lock))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the file was removed by the holder that just finished: lock the new one
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ModelError(f"{lock} (the lock of {path}) is not a regular file; remove it and run again")
        yield
    finally:
        try:
            if not real.exists():
                with contextlib.suppress(FileNotFoundError):
                    lock.unlink()
        finally:
            os.close(fd)


human_size = format_bytes


def json_safe(v: Any) -> Any:
    """Floats that JSON can hold (NaN/inf -> None), numpy scalars -> Python."""
    if isinstance(v, dict):
        return {k: json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_safe(x) for x in v]
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


# -- what users do with a model file ------------------------------------------------------------------

def check_fits(model: NightlyModel, data: Any) -> None:
    """Refuse data (a :class:`~sleepcl.data.user.Dataset`) whose sample shape or type differs from the model's input."""
    from ..data.user import DataFormatError

    shape, kind = model.input_shape, model.input_kind
    if data.sample_shape != shape:
        raise DataFormatError(f"{data.source}: samples have shape {data.sample_shape} but the model takes {shape} "
                              f"(the shape of its first task's data); reshape the data to {shape}")
    if data.kind != kind:
        what = {"uint8": "raw uint8 pixel values 0..255", "float32": "float features"}
        hint = " (multiply by 255 and convert to uint8 if these are pixels scaled to 0..1)" if kind == "uint8" else ""
        raise DataFormatError(f"{data.source}: samples are {what[data.kind]} but the model takes {what[kind]}{hint}")


def check_night_memory(model: NightlyModel | None, data: Any, val_data: Any = None, *, network: str | None = None,
                       widths: Any = None, batch_size: int | None = None, label_column: str = "label",
                       members: int = 1, device: str = "cpu", max_memory: int | None = None,
                       purpose: str = "learning") -> None:
    """Refuse, before anything is read, data that would not fit in memory together with the network learning it
    (or, ``purpose="predicting"``, the network answering for it).

    The data's size comes from its header or listing (:func:`sleepcl.data.user.measure_data`); the network is the
    model's, or the one a first night would create for that data; ``members`` copies of it train at once (the
    probe of ``--schedule auto``). Counted per value of data: the value as stored and read, three copies in the
    sample type (the checked array, the validation split, the fingerprint), the float32 network input, and on a
    first night the float64 copy the normalisation is computed from.
    """
    from ..config import paper_defaults
    from ..data.user import DataFormatError, measure_data
    from ..runs.memory import WORKSPACE_BYTES, available_bytes, member_bytes

    sizes = [m for m in (measure_data(data, label_column),
                         measure_data(val_data, label_column) if val_data is not None else None) if m is not None]
    if not sizes:
        return
    if model is not None:
        for size in sizes:  # a sample shape or type the model cannot take, from the header: before any reading
            check_fits(model, size)
    first = sizes[0]
    network_bytes, net_text = 0, ""
    try:
        if model is not None:
            net, bs = model.network(), batch_size or model.meta["training"]["batch_size"]
        else:
            name = network or "mlp"
            net = build_network(name, net_input_shape(name, first.sample_shape), 1, widths=widths, per_task_norm=True)
            bs = batch_size or paper_defaults(name)["batch_size"]
        shapes = net.shapes()
        network_bytes = members * member_bytes(shapes, net.prunable, batch_size=max(1, int(bs)),
                                               activation_floats=net.activation_floats)
        weights = sum(math.prod(v) for v in shapes.values())
        copies = f"{members} copies of " if members > 1 else ""
        net_text = f", {format_bytes(network_bytes)} for {copies}the network of {weights:,} weights"
    except (ValueError, TypeError):
        pass  # a network that cannot be built for this data is refused, with its reason, once the data is read
    per_value = lambda d: d.stored_bytes + 3 * (1 if d.kind == "uint8" else 4) + 4 + (8 if model is None else 0)  # noqa: E731
    data_bytes = sum(d.values * per_value(d) + d.n * d.label_bytes for d in sizes)
    available, where = available_bytes(device, max_memory)
    need = data_bytes + network_bytes + WORKSPACE_BYTES
    if need > available:
        raise DataFormatError(
            f"{first.source}: {first.describe()} ({first.kind}): {purpose} it needs about {format_bytes(need)} "
            f"({format_bytes(data_bytes)} for the data{net_text}, {format_bytes(WORKSPACE_BYTES)} of workspace), more than the {format_bytes(available)} there is "
            f"({where}). Give fewer samples or features (smaller images), a smaller network (--widths), or more "
            "memory (--max-memory)")


def predict(model_path: str | Path, task: str | None, data: Any, *, output: str | Path | None = None,
            label_column: str = "label", device: str = "cpu", threads: int | None = None,
            rule: str | None = None, true_task: str | None = None, factory: str | None = None) -> dict[str, Any]:
    """Predict the classes of task ``task`` for ``data`` (a path, ``(x, y)`` or a Dataset); with ``task=None``,
    infer each sample's task first (:func:`predict_any_task`).

    Writes ``output`` (CSV: ``row`` or ``file``, ``prediction``, ``confidence`` and ``label`` when the data has
    labels) if given. Returns the predictions (class labels), the class indices, the accuracy (labelled data
    only; labels outside the task's classes are refused) and, when ``data`` is the very validation data of the
    night that learnt the task, the accuracy recorded in the history.
    """
    from ..data.user import DataFormatError, fingerprint, load_data

    if task is None:
        return predict_any_task(model_path, data, output=output, label_column=label_column, device=device,
                                threads=threads, rule=rule, true_task=true_task, factory=factory)
    if rule is not None or true_task is not None:
        raise ValueError("--rule and --true-task go with predicting without --task (the task inferred)")
    if output is not None:
        check_writable(Path(output), "--output", "predictions.csv")
    model = NightlyModel.load(model_path, factory)
    j = model.task_index(task)
    info = model.tasks[j]
    classes = info["classes"]
    check_night_memory(model, data, label_column=label_column, purpose="predicting")  # data is read on the CPU
    ds = load_data(data, label_column=label_column)
    check_fits(model, ds)
    with torch_threads(threads):
        logits = model.logits(j, ds.x, _device(device))
    probs = torch.softmax(logits.double(), 1)
    index = logits.argmax(1).numpy()
    preds = [classes[i] for i in index.tolist()]
    out: dict[str, Any] = {"task": task, "n": len(ds), "classes": classes, "predictions": preds,
                           "class_index": index, "confidence": probs.max(1).values.numpy(), "logits": logits.numpy(),
                           "accuracy": None, "recorded_val_accuracy": None, "is_validation_data": False,
                           "output": None, "output_problem": None}
    if ds.y is not None:
        lookup = {c: i for i, c in enumerate(classes)}
        labels = ds.y.tolist()
        unknown = sorted({v for v in labels if v not in lookup}, key=str)
        if unknown:
            raise DataFormatError(f"{ds.source}: labels {unknown[:10]} are not classes of task {task!r} "
                                  f"(its classes: {classes})")
        truth = np.array([lookup[v] for v in labels])
        out["accuracy"] = float((index == truth).mean())
        fp = fingerprint(ds)
        for entry in model.history:
            if entry.get("task") == task and entry.get("val_fingerprint") == fp:
                out["is_validation_data"] = True
                out["recorded_val_accuracy"] = entry.get("val_accuracy")
    if output is not None:
        where, out["output_problem"] = write_or_keep(Path(output), predictions_csv(ds, preds, out["confidence"]))
        out["output"] = str(where)
    return out


def _device(device: str) -> Any:
    if device == "cpu":
        return "cpu"
    from ..runs.runner import resolve_device

    return resolve_device(device)


def task_score_stats(logits: Tensor) -> dict[str, list[float]]:
    """What a task keeps for calibrated task inference: per base rule of :mod:`sleepcl.task_inference`, the mean
    and std of its score on its own validation samples, from its logits ``(n, classes)`` on them."""
    from ..task_inference import BASE_RULES, score_stats

    return {rule: [float(v) for v in score_stats(logits, rule)] for rule in BASE_RULES}


def predict_any_task(model_path: str | Path, data: Any, *, output: str | Path | None = None,
                     label_column: str = "label", device: str = "cpu", threads: int | None = None,
                     rule: str | None = None, true_task: str | None = None,
                     factory: str | None = None) -> dict[str, Any]:
    """Predict without being told the task: every task's network answers each sample, ``rule``
    (:mod:`sleepcl.task_inference`, default its ``DEFAULT_RULE``) picks the sample's task, that task's head its
    class. Calibrated rules use each task's ``score_stats`` (kept by the night that learnt it; a model from
    before them is read with the rule's uncalibrated form, and ``rule_used`` says so).

    With labels, the true task of each sample is ``true_task`` (every sample is of that task) or, when each
    label is a class of exactly one task, that task; the result then holds ``task_accuracy`` (inferred task
    right), ``accuracy`` (task and class right: the class-incremental score, over all classes seen) and
    ``task_aware_accuracy`` (the class right when told the true task). Labels that leave the task open (a class
    of several tasks, as in Permuted tasks) without ``true_task`` give predictions but no scores
    (``unscored`` says why).
    """
    from ..data.user import DataFormatError, load_data
    from ..task_inference import DEFAULT_RULE, check_rule, infer

    rule = check_rule(rule or DEFAULT_RULE)
    if output is not None:
        check_writable(Path(output), "--output", "predictions.csv")
    model = NightlyModel.load(model_path, factory)
    if not model.tasks:
        raise ModelError(f"{model_path}: the model has no task yet; run `sleepcl learn` first")
    names = [t["name"] for t in model.tasks]
    told = model.task_index(true_task) if true_task is not None else None
    check_night_memory(model, data, label_column=label_column, purpose="predicting")  # data is read on the CPU
    ds = load_data(data, label_column=label_column)
    check_fits(model, ds)
    T, width = len(names), max(len(t["classes"]) for t in model.tasks)
    with torch_threads(threads):
        logits = torch.full((len(ds), T, width), float("-inf"))
        for k in range(T):
            out_k = model.logits(k, ds.x, _device(device))
            logits[:, k, :out_k.shape[1]] = out_k
    stats_list = [t.get("score_stats") for t in model.tasks]
    base = rule.removesuffix("-z")
    stats = torch.tensor([s[base] for s in stats_list], dtype=torch.float64) \
        if rule != base and all(s and base in s for s in stats_list) else None
    rule_used = rule if rule == base or stats is not None else base
    task_idx, class_idx = infer(logits, rule, stats)
    probs = torch.softmax(logits.double(), -1)
    confidence = probs[torch.arange(len(ds)), task_idx, class_idx].numpy()
    tasks_out = [names[k] for k in task_idx.tolist()]
    preds = [model.tasks[k]["classes"][c] for k, c in zip(task_idx.tolist(), class_idx.tolist())]
    counts = {n: 0 for n in names}
    for n in tasks_out:
        counts[n] += 1
    out: dict[str, Any] = {"task": None, "rule": rule, "rule_used": rule_used, "n": len(ds), "tasks": names,
                           "inferred_task": tasks_out, "inferred_counts": counts, "predictions": preds,
                           "task_index": task_idx.numpy(), "class_index": class_idx.numpy(), "confidence": confidence,
                           "accuracy": None, "task_accuracy": None, "task_aware_accuracy": None, "true_task": true_task,
                           "unscored": None, "output": None, "output_problem": None}
    if ds.y is not None:
        labels = ds.y.tolist()
        owners: dict[Any, list[int]] = {}
        for k, t in enumerate(model.tasks):
            for c in t["classes"]:
                owners.setdefault(c, []).append(k)
        if told is not None:
            lookup = {c: i for i, c in enumerate(model.tasks[told]["classes"])}
            unknown = sorted({v for v in labels if v not in lookup}, key=str)
            if unknown:
                raise DataFormatError(f"{ds.source}: labels {unknown[:10]} are not classes of task {true_task!r} "
                                      f"(its classes: {model.tasks[told]['classes']})")
            truth_task = np.full(len(ds), told)
        else:
            unknown = sorted({v for v in labels if v not in owners}, key=str)
            if unknown:
                raise DataFormatError(f"{ds.source}: labels {unknown[:10]} are classes of no task of the model "
                                      f"(tasks: {', '.join(names)})")
            shared = sorted({v for v in labels if len(owners[v]) > 1}, key=str)
            truth_task = None if shared else np.array([owners[v][0] for v in labels])
            if shared:
                out["unscored"] = (f"labels {shared[:10]} are classes of several tasks, so the labels do not say "
                                   "each sample's task; give --true-task NAME when every sample is of one task")
        if truth_task is not None:
            truth_class = np.array([model.tasks[k]["classes"].index(v) for k, v in zip(truth_task.tolist(), labels)])
            right_task = task_idx.numpy() == truth_task
            out["task_accuracy"] = float(right_task.mean())
            out["accuracy"] = float((right_task & (class_idx.numpy() == truth_class)).mean())
            aware = logits[torch.arange(len(ds)), torch.as_tensor(truth_task)].argmax(-1).numpy()
            out["task_aware_accuracy"] = float((aware == truth_class).mean())
    if output is not None:
        where, out["output_problem"] = write_or_keep(Path(output), predictions_csv(ds, preds, confidence, tasks_out))
        out["output"] = str(where)
    return out


def predictions_csv(ds: Any, preds: list, confidence: np.ndarray, tasks: list[str] | None = None) -> bytes:
    """The CSV ``predict --output`` writes: ``row`` or ``file``, (``task``, the inferred one, without
    ``--task``), ``prediction``, ``confidence`` (and ``label``)."""
    import csv
    import io

    f = io.StringIO(newline="")
    w = csv.writer(f)
    key = "file" if ds.names is not None else "row"
    w.writerow([key] + (["task"] if tasks is not None else []) + ["prediction", "confidence"]
               + (["label"] if ds.y is not None else []))
    for i, (p, c) in enumerate(zip(preds, confidence.tolist())):
        row = [ds.names[i] if ds.names is not None else i] + ([tasks[i]] if tasks is not None else []) + [p, f"{c:.6f}"]
        if ds.y is not None:
            row.append(ds.y[i].item() if hasattr(ds.y[i], "item") else ds.y[i])
        w.writerow(row)
    return f.getvalue().encode()


def write_predictions(path: Path, ds: Any, preds: list, confidence: np.ndarray) -> Path:
    """Write :func:`predictions_csv` to ``path`` atomically (:mod:`sleepcl.files`)."""
    check_writable(path, "--output", "predictions.csv")
    return atomic_write_bytes(path, predictions_csv(ds, preds, confidence))


def _check_without_network(meta: dict[str, Any], tensors: dict[str, Tensor], source: str) -> None:
    """:func:`check_consistent` with the network's shapes taken from the file itself (its trunk tensors, the
    features its heads take): what can be checked without importing the factory that built it."""
    from types import SimpleNamespace

    def group(prefix: str) -> dict[str, Tensor]:
        return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

    trunk, owner = group("trunk/"), group("owner/")
    heads = [(tensors.get(f"head/{j + 1}/weight"), tensors.get(f"head/{j + 1}/bias")) for j in range(len(meta["tasks"]))]
    widths = [w.shape[-1] for w, _ in heads if w is not None and w.dim() == 2]
    stand_in = SimpleNamespace(prunable=tuple(owner), feature_dim=widths[0] if widths else 0)
    problem = None if owner and set(owner) <= set(trunk) else "its owner maps are missing or name no trunk weight"
    problem = problem or check_consistent(meta, stand_in, {n: tuple(v.shape) for n, v in trunk.items()},  # type: ignore[arg-type]
                                          trunk, owner, heads, tensors)
    if problem is not None:
        raise damaged(source, problem)


def inspect(model_path: str | Path) -> dict[str, Any]:
    """Everything ``sleepcl inspect`` shows: tasks, free capacity per layer and overall, file size, history."""
    p = Path(model_path)
    if not p.exists() or p.is_dir():
        NightlyModel.load(p)  # the same messages as every command's
    meta, tensors = _read(p.read_bytes(), str(p))
    if not is_factory(meta["network"]["name"]):
        NightlyModel.from_bytes(p.read_bytes(), str(p))  # a built-in network: checked whole
    else:  # a user's factory is not imported: the tensors are checked against the metadata and one another
        _check_without_network(meta, tensors, str(p))
    n_tasks = len(meta["tasks"])
    owners = {k[len("owner/"):]: v for k, v in tensors.items() if k.startswith("owner/")}
    layers = []
    for name, o in owners.items():
        n, free = o.numel(), int((o == ownership.FREE).sum())
        layers.append({"name": name, "weights": n, "free": free, "free_fraction": free / max(1, n),
                       "per_task": [int((o == j + 1).sum()) for j in range(n_tasks)]})
    total = sum(layer["weights"] for layer in layers)
    tasks = []
    for j, t in enumerate(meta["tasks"]):
        kept = sum(layer["per_task"][j] for layer in layers)
        tasks.append({**t, "kept_weights": kept, "kept_fraction": kept / max(1, total)})
    free_total = sum(layer["free"] for layer in layers)
    prev = prev_path(p)
    return {"path": str(p), "file_bytes": p.stat().st_size, "file_size": human_size(p.stat().st_size),
            "previous": str(prev) if prev.exists() else None, "format": meta["format"],
            "version": meta["version"], "created": meta["created"], "updated": meta["updated"],
            "network": meta["network"], "input": meta["input"], "policy": meta["policy"],
            "training": meta["training"], "tasks": tasks, "layers": layers, "weights": total,
            "free": free_total, "free_fraction": free_total / max(1, total), "history": meta["history"]}
