"""A user's own strategy, named as ``path/to/file.py:Class`` or ``package.module:Class`` (``--strategy``).

The spec is resolved exactly as a user's model factory is (:func:`sleepcl.models.load_factory`): a ``.py`` path
is loaded from that file (made absolute against the current folder, under a module name derived from the
absolute path), a dotted module is imported (from the current folder too, as ``python -m`` would), then the
attribute after the colon is taken. The class must subclass :class:`~.base.Strategy`. A run's identity holds the
spec as given and a digest of the source file that defines the class (:func:`strategy_digest`), so a stored run
is not served once the strategy's code has changed; whoever runs it elsewhere (a Ray worker) must see the same
file under the same spec.
"""

from __future__ import annotations

import functools

from .base import Strategy

__all__ = ["is_strategy_spec", "load_strategy", "strategy_digest"]


def is_strategy_spec(name: str) -> bool:
    """Whether ``name`` names a user's class (``module:Class``) rather than a registered strategy."""
    return ":" in name


def load_strategy(spec: str) -> type[Strategy]:
    """The :class:`Strategy` subclass ``spec`` names; ValueError naming the problem and the fix otherwise."""
    from ..models import load_spec  # the model factory's resolution, so that both specs are found the same way

    cls = load_spec(spec, "--strategy", "a registered strategy or a class as path/to/file.py:Class (or "
                                        "package.module:Class)")
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise ValueError(f"--strategy {spec!r}: {spec.rpartition(':')[2]!r} is not a subclass of "
                         "sleepcl.strategies.Strategy")
    return cls


@functools.lru_cache(maxsize=None)
def strategy_digest(spec: str) -> str:
    """sha256 (16 hex digits) of the source file that defines the class ``spec`` names: part of a run's identity."""
    from ..models import defining_file_digest

    return defining_file_digest(load_strategy(spec))
