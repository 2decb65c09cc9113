"""A run's identity: the config hash that finds a stored run again."""

import dataclasses

import pytest

import sleepcl.config as config
from sleepcl.config import RunConfig

# Hashes of runs stored before any field of config.LATER_FIELDS existed: they must never change, or every
# stored run and committed report would stop resolving.
PINNED = [
    (RunConfig(), "1c62434a53b057b3ecdb5049a1c67a84afd824bd6cbcac9eb6eafbaea637a5f3"),
    (RunConfig(benchmark="cifar10", strategy="memory", seed=3, final_free=0.95, rounds=2),
     "ea87a9454f8abdd5953673042eff40dd18ace619babcfc5e9afa787ad1400184"),
]


@pytest.mark.parametrize("cfg, expected", PINNED)
def test_runs_stored_earlier_keep_their_identity(cfg, expected):
    assert cfg.hash() == expected


def test_a_later_field_at_its_default_is_left_out_and_counts_otherwise(monkeypatch):
    @dataclasses.dataclass(frozen=True)
    class Later(RunConfig):
        head_size: int = 2

    monkeypatch.setattr(config, "LATER_FIELDS", {"head_size": 2})
    assert Later().hash() == RunConfig().hash()
    assert Later(head_size=10).hash() != RunConfig().hash()
    assert "head_size" not in Later().identity() and Later(head_size=10).identity()["head_size"] == 10
