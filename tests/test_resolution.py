"""The resolution transition of a VP state: orthonormal maps, the new noise level, white residual noise."""

import pytest
import torch
import torch.nn.functional as F

from ddsm.diffusion.resolution import (
    alpha_bar_after_growth, analysis, downsample, grow, pick_transform, synthesis, upsample,
)
from ddsm.config import UNetConfig
from ddsm.errors import DDSMError
from ddsm.samplers.progressive import check_resolutions, family_transform

CASES = [(8, 16, "haar"), (4, 16, "haar"), (8, 16, "dct"), (4, 16, "dct"), (4, 12, "dct")]


@pytest.mark.parametrize("small,large,transform", CASES)
def test_analysis_rows_are_orthonormal_and_downsample_inverts_upsample(small, large, transform):
    n = small * small
    basis = torch.eye(n, dtype=torch.float64).reshape(n, 1, small, small)
    gram = analysis(synthesis(basis, large, transform), small, transform).reshape(n, n)
    assert torch.allclose(gram, torch.eye(n, dtype=torch.float64), atol=1e-12)  # A A^T = I
    x = torch.randn(3, 2, small, small, dtype=torch.float64)
    assert torch.allclose(downsample(upsample(x, large, transform), small, transform), x, atol=1e-12)


def test_haar_downsample_is_the_block_mean_and_upsample_repeats_pixels():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    assert torch.equal(downsample(x, 2, "haar"), F.avg_pool2d(x, 2))
    assert torch.equal(upsample(F.avg_pool2d(x, 2), 4, "haar"), F.avg_pool2d(x, 2).repeat_interleave(2, -1).repeat_interleave(2, -2))


def test_brightness_is_kept_by_both_transforms():
    x = torch.full((1, 1, 12, 12), 0.3, dtype=torch.float64)
    assert torch.allclose(downsample(x, 4, "dct"), torch.full((1, 1, 4, 4), 0.3, dtype=torch.float64))
    assert torch.allclose(downsample(x[..., :8, :8], 4, "haar"), torch.full((1, 1, 4, 4), 0.3, dtype=torch.float64))


def test_auto_is_haar_per_octave_and_dct_otherwise():
    assert pick_transform(8, 16) == "haar"
    assert pick_transform(4, 16) == "haar"  # two Haar levels
    assert pick_transform(4, 12) == "dct"
    assert family_transform(UNetConfig(image_size=16)) == "haar"
    assert family_transform(UNetConfig(image_size=12, channel_mults=(1, 2), attn_resolutions=())) == "dct"


@pytest.mark.parametrize("transform", ["haar", "dct"])
def test_each_family_nests(transform):
    # 16 -> 8 -> 4 equals 16 -> 4: noise projected to any side sees the same low band.
    x = torch.randn(2, 1, 16, 16, dtype=torch.float64)
    assert torch.allclose(analysis(analysis(x, 8, transform), 4, transform), analysis(x, 4, transform), atol=1e-12)


def test_new_noise_level_drops_the_snr_by_r_squared():
    for ab in (0.01, 0.3, 0.9):
        for r in (2, 3, 4):
            new = float(alpha_bar_after_growth(ab, r))
            assert new / (1 - new) == pytest.approx(ab / (1 - ab) / r**2, rel=1e-12)


def _residual_operator(small: int, large: int, transform: str, ab: float) -> torch.Tensor:
    """Rows: the residual (state minus scaled clean signal) / sqrt(1 - ab') per unit input noise."""
    ab_new = float(alpha_bar_after_growth(ab, large / small))
    n_s, n_l = small * small, large * large
    eye_s = torch.eye(n_s, dtype=torch.float64).reshape(n_s, 1, small, small)
    eye_l = torch.eye(n_l, dtype=torch.float64).reshape(n_l, 1, large, large)
    old, _ = grow((1 - ab) ** 0.5 * eye_s, ab, large, torch.zeros(n_s, 1, large, large, dtype=torch.float64), transform)
    fresh, _ = grow(torch.zeros(n_l, 1, small, small, dtype=torch.float64), ab, large, eye_l, transform)
    return torch.cat([old.reshape(n_s, n_l), fresh.reshape(n_l, n_l)]) / (1 - ab_new) ** 0.5


@pytest.mark.parametrize("small,large,transform", [(8, 16, "haar"), (4, 16, "haar"), (4, 16, "dct"), (4, 12, "dct")])
def test_residual_after_growth_is_unit_white_noise_exactly(small, large, transform):
    R = _residual_operator(small, large, transform, ab=0.3)
    assert torch.allclose(R.T @ R, torch.eye(large * large, dtype=torch.float64), atol=1e-10)


@pytest.mark.parametrize("small,large,transform", [(8, 16, "haar"), (4, 12, "dct")])
def test_residual_after_growth_is_unit_white_noise_by_sampling(small, large, transform):
    gen = torch.Generator().manual_seed(0)
    ab, B = 0.4, 20000
    x0 = torch.rand((1, 1, large, large), generator=gen, dtype=torch.float64) * 2 - 1
    x0s = downsample(x0, small, transform)
    state = ab**0.5 * x0s + (1 - ab) ** 0.5 * torch.randn((B, 1, small, small), generator=gen, dtype=torch.float64)
    y, ab_new = grow(state, ab, large, torch.randn((B, 1, large, large), generator=gen, dtype=torch.float64), transform)
    res = ((y - ab_new.sqrt() * upsample(x0s, large, transform)) / (1 - ab_new).sqrt()).reshape(B, -1)
    cov = torch.cov(res.T)
    assert res.mean().abs() < 0.01
    assert (torch.diag(cov) - 1).abs().max() < 0.06  # unit variance per pixel
    assert (cov - torch.diag(torch.diag(cov))).abs().max() < 0.06  # uncorrelated pixels
    spectrum = torch.fft.fft2(res.reshape(B, 1, large, large), norm="ortho").abs().pow(2).mean(0)
    assert (spectrum - 1).abs().max() < 0.1  # flat: white


def test_nearest_upsampling_of_the_state_is_not_white():
    # What the maths above avoids: repeating pixels copies the noise into 2x2 blocks.
    gen = torch.Generator().manual_seed(0)
    state = torch.randn((4000, 1, 8, 8), generator=gen, dtype=torch.float64)
    res = F.interpolate(state, scale_factor=2, mode="nearest").reshape(4000, -1)
    cov = torch.cov(res.T)
    assert (cov - torch.diag(torch.diag(cov))).abs().max() > 0.9


def test_bad_ratios_and_shrinking_are_refused():
    x = torch.zeros(1, 1, 8, 8)
    with pytest.raises(DDSMError, match="resolution 6 does not divide 16"):
        analysis(torch.zeros(1, 1, 16, 16), 6)
    with pytest.raises(DDSMError, match="Haar needs a power-of-2 ratio"):
        synthesis(torch.zeros(1, 1, 4, 4), 12, "haar")
    with pytest.raises(DDSMError, match="cannot decrease"):
        grow(x, 0.5, 4, torch.zeros(1, 1, 4, 4))
    with pytest.raises(DDSMError, match="transform 'wavelet' is not one of"):
        analysis(torch.zeros(1, 1, 16, 16), 8, "wavelet")


def test_a_schedule_can_only_grow_by_a_whole_ratio():
    config = UNetConfig(image_size=12, channel_mults=(1, 2), attn_resolutions=())
    with pytest.raises(DDSMError, match="grows 4 -> 6 at step 1; a growth needs a whole ratio"):
        check_resolutions([4, 6, 12], config, 3)
