"""The ``ddsm`` command: artifacts written, bad input as one 'Error:' line with exit status 2."""

from __future__ import annotations

import json
import os

import click
import pytest
import torch
import yaml
from click.testing import CliRunner
from PIL import Image

from ddsm.checkpoint import load_supernet, read_tensors
from ddsm.cli import main
from ddsm.diffusion.noise import NoiseSchedule
from ddsm.samplers import SamplerConfig, generate, make_sampler
from ddsm.schedule import Schedule

from conftest import run_config_dict
from cli_helpers import assert_bad_input, invoke




@pytest.fixture
def sample_args(trained_run, tmp_path):
    out = tmp_path / "samples"
    return out, ["sample", "--checkpoint", trained_run, "--steps", "3", "--num", "4", "--out", out, "--no-progress"]


# ---------------------------------------------------------------------------- train


def test_train_then_resume(tiny_yaml, tmp_path):
    run = tmp_path / "run"
    r = invoke("train", "--config", tiny_yaml(), "--out", run, "--iters", "2", "--no-progress")
    assert r.exit_code == 0, r.output
    assert "trained 2 steps" in r.output
    for name in ("config.json", "checkpoint.safetensors", "supernet.safetensors"):
        assert (run / name).is_file(), name
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["train"]["iters"] == 2 and cfg["model"]["unet"]["image_size"] == 8 and cfg["data"]["source"] == "digits"
    first = (run / "supernet.safetensors").read_bytes()

    # --resume reads the run's own config.json; --iters extends it
    r = invoke("train", "--out", run, "--resume", "--iters", "4", "--no-progress")
    assert r.exit_code == 0, r.output
    assert "trained 4 steps" in r.output
    _, header = read_tensors(run / "checkpoint.safetensors")
    assert header["step"] == 4
    assert json.loads((run / "config.json").read_text())["train"]["iters"] == 4
    assert (run / "supernet.safetensors").read_bytes() != first

    # training into it again without --resume is refused, and the run is untouched
    before = (run / "checkpoint.safetensors").read_bytes()
    r = invoke("train", "--config", tiny_yaml(), "--out", run, "--iters", "2", "--no-progress")
    assert_bad_input(r, "already holds a training run", "--resume")
    assert (run / "checkpoint.safetensors").read_bytes() == before


