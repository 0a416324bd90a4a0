"""Spectrum-aware distillation (Spectral Diffusion): a bounded frequency term, off by default, exact resume."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from ddsm.config import RunConfig, TrainConfig, load_run_config, validate
from ddsm.data import ImageData
from ddsm.diffusion.losses import spectral_distill_loss, spectrum_weights, time_weighted_spectrum
from ddsm.diffusion.noise import NoiseSchedule
from ddsm.errors import DDSMError
from ddsm.train import Trainer

from conftest import run_config_dict

REPO = Path(__file__).resolve().parents[1]
WAVELET = {"down_block": "wavelet_gated", "up_block": "wavelet_gated"}


def _eps(seed: int, shape=(4, 1, 8, 8)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------- weights


def test_weights_are_the_inverse_spectrum_normalised_to_mean_one(tiny_data):
    w = spectrum_weights(tiny_data.train, floor=1e-3)
    m = torch.fft.fft2(tiny_data.train.double(), norm="ortho").abs().mean(dim=(0, 1))
    assert w.shape == (8, 8) and w.dtype == torch.float32
    torch.testing.assert_close(w.double().mean(), torch.tensor(1.0, dtype=torch.float64))
    # proportional to 1/|F| where no clamp applies: w * |F| is one constant
    prod = (w.double() * m)[m > 1e-3 * m.max()]
    assert prod.std() / prod.mean() < 1e-5


def test_weights_stay_finite_and_bounded_where_the_spectrum_is_zero():
    # Stripes that vary along the width only: every frequency with a vertical component has zero magnitude.
    x = torch.randn(5, 1, 1, 8, generator=torch.Generator().manual_seed(0)).expand(5, 1, 8, 8)
    m = torch.fft.fft2(x.double(), norm="ortho").abs().mean(dim=(0, 1))
    assert (m < 1e-12).sum() >= 50
    w = spectrum_weights(x, floor=0.01)
    assert torch.isfinite(w).all()
    assert float(w.max() / w.min()) <= 100.0 * (1 + 1e-5)  # the floor bounds the ratio


@pytest.mark.parametrize("x,needle", [(torch.zeros(3, 1, 8, 8), "is zero everywhere"),
                                      (torch.full((3, 1, 8, 8), 0.3), "every frequency but DC")])
def test_data_without_a_spectrum_to_weight_is_refused(x, needle):
    with pytest.raises(DDSMError, match=f"{needle}.*set train.spectral_weight to 0"):
        spectrum_weights(x, floor=0.01)


def test_time_weighting_is_flat_at_pure_noise_and_full_at_the_end(tiny_data):
    w = spectrum_weights(tiny_data.train, floor=0.01)
    tw = time_weighted_spectrum(w, torch.tensor([50.0, 0.0, 25.0]), 50)
    torch.testing.assert_close(tw[0], torch.ones_like(w))
    torch.testing.assert_close(tw[1], w)
    assert torch.allclose(tw.mean(dim=(-2, -1)), torch.ones(3))
    assert tw[2].max() < w.max() and tw[2].max() > 1


# ---------------------------------------------------------------------------- the loss


def test_loss_is_zero_when_student_equals_teacher():
    e = _eps(0)
    w = torch.rand(8, 8) + 0.5
    assert float(spectral_distill_loss(e, e.clone(), w, torch.full((4,), 0.5), 5.0)) == 0.0


def test_loss_is_the_weighted_dft_error_of_the_clean_image_under_min_snr():
    noise = NoiseSchedule(validate(RunConfig, run_config_dict()).model.diffusion)
    t = torch.tensor([1, 10, 30, 49])
    ab = noise.alpha_bar_at(t)
    x_t, es, et = _eps(1).double(), _eps(2).double(), _eps(3).double()
    w = (torch.rand(8, 8, generator=torch.Generator().manual_seed(4)) + 0.5).double()
    a = ab.reshape(-1, 1, 1, 1)
    x0s, x0t = (x_t - (1 - a).sqrt() * es) / a.sqrt(), (x_t - (1 - a).sqrt() * et) / a.sqrt()
    err = (torch.fft.fft2(x0s - x0t, norm="ortho").abs().square() * w).mean(dim=(1, 2, 3))
    snr = ab / (1 - ab)
    want = (torch.minimum(snr, torch.tensor(5.0, dtype=torch.float64)) * err).mean()
    got = spectral_distill_loss(es.float(), et.float(), w.float(), ab, 5.0)
    assert float(got) == pytest.approx(float(want), rel=1e-4)


def test_loss_is_finite_at_pure_noise_and_at_the_last_step():
    es, et = _eps(5), _eps(6)
    stripes = torch.randn(2, 1, 1, 8, generator=torch.Generator().manual_seed(1)).expand(2, 1, 8, 8)
    w = spectrum_weights(stripes, floor=1e-4)  # zeros in the spectrum: weights up to 1e4x apart
    for ab in (torch.full((4,), 1e-12), torch.full((4,), 1 - 1e-9)):
        v = spectral_distill_loss(es, et, w, ab, 5.0)
        assert math.isfinite(float(v)) and float(v) >= 0


def test_loss_gradient_reaches_only_the_student():
    es, et = _eps(7).requires_grad_(), _eps(8).requires_grad_()
    spectral_distill_loss(es, et, torch.ones(8, 8), torch.full((4,), 0.5), 5.0).backward()
    assert es.grad.abs().max() > 0 and et.grad is None


# ---------------------------------------------------------------------------- config


@pytest.mark.parametrize("field,value,needle", [
    ("spectral_weight", -0.1, "greater than or equal to 0"),
    ("spectral_weight", float("nan"), "finite number"),
    ("spectral_weight", float("inf"), "finite number"),
    ("spectral_floor", 0.0, "greater than 0"),
    ("spectral_gamma", -1.0, "greater than 0"),
    ("spectral_schedule", "cosine", "'constant' or 'late_high'"),
])
def test_bad_spectral_settings_are_one_line_errors(field, value, needle):
    with pytest.raises(DDSMError) as info:
        validate(RunConfig, run_config_dict(**{field: value}))
    msg = str(info.value)
    assert f"train.{field}" in msg and needle in msg and "\n" not in msg


def test_off_by_default():
    assert TrainConfig().spectral_weight == 0.0


# ---------------------------------------------------------------------------- training


def test_an_old_recipe_trains_exactly_as_before_spectral_diffusion():
    """The reference recipe's first steps against losses recorded by the code before this feature existed."""
    golden = json.loads((REPO / "tests/data/golden_train_reference.json").read_text())
    cfg = load_run_config(REPO / "experiments/configs/digits-reference.yaml")
    d = cfg.model_dump(mode="json")
    assert "spectral_weight" in d["train"]  # the new field is there, at its default
    d["train"].update(batch_size=16, iters=golden["steps"])
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the golden run used one thread
    try:
        tr = Trainer(validate(RunConfig, d), Path("unused-never-written"), device="cpu", progress=False)
        rows = [tr.train_step() for _ in range(golden["steps"])]
    finally:
        torch.set_num_threads(before)
    assert not Path("unused-never-written").exists()
    for got, want in zip(rows, golden["losses"]):
        assert set(got) == set(want)  # no new loss terms appear
        for k in want:
            assert got[k] == pytest.approx(want[k], rel=1e-5, abs=1e-7), k


