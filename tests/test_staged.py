"""Two-stage evaluation: the screen never promotes an invalid candidate, only judged ones reach the front,
the same search resumes to the same log, bad settings are refused in one line, and search seeds stay out of verdicts."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from ddsm.errors import DDSMError
from ddsm.metrics import SamplingEvaluator, register_metric
from ddsm.metrics import registry
from ddsm.metrics.verdict import VerdictSettings, check_disjoint
from ddsm.search import SearchConfig, prepare_search
from ddsm.search.staged import promote

from cli_helpers import TINY_SEARCH_SPACE, assert_bad_input, invoke, write_space

STAGED = {"objectives": {"quality": "pixel_kid", "cost": "flops"},
          "evaluator": {"num_samples": 32, "seed": 0, "batch_size": 64},
          "screen": {"metric": "proxy", "num_samples": 4, "seed": 0, "bins": 2, "promote": 1},
          "population": 6, "generations": 3, "segments": 3, "sampler": {"kind": "ddim", "steps": 3},
          "seeding": {"uniform": True, "two_segment": [0.5], "n_random": 1, "sensitivity": False}}


def test_promote_takes_the_best_per_cost_bin_and_never_an_invalid_or_over_budget_genome():
    shares = [0.10, 0.12, 0.14, 0.40, 0.45, 0.50, 0.55, 0.90]
    screen = [0.30, 0.10, 0.20, 0.05, math.nan, 0.01, 0.02, 0.0]
    valid = [True, True, True, True, True, False, True, True]
    keys = [str(i) for i in range(8)]
    picked = promote(shares, screen, valid, keys, low=0.0, budget=0.6, bins=2, per_bin=2)
    # bin [0, 0.3): 1 and 2 are the best two; bin [0.3, 0.6]: 6 and 3 (4 is NaN, 5 invalid); 7 is over budget
    assert picked == [1, 2, 3, 6]
    # the choice does not depend on the order candidates come in
    order = [7, 3, 0, 6, 2, 5, 1, 4]
    again = promote([shares[i] for i in order], [screen[i] for i in order], [valid[i] for i in order],
                    [keys[i] for i in order], low=0.0, budget=0.6, bins=2, per_bin=2)
    assert sorted(order[i] for i in again) == picked
    # ties are broken by the genome's text
    assert promote([0.1, 0.1], [1.0, 1.0], [True, True], ["b", "a"], low=0.0, budget=1.0, bins=1, per_bin=1) == [1]


class FlakyScreen(SamplingEvaluator):
    """A screen that cannot score candidates whose first step is narrower than full width (NaN samples, say)."""

    metrics = ("flaky",)

    def evaluate(self, schedules):
        plans = [self.plan(s) for s in schedules]
        rows = [{"flaky": 0.0, "valid": True, "error": ""} if p[0] == 1.0 else self.invalid_row("NaN samples")
                for p in plans]
        return pd.DataFrame(rows, columns=["flaky", "valid", "error"])

    def score(self, samples):  # pragma: no cover - evaluate is overridden
        raise AssertionError


@pytest.fixture
def flaky_screen(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    register_metric("flaky", FlakyScreen)


def _staged_search(tmp_path, trained_run, name="search", **changes):
    space = SearchConfig.load(write_space(tmp_path / f"{name}.yaml", **{**STAGED, **changes}))
    return space, prepare_search(space, trained_run).run(tmp_path / name, progress=False, device="cpu")


def test_a_staged_search_judges_only_promoted_candidates_and_only_they_reach_the_front(trained_run, tmp_path,
                                                                                      flaky_screen):
    space, res = _staged_search(tmp_path, trained_run,
                                screen={**STAGED["screen"], "metric": "flaky", "promote": 2, "bins": 3})
    log = res.evaluations
    offspring = log[log.generation >= 1]
    assert len(offspring) > 0 and res.stages["screen"]["candidates"] == len(offspring)
    # every offspring the screen could not score was never promoted, and carries the screen's reason
    unscorable = offspring[offspring.widths.str.split(",").str[0].astype(float) < 1.0]
    assert len(unscorable) > 0 and not unscorable.promoted.any()
    assert (unscorable.error == "NaN samples").all() and not unscorable.valid.any()
    promoted = offspring[offspring.promoted]
    assert promoted.screen.notna().all() and promoted.pixel_kid.map(math.isfinite).all()
    assert res.stages["judge"]["candidates"] == len(promoted) + (log.generation <= 0).sum()
    # the seeding and the first population are judged in full; the front holds judged schedules only
    assert log[log.generation <= 0].promoted.all() and log[log.generation <= 0].screen.isna().all()
    judged = set(log[log.promoted].genome)
    assert set(res.front.genome) <= judged


def test_a_staged_search_resumed_with_more_generations_equals_one_run_straight(trained_run, tmp_path):
    _, straight = _staged_search(tmp_path, trained_run, "straight")
    _, _ = _staged_search(tmp_path, trained_run, "resumed", generations=2)
    space = SearchConfig.load(write_space(tmp_path / "resumed.yaml", **STAGED))
    resumed = prepare_search(space, trained_run).run(tmp_path / "resumed", progress=False, device="cpu", resume=True)
    a, b = straight.evaluations, resumed.evaluations
    cols = ["generation", "genome", "pixel_kid", "screen", "promoted", "valid", "share"]
    pd.testing.assert_frame_equal(a[cols].reset_index(drop=True), b[cols].reset_index(drop=True))
    assert (a.generation >= 1).any() and not a[a.generation >= 1].promoted.all()  # the screen did screen some out


@pytest.mark.parametrize("screen, needles", [
    ({"metric": "precision"}, ["'precision' is higher-is-better", "proxy"]),
    ({"metric": "pixel_kid"}, ["screen.metric 'pixel_kid' is the search's own quality"]),
    ({"promote": 0}, ["promote", "greater than or equal to 1"]),
    ({"bins": 4, "promote": 2}, ["screen promotes up to 4 bins x 2 = 8 genomes", "6 offspring"]),
])
def test_bad_screen_settings_are_refused_in_one_line_and_nothing_is_written(trained_run, tmp_path, screen, needles):
    path = write_space(tmp_path / "space.yaml", **{**STAGED, "screen": {**STAGED["screen"], **screen}})
    r = invoke("search", "--space", path, "--checkpoint", trained_run, "--out", tmp_path / "s", "--no-progress")
    assert_bad_input(r, *needles)
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("changes, needles", [
    ({"objectives": {"quality": "confidence"}}, ["'confidence' is higher-is-better"]),
    ({"evaluator": {"num_samples": 8}}, ["num_samples 8 is below the 32 samples pixel_kid needs"]),
])
def test_a_verdict_only_objective_or_too_few_samples_is_refused(trained_run, tmp_path, changes, needles):
    path = write_space(tmp_path / "space.yaml", **{**STAGED, **changes})
    r = invoke("search", "--space", path, "--checkpoint", trained_run, "--out", tmp_path / "s", "--no-progress")
    assert_bad_input(r, *needles)
    assert not (tmp_path / "s").exists()


def test_search_seeds_include_the_screens_and_a_verdict_on_any_of_them_is_refused():
    space = SearchConfig.model_validate({**TINY_SEARCH_SPACE, **STAGED,
                                         "screen": {**STAGED["screen"], "seed": 5000, "num_samples": 64}})
    assert space.search_seeds == (range(0, 32), range(5000, 5064))
    check_disjoint(VerdictSettings(num=100, seed=10_000).seeds, space.search_seeds)  # disjoint: fine
    with pytest.raises(DDSMError, match="overlap the search's seeds 5000..5063"):
        check_disjoint(VerdictSettings(num=100, seed=5050).seeds, space.search_seeds)
    for shipped in ("digits", "digits-proxy"):
        s = SearchConfig.load(shipped)
        check_disjoint(VerdictSettings().seeds, s.search_seeds)  # the shipped spaces keep clear of verdict seeds


def test_a_share_on_a_bin_edge_goes_to_the_upper_bin_despite_rounding():
    # (0.3 - 0.1) / 0.1 is 1.9999999999999998 in floating point
    assert promote([0.2, 0.3], [0.0, 1.0], [True, True], ["a", "b"], low=0.1, budget=0.5, bins=4, per_bin=1) == [0, 1]


def test_family_members_missing_from_a_staged_log_are_scored_by_the_judge(trained_run, tmp_path):
    from ddsm.report.analysis import evaluate_missing
    from ddsm.search import load_search

    _staged_search(tmp_path, trained_run, seeding={"uniform": False, "two_segment": [], "n_random": 2,
                                                   "sensitivity": False})
    run = evaluate_missing(load_search(tmp_path / "search"), str(trained_run), device="cpu")
    assert run.extra is not None and len(run.extra) > 0
    assert run.extra["valid"].all() and run.extra["pixel_kid"].map(math.isfinite).all()
