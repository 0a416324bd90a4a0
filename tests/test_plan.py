"""StepPlan, the one in-memory schedule: built from every form a schedule takes, accepted by the sampler."""

from __future__ import annotations

import pytest
import torch

from ddsm.diffusion.noise import NoiseSchedule
from ddsm.errors import DDSMError
from ddsm.plan import StepPlan
from ddsm.samplers import SamplerConfig, generate, make_sampler
from ddsm.schedule import Schedule

WIDTHS = (0.25, 1.0, 0.5, 1.0)


def test_every_form_of_a_schedule_becomes_the_same_plan(tiny_model_config):
    cfg = SamplerConfig(kind="ddim", steps=4)
    sched = Schedule.for_model(tiny_model_config, cfg, list(WIDTHS))
    plans = [StepPlan.of(list(WIDTHS)), StepPlan.of(WIDTHS), StepPlan.of(sched), sched.plan(), StepPlan(WIDTHS)]
    assert all(p == StepPlan(WIDTHS, None) for p in plans)
    assert StepPlan.of([(0.25, 4), (1.0, 8)]) == StepPlan((0.25, 1.0), (4, 8))


def test_a_plan_iterates_as_its_widths_and_pairs_with_its_sides():
    p = StepPlan((0.5, 1.0), (4, 8))
    assert list(p) == [0.5, 1.0] and len(p) == p.steps == 2 and p[0] == 0.5
    assert p.pairs() == ((0.5, 4), (1.0, 8))
    assert StepPlan((0.5, 1.0)).pairs() == ((0.5, None), (1.0, None))
    assert StepPlan((0.5, 1.0)).pairs(8) == ((0.5, 8), (1.0, 8)) and StepPlan((0.5,)).sides(8) == (8,)
    assert hash(StepPlan((1, 1))) == hash(StepPlan((1.0, 1.0)))  # widths are floats, so equal plans hash alike


def test_generate_takes_a_plan_or_a_schedule_and_gives_the_same_samples(random_supernet, tiny_model_config):
    model = random_supernet()
    cfg = SamplerConfig(kind="ddim", steps=4)
    sampler = make_sampler(NoiseSchedule(tiny_model_config.diffusion), cfg)
    seeds = [3, 4]
    ref = generate(model, sampler, list(WIDTHS), seeds)
    sched = Schedule.for_model(tiny_model_config, cfg, list(WIDTHS))
    assert torch.equal(generate(model, sampler, StepPlan(WIDTHS), seeds), ref)
    assert torch.equal(generate(model, sampler, sched, seeds), ref)
    sides = [4, 4, 8, 8]
    grown = generate(model, sampler, list(WIDTHS), seeds, resolutions=sides)
    assert torch.equal(generate(model, sampler, StepPlan(WIDTHS, tuple(sides)), seeds), grown)


def test_generate_refuses_a_schedule_of_another_sampler(random_supernet, tiny_model_config):
    sched = Schedule.for_model(tiny_model_config, SamplerConfig(kind="ddim", steps=4), list(WIDTHS))
    sampler = make_sampler(NoiseSchedule(tiny_model_config.diffusion), SamplerConfig(kind="ddpm", steps=4))
    with pytest.raises(DDSMError, match="schedule is for sampler"):
        generate(random_supernet(), sampler, sched, [0])
