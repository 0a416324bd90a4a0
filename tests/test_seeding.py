"""Seeding: exact knapsack, budget-respecting seeds, structured groups present, determinism."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ddsm.search.problem import WidthProblem
from ddsm.search.seeding import (
    initial_population, integerise, knapsack_seeds, random_seed, sensitivity_probes, sensitivity_table,
    solve_mckp, two_segment_seeds, uniform_seeds,
)
from ddsm.search.config import SearchConfig
from ddsm.search.synthetic import SyntheticEvaluator

COSTS = {0.25: 1 / 16, 0.5: 1 / 4, 0.75: 9 / 16, 1.0: 1.0}


def brute_force(values, costs, capacity):
    best = None
    for x in itertools.product(*[range(values.shape[1])] * values.shape[0]):
        c = sum(costs[g, j] for g, j in enumerate(x))
        v = sum(values[g, j] for g, j in enumerate(x))
        if c <= capacity and (best is None or v < best[1] - 1e-12):
            best = (x, v)
    return best


@pytest.mark.parametrize("seed", range(6))
def test_knapsack_is_exact_against_brute_force(seed):
    rng = np.random.default_rng(seed)
    n, m = 6, 3
    values = rng.normal(size=(n, m))
    costs = rng.integers(0, 10, size=(n, m))
    for capacity in (costs.min(1).sum(), int(costs.mean() * n), costs.max(1).sum()):
        got = solve_mckp(values, costs, int(capacity))
        want = brute_force(values, costs, capacity)
        assert got is not None and want is not None
        assert got[1] == pytest.approx(want[1], abs=1e-12)
        assert sum(costs[g, j] for g, j in enumerate(got[0])) <= capacity
        assert sum(values[g, j] for g, j in enumerate(got[0])) == pytest.approx(got[1])


def test_knapsack_infeasible_and_infinite_choices():
    costs = np.array([[2, 5], [3, 4]])
    assert solve_mckp(np.zeros((2, 2)), costs, 4) is None
    values = np.array([[np.inf, 0.0], [1.0, 0.0]])  # choice 0 of gene 0 is unusable
    assert solve_mckp(values, costs, 9) == ((1, 1), 0.0)
    assert solve_mckp(values, costs, 8) == ((1, 0), 1.0)


def test_integerised_costs_never_exceed_the_real_budget():
    p = WidthProblem(SearchConfig(sampler={"steps": 23}, segments=7, population=4), COSTS)
    shares = p.gene_costs / p.full_cost
    for b in (0.1, 0.33, 0.5, 0.77):
        units, cap = integerise(shares, b)
        x, _ = solve_mckp(np.random.default_rng(0).normal(size=shares.shape), units, cap)
        assert p.share(x)[0] <= b + 1e-12


def space(**kw):
    base = dict(sampler={"steps": 20}, segments=5, population=12, budget=0.5,
                seeding={"n_random": 3, "knapsack_budgets": 4})
    base.update(kw)
    return SearchConfig(**base)


def scorer(sp):
    ev = SyntheticEvaluator()
    calls = []

    def score(genomes):
        calls.append(list(genomes))
        return [ev.quality(sp.genes_to_widths(g)) for g in genomes]

    return score, calls


def test_sensitivity_table_is_per_gene_degradation():
    sp = space()
    probes = sensitivity_probes(sp)
    assert len(probes) == 1 + 5 * 3 and probes[0] == (3,) * 5 and probes[1] == (0, 3, 3, 3, 3)
    score, _ = scorer(sp)
    d = sensitivity_table(sp, score(probes))
    assert d.shape == (5, 4) and (d[:, 3] == 0).all() and (d[:, :3] > 0).all()
    assert (np.diff(d[:, 0]) > 0).all()  # the synthetic metric punishes late (clean) steps more


def test_knapsack_seeds_respect_their_budgets_and_beat_uniform():
    sp = space()
    p = WidthProblem(sp, COSTS)
    score, _ = scorer(sp)
    seeds = knapsack_seeds(p, sensitivity_table(sp, score(sensitivity_probes(sp))))
    assert len(seeds) == 4
    budgets = np.linspace(p.cheapest_share, 0.5, 5)[1:]
    ev = SyntheticEvaluator()
    for g, b in zip(seeds, budgets):
        assert p.share(g)[0] <= b + 1e-12
    # At the budget, the knapsack seed beats every uniform schedule that fits.
    q = lambda g: ev.quality(sp.genes_to_widths(g))  # noqa: E731
    fits = [g for g in uniform_seeds(sp) if p.share(g)[0] <= 0.5]
    assert q(seeds[-1]) < min(q(g) for g in fits)


def test_two_segment_seeds_are_narrow_then_full():
    sp = space(seeding={"two_segment": [0.25, 0.5]})
    seeds = two_segment_seeds(sp)
    assert (0, 3, 3, 3, 3) in seeds and (2, 2, 3, 3, 3) in seeds and len(seeds) == 6
    for g in seeds:
        k = g.index(3)
        assert len(set(g[:k])) == 1 and set(g[k:]) == {3}


def test_random_seeds_fit_the_budget():
    p = WidthProblem(space(), COSTS)
    rng = np.random.default_rng(0)
    shares = [p.share(random_seed(p, rng))[0] for _ in range(200)]
    assert max(shares) <= 0.5 + 1e-12 and min(shares) < 0.25  # spread along the cost axis


def test_initial_population_is_feasible_unique_sized_and_structured():
    sp = space()
    p = WidthProblem(sp, COSTS)
    score, calls = scorer(sp)
    X = initial_population(p, score=score)
    assert X.shape == (12, 5) and X.dtype == np.int64
    assert len({tuple(x) for x in X}) == 12
    assert (p.share(X) <= 0.5 + 1e-12).all()
    rows = {tuple(int(v) for v in x) for x in X}
    assert {(0,) * 5, (1,) * 5} <= rows  # the uniform schedules within budget
    assert (0, 0, 0, 3, 3) in rows  # the one two-segment schedule within budget (narrow for 3/5 of the steps)
    assert len(calls) == 1 and len(calls[0]) == 16  # one batch of sensitivity probes
    again = initial_population(p, score=scorer(sp)[0])
    np.testing.assert_array_equal(X, again)  # deterministic from the seed
    other = initial_population(WidthProblem(space(seed=1, population=12), COSTS), score=scorer(sp)[0])
    assert not np.array_equal(X, other)  # random seeds follow the seed


def test_initial_population_trims_and_fills():
    sp = space(population=4, seeding={"n_random": 0, "sensitivity": False})
    X = initial_population(WidthProblem(sp, COSTS))
    assert len(X) == 4 and {(0,) * 5, (1,) * 5} <= {tuple(x) for x in X}
    sp = space(population=30, seeding={"n_random": 0, "sensitivity": False, "two_segment": []})
    X = initial_population(WidthProblem(sp, COSTS))
    assert len(X) == 30 and len({tuple(x) for x in X}) == 30
