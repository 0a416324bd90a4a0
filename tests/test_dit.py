"""The slimmable DiT: it computes DiT, widths keep whole heads and MLP units, subnets are exact slices."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ddsm.config import DiTConfig
from ddsm.errors import DDSMError
from ddsm.nn.backbone import Backbone
from ddsm.nn.dit import SlimDiT, pos_embed_2d
from ddsm.nn.slimmable import SlimModule, weight_cache

from conftest import randomise

#: 8x8 grayscale, 2x2 patches (a 4x4 token grid), 4 heads of 8 channels, 128 MLP units, 3 classes
TINY_DIT = dict(image_size=8, patch_size=2, hidden_size=32, depth=2, num_heads=4, num_classes=3,
                widths=(0.25, 0.5, 0.75, 1.0))
WIDTHS = TINY_DIT["widths"]


def _dit(seed: int = 0, **overrides) -> SlimDiT:
    """A tiny DiT with every parameter random (the zero-initialised adaLN and output layers included)."""
    torch.manual_seed(seed)
    return randomise(SlimDiT(DiTConfig(**{**TINY_DIT, **overrides})), seed=seed).eval()


def _inputs(seed: int = 1, batch: int = 3, side: int = 8):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((batch, 1, side, side), generator=gen)
    t = torch.rand((batch,), generator=gen) * 999  # fractional timesteps
    y = torch.randint(0, 3, (batch,), generator=gen)
    return x, t, y


# ---------------------------------------------------------------------------- a reference DiT, written out


def _dit_pos_table(d: int, g: int, pos: np.ndarray | None = None) -> torch.Tensor:
    """DiT's get_2d_sincos_pos_embed: first half the column's 1-D code, second half the row's."""
    pos = np.arange(g, dtype=np.float64) if pos is None else pos

    def one_d(p: np.ndarray) -> np.ndarray:
        omega = 1.0 / 10000 ** (np.arange(d // 4) / (d / 4.0))
        out = np.einsum("m,d->md", p, omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    cols, rows = np.meshgrid(pos, pos)  # (row, col) grids, row-major
    return torch.from_numpy(np.concatenate([one_d(cols.reshape(-1)), one_d(rows.reshape(-1))], axis=1)).float()


def _layer_norm(x):
    return (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + 1e-6)


def _reference(model: SlimDiT, x, t, y, heads: int, units: int) -> torch.Tensor:
    """DiT at ``heads`` heads and ``units`` MLP units, from the supernet's weights, one equation at a time."""
    cfg = model.config
    d, p, dh = cfg.hidden_size, cfg.patch_size, cfg.hidden_size // cfg.num_heads
    B, C, H, W = x.shape
    g = H // p
    n = heads * dh
    patches = x.reshape(B, C, g, p, g, p).permute(0, 2, 4, 1, 3, 5).reshape(B, g * g, C * p * p)
    h = patches @ model.x_embedder.weight.reshape(d, -1).T + model.x_embedder.bias + _dit_pos_table(d, g)

    freqs = torch.exp(-math.log(10000) * torch.arange(128) / 128)
    t_freq = torch.cat([torch.cos(t[:, None] * freqs), torch.sin(t[:, None] * freqs)], dim=1)
    mlp = model.t_embedder.mlp
    c = F.linear(F.silu(F.linear(t_freq, mlp[0].weight, mlp[0].bias)), mlp[2].weight, mlp[2].bias)
    c = c + model.y_embedder.weight[y]

    for blk in model.blocks:
        mod = F.linear(F.silu(c), blk.adaLN_modulation[1].weight, blk.adaLN_modulation[1].bias)
        s1, a1, g1, s2, a2, g2 = (mod[:, i * d:(i + 1) * d, None].transpose(1, 2) for i in range(6))
        z = _layer_norm(h) * (1 + a1) + s1
        Wqkv, bqkv = blk.attn.qkv.weight, blk.attn.qkv.bias
        q, k, v = (z @ Wqkv[o:o + n].T + bqkv[o:o + n] for o in (0, d, 2 * d))
        q, k, v = (m.reshape(B, g * g, heads, dh).transpose(1, 2) for m in (q, k, v))
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dh), dim=-1) @ v
        att = att.transpose(1, 2).reshape(B, g * g, n)
        h = h + g1 * (att @ blk.attn.proj.weight[:, :n].T + blk.attn.proj.bias)
        z = _layer_norm(h) * (1 + a2) + s2
        u = F.gelu(z @ blk.mlp.fc1.weight[:units].T + blk.mlp.fc1.bias[:units], approximate="tanh")
        h = h + g2 * (u @ blk.mlp.fc2.weight[:, :units].T + blk.mlp.fc2.bias)

    fl = model.final_layer
    mod = F.linear(F.silu(c), fl.adaLN_modulation[1].weight, fl.adaLN_modulation[1].bias)
    shift, scale = mod[:, None, :d], mod[:, None, d:]
    out = (_layer_norm(h) * (1 + scale) + shift) @ fl.linear.weight.T + fl.linear.bias
    return torch.einsum("nhwpqc->nchpwq", out.reshape(B, g, g, p, p, C)).reshape(B, C, H, W)


@pytest.mark.parametrize("width", WIDTHS)
def test_every_width_computes_dit_with_its_heads_and_units(width):
    model = _dit().set_active_width(width)
    x, t, y = _inputs()
    heads, units = model.config.heads(width), round(width * model.config.mlp_hidden)
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, cond=y), _reference(model, x, t, y, heads, units),
                                   rtol=1e-4, atol=1e-5)


