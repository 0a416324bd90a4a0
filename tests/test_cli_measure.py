"""The measuring commands of ``ddsm``: cost, featurenet, evaluate and quickstart.

Every test runs on the tiny trained run of conftest (8x8 grayscale, widths
0.25/0.5/0.75/1.0, trained on random images but recorded as 'digits', so the
data these commands load is scikit-learn's digits at their native 8x8).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from ddsm.checkpoint import load_supernet
from ddsm.cli import main
from ddsm.cost import CostTable
from ddsm.data import load_data, load_digits
from ddsm.checkpoint import data_config_for
from ddsm.metrics.featurenet import FeatureNet
from ddsm.samplers import SamplerConfig
from ddsm.schedule import Schedule
from cli_helpers import TINY_SEARCH_SPACE, assert_bad_input, invoke, write_space

WIDTHS = (0.25, 0.5, 0.75, 1.0)




def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under ``folder``: relative path -> (mtime_ns, content)."""
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def net(trained_run):
    return load_supernet(trained_run)


@pytest.fixture(scope="module")
def featurenet_file(trained_run, tmp_path_factory) -> Path:
    """A one-epoch feature net made by the CLI for the run's data (shared by the FID tests)."""
    out = tmp_path_factory.mktemp("featurenet") / "fnet.safetensors"
    r = invoke("featurenet", "--checkpoint", trained_run, "--out", out, "--epochs", "1", "--features", "16",
               "--no-progress")
    assert r.exit_code == 0, r.output
    assert str(out) in r.output and "labels task" in r.output
    return out


# ---------------------------------------------------------------------------- cost


def test_cost_writes_a_loadable_table_with_every_width(trained_run, net, tmp_path):
    out = tmp_path / "cost.json"
    r = invoke("cost", "--checkpoint", trained_run, "--out", out, "--repeats", "2", "--warmup", "1",
               "--batch-size", "2", "--no-progress")
    assert r.exit_code == 0, r.output
    table = CostTable.load(out, net.config)
    assert table.widths == WIDTHS and table.resolutions == (8,)
    assert len(table.entries) == len(WIDTHS)
    assert table.batch_size == 2 and table.repeats == 2 and table.warmup == 1
    macs = [table.macs(w) for w in WIDTHS]
    assert all(m > 0 for m in macs) and macs == sorted(macs) and macs[0] < macs[-1]
    assert all(e.latency_s > 0 for e in table.entries)
    # the printed table: a header, one row per width (width, side, batch, call, MMACs, ms, IQR, time/MAC share
    # against full width) and a footer naming the file
    lines = r.output.splitlines()
    assert lines[0].split() == ["width", "side", "batch", "call", "MMACs/image", "ms/call", "IQR", "ms", "time/MAC",
                                "share"]
    rows = [ln.split() for ln in lines[1 : 1 + len(WIDTHS)]]
    assert [float(row[0]) for row in rows] == list(WIDTHS)
    assert all(row[1] == "8" and row[2] == "2" and row[3] == "full" for row in rows)
    assert [float(row[4]) for row in rows] == pytest.approx([m / 1e6 for m in macs], abs=0.006)
    full = table.entry(1.0)
    assert [float(row[7]) for row in rows] == pytest.approx(
        [(table.latency(w) / full.latency_s) / (table.macs(w) / full.macs) for w in WIDTHS], abs=0.006)
    assert str(out) in lines[-1] and "batches 2 (default 2)" in lines[-1] and "median of 2" in lines[-1]


def test_cost_at_several_resolutions(trained_run, net, tmp_path):
    out = tmp_path / "cost.json"
    r = invoke("cost", "--checkpoint", trained_run, "--out", out, "--repeats", "1", "--warmup", "0",
               "--batch-size", "1", "--resolution", "8", "--resolution", "16", "--no-progress")
    assert r.exit_code == 0, r.output
    table = CostTable.load(out, net.config)
    assert table.resolutions == (8, 16) and len(table.entries) == 2 * len(WIDTHS)
    # MACs of a conv net grow with the pixel count
    assert table.macs(1.0, 16) > 3 * table.macs(1.0, 8)


