"""What the search delivers, and what its machinery costs: one script, several searches on one supernet.

On the digits supernet with ``search_spaces/digits-proxy.yaml`` (the proxy-ranked quickstart search before bench_objective.py; DDIM,
the teacher proxy as fitness), it runs, serially unless said otherwise:

A. the search as configured (sensitivity seeding on, trajectory cache on);
B. the same without the trajectory cache: the same front is expected, bit
   for bit (unfused sampling), and the wall-clock ratio A/B is the cache's
   gain; A's evaluator counts the denoiser evaluations the cache saved;
C. the same without sensitivity-guided seeding: evaluations needed to reach
   95 % of the final hypervolume, A against C (one reference point and one
   target for both: 95 % of the larger final hypervolume);
D. (``--ray``) A on a local Ray with ``--workers`` actors: the same front,
   evaluations per second against A, and Ray's fixed start-up cost (ray.init
   plus actors that have loaded the supernet and built their evaluator).

Then it scores with FID (``--fid-num`` samples, a feature net trained on the
data) the members of A's front, the uniform-width family and the two-segment
(T-Stitch: narrow first, full width after) family, all within the budget, and
the full-width schedule: hypervolume of each family in (FID, cost share)
against one reference point, and the best FID each reaches within 50 % of the
full-width cost.

    python experiments/bench_search.py --checkpoint digits --ray

Prints tables; writes ``<out>/search_bench.json``, ``<out>/search_bench_fid.csv``
and ``<out>/search_bench_progress.csv`` atomically. Run folders go under
``--work`` (a temporary folder by default).
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ddsm import load_data, load_supernet
from ddsm.io import write_atomic, write_json
from ddsm.checkpoint import data_config_for
from ddsm.metrics.evaluator import FIDEvaluator
from ddsm.metrics.featurenet import FeatureNet, train_featurenet
from ddsm.metrics.fid import FID
from ddsm.metrics.verdict import VerdictSettings, check_disjoint
from ddsm.search import SearchConfig, SerialRunner
from ddsm.search.front import hypervolume, pareto_front, reference_point
from ddsm.search.log import parse_genome
from ddsm.search.setup import prepare_search
from ddsm.search.problem import WidthProblem
from ddsm.search.seeding import two_segment_seeds, uniform_seeds

FRONT_COLUMNS = ["genome", "widths", "proxy", "cost", "share"]


def serial_search(space: SearchConfig, checkpoint: str, net, out: Path) -> dict:
    """One serial search; returns its result, wall time and the evaluator's sharing statistics."""
    prepared = prepare_search(space, checkpoint, net=net)
    runner = SerialRunner(prepared.factory, decode=space.decode, quality=space.objectives.quality, device="cpu")
    t0 = time.perf_counter()
    res = prepared.run(out, runner=runner, progress=True)
    seconds = time.perf_counter() - t0
    stats = runner.evaluator.stats
    return {"result": res, "seconds": seconds, "image_evals": stats.image_evals,
            "shared_image_evals": stats.shared_image_evals, "naive_image_evals": stats.naive_image_evals}


def hv_progress(log: pd.DataFrame, budget: float, ref: tuple[float, float]) -> list[float]:
    """Hypervolume of the feasible front after each evaluation, in log order (seeding probes included)."""
    rows = log.to_dict(orient="records")
    out, feasible = [], []
    for r in rows:
        if r["valid"] and r["share"] <= budget + 1e-12:
            feasible.append(r)
        out.append(hypervolume(pareto_front(feasible, quality="proxy"), quality="proxy", ref=ref))
    return out


def evals_to(progress: list[float], target: float) -> int | None:
    """Evaluations until the hypervolume first reaches ``target`` (None: never)."""
    for i, hv in enumerate(progress):
        if hv >= target - 1e-15:
            return i + 1
    return None


