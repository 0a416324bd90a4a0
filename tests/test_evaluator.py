"""Evaluators: a batch of schedules in, a DataFrame row per candidate out; bad candidates never crash."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from ddsm.checkpoint import Supernet
from ddsm.errors import DDSMError
from ddsm.checkpoint import data_config_for
from ddsm.metrics.evaluator import Evaluator, FIDEvaluator, ProxyEvaluator, SamplingEvaluator
from ddsm.metrics.featurenet import train_featurenet
from ddsm.metrics.fid import FID
from ddsm.samplers import SamplerConfig, generate
from ddsm.schedule import Schedule

STEPS = 4
SAMPLER = SamplerConfig(kind="ddim", steps=STEPS)
CANDIDATES = [
    [1.0] * STEPS,
    [0.25] * STEPS,
    [1.0, 1.0, 0.5, 0.5],
    [0.5, 0.5, 1.0, 1.0],
    [1.0, 1.0, 1.0, 0.75],
]


@pytest.fixture
def net(random_supernet, tiny_model_config) -> Supernet:
    return Supernet(model=random_supernet(), config=tiny_model_config, header={}, source="test")


@pytest.fixture(scope="module")
def fid(tiny_data) -> FID:
    return FID.for_data(tiny_data, featurenet=train_featurenet(tiny_data, seed=0, epochs=1, num_features=8, channels=4))


def _nan_at(model, width: float, monkeypatch) -> None:
    forward = model.forward

    def broken(x, t):
        out = forward(x, t)
        return out * float("nan") if model.width == width else out

    monkeypatch.setattr(model, "forward", broken)


def test_proxy_rows_follow_the_input_order(net):
    ev = ProxyEvaluator(net, SAMPLER, num=6, seed=3)
    df = ev.evaluate(CANDIDATES)
    assert isinstance(df, pd.DataFrame) and len(df) == len(CANDIDATES)
    assert list(df.columns) == ["proxy", "proxy_pixel", "valid", "error"]
    assert df["valid"].all() and (df["error"] == "").all()
    assert df["proxy"][0] == 0.0  # the teacher's own schedule
    assert (df["proxy"][1:] > 0).all()
    # Each row is the proxy of that candidate alone (same seeds, same teacher).
    alone = ProxyEvaluator(net, SAMPLER, num=6, seed=3).evaluate([CANDIDATES[2]])
    assert alone["proxy"][0] == pytest.approx(df["proxy"][2], rel=1e-4)


def test_all_candidates_of_a_call_share_work(net):
    ev = ProxyEvaluator(net, SAMPLER, num=4)
    ev.evaluate(CANDIDATES)
    # The teacher rode along with the first call; candidates starting at width 1 share its steps.
    assert 0 < ev.stats.image_evals < ev.stats.naive_image_evals
    before = ev.stats.image_evals
    ev.evaluate([[1.0] * STEPS])  # the cached teacher: nothing to sample
    assert ev.stats.image_evals == before


def test_schedule_objects_are_checked_against_the_evaluator(net, tiny_model_config):
    ev = ProxyEvaluator(net, SAMPLER, num=3)
    df = ev.evaluate([Schedule.uniform(tiny_model_config, SAMPLER, 0.5), [0.5] * STEPS])
    assert df["proxy"][0] == df["proxy"][1] > 0
    other = Schedule.uniform(tiny_model_config, SamplerConfig(kind="ddpm", steps=STEPS), 0.5)
    with pytest.raises(DDSMError, match="this evaluator samples"):
        ev.evaluate([other])
    with pytest.raises(DDSMError, match="valid widths"):
        ev.evaluate([[0.3] * STEPS])


def test_fid_evaluator_scores_each_candidate(net, fid):
    ev = FIDEvaluator(net, SAMPLER, fid, num=16)
    df = ev.evaluate(CANDIDATES[:2])
    assert list(df.columns) == ["fid", "valid", "error"] and df["valid"].all()
    full = fid.fid(generate(net.model, ev.sampler, 1.0, ev.seeds))
    assert df["fid"][0] == pytest.approx(full, rel=1e-4)
    # Same candidates, same seeds: the same numbers.
    again = FIDEvaluator(net, SAMPLER, fid, num=16).evaluate(CANDIDATES[:2])
    assert (again["fid"] - df["fid"]).abs().max() < 1e-4


@pytest.mark.parametrize("kind", ["proxy", "fid"])
def test_a_candidate_with_nan_samples_is_scored_worst_not_raised(net, fid, monkeypatch, kind):
    _nan_at(net.model, 0.5, monkeypatch)
    ev = ProxyEvaluator(net, SAMPLER, num=4) if kind == "proxy" else FIDEvaluator(net, SAMPLER, fid, num=4)
    df = ev.evaluate(CANDIDATES)
    uses_half = [0.5 in c for c in CANDIDATES]
    assert list(df["valid"]) == [not u for u in uses_half]
    for metric in ev.metrics:
        assert all(math.isinf(v) and v > 0 for v in df.loc[~df["valid"], metric])
        assert all(math.isfinite(v) for v in df.loc[df["valid"], metric])
    assert all("NaN" in e for e in df.loc[~df["valid"], "error"])


def test_a_custom_metric_plugs_in_by_implementing_score(net):
    class Brightness(SamplingEvaluator):
        metrics = ("darkness",)

        def score(self, samples: torch.Tensor) -> dict[str, float]:
            return {"darkness": -float(samples.mean())}

    df = Brightness(net, SAMPLER, num=3).evaluate(CANDIDATES[:2])
    assert list(df.columns) == ["darkness", "valid", "error"] and df["valid"].all()


def test_a_metric_that_comes_out_nan_is_reported_not_raised(net):
    class Broken(SamplingEvaluator):
        metrics = ("m",)

        def score(self, samples):
            return {"m": math.nan}

    df = Broken(net, SAMPLER, num=2).evaluate([[1.0] * STEPS])
    assert not df["valid"][0] and df["m"][0] == math.inf and "not finite" in df["error"][0]


def test_the_evaluator_contract_is_abstract():
    with pytest.raises(TypeError):
        Evaluator()  # type: ignore[abstract]

    class Constant(Evaluator):
        metrics = ("c",)

        def evaluate(self, schedules):
            return pd.DataFrame({"c": [1.0] * len(schedules), "valid": True, "error": ""})

    assert len(Constant().evaluate([[1.0], [0.5]])) == 2


def test_no_candidates_give_an_empty_frame(net):
    df = ProxyEvaluator(net, SAMPLER, num=2).evaluate([])
    assert len(df) == 0 and list(df.columns) == ["proxy", "proxy_pixel", "valid", "error"]


def test_too_few_samples_is_refused(net):
    with pytest.raises(DDSMError, match="at least 2 samples"):
        ProxyEvaluator(net, SAMPLER, num=1)


def test_data_config_comes_from_the_run_folder(trained_run):
    assert data_config_for(trained_run).model_dump() == __import__("json").loads(
        (trained_run / "config.json").read_text())["data"]
