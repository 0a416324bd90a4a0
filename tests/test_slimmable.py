"""Slimmable primitives: a width is a prefix slice of one weight; GroupNorm groups are stable."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ddsm.config import UNetConfig, validate
from ddsm.errors import DDSMError
from ddsm.nn.slimmable import SlimConv2d, SlimGroupNorm, SlimLinear, SlimModule, freeze_width, set_active_width

from conftest import TINY_UNET


def _randomise(module: torch.nn.Module, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))


# ---------------------------------------------------------------------------- GroupNorm


@pytest.mark.parametrize("prefix", [4, 8, 12])
def test_groupnorm_prefix_equals_prefix_of_full_width(prefix):
    # Groups are contiguous blocks of group_channels, so a narrow net normalises
    # its channels with the very statistics the widest net computes for them.
    gn = SlimGroupNorm(16, group_channels=4)
    _randomise(gn)
    x = torch.randn(3, 16, 5, 5)
    full = gn(x)
    narrow = gn(x[:, :prefix])
    assert narrow.shape == (3, prefix, 5, 5)
    torch.testing.assert_close(narrow, full[:, :prefix], rtol=1e-5, atol=1e-5)


def test_groupnorm_to_static_matches_slim_forward():
    gn = SlimGroupNorm(16, group_channels=4)
    _randomise(gn)
    set_active_width(gn, 0.5)
    static = gn.to_static()
    assert isinstance(static, torch.nn.GroupNorm) and static.num_channels == 8 and static.num_groups == 2
    x = torch.randn(2, 8, 4, 4)
    torch.testing.assert_close(static(x), gn(x))


def test_groupnorm_refuses_channels_not_divisible_by_group():
    with pytest.raises(ValueError, match="12 channels"):
        SlimGroupNorm(12, group_channels=5)


@pytest.mark.parametrize("overrides, bad", [
    (dict(base_channels=32, widths=(0.3, 1.0)), "0.3"),  # 9.6 channels: not even an integer
    (dict(base_channels=8, group_channels=4, widths=(0.25, 1.0)), "0.25"),  # 2 channels, groups of 4
    (dict(base_channels=10, group_channels=5, widths=(0.5, 0.75, 1.0)), "0.75"),  # 7.5 channels
])
def test_width_groupnorm_cannot_normalise_fails_at_validation(overrides, bad):
    data = dict(image_size=16, channel_mults=(1, 2), attn_resolutions=(8,), **overrides)
    with pytest.raises(DDSMError) as info:
        validate(UNetConfig, data)
    msg = str(info.value)
    assert isinstance(info.value, ValueError)  # DDSMError is a ValueError for Python callers
    assert f"width {bad} " in msg and "GroupNorm" in msg and "\n" not in msg


def test_tiny_config_is_valid_and_keeps_its_widths():
    cfg = validate(UNetConfig, TINY_UNET)
    assert cfg.widths == (0.25, 0.5, 0.75, 1.0)
    assert [cfg.channels(1, w) for w in cfg.widths] == [4, 8, 12, 16]


@pytest.mark.parametrize("widths, needle", [((0.5,), "1.0"), ((0.0, 1.0), "(0, 1]"), ((1.5, 1.0), "(0, 1]")])
def test_bad_width_sets_are_refused(widths, needle):
    with pytest.raises(DDSMError, match=r"widths") as info:
        validate(UNetConfig, {**TINY_UNET, "widths": widths})
    assert needle in str(info.value)


def test_widths_are_sorted_and_a_repeated_width_is_refused():
    cfg = validate(UNetConfig, {**TINY_UNET, "widths": (1.0, 0.5, 0.25)})
    assert cfg.widths == (0.25, 0.5, 1.0)
    with pytest.raises(DDSMError, match="width 0.5 given twice"):
        validate(UNetConfig, {**TINY_UNET, "widths": (1.0, 0.5, 0.25, 0.5)})


# ---------------------------------------------------------------------------- conv and linear


def test_conv_at_width_uses_the_prefix_of_the_kernel():
    conv = SlimConv2d(8, 16, 3, padding=1)
    set_active_width(conv, 0.5)
    x = torch.randn(2, 4, 6, 6)
    y = conv(x)
    assert y.shape == (2, 8, 6, 6)
    torch.testing.assert_close(y, F.conv2d(x, conv.weight[:8, :4], conv.bias[:8], padding=1))


def test_conv_over_concatenation_slices_each_segment():
    # A UNet skip: [features (6 at width 1), skip (10 at width 1)]; at width 0.5
    # the input is [3 feature channels, 5 skip channels], so the kernel columns
    # used are 0..2 and 6..10, not the first 8.
    conv = SlimConv2d(16, 4, 1, in_splits=(6, 10))
    set_active_width(conv, 0.5)
    x = torch.randn(2, 8, 3, 3)
    cols = [0, 1, 2, 6, 7, 8, 9, 10]
    torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight[:2, cols], conv.bias[:2]))
    static = conv.to_static()
    assert static.in_channels == 8 and static.out_channels == 2
    torch.testing.assert_close(static(x), conv(x))


def test_conv_over_concatenation_refuses_wrong_input_width():
    conv = SlimConv2d(16, 4, 1, in_splits=(6, 10))
    set_active_width(conv, 0.5)
    with pytest.raises(RuntimeError, match="expects 8"):
        conv(torch.randn(1, 9, 2, 2))


def test_in_splits_must_sum_to_in_channels():
    with pytest.raises(ValueError, match="do not sum"):
        SlimConv2d(16, 4, 1, in_splits=(6, 6))


def test_fixed_in_and_fixed_out_are_never_slimmed():
    conv = SlimConv2d(3, 8, 3, padding=1, fixed_in=True)
    out = SlimConv2d(8, 3, 3, padding=1, fixed_out=True)
    set_active_width(conv, 0.25)
    set_active_width(out, 0.25)
    h = conv(torch.randn(1, 3, 4, 4))
    assert h.shape[1] == 2
    assert out(h).shape[1] == 3
    assert conv.to_static().in_channels == 3 and out.to_static().out_channels == 3


def test_linear_fixed_in_slices_only_outputs():
    lin = SlimLinear(12, 8, fixed_in=True)
    set_active_width(lin, 0.25)
    x = torch.randn(5, 12)
    y = lin(x)
    assert y.shape == (5, 2)
    torch.testing.assert_close(y, F.linear(x, lin.weight[:2], lin.bias[:2]))
    static = lin.to_static()
    assert (static.in_features, static.out_features) == (12, 2)
    torch.testing.assert_close(static(x), y)


def test_freeze_width_leaves_no_slim_module():
    seq = torch.nn.Sequential(SlimConv2d(1, 8, 3, padding=1, fixed_in=True), SlimGroupNorm(8, 2),
                              torch.nn.SiLU(), SlimConv2d(8, 1, 3, padding=1, fixed_out=True))
    _randomise(seq)
    set_active_width(seq, 0.5)
    x = torch.randn(2, 1, 5, 5)
    want = seq(x)
    frozen = freeze_width(seq, 0.5)
    assert not any(isinstance(m, SlimModule) for m in frozen.modules())
    torch.testing.assert_close(frozen(x), want)


def test_sliced_weight_cache_is_exact_and_follows_every_weight_change(random_supernet):
    """Without gradients a layer reuses contiguous per-width weights; the outputs never change, and an in-place
    update (optimizer step, load_state_dict) or a move invalidates the copy; with gradients nothing is kept."""
    from ddsm.nn.slimmable import weight_cache

    conv = SlimConv2d(8, 8, 3, padding=1, in_splits=(4, 4))
    x = torch.randn(2, 4, 5, 5)
    set_active_width(conv, 0.5)
    with torch.no_grad():
        with weight_cache(False):
            ref = conv(x)
        assert torch.equal(conv(x), ref) and len(conv._slices) == 1
        assert torch.equal(conv(x), ref) and len(conv._slices) == 1  # a hit
        conv.weight.add_(1.0)  # what an optimizer step does
        with weight_cache(False):
            ref2 = conv(x)
        assert not torch.equal(ref2, ref) and torch.equal(conv(x), ref2) and len(conv._slices) == 1
        conv.load_state_dict({"weight": torch.zeros(8, 8, 3, 3), "bias": torch.zeros(8)})
        assert torch.equal(conv(x), torch.zeros(2, 4, 5, 5))
    conv2 = SlimConv2d(8, 8, 3, padding=1)
    set_active_width(conv2, 0.5)
    conv2(torch.randn(1, 4, 5, 5)).sum().backward()  # training: the graph must reach the full parameter
    assert "_slices" not in conv2.__dict__ and conv2.weight.grad[4:].abs().sum() == 0
    net = random_supernet()
    xs, t = torch.randn(3, 1, 8, 8), torch.tensor([3, 20, 40])
    for w in (0.25, 0.75, 1.0):
        set_active_width(net, w)
        with torch.no_grad():
            with weight_cache(False):
                a = net(xs, t)
            assert torch.equal(net(xs, t), a) and torch.equal(net(xs, t), a)