def test_position_embedding_is_dit_on_the_training_grid_and_region_centres_on_a_coarser_one():
    torch.testing.assert_close(pos_embed_2d(32, 4, 4, 4), _dit_pos_table(32, 4))
    # a 2x2 grid on a 4x4 training grid: each token covers 2x2 training tokens, centred at 0.5 and 2.5
    torch.testing.assert_close(pos_embed_2d(32, 2, 2, 4), _dit_pos_table(32, 2, np.array([0.5, 2.5])))


# ---------------------------------------------------------------------------- widths


@pytest.mark.parametrize("width", WIDTHS)
def test_every_width_runs_with_the_input_shape(width):
    model = _dit()
    x, t, y = _inputs()
    out = model.set_active_width(width)(x, t, cond=y)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert model.width == width
    assert {m.width for m in model.modules() if isinstance(m, SlimModule)} == {width}


def test_fresh_supernet_predicts_zero_and_random_one_does_not():
    # adaLN-Zero: the final linear is zero-initialised, so a fresh DiT predicts ε = 0 at every width.
    x, t, y = _inputs()
    fresh = SlimDiT(DiTConfig(**TINY_DIT))
    for w in WIDTHS:
        assert torch.count_nonzero(fresh.set_active_width(w)(x, t, cond=y)) == 0
    assert torch.count_nonzero(_dit()(x, t, cond=y)) > 0


def test_narrow_output_differs_from_wide():
    model = _dit()
    x, t, y = _inputs()
    outs = [model.set_active_width(w)(x, t, cond=y) for w in WIDTHS]
    for a, b in zip(outs, outs[1:]):
        assert not torch.allclose(a, b, atol=1e-3)


@pytest.mark.parametrize("width,heads,units", [(0.25, 1, 32), (0.5, 2, 64), (0.75, 3, 96), (1.0, 4, 128)])
def test_a_width_keeps_whole_heads_and_a_prefix_of_mlp_units(width, heads, units):
    model = _dit()
    assert model.config.heads(width) == heads
    sub = model.extract_subnet(width)
    for blk in sub.blocks:
        assert blk.attn.qkv.weight.shape == (3 * heads * 8, 32)
        assert blk.attn.proj.weight.shape == (32, heads * 8)
        assert blk.mlp.fc1.weight.shape == (units, 32)
        assert blk.mlp.fc2.weight.shape == (32, units)
        assert blk.adaLN_modulation[1].weight.shape == (6 * 32, 32)  # the modulation is never sliced
    assert sub.final_layer.linear.weight.shape == (2 * 2 * 1, 32)
    # the kept q, k, v rows are the first heads of each third, not the first 3 * heads * dh rows
    qkv = model.blocks[0].attn.qkv.weight
    n = heads * 8
    torch.testing.assert_close(sub.blocks[0].attn.qkv.weight, torch.cat([qkv[:n], qkv[32:32 + n], qkv[64:64 + n]]))


def test_width_not_served_is_refused_naming_the_valid_widths():
    model = _dit()
    with pytest.raises(DDSMError, match=r"width 0\.3 .*valid widths: \[0\.25, 0\.5, 0\.75, 1\.0\]"):
        model.set_active_width(0.3)
    assert model.width == 1.0


# ---------------------------------------------------------------------------- extract_subnet


@pytest.mark.parametrize("width", WIDTHS)
def test_extract_subnet_is_plain_torch_and_matches_supernet(width):
    model = _dit(seed=3)
    x, t, y = _inputs()
    with torch.no_grad():
        want = model.set_active_width(width)(x, t, cond=y)
        want_hidden = model(x, t, cond=y, return_hidden=True)[1]
        sub = model.extract_subnet(width)
        assert not any(isinstance(m, SlimModule) for m in sub.modules())
        assert isinstance(sub, Backbone) and sub.widths == (width,) and sub.width == width
        got, hidden = sub(x, t, cond=y, return_hidden=True)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(hidden, want_hidden, rtol=1e-5, atol=1e-5)
    n_sub = sum(p.numel() for p in sub.parameters())
    n_full = sum(p.numel() for p in model.parameters())
    assert n_sub < n_full if width < 1 else n_sub == n_full


