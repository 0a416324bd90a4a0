"""`ddsm search` end to end on a tiny supernet: front written, resume reuses the log, bad input exits 2."""

from __future__ import annotations

import pandas as pd
import pytest

from cli_helpers import TINY_SEARCH_SPACE, assert_bad_input, invoke, write_space

SPACE = TINY_SEARCH_SPACE


def test_search_writes_a_front_within_budget_and_resume_reuses_the_log(trained_run, tmp_path):
    space = write_space(tmp_path / "space.yaml")
    out = tmp_path / "search"
    r = invoke("search", "--space", space, "--checkpoint", trained_run, "--out", out, "--no-progress")
    assert r.exit_code == 0, r.output
    front = pd.read_csv(out / "front.csv")
    assert len(front) >= 1 and (front["share"] <= 0.6 + 1e-9).all()
    assert "denoiser evaluations saved by shared prefixes and the trajectory cache" in r.output
    r = invoke("search", "--checkpoint", trained_run, "--out", out, "--resume", "--no-progress")
    assert r.exit_code == 0, r.output
    assert "0 this run" in r.output  # every schedule came from the evaluation log
    assert pd.read_csv(out / "front.csv").equals(front)


def test_search_bad_input_exits_2(trained_run, tmp_path):
    out = tmp_path / "search"
    assert_bad_input(invoke("search", "--checkpoint", trained_run, "--out", out), "--space")
    low = write_space(tmp_path / "low.yaml", budget=0.01)
    assert_bad_input(invoke("search", "--space", low, "--checkpoint", trained_run, "--out", out, "--no-progress"),
                     "budget")
    fid = write_space(tmp_path / "fid.yaml", objectives={"quality": "fid", "cost": "flops"})
    assert_bad_input(invoke("search", "--space", fid, "--checkpoint", trained_run, "--out", out, "--no-progress"),
                     "feature net")
    lat = write_space(tmp_path / "lat.yaml", objectives={"quality": "proxy", "cost": "latency"})
    assert_bad_input(invoke("search", "--space", lat, "--checkpoint", trained_run, "--out", out, "--no-progress"),
                     "cost table")


def test_the_trajectory_cache_changes_speed_not_results(trained_run, tmp_path):
    # Unfused sampling makes every candidate batch-invariant, so a cache hit is bit-identical to recomputing.
    logs = []
    for mb in (0.0, 64.0):
        space = write_space(tmp_path / f"space-{mb}.yaml", generations=3,
                            evaluator={**SPACE["evaluator"], "fuse": False, "trajectory_cache_mb": mb})
        out = tmp_path / f"search-{mb}"
        r = invoke("search", "--space", space, "--checkpoint", trained_run, "--out", out, "--no-progress")
        assert r.exit_code == 0, r.output
        logs.append(pd.read_parquet(out / "evaluations.parquet"))
    cols = ["generation", "genome", "widths", "proxy", "valid", "cost", "share", "constraint"]
    pd.testing.assert_frame_equal(logs[0][cols], logs[1][cols], check_exact=True)
    assert "the cache alone" in r.output


