"""UniPC (bh2, order 2): diffusers' predictor-corrector in ddsm's sampler contract, its history (the last corrected
state and two estimates) carried in the state, so search, prefix sharing and the trajectory cache work for it."""

from __future__ import annotations

import json

import pytest
import torch

from cli_helpers import invoke, write_space
from ddsm.checkpoint import Supernet
from ddsm.config import DiffusionConfig
from ddsm.diffusion import NoiseSchedule
from ddsm.errors import DDSMError
from ddsm.plan import StepPlan
from ddsm.samplers import SamplerConfig, generate, make_sampler
from ddsm.samplers.batched import TrajectoryCache, generate_many

SEEDS = [0, 1, 2, 5]
WIDTHS = [0.25, 0.25, 0.5, 1.0, 1.0]


def _sampler(config, steps=5, **kw):
    return make_sampler(NoiseSchedule(config.diffusion), SamplerConfig(kind="unipc", steps=steps, **kw))


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("steps", [1, 2, 3, 6])
def test_it_is_diffusers_unipc(random_supernet, tiny_model_config, prediction, steps):
    pytest.importorskip("diffusers")
    from ddsm.integrations.diffusers import sample_with_diffusers

    config = tiny_model_config.model_copy(update={"diffusion": DiffusionConfig(num_timesteps=50,
                                                                               prediction_type=prediction)})
    net = Supernet(model=random_supernet(), config=config, header={}, source="test")
    widths = (WIDTHS * 2)[:steps]
    ours = generate(net.model, _sampler(config, steps), widths, SEEDS)
    theirs = sample_with_diffusers(net, StepPlan.of(widths), SEEDS, sampler=SamplerConfig(kind="unipc", steps=steps))
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=2e-4)  # float32 rounding of diffusers' coefficients
    if steps > 1:
        assert (ours - generate(net.model, _sampler(config, steps), [1.0] * steps, SEEDS)).abs().max() > 1e-3


def test_it_differs_from_dpm_solver_by_its_corrector_and_lands_on_the_clean_estimate(random_supernet,
                                                                                      tiny_model_config):
    model, uni = random_supernet(), _sampler(tiny_model_config)
    dpm = make_sampler(NoiseSchedule(tiny_model_config.diffusion), SamplerConfig(kind="dpm++", steps=5))
    assert (generate(model, uni, 1.0, SEEDS) - generate(model, dpm, 1.0, SEEDS)).abs().max() > 1e-4
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    last = float(uni.timesteps[-1])
    with torch.no_grad():
        eps = model(x, last)
    out = uni.step(eps, last, uni.step(eps, float(uni.timesteps[-2]), uni.initial_state(x)).prev_sample)
    assert torch.equal(uni.final(out.prev_sample), out.pred_original_sample)


def test_shared_prefixes_and_the_trajectory_cache_give_each_schedule_its_own_samples(random_supernet,
                                                                                      tiny_model_config):
    model, sampler = random_supernet(), _sampler(tiny_model_config)
    plans = [WIDTHS, [0.25, 0.25, 0.5, 0.5, 1.0], [1.0] * 5]
    alone = [generate(model, sampler, p, SEEDS) for p in plans]
    cache = TrajectoryCache(10**8)
    first = generate_many(model, sampler, plans[:2], SEEDS, fuse=False, cache=cache)
    again = generate_many(model, sampler, plans[::-1], SEEDS, fuse=False, cache=cache)
    for k in range(2):
        assert torch.equal(first[k], alone[k])
    for k, p in enumerate(plans[::-1]):
        assert torch.equal(again[k], alone[plans.index(p)])
    assert cache.hits > 0
    torch.testing.assert_close(generate_many(model, sampler, plans, SEEDS, fuse=True), torch.stack(alone),
                               rtol=1e-5, atol=1e-5)


def test_a_resolution_schedule_is_refused(random_supernet, tiny_model_config):
    plan = StepPlan(tuple(WIDTHS), resolutions=(4, 4, 8, 8, 8))
    with pytest.raises(DDSMError, match=r"sampler 'unipc' keeps the previous step's estimate"):
        generate(random_supernet(), _sampler(tiny_model_config), plan, SEEDS)


def test_a_search_exports_and_samples_with_it(trained_run, tmp_path):
    space = write_space(tmp_path / "space.yaml", sampler={"kind": "unipc", "steps": 4})
    r = invoke("search", "--space", space, "--checkpoint", trained_run, "--out", tmp_path / "search", "--no-progress")
    assert r.exit_code == 0, r.output
    r = invoke("export", tmp_path / "search", "--checkpoint", trained_run, "--out", tmp_path / "export",
               "--repeats", "1", "--warmup", "0", "--no-progress")
    assert r.exit_code == 0, r.output
    files = sorted((tmp_path / "export").glob("front-*.json"))
    assert files and json.loads(files[0].read_text())["sampler"]["kind"] == "unipc"
    r = invoke("sample", "--checkpoint", trained_run, "--width", "0.5", "--sampler", "unipc", "--steps", "3",
               "--num", 2, "--out", tmp_path / "s", "--no-progress")
    assert r.exit_code == 0, r.output
