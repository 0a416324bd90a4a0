"""The DDSM claim, measured on held-out seeds: is a searched schedule better than the uniform and two-segment ones?

On a supernet and a finished search (the quickstart's by default, searched
with the teacher proxy on seeds 0..63), it scores with the verdict
(:mod:`ddsm.metrics.verdict`: FID, teacher-relative FID, KID, precision,
recall, classifier confidence and the proxy, each with its bootstrap
interval and the paired interval of its difference from full width) on
``--num`` samples from seed ``--seed`` on, disjoint from the search's:

- every front member, every uniform width and every two-segment (T-Stitch)
  schedule of the search space (at least 40 schedules across the cost range);
- at each ``--budget``: the front's best member within it (by the search's
  own proxy, as ``ddsm export`` picks it) against the widest uniform width
  and the two-segment schedule with the best search proxy within the same
  budget, with paired intervals of every metric;
- the largest FLOP saving whose every metric is not significantly worse than
  full width;
- Spearman's rank correlation of the search's proxy (its logged value, seeds
  0..63) and of the linear proxy against each verdict metric;
- what each metric costs per candidate, as a ratio to FID at the same n.

    python experiments/bench_evidence.py --search runs/quickstart/search --num 500

Prints tables; writes ``<out>/evidence.json``, ``<out>/evidence_schedules.csv``
and ``<out>/evidence_budgets.csv``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from _script import run
from ddsm import load_digits, load_supernet
from ddsm.io import write_atomic, write_json
from ddsm.metrics.distribution import Candidate
from ddsm.metrics.featurenet import FeatureNet
from ddsm.metrics.fid import reference_images
from ddsm.metrics.linear_proxy import LinearProxyEvaluator
from ddsm.metrics.verdict import FULL, METRICS, Verdict, VerdictSettings
from ddsm.metrics.verdict import worse_than as worse
from ddsm.search import load_search, prepare_search, SearchConfig
from ddsm.search.log import genome_key
from ddsm.search.problem import WidthProblem
from ddsm.search.seeding import two_segment_seeds, uniform_seeds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="digits")
    ap.add_argument("--search", default=None, help="a finished search folder [default: run the digits search into --work]")
    ap.add_argument("--work", default="runs/bench-evidence")
    ap.add_argument("--featurenet", default="digits")
    ap.add_argument("--num", type=int, default=500, help="verdict samples per schedule")
    ap.add_argument("--seed", type=int, default=10_000, help="first verdict seed")
    ap.add_argument("--teacher-num", type=int, default=1000)
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--budget", type=float, action="append", default=None)
    ap.add_argument("--out", default="experiments/results")
    args = ap.parse_args(argv)
    budgets = args.budget or [0.3, 0.5, 0.6]
    out = Path(args.out)
    net = load_supernet(args.checkpoint)
    if args.search is None:
        folder = Path(args.work) / "search"
        space = SearchConfig.load("digits-proxy")
        if not (folder / "state.json").exists():
            prepare_search(space, args.checkpoint, net=net).run(folder, resume=(folder / "search.json").exists())
        args.search = str(folder)
    sr = load_search(args.search)
    space = sr.space
    problem = WidthProblem(space, sr.costs)
    ev = space.evaluator
    search_seeds = space.search_seeds  # the evaluator's seeds, and a screen's

    # The schedules: the front, the uniform family, the two-segment family (genome -> name), once each.
    named: dict[str, tuple[int, ...]] = {}
    for i, g in enumerate(sr.front["genome"], start=1):
        named[f"front {i:02d}"] = tuple(g)
    for g in uniform_seeds(space):
        named.setdefault(f"uniform {space.widths[g[0]]:g}", tuple(g))
    for g in two_segment_seeds(space):
        narrow = sum(1 for x in g if x != space.full_index)
        named.setdefault(f"two-segment {space.widths[g[0]]:g} x {sum(space.segment_lengths[:narrow])}", tuple(g))
    named = {k: g for k, g in named.items() if g != (space.full_index,) * space.n_genes}
    plans = {k: space.decode(g) for k, g in named.items()}
    shares = {k: float(problem.share(np.asarray([g]))[0]) for k, g in named.items()}
    log = sr.log.set_index("genome") if sr.log is not None else pd.DataFrame()
    search_q = {k: float(log.loc[genome_key(g), sr.quality]) if genome_key(g) in log.index else np.nan
                for k, g in named.items()}

    data = load_digits(size=net.config.unet.image_size, channels=net.config.unet.in_channels)
    fn = FeatureNet.load(args.featurenet, data)
    settings = VerdictSettings(num=args.num, seed=args.seed, teacher_num=args.teacher_num, draws=args.draws)
    t0 = time.perf_counter()
    verdict = Verdict(net, space.sampler, fn, reference_images(data, "all"), settings, search_seeds=search_seeds,
                      progress=True)
    result = verdict.score(plans, extra={k: {"share": shares[k]} for k in plans})
    verdict_seconds = time.perf_counter() - t0

    # Linear proxy on the search's own seeds, for the rank comparison.
    lin = LinearProxyEvaluator(net, space.sampler, num=ev.num_samples, seed=ev.seed, fuse=False)
    t1 = time.perf_counter()
    lin_q = dict(zip(plans, lin.evaluate(list(plans.values()))["proxy_linear"]))
    lin_seconds = time.perf_counter() - t1

    rows = []
    for name in plans:
        r = {"schedule": name, "share": shares[name], "search_proxy": search_q[name], "proxy_linear": lin_q[name]}
        for m in result.metrics:
            iv, d = result.interval(name, m), result.compare(name, FULL, m)
            r.update({m: iv.value, f"{m}_low": iv.low, f"{m}_high": iv.high, f"{m}_vs_full_low": d.low,
                      f"{m}_vs_full_high": d.high, f"{m}_worse": worse(m, d.low, d.high)})
        rows.append(r)
    sched = pd.DataFrame(rows).sort_values("share").reset_index(drop=True)

    # Rank agreement of the cheap fitnesses with each verdict metric (sign: higher-is-better metrics negated).
    rho = {}
    for fit in ("search_proxy", "proxy_linear"):
        ok = sched[fit].notna()
        for m in result.metrics:
            sign = -1.0 if METRICS[m][1] else 1.0
            rho[f"{fit} vs {m}"] = float(spearmanr(sched.loc[ok, fit], sign * sched.loc[ok, m]).statistic)

    # No significant loss: the cheapest schedule no metric calls worse than full width.
    safe = sched[~sched[[f"{m}_worse" for m in result.metrics]].any(axis=1)]
    no_loss = {"schedule": None, "flop_saving": 0.0} if safe.empty else \
        {"schedule": safe.iloc[0]["schedule"], "flop_saving": 1.0 - float(safe.iloc[0]["share"])}
    no_loss_per_metric = {}
    for m in result.metrics:
        ok = sched[~sched[f"{m}_worse"]]
        no_loss_per_metric[m] = None if ok.empty else {"schedule": ok.iloc[0]["schedule"],
                                                       "flop_saving": 1.0 - float(ok.iloc[0]["share"])}

    # The front against each family at each budget, paired.
    brows = []
    for b in budgets:
        def best(prefix: str, key: str) -> str | None:
            cand = sched[sched["schedule"].str.startswith(prefix) & (sched["share"] <= b + 1e-12)]
            cand = cand[cand[key].notna()]
            return None if cand.empty else str(cand.sort_values([key, "share"]).iloc[0]["schedule"])

        front = best("front", "search_proxy")
        uni = sched[sched["schedule"].str.startswith("uniform") & (sched["share"] <= b + 1e-12)]
        uniform = None if uni.empty else str(uni.sort_values("share").iloc[-1]["schedule"])
        for fam, other in (("uniform", uniform), ("two-segment", best("two-segment", "search_proxy"))):
            if front is None or other is None:
                brows.append({"budget": b, "front": front, "family": fam, "other": other})
                continue
            for m in result.metrics:
                d = result.compare(front, other, m)
                better = (d.high < 0) if not METRICS[m][1] else (d.low > 0)
                brows.append({"budget": b, "front": front, "front_share": shares[front], "family": fam,
                              "other": other, "other_share": shares[other], "metric": m, "front_minus_other": d.value,
                              "low": d.low, "high": d.high, "front_better": better,
                              "front_worse": (d.low > 0) if not METRICS[m][1] else (d.high < 0)})
    budget_table = pd.DataFrame(brows)

    # Cost per candidate of each statistic from features (sampling is shared by all), relative to FID.
    feats = verdict._features(verdict._sample([plans[next(iter(plans))]], settings.seeds)[0])[0]
    cand = Candidate(feats, verdict.real)
    ones = np.ones(settings.num)
    cost = {}
    for m, stat in (("fid", cand.fid()), ("kid", cand.kid()), ("precision", cand.precision()), ("recall", cand.recall())):
        t = time.perf_counter()
        for _ in range(5):
            stat(ones)
        cost[m] = (time.perf_counter() - t) / 5

    pd.set_option("display.width", 200)
    cols = ["schedule", "share", "search_proxy", "proxy_linear", *result.metrics]
    print(sched[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print("\nSpearman rho (cheap fitness vs verdict metric, both oriented lower-is-better):")
    for k, v in rho.items():
        print(f"  {k:<32} {v:+.3f}")
    print(f"\nlargest FLOP saving with no metric significantly worse than full width: {no_loss}")
    if not budget_table.empty and "metric" in budget_table:
        print(budget_table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    summary = {"checkpoint": args.checkpoint, "search": str(Path(args.search).resolve()),
               "search_seeds": [[r.start, r.stop - 1] for r in search_seeds],
               "verdict": {"num": settings.num, "seeds": [settings.seed, settings.seed + settings.num - 1],
                           "teacher_num": settings.teacher_num, "teacher_seeds": [settings.teacher_seed,
                                                                                 settings.teacher_seed + settings.teacher_num - 1],
                           "draws": settings.draws, "level": settings.level, "interval": "basic bootstrap, paired"},
               "schedules": len(plans), "verdict_seconds": verdict_seconds, "linear_proxy_seconds": lin_seconds,
               "spearman": rho, "no_significant_loss": no_loss, "no_significant_loss_per_metric": no_loss_per_metric,
               "statistic_seconds_per_candidate": cost,
               "statistic_cost_ratio_to_fid": {m: v / cost["fid"] for m, v in cost.items()}}
    write_json(out / "evidence.json", summary)
    write_atomic(out / "evidence_schedules.csv", lambda p: sched.to_csv(p, index=False))
    write_atomic(out / "evidence_budgets.csv", lambda p: budget_table.to_csv(p, index=False))
    print(f"-> {out / 'evidence.json'}, evidence_schedules.csv, evidence_budgets.csv")
    return 0


if __name__ == "__main__":
    run(main)
