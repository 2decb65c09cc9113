"""Networks for populations: the paper's two (:mod:`.paper`) and any ``nn.Module`` (:mod:`.module`).

A network is named by a *spec*: ``"mlp"`` or ``"vgg"`` (the paper's), or ``"package.module:factory"`` (also
``"path/to/file.py:factory"``): a function returning an ``nn.Module`` that maps ``(batch, *input_shape)`` to class
scores. The factory is called with the keyword arguments among ``input_shape``, ``n_tasks`` and ``num_classes``
that it accepts, and no others.

:func:`build_network` picks the computation: the paper's networks get their tuned stacked kernels
(:class:`~.paper.StackedMLP`, :class:`~.paper.StackedVGG`) unless ``stacked=False``; everything else, and the
paper's networks with ``stacked=False``, the generic path (:class:`~.module.ModuleNetwork`). Both give the same
initial weights for the same seed.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from torch import nn

from ..usercode import user_file
from .base import MemberRandom, Network, Params
from .layers import GeneratorDropout, TaskHeads
from .module import ModuleNetwork
from .paper import PaperMLP, PaperVGG, StackedMLP, StackedVGG

__all__ = ["GENERIC_PATH_VERSION", "NETWORKS", "GeneratorDropout", "allow_torchvision_without_operators", "MemberRandom", "ModuleNetwork", "Network", "Params", "PaperMLP",
           "PaperVGG", "TaskHeads", "build_network", "factory_digest", "is_factory", "load_factory", "load_spec",
           "paper_network"]

NETWORKS = ("mlp", "vgg")
# Part of the identity of a run of a user's model (RunConfig.hash): raised when what the generic path computes for
# the same model and config changes, so that the results store does not serve runs made before. 2: BatchNorm
# statistics recomputed after pruning, random layers on the member's stream, every weight matrix owned.
GENERIC_PATH_VERSION = 2
_PAPER = {"mlp": (PaperMLP, StackedMLP), "vgg": (PaperVGG, StackedVGG)}


def is_factory(spec: str) -> bool:
    """Whether ``spec`` names a user's factory (``module:function``) rather than a built-in network."""
    return ":" in spec


def paper_network(spec: str) -> str | None:
    """The built-in network ``spec`` names, or None."""
    return spec if spec in _PAPER else None


def load_factory(spec: str) -> Callable[..., nn.Module]:
    """The function ``spec`` (``package.module:factory`` or ``path/to/file.py:factory``) names.

    A module that is not importable as it stands is looked for in the current folder too (as ``python -m`` would),
    so ``--model mymodels:net`` works from the folder that holds ``mymodels.py``.
    """
    factory = load_spec(spec, "--model", f"a built-in network ({', '.join(NETWORKS)}) or a factory as "
                                         "package.module:function (or path/to/file.py:function)")
    if not callable(factory):
        attr = spec.rpartition(":")[2]
        raise ValueError(f"--model {spec!r}: {attr!r} is a {type(factory).__name__}, not a function returning a model")
    return factory  # type: ignore[return-value]


def load_spec(spec: str, flag: str, usage: str) -> Any:
    """What a user's ``where:name`` spec names (``where`` a ``path/to/file.py`` or a module, ``name`` a dotted
    attribute): the one resolution of ``--model`` and ``--strategy``. ValueError naming ``flag``, the problem and the
    fix; ``usage`` says what the flag takes."""
    where, _, attr = spec.rpartition(":")
    if not where or not attr:
        raise ValueError(f"{flag} {spec!r}: give {usage}")
    try:
        module = _import(where)
    except Exception as e:
        if not _torchvision_operators_failed(e):
            raise ValueError(f"{flag} {spec!r}: cannot import {where!r} ({type(e).__name__}: {e}); check the name "
                             "and that it is importable (pip install it, or run from the folder that holds it)") from e
        try:  # torchvision beside a torch it was not built for: its models load without the missing operators
            allow_torchvision_without_operators()
            module = _import(where)
        except Exception as again:
            raise ValueError(
                f"{flag} {spec!r}: importing {where!r} stops in torchvision ({type(again).__name__}: {again}): the "
                "installed torchvision was built for another torch than this one (a CUDA wheel beside the CPU build "
                "of torch, say). Install the pair that belongs together, e.g. pip install torch==2.13.0 "
                "torchvision==0.28.0 from the same index") from again
    found = module
    for part in attr.split("."):
        found = getattr(found, part, None)
        if found is None:
            raise ValueError(f"{flag} {spec!r}: {where!r} has no {attr!r}")
    return found


