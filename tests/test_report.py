"""`ddsm export` and `ddsm plot` on a tiny finished search: files, tables, figures; bad input exits 2, writes nothing."""

from __future__ import annotations

import json
import math
import shutil

import pandas as pd
import pytest

from ddsm.checkpoint import load_supernet
from ddsm.schedule import Schedule

from cli_helpers import TINY_SEARCH_SPACE, assert_bad_input, invoke, write_space

SPACE = {**TINY_SEARCH_SPACE, "seeding": {**TINY_SEARCH_SPACE["seeding"], "sensitivity": True, "knapsack_budgets": 2}}
TABLE_COLUMNS = ["rank", "schedule", "proxy", "macs_per_image", "share", "flop_saving", "predicted_speedup",
                 "generation", "genome", "widths", "seconds", "full_seconds", "speedup", "wallclock_saving",
                 "speedup_vs_predicted"]


@pytest.fixture(scope="module")
def search(trained_run, tmp_path_factory):
    """A finished tiny search (with sensitivity probes), shared read-only by the tests of this module."""
    root = tmp_path_factory.mktemp("report")
    space = write_space(root / "space.yaml", seeding=SPACE["seeding"])
    out = root / "search"
    r = invoke("search", "--space", space, "--checkpoint", trained_run, "--out", out, "--no-progress")
    assert r.exit_code == 0, r.output
    return out


def _export(search, trained_run, out, *extra):
    return invoke("export", search, "--checkpoint", trained_run, "--out", out, "--repeats", "1", "--warmup", "0",
                  "--num", "2", "--no-progress", *extra)


def test_export_writes_ranked_schedules_budgets_and_a_measured_table(search, trained_run, tmp_path):
    out = tmp_path / "export"
    r = _export(search, trained_run, out, "--budget", "0.6", "--budget", "0.45")
    assert r.exit_code == 0, r.output
    net = load_supernet(trained_run)
    front = json.loads((search / "front.json").read_text())["members"]
    table = pd.read_csv(out / "front.csv")
    assert list(table.columns) == TABLE_COLUMNS
    pd.testing.assert_frame_equal(pd.read_parquet(out / "front.parquet"), table, check_dtype=False)
    assert len(table) == len(front) and list(table["rank"]) == list(range(1, len(front) + 1))
    assert (table["share"].diff().dropna() >= 0).all()  # cheapest first
    assert ((table["speedup"] > 0) & table["speedup"].map(math.isfinite)).all()
    assert ((table["flop_saving"] - (1 - table["share"])).abs() < 1e-9).all()  # a FLOP search: share is FLOPs
    for row, member in zip(table.to_dict(orient="records"), front):
        s = Schedule.load(out / row["schedule"], net.config)
        assert list(s.widths) == member["widths"]
        assert s.quality == {"proxy": member["proxy"]} and s.predicted["cost_share"] == member["share"]
        assert s.predicted["macs"] == row["macs_per_image"]
        assert s.provenance["generation"] == member["generation"] and s.provenance["search"] == str(search.resolve())
        # the measured speed-up travels with the file, with the batch it was timed at and what was predicted
        assert s.measured["batch_size"] == 2 and s.measured["device"] == "cpu"
        assert s.measured["speedup"] == pytest.approx(row["speedup"])
        assert s.measured["predicted_speedup"] == pytest.approx(1 / member["share"])
        assert row["speedup_vs_predicted"] == pytest.approx(row["speedup"] / row["predicted_speedup"])
    best = Schedule.load(out / "best-under-0.6.json", net.config)
    assert list(best.widths) == front[-1]["widths"]  # the best member within the search budget is the last one
    under = [m for m in front if m["share"] <= 0.45]
    if under:  # best quality at share <= 0.45
        assert Schedule.load(out / "best-under-0.45.json", net.config).quality["proxy"] == min(
            m["proxy"] for m in under)
    assert "speed-up" in r.output and "full width:" in r.output

    # the same export again replaces its own files; a budget no longer asked for loses its file
    r = _export(search, trained_run, out, "--budget", "0.6")
    assert r.exit_code == 0, r.output
    assert (out / "best-under-0.6.json").exists() and not (out / "best-under-0.45.json").exists()