def test_train_on_an_image_folder(tiny_yaml, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(6):
        Image.new("L", (12, 12), color=i * 40).save(folder / f"{i}.png")
    r = invoke("train", "--config", tiny_yaml(), "--data", folder, "--out", tmp_path / "run", "--iters", "1",
               "--no-progress")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data"]["source"] == str(folder)


def test_resume_without_a_checkpoint(tiny_yaml, tmp_path):
    r = invoke("train", "--config", tiny_yaml(), "--out", tmp_path / "fresh", "--resume", "--no-progress")
    assert_bad_input(r, "cannot resume", "does not exist")


def test_empty_image_folder(tiny_yaml, tmp_path):
    (tmp_path / "empty").mkdir()
    r = invoke("train", "--config", tiny_yaml(), "--data", tmp_path / "empty", "--out", tmp_path / "run",
               "--no-progress")
    assert_bad_input(r, "holds no PNG or JPEG", str(tmp_path / "empty"))
    assert not (tmp_path / "run" / "checkpoint.safetensors").exists()


def test_malformed_yaml_config(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  unet: [unclosed\n")
    r = invoke("train", "--config", bad, "--out", tmp_path / "run", "--no-progress")
    assert_bad_input(r, "malformed YAML", str(bad), "line")


def test_yaml_with_an_unknown_key(tmp_path):
    d = run_config_dict()
    d["train"]["itres"] = 5
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(d))
    assert_bad_input(invoke("train", "--config", path, "--out", tmp_path / "run", "--no-progress"), "train.itres")


def test_image_size_not_divisible(tmp_path):
    d = run_config_dict()
    d["model"]["unet"].update(image_size=10, channel_mults=[1, 2, 2], attn_resolutions=[])
    path = tmp_path / "ten.yaml"
    path.write_text(yaml.safe_dump(d))
    assert_bad_input(invoke("train", "--config", path, "--out", tmp_path / "run", "--no-progress"),
                     "image_size 10", "multiple of 4")


def test_missing_config_file(tmp_path):
    assert_bad_input(invoke("train", "--config", tmp_path / "nope.yaml", "--out", tmp_path / "run"),
                     "cannot read config file", "nope.yaml")


# ---------------------------------------------------------------------------- sample


def test_sample_at_one_width(trained_run, sample_args):
    out, args = sample_args
    r = invoke(*args, "--width", "0.5", "--seed", "10")
    assert r.exit_code == 0, r.output
    assert {p.name for p in out.iterdir()} - {".ddsm.lock"} == {"grid.png", "samples.safetensors", "sample.json"}
    info = json.loads((out / "sample.json").read_text())
    assert info["widths"] == [0.5, 0.5, 0.5] and info["seeds"] == [10, 14] and info["sampler"]["steps"] == 3
    tensors, header = read_tensors(out / "samples.safetensors")
    x = tensors["samples"]
    assert x.shape == (4, 1, 8, 8) and header["supernet"] == info["supernet"]
    with Image.open(out / "grid.png") as im:
        assert im.format == "PNG" and im.size[0] > 8
    # the files hold exactly what the Python API gives for seeds 10..13
    net = load_supernet(trained_run)
    smp = make_sampler(NoiseSchedule(net.config.diffusion), SamplerConfig(steps=3))
    torch.testing.assert_close(x, generate(net.model, smp, 0.5, [10, 11, 12, 13]), rtol=0, atol=1e-6)


def test_sample_with_a_schedule_file(trained_run, sample_args, tmp_path):
    out, _ = sample_args
    net = load_supernet(trained_run)
    sched_path = tmp_path / "sched.json"
    Schedule.for_model(net.config, SamplerConfig(kind="ddpm", steps=3), [1.0, 0.5, 0.25]).save(sched_path)
    r = invoke("sample", "--checkpoint", trained_run, "--schedule", sched_path, "--num", "3", "--batch-size", "2",
               "--out", out, "--no-progress")
    assert r.exit_code == 0, r.output
    info = json.loads((out / "sample.json").read_text())
    assert info["widths"] == [1.0, 0.5, 0.25] and info["sampler"]["kind"] == "ddpm"
    smp = make_sampler(NoiseSchedule(net.config.diffusion), SamplerConfig(kind="ddpm", steps=3))
    want = generate(net.model, smp, [1.0, 0.5, 0.25], [0, 1, 2])
    torch.testing.assert_close(read_tensors(out / "samples.safetensors")[0]["samples"], want, rtol=0, atol=1e-5)

    # flags that contradict the schedule are refused, naming both values
    r = invoke("sample", "--checkpoint", trained_run, "--schedule", sched_path, "--steps", "5",
               "--out", tmp_path / "clash", "--no-progress")
    assert_bad_input(r, "--steps 5", "schedule: 3")


def _wrong_length_schedule(trained_run, tmp_path):
    net = load_supernet(trained_run)
    path = tmp_path / "short.json"
    Schedule(supernet=net.fingerprint, sampler=SamplerConfig(steps=3), widths=(1.0, 0.5)).save(path)
    return ["--schedule", path], ["2 widths for 3 sampling steps"]


def _corrupt_checkpoint(trained_run, tmp_path):
    bad = tmp_path / "corrupt.safetensors"
    bad.write_bytes(os.urandom(2048))
    return ["--checkpoint", bad, "--width", "1.0"], ["corrupt", str(bad)]


def _truncated_checkpoint(trained_run, tmp_path):
    bad = tmp_path / "run-truncated"
    bad.mkdir()
    good = (trained_run / "supernet.safetensors").read_bytes()
    (bad / "supernet.safetensors").write_bytes(good[: len(good) // 3])
    return ["--checkpoint", bad, "--width", "1.0"], ["corrupt"]


BAD_SAMPLE_INPUTS = {
    "width-not-served": lambda run, tmp: (["--width", "0.3"], ["width 0.3", "0.25, 0.5, 0.75, 1.0"]),
    "wrong-length-schedule": _wrong_length_schedule,
    "missing-checkpoint": lambda run, tmp: (["--checkpoint", tmp / "nope", "--width", "1.0"], ["not found", "nope"]),
    "corrupt-checkpoint": _corrupt_checkpoint,
    "truncated-checkpoint": _truncated_checkpoint,
    "missing-schedule": lambda run, tmp: (["--schedule", tmp / "none.json"], ["cannot read schedule file"]),
    "width-and-schedule": lambda run, tmp: (["--width", "1.0", "--schedule", tmp / "x.json"], ["exactly one of"]),
    "neither": lambda run, tmp: ([], ["exactly one of"]),
    "too-many-steps": lambda run, tmp: (["--width", "1.0", "--steps", "500"], ["steps 500", "1..50"]),
    "zero-samples": lambda run, tmp: (["--width", "1.0", "--num", "0"], ["--num (0)"]),
    "negative-eta": lambda run, tmp: (["--width", "1.0", "--eta", "-1"], ["eta"]),
    "no-such-device": lambda run, tmp: (["--width", "1.0", "--device", "tpu"], ["device 'tpu'"]),
}


@pytest.mark.parametrize("case", list(BAD_SAMPLE_INPUTS))
def test_bad_sample_input_is_one_line_and_writes_nothing(trained_run, sample_args, tmp_path, case):
    out, args = sample_args
    extra, needles = BAD_SAMPLE_INPUTS[case](trained_run, tmp_path)
    # a later --checkpoint overrides the good one (click keeps the last value)
    assert_bad_input(invoke(*args, *extra), *needles)
    assert not (out / "grid.png").exists()
    assert not out.exists() or not any(out.iterdir())


# ---------------------------------------------------------------------------- help


@pytest.mark.parametrize("command", [None, "train", "sample"])
def test_help_mentions_every_option(command):
    args = ["--help"] if command is None else [command, "--help"]
    r = invoke(*args)
    assert r.exit_code == 0
    cmd = main if command is None else main.commands[command]
    for param in cmd.params:
        if isinstance(param, click.Option):
            for opt in [*param.opts, *param.secondary_opts]:
                assert opt in r.output, (command, opt)
    if command is None:
        assert "train" in r.output and "sample" in r.output
    assert invoke(*args[:-1], "-h").output == r.output


def test_missing_required_option_is_a_usage_error(tmp_path):
    r = CliRunner().invoke(main, ["sample", "--width", "1.0"])
    assert r.exit_code == 2 and "Missing option '--checkpoint'" in r.output
