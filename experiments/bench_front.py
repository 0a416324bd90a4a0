"""How close the search gets to the exact Pareto front, and what the search machinery costs per generation.

An additive quality oracle whose exact front is known (:class:`ddsm.search.synthetic.AdditiveEvaluator`): gene g at width index
j degrades quality by ``d[g, j]`` (drawn from a seed, decreasing in width,
``d[g, full] = 0``; later genes tend to matter more, as on real supernets),
and quality is ``sum_g d[g, x_g]`` (lower is better). One denoiser call at
width w costs the digits supernet's measured MAC share (about w^2; see
``experiments/results/flops.csv``). The exact front within budget comes from
the dynamic programme of :func:`ddsm.search.seeding.additive_front`, not thinned.

The real search loop (:func:`ddsm.search.run_search`, serial runner, the
oracle as its evaluator) runs with the quickstart's recipe
(``search_spaces/digits-proxy.yaml``: population 16 x 12 generations, budget 0.6,
two steps per gene) at 10, 20 and 50 genes, over several seeds, for each
variant:

- ``before``: the quickstart's settings (knapsack seeds at 6 budgets);
- ``after``: ``seeding.knapsack: front`` (seeds spread along the whole
  additive front, the front operators of :mod:`ddsm.search.problem`).

The hypervolume ratio is the found front's hypervolume over the exact
front's, against one reference point per problem, the one the search itself
uses (worst front quality + 10 %, cost share 1.1: ``hv``), and a strict one
that only counts the region within budget (worst quality + 10 %, the budget:
``hv_strict``). Every evaluation in the log counts (sensitivity probes too),
as in the search's own front.

Overhead: the loop at 100 and 1,000 genes with an instantaneous oracle:
seconds per generation without the evaluation path (NSGA-II's ask/tell and
operators, the front, its hypervolume, the state file), with it (plus
decoding, the runner, log rows), the seeding's seconds (1 + 3 x genes probes
through the evaluation path, the DP), and the DP's seconds alone.

    python experiments/bench_front.py                 # the table, about 5 minutes on 2 cores
    python experiments/bench_front.py --seeds 2 --genes 10

Writes ``<out>/front_quality.json`` and ``<out>/front_quality.csv`` atomically.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ddsm.io import write_atomic, write_json
from ddsm.search import SearchConfig, run_search
from ddsm.search.front import hypervolume, pareto_front
from ddsm.search.problem import WidthProblem
from ddsm.search.seeding import additive_front
from ddsm.search.synthetic import AdditiveEvaluatorFactory, additive_table

#: MAC share of one denoiser call of the digits supernet at each width (experiments/results/flops.csv)
MAC_SHARES = {0.25: 0.07073464911754011, 0.5: 0.26071942708676077, 0.75: 0.5704745440475807, 1.0: 1.0}
RUN_COLUMNS = ["variant", "genes", "seed", "hv", "hv_strict", "evaluations", "front", "exact_front",
               "cheapest_found", "seconds"]
VARIANTS = {"before": {}, "after": {"knapsack": "front"}}


def quickstart_space(n_genes: int, seed: int, variant: str, **kw) -> SearchConfig:
    """search_spaces/digits-proxy.yaml's recipe with ``n_genes`` genes of two steps each."""
    base = SearchConfig.load("digits-proxy").model_dump(mode="json")
    base.update(sampler={**base["sampler"], "steps": 2 * n_genes}, segments=n_genes, seed=seed,
                seeding={**base["seeding"], **VARIANTS[variant]}, cache={"format": "csv", "flush_seconds": 60})
    base.update(kw)
    return SearchConfig.model_validate(base)


def exact_front(space: SearchConfig, table: np.ndarray) -> list[dict]:
    problem = WidthProblem(space, MAC_SHARES)
    _, c, v = additive_front(table, problem.gene_costs / problem.full_cost, budget=space.budget, max_points=None)
    return [{"proxy": float(q), "share": float(s)} for s, q in zip(c, v)]


def hv_ratios(found: list[dict], exact: list[dict], budget: float) -> dict[str, float]:
    worst = max(r["proxy"] for r in exact)
    out = {}
    for name, ref in (("hv", (worst + 0.1 * abs(worst), 1.1)), ("hv_strict", (worst + 0.1 * abs(worst), budget))):
        out[name] = hypervolume(found, quality="proxy", ref=ref) / hypervolume(exact, quality="proxy", ref=ref)
    return out


