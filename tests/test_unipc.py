"""UniPC (bh2, order 2): diffusers' predictor-corrector in ddsm's sampler contract, its history (the last corrected
state and two estimates) carried in the state, so search, prefix sharing and the trajectory cache work for it (those
two, its equality with diffusers' solver and the refusal of resolution schedules are tests/test_dpm.py's, run for both
samplers)."""

from __future__ import annotations

import json

import torch

from cli_helpers import invoke, search_and_export
from ddsm.diffusion import NoiseSchedule
from ddsm.samplers import SamplerConfig, generate, make_sampler

SEEDS = [0, 1, 2, 5]
WIDTHS = [0.25, 0.25, 0.5, 1.0, 1.0]


def _sampler(config, steps=5, **kw):
    return make_sampler(NoiseSchedule(config.diffusion), SamplerConfig(kind="unipc", steps=steps, **kw))


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


def test_a_search_exports_and_samples_with_it(trained_run, tmp_path):
    files = search_and_export(trained_run, tmp_path, {"kind": "unipc", "steps": 4})
    assert json.loads(files[0].read_text())["sampler"]["kind"] == "unipc"
    r = invoke("sample", "--checkpoint", trained_run, "--width", "0.5", "--sampler", "unipc", "--steps", "3",
               "--num", 2, "--out", tmp_path / "s", "--no-progress")
    assert r.exit_code == 0, r.output
