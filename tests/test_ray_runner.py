"""The Ray runner: same front as the serial runner, input order, GPU fallback, restarts, bad addresses.

One local Ray per module (starting it takes seconds): two actors on a cluster
that declares two GPUs it does not have, so every actor gets a GPU id while
torch.cuda stays unavailable — the placement path of a GPU machine, tested
on a CPU one.
"""

from __future__ import annotations

import json
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
