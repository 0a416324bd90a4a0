"""generate_many: every candidate schedule sampled on shared seeds, shared prefixes computed once."""

from __future__ import annotations

import pytest
import torch

from ddsm.config import DiffusionConfig
from ddsm.diffusion.noise import NoiseSchedule
from ddsm.errors import DDSMError
from ddsm.samplers import SamplerConfig, generate, make_sampler
from ddsm.samplers.batched import SharingStats, count_distinct_prefixes, generate_many

STEPS = 6
SCHEDULES = [
    [1.0] * 6,
    [1.0] * 3 + [0.25] * 3,  # shares 3 steps with the first
    [1.0] * 3 + [0.5] * 3,  # shares 3 steps with the first two
    [0.25] * 6,
    [0.25, 0.5, 0.75, 1.0, 1.0, 0.5],
    [1.0] * 6,  # a duplicate costs nothing
]


def _sampler(kind: str = "ddim", eta: float = 0.0, steps: int = STEPS):
    return make_sampler(NoiseSchedule(DiffusionConfig(num_timesteps=50)), SamplerConfig(kind=kind, steps=steps, eta=eta))


class CallLog:
    """Wraps a model's forward to record (width, batch size) of every denoiser call."""

    def __init__(self, model, monkeypatch):
        self.calls: list[tuple[float, int]] = []
        forward = model.forward

        def logged(x, t):
            self.calls.append((model.width, len(x)))
            return forward(x, t)

        monkeypatch.setattr(model, "forward", logged)


@pytest.mark.parametrize("kind,eta", [("ddim", 0.0), ("ddpm", 0.0), ("ddim", 0.6)])
def test_each_candidate_equals_generate_with_its_schedule(random_supernet, kind, eta):
    model, sampler = random_supernet(), _sampler(kind, eta)
    seeds = list(range(3, 13))
    many = generate_many(model, sampler, SCHEDULES, seeds, batch_size=4)
    assert many.shape == (len(SCHEDULES), len(seeds), 1, 8, 8) and many.dtype == torch.float32
    for k, widths in enumerate(SCHEDULES):
        alone = generate(model, sampler, widths, seeds, batch_size=7)
        torch.testing.assert_close(many[k], alone, atol=1e-5, rtol=0)
    # Different schedules really give different samples (the comparison above is not vacuous).
    assert (many[0] - many[3]).abs().max() > 1e-3


def test_stochastic_samplers_give_every_candidate_the_same_step_noise(random_supernet):
    # With identical widths, two candidates must coincide bit for bit, noise included.
    model, sampler = random_supernet(), _sampler("ddpm")
    x = generate_many(model, sampler, [[0.5] * STEPS, [0.5] * STEPS], [0, 1, 2])
    assert torch.equal(x[0], x[1])


def test_shared_prefixes_are_computed_once(random_supernet):
    model, sampler = random_supernet(), _sampler()
    stats = SharingStats()
    n = 5
    generate_many(model, sampler, SCHEDULES[:3], list(range(n)), stats=stats)
    # Steps 0-2: one state (all at width 1); steps 3-5: three distinct prefixes.
    assert stats.image_evals == n * (3 * 1 + 3 * 3)
    assert stats.naive_image_evals == 3 * n * STEPS
    assert stats.saved_fraction == pytest.approx(1 - 12 / 18)
    # Steps 0-2 need one call, steps 3-5 one per width (1, 0.25, 0.5).
    assert (stats.denoiser_calls, stats.naive_denoiser_calls) == (3 + 9, 18)


def test_identical_candidates_cost_one(random_supernet):
    stats = SharingStats()
    generate_many(random_supernet(), _sampler(), [[0.75] * STEPS] * 4, [0, 1], stats=stats)
    assert stats.image_evals == 2 * STEPS and stats.naive_image_evals == 4 * 2 * STEPS


def test_states_at_the_same_width_share_one_denoiser_call(random_supernet, monkeypatch):
    model = random_supernet()
    log = CallLog(model, monkeypatch)
    # Distinct from step 0, but both run width 1 from step 1 on: one call of 2N images per step.
    schedules = [[0.25] + [1.0] * (STEPS - 1), [0.5] + [1.0] * (STEPS - 1)]
    generate_many(model, _sampler(), schedules, [0, 1, 2])
    assert log.calls[:2] == [(0.25, 3), (0.5, 3)]
    assert log.calls[2:] == [(1.0, 6)] * (STEPS - 1)


def test_max_call_images_splits_calls_without_changing_results(random_supernet, monkeypatch):
    model, sampler = random_supernet(), _sampler()
    whole = generate_many(model, sampler, SCHEDULES, list(range(6)))
    log = CallLog(model, monkeypatch)
    split = generate_many(model, sampler, SCHEDULES, list(range(6)), max_call_images=4)
    assert max(n for _, n in log.calls) <= 4
    torch.testing.assert_close(split, whole, atol=1e-5, rtol=0)


def test_prefix_bookkeeping():
    plans = [[1, 1, 0.5], [1, 1, 0.25], [1, 0.5, 0.5], [0.5, 0.5, 0.5]]
    assert count_distinct_prefixes(plans) == [2, 3, 4]
    assert count_distinct_prefixes([]) == []


def test_bad_input_is_a_one_line_error(random_supernet):
    model, sampler = random_supernet(), _sampler()
    with pytest.raises(DDSMError, match="at least one schedule"):
        generate_many(model, sampler, [], [0])
    with pytest.raises(DDSMError, match="has 2 entries but the sampler takes 6 steps"):
        generate_many(model, sampler, [[1.0] * STEPS, [1.0, 1.0]], [0])
    with pytest.raises(DDSMError, match="valid widths"):
        generate_many(model, sampler, [[0.3] * STEPS], [0])


def test_restores_training_mode(random_supernet):
    model = random_supernet().train()
    generate_many(model, _sampler(), [[1.0] * STEPS], [0])
    assert model.training
