"""Schedule files: one width per step, checked against the supernet with every mismatch reported."""

from __future__ import annotations

import json

import pytest

from ddsm.config import DiffusionConfig, ModelConfig
from ddsm.errors import DDSMError
from ddsm.samplers import SamplerConfig
from ddsm.schedule import Schedule


@pytest.fixture
def sampler() -> SamplerConfig:
    return SamplerConfig(kind="ddim", steps=4, timestep_spacing="trailing")


def test_round_trip(tmp_path, tiny_model_config, sampler):
    s = Schedule.for_model(tiny_model_config, sampler, [1.0, 0.75, 0.5, 0.25],
                           predicted={"flops": 1.5e6}, provenance={"search": "test"})
    assert s.supernet == tiny_model_config.fingerprint()
    assert s.timesteps == (49.0, 37.0, 24.0, 11.0)  # trailing spacing of 50 into 4 (half to even), noisiest first
    path = tmp_path / "sched.json"
    s.save(path)
    back = Schedule.load(path, tiny_model_config)
    assert back == s
    assert json.loads(path.read_text())["kind"] == "ddsm.schedule"


def test_uniform(tiny_model_config, sampler):
    s = Schedule.uniform(tiny_model_config, sampler, 0.5)
    assert s.widths == (0.5,) * 4 and s.mismatches(tiny_model_config) == []


def test_for_model_refuses_a_bad_schedule(tiny_model_config, sampler):
    with pytest.raises(DDSMError, match=r"3 widths for 4 sampling steps"):
        Schedule.for_model(tiny_model_config, sampler, [1.0, 1.0, 1.0])


def test_every_mismatch_is_reported_at_once(tmp_path, tiny_model_config, sampler):
    other = ModelConfig(unet=tiny_model_config.unet, diffusion=DiffusionConfig(num_timesteps=60))
    s = Schedule(supernet=other.fingerprint(), sampler=sampler, widths=(1.0, 0.3, 0.5))
    path = tmp_path / "bad.json"
    s.save(path)
    with pytest.raises(DDSMError) as info:
        Schedule.load(path, tiny_model_config)
    msg = str(info.value)
    assert str(path) in msg
    assert f"made for supernet {other.fingerprint()}, not {tiny_model_config.fingerprint()}" in msg
    assert "widths [0.3] are not served (valid: [0.25, 0.5, 0.75, 1.0])" in msg
    assert "3 widths for 4 sampling steps" in msg
    assert "\n" not in msg
    # without a model to check against, the file itself is fine
    assert Schedule.load(path).widths == (1.0, 0.3, 0.5)


def test_timesteps_from_another_spacing_are_a_mismatch(tiny_model_config, sampler):
    s = Schedule(supernet=tiny_model_config.fingerprint(), sampler=sampler, widths=(1.0,) * 4,
                 timesteps=(45.0, 30.0, 15.0, 0.0))
    assert s.mismatches(tiny_model_config) == ["its timesteps differ from the sampler's spacing (trailing, 4 steps)"]


def test_more_steps_than_training_timesteps(tiny_model_config):
    s = Schedule(supernet=tiny_model_config.fingerprint(), sampler=SamplerConfig(steps=60), widths=(1.0,) * 60)
    assert s.mismatches(tiny_model_config) == ["60 steps exceed the 50 training timesteps"]


@pytest.mark.parametrize("text, needle", [
    ("{not json", "is not valid JSON"),
    ("[1, 2, 3]", "schedule file"),
    ('{"supernet": "x", "sampler": {}, "widths": [1.0], "colour": "red"}', "colour"),
    ('{"supernet": "x", "sampler": {"steps": 0}, "widths": [1.0]}', "sampler.steps"),
    ('{"schema_version": 7, "supernet": "x", "sampler": {}, "widths": [1.0]}', "schema_version 7"),
])
def test_malformed_files_are_one_line_errors(tmp_path, text, needle):
    path = tmp_path / "s.json"
    path.write_text(text)
    with pytest.raises(DDSMError) as info:
        Schedule.load(path)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(DDSMError, match="cannot read schedule file .*nope.json"):
        Schedule.load(tmp_path / "nope.json")
