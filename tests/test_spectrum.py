"""The power-spectrum rule: the fit recovers a known power law; the rule grows later when asked for more signal."""

import json

import numpy as np
import pytest
import torch

from cli_helpers import assert_bad_input, invoke, write_space
from ddsm.config import DiffusionConfig
from ddsm.diffusion.noise import NoiseSchedule
from ddsm.errors import DDSMError
from ddsm.samplers.base import spaced_timesteps
from ddsm.spectrum import SpectrumFit, fit_power_spectrum, radial_power_spectrum, rule_resolutions


def power_law_images(n: int, side: int, A: float, beta: float, seed: int = 0) -> torch.Tensor:
    """Gaussian random fields whose expected radial power is A * w^-beta (orthonormal DFT units)."""
    gen = torch.Generator().manual_seed(seed)
    k = torch.fft.fftfreq(side, d=1.0 / side, dtype=torch.float64)
    w = torch.sqrt(k[:, None] ** 2 + k[None, :] ** 2)
    amp = torch.where(w > 0, (A * w.clamp(min=1e-9) ** -beta).sqrt(), torch.zeros_like(w))
    white = torch.randn((n, 1, side, side), generator=gen, dtype=torch.float64)
    return torch.fft.ifft2(torch.fft.fft2(white, norm="ortho") * amp, norm="ortho").real


def test_fit_recovers_a_known_power_law():
    x = power_law_images(2000, 32, A=5.0, beta=2.5)
    fit = fit_power_spectrum(x)
    assert fit.beta == pytest.approx(2.5, abs=0.1)
    assert fit.A == pytest.approx(5.0, rel=0.2)
    assert fit.r2 > 0.99


def test_white_noise_has_unit_flat_power():
    freqs, power = radial_power_spectrum(torch.randn(500, 1, 16, 16, generator=torch.Generator().manual_seed(0)))
    assert list(freqs) == list(range(1, 9))
    assert np.allclose(power, 1.0, atol=0.05)


def test_rule_grows_monotonically_and_later_for_a_higher_threshold():
    fit = SpectrumFit(A=24.0, beta=4.0, r2=1.0, freqs=(), power=())
    noise = NoiseSchedule(DiffusionConfig())
    ts = spaced_timesteps(1000, 20, "leading").tolist()
    sides = rule_resolutions(fit, [4, 8, 16], ts, noise)
    assert sides[0] == 4 and sides[-1] == 16 and all(b >= a for a, b in zip(sides, sides[1:]))
    strict = rule_resolutions(fit, [4, 8, 16], ts, noise, threshold=10.0)
    first = lambda s, r: next(i for i, x in enumerate(s) if x >= r)  # noqa: E731
    assert first(strict, 16) >= first(sides, 16) and first(strict, 8) >= first(sides, 8)
    # the growth to 16 happens where the band at 4 cycles first reaches SNR 1
    i = first(sides, 16)
    assert fit.snr(4.0, float(noise.alpha_bar_at(ts[i]))) >= 1 > fit.snr(4.0, float(noise.alpha_bar_at(ts[i - 1])))


def test_bad_input():
    with pytest.raises(DDSMError, match="square images"):
        fit_power_spectrum(torch.zeros(0, 1, 8, 8))
    fit = SpectrumFit(A=1.0, beta=2.0, r2=1.0, freqs=(), power=())
    with pytest.raises(DDSMError, match="threshold 0 must be positive"):
        rule_resolutions(fit, [4, 8], [10.0], NoiseSchedule(DiffusionConfig()), threshold=0)


def test_cli_prints_the_fit_and_the_rules_transitions(tmp_path, trained_run):
    space = write_space(tmp_path / "s.yaml", resolutions=[2, 4, 8])
    r = invoke("spectrum", "--checkpoint", trained_run, "--space", space, "--out", tmp_path / "spec.json")
    assert r.exit_code == 0, r.output
    assert "P(w) = " in r.output and "transition genes" in r.output
    doc = json.loads((tmp_path / "spec.json").read_text())
    assert doc["fit"]["beta"] > 0 and len(doc["sides"]) == 4 and doc["sides"][-1] == 8
    assert_bad_input(invoke("spectrum", "--checkpoint", trained_run, "--space", write_space(tmp_path / "w.yaml")),
                     "has no resolutions")


