"""Populations on a Ray cluster (``--cluster``): a real local cluster that this module starts once (2 CPUs, a
small object store), the same records as in process, a killed worker, Ctrl-C, a failing population, other
sources on the driver, and bad input. Skipped where Ray is not installed (``pip install -e '.[ray]'``)."""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import signal
import socket
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from sleepcl.config import RunConfig
from sleepcl.runs.cluster import ClusterError, RayCluster, common_end, plan_populations, share_out
from sleepcl.runs.runner import run_configs
from sleepcl.runs.store import RunStore
from sleepcl.study.experiments import settings
from sleepcl.study.run import run_study

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from procs import descendants  # noqa: E402  (the benchmarks' /proc reader)

SRC = Path(__file__).resolve().parents[1] / "src"
TASK_TITLE = b"ray::_train_population"   # the title Ray gives a worker process while it runs a population
SAME = ("config", "accuracy_matrix", "val_accuracy_matrix", "final_accuracy", "average_accuracy",
        "free_fraction_after_task", "free_fraction_after_round", "layer_free_fraction")


def _ray():
    return pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[ray]')")


@pytest.fixture(scope="module")
def cluster() -> str:
    """A local Ray cluster owned by this test process; its address, for executors and for other drivers."""
    ray = _ray()
    ray.init(address="local", num_cpus=2, object_store_memory=200 * 1024 ** 2, include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def _configs(seeds: range, epochs: int, **kw) -> list[RunConfig]:
    kw.setdefault("widths", (32, 16))
    return [RunConfig(benchmark="mnist-5k", n_tasks=2, epochs=epochs, retrain_epochs=epochs, seed=s, **kw)
            for s in seeds]


def _same(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for h in a:
        for key in SAME:
            assert a[h][key] == b[h][key], (h, key)


def _descendants_titled(title: bytes) -> list[int]:
    """PIDs of processes under this one (the cluster's workers) whose command line starts with ``title``."""
    out = []
    for pid in descendants():
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(title):
                out.append(pid)
        except OSError:
            continue
    return out


def _wait_until(condition, timeout: float = 30.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.1)
    return False


# --------------------------------------------------------------------------- without a cluster


def test_ray_is_not_imported_without_the_flag() -> None:
    code = ("import sys\nimport sleepcl.runs.runner\nfrom sleepcl.cli import main\n"
            "assert main(['run', '--tasks', '2', '--widths', '8', '--epochs', '1', '--retrain-epochs', '1', "
            "'--no-store', '--quiet', '--threads', '1']) == 0\n"
            "print('ray imported:', sorted(m for m in sys.modules if m.split('.')[0] == 'ray'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "ray imported: []" in out.stdout


def test_cluster_without_ray_installed_is_refused(monkeypatch, capsys) -> None:
    from sleepcl.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets where Ray is not installed
    assert main(["run", "--cluster", "local", "--tasks", "2", "--no-store", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--cluster needs Ray" in err and "pip install 'sleepcl[ray]'" in err


def _makespan(plan, slots: int, cost) -> float:
    """When the last place ends, each population going to the place free first (as Ray hands them out)."""
    places = [0.0] * slots
    for p in plan:
        places[places.index(min(places))] += sum(cost(c) for c in p)
    return max(places)


def test_plan_fills_the_cluster_longest_first() -> None:
    short = _configs(range(6), 1)
    long = _configs(range(2), 5)
    cost = lambda c: c.epochs  # noqa: E731
    plan = plan_populations(short + long, None, 4, cost)
    assert sorted(c.hash() for p in plan for c in p) == sorted(c.hash() for c in short + long)  # each once
    assert [sum(cost(c) for c in p) for p in plan] == sorted((sum(cost(c) for c in p) for p in plan), reverse=True)
    # a share is 16 / 4 = 4 epochs: the long pair is split into two, the six short runs fill the other two places
    assert [(len(p), sum(cost(c) for c in p)) for p in plan] == [(1, 5), (1, 5), (4, 4), (2, 2)]
    assert _makespan(plan, 4, cost) == 5   # a member of 5 epochs cannot be cut
    assert all(len(p) <= 1 for p in plan_populations(short, 1, 1, cost))  # --max-population still caps
    assert len(plan_populations(short, None, 1, cost)) == 1              # one place: one population


def test_plan_ends_every_place_together() -> None:
    """Three equal groups on two places (the quick study's pruning grid on two CPUs): 10 + 5 and 5 + 10 members,
    both places busy to the end, where whole groups would leave one idle for a third of the time."""
    groups = [_configs(range(10), 2, strategy=s) for s in ("packnet", "multinet", "memory")]
    todo = [c for g in groups for c in g]
    cost = lambda c: c.epochs  # noqa: E731
    plan = plan_populations(todo, None, 2, cost)
    assert sorted(len(p) for p in plan) == [5, 5, 10, 10]
    assert _makespan(plan, 2, cost) == 30 == sum(map(cost, todo)) / 2
    assert sorted(c.hash() for p in plan for c in p) == sorted(c.hash() for c in todo)
    for slots in (3, 4, 7, 16, 64):  # never worse than a share plus one member; whole groups at most
        plan = plan_populations(todo, None, slots, cost)
        assert _makespan(plan, slots, cost) <= sum(map(cost, todo)) / slots + 2
        assert len(plan) <= slots + len(groups) - 1 or all(len(p) == 1 for p in plan)


def test_a_place_still_busy_gets_less_and_all_end_together() -> None:
    """The driver's place of a local cluster, 12 epochs into its first population when the cluster has started:
    the rest is shared so that it and the cluster's two places end together."""
    todo = [c for s in ("packnet", "memory") for c in _configs(range(10), 2, strategy=s)]  # 40 epochs in all
    cost = lambda c: c.epochs  # noqa: E731
    places = share_out(todo, None, [12, 0, 0], cost)
    work = [sum(cost(c) for p in place for c in p) for place in places]
    assert sum(work) == 40 and sorted(c.hash() for pl in places for p in pl for c in p) == sorted(c.hash() for c in todo)
    assert common_end(40, [12, 0, 0]) == pytest.approx(52 / 3)
    ends = [w + b for w, b in zip(work, [12, 0, 0])]
    assert max(ends) - min(ends) <= 2   # within one member (2 epochs) of 52/3 each
    assert work[0] < work[1] and work[0] < work[2]
    assert all(len({c.strategy for c in p}) == 1 for place in places for p in place)  # populations stay groups
    # a place busier than the others will ever be gets nothing; with no backlog, the shares of plan_populations
    assert common_end(6, [10, 0, 0]) == 3 and share_out(todo[:3], None, [10, 0, 0], cost)[0] == []
    assert sorted(len(p) for place in share_out(todo, None, [0, 0], cost) for p in place) == \
        sorted(len(p) for p in plan_populations(todo, None, 2, cost))


def test_unreachable_address_is_refused_at_once() -> None:
    with socket.socket() as s:  # a port on this machine where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _ray()
    started = time.monotonic()
    with pytest.raises(ValueError, match=f"no Ray cluster answers at 127.0.0.1:{port}.*ray start --head"):
        RayCluster(f"127.0.0.1:{port}").__enter__()
    assert time.monotonic() - started < 10
    with pytest.raises(ValueError, match="not HOST:PORT"):
        RayCluster("my-cluster").__enter__()
    with pytest.raises(ValueError, match=r"\(ray://\) are not supported.*--cluster HEAD_IP:6379"):
        RayCluster("ray://10.0.0.5:10001").__enter__()


# --------------------------------------------------------------------------- on the local cluster


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory) -> tuple:
    """The tiny preset's pruning and matching experiments on mnist-5k (2 tasks), one seed, in process."""
    s = settings("tiny", "mnist-5k", seeds=[0])
    store = RunStore(tmp_path_factory.mktemp("inproc") / "runs.sqlite")
    summary = run_study(["pruning", "matching"], s, store=store, device="cpu")
    return s, {r["config_hash"]: r for r in store.query()}, summary


def test_study_on_the_cluster_stores_the_same_records(cluster, tiny_study, tmp_path) -> None:
    s, expected, summary = tiny_study
    store = RunStore(tmp_path / "runs.sqlite")
    seen = []
    with RayCluster(cluster) as executor:
        got = run_study(["pruning", "matching"], s, store=store, device="cpu", executor=executor,
                        progress=seen.append)
    _same(expected, {r["config_hash"]: r for r in store.query()})
    assert got["trained"] == summary["trained"]  # the matching searches went round by round, as in process
    assert [x.evaluations for x in got["searches"]] == [x.evaluations for x in summary["searches"]]
    assert sum(len(x.evaluations) for x in got["searches"]) > 0
    last = seen[-1]
    assert (last.populations_done, last.members_done) == (last.populations, last.members)
    assert last.members == len(expected) and last.work_done == pytest.approx(last.work)
    env = next(iter(store.query()))["environment"]
    assert env["cluster_node"] and env["threads"] == 1 and env["mkl_cbwr"] == os.environ.get("MKL_CBWR")


def test_a_killed_worker_is_retried_and_nothing_is_lost_or_stored_twice(cluster, tmp_path) -> None:
    configs = _configs(range(4), 100)
    expected = {r["config_hash"]: r for r in run_configs(configs, device="cpu")}
    store = RunStore(tmp_path / "runs.sqlite")
    arrived, killed = [], []

    def kill_one_mid_population(p) -> None:
        if not killed and p.work_done < p.work / 2:
            pids = _descendants_titled(TASK_TITLE)
            if pids:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])

    with RayCluster(cluster, progress_interval=0.05) as executor:
        records = run_configs(configs, device="cpu", store=store, executor=executor,
                              progress=kill_one_mid_population, on_population=arrived.append)
    assert killed, "no population was caught running"
    _same(expected, {r["config_hash"]: r for r in records})
    _same(expected, {r["config_hash"]: r for r in store.query()})
    hashes = [r["config_hash"] for population in arrived for r in population]
    assert sorted(hashes) == sorted(expected)  # every run arrived once: the retried population too


def test_ctrl_c_on_the_driver_cancels_the_remote_tasks(cluster, tmp_path) -> None:
    store = RunStore(tmp_path / "runs.sqlite")

    def interrupt_once_running(p) -> None:
        if _descendants_titled(TASK_TITLE):
            os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C sends
            time.sleep(5)  # the signal is handled here, in the middle of the wait

    with RayCluster(cluster, progress_interval=0.05) as executor:
        with pytest.raises(KeyboardInterrupt):
            run_configs(_configs(range(2), 2000), device="cpu", store=store, executor=executor,
                        progress=interrupt_once_running)
        # the driver is still connected, yet nothing trains on: the tasks were cancelled, not left to finish
        assert _wait_until(lambda: not _descendants_titled(TASK_TITLE), timeout=20)
    assert store.query() == []


FAILING_MODEL = """
from torch import nn


class Fails(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(784, 8)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        if x.shape[0] > 2:  # the driver's checks pass a batch of 2
            raise RuntimeError("this model fails in training")
        return self.body(x.flatten(1))


def net():
    return Fails()
"""


def test_a_failing_population_names_its_configs(cluster, tmp_path, monkeypatch) -> None:
    (tmp_path / "bad.py").write_text(FAILING_MODEL)  # built by the driver's checks, fails on the worker
    monkeypatch.chdir(tmp_path)
    bad = _configs(range(2), 1, network="bad.py:net", widths=None)
    with RayCluster(cluster) as executor:
        with pytest.raises(ClusterError) as info:
            run_configs(bad, device="cpu", executor=executor)
    message = str(info.value)  # (the two runs were split into two populations, one per CPU of the cluster)
    assert "network=bad.py:net" in message and "this model fails in training" in message
    assert any(f"seed {c.seed};" in message and c.resolved().hash() in message for c in bad)


def test_bad_resources_are_refused_before_training(cluster, tmp_path) -> None:
    store = RunStore(tmp_path / "runs.sqlite")
    with RayCluster(cluster, cpus_per_population=3) as executor:
        with pytest.raises(ValueError, match=r"needs 3 CPU\(s\) \(--threads 3\).*lower --threads"):
            run_configs(_configs(range(1), 1), device="cpu", store=store, executor=executor)
    with RayCluster(cluster) as executor:
        with pytest.raises(ValueError, match="no node of the cluster has a GPU.*--device cpu"):
            executor.resolve_device("cuda")
        assert executor.resolve_device("auto").type == "cpu"
    assert store.query() == []


def _cli(args: list[str], env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sleepcl.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def test_a_driver_ships_its_own_sources(cluster, tmp_path) -> None:
    """The cluster's workers run what the driver runs, not what their node has installed (here: this checkout)."""
    from sleepcl.runs.records import source_digest

    copy = tmp_path / "src"
    shutil.copytree(SRC / "sleepcl", copy / "sleepcl", ignore=shutil.ignore_patterns("__pycache__"))
    with open(copy / "sleepcl" / "config.py", "a") as f:
        f.write("# an edit the cluster's nodes do not have installed\n")
    store = tmp_path / "runs.sqlite"
    out = _cli(["run", "--cluster", cluster, "--tasks", "2", "--widths", "8", "--epochs", "1", "--store",
                str(store), "--quiet", "--threads", "1"], env={"PYTHONPATH": str(copy)})
    assert out.returncode == 0, out.stderr
    digests = {r["environment"]["source_digest"] for r in RunStore(store).query()}
    assert len(digests) == 1 and digests != {source_digest()}


def test_cli_study_on_a_local_cluster_then_resumes(tmp_path) -> None:
    _ray()
    store = str(tmp_path / "runs.sqlite")
    args = ["study", "pruning", "--preset", "tiny", "--seeds", "0", "--store", store, "--threads", "1",
            "--no-report", "--quiet"]
    first = _cli([*args, "--cluster", "local"])
    assert first.returncode == 0, first.stderr
    assert "15 to train" in first.stdout and "cluster local" in first.stdout
    again = _cli(args)  # the same study in process finds every run stored
    assert again.returncode == 0, again.stderr
    assert "15 stored, 0 to train" in again.stdout
    runs = RunStore(Path(store)).query()
    assert len(runs) == 15 and all(r["environment"].get("cluster_node") for r in runs)


def test_pack_round_trip(mnist5k) -> None:
    from sleepcl.runs.cluster import pack_benchmark, unpack_benchmark

    back = unpack_benchmark(pack_benchmark(mnist5k))
    for f in dataclasses.fields(mnist5k):
        a, b = getattr(mnist5k, f.name), getattr(back, f.name)
        if isinstance(a, tuple) and a and hasattr(a[0], "dtype"):
            assert all((x == y).all() and x.dtype == y.dtype for x, y in zip(a, b))
        elif hasattr(a, "dtype"):
            assert (a == b).all() and a.dtype == b.dtype
        else:
            assert a == b


def test_source_digest_covers_the_whole_package(tmp_path) -> None:
    from sleepcl.runs.records import source_digest

    copy = tmp_path / "sleepcl"
    shutil.copytree(SRC / "sleepcl", copy, ignore=shutil.ignore_patterns("__pycache__"))
    code = "from sleepcl.runs.records import source_digest; print(source_digest())"
    digest = lambda: subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,  # noqa: E731
                                    env={**os.environ, "PYTHONPATH": str(tmp_path)}, check=True).stdout.strip()
    assert digest() == source_digest()
    with open(copy / "engine" / "population.py", "a") as f:  # an edit outside runs/, where the digest lives
        f.write("# changed\n")
    assert digest() != source_digest()


def test_cluster_estimate_counts_the_papers_study() -> None:
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "cluster_estimate.py"
    out = subprocess.run([sys.executable, str(script), "--benchmark", "mnist", "--task-epoch-seconds", "0.37",
                          "--machines", "1"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "| all (shared runs once) | 1140 | 853,200 | 87.7 h |" in out.stdout
    assert "| 1 | 5.5 h to 5.7 h | 3.0 h |" in out.stdout


# --------------------------------------------------------------------------- the README's commands, two nodes

README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_cluster_block() -> list[str]:
    """The command lines of the README's multi-machine block (section "Studies on a Ray cluster")."""
    text = README.read_text()
    section = text[text.index("## Studies on a Ray cluster"):]
    block = section[section.index("```bash\n") + 8:]
    return [line for line in block[:block.index("```")].splitlines() if line and not line.startswith("#")]


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _node_python(folder: Path, without: tuple[str, ...] = ()) -> Path:
    """A Python with everything this one has installed but sleepcl (and the packages ``without`` names): a venv
    whose site-packages links to each of this one's entries except sleepcl's (its package, its editable finder,
    .pth files)."""
    import sysconfig

    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, timeout=60)
    mine = Path(sysconfig.get_paths()["purelib"])
    theirs = next(folder.glob("lib/python3*/site-packages"))
    for entry in mine.iterdir():
        if not entry.name.lower().startswith(("sleepcl", "__editable__", *without)) and entry.suffix != ".pth":
            (theirs / entry.name).symlink_to(entry)
    return folder / "bin" / "python"


def _start_node(argv: list[str], cwd: Path, env: dict, head: bool = False) -> tuple[subprocess.Popen, str]:
    """``ray start ... --block`` in a process group of its own (so the test stops exactly what it started);
    returns it and the address the head printed, once the node has started."""
    proc = subprocess.Popen([*argv, "--block"], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    address, started, seen = "", False, []
    end = time.monotonic() + 120
    while time.monotonic() < end:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if "ray start --address=" in line:
            address = line.split("--address=")[1].strip().strip("'\"")
        started = started or "Ray runtime started" in line
        if started and (address or not head):
            return proc, address
    _stop_node(proc)
    raise AssertionError("ray start did not start:\n" + "".join(seen[-30:]))


def _stop_node(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 3), (signal.SIGKILL, 10)):  # Ray's daemons may ignore SIGTERM for long
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            time.sleep(0.5)  # the group's other processes follow their parent
        except subprocess.TimeoutExpired:
            continue


STORE_100MB = f"--object-store-memory={100 * 2**20}"  # a small object store each (CI's /dev/shm may be small)


def test_the_readme_cluster_commands(tmp_path) -> None:
    """The README's multi-machine commands: a head offering no CPUs, a second node started in another folder by
    a Python without sleepcl, and the driver with a user model by a relative path: records equal to in process."""
    _ray()
    lines = _readme_cluster_block()
    head_cmd = next(line for line in lines if line.startswith("ray start --head"))
    node_cmd = next(line for line in lines if line.startswith("ray start --address="))
    run_cmd = next(line for line in lines if line.startswith("sleepcl run"))
    assert "--num-cpus=0" in head_cmd
    node = tmp_path / "node"          # the other machine's folder
    driver = tmp_path / "driver"      # the driver's; its model lies beside it, named by a relative path
    for folder in (node, driver, tmp_path / "models"):
        folder.mkdir()
    shutil.copy(Path(__file__).resolve().parents[1] / "examples" / "models.py", tmp_path / "models" / "mine.py")
    python = _node_python(tmp_path / "node-env")
    no_sleepcl = subprocess.run([str(python), "-c", "import ray, torch, scipy; import sleepcl"], cwd=node,
                                capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ""})
    assert "No module named 'sleepcl'" in no_sleepcl.stderr, no_sleepcl.stderr
    temp = Path(tempfile.mkdtemp(prefix="sc-", dir="/tmp"))  # Ray's sockets want a short path
    token = tmp_path / "auth_token"   # stands for ~/.ray/auth_token, copied to every machine
    token.write_text(os.urandom(32).hex())
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token), "PYTHONPATH": ""}
    env.pop("RAY_ADDRESS", None)
    gcs, dash, agent1, agent2, metrics1, metrics2 = _free_ports(6)
    ray_cli = [str(Path(sys.executable).parent / "ray")]
    node_cli = [str(python), "-c", "import sys; from ray.scripts.scripts import main; sys.argv[0] = 'ray'; main()"]
    nodes = []
    try:
        head, address = _start_node(
            ray_cli + shlex.split(head_cmd.replace("6379", str(gcs)))[1:]
            + [f"--temp-dir={temp}", "--include-dashboard=false", f"--dashboard-port={dash}", STORE_100MB,
               f"--dashboard-agent-listen-port={agent1}", f"--metrics-export-port={metrics1}"], driver, env, head=True)
        nodes.append(head)
        assert address.endswith(f":{gcs}")
        other, _ = _start_node(node_cli + shlex.split(node_cmd.replace("HEAD_IP:6379", address))[1:]
                               + [f"--dashboard-agent-listen-port={agent2}", f"--metrics-export-port={metrics2}",
                                  STORE_100MB],
                               node, env)
        nodes.append(other)
        small = ["--tasks", "2", "--epochs", "1", "--retrain-epochs", "1", "--threads", "1", "--quiet"]
        args = shlex.split(run_cmd.replace("HEAD_IP:6379", address))[1:] + small
        cluster = subprocess.run([sys.executable, "-m", "sleepcl.cli", *args, "--store", "cluster.sqlite"],
                                 cwd=driver, env=env, capture_output=True, text=True, timeout=300)
        assert cluster.returncode == 0, cluster.stderr[-3000:]
    finally:
        for proc in reversed(nodes):
            _stop_node(proc)
        shutil.rmtree(temp, ignore_errors=True)
    i = args.index("--cluster")
    alone = subprocess.run([sys.executable, "-m", "sleepcl.cli", *args[:i], *args[i + 2:], "--store",
                            "alone.sqlite"], cwd=driver, env=env, capture_output=True, text=True, timeout=300)
    assert alone.returncode == 0, alone.stderr[-3000:]
    got = {r["config_hash"]: r for r in RunStore(driver / "cluster.sqlite").query()}
    expected = {r["config_hash"]: r for r in RunStore(driver / "alone.sqlite").query()}
    assert len(expected) == 4
    _same(expected, got)
    assert len({r["environment"]["cluster_node_id"] for r in got.values()}) == 1  # the node with CPUs


