"""The metric registry: built-ins, a user metric named in a search config, and refusals naming what is valid."""

from __future__ import annotations

import pytest
import yaml

from ddsm.errors import DDSMError
from ddsm.metrics import SamplingEvaluator, get_metric, metric_names, register_metric
from ddsm.metrics import registry
from ddsm.search import SearchConfig, prepare_search

from cli_helpers import TINY_SEARCH_SPACE, assert_bad_input, invoke, write_space


class MeanAbs(SamplingEvaluator):
    """Mean absolute pixel value of a candidate's samples (a user-defined metric)."""

    metrics = ("meanabs",)

    def score(self, samples):
        return {"meanabs": float(samples.abs().mean())}


@pytest.fixture
def clean_registry(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def test_the_built_in_metrics_and_what_they_say_about_themselves():
    assert metric_names()[:3] == ("proxy", "proxy_linear", "fid")
    assert get_metric("proxy").teacher_relative and get_metric("proxy_linear").teacher_relative
    assert not get_metric("fid").teacher_relative and get_metric("fid").needs_featurenet
    assert not get_metric("proxy_linear").resolutions and get_metric("fid").default_num == 1000


def test_an_unknown_metric_names_the_registered_ones():
    with pytest.raises(DDSMError, match="metric 'nope' is not registered; registered: proxy, proxy_linear, fid"):
        get_metric("nope")
    with pytest.raises(Exception, match="registered: proxy, proxy_linear, fid"):
        SearchConfig(objectives={"quality": "nope"})


def test_registering_twice_or_badly_is_refused(clean_registry):
    register_metric("meanabs", MeanAbs)
    with pytest.raises(DDSMError, match="already registered"):
        register_metric("meanabs", MeanAbs)
    register_metric("meanabs", MeanAbs, label="|x|", replace=True)
    assert get_metric("meanabs").label == "|x|"
    with pytest.raises(DDSMError, match="identifier"):
        register_metric("mean abs", MeanAbs)
    with pytest.raises(DDSMError, match="exactly one"):
        register_metric("other")


def test_a_user_metric_named_in_a_search_config_drives_a_search(clean_registry, trained_run, tmp_path):
    register_metric("meanabs", MeanAbs, label="mean |pixel|")
    path = write_space(tmp_path / "space.yaml", objectives={"quality": "meanabs", "cost": "flops"})
    space = SearchConfig.load(path)
    res = prepare_search(space, trained_run).run(tmp_path / "search", progress=False, device="cpu")
    assert "meanabs" in res.front.columns and len(res.front) > 0
    assert "meanabs" in res.evaluations.columns and res.evaluations["meanabs"].notna().all()


def test_the_cli_refuses_an_unregistered_metric_in_one_line(trained_run, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({**TINY_SEARCH_SPACE, "objectives": {"quality": "nope"}}))
    r = invoke("search", "--space", space, "--checkpoint", trained_run, "--out", tmp_path / "s", "--no-progress")
    assert_bad_input(r, "'nope' is not registered", "proxy, proxy_linear, fid")
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("name", ["kid", "teacher_fid"])
def test_feature_metrics_build_and_score_through_the_registry(trained_run, tmp_path, name):
    import math

    from ddsm.checkpoint import load_supernet
    from ddsm.data import load_digits
    from ddsm.metrics.featurenet import train_featurenet
    from ddsm.plan import StepPlan
    from ddsm.samplers import SamplerConfig

    fnet = tmp_path / "features.safetensors"
    train_featurenet(load_digits(size=8), seed=0, epochs=1, progress=False).save(fnet)
    ev = get_metric(name).build(load_supernet(trained_run), SamplerConfig(kind="ddim", steps=3), featurenet=str(fnet),
                                checkpoint=trained_run, num=8, seed=0, batch_size=8)
    df = ev.evaluate([StepPlan((0.25,) * 3), StepPlan((1.0,) * 3)])
    assert list(df.columns[:1]) == [name] and df["valid"].all() and df[name].map(math.isfinite).all()
    with pytest.raises(DDSMError, match="needs a feature net"):
        get_metric(name).build(load_supernet(trained_run), SamplerConfig(kind="ddim", steps=3), featurenet=None)
