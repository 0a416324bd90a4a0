"""permute_by_importance: a diffusers UNet's channels reordered, residual streams and skips included, with the
full-width function unchanged; the constrained order itself checked by hand and by its group-preserving property."""

from __future__ import annotations

import pytest
import torch

from ddsm.errors import DDSMError
from ddsm.nn.channel_order import constrained_order, permute_by_importance

diffusers = pytest.importorskip("diffusers")

from ddsm.nn.diffusers_unet import SlimUNet2DModel  # noqa: E402

BASE = dict(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(8, 16),
            norm_num_groups=4, attention_head_dim=4)
CASES = {
    "attention blocks": dict(down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                             up_block_types=("AttnUpBlock2D", "UpBlock2D")),
    "plain blocks, no mid attention": dict(down_block_types=("DownBlock2D", "DownBlock2D"),
                                           up_block_types=("UpBlock2D", "UpBlock2D"), add_attention=False),
    # two layers per block: identity shortcuts join several layers into one residual stream
    "three levels, two layers, class embedding": dict(
        block_out_channels=(8, 16, 16), layers_per_block=2, num_class_embeds=3, mid_block_scale_factor=1.5,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D")),
}


def _pair(case: str):
    torch.manual_seed(0)
    original = diffusers.UNet2DModel(**{**BASE, **CASES[case]}).eval()
    with torch.no_grad():  # random norms and biases too, so a wrongly permuted one shows
        for p in original.parameters():
            p.add_(0.1 * torch.randn_like(p))
    slim = SlimUNet2DModel(dict(original.config), widths=(0.5, 1.0)).eval()
    slim.load_state_dict(original.state_dict(), strict=True)
    return original, slim


def _labels(case: str, n: int):
    return torch.arange(n) % 3 if "class" in case else None


def _maps_groups_onto_groups(perm: torch.Tensor, unit: int, offset: int) -> bool:
    """True when every group of ``unit`` channels (starting ``offset`` earlier) is filled from one old group."""
    label = (torch.arange(len(perm)) + offset) // unit
    seen = {}
    for g in label.unique().tolist():
        olds = label[perm[label == g]].unique()
        if len(olds) != 1 or olds.item() in seen.values():
            return False
        seen[g] = olds.item()
    return True


# ---------------------------------------------------------------------------- the order alone


def test_constrained_order_by_hand():
    # No grouping: a plain descending sort.
    assert constrained_order(torch.tensor([1.0, 3.0, 2.0]), []).tolist() == [1, 2, 0]
    # Groups of 2: the stronger group (5, 0) moves first whole, then each group is sorted inside.
    assert constrained_order(torch.tensor([1.0, 2.0, 5.0, 0.0]), [(2, 0)]).tolist() == [2, 3, 1, 0]
    # Groups of 2 and of 3 over 6 channels never line up: nothing crosses a group, only cells sort.
    assert constrained_order(torch.tensor([1.0, 2.0, 9.0, 8.0, 3.0, 4.0]), [(2, 0), (3, 0)]).tolist() == \
        [1, 0, 2, 3, 5, 4]
    # Groups of 3 starting one channel earlier (a concatenation offset): units [0,2) [2,5) [5,8);
    # only the two 3-long units may swap, and the stronger one (channels 5..7) goes first.
    imp = torch.tensor([0.0, 0.1, 1.0, 1.0, 1.0, 5.0, 6.0, 7.0])
    assert constrained_order(imp, [(3, 1)]).tolist() == [1, 0, 7, 6, 5, 2, 3, 4]


def test_constrained_order_keeps_every_grouping_and_sorts_units():
    g = torch.Generator().manual_seed(0)
    for groupings in ([(4, 0)], [(4, 0), (8, 0)], [(4, 0), (6, 8)], [(2, 0), (3, 1), (12, 0)]):
        imp = torch.rand(24, generator=g)
        perm = constrained_order(imp, groupings)
        assert sorted(perm.tolist()) == list(range(24))
        assert all(_maps_groups_onto_groups(perm, u, o) for u, o in groupings), groupings
    # Aligned groups of 4: group scores come out non-increasing.
    perm = constrained_order(imp, [(4, 0)])
    scores = imp[perm].pow(2).reshape(-1, 4).sum(1)
    assert (scores[:-1] >= scores[1:]).all() and not torch.equal(perm, torch.arange(24))


# ---------------------------------------------------------------------------- on the network


@pytest.mark.parametrize("case", list(CASES))
def test_permuted_net_is_still_the_original_at_full_width(case):
    original, slim = _pair(case)
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    labels = _labels(case, 3)
    with torch.no_grad():
        slim.set_active_width(0.5)
        narrow_before = slim(x, torch.tensor([5, 400, 999]), class_labels=labels)
        spaces = permute_by_importance(slim)
        narrow_after = slim(x, torch.tensor([5, 400, 999]), class_labels=labels)
        slim.set_active_width(1.0)
        for t in (torch.tensor([0, 500, 999]), torch.tensor(37), torch.tensor([3.5, 10.0, 700.25])):
            ref = original(x, t, class_labels=labels).sample
            assert (slim(x, t, class_labels=labels) - ref).abs().max().item() <= 1e-5, t
    assert torch.isfinite(narrow_after).all() and narrow_after.shape == (3, 1, 8, 8)
    assert (narrow_after - narrow_before).abs().max() > 1e-4  # width 0.5 now keeps other channels
    # Not the identity: and a residual stream (written through a shortcut or an attention's output) moved a whole unit.
    assert any(not torch.equal(s.perm, torch.arange(s.channels)) for s in spaces)
    streams = [s for s in spaces if any("conv_shortcut" in p or "to_out" in p or "downsamplers" in p
                                        for p in s.producers)]
    assert any(s.units > 1 and set(s.perm[: s.channels // s.units].tolist()) != set(range(s.channels // s.units))
               for s in streams)


def test_a_second_pass_finds_every_space_already_sorted():
    _, slim = _pair("three levels, two layers, class embedding")
    with torch.no_grad():
        first = permute_by_importance(slim)
        second = permute_by_importance(slim)
    assert any(not torch.equal(s.perm, torch.arange(s.channels)) for s in first)
    assert all(torch.equal(s.perm, torch.arange(s.channels)) for s in second)
    # One stream joins the layers behind identity shortcuts: all of them count as its producers.
    joined = [s for s in first if "down_blocks.0.resnets.1.conv2.weight" in s.producers]
    assert joined and {"conv_in.weight", "down_blocks.0.resnets.0.conv2.weight"} <= set(joined[0].producers)


def test_bad_criterion_and_bad_net_are_one_line_errors():
    _, slim = _pair("attention blocks")
    with pytest.raises(DDSMError, match="'l1'"):
        permute_by_importance(slim, criterion="l1")
    with pytest.raises(DDSMError, match="Linear"):
        permute_by_importance(torch.nn.Linear(2, 2))
