"""The user's own source files a run config names, and where a process finds them.

A config may name user code by a spec ``path/to/file.py:name`` (``--model``, and any other field that takes
such a spec) or ``module:name`` (a module importable here). In one process the file is read where the spec
says, against the current folder. On a Ray cluster the driver ships each such file with the job
(:func:`user_sources`, then Ray's ``runtime_env`` ``py_modules``), and a worker registers the shipped copies
under the spec's own text (:func:`install`), so that ``path/to/file.py`` means the driver's file on every
node, whatever folder the node's Ray was started in. :func:`user_file` is the one place loaders ask.

A module spec (``mymodels:net``) is shipped when its module lies in the driver's current folder (a user's
module, not an installed package); an installed package must be installed on every node.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import os
import re
import sys
from pathlib import Path
from typing import Any, Iterable

__all__ = ["ShippedFile", "UserSources", "install", "spec_files", "user_file", "user_sources"]

# ``where:name``: where is a path ending in .py or a dotted module name; name a dotted attribute
_SPEC = re.compile(r"^(?P<where>[^:\s][^:]*):(?P<name>[A-Za-z_][\w.]*)$")
_MODULE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
SHIPPED_PREFIX = "sleepcl_user_"

_shipped: dict[str, Path] = {}  # spec's file text -> the shipped copy, in a cluster's worker


def user_file(where: str) -> Path:
    """The file ``where`` (the ``path/to/file.py`` part of a spec) names in this process: the copy the driver
    shipped, in a cluster's worker; else the path against the current folder."""
    return _shipped.get(where) or Path(where).resolve()


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)


def spec_files(config_fields: dict[str, Any]) -> list[str]:
    """The ``where`` of every user-code spec among a config's fields (``config.to_dict()``): files ending in
    ``.py`` and module names, in order, each once."""
    out: dict[str, None] = {}
    for text in _strings(config_fields):
        m = _SPEC.match(text)
        if m and (m["where"].endswith(".py") or _MODULE.match(m["where"])):
            out[m["where"]] = None
    return list(out)


@dataclasses.dataclass(frozen=True)
class ShippedFile:
    """A ``path/to/file.py`` of a spec, as the driver ships it: a copy named by its content."""

    where: str       # the spec's text
    path: Path       # the driver's file
    digest: str      # sha256 of its bytes, 16 hex digits

    @property
    def module(self) -> str:
        return f"{SHIPPED_PREFIX}{self.digest}"


@dataclasses.dataclass(frozen=True)
class UserSources:
    """What of the user's code a set of configs needs on a cluster's workers."""

    files: tuple[ShippedFile, ...] = ()   # path/to/file.py specs, shipped as a copy each
    modules: tuple[Path, ...] = ()        # module specs found in the current folder: a .py file or a package

    def stage(self, folder: Path) -> list[str]:
        """Copies of the files in ``folder``, named by content; returns the ``py_modules`` entries to ship."""
        entries = []
        for f in self.files:
            copy = folder / f"{f.module}.py"
            copy.write_bytes(f.path.read_bytes())
            entries.append(str(copy))
        return entries + [str(m) for m in self.modules]

    def mapping(self) -> dict[str, str]:
        """Spec text -> shipped module name, for :func:`install` on the workers."""
        return {f.where: f.module for f in self.files}


def user_sources(configs_fields: Iterable[dict[str, Any]], cwd: str | Path | None = None) -> UserSources:
    """The user files the configs name (``config.to_dict()`` each), found against ``cwd`` (default: the current
    folder). A ``.py`` spec whose file does not exist is left out (the in-process checks refuse it first)."""
    base = Path(cwd or os.getcwd()).resolve()
    files: dict[str, ShippedFile] = {}
    modules: dict[Path, None] = {}
    for fields in configs_fields:
        for where in spec_files(fields):
            if where in files:
                continue
            if where.endswith(".py"):
                path = (base / where).resolve()
                if path.is_file():
                    files[where] = ShippedFile(where, path, hashlib.sha256(path.read_bytes()).hexdigest()[:16])
                continue
            found = _local_module(where.split(".")[0], base)
            if found is not None:
                modules[found] = None
    return UserSources(tuple(files.values()), tuple(modules))


def _local_module(top: str, base: Path) -> Path | None:
    """The file or package folder of module ``top`` when it lies in ``base`` (a user's module), else None."""
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        spec = None
    if spec is None:  # not importable as it stands: models.load_factory looks in the current folder too
        for candidate in (base / top, base / f"{top}.py"):
            if candidate.exists():
                return candidate
        return None
    if spec.submodule_search_locations:
        locations = list(spec.submodule_search_locations)
        path = Path(locations[0]) if len(locations) == 1 else None
    else:
        path = Path(spec.origin) if spec.origin else None
    if path is None or not path.resolve().is_relative_to(base) or "site-packages" in path.parts:
        return None
    return path.resolve()


def install(mapping: dict[str, str]) -> None:
    """In a cluster's worker: make each spec's file text name the shipped copy (``UserSources.mapping``), checked
    against the digest in its name, so a model is built from, and hashed as, the driver's file."""
    changed = False
    if mapping:  # the copies may have been written after this process last looked in their folder (a local cluster)
        importlib.invalidate_caches()
    for where, module in mapping.items():
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.origin:
            raise RuntimeError(f"the shipped copy of {where} ({module}) is not on this worker's path "
                               f"({os.pathsep.join(sys.path[:4])}...)")
        path = Path(spec.origin)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        if module != SHIPPED_PREFIX + digest:
            raise RuntimeError(f"the shipped copy of {where} at {path} has digest {digest}, not {module}")
        changed |= _shipped.get(where) != path
        _shipped[where] = path
    if changed:  # a worker may serve several commands of one driver: a spec's text may now mean another file
        from .models import factory_digest

        factory_digest.cache_clear()
        try:  # a user's strategy file (--strategy path.py:Class), where this sleepcl has them
            from .strategies.user import strategy_digest
        except ImportError:
            pass
        else:
            strategy_digest.cache_clear()
