"""The pymoo problem and NSGA-II operators: costs, constraint, mutation rate, duplicates."""

from __future__ import annotations

import numpy as np
import pytest
from pymoo.core.population import Population
from pymoo.operators.mutation.pm import PM
from pymoo.operators.repair.rounding import RoundingRepair

from ddsm.errors import DDSMError
from ddsm.search.problem import INVALID_QUALITY, ResetMutation, WidthProblem, build_algorithm
from ddsm.search.config import SearchConfig

COSTS = {0.25: 1 / 16, 0.5: 1 / 4, 0.75: 9 / 16, 1.0: 1.0}


def make(**kw) -> WidthProblem:
    kw.setdefault("population", 8)
    return WidthProblem(SearchConfig(**kw), COSTS)


def test_cost_share_and_constraint():
    p = make(sampler={"steps": 10}, segments=2, budget=0.5)
    X = np.array([[3, 3], [0, 0], [0, 3], [1, 2]])
    np.testing.assert_allclose(p.share(X), [1.0, 1 / 16, (1 / 16 + 1) / 2, (1 / 4 + 9 / 16) / 2])
    np.testing.assert_allclose(p.cost(X), p.share(X) * 10)
    F, G = p.objectives(X, [0.0, 3.0, 1.0, float("nan")], [True, True, True, True])
    np.testing.assert_allclose(G[:, 0], p.share(X) - 0.5 + [0, 0, 0, 1])  # NaN quality: infeasible
    assert F[3, 0] == INVALID_QUALITY and F[1, 0] == 3.0
    _, G2 = p.objectives(X[:1], [0.0], [False])
    assert G2[0, 0] == pytest.approx(1.5)


def test_unequal_segments_weigh_costs_by_length():
    p = make(sampler={"steps": 5}, segments=2)  # segments of 3 and 2 steps
    assert p.share(np.array([[0, 3]]))[0] == pytest.approx((3 / 16 + 2) / 5)


def test_budget_below_cheapest_schedule_is_refused():
    with pytest.raises(DDSMError) as e:
        make(budget=0.05).check_budget()
    assert "budget 0.05" in str(e.value) and "0.0625" in str(e.value) and "\n" not in str(e.value)
    make(budget=0.0625).check_budget()


def test_missing_cost_is_named():
    with pytest.raises(DDSMError, match="no cost for width 0.75"):
        WidthProblem(SearchConfig(population=4), {0.25: 1, 0.5: 2, 1.0: 4})


def _changed(mutation, n=800, n_var=120, seed=0):
    problem = make(sampler={"steps": n_var})
    X = np.random.default_rng(seed).integers(0, 4, size=(n, n_var))
    off = mutation(problem, Population.new(X=X.copy()), random_state=np.random.default_rng(seed + 1))
    Y = np.asarray(off.get("X"))
    assert Y.dtype.kind == "i" and Y.min() >= 0 and Y.max() <= 3
    return (Y != X).mean()


@pytest.mark.parametrize("p", [0.05, 0.2, 0.5])
def test_reset_mutation_changes_genes_at_the_configured_rate(p):
    # prob=1: every offspring mutated; prob_var=p: each gene changes with probability exactly p.
    rate = _changed(ResetMutation(prob=1.0, prob_var=p))
    assert rate == pytest.approx(p, abs=4 * np.sqrt(p * (1 - p) / 96_000) + 1e-3)
    assert rate > 10 * p / 120  # not the per-individual rate spread over genes (p / n_var)


def test_reset_mutation_prob_is_per_individual():
    rate = _changed(ResetMutation(prob=0.5, prob_var=0.2))
    assert rate == pytest.approx(0.1, abs=0.015)


def test_reset_mutation_reaches_every_other_value():
    problem = make(sampler={"steps": 1}, segments=None, population=4)
    X = np.zeros((1500, 1), dtype=int)
    off = ResetMutation(prob=1.0, prob_var=1.0)(problem, Population.new(X=X), random_state=np.random.default_rng(0))
    counts = np.bincount(np.asarray(off.get("X"))[:, 0], minlength=4)
    assert counts[0] == 0 and all(abs(c / 1500 - 1 / 3) < 0.05 for c in counts[1:])


@pytest.mark.parametrize("eta, rel", [(3.0, 0.1), (20.0, 0.2)])
def test_pm_mutation_rate_is_prob_var_times_chance_of_a_change(eta, rel):
    # Polynomial mutation + rounding: a mutated gene often rounds back. Measure P(change | mutated)
    # with prob_var=1, then check prob_var=p changes p * P(change) of the genes, not p/n_var or p*0.001.
    make_pm = lambda pv: PM(prob=1.0, prob_var=pv, eta=eta, vtype=float, repair=RoundingRepair())  # noqa: E731
    p_change = _changed(make_pm(1.0), seed=2)
    rate = _changed(make_pm(0.3), seed=4)
    assert rate == pytest.approx(0.3 * p_change, rel=rel)
    assert p_change > 0.005


def test_nsga2_operators_are_integer_and_eliminate_duplicates():
    space = SearchConfig(sampler={"steps": 6}, segments=3, population=12, mutation={"prob_var": 0.5})
    problem = WidthProblem(space, COSTS)
    algo = build_algorithm(space)
    from pymoo.core.termination import NoTermination

    algo.setup(problem, seed=1, termination=NoTermination())
    for _ in range(5):
        pop = algo.ask()
        X = np.asarray(pop.get("X"))
        assert X.dtype.kind == "i" and X.min() >= 0 and X.max() <= 3
        assert len({tuple(x) for x in X}) == len(X)  # no duplicate within the offspring
        if algo.is_initialized:  # and none equal to a parent
            parents = {tuple(x) for x in np.asarray(algo.pop.get("X"))}
            assert not parents & {tuple(x) for x in X}
        F = np.column_stack([np.asarray(X, float).sum(1), problem.share(X)])
        G = problem.share(X)[:, None] - space.budget
        from pymoo.core.evaluator import Evaluator
        from pymoo.problems.static import StaticProblem

        Evaluator().eval(StaticProblem(problem, F=F, G=G), pop)
        algo.tell(infills=pop)
    assert algo.mating.crossover.prob.value == 0.9 and algo.mating.mutation.prob_var.value == 0.5


def test_mutation_settings_reach_the_operator():
    space = SearchConfig(population=4, mutation={"operator": "pm", "prob": 0.7, "prob_var": 0.3, "eta": 5})
    m = build_algorithm(space).mating.mutation
    assert isinstance(m, PM) and m.prob.value == 0.7 and m.prob_var.value == 0.3 and m.eta.value == 5