@pytest.mark.parametrize("extra, needles", [
    (["--repeats", "0"], ["repeats (0)"]),
    (["--batch-size", "0"], ["batch_size (0)"]),
    (["--warmup", "-1"], ["warmup (-1)"]),
    (["--resolution", "7"], ["resolution 7", "multiple of 2"]),
    (["--resolution", "8", "--resolution", "0"], ["resolution 0"]),
    (["--device", "tpu"], ["device 'tpu'"]),
], ids=["zero-repeats", "zero-batch", "negative-warmup", "odd-resolution", "zero-resolution", "bad-device"])
def test_bad_cost_input_is_one_line_and_writes_nothing(trained_run, tmp_path, extra, needles):
    out = tmp_path / "cost.json"
    r = invoke("cost", "--checkpoint", trained_run, "--out", out, "--repeats", "1", "--warmup", "0",
               "--batch-size", "1", "--no-progress", *extra)
    assert_bad_input(r, *needles)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_cost_of_a_missing_checkpoint(tmp_path):
    r = invoke("cost", "--checkpoint", tmp_path / "nope", "--out", tmp_path / "cost.json", "--no-progress")
    assert_bad_input(r, "not found", "nope")
    assert not (tmp_path / "cost.json").exists()


# ---------------------------------------------------------------------------- featurenet


def test_featurenet_for_a_checkpoint_is_loadable_with_its_data(trained_run, featurenet_file):
    data = load_data(data_config_for(trained_run), 8, 1)  # the run's config says digits
    fnet = FeatureNet.load(featurenet_file, data)
    assert fnet.config.image_size == 8 and fnet.config.in_channels == 1
    assert fnet.config.task == "labels" and fnet.num_features == 16
    assert fnet.recipe["epochs"] == 1 and fnet.holdout_accuracy is not None
    # the same data at another size is another dataset: refused
    with pytest.raises(Exception, match="was trained on dataset"):
        FeatureNet.load(featurenet_file, load_digits(size=16))


def test_featurenet_without_a_checkpoint_uses_the_given_size(tmp_path):
    out = tmp_path / "f.safetensors"
    r = invoke("featurenet", "--data", "digits", "--size", "8", "--out", out, "--epochs", "1", "--features", "8",
               "--no-progress")
    assert r.exit_code == 0, r.output
    assert FeatureNet.load(out, load_digits(size=8)).num_features == 8


@pytest.mark.parametrize("extra, needles", [
    (["--data", "/nonexistent"], ["/nonexistent", "neither 'digits'"]),
    (["--epochs", "0"], ["epochs (0)"]),
    (["--size", "0"], ["--size (0)"]),
    (["--channels", "-1"], ["--channels (-1)"]),
], ids=["missing-data", "zero-epochs", "zero-size", "negative-channels"])
def test_bad_featurenet_input_is_one_line_and_writes_nothing(trained_run, tmp_path, extra, needles):
    out = tmp_path / "f.safetensors"
    r = invoke("featurenet", "--checkpoint", trained_run, "--out", out, "--epochs", "1", "--no-progress", *extra)
    assert_bad_input(r, *needles)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------- evaluate


def test_evaluate_proxy_of_uniform_widths(trained_run, tmp_path):
    out = tmp_path / "eval.csv"
    r = invoke("evaluate", "--checkpoint", trained_run, "--width", "0.25", "--width", "1.0", "--steps", "3",
               "--num", "4", "--batch-size", "3", "--no-progress", "--out", out)
    assert r.exit_code == 0, r.output
    df = pd.read_csv(out, keep_default_na=False)
    assert list(df["schedule"]) == ["width 0.25", "width 1"]
    assert {"proxy", "proxy_pixel", "valid", "error"} <= set(df.columns)
    narrow, full = df.to_dict("records")
    assert full["proxy"] == 0.0 and full["valid"]  # the teacher itself
    assert narrow["proxy"] > 0 and math.isfinite(narrow["proxy"]) and narrow["valid"]
    assert narrow["proxy"] == narrow["proxy_pixel"]
    assert "width 0.25" in r.output and "2 schedules x 4 samples" in r.output and str(out) in r.output


def test_evaluate_a_schedule_file(trained_run, net, tmp_path):
    sched = tmp_path / "mixed.json"
    Schedule.for_model(net.config, SamplerConfig(steps=3), [0.25, 1.0, 1.0]).save(sched)
    out = tmp_path / "eval.csv"
    # flags that agree with the file are fine; --width rides along on the file's sampler
    r = invoke("evaluate", "--checkpoint", trained_run, "--schedule", sched, "--steps", "3", "--sampler", "ddim",
               "--width", "0.25", "--num", "4", "--no-progress", "--out", out)
    assert r.exit_code == 0, r.output
    df = pd.read_csv(out, keep_default_na=False)
    assert list(df["schedule"]) == [str(sched), "width 0.25"]
    mixed, narrow = df["proxy"]
    # only the noisiest step is narrow: closer to the teacher than narrow throughout
    assert 0 < mixed < narrow


