"""generate_many: every candidate schedule sampled on shared seeds, shared prefixes computed once."""

from __future__ import annotations

import pytest
import torch

from ddsm.config import DiffusionConfig
from ddsm.diffusion.noise import NoiseSchedule
from ddsm.errors import DDSMError
from ddsm.samplers import SamplerConfig, generate, make_sampler
from ddsm.samplers.batched import SharingStats, TrajectoryCache, count_distinct_prefixes, generate_many

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


@pytest.mark.parametrize("kind,eta", [("ddim", 0.0), ("ddpm", 0.0)])
def test_unfused_candidates_do_not_depend_on_their_company(random_supernet, kind, eta):
    # fuse=False: a candidate's samples are bit-identical alone or among others, with or without the cache.
    model, sampler = random_supernet(), _sampler(kind, eta)
    seeds = list(range(5))
    together = generate_many(model, sampler, SCHEDULES, seeds, fuse=False)
    cache = TrajectoryCache(64 << 20)
    generate_many(model, sampler, SCHEDULES[1:3], seeds, fuse=False, cache=cache)  # warm part of the tree
    for k, widths in enumerate(SCHEDULES):
        assert torch.equal(generate_many(model, sampler, [widths], seeds, fuse=False)[0], together[k])
        assert torch.equal(generate_many(model, sampler, [widths], seeds, fuse=False, cache=cache)[0], together[k])


def test_the_cache_resumes_from_the_deepest_stored_prefix(random_supernet, monkeypatch):
    model, sampler = random_supernet(), _sampler("ddpm")  # stochastic: step noise must stay aligned
    seeds, cache = [0, 1, 2], TrajectoryCache(64 << 20)
    first = generate_many(model, sampler, [[1.0] * STEPS], seeds, cache=cache)
    assert len(cache) == STEPS
    log, stats = CallLog(model, monkeypatch), SharingStats()
    # Shares 4 steps with the cached full-width trajectory: only the last 2 steps run.
    widths = [1.0] * 4 + [0.5] * 2
    x = generate_many(model, sampler, [widths, [1.0] * STEPS], seeds, cache=cache, stats=stats)
    assert log.calls == [(0.5, 3), (0.5, 3)]
    assert torch.equal(x[1], first[0])  # a whole cached trajectory costs nothing
    torch.testing.assert_close(x[0], generate(model, sampler, widths, seeds), atol=1e-5, rtol=0)
    assert stats.image_evals == 2 * 3 and stats.shared_image_evals == (4 + 2 * 2) * 3
    assert stats.cache_saved_fraction == pytest.approx(1 - 6 / 24)
    # Other seeds are other trajectories: nothing is reused.
    before = len(log.calls)
    generate_many(model, sampler, [widths], [7, 8, 9], cache=cache)
    assert len(log.calls) == before + STEPS


def test_the_cache_stays_within_its_byte_budget(random_supernet):
    model, sampler = random_supernet(), _sampler()
    state_bytes = 2 * 1 * 8 * 8 * 4  # 2 samples of 1x8x8 float32
    cache = TrajectoryCache(3 * state_bytes)
    generate_many(model, sampler, SCHEDULES, [0, 1], cache=cache)
    assert len(cache) == 3 and cache.bytes == 3 * state_bytes
    off = TrajectoryCache(0)
    generate_many(model, sampler, SCHEDULES, [0, 1], cache=off)
    assert len(off) == 0
    with pytest.raises(DDSMError, match="must be >= 0"):
        TrajectoryCache(-1)
