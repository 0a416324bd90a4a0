"""Reading a user's diffusers UNet2DModel folder offline: what is accepted, and one line for each refusal."""

from __future__ import annotations

import json

import pytest
import torch

from ddsm.errors import DDSMError

diffusers = pytest.importorskip("diffusers")

from ddsm.integrations.diffusers_folder import read_diffusers_folder  # noqa: E402

TINY = dict(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(8, 16),
            norm_num_groups=4, attention_head_dim=4, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D"))


def _save(folder, scheduler=None, **changes):
    torch.manual_seed(0)
    diffusers.UNet2DModel(**{**TINY, **changes}).save_pretrained(folder)
    diffusers.DDPMScheduler(**(scheduler or {"num_train_timesteps": 100, "beta_schedule": "squaredcos_cap_v2"})) \
        .save_config(folder)
    return folder


def test_a_model_folder_and_a_pipeline_folder_are_read_with_diffusers_own_betas(tmp_path):
    info = read_diffusers_folder(_save(tmp_path / "m"))
    ref = diffusers.DDPMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2").betas
    assert info.num_timesteps == 100 and torch.equal(info.betas.float(), ref.float())
    assert info.prediction_type == "epsilon" and info.config["block_out_channels"] == [8, 16]
    pipe = tmp_path / "pipe"
    diffusers.UNet2DModel(**TINY).save_pretrained(pipe / "unet")
    diffusers.DDPMScheduler(num_train_timesteps=50).save_config(pipe / "scheduler")
    info = read_diffusers_folder(pipe)
    assert info.folder == pipe / "unet" and info.num_timesteps == 50


def test_a_folder_loads_as_a_slimmable_net_that_is_the_original_at_full_width(tmp_path):
    from ddsm.integrations.diffusers_folder import load_slim_model

    folder = _save(tmp_path / "m")
    original = diffusers.UNet2DModel.from_pretrained(folder).eval()
    net = load_slim_model(folder, widths=(0.5, 1.0))
    x, t = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([5, 80])
    with torch.no_grad():
        assert (net(x, t) - original(x, t).sample).abs().max() <= 1e-5


def _bad(tmp_path, case):
    m = tmp_path / "m"
    if case == "hub id":
        return "google/ddpm-cifar10-32"
    if case == "no config":
        m.mkdir()
        return m
    if case == "not a unet":
        _save(m)
        cfg = json.loads((m / "config.json").read_text())
        (m / "config.json").write_text(json.dumps({**cfg, "_class_name": "UNet2DConditionModel"}))
        return m
    if case == "unsupported block":
        _save(m)
        cfg = json.loads((m / "config.json").read_text())
        (m / "config.json").write_text(json.dumps({**cfg, "down_block_types": ["DownBlock2D", "AttnSkipDownBlock2D"]}))
        return m
    if case == "scale shift":
        _save(m, resnet_time_scale_shift="scale_shift")
        return m
    if case == "padding 0":
        return _save(m, downsample_padding=0)
    if case == "no weights":
        _save(m)
        (m / "diffusion_pytorch_model.safetensors").unlink()
        return m
    if case == "pickle weights":
        _save(m)
        (m / "diffusion_pytorch_model.safetensors").unlink()
        torch.save({}, m / "diffusion_pytorch_model.bin")
        return m
    if case == "mismatched weights":
        _save(m)
        cfg = json.loads((m / "config.json").read_text())
        (m / "config.json").write_text(json.dumps({**cfg, "block_out_channels": [8, 24]}))
        return m
    if case == "flow prediction":
        return _save(m, scheduler={"num_train_timesteps": 100, "prediction_type": "flow_prediction"})
    raise AssertionError(case)


@pytest.mark.parametrize("case, needles", [
    ("hub id", ["'google/ddpm-cifar10-32'", "not a local folder", "never downloads"]),
    ("no config", ["no config.json"]),
    ("not a unet", ["'UNet2DConditionModel'", "UNet2DModel"]),
    ("unsupported block", ["'AttnSkipDownBlock2D'", "supported: DownBlock2D, AttnDownBlock2D"]),
    ("scale shift", ["resnet_time_scale_shift 'scale_shift'", "'default'"]),
    ("padding 0", ["downsample_padding 0", "1"]),
    ("no weights", ["no weights file diffusion_pytorch_model.safetensors"]),
    ("pickle weights", ["pickle", "diffusion_pytorch_model.bin", "safetensors only"]),
    ("mismatched weights", ["do not match", "shape"]),
    ("flow prediction", ["prediction_type 'flow_prediction'", "epsilon, v_prediction, sample"]),
])
def test_each_bad_folder_is_one_line_naming_the_value(tmp_path, case, needles):
    with pytest.raises(DDSMError) as e:
        read_diffusers_folder(_bad(tmp_path, case))
    msg = str(e.value)
    assert "\n" not in msg
    for n in needles:
        assert n in msg, (n, msg)


def _edited(tmp_path, file: str, **changes):
    m = _save(tmp_path / "m")
    doc = json.loads((m / file).read_text())
    (m / file).write_text(json.dumps({**doc, **changes}))  # json writes NaN and Infinity as diffusers would read them
    return m


@pytest.mark.parametrize("file, changes, needles", [
    ("scheduler_config.json", {"beta_start": float("nan")}, ["beta_start", "finite", "nan"]),
    ("scheduler_config.json", {"beta_end": float("inf")}, ["beta_end", "finite"]),
    ("scheduler_config.json", {"beta_start": -0.1}, ["beta_start", "greater than 0"]),
    ("scheduler_config.json", {"beta_end": 2.0}, ["beta_end", "less than 1"]),
    ("scheduler_config.json", {"beta_schedule": "linear", "beta_start": 0.05, "beta_end": 0.01},
     ["beta_start (0.05) exceeds beta_end (0.01)"]),
    ("scheduler_config.json", {"num_train_timesteps": 1}, ["num_train_timesteps", "greater than 1"]),
    ("scheduler_config.json", {"num_train_timesteps": 10**12}, ["num_train_timesteps", "100000"]),
    ("scheduler_config.json", {"num_train_timesteps": "50"}, ["num_train_timesteps", "valid integer"]),
    ("scheduler_config.json", {"clip_sample": "yes"}, ["clip_sample", "boolean"]),
    ("config.json", {"sample_size": -8}, ["sample_size", "greater than or equal to 1"]),
    ("config.json", {"sample_size": 4096}, ["sample_size", "1024"]),
    ("config.json", {"in_channels": 0}, ["in_channels", "(got 0)"]),
    ("config.json", {"block_out_channels": []}, ["block_out_channels", "at least 1"]),
    ("config.json", {"norm_eps": float("nan")}, ["norm_eps", "finite"]),
    ("config.json", {"attention_head_dim": 0}, ["attention_head_dim"]),
])
def test_each_bad_value_in_a_folder_is_one_line_before_diffusers_or_torch_sees_it(tmp_path, file, changes, needles):
    with pytest.raises(DDSMError) as e:
        read_diffusers_folder(_edited(tmp_path, file, **changes))
    msg = str(e.value)
    assert "\n" not in msg and len(msg) <= 300
    for n in needles:
        assert n in msg, (n, msg)


def test_a_huge_or_deeply_nested_config_is_refused_by_the_config_readers_limits(tmp_path):
    m = _save(tmp_path / "m")
    (m / "config.json").write_text('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(DDSMError, match="config.json' is not valid JSON: nested too deeply"):
        read_diffusers_folder(m)
    (m / "config.json").write_text('{"a": ' + "[" * 100 + "]" * 100 + "}")  # parses, but no config nests so deep
    with pytest.raises(DDSMError, match="nested more than 64 levels"):
        read_diffusers_folder(m)
    (m / "config.json").write_text(json.dumps({"junk": "x" * (2 << 20)}))
    with pytest.raises(DDSMError, match="larger than 1 MiB"):
        read_diffusers_folder(m)


def test_slim_refuses_bad_widths_and_shows_a_library_warning_as_one_line(tmp_path):
    from cli_helpers import assert_bad_input, invoke

    m = _save(tmp_path / "m")
    for w in ("1.5", "nan", "inf", "0"):
        assert_bad_input(invoke("slim", "--from-diffusers", m, "--width", w, "--iters", "1", "--out", tmp_path / "o",
                                "--no-progress"), "--width: widths must lie in (0, 1]")
    assert not (tmp_path / "o").exists()
    doc = json.loads((m / "config.json").read_text())
    (m / "config.json").write_text(json.dumps({**doc, "junk_key": "x" * 5000}))  # diffusers warns, quoting it whole
    r = invoke("slim", "--from-diffusers", m, "--width", "0.5", "--iters", "1", "--out",
               tmp_path / "o", "--no-progress")
    lines = [ln for ln in r.stderr.splitlines() if "junk_key" in ln]
    assert len(lines) == 1 and lines[0].startswith("warning: diffusers: ") and len(lines[0]) <= 300, r.stderr[:500]
