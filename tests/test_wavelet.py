"""Wavelet-gated down/up-sampling (Spectral Diffusion): exact Haar, exact slicing, exact extraction, counted cost."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ddsm.config import UNetConfig, validate
from ddsm.cost.macs import count_macs
from ddsm.diffusion.resolution import analysis, downsample, haar_dwt, haar_idwt, upsample
from ddsm.errors import DDSMError
from ddsm.nn.slimmable import SlimConv2d, SlimModule, active, freeze_width, set_active_width
from ddsm.nn.unet import DOWN_BLOCKS, UP_BLOCKS, SlimUNet, SubbandGate, WaveletGatedDownsample, WaveletGatedUpsample

from conftest import TINY_UNET, randomise

WAVELET_UNET = {**TINY_UNET, "down_block": "wavelet_gated", "up_block": "wavelet_gated"}


def _x(c: int = 8, side: int = 8, seed: int = 0, batch: int = 3) -> torch.Tensor:
    return torch.randn((batch, c, side, side), generator=torch.Generator().manual_seed(seed))


def _unit_gates(monkeypatch) -> None:
    monkeypatch.setattr(SubbandGate, "forward", lambda self, bands: torch.ones_like(bands[..., :1, :1]))


# ---------------------------------------------------------------------------- Haar


def test_haar_is_orthonormal_and_reconstructs_perfectly():
    x = _x().double()
    bands = haar_dwt(x)
    assert bands.shape == (3, 4, 8, 4, 4)
    torch.testing.assert_close(haar_idwt(bands), x, rtol=0, atol=1e-12)
    torch.testing.assert_close(bands.square().sum(), x.square().sum())  # energy kept: orthonormal


def test_haar_sampling_path_gives_the_same_bits_as_the_differentiable_one():
    x = _x().requires_grad_()
    bands = haar_dwt(x)
    back = haar_idwt(bands)
    back.sum().backward()  # the training path carries gradients
    torch.testing.assert_close(x.grad, torch.ones_like(x))  # orthonormal pair: d(sum of IDWT(DWT x))/dx = 1
    with torch.no_grad():
        assert torch.equal(haar_dwt(x), bands.detach())
        assert torch.equal(haar_idwt(bands.detach()), back.detach())


def test_haar_low_band_is_the_resolution_modules_analysis():
    x = _x()
    torch.testing.assert_close(haar_dwt(x)[:, 0], analysis(x, 4, "haar"))


def test_haar_detail_bands_see_only_their_direction():
    x = torch.arange(8.0).repeat(8, 1)[None, None]  # varies along the width only
    bands = haar_dwt(x)[0, :, 0]
    assert bands[1].abs().min() > 0  # horizontal detail present
    assert bands[2].abs().max() == 0 and bands[3].abs().max() == 0


def test_haar_needs_even_sides():
    with pytest.raises(DDSMError, match="even sides; got a 7x7"):
        haar_dwt(_x(side=7))
    with pytest.raises(DDSMError, match="needs a feature map with even sides, got 5x5"):
        WaveletGatedDownsample(8)(_x(side=5))


# ---------------------------------------------------------------------------- gates at one = plain Haar


def test_unit_gates_reduce_the_blocks_to_plain_haar(monkeypatch):
    _unit_gates(monkeypatch)
    C, x = 8, _x()
    down, up = WaveletGatedDownsample(C), WaveletGatedUpsample(C)
    with torch.no_grad():
        # merge keeps LL / 2 (the block mean) and split writes 2 x into LL: Haar down- and up-sampling
        down.merge.weight.zero_(), down.merge.bias.zero_()
        down.merge.weight[:, :C, 0, 0] = torch.eye(C) / 2
        up.split.weight.zero_(), up.split.bias.zero_()
        up.split.weight[:C, :, 0, 0] = torch.eye(C) * 2
        torch.testing.assert_close(down(x), downsample(x, 4, "haar"))
        torch.testing.assert_close(up(down(x)), upsample(downsample(x, 4, "haar"), 8, "haar"))
        # with merge/split as the identity on all four bands the pair is the perfect-reconstruction DWT/IDWT
        bands = haar_dwt(x)
        torch.testing.assert_close(haar_idwt(bands * torch.ones(1, 4, C, 1, 1)), x)


def test_gates_lie_in_zero_one_per_band_and_channel_and_start_at_one_half():
    gate = SubbandGate(8)
    bands = haar_dwt(_x())
    g = gate(bands)
    assert g.shape == (3, 4, 8, 1, 1)
    torch.testing.assert_close(g, torch.full_like(g, 0.5))  # fc2 starts at zero
    randomise(gate, seed=1, std=1.0)
    g = gate(bands)
    assert ((g > 0) & (g < 1)).all() and g.std() > 0.05


# ---------------------------------------------------------------------------- slicing and extraction


def _sliced_reference_down(block: WaveletGatedDownsample, x: torch.Tensor, width: float) -> torch.Tensor:
    """The down block at ``width`` recomputed from first principles: each band's prefix of channels."""
    C = block.merge.out_channels
    c = active(C, width)
    keep = torch.cat([torch.arange(b * C, b * C + c) for b in range(4)])
    bands = haar_dwt(x)
    pooled = bands.mean(dim=(-2, -1)).reshape(len(x), 4 * c, 1, 1)
    h = F.silu(F.conv2d(pooled, block.gate.fc1.weight[:, keep], block.gate.fc1.bias))
    g = torch.sigmoid(F.conv2d(h, block.gate.fc2.weight[keep], block.gate.fc2.bias[keep])).reshape(len(x), 4, c, 1, 1)
    merged = (bands * g).reshape(len(x), 4 * c, *bands.shape[-2:])
    return F.conv2d(merged, block.merge.weight[:c][:, keep], block.merge.bias[:c])


