"""The backbone contract: every registered backbone passes the same checks (in the manner of diffusers' shared tests).

Adding a backbone to :data:`ddsm.nn.registry.BACKBONES` means adding one
model config to :data:`CASES`; the first test fails until it is there.
"""

from __future__ import annotations

import re

import pytest
import torch

from ddsm.checkpoint import load_supernet, save_supernet
from ddsm.config import ModelConfig, validate
from ddsm.cost.macs import count_macs, torch_flops
from ddsm.diffusion import NoiseSchedule
from ddsm.errors import DDSMError
from ddsm.integrations.diffusers_folder import recorded_unet_config
from ddsm.nn import BACKBONES, Backbone, build_backbone
from ddsm.samplers import SamplerConfig, generate, make_sampler

from conftest import TINY_T, TINY_UNET, randomise

_DIFFUSERS_UNET = dict(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(8, 16),
                       norm_num_groups=4, attention_head_dim=4, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"))

_DIFFUSERS_DIT = dict(num_attention_heads=4, attention_head_dim=8, in_channels=1, out_channels=2, num_layers=2,
                      sample_size=8, patch_size=2, num_embeds_ada_norm=3)

#: one small model config per registered backbone
CASES = {
    "unet": {"unet": TINY_UNET, "diffusion": {"num_timesteps": TINY_T}},
    "diffusers_unet": {
        "unet": recorded_unet_config(_DIFFUSERS_UNET, (0.5, 1.0)).model_dump(mode="json"),
        "diffusion": {"num_timesteps": TINY_T},
        "diffusers": {"unet": _DIFFUSERS_UNET, "weights_sha256": "0" * 64, "freeze_full": True},
    },
    "dit": {"dit": {"image_size": 8, "patch_size": 2, "hidden_size": 32, "depth": 2, "num_heads": 4,
                    "widths": (0.25, 0.5, 0.75, 1.0)}, "diffusion": {"num_timesteps": TINY_T}},
    "diffusers_dit": {  # a diffusers DiT that learns its variance: the backbone returns the ε channels
        "dit": {"image_size": 8, "patch_size": 2, "hidden_size": 32, "depth": 2, "num_heads": 4, "num_classes": 3,
                "widths": (0.25, 0.5, 1.0)},
        "diffusion": {"num_timesteps": TINY_T},
        "diffusers": {"transformer": _DIFFUSERS_DIT, "weights_sha256": "0" * 64, "freeze_full": True},
    },
}


def test_every_registered_backbone_has_a_contract_case():
    assert set(CASES) == set(BACKBONES)


def test_an_unregistered_backbone_is_refused_naming_the_registered_ones():
    config = validate(ModelConfig, {**CASES["unet"], "backbone": "vit"})
    with pytest.raises(DDSMError, match=r"backbone 'vit' is not registered; registered backbones: diffusers_dit, "
                                        r"diffusers_unet, dit, unet"):
        build_backbone(config)


@pytest.fixture(params=sorted(CASES))
def case(request) -> tuple[ModelConfig, Backbone]:
    config = validate(ModelConfig, CASES[request.param])
    torch.manual_seed(0)
    model = randomise(build_backbone(config)).eval()
    if getattr(model, "original", None) is not None:  # a slimmed model: width 1 is the original's weights
        model.original.load_state_dict(model.net.state_dict())
    return config, model


def _probe(model: Backbone, n: int = 2, side: int | None = None):
    gen = torch.Generator().manual_seed(1)
    side = side or model.image_size
    return torch.randn(n, model.in_channels, side, side, generator=gen), torch.tensor([3.0, 41.5])[:n]


def test_it_satisfies_the_protocol(case):
    config, model = case
    assert isinstance(model, Backbone)
    geo = config.geometry  # the section holding the image geometry and widths (unet, or dit)
    assert model.widths == geo.widths and model.widths[-1] == 1.0 and list(model.widths) == sorted(model.widths)
    assert model.image_size == geo.image_size and model.in_channels == geo.in_channels
    assert model.width == 1.0


def test_widths_match_under_one_rule(case):
    _, model = case
    assert model.check_width(model.widths[0] + 1e-12) == model.widths[0]
    model.set_active_width(model.widths[0] + 1e-12)
    assert model.width == model.widths[0]
    with pytest.raises(DDSMError, match=r"width 0\.3 is not served by this supernet; valid widths"):
        model.check_width(0.3)


def test_an_extracted_subnet_computes_the_active_width_and_leaves_the_supernet_alone(case):
    _, model = case
    x, t = _probe(model)
    for w in model.widths:
        model.set_active_width(model.widths[-1])
        sub = model.extract_subnet(w)
        assert model.width == model.widths[-1]  # no side effect on the supernet
        assert isinstance(sub, Backbone) and sub.widths == (w,) and sub.width == w
        with torch.no_grad():
            torch.testing.assert_close(sub(x, t), model.set_active_width(w)(x, t), rtol=0, atol=1e-5)
        with pytest.raises(DDSMError, match="fixed-width subnet"):
            sub.set_active_width(0.3)


def test_narrow_widths_are_slices_of_the_supernets_weights(case):
    _, model = case
    with torch.no_grad():  # every tensor gets its own constant: a subnet tensor must carry its supernet tensor's
        for i, p in enumerate(model.parameters()):
            p.fill_(float(i + 1))
    full = {k: float(v.flatten()[0]) for k, v in model.state_dict().items() if v.is_floating_point() and v.numel()}
    sizes = []
    for w in model.widths:
        sub = model.extract_subnet(w)
        sizes.append(sum(p.numel() for p in sub.parameters()))
        for k, v in sub.state_dict().items():
            if w < 1.0 and v.is_floating_point() and v.numel():
                assert k in full and torch.all(v == full[k]), k
    assert sizes == sorted(set(sizes))  # strictly more weights at every wider width


def test_the_mac_count_agrees_with_torchs_own_counter(case):
    _, model = case
    macs = [count_macs(model, w) for w in model.widths]
    for w, m in zip(model.widths, macs):
        assert 2 * m.dense == torch_flops(model, w) and m.total > m.dense > 0 and not m.unsupported
    assert [m.total for m in macs] == sorted({m.total for m in macs})


def test_the_forward_is_deterministic_and_return_hidden_adds_the_last_map(case):
    _, model = case
    x, t = _probe(model)
    for w in model.widths:
        model.set_active_width(w)
        with torch.no_grad():
            eps = model(x, t)
            again, hidden = model(x, t, return_hidden=True)
        assert torch.equal(eps, again) and eps.shape == x.shape
        # a map per image (a UNet's at the image's side, a transformer's on its token grid)
        assert hidden.ndim == 4 and hidden.shape[0] == x.shape[0] and x.shape[-1] % hidden.shape[-1] == 0
    assert model(x, t, cond=None).shape == x.shape


def test_save_and_load_round_trip(case, tmp_path):
    config, model = case
    save_supernet(tmp_path / "s.safetensors", model, config)
    back = load_supernet(tmp_path / "s.safetensors")
    x, t = _probe(model)
    for w in model.widths:
        with torch.no_grad():
            assert torch.equal(back.model.set_active_width(w)(x, t), model.set_active_width(w)(x, t))


def test_one_sampling_loop_with_a_width_per_step(case):
    config, model = case
    sampler = make_sampler(NoiseSchedule(config.diffusion), SamplerConfig(kind="ddim", steps=4))
    widths = [model.widths[0], model.widths[-1], model.widths[0], model.widths[-1]]
    a = generate(model, sampler, widths, [0, 1])
    assert a.shape == (2, model.in_channels, model.image_size, model.image_size) and torch.isfinite(a).all()
    assert torch.equal(a, generate(model, sampler, widths, [0, 1]))


def test_resolutions_and_the_memory_estimate(case):
    _, model = case
    step, sides = model.resolution_step(), model.valid_resolutions()
    assert model.image_size in sides and all(s % step == 0 and model.image_size % s == 0 for s in sides)
    small, big = model.forward_bytes(model.image_size), model.forward_bytes(2 * model.image_size)
    assert 0 < small < big and model.forward_bytes(model.image_size, 4) == 4 * small


def test_feature_reuse_full_calls_are_the_forward_and_a_cached_call_at_the_same_input_is_too(case):
    _, model = case
    x, t = _probe(model)
    levels = model.reuse_levels()
    if not levels:  # a backbone without cache levels refuses every cached call, naming that
        with pytest.raises(DDSMError, match="offers no cache level"):
            model.forward_reuse(x, t, level=0, deep=None)
        return
    for w in model.widths:
        model.set_active_width(w)
        with torch.no_grad():
            eps = model(x, t)
            for level in levels:
                full, deep = model.forward_reuse(x, t, level=level, deep=None)
                cached, _ = model.forward_reuse(x, t, level=level, deep=deep)
                assert torch.equal(full, eps)  # a full call in a plan with cached steps is today's call
                torch.testing.assert_close(cached, eps, rtol=1e-5, atol=1e-6)  # filled at this t and width
    with pytest.raises(DDSMError, match=r"cache level 99 is not offered by .*valid levels: " + re.escape(str(list(levels)))):
        model.forward_reuse(x, t, level=99, deep=None)
