"""The search as a pymoo problem, and NSGA-II with integer operators used the way pymoo means them.

Objectives (both minimised): ``F = [quality, cost share]``, where the cost
share is the schedule's cost divided by the full-width schedule's cost (the
sum over sampling steps of the cost of one denoiser call at that step's
width). One inequality constraint carries the budget: ``G = share - budget
<= 0`` — ``cost - budget * full <= 0`` divided by ``full``, so the
constraint violation reads as a share of the full cost. A candidate the
evaluator could not score (``valid`` False) gets ``G += 1``: infeasible
whatever its cost, so NSGA-II's constraint-first tournament discards it.

Operators (pymoo 0.6.2): ``prob`` of a mutation is per *individual*,
``prob_var`` per *gene* — the DDSM authors set ``prob=0.001`` and reused it
per gene, so about one gene in a million mutated. Two integer mutations:

- ``reset`` (default): each selected gene takes one of the *other* widths,
  uniformly. A mutated gene always changes, so the per-gene rate of change is
  exactly ``prob * prob_var``.
- ``pm``: pymoo's polynomial mutation on the index, rounded. On a range of 4
  indices most perturbations round back to the same index (measured: with
  eta=20 only ~1.6 % of mutated genes change, ~33 % at eta=3), so the rate of
  change is ``prob * prob_var * P(change)``; kept for comparison.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.algorithms.moo.nsga2 import binary_tournament
from pymoo.core.duplicate import DefaultDuplicateElimination
from pymoo.core.mating import Mating
from pymoo.core.mutation import Mutation
from pymoo.core.population import Population
from pymoo.core.problem import Problem
from pymoo.core.repair import Repair
from pymoo.operators.crossover.sbx import SBX
from pymoo.operators.mutation.pm import PM
from pymoo.operators.repair.rounding import RoundingRepair
from pymoo.operators.sampling.rnd import IntegerRandomSampling
from pymoo.operators.selection.tournament import TournamentSelection

from ddsm.cost.model import SHARE_TOL, CostModel
from ddsm.errors import DDSMError
from ddsm.search.config import SearchConfig

#: quality given to candidates the evaluator could not score (finite, so crowding stays defined)
INVALID_QUALITY = 1e30
#: share of offspring FrontMating makes from the front (seeding.knapsack: front)
FRONT_LOCAL = 0.75


class WidthProblem(Problem):
    """Integer genome (width index per gene, guidance genes, then transition genes); F = [quality, cost share];
    G = [share - budget].

    The loop evaluates quality outside the problem (ask/tell through a runner)
    and hands F and G over with pymoo's ``StaticProblem``. Given a ``quality``
    callable (genomes -> values), the problem also works with ``pymoo.optimize.minimize``.
    """

    def __init__(self, space: SearchConfig, costs: CostModel | Mapping, *,
                 quality: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        self.space = space
        #: one call per (width, side) of the space; a mapping is read as {width: c} or {(width, side): c}
        self.costs = CostModel.coerce(costs, space.widths, space.resolutions)
        self.call_costs = self.costs.flat
        self.quality = quality
        lengths = np.asarray(space.segment_lengths, dtype=np.float64)
        at_size = np.asarray([row[-1] for row in self.costs.calls], dtype=np.float64)
        #: cost of gene g at value j at the image size: steps in the segment times the cost of one call
        self.gene_costs = lengths[:, None] * at_size[None, :]
        if space.guidance_genes:
            # one pass each: a width gene prices the conditional pass, a guidance gene the unconditional one (value 0:
            # none); width genes have no value past the full width, padded with cost 0 (seeding marks it unusable)
            one = self.gene_costs / 2.0
            self.gene_costs = np.vstack([np.hstack([one, np.zeros((len(lengths), 1))]),
                                         np.hstack([np.zeros((len(lengths), 1)), one])])
        if space.reuse is not None:
            if self.costs.cached is None:
                raise DDSMError("a search with reuse genes needs a cost model that prices cached calls "
                                "(CostModel.count_cached)")
            # the additive seeding model keeps reuse genes at 0 (full steps; seeding.sensitivity_table), which cost
            # nothing beyond their width gene: caching is not additive in width (the true cost is cost())
            self.gene_costs = np.vstack([self.gene_costs, np.zeros((len(lengths), self.gene_costs.shape[1]))])
        self.full_cost = self.costs.full_cost(space.sampler.calls)
        super().__init__(n_var=space.n_vars, n_obj=2, n_ieq_constr=1, xl=0, xu=np.asarray(space.upper_bounds),
                         vtype=int)

    # -- cost ------------------------------------------------------------------------

    def cost(self, X: np.ndarray) -> np.ndarray:
        """Absolute cost of each genome (rows of ``X``): the sum of its denoiser calls."""
        X = np.atleast_2d(np.asarray(X, dtype=np.int64))
        space = self.space
        w = np.repeat(X[:, : space.n_genes], space.segment_lengths, axis=1)  # width index per step
        u = None  # unconditional pass per step: width index, -1 none (None: at the step's width)
        if space.guidance_genes:
            u = np.repeat(X[:, space.n_genes : space.n_genes + space.n_guidance_genes], space.segment_lengths,
                          axis=1) - 1
        c = None  # cached steps (the first step never is)
        if space.reuse is not None:
            c = np.repeat(X[:, space.n_choice_genes - space.n_reuse_genes : space.n_choice_genes],
                          space.segment_lengths, axis=1).astype(bool)
            c[:, 0] = False
        if space.resolutions is None:
            return self.costs.total(w, None, u, c)
        steps = np.arange(space.sampler.calls)
        r = (X[:, space.n_choice_genes:, None] <= steps[None, None, :]).sum(axis=1)  # side index per step
        return self.costs.total(w, r, u, c)

    def share(self, X: np.ndarray) -> np.ndarray:
        """Cost of each genome as a share of the full-width schedule's cost."""
        return self.cost(X) / self.full_cost

    @property
    def cheapest_genome(self) -> tuple[int, ...]:
        """Every step at the narrowest width (no guidance, every step after the first cached), growing to the image
        size only at the last step."""
        space = self.space
        return space.canonical((0,) * (space.n_genes + space.n_guidance_genes) + (1,) * space.n_reuse_genes
                               + (space.sampler.calls - 1,) * space.n_resolution_genes)

    @property
    def cheapest_share(self) -> float:
        """Cost share of the cheapest schedule."""
        return float(self.share(np.asarray([self.cheapest_genome]))[0])

    def check_budget(self) -> None:
        """Refuse a budget below the cheapest schedule before anything is evaluated."""
        b, low = self.space.budget, self.cheapest_share
        if b < low - SHARE_TOL:
            what = " without guidance" if self.space.guidance_genes else ""
            raise DDSMError(f"budget {b:g} is below the cheapest schedule (every step at width {self.space.widths[0]:g}"
                            f"{what} costs {low:.4g} of the full-width schedule); use a budget in [{low:.4g}, 1]")

    # -- objectives ------------------------------------------------------------------

    def objectives(self, X: np.ndarray, quality: Sequence[float], valid: Sequence[bool]) -> tuple[np.ndarray, np.ndarray]:
        """F (n, 2) and G (n, 1) for genomes ``X`` with measured ``quality`` and ``valid`` flags."""
        share = self.share(X)
        q = np.asarray(quality, dtype=np.float64)
        ok = np.asarray(valid, dtype=bool) & np.isfinite(q)
        F = np.column_stack([np.where(ok, q, INVALID_QUALITY), share])
        G = (share - self.space.budget + np.where(ok, 0.0, 1.0))[:, None]
        return F, G

    def _evaluate(self, X, out, *args, **kwargs):
        if self.quality is None:
            raise DDSMError("WidthProblem has no quality function; evaluate through ddsm.search.run_search "
                            "(ask/tell) or pass quality=callable")
        q = np.asarray(self.quality(np.asarray(X, dtype=np.int64)), dtype=np.float64)
        out["F"], out["G"] = self.objectives(X, q, np.isfinite(q))


