"""One search setup for the CLI, sweeps and the quickstart: every refusal in one line, before anything is written."""

from __future__ import annotations

import pytest

from ddsm.errors import DDSMError
from ddsm.search import SearchConfig, prepare_search
from ddsm.search.setup import SupernetEvaluatorFactory

from cli_helpers import TINY_SEARCH_SPACE, assert_bad_input, invoke, write_space


def space(**changes) -> SearchConfig:
    return SearchConfig.model_validate({**TINY_SEARCH_SPACE, **changes})


@pytest.mark.parametrize("changes, needle", [
    ({"sampler": {"kind": "ddim", "steps": 60}, "segments": 2}, "exceeds the supernet's 50 training timesteps"),
    ({"widths": [0.3, 1.0]}, "0.3 not served"),
    ({"budget": 0.01}, "below the cheapest schedule"),
    ({"objectives": {"quality": "fid", "cost": "flops"}}, "needs a feature net file"),
    ({"objectives": {"quality": "proxy", "cost": "latency"}}, "needs a measured cost table"),
    ({"resolutions": [4, 8], "seeding": {**TINY_SEARCH_SPACE["seeding"], "spectrum_rule": False}}, None),
], ids=["steps", "width", "budget", "fid", "latency", "resolutions-ok"])
def test_prepare_search_refuses_what_cannot_run(trained_run, changes, needle):
    if needle is None:
        prepared = prepare_search(space(**changes), trained_run)
        assert prepared.warnings and "training-free" in prepared.warnings[0]  # trained at 8 only
        return
    with pytest.raises(DDSMError, match=needle):
        prepare_search(space(**changes), trained_run)


def test_the_prepared_pieces(trained_run):
    prepared = prepare_search(space(), trained_run)
    assert isinstance(prepared.factory, SupernetEvaluatorFactory) and prepared.factory.quality == "proxy"
    assert prepared.costs.widths == (0.25, 0.5, 0.75, 1.0) and prepared.costs.unit == "macs"
    assert prepared.transition_seeds == [] and prepared.warnings == []


@pytest.mark.parametrize("command", ["search", "sweep", "quickstart"])
def test_every_caller_refuses_more_steps_than_training_timesteps(trained_run, tmp_path, command):
    path = write_space(tmp_path / "space.yaml", sampler={"kind": "ddim", "steps": 60})
    out = tmp_path / "out"
    extra = {"search": ["--checkpoint", trained_run, "--no-progress"],
             "sweep": ["--checkpoint", trained_run, "--budget", "0.6"],
             "quickstart": ["--checkpoint", trained_run, "--runner", "serial", "--no-progress"]}[command]
    r = invoke(command, "--space", path, "--out", out, *extra)
    assert_bad_input(r, "sampler.steps 60 exceeds")
    assert not any(p.is_file() for p in out.rglob("*")) if out.exists() else True
