"""The slimmable UNet: widths run, subnets are exact slices, narrow gradients stay in their slice."""

from __future__ import annotations

import pytest
import torch

from ddsm.config import ModelConfig, UNetConfig, validate
from ddsm.errors import DDSMError
from ddsm.nn.slimmable import SlimConv2d, SlimModule, active
from ddsm.nn.registry import build_backbone
from ddsm.nn.unet import ResBlock, SlimUNet, timestep_embedding

from conftest import TINY_UNET, randomise

WIDTHS = TINY_UNET["widths"]


def _inputs(seed: int = 1, batch: int = 3):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((batch, 1, 8, 8), generator=gen)
    t = torch.rand((batch,), generator=gen) * 49  # fractional timesteps
    return x, t


# ---------------------------------------------------------------------------- widths


@pytest.mark.parametrize("width", WIDTHS)
def test_every_valid_width_runs(random_supernet, width):
    model = random_supernet()
    x, t = _inputs()
    y = model.set_active_width(width)(x, t)
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert model.width == width
    # every slimmable layer follows the supernet's width
    assert {m.width for m in model.modules() if isinstance(m, SlimModule)} == {width}


def test_fresh_supernet_predicts_zero_and_random_one_does_not(tiny_unet):
    # conv_out is zero-initialised (the net starts as the identity denoiser).
    x, t = _inputs()
    assert torch.count_nonzero(SlimUNet(tiny_unet)(x, t)) == 0
    assert torch.count_nonzero(randomise(SlimUNet(tiny_unet))(x, t)) > 0


def test_narrow_output_differs_from_wide(random_supernet):
    model = random_supernet()
    x, t = _inputs()
    wide = model.set_active_width(1.0)(x, t)
    narrow = model.set_active_width(0.25)(x, t)
    assert not torch.allclose(wide, narrow, atol=1e-3)


def test_width_not_served_is_refused_naming_the_valid_widths(random_supernet):
    model = random_supernet()
    with pytest.raises(DDSMError, match=r"width 0\.3 .*valid widths: \[0\.25, 0\.5, 0\.75, 1\.0\]"):
        model.set_active_width(0.3)
    assert model.width == 1.0  # a refused width leaves the model where it was


def test_scalar_timestep_equals_broadcast_vector(random_supernet):
    model = random_supernet()
    x, _ = _inputs()
    torch.testing.assert_close(model(x, 17.5), model(x, torch.full((3,), 17.5)))


def test_timestep_embedding_is_continuous_in_t():
    t = torch.tensor([10.0, 10.001, 11.0])
    e = timestep_embedding(t, 8)
    assert e.shape == (3, 8)
    assert (e[0] - e[1]).abs().max() < 1e-2 < (e[0] - e[2]).abs().max()


