"""`ddsm search` end to end on a tiny supernet: front written, resume reuses the log, bad input exits 2."""

from __future__ import annotations

import pandas as pd

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