def one_search(n_genes: int, seed: int, variant: str, work: Path) -> dict:
    space = quickstart_space(n_genes, seed, variant)
    table = additive_table(n_genes, len(space.widths), seed)
    exact = exact_front(space, table)
    t0 = time.perf_counter()
    res = run_search(space, evaluator_factory=AdditiveEvaluatorFactory(table, space.widths, space.segment_lengths),
                     costs=MAC_SHARES, out_dir=work / f"{variant}-{n_genes}-{seed}", progress=False, device="cpu")
    wall = time.perf_counter() - t0
    rows = res.evaluations.to_dict("records")
    feasible = [r for r in rows if r["valid"] and r["share"] <= space.budget + 1e-12]
    found = pareto_front(feasible, quality="proxy")
    return {"variant": variant, "genes": n_genes, "seed": seed, **hv_ratios(found, exact, space.budget),
            "evaluations": len(rows), "front": len(found), "exact_front": len(exact),
            "cheapest_found": min(r["share"] for r in found), "seconds": wall}


def overhead(n_genes: int, variant: str, work: Path, generations: int) -> dict:
    """Seconds per generation and for seeding with an instantaneous oracle (evaluation time left out)."""
    space = quickstart_space(n_genes, 0, variant, generations=generations)
    table = additive_table(n_genes, len(space.widths), 0)
    t0 = time.perf_counter()
    res = run_search(space, evaluator_factory=AdditiveEvaluatorFactory(table, space.widths, space.segment_lengths),
                     costs=MAC_SHARES, out_dir=work / f"overhead-{variant}-{n_genes}", progress=False, device="cpu")
    wall = time.perf_counter() - t0
    gen = [h["seconds"] for h in res.history]
    # evals_per_s is the oracle alone: its share of each generation is taken out
    oracle = [h["evaluated"] / h["evals_per_s"] if h["evals_per_s"] else 0.0 for h in res.history]
    per_gen = [g - o for g, o in zip(gen, oracle)]
    later = slice(1, None) if len(gen) > 1 else slice(None)  # generation 0 also sets the reference point
    out = {"variant": variant, "genes": n_genes, "generations": len(gen),
           "seconds_per_generation": float(np.mean(per_gen[later])),
           "with_evaluation_path": float(np.mean(gen[later])),
           "seeding_and_setup_seconds": wall - sum(gen)}
    if variant == "after":  # the DP alone, as the seeding runs it (thinned past FRONT_POINTS per prefix)
        problem = WidthProblem(space, MAC_SHARES)
        t0 = time.perf_counter()
        _, c, _ = additive_front(table, problem.gene_costs / problem.full_cost, budget=space.budget)
        out.update(dp_seconds=time.perf_counter() - t0, dp_front=len(c))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--genes", type=int, nargs="*", default=[10, 20, 50])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--overhead-genes", type=int, nargs="*", default=[100, 1000])
    ap.add_argument("--overhead-generations", type=int, default=4)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()

    runs, costs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for n in args.genes:
            for variant in args.variants:
                for seed in range(args.seeds):
                    r = one_search(n, seed, variant, work)
                    runs.append(r)
                    print(f"  {variant:6s} genes {n:3d} seed {seed}: hv {r['hv']:.4f} strict {r['hv_strict']:.4f} "
                          f"front {r['front']}/{r['exact_front']} ({r['seconds']:.1f} s)", flush=True)
        for n in args.overhead_genes:
            for variant in args.variants:
                costs.append(overhead(n, variant, work, args.overhead_generations))
                print(f"  overhead {variant:6s} genes {n}: {costs[-1]['seconds_per_generation']:.3f} s/gen, "
                      f"seeding {costs[-1]['seeding_and_setup_seconds']:.2f} s", flush=True)

    df = pd.DataFrame(runs, columns=RUN_COLUMNS)
    summary = (df.groupby(["genes", "variant"], sort=False)
               .agg(hv_mean=("hv", "mean"), hv_min=("hv", "min"), strict_mean=("hv_strict", "mean"),
                    strict_min=("hv_strict", "min"), front=("front", "mean"), exact_front=("exact_front", "mean"),
                    evaluations=("evaluations", "mean"))
               .reset_index())
    if runs:
        print("\nhypervolume ratio to the exact front (hv: ref share 1.1, as the search; strict: ref share = budget)")
        print(summary.to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    if costs:
        print("\nsearch overhead, instantaneous oracle")
        print(pd.DataFrame(costs).to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "front_quality.json", {
        "recipe": "search_spaces/digits-proxy.yaml (population 16 x 12 generations, budget 0.6, 2 steps per gene)",
        "costs": MAC_SHARES, "variants": VARIANTS, "summary": json.loads(summary.to_json(orient="records")),
        "runs": runs, "overhead": costs})
    write_atomic(args.out / "front_quality.csv", lambda p: df.to_csv(p, index=False))
    return 0


if __name__ == "__main__":
    from _script import run

    run(main)
