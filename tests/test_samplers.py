"""DDPM/DDIM (diffusers' set_timesteps/step contract) and the per-seed, per-step-width sampling loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ddsm.config import DiffusionConfig
from ddsm.diffusion.noise import NoiseSchedule
from ddsm.errors import DDSMError
from ddsm.samplers import (
    DDIMSampler, DDPMSampler, SamplerConfig, SamplerOutput, generate, make_sampler, spaced_timesteps,
)

from conftest import TINY_T

SAMPLER_CLASSES = {"ddpm": DDPMSampler, "ddim": DDIMSampler}
SPACINGS = ["leading", "trailing", "linspace"]


@pytest.fixture(scope="module")
def noise() -> NoiseSchedule:
    return NoiseSchedule(DiffusionConfig(num_timesteps=TINY_T))


def _sampler(noise, kind="ddim", **cfg):
    return SAMPLER_CLASSES[kind](noise, SamplerConfig(kind=kind, **cfg))


# ---------------------------------------------------------------------------- timesteps


def test_leading_spacing_matches_diffusers_for_1000_50():
    assert spaced_timesteps(1000, 50, "leading").tolist() == list(range(980, -1, -20))


def test_trailing_and_linspace_match_diffusers_for_1000_50():
    assert spaced_timesteps(1000, 50, "trailing").tolist() == list(range(999, 18, -20))
    want = np.round(np.linspace(0, 999, 50))[::-1].tolist()
    assert spaced_timesteps(1000, 50, "linspace").tolist() == want


@pytest.mark.parametrize("spacing", SPACINGS)
def test_every_step_count_gives_that_many_descending_grid_timesteps(spacing):
    # Exhaustive over n: a float-step arange once gave n + 1 trailing steps (the last -1) for e.g. n = 29.
    for T in (50, 1000):
        for n in range(1, T + 1, 1 if T == 50 else 7):
            ts = spaced_timesteps(T, n, spacing)
            assert len(ts) == n, (T, n)
            assert (ts[1:] < ts[:-1]).all(), (T, n)
            assert ts.min() >= 0 and ts.max() <= T - 1, (T, n)
            assert torch.equal(ts, ts.round()), (T, n)


@pytest.mark.parametrize("n", [0, TINY_T + 1])
def test_step_count_outside_1_to_T_is_refused(noise, n):
    with pytest.raises(DDSMError, match=f"steps {n} is not in 1..{TINY_T}"):
        spaced_timesteps(TINY_T, n, "leading")


# ---------------------------------------------------------------------------- the contract


@pytest.mark.parametrize("kind", ["ddpm", "ddim"])
def test_step_before_set_timesteps_says_what_to_do(noise, kind):
    s = _sampler(noise, kind)
    with pytest.raises(ValueError, match="set_timesteps"):
        s.step(torch.zeros(1, 1, 2, 2), 10, torch.zeros(1, 1, 2, 2), noise=torch.zeros(1, 1, 2, 2))


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("kind", ["ddpm", "ddim"])
def test_set_timesteps_descending_with_the_requested_count(noise, kind, spacing):
    s = _sampler(noise, kind, timestep_spacing=spacing)
    for n in (1, 7, 10, 29, TINY_T):
        s.set_timesteps(n)
        assert s.num_inference_steps == n and len(s.timesteps) == n
        assert (s.timesteps[1:] < s.timesteps[:-1]).all()
        assert torch.equal(s.timesteps, spaced_timesteps(TINY_T, n, spacing))


@pytest.mark.parametrize("kind", ["ddpm", "ddim"])
def test_step_returns_sampler_output_of_the_sample_shape(noise, kind):
    s = _sampler(noise, kind, eta=0.5)
    s.set_timesteps(5)
    x = torch.randn(3, 2, 4, 4)
    for t in s.timesteps.tolist():
        out = s.step(torch.randn_like(x), t, x, noise=torch.randn_like(x))
        assert isinstance(out, SamplerOutput)
        assert out.prev_sample.shape == x.shape and out.pred_original_sample.shape == x.shape
        x = out.prev_sample
    assert torch.isfinite(x).all()


@pytest.mark.parametrize("kind", ["ddpm", "ddim"])
def test_step_at_a_timestep_not_visited_is_refused(noise, kind):
    s = _sampler(noise, kind)
    s.set_timesteps(5)
    with pytest.raises(DDSMError, match="not among the visited timesteps"):
        s.step(torch.zeros(1, 1, 2, 2), 11.0, torch.zeros(1, 1, 2, 2), noise=torch.zeros(1, 1, 2, 2))


def test_make_sampler_sets_the_configured_steps(noise):
    s = make_sampler(noise, SamplerConfig(kind="ddpm", steps=7, timestep_spacing="trailing"))
    assert isinstance(s, DDPMSampler) and s.num_inference_steps == 7


def test_explicit_fractional_timesteps(noise):
    s = _sampler(noise)
    s.set_timesteps(timesteps=[40.5, 20.25, 0.0])
    assert s.timesteps.tolist() == [40.5, 20.25, 0.0]
    assert s.prev_timestep(40.5) == 20.25 and s.prev_timestep(0.0) == -1.0
    with pytest.raises(DDSMError, match="strictly descending"):
        s.set_timesteps(timesteps=[10, 20])
    with pytest.raises(DDSMError, match=r"\[0, 49\]"):
        s.set_timesteps(timesteps=[60, 10])


# ---------------------------------------------------------------------------- DDIM


def test_ddim_eta0_is_deterministic_and_needs_no_noise(noise):
    s = _sampler(noise, eta=0.0)
    s.set_timesteps(10)
    assert not s.stochastic
    x, eps = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    a = s.step(eps, s.timesteps[3].item(), x).prev_sample
    b = s.step(eps, s.timesteps[3].item(), x).prev_sample
    assert torch.equal(a, b)


def test_ddim_eta_positive_requires_noise(noise):
    s = _sampler(noise, eta=0.5)
    s.set_timesteps(10)
    assert s.stochastic
    x = torch.randn(1, 1, 4, 4)
    with pytest.raises(ValueError, match="noise"):
        s.step(torch.randn_like(x), s.timesteps[0].item(), x)
    a = s.step(torch.zeros_like(x), s.timesteps[0].item(), x, noise=torch.ones_like(x)).prev_sample
    b = s.step(torch.zeros_like(x), s.timesteps[0].item(), x, noise=-torch.ones_like(x)).prev_sample
    assert not torch.equal(a, b)  # the noise is actually used


@pytest.mark.parametrize("eta", [0.0, 0.7])
def test_ddim_step_matches_diffusers_formula(noise, eta):
    # diffusers.DDIMScheduler.step (epsilon prediction, set_alpha_to_one), written out by hand.
    s = _sampler(noise, eta=eta, clip_sample=False)
    s.set_timesteps(10)  # leading: 45, 40, ..., 0
    t, t_prev = 25, 20
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((2, 1, 4, 4), generator=gen, dtype=torch.float64)
    eps = torch.randn((2, 1, 4, 4), generator=gen, dtype=torch.float64)
    z = torch.randn((2, 1, 4, 4), generator=gen, dtype=torch.float64)
    a_t, a_prev = noise.alpha_bar[t], noise.alpha_bar[t_prev]
    b_t, b_prev = 1 - a_t, 1 - a_prev
    x0 = (x - b_t**0.5 * eps) / a_t**0.5
    variance = (b_prev / b_t) * (1 - a_t / a_prev)
    std = eta * variance**0.5
    direction = (1 - a_prev - std**2) ** 0.5 * eps
    want = a_prev**0.5 * x0 + direction + (std * z if eta > 0 else 0)
    out = s.step(eps, float(t), x, noise=z)
    torch.testing.assert_close(out.pred_original_sample, x0, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.prev_sample, want, rtol=1e-12, atol=1e-12)


def test_ddim_last_step_lands_on_predicted_x0(noise):
    s = _sampler(noise, clip_sample=False)
    s.set_timesteps(10)
    x, eps = torch.randn(2, 1, 4, 4, dtype=torch.float64), torch.randn(2, 1, 4, 4, dtype=torch.float64)
    out = s.step(eps, 0.0, x)
    torch.testing.assert_close(out.prev_sample, out.pred_original_sample)


def test_clip_sample_clips_predicted_x0(noise):
    s = _sampler(noise, clip_sample=True)
    s.set_timesteps(10)
    x = torch.full((1, 1, 2, 2), 5.0)
    out = s.step(torch.zeros_like(x), 0.0, x)
    assert out.pred_original_sample.max() == 1.0


# ---------------------------------------------------------------------------- DDPM


def test_ddpm_step_matches_diffusers_formula(noise):
    # diffusers.DDPMScheduler.step, variance_type 'fixed_small', with a strided previous timestep.
    s = _sampler(noise, "ddpm", clip_sample=False)
    s.set_timesteps(10)
    t, t_prev = 25, 20
    gen = torch.Generator().manual_seed(1)
    x, eps, z = (torch.randn((2, 1, 4, 4), generator=gen, dtype=torch.float64) for _ in range(3))
    a_t, a_prev = noise.alpha_bar[t], noise.alpha_bar[t_prev]
    b_t, b_prev = 1 - a_t, 1 - a_prev
    cur_alpha = a_t / a_prev
    cur_beta = 1 - cur_alpha
    x0 = (x - b_t**0.5 * eps) / a_t**0.5
    mean = (a_prev**0.5 * cur_beta / b_t) * x0 + (cur_alpha**0.5 * b_prev / b_t) * x
    var = (b_prev / b_t * cur_beta).clamp(min=1e-20)
    out = s.step(eps, float(t), x, noise=z)
    torch.testing.assert_close(out.prev_sample, mean + var**0.5 * z, rtol=1e-12, atol=1e-12)


def test_ddpm_needs_noise_except_at_the_last_step(noise):
    s = _sampler(noise, "ddpm")
    s.set_timesteps(5)
    x = torch.randn(1, 1, 2, 2)
    with pytest.raises(ValueError, match="noise"):
        s.step(torch.zeros_like(x), s.timesteps[0].item(), x)
    last = s.step(torch.zeros_like(x), s.timesteps[-1].item(), x)  # no noise needed
    assert last.prev_sample.shape == x.shape


def test_ddim_eta1_equals_ddpm_with_the_same_noise(noise):
    # eta = 1 gives DDIM the DDPM posterior variance; with equal noise the steps coincide.
    ddim, ddpm = _sampler(noise, eta=1.0, clip_sample=False), _sampler(noise, "ddpm", clip_sample=False)
    ddim.set_timesteps(10)
    ddpm.set_timesteps(10)
    gen = torch.Generator().manual_seed(2)
    x, eps, z = (torch.randn((2, 1, 4, 4), generator=gen, dtype=torch.float64) for _ in range(3))
    for t in (45.0, 25.0, 5.0):
        torch.testing.assert_close(ddim.step(eps, t, x, noise=z).prev_sample,
                                   ddpm.step(eps, t, x, noise=z).prev_sample, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("kind", ["ddpm", "ddim"])
def test_oracle_denoiser_recovers_the_clean_image(noise, kind, spacing):
    # If the model predicts exactly the noise consistent with a known x0, every
    # step stays on the forward marginal and the chain ends at x0.
    s = _sampler(noise, kind, timestep_spacing=spacing, eta=0.5)
    s.set_timesteps(8)
    gen = torch.Generator().manual_seed(3)
    x0 = torch.rand((2, 1, 4, 4), generator=gen, dtype=torch.float64) * 2 - 1
    x = torch.randn((2, 1, 4, 4), generator=gen, dtype=torch.float64)
    for t in s.timesteps.tolist():
        ab = noise.alpha_bar_at(t)
        eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()
        x = s.step(eps, t, x, noise=torch.randn(x.shape, generator=gen, dtype=torch.float64)).prev_sample
    torch.testing.assert_close(x, x0, rtol=1e-9, atol=1e-9)


# ---------------------------------------------------------------------------- generate()


def _ddim(noise, steps=4, **kw):
    return make_sampler(noise, SamplerConfig(kind="ddim", steps=steps, **kw))


@pytest.mark.parametrize("cfg", [dict(kind="ddim"), dict(kind="ddim", eta=1.0), dict(kind="ddpm")],
                         ids=["ddim", "ddim-eta1", "ddpm"])
def test_a_sample_depends_on_its_seed_only(random_supernet, noise, cfg):
    model = random_supernet()
    s = make_sampler(noise, SamplerConfig(steps=4, **cfg))
    alone = generate(model, s, 0.5, [3])
    in_batch = generate(model, s, 0.5, [1, 2, 3])
    split = generate(model, s, 0.5, [1, 2, 3, 4], batch_size=2)  # seed 3 opens the second batch
    assert alone.shape == (1, 1, 8, 8) and alone.dtype == torch.float32
    torch.testing.assert_close(in_batch[2:3], alone, rtol=0, atol=1e-5)
    torch.testing.assert_close(split[2:3], alone, rtol=0, atol=1e-5)
    torch.testing.assert_close(split[:3], in_batch, rtol=0, atol=1e-5)
    assert torch.equal(generate(model, s, 0.5, [1, 2, 3]), in_batch)  # same seeds, same samples
    assert not torch.allclose(in_batch[0], in_batch[1])  # different seeds, different samples


def test_widths_are_looked_up_per_step(random_supernet, noise):
    model = random_supernet()
    s = _ddim(noise, steps=5)
    plan = [1.0, 0.75, 0.25, 0.5, 0.25]
    seen: list[tuple[float, float, int]] = []
    model.register_forward_hook(lambda m, args, out: seen.append((float(args[1]), m.width, 0)))
    model.conv_in.register_forward_hook(lambda m, args, out: seen.append((None, None, out.shape[1])))
    generate(model, s, plan, [0, 1])
    # conv_in runs first inside a call, the model hook fires at its end
    calls = [(seen[i + 1][0], seen[i + 1][1], seen[i][2]) for i in range(0, len(seen), 2)]
    assert [c[0] for c in calls] == s.timesteps.tolist()
    assert [c[1] for c in calls] == plan
    assert [c[2] for c in calls] == [round(8 * w) for w in plan]  # the layers really ran at that width


def test_a_uniform_width_equals_the_same_width_at_every_step(random_supernet, noise):
    model = random_supernet()
    s = _ddim(noise)
    torch.testing.assert_close(generate(model, s, 0.75, [5, 6]), generate(model, s, [0.75] * 4, [5, 6]))
    assert not torch.allclose(generate(model, s, 0.25, [5, 6]), generate(model, s, 1.0, [5, 6]), atol=1e-3)


def test_schedule_of_the_wrong_length_names_both_lengths(random_supernet, noise):
    with pytest.raises(DDSMError, match="3 entries but the sampler takes 4 steps"):
        generate(random_supernet(), _ddim(noise), [1.0, 0.5, 0.5], [0])


def test_width_not_in_the_set_lists_the_valid_widths(random_supernet, noise):
    with pytest.raises(DDSMError, match=r"width 0\.3 .*\[0\.25, 0\.5, 0\.75, 1\.0\]"):
        generate(random_supernet(), _ddim(noise), [1.0, 0.3, 0.5, 0.5], [0])
    with pytest.raises(DDSMError, match=r"width 0\.6 "):
        generate(random_supernet(), _ddim(noise), 0.6, [0])


def test_generate_needs_timesteps_and_restores_training_mode(random_supernet, noise):
    model = random_supernet().train()
    with pytest.raises(ValueError, match="set_timesteps"):
        generate(model, DDIMSampler(noise, SamplerConfig()), 1.0, [0])
    generate(model, _ddim(noise), 1.0, [0])
    assert model.training