def test_weight_zero_is_the_same_run_as_the_field_absent(tiny_data, tmp_path):
    a = Trainer(validate(RunConfig, run_config_dict()), tmp_path / "a", device="cpu", data=tiny_data, progress=False)
    b = Trainer(validate(RunConfig, run_config_dict(spectral_weight=0.0, spectral_gamma=2.0)), tmp_path / "b",
                device="cpu", data=tiny_data, progress=False)
    for _ in range(2):
        assert a.train_step() == b.train_step()


def test_spectral_term_trains_the_narrow_widths_only(tiny_data, tmp_path):
    cfg = validate(RunConfig, run_config_dict(spectral_weight=1.0))
    tr = Trainer(cfg, tmp_path / "a", device="cpu", data=tiny_data, progress=False)
    for _ in range(3):
        losses = tr.train_step()
    assert "spectral@1" not in losses
    narrow = [k for k in losses if k.startswith("spectral@")]
    assert narrow and all(math.isfinite(losses[k]) and losses[k] > 0 for k in narrow)
    # the term reaches the shared weights: the same draws without it end elsewhere
    plain = Trainer(validate(RunConfig, run_config_dict()), tmp_path / "b", device="cpu", data=tiny_data,
                    progress=False)
    for _ in range(3):
        plain.train_step()
    a, b = tr.model.state_dict(), plain.model.state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_zero_data_with_the_spectral_term_is_refused_before_anything_is_written(tmp_path):
    data = ImageData("zeros", torch.zeros(16, 1, 8, 8), torch.zeros(2, 1, 8, 8))
    trainer = Trainer(validate(RunConfig, run_config_dict(spectral_weight=0.5)), tmp_path / "run", device="cpu",
                      data=data, progress=False)
    with pytest.raises(DDSMError, match="is zero everywhere"):
        trainer.run()
    assert not (tmp_path / "run").exists()


