"""DPM-Solver++(2M), UniPC and Heun: diffusers' solvers in ddsm's sampler contract, their history carried in the
state, so search, prefix sharing and the trajectory cache work for them as for DDIM (Heun's own: tests/test_heun.py)."""

from __future__ import annotations

import json
import re

import pytest
import torch

from cli_helpers import assert_bad_input, invoke, search_and_export
from ddsm.checkpoint import Supernet
from ddsm.config import DiffusionConfig
from ddsm.diffusion import NoiseSchedule
from ddsm.errors import DDSMError
from ddsm.plan import StepPlan
from ddsm.samplers import SamplerConfig, generate, make_sampler
from ddsm.samplers.batched import TrajectoryCache, generate_many

SEEDS = [0, 1, 2, 5]
WIDTHS = [0.25, 0.25, 0.5, 1.0, 1.0]


def _sampler(config, steps=None, kind="dpm++", **kw):
    # steps None: as many calls as WIDTHS has entries (Heun calls the model twice per step but the last)
    steps = steps if steps is not None else 3 if kind == "heun" else 5
    return make_sampler(NoiseSchedule(config.diffusion), SamplerConfig(kind=kind, steps=steps, **kw))


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("kind, steps", [("dpm++", 3), ("dpm++", 5), ("unipc", 1), ("unipc", 2), ("unipc", 3),
                                         ("unipc", 6), ("heun", 1), ("heun", 2), ("heun", 4)])
def test_it_is_diffusers_solver(random_supernet, tiny_model_config, prediction, kind, steps):
    """ddsm's DPM-Solver++(2M), UniPC and Heun give diffusers' samples on the same grid, widths (one per model
    call) and seeds."""
    pytest.importorskip("diffusers")
    from ddsm.integrations.diffusers import sample_with_diffusers

    config = tiny_model_config.model_copy(update={"diffusion": DiffusionConfig(num_timesteps=50,
                                                                               prediction_type=prediction)})
    net = Supernet(model=random_supernet(), config=config, header={}, source="test")
    sampler_config = SamplerConfig(kind=kind, steps=steps, clip_sample=False)
    widths = (WIDTHS * 2)[:sampler_config.calls]
    ours = generate(net.model, _sampler(config, steps, kind=kind, clip_sample=False), widths, SEEDS)
    theirs = sample_with_diffusers(net, StepPlan.of(widths), SEEDS, sampler=sampler_config)
    # float32 rounding of the solver's coefficients (diffusers interpolates sigmas in float32)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=2e-4)
    if steps > 1:  # the widths matter
        full = generate(net.model, _sampler(config, steps, kind=kind, clip_sample=False), 1.0, SEEDS)
        assert (ours - full).abs().max() > 1e-3


def test_its_first_step_is_ddim_and_its_last_lands_on_the_clean_estimate(random_supernet, tiny_model_config):
    model = random_supernet()
    dpm = _sampler(tiny_model_config)
    ddim = make_sampler(NoiseSchedule(tiny_model_config.diffusion), SamplerConfig(kind="ddim", steps=5,
                                                                                 clip_sample=False))
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    t = float(dpm.timesteps[0])
    with torch.no_grad():
        eps = model(x, t)
    first = dpm.step(eps, t, dpm.initial_state(x)).prev_sample
    torch.testing.assert_close(dpm.model_input(first), ddim.step(eps, t, x).prev_sample, rtol=1e-5, atol=1e-5)
    last = float(dpm.timesteps[-1])
    out = dpm.step(eps, last, first)
    assert torch.equal(dpm.final(out.prev_sample), out.pred_original_sample)


@pytest.mark.parametrize("kind", ["dpm++", "unipc", "heun"])  # the samplers whose state carries their history
def test_shared_prefixes_and_the_trajectory_cache_give_each_schedule_its_own_samples(random_supernet,
                                                                                      tiny_model_config, kind):
    model, sampler = random_supernet(), _sampler(tiny_model_config, kind=kind)
    plans = [WIDTHS, [0.25, 0.25, 0.5, 0.5, 1.0], [1.0] * 5]
    alone = [generate(model, sampler, p, SEEDS) for p in plans]
    cache = TrajectoryCache(10**8)
    first = generate_many(model, sampler, plans[:2], SEEDS, fuse=False, cache=cache)
    # the third candidate shares nothing; a repeat of the first two resumes from their cached states, history included
    again = generate_many(model, sampler, plans[::-1], SEEDS, fuse=False, cache=cache)
    for k in range(2):
        assert torch.equal(first[k], alone[k])
    for k, p in enumerate(plans[::-1]):
        assert torch.equal(again[k], alone[plans.index(p)])
    assert cache.hits > 0
    fused = generate_many(model, sampler, plans, SEEDS, fuse=True)
    torch.testing.assert_close(fused, torch.stack(alone), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["dpm++", "unipc", "heun"])
def test_a_resolution_schedule_is_refused(random_supernet, tiny_model_config, kind):
    plan = StepPlan(tuple(WIDTHS), resolutions=(4, 4, 8, 8, 8))
    with pytest.raises(DDSMError, match=rf"sampler '{re.escape(kind)}' keeps the previous step's estimate"):
        generate(random_supernet(), _sampler(tiny_model_config, kind=kind), plan, SEEDS)


def test_a_search_exports_and_samples_with_it(trained_run, tmp_path):
    files = search_and_export(trained_run, tmp_path, {"kind": "dpm++", "steps": 4})
    assert json.loads(files[0].read_text())["sampler"]["kind"] == "dpm++"
    r = invoke("sample", "--checkpoint", trained_run, "--schedule", files[0], "--num", 2, "--out", tmp_path / "s",
               "--no-progress")
    assert r.exit_code == 0, r.output
    assert_bad_input(invoke("sample", "--checkpoint", trained_run, "--width", "1", "--sampler", "dpm", "--out",
                            tmp_path / "bad"), "'dpm'", "dpm++")


def test_cached_steps_and_guidance_run_under_it_as_under_ddim(random_supernet, tiny_unet, tiny_model_config):
    config = tiny_model_config.model_copy(update={"unet": tiny_unet.model_copy(update={"num_classes": 3})})
    model = random_supernet(config=config.unet)
    sampler = _sampler(config, guidance_scale=2.0)
    level = model.reuse_levels()[-1]
    plans = [StepPlan(tuple(WIDTHS), cached=(False, True, False, True, True), cache_level=level),
             StepPlan(tuple(WIDTHS), uncond=(None, 0.25, 0.5, 1.0, 1.0))]
    many = generate_many(model, sampler, plans, SEEDS, fuse=False, cache=TrajectoryCache(10**8))
    for k, p in enumerate(plans):
        assert torch.equal(many[k], generate(model, sampler, p, SEEDS))
    assert (many[0] - many[1]).abs().max() > 1e-3