@pytest.mark.parametrize("width", [0.25, 0.5, 1.0])
def test_narrow_down_block_slices_every_band_and_its_gate(width):
    block = randomise(WaveletGatedDownsample(8), seed=2)
    x = _x(c=active(8, width))
    set_active_width(block, width)
    with torch.no_grad():
        torch.testing.assert_close(block(x), _sliced_reference_down(block, x, width))


@pytest.mark.parametrize("cls", [WaveletGatedDownsample, WaveletGatedUpsample])
@pytest.mark.parametrize("width", [0.25, 0.75, 1.0])
def test_blocks_freeze_into_plain_torch_with_identical_outputs(cls, width):
    block = randomise(cls(8), seed=3)
    x = _x(c=active(8, width))
    set_active_width(block, width)
    with torch.no_grad():
        want = block(x)
        plain = freeze_width(block, width)
        assert not any(isinstance(m, SlimModule) for m in plain.modules())
        torch.testing.assert_close(plain(x), want, rtol=0, atol=0)


def test_narrow_gradients_stay_in_each_bands_slice():
    block = randomise(WaveletGatedUpsample(8), seed=4)
    set_active_width(block, 0.25)
    block(_x(c=2)).square().mean().backward()
    g = block.split.weight.grad  # (4 * 8, 8): rows band-major
    rows = torch.zeros(32, dtype=torch.bool)
    for b in range(4):
        rows[b * 8: b * 8 + 2] = True
    assert g[~rows].abs().max() == 0 and g[:, 2:].abs().max() == 0
    assert (g[rows][:, :2] != 0).any(dim=(1, 2, 3)).all()  # every band's active rows learn


def test_out_splits_must_sum_to_out_channels():
    with pytest.raises(ValueError, match="out_splits"):
        SlimConv2d(4, 8, 1, out_splits=(4, 3))


def test_registered_by_name_and_built_by_config():
    assert DOWN_BLOCKS["wavelet_gated"] is WaveletGatedDownsample
    assert UP_BLOCKS["wavelet_gated"] is WaveletGatedUpsample
    model = SlimUNet(validate(UNetConfig, WAVELET_UNET))
    kinds = {type(b) for blocks in [*model.down, *model.up] for b in blocks}
    assert {WaveletGatedDownsample, WaveletGatedUpsample} <= kinds


@pytest.mark.parametrize("width", TINY_UNET["widths"])
def test_wavelet_supernet_at_every_width_runs_and_extracts(width):
    model = randomise(SlimUNet(validate(UNetConfig, WAVELET_UNET)), seed=5).eval()
    x, t = _x(c=1), torch.tensor([3.0, 20.5, 49.0])
    with torch.no_grad():
        y = model.set_active_width(width)(x, t)
        torch.testing.assert_close(model.extract_subnet(width)(x, t), y, rtol=1e-5, atol=1e-5)
    assert y.shape == x.shape and torch.isfinite(y).all()


# ---------------------------------------------------------------------------- cost


def test_cost_model_counts_the_wavelet_blocks_fully():
    model = SlimUNet(validate(UNetConfig, {**WAVELET_UNET, "image_size": 16, "attn_resolutions": (8,)}))
    counts = [count_macs(model, w) for w in TINY_UNET["widths"]]
    assert all(not c.unsupported for c in counts)  # nothing fvcore skipped went uncounted
    totals = [c.total for c in counts]
    assert totals == sorted(totals) and len(set(totals)) == len(totals)
    # The blocks' dense MACs by hand at width 1, one image, 16x16 input (8 channels at 16, 16 at 8): the Haar
    # transforms are sums and differences (elementwise, not dense); the gate's two 1x1 layers 4C*h + h*4C; the
    # merge (down) or split (up) 1x1 convolution 4C*C per pixel of the half-side map.
    plain = SlimUNet(validate(UNetConfig, {**TINY_UNET, "image_size": 16, "attn_resolutions": (8,)}))
    full, base = count_macs(model, 1.0), count_macs(plain, 1.0)

    def down(C, s):  # s: output side
        return 2 * 4 * C * max(4, C // 4) + 4 * C * C * s * s

    def up(C, s):  # s: input side
        return 4 * C * C * s * s + 2 * 4 * C * max(4, C // 4)

    conv_down = 9 * 8 * 8 * 8 * 8  # stride-2 3x3 conv, 8 channels, 8x8 output
    conv_up = 9 * 16 * 16 * 16 * 16  # 3x3 conv at 16x16, 16 channels (nearest x2 costs no MACs)
    assert full.dense - base.dense == down(8, 8) + up(16, 8) - conv_down - conv_up
    # and the transforms' sums and differences are counted as elementwise work, one op per element
    assert full.other > base.other