def test_the_readme_installs_every_dependency_on_the_nodes() -> None:
    import tomllib

    deps = tomllib.loads((README.parent / "pyproject.toml").read_text())["project"]["dependencies"]
    install = " ".join(line for line in _readme_cluster_block() if line.startswith("pip install 'ray=="))
    for dep in deps:
        if not dep.startswith("torch"):  # torch: its own line, the build for the machine
            assert f"'{dep}'" in install, dep


# --------------------------------------------------------------------------- resources: memory, GPUs, CUDA OOM


def test_auto_device_puts_populations_on_gpus_and_on_nodes_without_one() -> None:
    from sleepcl.runs.cluster import Node

    executor = RayCluster("local", cpus_per_population=2)
    executor.nodes = [Node("a" * 56, "10.0.0.1", 16, 2, 2**36), Node("b" * 56, "10.0.0.2", 8, 0, 2**35)]
    assert executor.resolve_device("auto").type == "cuda"
    assert executor.kinds(executor.resolve_device("auto")) == [("cuda", 2), ("cpu", 4)]
    assert executor.slots(executor.resolve_device("auto")) == 6
    assert executor.kinds(executor.resolve_device("cuda")) == [("cuda", 0)]   # only GPUs, as many as Ray queues
    assert executor.kinds(executor.resolve_device("cpu")) == [("cpu", 0)]     # every node's CPUs
    executor.nodes = executor.nodes[1:]
    assert executor.resolve_device("auto").type == "cpu"


