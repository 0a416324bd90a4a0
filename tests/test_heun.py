"""Heun (a second-order sampler): two model calls per step but the last, a width per *call* through search, export,
verdict, sample and diffusers' pipelines (its equality with diffusers' HeunDiscreteScheduler, prefix sharing, the
trajectory cache and the refusal of resolution schedules are tests/test_dpm.py's, run for every solver)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from cli_helpers import assert_bad_input, invoke, search_and_export
from ddsm.data import load_digits
from ddsm.diffusion import NoiseSchedule
from ddsm.errors import DDSMError
from ddsm.metrics.featurenet import train_featurenet
from ddsm.samplers import SamplerConfig, generate, make_sampler
from ddsm.schedule import Schedule

SEEDS = [0, 1, 2, 5]


def test_n_steps_call_the_model_2n_minus_1_times_at_repeated_timesteps(tiny_model_config):
    config = SamplerConfig(kind="heun", steps=4, clip_sample=False)
    sampler = make_sampler(NoiseSchedule(tiny_model_config.diffusion), config)
    grid = sampler.step_timesteps.tolist()
    assert len(grid) == 4 and config.calls == 7
    # the first timestep once, every later one twice (the corrector ends a step where the next one starts)
    assert sampler.timesteps.tolist() == [grid[0], grid[1], grid[1], grid[2], grid[2], grid[3], grid[3]]
    assert SamplerConfig(kind="heun", steps=1).calls == 1 and SamplerConfig(kind="dpm++", steps=4).calls == 4


def test_each_call_gets_its_own_width(random_supernet, tiny_model_config):
    """Changing only a corrector call's width changes the samples: the width is looked up per call, not per step."""
    model = random_supernet()
    sampler = make_sampler(NoiseSchedule(tiny_model_config.diffusion), SamplerConfig(kind="heun", steps=3,
                                                                                     clip_sample=False))
    base = generate(model, sampler, [1.0] * 5, SEEDS)
    corrector = generate(model, sampler, [1.0, 0.25, 1.0, 1.0, 1.0], SEEDS)  # call 1: step 0's corrector
    assert (base - corrector).abs().max() > 1e-4
    with pytest.raises(DDSMError, match=r"width schedule has 3 entries but the sampler takes 5 steps \(model calls: "
                                        r"one width per call\)"):
        generate(model, sampler, [1.0] * 3, SEEDS)


def test_a_schedule_of_one_width_per_step_is_refused_naming_the_calls(tiny_model_config):
    config = SamplerConfig(kind="heun", steps=3)
    with pytest.raises(DDSMError, match=r"3 widths for 3 heun steps, which call the model 5 times \(twice in every "
                                        r"step but the last\); give one width per call"):
        Schedule.for_model(tiny_model_config, config, [1.0] * 3)
    assert len(Schedule.uniform(tiny_model_config, config, 1.0).widths) == 5


def test_a_search_exports_judges_and_samples_with_a_width_per_call(trained_run, tmp_path):
    files = search_and_export(trained_run, tmp_path, {"kind": "heun", "steps": 3, "clip_sample": False})
    doc = json.loads(files[0].read_text())
    assert doc["sampler"]["kind"] == "heun" and len(doc["widths"]) == 5 and len(doc["timesteps"]) == 5
    # shares count calls: a schedule's MACs over five full-width calls
    front = pd.read_csv(tmp_path / "export" / "front.csv")
    assert ((front["share"] > 0) & (front["share"] <= 1.0 + 1e-9)).all()
    fnet = tmp_path / "features.safetensors"
    train_featurenet(load_digits(size=8), seed=0, epochs=1, progress=False).save(fnet)
    r = invoke("verdict", "--checkpoint", trained_run, "--schedule", files[0], "--width", "0.5", "--sampler", "heun",
               "--steps", "3", "--num", "50", "--featurenet", fnet, "--search-seeds", "0:2", "--no-progress",
               "--out", tmp_path / "verdict.csv")
    assert r.exit_code == 0, r.output
    assert len(pd.read_csv(tmp_path / "verdict.csv")) > 0
    r = invoke("sample", "--checkpoint", trained_run, "--schedule", files[0], "--num", 2, "--out", tmp_path / "s",
               "--no-progress")
    assert r.exit_code == 0, r.output
    # one width per step in a file is one line, exit 2
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**doc, "widths": doc["widths"][:3], "timesteps": doc["timesteps"][:3]}))
    assert_bad_input(invoke("sample", "--checkpoint", trained_run, "--schedule", bad, "--num", 2, "--out",
                            tmp_path / "s2"), "3 widths for 3 heun steps, which call the model 5 times")
    assert not (tmp_path / "s2").exists()
