"""The variance-preserving forward process and its fractional-timestep interpolation."""

from __future__ import annotations

import math

import pytest
import torch

from ddsm.config import DiffusionConfig
from ddsm.diffusion.losses import distilled_eps_loss, eps_loss
from ddsm.diffusion.noise import NoiseSchedule, make_betas

SCHEDULES = [DiffusionConfig(num_timesteps=50), DiffusionConfig(num_timesteps=50, beta_schedule="linear"),
             DiffusionConfig(num_timesteps=1000)]


@pytest.fixture(params=SCHEDULES, ids=["cosine50", "linear50", "cosine1000"])
def sched(request) -> NoiseSchedule:
    return NoiseSchedule(request.param)


def test_alpha_bar_is_strictly_decreasing_in_0_1(sched):
    ab = sched.alpha_bar
    assert ab.dtype == torch.float64 and ab.shape == (sched.num_timesteps,)
    assert (ab[1:] < ab[:-1]).all()
    assert 0 < ab[-1] and ab[0] < 1
    if sched.config.beta_schedule == "cosine":  # at any T: nearly pure noise at T-1, nearly clean at 0
        assert ab[-1] < 1e-3 and ab[0] > 0.99


def test_linear_betas_follow_the_config():
    betas = make_betas(DiffusionConfig(num_timesteps=50, beta_schedule="linear", beta_start=1e-3, beta_end=0.05))
    assert betas[0].item() == pytest.approx(1e-3) and betas[-1].item() == pytest.approx(0.05)
    assert torch.allclose(betas.diff(), betas.diff()[0].expand(49))


def test_cosine_alpha_bar_follows_squared_cosine():
    T, s = 1000, 0.008
    sched = NoiseSchedule(DiffusionConfig(num_timesteps=T))
    f = lambda u: math.cos((u / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    for t in (0, 100, 500, 900):
        assert sched.alpha_bar[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-9)


def test_alpha_bar_at_integer_t_equals_the_grid(sched):
    t = torch.arange(sched.num_timesteps)
    torch.testing.assert_close(sched.alpha_bar_at(t), sched.alpha_bar, rtol=1e-12, atol=0)
    assert sched.alpha_bar_at(7).item() == pytest.approx(sched.alpha_bar[7].item(), rel=1e-12)


def test_fractional_t_lies_strictly_between_neighbours(sched):
    t = torch.arange(sched.num_timesteps - 1, dtype=torch.float64) + 0.37
    ab = sched.alpha_bar_at(t)
    lo, hi = sched.alpha_bar[:-1], sched.alpha_bar[1:]
    assert ((ab < lo) & (ab > hi)).all()
    # log-linear interpolation: the geometric mean at the midpoint
    mid = sched.alpha_bar_at(torch.tensor(10.5))
    assert mid.item() == pytest.approx(math.sqrt(sched.alpha_bar[10].item() * sched.alpha_bar[11].item()), rel=1e-12)


def test_alpha_bar_at_clamps_outside_the_grid(sched):
    assert sched.alpha_bar_at(-3.0).item() == pytest.approx(sched.alpha_bar[0].item())
    assert sched.alpha_bar_at(sched.num_timesteps + 5.0).item() == pytest.approx(sched.alpha_bar[-1].item())


def test_timestep_for_alpha_bar_inverts_alpha_bar_at(sched):
    gen = torch.Generator().manual_seed(0)
    t = torch.rand(200, generator=gen, dtype=torch.float64) * (sched.num_timesteps - 1)
    t = torch.cat([t, torch.tensor([0.0, 1.0, sched.num_timesteps - 1.0], dtype=torch.float64)])
    back = sched.timestep_for_alpha_bar(sched.alpha_bar_at(t))
    torch.testing.assert_close(back, t, rtol=0, atol=1e-6)
    # a scalar in, a scalar out
    assert sched.timestep_for_alpha_bar(sched.alpha_bar[12]).item() == pytest.approx(12.0, abs=1e-9)


def test_q_sample_matches_the_forward_marginal():
    sched = NoiseSchedule(DiffusionConfig(num_timesteps=50))
    gen = torch.Generator().manual_seed(0)
    n, t = 200_000, 20
    x0 = torch.full((n, 1), 0.6)
    eps = torch.randn((n, 1), generator=gen)
    xt = sched.q_sample(x0, torch.full((n,), t), eps)
    ab = sched.alpha_bar[t].item()
    assert xt.mean().item() == pytest.approx(math.sqrt(ab) * 0.6, abs=0.01)
    assert xt.std().item() == pytest.approx(math.sqrt(1 - ab), rel=0.01)


def test_q_sample_uses_each_samples_own_timestep():
    sched = NoiseSchedule(DiffusionConfig(num_timesteps=50))
    x0 = torch.randn(3, 1, 4, 4)
    eps = torch.randn(3, 1, 4, 4)
    t = torch.tensor([0, 25, 49])
    xt = sched.q_sample(x0, t, eps)
    for i in range(3):
        ab = sched.alpha_bar[t[i]].float()
        torch.testing.assert_close(xt[i], ab.sqrt() * x0[i] + (1 - ab).sqrt() * eps[i])


def test_losses():
    a, b, c = torch.zeros(4), torch.ones(4), torch.full((4,), 3.0)
    assert eps_loss(a, b).item() == pytest.approx(1.0)
    assert distilled_eps_loss(a, b, c, 0.0).item() == pytest.approx(1.0)
    assert distilled_eps_loss(a, b, c, 0.5).item() == pytest.approx(0.5 * 1 + 0.5 * 9)
    # the teacher is a target, not a path for gradients
    teacher = torch.ones(4, requires_grad=True)
    pred = torch.zeros(4, requires_grad=True)
    distilled_eps_loss(pred, b, teacher, 0.5).backward()
    assert teacher.grad is None and pred.grad is not None