def test_tasks_ask_for_the_memory_of_their_population(cluster) -> None:
    from sleepcl.runs.runner import memory_plan

    import torch

    configs = [c.resolved() for c in _configs(range(6), 1)]
    plan = memory_plan(configs[0], torch.device("cpu"), 2**62)
    with RayCluster(cluster) as executor:
        logged = []
        caps, request = executor._memory_fit(configs, torch.device("cpu"), None, plan.data + 2 * plan.per_member,
                                             logged.append)
        assert caps == {"cpu": 2} and "populations of up to 2 members" in logged[0]
        assert request(configs[:3], "cpu") == plan.data + 3 * plan.per_member
        assert request(configs[:3], "cuda") == plan.data   # on a GPU the host holds the data only
        largest = max(n.memory for n in executor.nodes)
        with pytest.raises(ValueError, match="not enough memory on any node of the cluster"):
            executor._memory_fit(configs, torch.device("cpu"), None, plan.data, None)
        # the memory Ray lets tasks ask for caps the populations when --max-memory is not given
        caps, _ = executor._memory_fit(configs, torch.device("cpu"), None, None, None)
        assert caps == {"cpu": (largest - plan.data) // plan.per_member}


def test_auto_device_caps_the_populations_of_cpu_nodes_by_their_memory() -> None:
    """``--device auto`` with GPUs: populations that go to a node without a GPU hold no more members than fit in
    that node's memory (the GPUs' are not capped by host memory); the planner cuts one taken by a CPU node."""
    import torch

    from sleepcl.runs.cluster import Node
    from sleepcl.runs.runner import memory_plan

    configs = [c.resolved() for c in _configs(range(6), 1)]
    plan = memory_plan(configs[0], torch.device("cpu"), 2**62)
    executor = RayCluster("local", cpus_per_population=1)
    executor.nodes = [Node("a" * 56, "10.0.0.1", 4, 1, 2**40),                             # a GPU, much memory
                      Node("b" * 56, "10.0.0.2", 4, 0, plan.data + 2 * plan.per_member)]  # room for 2 members
    dev = executor.resolve_device("auto")
    logged = []
    caps, request = executor._memory_fit(configs, dev, None, None, logged.append)
    assert caps == {"cuda": None, "cpu": 2} and "on CPU nodes" in logged[0]
    caps, _ = executor._memory_fit(configs, dev, 5, plan.data + 3 * plan.per_member, None)  # --max-memory
    assert caps == {"cuda": 5, "cpu": 3}
    assert executor._memory_fit(configs, executor.resolve_device("cuda"), None, None, None)[0] == {"cuda": None}


def test_cuda_out_of_memory_splits_the_population(cluster) -> None:
    from sleepcl.runs.cluster import INJECT_OOM

    configs = _configs(range(4), 1)
    expected = {r["config_hash"]: r for r in run_configs(configs, device="cpu")}
    arrived, logged = [], []
    with RayCluster(cluster, env_vars={INJECT_OOM: "1"}) as executor:   # more than 1 member: CUDA's OOM error
        records = run_configs(configs, device="cpu", executor=executor, on_population=arrived.append,
                              log=logged.append)
    _same(expected, {r["config_hash"]: r for r in records})
    assert [len(p) for p in arrived] == [1, 1, 1, 1]
    assert any("ran out of CUDA memory; trying it again as two" in line for line in logged)


# --------------------------------------------------------------------------- connecting


def test_auto_refuses_a_stale_address_file_at_once(tmp_path, monkeypatch) -> None:
    from sleepcl.runs import cluster as cluster_module

    _ray()
    import ray._private.utils

    (port,) = _free_ports(1)
    stale = tmp_path / "ray_current_cluster"
    stale.write_text(f"127.0.0.1:{port}")
    monkeypatch.setattr(ray._private.utils, "get_ray_address_file", lambda temp_dir=None: str(stale))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    started = time.monotonic()
    with pytest.raises(ValueError, match=f"no Ray cluster answers.*{stale}.*rm {stale}"):
        cluster_module.auto_address()
    assert time.monotonic() - started < 10
    stale.unlink()
    with pytest.raises(ValueError, match=f"no address file {stale}"):
        cluster_module.auto_address()
    stale.write_text(f"127.0.0.1:{port}")
    try:
        os.chown(stale, os.getuid() + 4321, -1)   # another user's cluster, on a shared machine
    except PermissionError:
        pytest.skip("cannot give a file to another user here")
    with pytest.raises(ValueError, match="started by another user.*--cluster 127.0.0.1"):
        cluster_module.auto_address()


def test_an_address_that_answers_but_is_not_ray_is_refused_at_once() -> None:
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]

    def answer() -> None:
        conn, _ = server.accept()
        with conn:
            conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")
            time.sleep(1)

    threading.Thread(target=answer, daemon=True).start()
    _ray()
    started = time.monotonic()
    try:
        with pytest.raises(ValueError, match="not a Ray cluster.*SSH-2.0"):
            RayCluster(f"127.0.0.1:{port}").__enter__()
    finally:
        server.close()
    assert time.monotonic() - started < 10


