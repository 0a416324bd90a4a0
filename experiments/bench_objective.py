"""Which search objective gives the front the verdict prefers: the proxy, or a distribution metric on pixels?

Parts (``--parts``, comma-separated; each writes its own section of
``<out>/objective.json``):

- ``validate``: does pixel KID (``pixel_kid``) see what it must? Every
  verdict metric, paired against full width on ``--num`` held-out seeds, for
  the uniform widths, schedules that differ only in the width of their last
  steps, and one probe per gene (that gene's steps at the narrowest width,
  the rest at full width: the sensitivity per step under each metric).
- ``search``: the quickstart's search settings (population 16 x 12
  generations, budget 0.6, 10 genes, the Ray runner with 2 actors) with
  three objectives: ``proxy`` (``search_spaces/digits-proxy.yaml``, the
  quickstart's space before this benchmark), ``pixel_kid`` (the same with
  every candidate judged by pixel KID on 256 seeds) and ``staged``
  (``search_spaces/digits.yaml``: the proxy on 64 seeds screens offspring,
  the best 2 per cost bin are judged by pixel KID on 256). Wall
  time, candidates and worker seconds per candidate of each stage.
- ``verdict``: every front member of each search, the uniform widths and the
  two-segment family (narrow first, then full width) on ``--num`` held-out
  seeds (from ``--seed``, disjoint from every search seed): every metric with
  its interval and its paired difference from full width; for each family
  the lowest FLOP share with no metric significantly worse than full width;
  at each ``--budget``, each front's best member within it (by its own search
  objective, as ``ddsm export`` picks it) against the uniform width of
  nearest cost, paired.
- ``rank``: Spearman's rho over the verdict's schedules of each search
  objective at its search-time sample size (proxy and linear proxy on seeds
  0..63, pixel KID on seeds 0..255) against each verdict metric.

    python experiments/bench_objective.py                       # every part, about 40 minutes on 2 cores
    python experiments/bench_objective.py --parts validate --num 1000

Writes ``<out>/objective.json`` and ``objective_{validate,search,verdict,budgets,rank}.csv`` atomically.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from _script import parse_parts, run, write_parts
from ddsm import load_digits, load_supernet
from ddsm.config import validate
from ddsm.io import write_atomic
from ddsm.metrics.featurenet import FeatureNet
from ddsm.metrics.fid import reference_images
from ddsm.metrics.registry import get_metric
from ddsm.metrics.verdict import DEVIATION, FULL, METRICS, Verdict, VerdictSettings
from ddsm.metrics.verdict import better_than as better, worse_than as worse
from ddsm.plan import StepPlan
from ddsm.search import SearchConfig, load_search, prepare_search
from ddsm.search.folder import generations_finished
from ddsm.search.problem import WidthProblem
from ddsm.search.seeding import uniform_seeds

PARTS = ("validate", "search", "verdict", "rank", "summary")
#: the search objectives compared: name -> (shipped space, overrides)
OBJECTIVES = {"proxy": ("digits-proxy", {}),
              "pixel_kid": ("digits-proxy", {"objectives": {"quality": "pixel_kid", "cost": "flops"},
                                             "evaluator": {"num_samples": 256}}),
              "staged": ("digits", {})}
#: the search-time fitnesses ranked against the verdict: name -> (registered metric, samples, first seed)
FITNESSES = {"proxy@64": ("proxy", 64, 0), "proxy_linear@64": ("proxy_linear", 64, 0),
             "pixel_kid@256": ("pixel_kid", 256, 0)}


def space_of(name: str) -> SearchConfig:
    """The search space of objective ``name``: a shipped space with its overrides."""
    shipped, over = OBJECTIVES[name]
    doc = SearchConfig.load(shipped).model_dump(mode="json")
    for k, v in over.items():
        doc[k] = {**doc[k], **v}
    return validate(SearchConfig, doc, source=f"objective {name}")


def judge(args, net, sampler, plans: dict[str, StepPlan], shares: dict[str, float], search_seeds):
    """The verdict of ``plans`` on the held-out seeds, and one row per schedule."""
    data = load_digits(size=net.config.unet.image_size, channels=net.config.unet.in_channels)
    settings = VerdictSettings(num=args.num, seed=args.seed, teacher_num=args.teacher_num, draws=args.draws)
    verdict = Verdict(net, sampler, FeatureNet.load("digits", data), reference_images(data, "all"), settings,
                      search_seeds=search_seeds, progress=True)
    result = verdict.score(plans, extra={k: {"share": shares[k]} for k in plans})
    rows = []
    for name in [FULL, *plans]:
        r = {"schedule": name, "share": 1.0 if name == FULL else shares[name]}
        for m in result.metrics:
            iv, d = result.interval(name, m), result.compare(name, FULL, m)
            r.update({m: iv.value, f"{m}_low": iv.low, f"{m}_high": iv.high, f"{m}_vs_full": d.value,
                      f"{m}_vs_full_low": d.low, f"{m}_vs_full_high": d.high,
                      f"{m}_worse": worse(m, d.low, d.high) if name != FULL else False})
        rows.append(r)
    return result, pd.DataFrame(rows)


def part_validate(args, net, out: Path) -> dict:
    space = SearchConfig.load("digits-proxy")
    steps, narrow, full = space.sampler.steps, space.widths[0], space.widths[-1]
    plans = {f"uniform {w:g}": StepPlan((w,) * steps) for w in space.widths[:-1]}
    for k in (2, 5, 10):
        for w in space.widths[:-1]:
            plans[f"last {k} at {w:g}"] = StepPlan((full,) * (steps - k) + (w,) * k)
    plans[f"first 10 at {narrow:g}"] = StepPlan((narrow,) * 10 + (full,) * (steps - 10))
    costs = prepare_search(space, args.checkpoint, net=net).costs
    for g in range(space.n_genes):
        genome = [space.full_index] * space.n_genes
        genome[g] = 0
        lo = sum(space.segment_lengths[:g])
        plans[f"probe steps {lo}-{lo + space.segment_lengths[g] - 1} at {narrow:g}"] = space.decode(genome)
    shares = {k: float(costs.share(p)) for k, p in plans.items()}
    t0 = time.perf_counter()
    result, table = judge(args, net, space.sampler, plans, shares, space.search_seeds)
    seconds = time.perf_counter() - t0
    # schedules that differ only in the width of their last steps, against each other (paired)
    pairs = []
    for k in (2, 5, 10):
        for a, b in ((0.25, 0.5), (0.5, 0.75), (0.75, 1.0)):
            na = f"last {k} at {a:g}"
            nb = f"last {k} at {b:g}" if b < 1 else FULL
            for m in result.metrics:
                d = result.compare(na, nb, m)
                pairs.append({"a": na, "b": nb, "metric": m, "a_minus_b": d.value, "low": d.low, "high": d.high,
                              "a_worse": worse(m, d.low, d.high)})
    pairs = pd.DataFrame(pairs)
    write_atomic(out / "objective_validate.csv", lambda p: table.to_csv(p, index=False))
    write_atomic(out / "objective_validate_pairs.csv", lambda p: pairs.to_csv(p, index=False))
    cols = ["schedule", "share"] + [f"{m}_vs_full" for m in result.metrics]
    print(_significance(table, result.metrics).to_string(index=False))
    print(pairs.pivot_table(index=["a", "b"], columns="metric", values="a_worse", sort=False).to_string())
    return {"num": args.num, "seeds": [args.seed, args.seed + args.num - 1], "seconds": seconds,
            "schedules": len(plans), "separates": {
                m: {"narrowest_uniform_vs_full": bool(table.set_index("schedule").loc[f"uniform {narrow:g}", f"{m}_worse"]),
                    "last_steps_pairs_separated": int(pairs[pairs.metric == m]["a_worse"].sum()),
                    "last_steps_pairs": int((pairs.metric == m).sum())} for m in result.metrics},
            "columns": cols}


def _significance(table: pd.DataFrame, metrics) -> pd.DataFrame:
    """Each schedule's paired difference from full width per metric, '*' where significantly worse, '+' better."""
    rows = []
    for r in table.to_dict(orient="records"):
        row = {"schedule": r["schedule"][:30], "share": f"{r['share']:.3f}"}
        for m in metrics:
            lo, hi = r[f"{m}_vs_full_low"], r[f"{m}_vs_full_high"]
            mark = "*" if worse(m, lo, hi) else "+" if better(m, lo, hi) else ""
            row[m] = f"{r[f'{m}_vs_full']:+.3g}{mark}"
        rows.append(row)
    return pd.DataFrame(rows)