def test_a_latency_search_prices_the_batch_it_names_and_export_times_at_it(trained_run, tmp_path):
    """Latency per (width, batch): the search's front is in seconds at its batch; export times at that batch."""
    import json

    from ddsm.cost import CostTable
    from ddsm.schedule import Schedule

    cost = tmp_path / "cost.json"
    r = invoke("cost", "--checkpoint", trained_run, "--out", cost, "--batch-size", 4, "--batch-size", 1,
               "--repeats", 2, "--warmup", 0, "--no-progress")
    assert r.exit_code == 0, r.output
    table = CostTable.load(cost)
    assert table.batch_sizes == (1, 4) and "time/MAC share" in r.output
    # a tiny net's narrow widths can time slower than full width at batch 1 (per-call overhead): set known seconds
    table = table.model_copy(update={"entries": tuple(
        e.model_copy(update={"latency_s": (0.1 + e.width) * e.batch_size ** 0.5 * 1e-3}) for e in table.entries)})
    table.save(cost)
    space = write_space(tmp_path / "lat.yaml", objectives={"quality": "proxy", "cost": "latency", "batch": 1})
    out = tmp_path / "search"
    r = invoke("search", "--space", space, "--checkpoint", trained_run, "--cost", cost, "--out", out, "--no-progress")
    assert r.exit_code == 0, r.output
    meta = json.loads((out / "search.json").read_text())
    assert meta["latency_batch"] == 1
    assert meta["full_cost"] == TINY_SEARCH_SPACE["sampler"]["steps"] * table.latency(1.0, batch=1)

    exp = tmp_path / "export"
    r = invoke("export", out, "--checkpoint", trained_run, "--out", exp, "--repeats", 1, "--warmup", 0,
               "--no-progress")
    assert r.exit_code == 0, r.output
    front = pd.read_csv(exp / "front.csv")
    members = json.loads((out / "front.json").read_text())["members"]
    assert list(front["predicted_seconds"]) == [m["cost"] for m in members]  # the front in seconds
    s = Schedule.load(exp / front["schedule"][0])
    assert s.measured["batch_size"] == 1  # the batch the search priced, recorded in the file
    r = invoke("plot", out, "--checkpoint", trained_run, "--out", tmp_path / "plots", "--num", 2)
    assert r.exit_code == 0, r.output
    assert "predicted seconds per sampling run (batch 1)" in (tmp_path / "plots" / "front.svg").read_text()

    # a batch the table does not hold, and a batch for a FLOP objective: one line each, nothing written
    bad = write_space(tmp_path / "b16.yaml", objectives={"quality": "proxy", "cost": "latency", "batch": 16})
    assert_bad_input(invoke("search", "--space", bad, "--checkpoint", trained_run, "--cost", cost,
                            "--out", tmp_path / "s16", "--no-progress"), "batch 16", "valid batches: [1, 4]")
    assert not (tmp_path / "s16").exists()
    flops = write_space(tmp_path / "bf.yaml", objectives={"quality": "proxy", "cost": "flops", "batch": 4})
    assert_bad_input(invoke("search", "--space", flops, "--checkpoint", trained_run, "--out", tmp_path / "sf",
                            "--no-progress"), "objectives.batch 4", "latency")


@pytest.mark.parametrize("edit, needles", [
    (lambda m, q: m.update({q: float("nan")}), ["member 1", "has {q} nan"]),
    (lambda m, q: m.update(share=1e309), ["member 1", "has share inf"]),
    (lambda m, q: m.update(widths=m["widths"][:-1]), ["member 1", "has widths"]),
    (lambda m, q: m.update(widths=[0.3] * len(m["widths"])), ["member 1", "has widths", "valid:"]),
    (lambda m, q: m.pop("genome"), ["member 1", "lacks genome"]),
])
def test_export_refuses_a_hand_edited_front(trained_run, tmp_path, edit, needles):
    """Issue 28, finding 7: a member of front.json edited by hand is refused in one line, not exported (or a traceback)."""
    import json

    space = write_space(tmp_path / "space.yaml")
    out = tmp_path / "search"
    assert invoke("search", "--space", space, "--checkpoint", trained_run, "--out", out, "--no-progress").exit_code == 0
    doc = json.loads((out / "front.json").read_text())
    q = json.loads((out / "search.json").read_text())["objectives"]["quality"]
    edit(doc["members"][0], q)
    (out / "front.json").write_text(json.dumps(doc))  # json writes NaN and 1e309 as NaN and Infinity
    assert_bad_input(invoke("export", out, "--checkpoint", trained_run, "--out", tmp_path / "exp", "--no-progress"),
                     *[n.format(q=q) for n in needles])
    assert not (tmp_path / "exp").exists()
