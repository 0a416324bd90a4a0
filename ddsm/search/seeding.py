"""The first population: structured schedules worth having, then random ones, all within budget.

Groups, in order of priority:

1. **uniform**: every step at one width (the single-width baselines); with
   guidance genes, guided at that width at every step, then the same widths
   with guidance only after the first (noisiest) steps (**interval**);
2. **sensitivity**: measure how much quality degrades when one gene alone is
   narrowed to each width (all other genes at full width), fit the additive
   model ``q(genome) ~ q(full) + sum_g d[g, genome[g]]``, and solve the
   budgeted multiple-choice knapsack *exactly* (:func:`solve_mckp`) for a sweep
   of budgets between the cheapest schedule and the search budget; or, with
   ``seeding.knapsack: front``, compute the model's whole Pareto front within
   budget (:func:`additive_front`) and take as many members as the population
   has room for, spread evenly along it (:func:`spread_along`);
3. **two-segment** (T-Stitch): a narrow width for the first (noisiest)
   fraction of steps, the full width after;
4. **random**: a random genome narrowed, one random gene at a time, until it
   fits a random cost between the cheapest schedule and the budget, so random
   seeds spread along the cost axis instead of piling up at the budget.

Only schedules within budget are kept (an infeasible seed only wastes an
evaluation). Duplicates are dropped; when a group does not fit the population
a seeded subset of it is kept, and missing places are filled with more random
schedules, so the population depends on the seed and nothing else.

Knapsack method: dynamic programming over genes on integerised costs.
Costs are shares of the full-width schedule; with ``resolution`` R they
become ``ceil(share * R)`` units and the capacity ``floor(budget * R)``.
Rounding costs up keeps every solution within the real budget; the DP is
exact for the integerised problem (checked against brute force in the tests)
and can only miss schedules within ``genes / R`` of the budget (R = 10,000:
a DP table of genes x 10,001 floats, milliseconds).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from ddsm.cost.model import SHARE_TOL
from ddsm.search.problem import WidthProblem
from ddsm.search.config import SearchConfig

Genome = tuple[int, ...]
#: scores a batch of genomes with the quality proxy (lower is better)
Scorer = Callable[[list[Genome]], list[float]]


def uniform_seeds(space: SearchConfig) -> list[Genome]:
    """One genome per width: every gene at that width (with guidance genes: guided at that width, every step)."""
    return [space.guided((j,) * space.n_genes) for j in range(len(space.widths))]


def interval_seeds(space: SearchConfig) -> list[Genome]:
    """Guidance only in an interval (guidance genes only; Kynkäänniemi et al., 2024): every gene at one width,
    no guidance for the first (noisiest) fraction of steps, guided at that width after; each width x each of
    ``seeding.two_segment``'s fractions."""
    if not space.guidance_genes:
        return []
    return [space.guided((j,) * space.n_genes, (0,) * k + (j + 1,) * (space.n_genes - k))
            for j in range(len(space.widths)) for k in split_genes(space)]


#: DeepCache's uniform intervals: a full step every N steps, cached between
REUSE_INTERVALS = (2, 3, 4, 5)


def reuse_interval_seeds(space: SearchConfig) -> list[Genome]:
    """DeepCache's family (reuse genes only): every gene at one width, a full step every N steps (N in
    :data:`REUSE_INTERVALS`, counted in genes), cached between; each width x each N."""
    if space.reuse is None:
        return []
    return [space.guided((j,) * space.n_genes, reuse=tuple(int(g % n != 0) for g in range(space.n_genes)))
            for j in range(len(space.widths)) for n in REUSE_INTERVALS if n < space.n_genes]


def split_genes(space: SearchConfig) -> list[int]:
    """For each of ``seeding.two_segment``'s fractions, the gene that starts the second segment (strictly inside)."""
    out = []
    for f in space.seeding.two_segment:
        # The split is placed on a gene boundary: the gene holding step round(f * steps) starts the second part.
        k = int(np.searchsorted(np.cumsum(space.segment_lengths), round(f * space.sampler.calls), side="right"))
        if 0 < k < space.n_genes:
            out.append(k)
    return out


def two_segment_seeds(space: SearchConfig) -> list[Genome]:
    """Narrow width for the first fraction of steps, full width after (each fraction x narrow width)."""
    out = []
    for k in split_genes(space):
        for j in range(space.full_index):
            out.append(space.guided((j,) * k + (space.full_index,) * (space.n_genes - k)))
    return out