def part_search(args, net, out: Path) -> dict:
    res = {}
    for name in OBJECTIVES:
        space = space_of(name)
        folder = Path(args.work) / name
        if generations_finished(folder) >= space.generations:
            print(f"{name}: already searched -> {folder}")
            continue
        prepared = prepare_search(space, args.checkpoint, net=net)
        t0 = time.perf_counter()
        r = prepared.run(folder, runner=args.runner, workers=args.workers, resume=(folder / "search.json").exists(),
                         progress=True)
        wall = time.perf_counter() - t0
        stages = {k: {**v, "seconds_per_candidate": v["seconds"] / v["candidates"] if v["candidates"] else None}
                  for k, v in r.stages.items()}
        res[name] = {"wall_seconds": wall, "evaluated": r.evaluated, "front": len(r.front), "stages": stages,
                     "search_seeds": [[s.start, s.stop - 1] for s in space.search_seeds],
                     "runner": args.runner, "workers": args.workers}
        print(f"{name}: {wall:.0f} s, {r.evaluated} evaluated, front {len(r.front)}, stages {stages}")
    rows = [{"objective": k, **{kk: vv for kk, vv in v.items() if kk != "stages"},
             **{f"{s}_{kk}": vv for s, d in v["stages"].items() for kk, vv in d.items()}} for k, v in res.items()]
    if rows:
        write_atomic(out / "objective_search.csv", lambda p: pd.DataFrame(rows).to_csv(p, index=False))
    return res


