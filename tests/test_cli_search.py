"""`ddsm search` end to end on a tiny supernet: front written, resume reuses the log, bad input exits 2."""

from __future__ import annotations

import pandas as pd
import yaml

from cli_helpers import assert_bad_input, invoke

SPACE = {
    "widths": [0.25, 0.5, 0.75, 1.0],
    "sampler": {"kind": "ddim", "steps": 4},
    "segments": 2,
    "budget": 0.6,
    "objectives": {"quality": "proxy", "cost": "flops"},
    "population": 4,
    "generations": 2,
    "seed": 0,
    "seeding": {"uniform": True, "two_segment": [0.5], "n_random": 1, "sensitivity": False},
    "evaluator": {"num_samples": 2, "seed": 0, "batch_size": 8},
}


def write_space(path, **changes):
    path.write_text(yaml.safe_dump({**SPACE, **changes}))
    return path


def test_search_writes_a_front_within_budget_and_resume_reuses_the_log(trained_run, tmp_path):
    space = write_space(tmp_path / "space.yaml")
    out = tmp_path / "search"
    r = invoke("search", "--space", space, "--checkpoint", trained_run, "--out", out, "--no-progress")
    assert r.exit_code == 0, r.output
    front = pd.read_csv(out / "front.csv")
    assert len(front) >= 1 and (front["share"] <= 0.6 + 1e-9).all()
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