def random_seed(problem: WidthProblem, rng: np.random.Generator) -> Genome:
    """A random genome narrowed one random gene at a time until it fits a random budget share.

    Transition genes (resolution spaces) are drawn first, sorted, and kept; guidance genes narrow like width
    genes (down to no guidance).
    """
    space = problem.space
    n = space.n_genes + space.n_guidance_genes  # the genes that narrow (reuse genes are drawn and kept)
    if space.guidance_genes:
        g = rng.integers(0, np.asarray(space.upper_bounds[:n]) + 1, size=n)
    else:  # the draw as it always was (same seeds, same genomes)
        g = rng.integers(0, space.full_index + 1, size=space.n_genes)
    if space.reuse is not None:
        g = np.concatenate([g, (rng.random(space.n_reuse_genes) < 0.5).astype(np.int64)])
        if space.segment_lengths[0] == 1:
            g[n] = 0  # the first step is full whatever its gene: the canonical genome
    t = np.sort(rng.integers(0, space.sampler.steps, size=space.n_resolution_genes))
    g = np.concatenate([g, t])
    target = rng.uniform(problem.cheapest_share, space.budget)
    while problem.share(g)[0] > target + SHARE_TOL:
        wide = np.flatnonzero(g[:n] > 0)
        if not len(wide):
            break
        g[wide[rng.integers(len(wide))]] -= 1
    return tuple(int(x) for x in g)


def sensitivity_probes(space: SearchConfig) -> list[Genome]:
    """The full-width genome, then each gene alone at each narrower width (gene-major order).

    With guidance genes the full-width genome is guided at full width at every step, and each guidance gene
    alone then takes each other value (no guidance, each narrower width) after the width genes' probes.
    """
    top = space.upper_bounds[: space.n_choice_genes]
    base = space.full_choices
    probes = [base]
    for g in range(space.n_genes + space.n_guidance_genes):  # reuse genes are not probed (see sensitivity_table)
        for j in range(top[g]):
            probes.append(base[:g] + (j,) + base[g + 1:])
    return probes


def sensitivity_table(space: SearchConfig, scores: Sequence[float]) -> np.ndarray:
    """Degradation ``d[g, j] = q(gene g at value j, others full) - q(full)``; ``d[g, full] = 0``.

    ``scores`` are the qualities of :func:`sensitivity_probes`, in that order.
    A probe that could not be scored (non-finite) counts as infinitely bad; so
    does a width gene's value past the full width (the padding of a space with
    guidance genes, whose genes have one value more).
    """
    s = np.asarray(scores, dtype=np.float64)
    top = space.upper_bounds[: space.n_choice_genes]
    d = np.full((space.n_choice_genes, max(top) + 1), np.inf)
    at = 1
    for g, t in enumerate(top[: space.n_genes + space.n_guidance_genes]):
        d[g, :t] = s[at : at + t] - s[0]
        d[g, t] = 0.0
        at += t
    d[~np.isfinite(d)] = np.inf
    # reuse genes: full steps only in the additive model (caching is not additive in width: its seeds are the
    # DeepCache intervals, random draws and evolution)
    d[space.n_genes + space.n_guidance_genes:, 0] = 0.0
    return d


def solve_mckp(values: np.ndarray, costs: np.ndarray, capacity: int) -> tuple[Genome, float] | None:
    """Exact multiple-choice knapsack: one choice per group, integer costs, total cost <= capacity.

    Minimises ``sum_g values[g, x_g]`` subject to ``sum_g costs[g, x_g] <= capacity``
    by dynamic programming over groups (O(groups * choices * capacity)). Ties
    go to the cheaper total, then to lower choice indices. Returns the
    choices and their total value, or None if nothing fits.
    """
    values = np.asarray(values, dtype=np.float64)
    costs = np.asarray(costs, dtype=np.int64)
    if capacity < 0:
        return None
    n, m = values.shape
    if (costs < 0).any():
        raise ValueError("knapsack costs must be non-negative integers")
    # best[c]: least value of the groups so far with total cost exactly c.
    best = np.full(capacity + 1, np.inf)
    best[0] = 0.0
    choice = np.full((n, capacity + 1), -1, dtype=np.int64)
    for g in range(n):
        nxt = np.full(capacity + 1, np.inf)
        for j in range(m):
            c = int(costs[g, j])
            if c > capacity or not np.isfinite(values[g, j]):
                continue
            cand = best[: capacity + 1 - c] + values[g, j]
            better = cand < nxt[c:]
            nxt[c:][better] = cand[better]
            choice[g, c:][better] = j
        best = nxt
    if not np.isfinite(best).any():
        return None
    c = int(np.argmin(best))  # first minimum: the cheapest of equally good totals
    total = float(best[c])
    picks = []
    for g in range(n - 1, -1, -1):
        j = int(choice[g, c])
        picks.append(j)
        c -= int(costs[g, j])
    return tuple(reversed(picks)), total