def _schedules(args, net):
    """Every schedule the verdict judges: each search's front members, the uniform and two-segment families."""
    space = SearchConfig.load("digits-proxy")
    named: dict[str, tuple[int, ...]] = {}
    source: dict[str, dict] = {}
    seeds = []
    for obj in OBJECTIVES:
        sr = load_search(Path(args.work) / obj)
        seeds += list(sr.space.search_seeds)
        for i, row in enumerate(sr.front.to_dict(orient="records"), start=1):
            g = tuple(row["genome"])
            name = f"{obj} front {i:02d}"
            named[name] = g
            source[name] = {"family": f"{obj} front", "search_quality": float(row[sr.quality])}
    for g in uniform_seeds(space):
        named[f"uniform {space.widths[g[0]]:g}"] = tuple(g)
    for w in range(space.full_index):
        for f in (0.25, 0.5, 0.75):
            narrow = round(f * space.n_genes)
            named[f"two-segment {space.widths[w]:g} x {f:g}"] = (w,) * narrow + (space.full_index,) * (space.n_genes - narrow)
    full = (space.full_index,) * space.n_genes
    named = {k: g for k, g in named.items() if g != full}
    costs = prepare_search(space, args.checkpoint, net=net).costs
    problem = WidthProblem(space, costs)
    shares = {k: float(problem.share(np.asarray([g]))[0]) for k, g in named.items()}
    return space, named, source, shares, seeds


def part_verdict(args, net, out: Path) -> dict:
    space, named, source, shares, seeds = _schedules(args, net)
    plans = {k: space.decode(g) for k, g in named.items()}
    t0 = time.perf_counter()
    result, table = judge(args, net, space.sampler, plans, shares, seeds)
    seconds = time.perf_counter() - t0
    table["family"] = ["full" if n == FULL else "uniform" if n.startswith("uniform")
                       else source.get(n, {}).get("family", "two-segment") for n in table["schedule"]]
    table["search_quality"] = [source.get(n, {}).get("search_quality", np.nan) for n in table["schedule"]]
    write_atomic(out / "objective_verdict.csv", lambda p: table.to_csv(p, index=False))
    metrics = list(result.metrics)
    uniform = table[table.family == "uniform"]
    brows = []
    for fam in [f"{o} front" for o in OBJECTIVES]:
        members = table[table.family == fam]
        for b in args.budget:
            within = members[members.share <= b + 1e-12]
            if within.empty:
                continue
            best = within.sort_values(["search_quality", "share"]).iloc[0]
            near = uniform.iloc[(uniform.share - best.share).abs().argsort()].iloc[0]
            for m in metrics:
                d = result.compare(best.schedule, near.schedule, m)
                brows.append({"front": fam, "budget": b, "member": best.schedule, "member_share": best.share,
                              "uniform": near.schedule, "uniform_share": near.share, "metric": m,
                              "member_minus_uniform": d.value, "low": d.low, "high": d.high,
                              "member_better": better(m, d.low, d.high), "member_worse": worse(m, d.low, d.high)})
    budgets = pd.DataFrame(brows)
    write_atomic(out / "objective_budgets.csv", lambda p: budgets.to_csv(p, index=False))
    print(_significance(table, metrics).to_string(index=False))
    return {"num": args.num, "seeds": [args.seed, args.seed + args.num - 1], "seconds": seconds,
            "schedules": len(plans), "search_seeds": [[s.start, s.stop - 1] for s in seeds], "budgets": args.budget}