def test_the_store_is_created_only_once_the_cluster_answered(tmp_path) -> None:
    _ray()
    (port,) = _free_ports(1)
    store = tmp_path / "runs.sqlite"
    out = _cli(["run", "--cluster", f"127.0.0.1:{port}", "--tasks", "2", "--store", str(store), "--quiet"])
    assert out.returncode == 2 and "no Ray cluster answers" in out.stderr and "Traceback" not in out.stderr
    assert not store.exists()


def test_sources_edited_while_the_command_runs_are_not_shipped() -> None:
    executor = RayCluster("local")
    executor._check_unchanged()  # as found at the start
    executor._job["source_digest"] = "0" * 16  # what this process would have found before an edit
    with pytest.raises(ValueError, match="changed while this command ran.*run the command again"):
        executor._check_unchanged()


USER_STRATEGY = '''
from sleepcl.strategies import Strategy


class Plain(Strategy):
    """Sequential training with Memory's nights, no rehearsal: a user's method in a file of their own."""
    name = "plain"
'''


def test_a_users_strategy_file_by_a_relative_path_gives_the_same_records(cluster, tmp_path, monkeypatch) -> None:
    """``--strategy mine.py:Plain`` travels with the job like a user's model: the workers, started in another
    folder, run the driver's file, and the records (and their identity, which holds the file's digest) are those
    of one process."""
    (tmp_path / "mine.py").write_text(USER_STRATEGY)
    monkeypatch.chdir(tmp_path)
    configs = _configs(range(2), 1, strategy="mine.py:Plain")
    expected = {r["config_hash"]: r for r in run_configs(configs, device="cpu")}
    store = RunStore(tmp_path / "runs.sqlite")
    with RayCluster(cluster) as executor:
        run_configs(configs, device="cpu", store=store, executor=executor)
    got = {r["config_hash"]: r for r in store.query()}
    _same(expected, got)
    assert all("strategy_source" in RunConfig.from_dict(r["config"]).identity() for r in got.values())