class CanonicalRepair(Repair):
    """Round every gene and sort the transition genes: each schedule keeps one genome."""

    def _do(self, problem, X, **kwargs):
        X = np.round(np.asarray(X, dtype=np.float64)).astype(np.int64)
        space = problem.space
        n = space.n_choice_genes
        if X.shape[1] > n:
            X[:, n:] = np.sort(X[:, n:], axis=1)
        if space.n_reuse_genes and space.segment_lengths[0] == 1:
            X[:, n - space.n_reuse_genes] = 0  # the first step is full whatever its reuse gene: one genome for it
        return X


class ResetMutation(Mutation):
    """Integer mutation that moves each selected gene to a different value, uniformly.

    ``prob`` (per individual) is applied by pymoo's ``Mutation.do``; this
    operator picks genes with ``prob_var`` each, so a mutated offspring
    changes ``prob_var * n_var`` genes on average and every pick is a change.
    """

    def _do(self, problem, X, *args, random_state=None, **kwargs):
        X = np.asarray(X).astype(np.int64)
        prob_var = self.get_prob_var(problem, size=len(X))
        pick = random_state.random(X.shape) < np.asarray(prob_var, dtype=float).reshape(-1, 1)
        xl = np.broadcast_to(np.asarray(problem.xl, dtype=np.int64), X.shape[1:])
        xu = np.broadcast_to(np.asarray(problem.xu, dtype=np.int64), X.shape[1:])
        n_values = (xu - xl + 1)[None, :].repeat(len(X), axis=0)
        pick &= n_values > 1
        # A draw among the n-1 other values: shift by 1..n-1 positions, wrap around.
        shift = 1 + np.floor(random_state.random(X.shape) * (n_values - 1)).astype(np.int64)
        moved = xl + (X - xl + shift) % n_values
        return np.where(pick, moved, X)