def test_samples_in_a_batch_are_independent(random_supernet):
    # GroupNorm and attention are per sample: batching must not mix samples.
    model = random_supernet().set_active_width(0.5)
    x, t = _inputs(batch=4)
    torch.testing.assert_close(model(x[2:3], t[2:3]), model(x, t)[2:3], rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------- extract_subnet


@pytest.mark.parametrize("down_block,up_block", [("conv", "nearest_conv"), ("avgpool", "nearest_conv"),
                                                  ("wavelet_gated", "wavelet_gated")])
@pytest.mark.parametrize("width", WIDTHS)
def test_extract_subnet_is_plain_torch_and_matches_supernet(random_supernet, width, down_block, up_block):
    cfg = validate(UNetConfig, {**TINY_UNET, "down_block": down_block, "up_block": up_block})
    model = random_supernet(seed=3, config=cfg)
    x, t = _inputs()
    with torch.no_grad():
        want = model.set_active_width(width)(x, t)
        sub = model.extract_subnet(width)
        assert not any(isinstance(m, SlimModule) for m in sub.modules())
        assert sub.width == width
        torch.testing.assert_close(sub(x, t), want, rtol=1e-5, atol=1e-5)
    n_sub = sum(p.numel() for p in sub.parameters())
    n_full = sum(p.numel() for p in model.parameters())
    assert n_sub < n_full if width < 1 else n_sub == n_full


def test_extracted_subnet_has_sliced_shapes_and_refuses_other_widths(random_supernet):
    model = random_supernet()
    sub = model.extract_subnet(0.25)
    assert isinstance(sub.conv_in, torch.nn.Conv2d) and sub.conv_in.weight.shape == (2, 1, 3, 3)
    assert sub.conv_out.weight.shape == (1, 2, 3, 3)  # fixed output: always the image channels
    sub.set_active_width(0.25)  # its own width is fine
    with pytest.raises(DDSMError, match="fixed-width subnet at 0.25"):
        sub.set_active_width(1.0)


def test_extract_subnet_leaves_the_supernet_untouched(random_supernet):
    model = random_supernet().set_active_width(0.75)
    x, t = _inputs()
    with torch.no_grad():
        before = model(x, t)
        sub = model.extract_subnet(0.25)
        assert model.width == 0.75
        torch.testing.assert_close(model(x, t), before)
        # the copy owns its weights: editing it does not change the supernet
        sub.conv_in.weight.add_(1.0)
        torch.testing.assert_close(model(x, t), before)


# ---------------------------------------------------------------------------- gradients


def _up_concat_conv(model: SlimUNet) -> SlimConv2d:
    for blocks in model.up:
        for b in blocks:
            if isinstance(b, ResBlock) and b.conv1.in_splits is not None:
                return b.conv1
    raise AssertionError("no concatenated-input conv in the up path")


def test_narrow_step_gradients_stay_inside_the_active_slice(random_supernet):
    model = random_supernet().train()
    x, t = _inputs()
    model.set_active_width(0.25)
    model(x, t).square().mean().backward()

    # A plain conv of the down path: rows [:out], columns [:in] only.
    conv = model.down[0][0].conv2  # 8 -> 8 channels at width 1
    c = active(8, 0.25)
    g = conv.weight.grad
    assert g[c:].abs().max() == 0 and g[:, c:].abs().max() == 0
    assert conv.bias.grad[c:].abs().max() == 0
    assert g[:c, :c].abs().max() > 0

    # A conv over [features, skip]: active columns are the prefix of each segment.
    up = _up_concat_conv(model)
    seg_a, seg_b = up.in_splits
    cols = list(range(active(seg_a, 0.25))) + list(range(seg_a, seg_a + active(seg_b, 0.25)))
    rows = active(up.out_channels, 0.25)
    g = up.weight.grad
    inactive = torch.ones(g.shape[1], dtype=torch.bool)
    inactive[cols] = False
    assert g[rows:].abs().max() == 0
    assert g[:, inactive].abs().max() == 0
    assert g[:rows][:, cols].abs().max() > 0
    assert (g[:rows][:, cols] != 0).any(dim=(0, 2, 3)).all()  # both segments receive gradient

    # GroupNorm affine parameters beyond the slice are untouched too.
    norm = model.norm_out
    assert norm.weight.grad[active(norm.num_channels, 0.25):].abs().max() == 0


def test_wide_step_gradients_reach_every_weight_of_a_conv(random_supernet):
    model = random_supernet().train()
    x, t = _inputs()
    model.set_active_width(1.0)
    model(x, t).square().mean().backward()
    up = _up_concat_conv(model)
    assert (up.weight.grad != 0).any(dim=(0, 2, 3)).all()


# ---------------------------------------------------------------------------- config errors


def test_image_size_that_cannot_be_downsampled_is_a_clear_error():
    with pytest.raises(DDSMError) as info:
        validate(UNetConfig, {"image_size": 10, "channel_mults": (1, 2, 2)})
    msg = str(info.value)
    assert "image_size 10" in msg and "multiple of 4" in msg and "8 or 12" in msg
    assert "\n" not in msg


def test_attention_resolution_must_be_a_feature_map_side():
    with pytest.raises(DDSMError, match=r"attn_resolutions entry 3 .*valid: \[8, 4\]"):
        validate(UNetConfig, {**TINY_UNET, "attn_resolutions": (3,)})


def test_unknown_config_keys_are_errors():
    with pytest.raises(DDSMError, match="base_chanels"):
        validate(UNetConfig, {**TINY_UNET, "base_chanels": 8})


def test_unknown_block_names_are_refused():
    with pytest.raises(DDSMError, match=r"unknown down_block 'wavelet'; valid: \['avgpool', 'conv', 'wavelet_gated'\]"):
        SlimUNet(validate(UNetConfig, {**TINY_UNET, "down_block": "wavelet"}))
    with pytest.raises(DDSMError, match=r"unknown up_block 'haar'; valid: \['nearest_conv', 'wavelet_gated'\]"):
        # The schema knows no network: the name is checked where the network is built from a config.
        build_backbone(validate(ModelConfig, {"unet": {**TINY_UNET, "up_block": "haar"}}))