@pytest.mark.parametrize("extra, needles", [
    (["--steps", "5"], ["steps=5", "disagree"]),
    (["--sampler", "ddpm"], ["kind='ddpm'", "disagree"]),
    (["--eta", "0.5"], ["eta=0.5", "disagree"]),
    (["--spacing", "trailing"], ["timestep_spacing='trailing'", "disagree"]),
], ids=["steps", "sampler", "eta", "spacing"])
def test_evaluate_refuses_flags_that_disagree_with_the_schedule(trained_run, net, tmp_path, extra, needles):
    sched = tmp_path / "s.json"
    Schedule.for_model(net.config, SamplerConfig(steps=3), [0.25, 0.5, 1.0]).save(sched)
    out = tmp_path / "eval.csv"
    r = invoke("evaluate", "--checkpoint", trained_run, "--schedule", sched, "--num", "4", "--no-progress",
               "--out", out, *extra)
    assert_bad_input(r, *needles)
    assert not out.exists()


def test_evaluate_refuses_schedules_of_different_samplers(trained_run, net, tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    Schedule.for_model(net.config, SamplerConfig(steps=3), [0.25, 0.5, 1.0]).save(a)
    Schedule.for_model(net.config, SamplerConfig(steps=2), [0.25, 1.0]).save(b)
    r = invoke("evaluate", "--checkpoint", trained_run, "--schedule", a, "--schedule", b, "--num", "4",
               "--no-progress")
    assert_bad_input(r, "2 different sampler settings")


def test_evaluate_fid_needs_a_featurenet(trained_run, tmp_path):
    out = tmp_path / "eval.csv"
    r = invoke("evaluate", "--checkpoint", trained_run, "--width", "1.0", "--steps", "3", "--num", "4",
               "--metric", "fid", "--no-progress", "--out", out)
    assert_bad_input(r, "--metric fid needs --featurenet")
    assert not out.exists()


@pytest.mark.parametrize("extra, needles", [
    ([], ["at least one --schedule FILE or --width W"]),
    (["--width", "0.3"], ["width 0.3", "0.25, 0.5, 0.75, 1.0"]),
    (["--width", "1.0", "--num", "1"], ["at least 2 samples", "num=1"]),
    (["--width", "1.0", "--steps", "500"], ["steps 500"]),
    (["--schedule", "/nonexistent.json"], ["cannot read schedule file"]),
], ids=["nothing", "width-not-served", "one-sample", "too-many-steps", "missing-schedule"])
def test_bad_evaluate_input_is_one_line_and_writes_nothing(trained_run, tmp_path, extra, needles):
    out = tmp_path / "eval.csv"
    r = invoke("evaluate", "--checkpoint", trained_run, "--num", "4", "--steps", "3", "--no-progress", "--out", out,
               *extra)
    assert_bad_input(r, *needles)
    assert not out.exists()


def test_evaluate_fid_with_a_featurenet(trained_run, featurenet_file, tmp_path):
    out = tmp_path / "fid.csv"
    r = invoke("evaluate", "--checkpoint", trained_run, "--metric", "fid", "--featurenet", featurenet_file,
               "--width", "0.25", "--width", "1.0", "--steps", "3", "--num", "6", "--no-progress", "--out", out)
    assert r.exit_code == 0, r.output
    df = pd.read_csv(out, keep_default_na=False)
    assert list(df["schedule"]) == ["width 0.25", "width 1"]
    assert all(df["valid"]) and all(math.isfinite(v) and v >= 0 for v in df["fid"]), df
    # the reference statistics are cached beside the feature net
    assert list((featurenet_file.parent / "fid-reference").glob("*.safetensors"))


def test_evaluate_fid_with_a_featurenet_for_other_data(trained_run, tmp_path):
    other = tmp_path / "f16.safetensors"
    r = invoke("featurenet", "--data", "digits", "--size", "16", "--out", other, "--epochs", "1", "--features", "8",
               "--no-progress")
    assert r.exit_code == 0, r.output
    r = invoke("evaluate", "--checkpoint", trained_run, "--metric", "fid", "--featurenet", other,
               "--width", "1.0", "--steps", "3", "--num", "4", "--no-progress")
    assert_bad_input(r, "was trained on dataset")


# ---------------------------------------------------------------------------- quickstart


def test_quickstart_end_to_end_then_resumes_without_redoing_anything(trained_run, net, tmp_path):
    out = tmp_path / "qs"
    space = write_space(tmp_path / "space.yaml", seeding={**TINY_SEARCH_SPACE["seeding"], "sensitivity": True,
                                                          "knapsack_budgets": 2})
    args = ["quickstart", "--checkpoint", trained_run, "--out", out, "--space", space, "--runner", "serial",
            "--num", "50", "--no-progress"]
    r = invoke(*args)
    assert r.exit_code == 0, r.output
    assert "already done" not in r.output and "quickstart finished" in r.output

    CostTable.load(out / "cost.json", net.config)
    FeatureNet.load(out / "featurenet.safetensors", load_digits(size=8))
    front = pd.read_csv(out / "search" / "front.csv")
    assert len(front) >= 1 and (front["share"] <= 0.6 + 1e-9).all()
    exported = pd.read_csv(out / "export" / "front.csv")
    assert len(exported) == len(front) and (exported["speedup"] > 0).all()
    best = Schedule.load(out / "export" / "best-under-0.6.json", net.config)
    assert best.sampler.steps == 4 and all(w in WIDTHS for w in best.widths)
    for fig in ("front", "widths", "sensitivity", "samples"):
        assert (out / "plots" / f"{fig}.png").stat().st_size > 0, fig
    df = pd.read_csv(out / "verdict.csv", keep_default_na=False)
    names = list(dict.fromkeys(df["schedule"]))
    assert names[0] == "full width" and [s for s in names if s.startswith("uniform")] == \
        [f"uniform width {w:g}" for w in WIDTHS[:-1]]
    assert set(df["metric"]) == {"fid", "teacher_fid", "kid", "pixel_kid", "precision", "recall", "confidence",
                                 "proxy"}
    assert (df["n"] == 50).all() and (df["low"] <= df["high"]).all()
    full = df[df["schedule"] == "full width"]
    assert (full["vs_full"] == 0).all() and not full["differs_from_full"].astype(str).eq("True").any()
    share = dict(zip(df["schedule"], df["share"]))
    assert share["full width"] == pytest.approx(1.0)
    assert 0 < share["uniform width 0.25"] < share["uniform width 0.5"] < share["uniform width 0.75"] < 1
    assert "no significant difference from full width" in r.output or "than full width in" in r.output
    # the verdict's first line says which schedule is the cheapest without a significant loss
    # within 100 columns, whatever the number of metrics
    lines = r.output.splitlines()
    first = next(i for i, ln in enumerate(lines) if ln.startswith("full width ("))  # the verdict table's first row
    summary = next(i for i, ln in enumerate(lines) if ln.startswith(("Cheapest schedule with no significant loss",
                                                                      "No schedule judged")))
    assert summary < first and all(lines[i] and len(lines[i]) <= 100 for i in range(summary, first)), r.output
    last = next(i for i, ln in enumerate(lines) if ln.startswith("verdict on seeds"))
    assert max(len(ln) for ln in lines[first:last]) <= 100, r.output
    # the interactive report: the front, the export's files and the verdict's judgements
    page = (out / "report.html").read_text(encoding="utf-8")
    assert page.count('"rank": ') == len(front) and "best-under-0.6.json" in page

    # a second run finds every stage done and leaves every file as it was
    before = snapshot(out)
    r = invoke(*args)
    assert r.exit_code == 0, r.output
    done = [ln for ln in r.output.splitlines() if "already done" in ln]
    assert [ln.split("]")[0] for ln in done] == [f"[{k}/8" for k in range(2, 9)], r.output
    assert not any(ln.rstrip().endswith("...") for ln in r.output.splitlines()), r.output
    assert snapshot(out) == before


@pytest.mark.parametrize("extra, needles", [
    (["--num", "1"], ["--num must be at least 50 (got 1)"]),
    (["--workers", "0"], ["workers 0 must be a whole number of at least 1"]),
    (["--workers", "1000"], ["workers 1000 exceeds this machine's", "CPU cores"]),
    (["--space", "missing.yaml"], ["missing.yaml"]),
], ids=["one-sample", "zero-workers", "more-workers-than-cores", "missing-space"])
def test_bad_quickstart_input_is_one_line_and_writes_nothing(trained_run, tmp_path, extra, needles):
    out = tmp_path / "qs"
    r = invoke("quickstart", "--checkpoint", trained_run, "--out", out, "--num", "50", "--no-progress", *extra)
    assert_bad_input(r, *needles)
    assert not out.exists()


# ---------------------------------------------------------------------------- help


@pytest.mark.parametrize("command", ["cost", "featurenet", "evaluate", "quickstart", "search", "export", "plot", "sweep"])
def test_help_mentions_every_option(command):
    import click

    r = invoke(command, "--help")
    assert r.exit_code == 0
    for param in main.commands[command].params:
        if isinstance(param, click.Option):
            for opt in [*param.opts, *param.secondary_opts]:
                assert opt in r.output, (command, opt)
    assert command in invoke("--help").output