def make_mutation(space: SearchConfig) -> Mutation:
    """The configured integer mutation, with ``prob`` per individual and ``prob_var`` per gene."""
    m = space.mutation
    if m.operator == "reset":
        return ResetMutation(prob=m.prob, prob_var=m.prob_var)
    return PM(prob=m.prob, prob_var=m.prob_var, eta=m.eta, vtype=float, repair=RoundingRepair())


class FrontMating(Mating):
    """NSGA-II's mating, with a share ``local`` of the offspring made from the current front instead.

    A local offspring comes from the feasible rank-0 members sorted by cost,
    one of two moves with equal chance:

    - *between*: two cost-neighbours on the front, each gene where they differ
      taken from either at random (at least one from each), so the child's
      cost falls in the gap between them, where the front has no member yet;
    - *step*: one member with one width (or guidance) gene moved one value up or down (a
      single-gene move, the neighbourhood of a local improvement).

    Everything is drawn from pymoo's ``random_state`` and reads only the
    population, so a resumed search (population and generator restored) makes
    the same offspring. Without a feasible rank-0 member it is plain mating.
    """

    def __init__(self, selection, crossover, mutation, *, local: float = 0.5, **kwargs) -> None:
        super().__init__(selection, crossover, mutation, **kwargs)
        self.local = local

    def _do(self, problem, pop, n_offsprings, parents=None, random_state=None, **kwargs):
        rank = np.asarray([-1 if r is None else r for r in pop.get("rank")], dtype=np.int64)
        front = np.flatnonzero((rank == 0) & (np.asarray(pop.get("CV"), dtype=np.float64).reshape(-1) <= 0.0))
        n_local = int(round(self.local * n_offsprings)) if len(front) else 0
        off = []
        if n_local < n_offsprings:
            off.append(super()._do(problem, pop, n_offsprings - n_local, parents=parents,
                                   random_state=random_state, **kwargs))
        if n_local:
            F = np.asarray(pop.get("F"), dtype=np.float64)
            order = front[np.lexsort((F[front, 0], F[front, 1]))]
            X = np.asarray(pop.get("X"), dtype=np.int64)[order]
            off.append(Population.new(X=self._local(problem, X, n_local, random_state)))
        return Population.merge(*off) if len(off) > 1 else off[0]

    @staticmethod
    def _local(problem, X: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
        n_genes = problem.space.n_choice_genes  # width genes, and guidance genes (one more value: none)
        tops = problem.space.upper_bounds
        out = np.empty((n, X.shape[1]), dtype=np.int64)
        for k in range(n):
            if len(X) > 1 and rng.random() < 0.5:
                i = int(rng.integers(len(X) - 1))
                a, b = X[i], X[i + 1]
                diff = np.flatnonzero(a != b)
                pick = rng.random(len(diff)) < 0.5
                if len(diff) > 1 and (pick.all() or not pick.any()):
                    pick[int(rng.integers(len(diff)))] ^= True
                child = a.copy()
                child[diff[pick]] = b[diff[pick]]
            else:
                child = X[int(rng.integers(len(X)))].copy()
                g = int(rng.integers(n_genes))
                up = rng.random() < 0.5
                child[g] = child[g] + 1 if (up and child[g] < tops[g]) or child[g] == 0 else child[g] - 1
            out[k] = child
        return out


def build_algorithm(space: SearchConfig, *, sampling: np.ndarray | None = None) -> NSGA2:
    """NSGA-II over width indices: SBX + rounding, the configured mutation, duplicates eliminated.

    ``sampling`` is the first population (rows of width indices, e.g. from
    :func:`ddsm.search.seeding.initial_population`); None draws it at random.
    With ``seeding.knapsack: front``, three quarters of the offspring come from the front
    (:class:`FrontMating`).
    """
    kwargs = {}
    if space.seeding.knapsack == "front":
        kwargs["mating"] = FrontMating(
            TournamentSelection(func_comp=binary_tournament),
            SBX(prob=space.crossover.prob, eta=space.crossover.eta, vtype=float, repair=RoundingRepair()),
            make_mutation(space), local=FRONT_LOCAL, repair=CanonicalRepair(),
            eliminate_duplicates=DefaultDuplicateElimination(), n_max_iterations=100)
    return NSGA2(
        pop_size=space.population,
        sampling=IntegerRandomSampling() if sampling is None else np.asarray(sampling, dtype=np.int64),
        crossover=SBX(prob=space.crossover.prob, eta=space.crossover.eta, vtype=float, repair=RoundingRepair()),
        mutation=make_mutation(space),
        # Rounding again after mating keeps every genome an integer array whatever the operators did.
        repair=CanonicalRepair(),
        eliminate_duplicates=True,
        **kwargs,
    )