def test_extracted_subnet_refuses_other_widths():
    sub = _dit().extract_subnet(0.5)
    sub.set_active_width(0.5)
    with pytest.raises(DDSMError, match="fixed-width subnet at 0.5; cannot run at width 1.0"):
        sub.set_active_width(1.0)
    with pytest.raises(DDSMError, match="fixed-width subnet"):
        sub.check_width(0.25)


def test_extract_subnet_leaves_the_supernet_untouched():
    model = _dit().set_active_width(0.75)
    x, t, y = _inputs()
    with torch.no_grad():
        before = model(x, t, cond=y)
        sub = model.extract_subnet(0.25)
        assert model.width == 0.75
        assert {m.width for m in model.modules() if isinstance(m, SlimModule)} == {0.75}
        torch.testing.assert_close(model(x, t, cond=y), before)
        sub.blocks[0].attn.qkv.weight.add_(1.0)  # the copy owns its weights
        torch.testing.assert_close(model(x, t, cond=y), before)


# ---------------------------------------------------------------------------- inputs


def test_fractional_and_scalar_timesteps():
    model = _dit().set_active_width(0.5)
    x, _, y = _inputs()
    torch.testing.assert_close(model(x, 17.5, cond=y), model(x, torch.full((3,), 17.5), cond=y))
    assert not torch.allclose(model(x, 17.5, cond=y), model(x, 17.0, cond=y))
    assert torch.isfinite(model(x, torch.tensor([0.25, 500.5, 998.75]), cond=y)).all()


def test_labels_condition_the_output_and_none_is_the_null_label():
    model = _dit()
    x, t, _ = _inputs()
    outs = [model(x, t, cond=torch.full((3,), k)) for k in range(4)]
    for i in range(4):
        for j in range(i):
            assert not torch.allclose(outs[i], outs[j], atol=1e-4)
    torch.testing.assert_close(model(x, t), outs[3])  # None: the null label, index num_classes
    torch.testing.assert_close(model(x, t, cond=torch.tensor([0, 1, 3]))[1], outs[1][1])


@pytest.mark.parametrize("label", [-1, 4, 100])
def test_a_label_out_of_range_is_a_one_line_error(label):
    x, t, _ = _inputs()
    with pytest.raises(DDSMError) as info:
        _dit()(x, t, cond=torch.tensor([0, label, 1]))
    msg = str(info.value)
    assert f"class label {label} is out of range; valid labels: 0..2, and 3 for the null" in msg and "\n" not in msg


