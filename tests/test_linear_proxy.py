"""The first-order proxy: exact on single-step schedules, no denoiser call once its drifts are known."""

from __future__ import annotations

import math

import pytest

from ddsm.checkpoint import Supernet
from ddsm.metrics.evaluator import ProxyEvaluator
from ddsm.metrics.linear_proxy import LinearProxyEvaluator
from ddsm.samplers import SamplerConfig

STEPS = 4
SAMPLER = SamplerConfig(kind="ddim", steps=STEPS)


@pytest.fixture
def net(random_supernet, tiny_model_config) -> Supernet:
    return Supernet(model=random_supernet(), config=tiny_model_config, header={}, source="test")


def _count_calls(model, monkeypatch) -> list[float]:
    calls, forward = [], model.forward

    def logged(x, t):
        calls.append(model.width)
        return forward(x, t)

    monkeypatch.setattr(model, "forward", logged)
    return calls


def test_single_step_schedules_score_their_exact_proxy(net):
    single = [[1.0, 0.25, 1.0, 1.0], [1.0, 1.0, 1.0, 0.5], [0.75, 1.0, 1.0, 1.0]]
    lin = LinearProxyEvaluator(net, SAMPLER, num=6, seed=2, fuse=False).evaluate([[1.0] * STEPS, *single])
    exact = ProxyEvaluator(net, SAMPLER, num=6, seed=2, fuse=False).evaluate(single)
    assert lin["proxy_linear"][0] == 0.0  # the teacher
    assert lin["valid"].all() and (lin["proxy_linear"][1:] > 0).all()
    for k in range(len(single)):
        assert lin["proxy_linear"][k + 1] == pytest.approx(exact["proxy"][k], rel=1e-5)


def test_multi_step_schedules_sum_the_drifts_not_the_penalties(net):
    ev = LinearProxyEvaluator(net, SAMPLER, num=6, seed=2)
    a, b, both = [0.25, 1.0, 1.0, 1.0], [1.0, 0.25, 1.0, 1.0], [0.25, 0.25, 1.0, 1.0]
    df = ev.evaluate([a, b, both])
    da, db = ev.predicted_drift(a), ev.predicted_drift(b)
    assert df["proxy_linear"][2] == pytest.approx(float((da + db).pow(2).mean()), rel=1e-12)
    cross = float((2 * da * db).mean())
    assert abs(cross) > 1e-9  # the cross term is real, so a sum of scalar penalties would differ
    assert df["proxy_linear"][2] != pytest.approx(df["proxy_linear"][0] + df["proxy_linear"][1], rel=1e-6)
    # The prediction tracks the exact proxy of the two-step schedule (first order: close, not equal).
    exact = ProxyEvaluator(net, SAMPLER, num=6, seed=2).evaluate([both])["proxy"][0]
    assert df["proxy_linear"][2] == pytest.approx(exact, rel=0.5)


def test_once_the_drifts_are_known_candidates_cost_no_denoiser_call(net, monkeypatch):
    ev = LinearProxyEvaluator(net, SAMPLER, num=4, seed=0)
    calls = _count_calls(net.model, monkeypatch)
    assert ev.prepare([(w,) * STEPS for w in (0.25, 0.5, 0.75)]) == 3 * STEPS
    # Every (step, narrower width) probe shares the teacher's prefix: widths * sum(steps - i) + teacher.
    assert len(calls) <= 3 * sum(STEPS - i for i in range(STEPS)) + STEPS
    calls.clear()
    df = ev.evaluate([[0.25, 0.5, 0.75, 1.0], [0.5] * STEPS, [1.0, 0.75, 0.25, 0.25]])
    assert calls == [] and df["valid"].all()


def test_a_nan_drift_makes_its_candidates_invalid_only(net, monkeypatch):
    forward = net.model.forward

    def broken(x, t):
        out = forward(x, t)
        return out * float("nan") if net.model.width == 0.5 else out

    monkeypatch.setattr(net.model, "forward", broken)
    df = LinearProxyEvaluator(net, SAMPLER, num=4, seed=0).evaluate([[0.5] + [1.0] * 3, [0.25] * STEPS])
    assert not df["valid"][0] and math.isinf(df["proxy_linear"][0]) and "NaN" in df["error"][0]
    assert df["valid"][1] and math.isfinite(df["proxy_linear"][1])
