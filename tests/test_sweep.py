"""`ddsm sweep`: searches as Ray Tune trials, one run folder each, a combined table; resumable; refuses other sweeps."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from cli_helpers import assert_bad_input, invoke, write_space

pytest.importorskip("ray.tune")


def _sweep(space, trained_run, out, *extra):
    return invoke("sweep", "--space", space, "--budget", "0.5", "--budget", "0.7", "--seed", "0", "--seed", "1",
                  "--checkpoint", trained_run, "--out", out, *extra)


def test_a_sweep_runs_every_trial_and_a_resume_recomputes_nothing(trained_run, tmp_path):
    space = write_space(tmp_path / "tiny.yaml")
    out = tmp_path / "sweep"
    r = _sweep(space, trained_run, out)
    assert r.exit_code == 0, r.output
    table = pd.read_csv(out / "results.csv")
    assert sorted(table["trial"]) == ["tiny-b0.5-s0", "tiny-b0.5-s1", "tiny-b0.7-s0", "tiny-b0.7-s1"]
    assert (table["generations"] == 2).all() and (table["front"] >= 1).all()
    pd.testing.assert_frame_equal(table, pd.read_parquet(out / "results.parquet"), check_dtype=False)
    for _, row in table.iterrows():  # each trial is a real search with the trial's budget and seed
        saved = json.loads((out / "runs" / row["trial"] / "space.json").read_text())
        assert (saved["budget"], saved["seed"]) == (row["budget"], row["seed"])
        front = pd.read_csv(out / "runs" / row["trial"] / "front.csv")
        assert (front["share"] <= row["budget"] + 1e-9).all()
    logs = {t: pd.read_parquet(out / "runs" / t / "evaluations.parquet") for t in table["trial"]}
    r = _sweep(space, trained_run, out, "--resume")
    assert r.exit_code == 0, r.output
    for t, log in logs.items():  # nothing evaluated again
        pd.testing.assert_frame_equal(pd.read_parquet(out / "runs" / t / "evaluations.parquet"), log)
    pd.testing.assert_frame_equal(pd.read_csv(out / "results.csv"), table)


def test_bad_sweep_input_is_one_line_and_changes_nothing(trained_run, tmp_path):
    space = write_space(tmp_path / "tiny.yaml")
    out = tmp_path / "sweep"
    assert_bad_input(_sweep(space, trained_run, out, "--resume"), "holds no sweep")
    assert not out.exists()
    out.mkdir()
    (out / "sweep.json").write_text(json.dumps({"kind": "ddsm.sweep", "schema_version": 1, "supernet": "other",
                                                "trials": []}))
    assert_bad_input(_sweep(space, trained_run, out), "already holds a sweep")
    assert_bad_input(_sweep(space, trained_run, out, "--resume"), "holds another sweep")
    assert sorted(p.name for p in out.iterdir()) == ["sweep.json"]
    r = invoke("sweep", "--space", space, "--budget", "0.001", "--checkpoint", trained_run, "--out", tmp_path / "x")
    assert_bad_input(r)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("budget, shown", [("0", "0"), ("1.5", "1.5"), ("-0.2", "-0.2"), ("nan", "nan")])
def test_a_budget_outside_zero_one_is_one_line(trained_run, tmp_path, budget, shown):
    space = write_space(tmp_path / "tiny.yaml")
    r = invoke("sweep", "--space", space, "--budget", "0.5", "--budget", budget, "--checkpoint", trained_run,
               "--out", tmp_path / "x")
    assert_bad_input(r, f"--budget {shown} is outside (0, 1]")
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("cpus", ["0", "-1", "1e6"])
def test_cpus_per_trial_no_trial_could_get_is_one_line(trained_run, tmp_path, cpus):
    import os

    space = write_space(tmp_path / "tiny.yaml")
    r = _sweep(space, trained_run, tmp_path / "x", "--cpus-per-trial", cpus)
    line = assert_bad_input(r, f"--cpus-per-trial {float(cpus):g}")
    assert f"{os.cpu_count()} cores" in line
    assert not (tmp_path / "x").exists()