@pytest.mark.filterwarnings("ignore:resuming with iters")  # warm-up outlasts the 6 steps: the rate is the same
@pytest.mark.parametrize("extra", [{}, {"resolutions": [4], "spectral_schedule": "late_high"}])
def test_wavelet_and_spectral_training_resumes_bitwise_exactly(tiny_data, tmp_path, extra):
    def cfg(iters):
        d = run_config_dict(iters=iters, spectral_weight=0.5, **extra)
        d["model"]["unet"].update(WAVELET)
        return validate(RunConfig, d)

    a = Trainer(cfg(6), tmp_path / "a", device="cpu", data=tiny_data, progress=False)
    a.run()
    Trainer(cfg(3), tmp_path / "b", device="cpu", data=tiny_data, progress=False).run()
    b = Trainer(cfg(6), tmp_path / "b", device="cpu", data=tiny_data, progress=False)
    b.run(resume=True)
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    ea, eb = a.ema, b.ema
    assert all(torch.equal(ea[k], eb[k]) for k in ea)


# ---------------------------------------------------------------------------- bad input at the command line


@pytest.mark.parametrize("unet,train,needles", [
    ({"down_block": "haar"}, {}, ["unknown down_block 'haar'", "wavelet_gated"]),
    ({"up_block": "wavelet"}, {}, ["unknown up_block 'wavelet'", "nearest_conv", "wavelet_gated"]),
    ({}, {"spectral_weight": -1}, ["train.spectral_weight", "greater than or equal to 0"]),
    ({}, {"spectral_weight": ".nan"}, ["train.spectral_weight", "finite number"]),
])
def test_bad_spectral_diffusion_configs_exit_2_and_write_nothing(tmp_path, unet, train, needles):
    import yaml

    from cli_helpers import assert_bad_input, invoke

    d = run_config_dict(**{k: v for k, v in train.items() if v != ".nan"})
    d["model"]["unet"].update(unet)
    text = yaml.safe_dump(d)
    if train.get("spectral_weight") == ".nan":
        text = text.replace("train:\n", "train:\n  spectral_weight: .nan\n")
    (tmp_path / "bad.yaml").write_text(text)
    out = tmp_path / "run"
    assert_bad_input(invoke("train", "--config", tmp_path / "bad.yaml", "--out", out, "--no-progress"), *needles)
    assert not out.exists()


def test_zero_data_with_the_spectral_term_exits_2_from_the_cli(tmp_path):
    from PIL import Image

    from cli_helpers import assert_bad_input, invoke

    folder = tmp_path / "black"
    folder.mkdir()
    for i in range(12):
        Image.new("L", (8, 8), 127).save(folder / f"{i}.png")  # constant images: nothing but DC
    d = run_config_dict(spectral_weight=0.5)
    import yaml

    (tmp_path / "c.yaml").write_text(yaml.safe_dump(d))
    out = tmp_path / "run"
    r = invoke("train", "--config", tmp_path / "c.yaml", "--data", folder, "--out", out, "--no-progress")
    assert_bad_input(r, "train.spectral_weight", "every frequency but DC")
    assert not out.exists()