def test_plot_writes_every_figure(search, trained_run, tmp_path):
    out = tmp_path / "plots"
    r = invoke("plot", search, "--checkpoint", trained_run, "--out", out, "--num", "4")
    assert r.exit_code == 0, r.output
    for stem in ("front", "widths", "sensitivity", "samples"):
        assert (out / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", stem
        svg = (out / f"{stem}.svg").read_text()
        assert "<svg" in svg and svg.rstrip().endswith("</svg>"), stem

    # without sensitivity probes in the log: a one-line note, the figure skipped, the rest drawn; the family
    # members that were probes are missing now, and --evaluate-missing scores them without touching the log
    bare = tmp_path / "bare"
    shutil.copytree(search, bare)
    log = pd.read_parquet(bare / "evaluations.parquet")
    log[log["generation"] != -1].to_parquet(bare / "evaluations.parquet", index=False)
    before = (bare / "evaluations.parquet").read_bytes()
    r = invoke("plot", bare, "--checkpoint", trained_run, "--out", tmp_path / "bare-plots", "--num", "1",
               "--evaluate-missing")
    assert r.exit_code == 0, r.output
    assert sum("no sensitivity probes" in ln for ln in r.output.splitlines()) == 1
    evaluated = json.loads((tmp_path / "bare-plots" / "plots.json").read_text())["evaluated_for_plot"]
    assert evaluated and all(math.isfinite(e["proxy"]) for e in evaluated)
    assert (bare / "evaluations.parquet").read_bytes() == before
    assert not (tmp_path / "bare-plots" / "sensitivity.png").exists()
    assert (tmp_path / "bare-plots" / "front.png").exists()


def test_bad_input_exits_2_and_writes_nothing(search, trained_run, tmp_path):
    out = tmp_path / "out"

    def both(folder, *needles, checkpoint=trained_run, dest=out, extra=()):
        for cmd in ("export", "plot"):
            args = [cmd, folder, "--checkpoint", checkpoint, "--out", dest, *extra]
            assert_bad_input(invoke(*args, *(["--no-progress"] if cmd == "export" else [])), *needles)
            assert not out.exists()

    both(tmp_path / "nowhere", "does not exist")
    (tmp_path / "empty").mkdir()
    both(tmp_path / "empty", "no search.json")
    unfinished = tmp_path / "unfinished"
    shutil.copytree(search, unfinished)
    (unfinished / "state.json").unlink()
    both(unfinished, "has not finished a generation")
    nothing = tmp_path / "nothing"
    shutil.copytree(search, nothing)
    doc = json.loads((nothing / "front.json").read_text())
    (nothing / "front.json").write_text(json.dumps({**doc, "members": []}))
    both(nothing, "no feasible schedule")
    both(search, "ran on supernet", checkpoint="digits")  # the shipped supernet is another architecture

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    both(search, "not empty", dest=foreign)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]

    assert_bad_input(_export(search, trained_run, out, "--budget", "0.01"), "--budget 0.01")
    assert not out.exists()

    # an export of another search (another folder) is not overwritten
    other = tmp_path / "other"
    shutil.copytree(search, other)
    assert _export(other, trained_run, out).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert_bad_input(_export(search, trained_run, out), "another search")
    assert_bad_input(invoke("plot", search, "--checkpoint", trained_run, "--out", out), "another search")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_export_with_a_verdict_then_plot_its_intervals(search, trained_run, tmp_path):
    from ddsm.metrics.featurenet import train_featurenet
    from ddsm.data import load_digits

    fnet = tmp_path / "features.safetensors"
    train_featurenet(load_digits(size=8), seed=0, epochs=1, progress=False).save(fnet)
    out = tmp_path / "export"
    r = _export(search, trained_run, out, "--verdict", "50", "--featurenet", fnet)
    assert r.exit_code == 0, r.output
    table = pd.read_csv(out / "front.csv")
    for m in ("fid", "kid", "precision", "recall", "confidence", "proxy"):
        assert {f"verdict_{m}", f"verdict_{m}_low", f"verdict_{m}_vs_full", f"verdict_{m}_differs_from_full"} <= \
            set(table.columns)
    meta = json.loads((out / "export.json").read_text())
    assert meta["verdict"]["verdict_seeds"] == "10000..10049" and meta["verdict"]["search_seeds"] == "0..1"
    s = Schedule.load(out / table["schedule"][0], load_supernet(trained_run).config)
    assert s.quality["verdict_precision"] == table["verdict_precision"][0] and "verdict" in s.provenance
    plots = tmp_path / "plots"
    r = invoke("plot", search, "--checkpoint", trained_run, "--out", plots, "--num", "2", "--export", out)
    assert r.exit_code == 0, r.output
    assert (plots / "front-verdict.png").stat().st_size > 1000
    # an export without a verdict cannot be drawn with intervals: one line, nothing written
    plain = tmp_path / "plain"
    assert _export(search, trained_run, plain).exit_code == 0
    assert_bad_input(invoke("plot", search, "--checkpoint", trained_run, "--out", tmp_path / "p2", "--export", plain),
                     "has no verdict")
    assert not (tmp_path / "p2").exists()
    # a hand-edited export whose verdict is no verdict record: one line, not an AttributeError
    import shutil

    edited = tmp_path / "edited"
    shutil.copytree(out, edited)
    doc = json.loads((edited / "export.json").read_text())
    (edited / "export.json").write_text(json.dumps({**doc, "verdict": [1, 2]}))
    assert_bad_input(invoke("plot", search, "--checkpoint", trained_run, "--out", tmp_path / "p3", "--export", edited),
                     "its manifest's verdict is a list, not a verdict record")
    assert not (tmp_path / "p3").exists()
    # verdict seeds that overlap the search's are refused before anything is written
    assert_bad_input(_export(search, trained_run, tmp_path / "e2", "--verdict", "50", "--verdict-seed", "0",
                             "--featurenet", fnet), "overlap the search's seeds")
    assert not (tmp_path / "e2").exists()