def _torchvision_operators_failed(e: BaseException) -> bool:
    return isinstance(e, RuntimeError) and "torchvision::" in str(e) and "does not exist" in str(e)


def allow_torchvision_without_operators() -> None:
    """Let ``import torchvision`` through beside a torch its compiled operators do not fit.

    The torchvision wheel links its operators (nms and the like) against one torch build; beside another (the CPU
    build of torch, say) they cannot load, and ``import torchvision`` stops at registering shapes for two of them
    (``torchvision::nms``, ``torchvision::qnms``). The models need none of those operators: declaring the two lets
    the import through, and they stay unavailable.
    """
    import torch

    for op in ("nms", "qnms"):
        try:
            torch.library.define(f"torchvision::{op}", "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        except RuntimeError:
            pass  # declared already
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]  # the half-imported package


def _import(where: str):  # type: ignore[no-untyped-def]
    if where.endswith(".py"):
        path = user_file(where)  # on a cluster's worker, the copy the driver shipped (sleepcl.usercode)
        name = "sleepcl_user_model_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
        if name not in sys.modules:
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None:
                raise ImportError(f"no Python file at {path}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[name]  # a failed import is not kept half-done
                raise
        return sys.modules[name]
    try:
        return importlib.import_module(where)
    except ModuleNotFoundError as e:
        if e.name != where.split(".")[0] or os.getcwd() in sys.path:
            raise
        sys.path.append(os.getcwd())
        return importlib.import_module(where)


@functools.lru_cache(maxsize=None)
def factory_digest(spec: str) -> str:
    """sha256 (16 hex digits) of the source file that defines the factory: part of a run's identity, so that a
    stored run of a model is not served once the model's code has changed."""
    return defining_file_digest(load_factory(spec))


def defining_file_digest(obj: Any) -> str:
    """sha256 (16 hex digits) of the source file that defines ``obj`` (its repr where it has none): what
    ``--model`` and ``--strategy`` put into a run's identity."""
    try:
        source = Path(inspect.getsourcefile(obj) or "").read_bytes()
    except (TypeError, OSError):
        source = repr(obj).encode()
    return hashlib.sha256(source).hexdigest()[:16]


def _factory_call(factory: Callable[..., nn.Module], input_shape: tuple[int, ...], n_tasks: int,
                  head_size: int) -> Callable[[], nn.Module]:
    try:
        accepted = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        accepted = {}
    offered = {"input_shape": input_shape, "n_tasks": n_tasks, "num_classes": head_size}
    kwargs = {k: v for k, v in offered.items() if k in accepted}
    return lambda: factory(**kwargs)


def build_network(spec: str, input_shape: Sequence[int], n_tasks: int, head_size: int = 2,
                  widths: Sequence[int] | None = None, *, per_task_norm: bool = False, stacked: bool = True,
                  head: str | None = None, class_counts: Sequence[int] | None = None,
                  fast: bool = False, member_convs: bool = False, vmap: bool = False) -> Network:
    """The network ``spec`` names, for ``n_tasks`` tasks whose heads have ``head_size`` outputs.

    ``class_counts``: classes of each task when some have fewer than ``head_size`` (their extra outputs are
    masked). ``fast``, ``member_convs``: options of the paper networks' tuned kernels (:mod:`.paper`); ``vmap``:
    of the generic path (:class:`~.module.ModuleNetwork`).
    """
    shape = tuple(int(d) for d in input_shape)
    if spec in _PAPER:
        module_class, stacked_class = _PAPER[spec]
        if stacked:
            kw = {"member_convs": member_convs} if stacked_class is StackedVGG else {}
            net: Network = stacked_class(shape, n_tasks, head_size, widths, fast=fast, **kw)
        else:
            w = tuple(widths) if widths else stacked_class.default_widths
            net = ModuleNetwork(lambda: module_class(shape, n_tasks, head_size, w), shape, n_tasks, head_size,
                                name=spec, per_task_norm=per_task_norm, head="head", vmap=vmap)
    elif is_factory(spec):
        if widths:
            raise ValueError(f"--widths applies to the built-in networks ({', '.join(NETWORKS)}), not to {spec}")
        build = _factory_call(load_factory(spec), shape, n_tasks, head_size)
        net = ModuleNetwork(build, shape, n_tasks, head_size, name=spec, per_task_norm=per_task_norm, head=head,
                            vmap=vmap)
    else:
        raise ValueError(f"unknown network {spec!r}; choose one of {', '.join(NETWORKS)} or give a factory as "
                         "package.module:function")
    if class_counts is not None and any(c != head_size for c in class_counts):
        net.class_counts = tuple(int(c) for c in class_counts)
    return net
