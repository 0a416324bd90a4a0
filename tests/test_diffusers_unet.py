"""The slimmable mirror of diffusers' UNet2DModel: the original's weights load unchanged and, at full width, it is
the original function; narrow widths run."""

from __future__ import annotations

import pytest
import torch

from ddsm.errors import DDSMError

diffusers = pytest.importorskip("diffusers")

from ddsm.nn.diffusers_unet import SlimUNet2DModel  # noqa: E402

BASE = dict(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(8, 16),
            norm_num_groups=4, attention_head_dim=4)
CASES = {
    "plain blocks": dict(down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                         add_attention=False),
    "attention blocks": dict(down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                             up_block_types=("AttnUpBlock2D", "UpBlock2D")),
    "three levels, two layers, class embedding, flipped features": dict(
        block_out_channels=(8, 16, 16), layers_per_block=2, num_class_embeds=3, flip_sin_to_cos=False, freq_shift=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"), mid_block_scale_factor=1.5),
    "no mid block, one head per attention": dict(
        attention_head_dim=None, mid_block_type=None, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D")),
}


def _pair(case):
    torch.manual_seed(0)
    original = diffusers.UNet2DModel(**{**BASE, **CASES[case]}).eval()
    with torch.no_grad():  # random, non-trivial norms and biases: a zero-init layer would hide a mapping error
        for p in original.parameters():
            p.add_(0.1 * torch.randn_like(p))
    slim = SlimUNet2DModel(dict(original.config), widths=(0.5, 1.0)).eval()
    slim.load_state_dict(original.state_dict(), strict=True)
    return original, slim


@pytest.mark.parametrize("case", list(CASES))
def test_full_width_is_the_original_function(case):
    original, slim = _pair(case)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 1, 8, 8, generator=g)
    labels = torch.tensor([0, 2, 1]) if "class" in case else None
    with torch.no_grad():
        for t in (torch.tensor([0, 500, 999]), torch.tensor(37), torch.tensor([3.5, 10.0, 700.25])):
            ref = original(x, t, class_labels=labels).sample
            out = slim(x, t, class_labels=labels)
            assert (out - ref).abs().max().item() <= 1e-5, (case, t)


@pytest.mark.parametrize("case", list(CASES))
def test_a_narrow_width_runs_and_differs_from_full(case):
    _, slim = _pair(case)
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    labels = torch.tensor([0, 1]) if "class" in case else None
    with torch.no_grad():
        full = slim(x, torch.tensor([10, 900]), class_labels=labels)
        slim.set_active_width(0.5)
        narrow = slim(x, torch.tensor([10, 900]), class_labels=labels)
    assert narrow.shape == full.shape and torch.isfinite(narrow).all()
    assert (narrow - full).abs().max() > 1e-3  # really slimmed


def test_widths_that_break_groups_or_heads_and_unknown_widths_are_refused():
    config = dict(diffusers.UNet2DModel(**{**BASE, **CASES["attention blocks"]}).config)
    with pytest.raises(DDSMError, match="width 0.25 keeps 2 of 8 channels"):
        SlimUNet2DModel(config, widths=(0.25, 1.0))
    with pytest.raises(DDSMError, match="downsample_padding 0 is not supported"):
        SlimUNet2DModel({**config, "downsample_padding": 0}, widths=(0.5, 1.0))
    with pytest.raises(DDSMError, match=r"width 0.75 is not served by this supernet; valid widths: \[0.5, 1.0\]"):
        SlimUNet2DModel(config, widths=(0.5, 1.0)).set_active_width(0.75)