def part_summary(args, net, out: Path) -> dict:
    """From the verdict's files: each family's cheapest schedule without a significant loss, the fronts vs uniform."""
    table = pd.read_csv(out / "objective_verdict.csv")
    budgets = pd.read_csv(out / "objective_budgets.csv")
    metrics = [m for m in METRICS if f"{m}_worse" in table.columns]
    quality = [m for m in metrics if m not in DEVIATION]
    fams = table[table.family != "full"]
    no_loss, per_metric = {}, {}
    for fam, rows in fams.groupby("family"):
        safe = rows[~rows[[f"{m}_worse" for m in quality]].any(axis=1)].sort_values("share")
        no_loss[fam] = None if safe.empty else {"schedule": safe.iloc[0]["schedule"], "share": float(safe.iloc[0]["share"])}
        per_metric[fam] = {m: (None if (ok := rows[~rows[f"{m}_worse"]].sort_values("share")).empty
                               else float(ok.iloc[0]["share"])) for m in metrics}
    print(f"cheapest schedule with no quality metric significantly worse than full width ({', '.join(quality)}; "
          f"n = {args.num}):")
    for fam, v in no_loss.items():
        print(f"  {fam:<16} " + ("none" if v is None else f"{v['schedule']} at {v['share']:.3f}"))
    print("per metric, the lowest share not significantly worse than full width:")
    print(pd.DataFrame(per_metric).T.to_string(float_format=lambda v: f"{v:.3f}"))
    cells = {}
    for r in budgets.to_dict(orient="records"):
        mark = "+" if r["member_better"] else "*" if r["member_worse"] else ""
        cells[f"{r['front']} @ {r['budget']:g}: {r['member']} ({r['member_share']:.3f}) - {r['uniform']} "
              f"({r['uniform_share']:.3f}) {r['metric']}"] = \
            f"{r['member_minus_uniform']:+.4g} [{r['low']:+.4g}, {r['high']:+.4g}]{mark}"
    if not budgets.empty:
        b = budgets.assign(cell=[f"{r.member_minus_uniform:+.3g}{'+' if r.member_better else '*' if r.member_worse else ''}"
                                 for r in budgets.itertuples()])
        print("each front's best member within a budget minus the uniform width of nearest cost (+ better, * worse):")
        print(b.pivot_table(index=["front", "budget", "member", "uniform"], columns="metric", values="cell",
                            aggfunc="first", sort=False).to_string())
    return {"quality_metrics": quality, "no_significant_loss": no_loss, "lowest_share_per_metric": per_metric,
            "fronts_vs_uniform": cells}


def part_rank(args, net, out: Path) -> dict:
    table = pd.read_csv(out / "objective_verdict.csv")
    space, named, _, _, _ = _schedules(args, net)
    table = table[table.schedule.isin(list(named))].reset_index(drop=True)
    plans = [space.decode(named[n]) for n in table.schedule]
    metrics = [m for m in METRICS if m in table.columns]
    res: dict = {"schedules": len(table), "fitness_seconds_per_candidate": {}, "rho": {}}
    for fit, (metric, num, seed) in FITNESSES.items():
        ev = get_metric(metric).build(net, space.sampler, featurenet=None, checkpoint=args.checkpoint, num=num,
                                      seed=seed, batch_size=256, fuse=False)
        t0 = time.perf_counter()
        table[fit] = ev.evaluate(plans)[metric].to_numpy()
        res["fitness_seconds_per_candidate"][fit] = (time.perf_counter() - t0) / len(plans)
        for m in metrics:
            sign = -1.0 if METRICS[m][1] else 1.0  # both lower-is-better
            res["rho"][f"{fit} vs {m}"] = float(spearmanr(table[fit], sign * table[m]).statistic)
    write_atomic(out / "objective_rank.csv", lambda p: table[["schedule", "share", *FITNESSES, *metrics]].to_csv(p, index=False))
    rho = pd.DataFrame([{"fitness": f, **{m: res["rho"][f"{f} vs {m}"] for m in metrics}} for f in FITNESSES])
    print(f"Spearman rho over {len(table)} schedules (oriented lower-is-better):")
    print(rho.to_string(index=False, float_format=lambda v: f"{v:+.3f}"))
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", default=",".join(PARTS))
    ap.add_argument("--checkpoint", default="digits")
    ap.add_argument("--work", default="runs/bench-objective", help="where the searches are written")
    ap.add_argument("--num", type=int, default=1000, help="verdict samples per schedule")
    ap.add_argument("--seed", type=int, default=10_000, help="first verdict seed")
    ap.add_argument("--teacher-num", type=int, default=2000)
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--budget", type=float, action="append", default=None)
    ap.add_argument("--runner", default="ray")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default="experiments/results")
    args = ap.parse_args(argv)
    parts = parse_parts(args.parts, PARTS)
    args.budget = args.budget or [0.3, 0.45, 0.6]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    net = load_supernet(args.checkpoint)
    doc: dict = {"command": "python experiments/bench_objective.py " + " ".join(argv if argv is not None else
                                                                               __import__("sys").argv[1:])}
    for part in parts:
        t0 = time.perf_counter()
        doc[part] = globals()[f"part_{part}"](args, net, out)
        print(f"part {part}: {time.perf_counter() - t0:.0f} s")
        write_parts(out / "objective.json", doc, [p for p in parts if p in doc], PARTS)
    return 0


if __name__ == "__main__":
    run(main)