def test_cond_of_the_wrong_kind_is_refused():
    model = _dit()
    x, t, _ = _inputs()
    with pytest.raises(DDSMError, match="class labels must be integers"):
        model(x, t, cond=torch.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(DDSMError, match=r"class labels must be one per sample, shape \(3,\)"):
        model(x, t, cond=torch.tensor([0, 1]))


def test_an_unconditional_model_refuses_cond():
    model = _dit(num_classes=0)
    assert model.y_embedder is None
    x, t, y = _inputs()
    assert model(x, t).shape == x.shape
    with pytest.raises(DDSMError) as info:
        model(x, t, cond=y)
    assert "this model is unconditional" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("side", [2, 4])
def test_a_smaller_valid_side_runs(side):
    model = _dit().set_active_width(0.5)
    x, t, y = _inputs(side=side)
    eps, hidden = model(x, t, cond=y, return_hidden=True)
    assert eps.shape == (3, 1, side, side) and torch.isfinite(eps).all()
    assert hidden.shape == (3, 32, side // 2, side // 2)
    torch.testing.assert_close(model.extract_subnet(0.5)(x, t, cond=y), eps, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("side", [3, 6, 16])
def test_an_invalid_side_is_refused_naming_the_valid_ones(side):
    x, t, y = _inputs(side=side)
    with pytest.raises(DDSMError, match=rf"input side {side}x{side} .*valid sides: \[2, 4, 8\]"):
        _dit()(x, t, cond=y)


def test_wrong_channel_count_is_refused():
    with pytest.raises(DDSMError, match=r"images of shape \(B, 1, H, W\), got \(3, 2, 8, 8\)"):
        _dit()(torch.zeros(3, 2, 8, 8), 1.0)


def test_samples_in_a_batch_are_independent():
    model = _dit().set_active_width(0.5)
    x, t, y = _inputs(batch=4)
    torch.testing.assert_close(model(x[2:3], t[2:3], cond=y[2:3]), model(x, t, cond=y)[2:3], rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------- the backbone contract


def test_it_satisfies_the_backbone_protocol():
    model = _dit()
    assert isinstance(model, Backbone)
    assert model.widths == WIDTHS and model.width == 1.0
    assert model.image_size == 8 and model.in_channels == 1
    assert model.resolution_step() == 2 and model.valid_resolutions() == [2, 4, 8]
    assert model.check_width(0.25 + 1e-12) == 0.25


def test_return_hidden_is_the_last_blocks_token_map():
    model = _dit()
    x, t, y = _inputs()
    eps, hidden = model(x, t, cond=y, return_hidden=True)
    assert eps.shape == (3, 1, 8, 8) and hidden.shape == (3, 32, 4, 4)
    torch.testing.assert_close(eps, model(x, t, cond=y))
    # the final layer maps the hidden tokens (row-major) to ε
    tokens = hidden.flatten(2).transpose(1, 2)
    c = model.t_embedder(t) + model.y_embedder(y)
    torch.testing.assert_close(model.unpatchify(model.final_layer(tokens, c), 4, 4), eps)


def test_forward_bytes_grows_with_resolution_and_batch():
    model = _dit()
    sizes = [model.forward_bytes(r) for r in (2, 4, 8, 16)]
    assert sizes == sorted(sizes) and len(set(sizes)) == 4
    assert model.forward_bytes(8, 4) == 4 * model.forward_bytes(8, 1)
    # 16 tokens: 6 T d + 2 T m + 2 H T^2 + 2 C 8^2 floats
    assert model.forward_bytes(8) == 4 * (16 * (6 * 32 + 2 * 128) + 2 * 4 * 16**2 + 2 * 64)


def test_it_builds_on_the_meta_device_as_the_registry_counts_parameters():
    with torch.device("meta"):
        n = sum(p.numel() for p in SlimDiT(DiTConfig(**TINY_DIT)).parameters())
    assert n == sum(p.numel() for p in SlimDiT(DiTConfig(**TINY_DIT)).parameters())


# ---------------------------------------------------------------------------- no_grad cache and training


def test_cached_no_grad_forward_is_deterministic_and_follows_an_optimizer_step():
    model = _dit().set_active_width(0.5)
    x, t, y = _inputs()
    with torch.no_grad():
        first, second = model(x, t, cond=y), model(x, t, cond=y)
    assert torch.equal(first, second)

    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model(x, t, cond=y).square().mean().backward()
    opt.step()
    model.eval()
    with torch.no_grad():
        after = model(x, t, cond=y)
        with weight_cache(False):
            uncached = model(x, t, cond=y)
    assert not torch.allclose(after, first)
    torch.testing.assert_close(after, uncached, rtol=0, atol=0)


def test_narrow_step_gradients_stay_inside_the_active_heads_and_units():
    model = _dit().train().set_active_width(0.25)  # 1 head of 8 channels, 32 MLP units
    x, t, y = _inputs()
    model(x, t, cond=y).square().mean().backward()
    blk = model.blocks[0]
    g = blk.attn.qkv.weight.grad.view(3, 32, 32)  # q, k, v thirds
    assert g[:, 8:].abs().max() == 0 and (g[:, :8] != 0).any(dim=(1, 2)).all()
    assert blk.attn.proj.weight.grad[:, 8:].abs().max() == 0 and blk.attn.proj.weight.grad[:, :8].abs().max() > 0
    assert blk.mlp.fc1.weight.grad[32:].abs().max() == 0 and blk.mlp.fc1.bias.grad[32:].abs().max() == 0
    assert blk.mlp.fc2.weight.grad[:, 32:].abs().max() == 0 and blk.mlp.fc2.weight.grad[:, :32].abs().max() > 0
    # the shared parts (modulation, embeddings) learn at every width
    assert (blk.adaLN_modulation[1].weight.grad != 0).all(dim=1).any()
    assert model.x_embedder.weight.grad.abs().max() > 0


# ---------------------------------------------------------------------------- cost


def test_the_mac_count_traces_every_width_and_narrow_widths_cost_less():
    from ddsm.cost.macs import count_macs, torch_flops

    model = _dit(num_classes=0)
    counts = [count_macs(model, w) for w in WIDTHS]
    assert all(not c.unsupported for c in counts)
    assert [c.total for c in counts] == sorted(c.total for c in counts) and counts[0].total < counts[-1].total / 2
    assert torch_flops(model, 0.5) == 2 * counts[1].dense
