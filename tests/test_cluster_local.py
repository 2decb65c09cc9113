"""``--cluster local``: the cluster this process starts, with the driver as one of its places.

Its own module: these tests start and stop their own local cluster, which they can only do in a process not
connected to Ray (tests/test_cluster.py keeps a cluster connected for its whole module)."""

from __future__ import annotations

import os
import threading
import time

import pytest

from sleepcl.runs.cluster import ClusterError, RayCluster
from sleepcl.runs.runner import run_configs
from sleepcl.runs.store import RunStore
from test_cluster import FAILING_MODEL, SAME, _configs  # the same runs and failing model as there


@pytest.fixture(autouse=True)
def no_ray_connected():
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[ray]')")
    if ray.is_initialized():
        ray.shutdown()
    yield
    assert not ray.is_initialized(), "a RayCluster left its local cluster running"


def _driver_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("sleepcl-driver-place") and t.is_alive()]


def test_the_driver_trains_beside_the_cluster_it_starts_and_the_records_are_those_of_one_process(
        tmp_path, monkeypatch) -> None:
    """The driver begins at once, the cluster starts meanwhile, and what the driver has not begun by then is shared
    out between it and Ray's place."""
    from sleepcl.runs import driver_place

    configs = _configs(range(4), 2) + _configs(range(4), 2, strategy="memory")
    expected = {r["config_hash"]: r for r in run_configs(configs, device="cpu")}
    # the driver's first population ends only once the cluster is up and the rest shared out (on a machine
    # where the start is quick, the driver could otherwise have begun everything before: correct, not tested)
    shared, first = threading.Event(), []
    take_back, train = driver_place.DriverPlace.take_back, driver_place.train_population

    def taking_back(self):
        keys = take_back(self)
        shared.set()
        return keys

    def first_waits(members, bench, device, progress, on_built=None, **kw):
        def built() -> None:  # its networks built (the cluster's start waits for that), it waits for the sharing
            on_built()
            if not first:
                first.append(len(members))
                assert shared.wait(60)

        return train(members, bench, device, progress, on_built=built, **kw)

    monkeypatch.setattr(driver_place.DriverPlace, "take_back", taking_back)
    monkeypatch.setattr(driver_place, "train_population", first_waits)
    store = RunStore(tmp_path / "runs.sqlite")
    seen = []
    with RayCluster("local", cpus_per_population=1, ray_init={"num_cpus": 2}) as executor:
        assert executor.ray is None  # nothing started before there is something to train
        run_configs(configs, device="cpu", store=store, executor=executor, progress=seen.append)
        import ray

        assert ray.cluster_resources()["CPU"] == 1  # the driver kept one of the two CPUs for its own place
        # its workers run at the driver's priority, not at Ray's default nice 15 (starved on a busy machine)
        niceness = ray.remote(num_cpus=0)(lambda: __import__("os").nice(0))  # a lambda travels by value
        assert ray.get(niceness.remote()) == os.nice(0)
        assert {"connect", "probe"} <= set(executor.timings)
    got = {r["config_hash"]: r for r in store.query()}
    assert set(got) == set(expected)
    for h in expected:
        for key in SAME:
            assert got[h][key] == expected[h][key], (h, key)
    places = [r["environment"]["cluster_place"] for r in got.values()]
    assert places.count("driver") >= 4 and places.count("worker") >= 1  # the first population, and a share each
    assert all(r["environment"]["cluster_node_id"] and r["environment"]["threads"] == 1 for r in got.values())
    last = seen[-1]
    assert (last.populations_done, last.members_done, last.members) == (last.populations, len(configs), len(configs))
    assert last.work_done == pytest.approx(last.work)
    assert not _driver_threads()


def test_a_local_cluster_with_nothing_to_train_starts_nothing(tmp_path) -> None:
    configs = _configs(range(2), 1)
    store = RunStore(tmp_path / "runs.sqlite")
    run_configs(configs, device="cpu", store=store)
    with RayCluster("local", cpus_per_population=1, ray_init={"num_cpus": 2}) as executor:
        run_configs(configs, device="cpu", store=store, executor=executor)
        assert executor.ray is None and "connect" not in executor.timings




def test_a_population_failing_in_the_drivers_place_names_its_configs(tmp_path, monkeypatch) -> None:
    (tmp_path / "bad.py").write_text(FAILING_MODEL)
    monkeypatch.chdir(tmp_path)
    bad = _configs(range(1), 1, network="bad.py:net", widths=None)  # one population: the driver's first
    with RayCluster("local", cpus_per_population=1, ray_init={"num_cpus": 2}) as executor:
        with pytest.raises(ClusterError) as info:
            run_configs(bad, device="cpu", executor=executor)
    message = str(info.value)
    assert "driver's place" in message and "this model fails in training" in message
    assert bad[0].resolved().hash() in message


def test_ctrl_c_stops_the_drivers_place_and_the_cluster(tmp_path) -> None:
    store = RunStore(tmp_path / "runs.sqlite")

    def interrupt_once_both_train(p) -> None:
        if p.running >= 2:
            raise KeyboardInterrupt  # where Ctrl-C lands: in the driver's main thread, between its waits

    with RayCluster("local", cpus_per_population=1, ray_init={"num_cpus": 2}, progress_interval=0.05) as executor:
        with pytest.raises(KeyboardInterrupt):
            run_configs(_configs(range(2), 2000), device="cpu", store=store, executor=executor,
                        progress=interrupt_once_both_train)
    end = time.monotonic() + 30
    while _driver_threads() and time.monotonic() < end:  # it ends at its population's next epoch
        time.sleep(0.1)
    assert not _driver_threads()
    assert store.query() == []
