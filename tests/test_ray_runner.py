"""The Ray runner: same front as the serial runner, input order, GPU fallback, restarts, bad addresses.

One local Ray per module (starting it takes seconds): two actors on a cluster
that declares two GPUs it does not have, so every actor gets a GPU id while
torch.cuda stays unavailable — the placement path of a GPU machine, tested
on a CPU one.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pandas as pd
import pytest

from ddsm.errors import DDSMError
from ddsm.search import SearchConfig, SyntheticEvaluatorFactory, make_runner, run_search

ray = pytest.importorskip("ray")

COSTS = {0.25: 1 / 16, 0.5: 1 / 4, 0.75: 9 / 16, 1.0: 1.0}
SPACE = SearchConfig(sampler={"steps": 12}, segments=6, population=8, generations=4, budget=0.45, seed=5,
                    seeding={"n_random": 2, "knapsack_budgets": 3}, cache={"flush_seconds": 0})
EXACT = ["generation", "genome", "widths", "proxy", "valid", "cost", "share", "constraint"]


@pytest.fixture(scope="module")
def ray_runner():
    runner = make_runner("ray", SyntheticEvaluatorFactory(), decode=SPACE.genes_to_widths, quality="proxy",
                         chunk_size=2, workers=2, num_cpus=2, num_gpus=2)
    yield runner
    runner.close()
    assert not ray.is_initialized()


def search(out: Path, runner) -> Path:
    run_search(SPACE, evaluator_factory=SyntheticEvaluatorFactory(), costs=COSTS, out_dir=out,
               runner=runner, progress=False, device="cpu", chunk_size=2)
    return out


def test_ray_and_serial_give_the_identical_search(tmp_path, ray_runner):
    a = search(tmp_path / "serial", "serial")
    b = search(tmp_path / "ray", ray_runner)
    la, lb = pd.read_parquet(a / "evaluations.parquet"), pd.read_parquet(b / "evaluations.parquet")
    pd.testing.assert_frame_equal(la[EXACT], lb[EXACT], check_exact=True)
    assert (a / "front.csv").read_text() == (b / "front.csv").read_text()
    sa, sb = (json.loads((x / "state.json").read_text()) for x in (a, b))
    assert sa["pop"] == sb["pop"] and sa["rng"] == sb["rng"]
    assert set(lb["worker"]) == {w["worker"] for w in ray_runner.info()}  # both actors worked
    assert all(w.startswith("serial:") for w in la["worker"])


def test_results_come_back_in_input_order(ray_runner):
    genomes = [tuple((i + k) % 4 for k in range(6)) for i in range(4)] + [(3,) * 6, (0,) * 6, (1, 2, 3, 0, 1, 2)]
    seen = []
    rows = ray_runner(genomes, on_result=lambda start, r: seen.append((start, len(r))))
    expected = SyntheticEvaluatorFactory()()
    assert [r["proxy"] for r in rows] == [expected.quality(SPACE.genes_to_widths(g)) for g in genomes]
    assert sorted(seen) == [(0, 2), (2, 2), (4, 2), (6, 1)]
    assert all(r["valid"] and r["seconds"] >= 0 for r in rows)


def test_actors_with_gpu_ids_but_no_cuda_fall_back_to_cpu(ray_runner):
    info = ray_runner.info()
    assert len(info) == 2 and sorted(i["gpu_ids"][0] for i in info) == [0, 1]
    for i in info:
        assert i["device"] == "cpu" and i["threads"] == 1
        assert i["warnings"] == [f"actor got GPU ids {i['gpu_ids']} but CUDA is not available; falling back to CPU"]


def test_a_killed_actor_restarts_and_its_work_is_retried(ray_runner):
    genomes = [(j,) * 6 for j in range(4)]
    before = ray_runner(genomes)
    old_pid = ray_runner.info()[0]["pid"]
    ray.kill(ray_runner.actors[0], no_restart=False)
    after = ray_runner(genomes)
    assert [r["proxy"] for r in after] == [r["proxy"] for r in before]
    assert ray_runner.info()[0]["pid"] != old_pid


@pytest.mark.parametrize("address, needle", [
    ("127.0.0.1:1", "no Ray cluster answers at '127.0.0.1:1'"),
    ("localhost", "is not HOST:PORT"),
])
def test_an_address_where_no_cluster_answers_is_one_line(address, needle):
    t0 = time.monotonic()
    with pytest.raises(DDSMError) as e:
        make_runner("ray", SyntheticEvaluatorFactory(), decode=SPACE.genes_to_widths, quality="proxy",
                    workers=2, address=address)
    assert needle in str(e.value) and "\n" not in str(e.value) and time.monotonic() - t0 < 10


def _ray_processes() -> list:
    """This process and every process below it (the local Ray's GCS, raylet, agents and workers)."""
    import psutil  # Ray ships it (ray/thirdparty_files), on the path once ray is imported

    me = psutil.Process()
    return [me, *me.children(recursive=True)]


def test_the_local_ray_listens_on_loopback_only_with_token_auth(ray_runner):
    import ipaddress
    import stat

    import psutil

    procs = {p.pid: p for p in _ray_processes()}
    listening = [c for c in psutil.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN and c.pid in procs]
    assert len({c.pid for c in listening}) >= 3  # the driver, the GCS, the raylet, the workers...

    def loopback(ip: str) -> bool:
        a = ipaddress.ip_address(ip.split("%")[0])
        return (getattr(a, "ipv4_mapped", None) or a).is_loopback  # ::ffff:127.0.0.1 is loopback too

    exposed = [(procs[c.pid].name(), c.laddr.ip, c.laddr.port) for c in listening if not loopback(c.laddr.ip)]
    assert exposed == []
    # Token authentication on, with this session's own token file readable by the user only.
    assert os.environ["RAY_AUTH_MODE"] == "token"
    token = Path(os.environ["RAY_AUTH_TOKEN_PATH"])
    assert stat.S_IMODE(token.stat().st_mode) == 0o600 and len(token.read_text()) == 64
    # The session folder sits in a per-user folder nobody else can enter (Ray makes its own folders 0777).
    temp = Path(ray_runner._temp_dir)
    assert token.parent == temp and stat.S_IMODE(temp.parent.stat().st_mode) == 0o700
    assert temp.parent.stat().st_uid == os.getuid() and temp.name.startswith(f"{os.getpid()}-")


def test_stale_session_folders_of_dead_processes_are_removed(tmp_path):
    import subprocess
    import sys

    from ddsm.search.ray_runner import remove_stale_sessions

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # exited: its pid names no process (unless reused at once, which the test tolerates)
    stale, mine, alive, other = (tmp_path / f"{pid}-abcd", tmp_path / f"{os.getpid()}-efgh", tmp_path / "1-ijkl",
                                 tmp_path / "notes")
    for d in (stale, mine, alive, other):
        (d / "session_x").mkdir(parents=True)
    removed = remove_stale_sessions(tmp_path)
    assert removed in ([str(stale)], [])
    assert mine.exists() and alive.exists() and other.exists()  # ours, pid 1's and a folder not named by a pid


def test_when_every_actor_is_dead_the_call_is_one_line(ray_runner):
    # Runs last in this module: it kills the shared pool for good.
    genomes = [(j,) * 6 for j in range(4)]
    ray.kill(ray_runner.actors[0], no_restart=True)
    rows = ray_runner(genomes)  # the survivor takes the dead actor's chunks
    assert len(rows) == 4 and len(ray_runner.actors) == 1
    ray.kill(ray_runner.actors[0], no_restart=True)
    with pytest.raises(DDSMError) as e:
        ray_runner(genomes)
    msg = str(e.value)
    assert msg.startswith("every Ray worker died (last error: ") and msg.endswith("); resume with --resume")
    assert "\n" not in msg and len(msg) < 300 and ray_runner.actors == []


def test_more_workers_than_free_cpus_on_a_cluster_is_refused_not_split_into_fractions():
    # fractions of a CPU per actor let Ray spawn workers without end (a hang at --workers 1000 on 2 cores)
    from ddsm.errors import DDSMError
    from ddsm.search.ray_runner import RayRunner

    class Cluster:  # a cluster with 2 free CPUs; no actor may be made
        def available_resources(self):
            return {"CPU": 2.0}

        def remote(self, cls):  # pragma: no cover - reaching it is the bug
            raise AssertionError("actors were started")

    runner = RayRunner.__new__(RayRunner)
    runner.workers = 3
    with pytest.raises(DDSMError, match="3 workers need at least one CPU each but the cluster has 2 free; "
                                        "use workers <= 2"):
        runner._start_actors(Cluster(), None, None, 0, 0)