def get_featurenet(path: str | None, data, out: Path) -> FeatureNet:
    default = out / f"featurenet-{data.fingerprint()}.safetensors"
    if path is not None or default.is_file():
        return FeatureNet.load(path or default, data)
    net = train_featurenet(data, seed=0, epochs=10, progress=True)
    net.save(default)
    return net


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="digits", help="run folder, .safetensors file or shipped name")
    ap.add_argument("--space", default="search_spaces/digits-proxy.yaml")
    ap.add_argument("--ray", action="store_true", help="also run D on a local Ray")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--fid-num", type=int, default=360, help="samples per schedule for FID")
    ap.add_argument("--featurenet", default=None, help="feature net file [default: trained once into --out]")
    ap.add_argument("--work", default=None, help="folder for the run folders [default: a temporary one]")
    ap.add_argument("--out", default="experiments/results")
    args = ap.parse_args(argv)
    out = Path(args.out)
    work = Path(args.work or tempfile.mkdtemp(prefix="ddsm-bench-search-"))
    space = SearchConfig.load(args.space)
    net = load_supernet(args.checkpoint, device="cpu")
    prepared = prepare_search(space, args.checkpoint, net=net)
    problem = WidthProblem(space, prepared.costs)
    runs: dict[str, dict] = {}

    def variant(name: str, **changes) -> SearchConfig:
        data = space.model_dump(mode="json")
        for path, value in changes.items():
            section, key = path.split(".")
            data[section][key] = value
        return SearchConfig.model_validate(data)

    plans = {"A": space, "B": variant("B", **{"evaluator.trajectory_cache_mb": 0.0}),
             "C": variant("C", **{"seeding.sensitivity": False})}
    for name, sp in plans.items():
        print(f"\n== search {name}")
        runs[name] = serial_search(sp, args.checkpoint, net, work / name)

    A = runs["A"]
    front_a = A["result"].front[FRONT_COLUMNS].reset_index(drop=True)
    same_b = front_a.equals(runs["B"]["result"].front[FRONT_COLUMNS].reset_index(drop=True))
    summary: dict = {
        "space": space.model_dump(mode="json"), "supernet": net.fingerprint,
        "runs": {k: {"seconds": v["seconds"], "evaluations": len(v["result"].evaluations),
                     "computed": v["result"].evaluated, "hypervolume": v["result"].hypervolume,
                     "front": len(v["result"].front), "image_evals": v["image_evals"],
                     "shared_image_evals": v["shared_image_evals"], "naive_image_evals": v["naive_image_evals"]}
                 for k, v in runs.items()},
        "cache": {"denoiser_evals_saved_by_cache": 1 - A["image_evals"] / A["shared_image_evals"],
                  "denoiser_evals_saved_total": 1 - A["image_evals"] / A["naive_image_evals"],
                  "wall_ratio_with_over_without": A["seconds"] / runs["B"]["seconds"],
                  "same_front_with_and_without": bool(same_b)},
    }

    # Seeding ablation: one reference point, one target.
    logs = {k: runs[k]["result"].evaluations for k in ("A", "C")}
    ref = reference_point([q for lg in logs.values() for q in lg.loc[lg["valid"], "proxy"]])
    prog = {k: hv_progress(lg, space.budget, ref) for k, lg in logs.items()}
    target = 0.95 * max(p[-1] for p in prog.values())
    summary["seeding"] = {"reference": list(ref), "target_hv": target,
                          **{f"{k}_final_hv": prog[k][-1] for k in prog},
                          **{f"{k}_evals_to_95pct": evals_to(prog[k], target) for k in prog},
                          **{f"{k}_evaluations": len(prog[k]) for k in prog}}
    n = max(len(p) for p in prog.values())
    progress = pd.DataFrame({f"hv_{k}": p + [math.nan] * (n - len(p)) for k, p in prog.items()})
    progress.insert(0, "evaluation", np.arange(1, n + 1))

    if args.ray:
        from ddsm.search.ray_runner import RayRunner

        print("\n== search D (Ray)")
        t0 = time.perf_counter()
        runner = RayRunner(prepared.factory, decode=space.decode, quality="proxy", workers=args.workers)
        try:
            info = runner.info()  # returns once every actor has built its evaluator
            startup = time.perf_counter() - t0
            t1 = time.perf_counter()
            res = prepared.run(work / "D", runner=runner, progress=True)
            ray_seconds = time.perf_counter() - t1
        finally:
            runner.close()
        rate_a = A["result"].evaluated / A["seconds"]
        rate_d = res.evaluated / ray_seconds
        summary["ray"] = {"workers": args.workers, "actors": info, "startup_seconds": startup,
                          "search_seconds": ray_seconds, "serial_seconds": A["seconds"],
                          "evals_per_s_ray": rate_d, "evals_per_s_serial": rate_a, "ratio_ray_over_serial": rate_d / rate_a,
                          "ratio_with_startup": (res.evaluated / (ray_seconds + startup)) / rate_a,
                          "denoiser_work": res.sharing,
                          "same_front_as_serial": bool(front_a.equals(res.front[FRONT_COLUMNS].reset_index(drop=True)))}

    # FID of the front against the baseline families, within the budget.
    unet = net.config.unet
    data = load_data(data_config_for(args.checkpoint), unet.image_size, unet.in_channels)
    fid = FID.for_data(data, featurenet=get_featurenet(args.featurenet, data, out), split="train",
                       cache_dir=out / "fid-reference")
    sets = {"front": [parse_genome(g) for g in front_a["genome"]],
            "uniform": uniform_seeds(space), "two-segment": two_segment_seeds(variant(
                "T", **{"seeding.two_segment": [round(0.1 * k, 1) for k in range(1, 10)]}))}
    rows = []
    for family, genomes in sets.items():
        for g in dict.fromkeys(genomes):
            share = float(problem.share(g)[0])
            if share <= space.budget + 1e-12:
                rows.append({"family": family, "genome": " ".join(map(str, g)), "share": share,
                             "widths": space.decode(g)})
    full = space.guided((space.full_index,) * space.n_genes)
    rows.append({"family": "full width", "genome": " ".join(map(str, full)), "share": 1.0,
                 "widths": space.decode(full)})
    table = pd.DataFrame(rows)
    print(f"\n== FID of {len(table)} schedules ({args.fid_num} samples each)")
    # held-out seeds: never the ones the search selected its schedules on
    verdict = VerdictSettings(num=max(args.fid_num, 50))
    check_disjoint(verdict.seeds, space.search_seeds)
    ev = FIDEvaluator(net, space.sampler, fid, num=args.fid_num, seed=verdict.seed, fuse=False, cache_mb=512, progress=True)
    t0 = time.perf_counter()
    table["fid"] = ev.evaluate(list(table["widths"]))["fid"].to_numpy()
    fid_seconds = time.perf_counter() - t0
    table["widths"] = [" ".join(f"{w:g}" for w in ws.widths) for ws in table["widths"]]
    in_budget = table[(table["share"] <= space.budget + 1e-12) & (table["family"] != "full width")]
    ref_fid = reference_point(list(in_budget["fid"]))
    fam = {}
    for family, grp in in_budget.groupby("family"):
        pts = grp.to_dict(orient="records")
        half = grp[grp["share"] <= 0.5 + 1e-12]
        fam[family] = {"schedules": len(grp),
                       "hypervolume": hypervolume(pareto_front(pts, quality="fid"), quality="fid", ref=ref_fid),
                       "best_fid_within_50pct": float(half["fid"].min()) if len(half) else None,
                       "best_fid_overall": float(grp["fid"].min())}
    summary["fid"] = {"samples": args.fid_num, "reference": list(ref_fid), "seconds": fid_seconds,
                      "full_width_fid": float(table.loc[table["family"] == "full width", "fid"].iloc[0]),
                      "families": fam}

    with pd.option_context("display.width", 140, "display.max_colwidth", 50, "display.float_format", "{:.4g}".format):
        print("\nsearches"); print(pd.DataFrame(summary["runs"]).T.to_string())
        print("\ntrajectory cache"); print(pd.Series(summary["cache"]).to_string())
        print("\nseeding ablation"); print(pd.Series(summary["seeding"]).to_string())
        if "ray" in summary:
            print("\nray vs serial"); print(pd.Series({k: v for k, v in summary["ray"].items() if k != "actors"}).to_string())
        print("\nFID, within the budget"); print(table.sort_values(["family", "share"]).to_string(index=False))
        print(pd.DataFrame(fam).T.to_string())
        print(f"full-width FID {summary['fid']['full_width_fid']:.4g}")
    write_json(out / "search_bench.json", summary)
    write_atomic(out / "search_bench_fid.csv", lambda p: table.to_csv(p, index=False))
    write_atomic(out / "search_bench_progress.csv", lambda p: progress.to_csv(p, index=False))
    print(f"\n-> {out / 'search_bench.json'} (run folders in {work})")
    return 0


if __name__ == "__main__":
    from _script import run

    run(main)