# ---------------------------------------------------------------------------- samples against real data


def test_band_errors_are_zero_for_the_real_images_and_log_power_ratio_otherwise():
    from ddsm.spectrum import compare_spectra, frequency_bands

    real = power_law_images(64, 16, A=2.0, beta=2.0).float()
    cmp = compare_spectra(real, {"same": real, "doubled": real * 2, "blurred": real.reshape(64, 1, 8, 2, 8, 2)
                                 .mean(dim=(3, 5)).repeat_interleave(2, -1).repeat_interleave(2, -2)})
    assert frequency_bands(16) == {"low": (1, 4), "high": (5, 8)}
    assert cmp.errors["same"] == {"low": 0.0, "high": 0.0}
    for band in ("low", "high"):  # amplitude x2 = power x4 at every frequency
        assert cmp.errors["doubled"][band] == pytest.approx(np.log10(4.0), rel=1e-6)
    # block averaging removes high frequencies: the high band is far off, the low band much less
    assert cmp.errors["blurred"]["high"] > 2 * cmp.errors["blurred"]["low"]
    assert cmp.freqs == tuple(float(w) for w in range(1, 9)) and cmp.num_samples["same"] == 64


def test_radial_power_per_image_averages_to_the_display_spectrum():
    from ddsm.spectrum import radial_power_per_image

    x = power_law_images(10, 8, A=1.0, beta=1.5)
    f1, p1 = radial_power_spectrum(x)
    f2, p2 = radial_power_per_image(x)
    np.testing.assert_allclose(f1, f2)
    np.testing.assert_allclose(p1, p2.mean(axis=0), rtol=1e-10)
    assert p2.shape == (10, len(f2))


def test_cli_compares_sampled_widths_with_the_real_spectrum(tmp_path, trained_run):
    plots = tmp_path / "plots"
    r = invoke("spectrum", "--checkpoint", trained_run, "--width", "0.25", "--width", "1", "--steps", "3",
               "--num", "4", "--plot", plots, "--out", tmp_path / "spec.json", "--no-progress")
    assert r.exit_code == 0, r.output
    assert "width 0.25" in r.output and "high" in r.output
    for name in ("spectrum.json", "spectrum.png", "spectrum.svg"):
        assert (plots / name).is_file()
    doc = json.loads((tmp_path / "spec.json").read_text())
    cmp = doc["comparison"]
    assert set(cmp["errors"]) == {"width 0.25", "width 1"} and cmp["num_samples"]["width 1"] == 4
    assert cmp["seeds"] == [10_000, 10_004] and cmp["sampler"]["steps"] == 3
    # the plot folder is now a spectrum-plots folder: rerunning into it is fine
    r = invoke("spectrum", "--checkpoint", trained_run, "--width", "1", "--steps", "3", "--num", "2",
               "--plot", plots, "--no-progress")
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("args,needles", [
    (["--plot", "P"], ["--plot need something to sample", "--width"]),
    (["--steps", "3"], ["--steps and --plot need"]),
    (["--width", "0.3"], ["width 0.3", "valid widths"]),
    (["--width", "1", "--num", "0"], ["--num"]),
    (["--width", "1", "--batch-size", "0"], ["--batch-size 0 must be positive"]),
])
def test_bad_comparison_input_is_one_line_and_writes_nothing(tmp_path, trained_run, args, needles):
    args = [str(tmp_path / "P") if a == "P" else a for a in args]
    r = invoke("spectrum", "--checkpoint", trained_run, *args, "--out", tmp_path / "s.json", "--no-progress")
    assert_bad_input(r, *needles)
    assert not (tmp_path / "s.json").exists() and not (tmp_path / "P").exists()


def test_plot_folder_of_the_users_is_refused(tmp_path, trained_run):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    r = invoke("spectrum", "--checkpoint", trained_run, "--width", "1", "--plot", mine, "--no-progress")
    assert_bad_input(r, "--plot", "not empty")
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