def integerise(shares: np.ndarray, budget: float, *, resolution: int = 10_000) -> tuple[np.ndarray, int]:
    """Integer knapsack costs and capacity for cost ``shares``; rounding up keeps solutions within budget."""
    shares = np.asarray(shares, dtype=np.float64)
    units = np.ceil(shares * resolution - 1e-9).astype(np.int64)
    return units, int(math.floor(budget * resolution + 1e-9))


def knapsack_seeds(problem: WidthProblem, degradation: np.ndarray, *, resolution: int = 10_000) -> list[Genome]:
    """Additive-model optima for ``knapsack_budgets`` budgets spread over (cheapest, budget]."""
    space = problem.space
    shares = problem.gene_costs / problem.full_cost
    low, high = problem.cheapest_share, space.budget
    out = []
    for b in np.linspace(low, high, space.seeding.knapsack_budgets + 1)[1:]:
        units, cap = integerise(shares, float(b), resolution=resolution)
        sol = solve_mckp(degradation, units, cap)
        if sol is not None:
            out.append(sol[0])
    return out


#: most points an additive front keeps per gene prefix before it is thinned to cost buckets (see additive_front)
FRONT_POINTS = 4096


def additive_front(values: np.ndarray, costs: np.ndarray, *, budget: float = math.inf,
                   max_points: int | None = FRONT_POINTS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The Pareto front of an additive model: every ``(sum_g costs[g, x_g], sum_g values[g, x_g])`` not dominated.

    Dynamic programming over genes on exact (float) costs: the front of the
    first g+1 genes is built from the front of the first g, each point
    extended by every choice of gene g, and pruned to its non-dominated points
    (sorted by cost, a point survives if its value is strictly below every
    cheaper-or-equal one; exact ties keep the first: lower parent, then lower
    choice). A partial solution that cannot end within ``budget`` even with
    the cheapest remaining choices is dropped. Non-finite values are unusable
    choices. The result is exact whenever no prefix front holds more than
    ``max_points`` points (None: never thin). Past that, a prefix front is
    thinned to ``max_points`` equal cost buckets over its cost range, keeping
    the best (last) point of each, so the front stays within one bucket width
    of exact in cost; memory is ``genes x max_points`` back-pointers (1,000 genes:
    about 20 MB at the default 4,096).

    Returns ``(genomes (k, genes), costs (k,), values (k,))``, cheapest first,
    values strictly decreasing; empty arrays if nothing fits.
    """
    values = np.asarray(values, dtype=np.float64)
    costs = np.asarray(costs, dtype=np.float64)
    n, m = values.shape
    usable = np.isfinite(values)
    cheapest = np.where(usable, costs, np.inf).min(axis=1)
    rest = np.concatenate([np.cumsum(cheapest[::-1])[::-1], [0.0]])  # cheapest cost of genes g.. onwards
    tol = SHARE_TOL * max(1.0, abs(budget) if math.isfinite(budget) else 1.0)
    cur_c, cur_v = np.zeros(1), np.zeros(1)
    parents: list[np.ndarray] = []
    choices: list[np.ndarray] = []
    for g in range(n):
        c = (cur_c[:, None] + costs[g][None, :]).ravel()
        v = (cur_v[:, None] + values[g][None, :]).ravel()
        ok = np.tile(usable[g], len(cur_c)) & (c + rest[g + 1] <= budget + tol)
        idx = np.flatnonzero(ok)
        c, v = c[idx], v[idx]
        order = np.lexsort((idx, v, c))  # by cost, then value, then (parent, choice)
        c, v, idx = c[order], v[order], idx[order]
        keep = np.ones(len(v), dtype=bool)
        if len(v) > 1:
            keep[1:] = v[1:] < np.minimum.accumulate(v)[:-1]
        c, v, idx = c[keep], v[keep], idx[keep]
        if max_points is not None and len(c) > max_points:
            span = c[-1] - c[0]
            bucket = np.minimum(((c - c[0]) / span * max_points).astype(np.int64), max_points - 1)
            last = np.ones(len(c), dtype=bool)
            last[:-1] = bucket[1:] != bucket[:-1]  # best (last) point of each bucket ...
            last[0] = True  # ... and the cheapest point
            c, v, idx = c[last], v[last], idx[last]
        parents.append((idx // m).astype(np.int32))
        choices.append((idx % m).astype(np.int8 if m < 128 else np.int32))
        cur_c, cur_v = c, v
        if not len(c):
            return np.zeros((0, n), dtype=np.int64), np.zeros(0), np.zeros(0)
    genomes = np.zeros((len(cur_c), n), dtype=np.int64)
    at = np.arange(len(cur_c))
    for g in range(n - 1, -1, -1):
        genomes[:, g] = choices[g][at]
        at = parents[g][at]
    return genomes, cur_c, cur_v


def spread_along(costs: np.ndarray, values: np.ndarray, k: int) -> list[int]:
    """Indices of ``k`` front points spread evenly along it: both ends, then farthest-point in normalised (cost, value).

    Deterministic (ties go to the cheaper point). Each objective is scaled by
    the front's range, so the steep cheap end, where a small cost buys a large
    quality gain, gets its share of points rather than a few spread by cost alone.
    """
    n = len(costs)
    if k >= n:
        return list(range(n))
    if k <= 0:
        return []
    def scaled(x):
        x = np.asarray(x, dtype=np.float64)
        span = x.max() - x.min()
        return (x - x.min()) / span if span > 0 else np.zeros_like(x)
    P = np.column_stack([scaled(costs), scaled(values)])
    chosen = [0] + ([n - 1] if k > 1 else [])
    dist = np.min(np.linalg.norm(P[:, None, :] - P[None, chosen, :], axis=2), axis=1)
    while len(chosen) < k:
        i = int(np.argmax(dist))
        chosen.append(i)
        dist = np.minimum(dist, np.linalg.norm(P - P[i], axis=1))
    return sorted(chosen)


def front_seeds(problem: WidthProblem, degradation: np.ndarray, k: int) -> list[Genome]:
    """``k`` schedules spread along the additive model's whole front within budget (cheapest first)."""
    shares = problem.gene_costs / problem.full_cost
    genomes, c, v = additive_front(degradation, shares, budget=problem.space.budget)
    return [tuple(int(x) for x in genomes[i]) for i in spread_along(c, v, k)]


def _subset(items: list[Genome], k: int, rng: np.random.Generator) -> list[Genome]:
    if k >= len(items):
        return items
    keep = np.sort(rng.choice(len(items), size=k, replace=False))
    return [items[i] for i in keep]


def initial_population(problem: WidthProblem, *, score: Scorer | None = None,
                       transitions: Sequence[Sequence[int]] = ()) -> np.ndarray:
    """The first population (rows of genes), deterministic given the space's seed.

    ``score`` evaluates genomes with the quality metric; it is called once,
    on the sensitivity probes (at the image size), when ``seeding.sensitivity``
    is on. In a resolution space, the uniform and knapsack width seeds are
    tried at the image size and with every transition seed (``transitions``,
    e.g. the power-spectrum rule's, then ``seeding.transitions``).
    """
    space = problem.space
    cfg = space.seeding
    rng = np.random.default_rng([space.seed, 0x5EED])  # apart from NSGA-II's own generator
    full_res = (0,) * space.n_resolution_genes
    blocks = [full_res] + [tuple(sorted(int(x) for x in t)) for t in (*transitions, *cfg.transitions)]
    blocks = list(dict.fromkeys(blocks)) if space.n_resolution_genes else [()]
    groups: list[list[Genome] | Callable[[int], list[Genome]]] = []
    if cfg.uniform:
        groups.append([g + b for g in uniform_seeds(space) for b in blocks])
        if space.guidance_genes:
            groups.append(interval_seeds(space))
        if space.reuse is not None:
            groups.append(reuse_interval_seeds(space))
    if cfg.sensitivity and score is not None:
        probes = sensitivity_probes(space)
        table = sensitivity_table(space, score([p + full_res for p in probes]))
        if cfg.knapsack == "front":
            # As many members of the model's front as there is room for, spread along it; every
            # transition block shares the room (the width front is spread once per block).
            def front_group(room: int, table=table) -> list[Genome]:
                k = max(1, -(-room // len(blocks)))
                return [g + b for g in front_seeds(problem, table, k) for b in blocks]

            groups.append(front_group)
        else:
            groups.append([g + b for g in knapsack_seeds(problem, table) for b in blocks])
    groups.append([g + full_res for g in two_segment_seeds(space)])
    groups.append([random_seed(problem, rng) for _ in range(cfg.n_random)])

    chosen: list[Genome] = []
    seen: set[Genome] = set()
    for group in groups:
        if callable(group):
            make, room = group, space.population - len(chosen)
            group = make(room) if room > 0 else []
            extra = sum(1 for g in group if g in seen)  # the front holds the cheapest uniform schedule, say
            if extra:
                group = make(room + extra)
        fresh = []
        for g in group:
            if g not in seen and problem.share(g)[0] <= space.budget + SHARE_TOL:
                seen.add(g)
                fresh.append(g)
        room = space.population - len(chosen)
        if room <= 0:
            break
        chosen.extend(_subset(fresh, room, rng))
        seen.update(chosen)
    # Fill up with random schedules; a tiny space may not have enough distinct ones within budget.
    attempts = 0
    while len(chosen) < space.population and attempts < 100 * space.population:
        g = random_seed(problem, rng)
        attempts += 1
        if g not in seen:
            seen.add(g)
            chosen.append(g)
    return np.asarray(chosen, dtype=np.int64).reshape(-1, space.n_vars)
