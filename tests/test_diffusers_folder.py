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
    from ddsm.integrations.diffusers_folder import load_slim_unet

    folder = _save(tmp_path / "m")
    original = diffusers.UNet2DModel.from_pretrained(folder).eval()
    net = load_slim_unet(folder, widths=(0.5, 1.0))
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
    if case == "v prediction":
        return _save(m, scheduler={"num_train_timesteps": 100, "prediction_type": "v_prediction"})
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
    ("v prediction", ["prediction_type 'v_prediction'", "epsilon"]),
])
def test_each_bad_folder_is_one_line_naming_the_value(tmp_path, case, needles):
    with pytest.raises(DDSMError) as e:
        read_diffusers_folder(_bad(tmp_path, case))
    msg = str(e.value)
    assert "\n" not in msg
    for n in needles:
        assert n in msg, (n, msg)