def test_a_local_cluster_runs_the_drivers_files_without_shipping_them(tmp_path) -> None:
    """``--cluster local`` ships nothing (its workers run this Python on the driver's files, so the workers Ray
    starts with the node serve every population): a user model by a relative path and a user strategy file still
    give the records of one process, and those records came from the cluster."""
    _ray()
    driver, models = tmp_path / "driver", tmp_path / "models"
    driver.mkdir()
    models.mkdir()
    shutil.copy(Path(__file__).resolve().parents[1] / "examples" / "models.py", models / "mine.py")
    (driver / "plain.py").write_text(USER_STRATEGY)
    args = ["run", "--model", "../models/mine.py:mlp", "--strategy", "plain.py:Plain", "--tasks", "2", "--epochs",
            "1", "--retrain-epochs", "1", "--seeds", "0-2", "--threads", "1"]
    env = {**os.environ, "PYTHONPATH": ""}
    env.pop("RAY_ADDRESS", None)
    workers: set[int] = set()   # Ray's worker processes of the cluster command, seen while it ran
    # not --quiet: the progress bar's actor (a process of its own) must not take over a population's worker
    with subprocess.Popen([sys.executable, "-m", "sleepcl.cli", *args, "--cluster", "local", "--store",
                           "cluster.sqlite"], cwd=driver, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as proc:
        end = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < end:
            workers.update(_workers_under(proc.pid))
            time.sleep(0.2)
        _, err = proc.communicate(timeout=max(end - time.monotonic(), 1))
    assert proc.returncode == 0, err[-3000:]
    # the workers Ray starts with the node (one per CPU) serve the probe and every population: none started
    # for a runtime_env of their own, as when the package was shipped (two more on two CPUs)
    assert 0 < len(workers) <= (os.cpu_count() or 1), workers
    alone = subprocess.run([sys.executable, "-m", "sleepcl.cli", *args, "--quiet", "--store", "alone.sqlite"], cwd=driver,
                           env=env, capture_output=True, text=True, timeout=300)
    assert alone.returncode == 0, alone.stderr[-3000:]
    got = {r["config_hash"]: r for r in RunStore(driver / "cluster.sqlite").query()}
    expected = {r["config_hash"]: r for r in RunStore(driver / "alone.sqlite").query()}
    assert len(expected) == 3
    _same(expected, got)
    assert all(r["environment"].get("cluster_node_id") for r in got.values())


def _workers_under(root: int) -> list[int]:
    """Ray's worker processes under process ``root`` (not those of this module's own cluster)."""
    fields = descendants()

    def under(pid: int) -> bool:
        while pid in fields:
            pid = int(fields[pid][1])
            if pid == root:
                return True
        return False

    out = []
    for pid in fields:
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if title.startswith(b"ray::") and not title.startswith((b"ray::Dashboard", b"ray::RuntimeEnv",
                                                                 )) and under(pid):
            out.append(pid)
    return out


def test_a_node_lacking_a_dependency_is_named_before_training(tmp_path) -> None:
    """A node whose Python lacks one of sleepcl's dependencies (here mlxtend) is refused by the probe, before any
    training, naming the node and the module and saying what to install there; exit status 2, no traceback."""
    _ray()
    import tomllib

    from sleepcl.runs.cluster import DEPENDENCIES

    deps = tomllib.loads((README.parent / "pyproject.toml").read_text())["project"]["dependencies"]
    assert {d.split(">")[0].split("=")[0].split("<")[0] for d in deps} == set(DEPENDENCIES.values())
    python = _node_python(tmp_path / "node-env", without=("mlxtend",))
    temp = Path(tempfile.mkdtemp(prefix="sc-", dir="/tmp"))  # Ray's sockets want a short path
    token = tmp_path / "auth_token"
    token.write_text(os.urandom(32).hex())
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token), "PYTHONPATH": ""}
    env.pop("RAY_ADDRESS", None)
    gcs, dash, agent, metrics = _free_ports(4)
    node_cli = [str(python), "-c", "import sys; from ray.scripts.scripts import main; sys.argv[0] = 'ray'; main()"]
    head = None
    try:
        head, address = _start_node(node_cli + ["start", "--head", f"--port={gcs}", "--num-cpus=1",
                                                "--disable-usage-stats", f"--temp-dir={temp}",
                                                "--include-dashboard=false", f"--dashboard-port={dash}",
                                                f"--dashboard-agent-listen-port={agent}",
                                                f"--metrics-export-port={metrics}", STORE_100MB],
                                    tmp_path, env, head=True)
        out = subprocess.run([sys.executable, "-m", "sleepcl.cli", "run", "--cluster", address, "--tasks", "2",
                              "--epochs", "1", "--no-store", "--quiet", "--threads", "1"],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    finally:
        if head is not None:
            _stop_node(head)
        shutil.rmtree(temp, ignore_errors=True)
    assert out.returncode == 2, out.stderr[-3000:]
    assert "lacks 'mlxtend'" in out.stderr and "pip install mlxtend" in out.stderr, out.stderr[-3000:]
    assert f"node {address.rsplit(':', 1)[0]} (" in out.stderr and "Traceback" not in out.stderr


def test_a_second_command_on_a_running_cluster_uploads_nothing(cluster, monkeypatch) -> None:
    """Joining a running cluster ships the package by its content: a second command with the same sources finds
    it there (Ray's content-addressed package, the same gcs:// URI) and sends nothing."""
    from ray._private.runtime_env import py_modules

    uploaded = []   # Ray's answer for each package: True when it was sent, False when the cluster had it
    real = py_modules.upload_package_if_needed
    monkeypatch.setattr(py_modules, "upload_package_if_needed",
                        lambda *a, **k: uploaded.append(real(*a, **k)) or uploaded[-1])
    with RayCluster(cluster) as first:
        uri = first.runtime_env["py_modules"]
    with RayCluster(cluster) as second:
        assert second.runtime_env["py_modules"] == uri and uri[0].startswith("gcs://")
    assert len(uploaded) == 2 and uploaded[1] is False   # the first may have found it too (earlier tests)
