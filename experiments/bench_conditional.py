"""Transformers, classes and guidance on the class-conditional MNIST reference (issue 29), in parts.

For each class-conditional supernet given (the DiT and the UNet of
``experiments/configs/mnist-{dit,unet}.yaml``, trained on the built-in
``mnist`` data), on held-out verdict seeds (``ddsm.metrics.verdict``: FID,
KID, pixel KID, precision, recall, the classifier's confidence, **class
accuracy** — the feature net's classifier names the class asked for, seed s
asking for class s mod 10 — and the proxy), each with its paired 95 %
interval against full width guided at every step:

- ``scale``: the guidance scale, chosen on search seeds 0..N-1 (never the
  verdict's): full width at each ``--scales`` value, FID and class accuracy.
- ``capacity``: every uniform width against full width. The narrowest
  width's row answers "is capacity seen to matter?": a distribution metric
  whose interval excludes 0 in the worse direction says yes.
- ``fronts``: the fronts of the searches given (``--search MODEL=FOLDER``,
  e.g. one with guidance genes and one with guidance fixed at every step)
  beside the three families (uniform width guided at every step; guidance
  only after the first steps; two-segment, narrow first): the lowest FLOP
  share with no significant loss for each front and each family; each front
  against each family at ``--budget`` budgets (paired); the guidance-gene
  front against the fixed-guidance front at equal budget (paired); and,
  with two models, each model's front against the other's at equal MACs
  per image (paired over the same seeds and labels).
- ``speed``: wall-clock saving over FLOP saving of each model's best front
  member (its cheapest with no significant loss, else the one at the middle
  budget) against full width, at batch 1 and 64, measured here.

    python experiments/bench_conditional.py --parts scale,capacity --checkpoint dit=runs/mnist-dit \
        --checkpoint unet=runs/mnist-unet --featurenet mnist --num 1000 --steps 10
    python experiments/bench_conditional.py --parts fronts,speed --checkpoint dit=runs/mnist-dit \
        --search dit=runs/mnist-dit-search --search dit=runs/mnist-dit-search-fixed --featurenet mnist --num 1000

Families are picked conservatively: the front's member at a budget is the one with the best *search*
quality (as ``ddsm export`` picks it), a family's is its best within the budget by the verdict's own FID,
which favours the family. Prints tables and writes ``experiments/results/conditional.{json,csv}`` (or
``--out``) atomically, keeping the parts not rerun.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _script import parse_parts, run, write_parts  # noqa: E402

from ddsm import DDSMError  # noqa: E402
from ddsm.io import write_atomic  # noqa: E402

PARTS = ("scale", "capacity", "fronts", "speed")
#: metrics that measure the distribution (the proxy measures deviation from full width, not quality)
DISTRIBUTION = ("fid", "kid", "pixel_kid", "precision", "recall", "class_accuracy")


def judge_for(net, checkpoint: str, args, sampler, *, num: int, seed: int, search_seeds=None,
              teacher_num: int | None = None):
    """A Verdict of ``net`` on ``num`` seeds from ``seed``, with the data's feature net and real images."""
    from ddsm.checkpoint import training_data
    from ddsm.metrics.featurenet import FeatureNet
    from ddsm.metrics.fid import reference_images
    from ddsm.metrics.verdict import Verdict, VerdictSettings

    data = training_data(checkpoint, net.config.geometry)
    settings = VerdictSettings(num=num, seed=seed, teacher_num=teacher_num or args.teacher_num,
                               teacher_seed=args.teacher_seed,
                               draws=args.draws)
    judge = Verdict(net, sampler, FeatureNet.load(args.featurenet, data), reference_images(data, "all"), settings,
                    search_seeds=search_seeds, progress=args.progress)
    if "class_accuracy" not in judge.metrics:
        raise DDSMError(f"feature net {args.featurenet!r} has no classifier of the data's classes; train it on the "
                        "labelled data (ddsm featurenet --data mnist ...)")
    return judge


def cached_samples(net, judge, plans: dict, args, model: str) -> dict:
    """Every plan's samples on the verdict seeds, each sampled once and kept in ``--sample-cache`` (safetensors named
    by a hash of the model's weights, sampler, seeds and plan), so a stopped run resumes plan by plan."""
    from ddsm.checkpoint import read_tensors, save_tensors
    from ddsm.io import stable_hash
    from ddsm.samplers.batched import generate_many

    folder = Path(args.sample_cache)
    folder.mkdir(parents=True, exist_ok=True)
    seeds = list(judge.settings.seeds)
    out = {}
    for i, (key, plan) in enumerate(plans.items(), start=1):
        tag = stable_hash([net.weights_sha256, judge.sampler.config.model_dump(mode="json"), seeds[0], len(seeds),
                           repr(plan)])
        path = folder / f"{model}-{tag}.safetensors"
        if path.is_file():
            out[key] = read_tensors(path)[0]["samples"]
            continue
        t0 = time.perf_counter()
        out[key] = generate_many(net.model, judge.sampler, [plan], seeds, batch_size=256, fuse=False)[0]
        save_tensors(path, {"samples": out[key]}, {"plan": repr(plan), "schedule": key})
        print(f"  sampled {i}/{len(plans)} {key} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return out


def load_conditional(name: str, checkpoint: str):
    from ddsm.checkpoint import load_supernet

    net = load_supernet(checkpoint)
    if not net.model.num_classes:
        raise DDSMError(f"--checkpoint {name}={checkpoint!r} is unconditional; this benchmark judges "
                        "class-conditional models (num_classes > 0)")
    return net


def sampler_of(args, scale: float | None = None):
    from ddsm.samplers.base import SamplerConfig

    return SamplerConfig(kind="ddim", steps=args.steps, guidance_scale=args.guidance_scale if scale is None else scale)


def safe(result, name: str) -> bool:
    """No distribution metric (class accuracy included) significantly worse than full width."""
    from ddsm.metrics.verdict import FULL, worse_than

    for m in result.metrics:
        if m in DISTRIBUTION:
            d = result.compare(name, FULL, m)
            if worse_than(m, d.low, d.high):
                return False
    return True


# ---------------------------------------------------------------------------------------------- scale


def scale_part(models, args) -> tuple[pd.DataFrame, dict]:
    """Full width at each guidance scale on search seeds 0..N-1: FID and class accuracy, to choose the scale."""
    rows = []
    for name, checkpoint, net in models:
        for scale in args.scales:
            # the teacher-relative FID is not read here: its reference is the least the verdict allows
            judge = judge_for(net, checkpoint, args, sampler_of(args, scale), num=args.scale_num, seed=0, teacher_num=50)
            r = judge.score({})
            for m in ("fid", "kid", "class_accuracy", "precision", "recall"):
                iv = r.interval("full width", m)
                rows.append({"model": name, "guidance_scale": scale, "metric": m, "value": iv.value, "low": iv.low,
                             "high": iv.high, "n": iv.n})
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 160, "display.float_format", "{:.4g}".format):
        print(table.pivot_table(index=["model", "guidance_scale"], columns="metric", values="value").to_string())
    return table, {"seeds": [0, args.scale_num - 1], "scales": list(args.scales),
                   "note": "search seeds, never the verdict's; the scale is chosen here, then fixed"}


# ---------------------------------------------------------------------------------------------- capacity


def capacity(name: str, checkpoint: str, net, args) -> tuple[pd.DataFrame, dict]:
    """Every uniform width against full width on the verdict seeds: the verdict's long table, and its summary."""
    from ddsm.cost import CostModel
    from ddsm.metrics.verdict import METRICS, worse_than
    from ddsm.plan import StepPlan

    geo = net.config.geometry
    judge = judge_for(net, checkpoint, args, sampler_of(args), num=args.num, seed=args.seed)
    macs = CostModel.count(net, geo.widths)
    plans = {f"width {w:g}": StepPlan((w,) * args.steps) for w in geo.widths[:-1]}
    t0 = time.perf_counter()
    result = judge.score(plans, extra={"full width": {"share": 1.0},
                                       **{k: {"share": macs.share(p)} for k, p in plans.items()}})
    table = result.table()
    table.insert(0, "model", name)
    narrow = table[table["schedule"] == f"width {geo.widths[0]:g}"]
    worse = [r["metric"] for r in narrow.to_dict(orient="records")
             if r["metric"] in DISTRIBUTION and worse_than(r["metric"], r["vs_full_low"], r["vs_full_high"])]
    summary = {"checkpoint": checkpoint, "fingerprint": net.fingerprint, "backbone": type(net.model).__name__,
               "macs_per_image_full": macs.full_cost(1), "widths": list(geo.widths), "seconds": time.perf_counter() - t0,
               "narrowest_width": geo.widths[0], "narrowest_share": macs.share(plans[f"width {geo.widths[0]:g}"]),
               "narrowest_significantly_worse_in": worse, "capacity_matters": bool(worse),
               "metrics": {m: METRICS[m][0] for m in result.metrics}}
    shown = table[table["metric"].isin(DISTRIBUTION)][["schedule", "share", "metric", "value", "vs_full",
                                                        "vs_full_low", "vs_full_high", "differs_from_full"]]
    with pd.option_context("display.width", 160, "display.float_format", "{:.4g}".format):
        print(f"\n== capacity, {name}: {checkpoint} ({summary['macs_per_image_full'] / 1e6:.1f} MMACs per image "
              "and pass at full width)")
        print(shown.to_string(index=False))
    print(f"capacity matters ({name}): {summary['capacity_matters']} — the narrowest width "
          f"{summary['narrowest_width']:g} is significantly worse in {worse}")
    return table, summary


# ---------------------------------------------------------------------------------------------- fronts


def fronts_schedules(searches) -> tuple[dict, dict, dict]:
    """Front members of every search and the three families: name -> plan, share, search quality (NaN: none)."""
    from ddsm.search.problem import WidthProblem
    from ddsm.search.seeding import interval_seeds, two_segment_seeds, uniform_seeds

    plans, shares, quality = {}, {}, {}
    for sr in searches:
        tag = sr.folder.name
        for i, m in enumerate(sr.front.to_dict(orient="records"), start=1):
            name = f"{tag} front {i:02d}"
            plans[name], shares[name], quality[name] = sr.plan_of(m), float(m["share"]), float(m[sr.quality])
    # families from the first search with guidance genes (else the first): its space prices them
    base = next((r for r in searches if r.space.guidance_genes), searches[0])
    space, problem = base.space, WidthProblem(base.space, base.costs)
    full = space.guided((space.full_index,) * space.n_genes)
    n = space.n_genes
    for fam, genomes in (("uniform", uniform_seeds(space)), ("interval", interval_seeds(space)),
                         ("two-segment", two_segment_seeds(space))):
        for g in genomes:
            if g == full:
                continue
            w = space.widths[g[0]]
            if fam == "uniform":
                name = f"uniform {w:g}"
            elif fam == "interval":
                name = f"interval {w:g}, unguided first {sum(space.segment_lengths[:sum(1 for x in g[n:] if x == 0)])}"
            else:
                name = f"two-segment {w:g} x {sum(space.segment_lengths[:sum(1 for x in g[:n] if x != space.full_index)])}"
            plans[name], shares[name] = space.decode(g), float(problem.share(np.asarray([g]))[0])
            quality[name] = np.nan
    return plans, shares, quality


def fronts_part(models, searches_of, args) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    from ddsm.metrics.verdict import FULL, METRICS
    from ddsm.search import load_search

    long, rows, summary, results = [], [], {}, {}
    for name, checkpoint, net in models:
        runs = [load_search(f) for f in searches_of.get(name, [])]
        if not runs:
            continue
        for r in runs:
            if r.meta.get("weights") not in (None, net.weights_sha256):
                raise DDSMError(f"search {str(r.folder)!r} ran on other weights than {checkpoint!r}")
            if r.space.sampler != sampler_of(args):
                raise DDSMError(f"search {str(r.folder)!r} samples with {r.space.sampler.model_dump()}, not "
                                f"{sampler_of(args).model_dump()} (--steps, --guidance-scale)")
        plans, shares, quality = fronts_schedules(runs)
        seeds = tuple(s for r in runs for s in r.space.search_seeds)
        judge = judge_for(net, checkpoint, args, sampler_of(args), num=args.num, seed=args.seed, search_seeds=seeds)
        t0 = time.perf_counter()
        extra = {FULL: {"share": 1.0}, **{k: {"share": v} for k, v in shares.items()}}
        if args.sample_cache is None:
            result = judge.score(plans, extra=extra)
        else:  # each schedule sampled once, kept on disk: an interrupted run continues where it stopped
            result = judge.score({}, extra=extra, samples=cached_samples(net, judge, plans, args, name))
        results[name] = (result, shares)
        table = result.table()
        table.insert(0, "model", name)
        long.append(table)
        groups = {f"{r.folder.name} front": [k for k in plans if k.startswith(f"{r.folder.name} front")] for r in runs}
        groups.update({fam: [k for k in plans if k.startswith(fam)] for fam in ("uniform", "interval", "two-segment")})
        lowest = {}
        for g, names in groups.items():
            ok = sorted((shares[k], k) for k in names if safe(result, k))
            lowest[g] = {"schedule": ok[0][1], "share": ok[0][0]} if ok else None
        fams = [lowest[f] for f in ("uniform", "interval", "two-segment") if lowest.get(f)]
        best_family = min(fams, key=lambda d: d["share"]) if fams else None

        def front_at(tag: str, b: float) -> str | None:
            cand = [(quality[k], shares[k], k) for k in plans if k.startswith(f"{tag} front") and shares[k] <= b + 1e-12]
            return min(cand)[2] if cand else None

        def family_at(fam: str, b: float) -> str | None:
            cand = [k for k in plans if k.startswith(fam) and shares[k] <= b + 1e-12]
            return min(cand, key=lambda k: (result.interval(k, "fid").value, shares[k])) if cand else None

        for b in args.budget:
            for r in runs:
                tag = r.folder.name
                front = front_at(tag, b)
                others = [(fam, family_at(fam, b)) for fam in ("uniform", "interval", "two-segment")]
                others += [(f"{o.folder.name} front", front_at(o.folder.name, b)) for o in runs if o is not r]
                for fam, other in others:
                    if front is None or other is None:
                        rows.append({"model": name, "budget": b, "front": front, "against": fam, "other": other})
                        continue
                    for m in result.metrics:
                        if m not in DISTRIBUTION:
                            continue
                        d = result.compare(front, other, m)
                        higher = METRICS[m][1]
                        rows.append({"model": name, "budget": b, "front": front, "front_share": shares[front],
                                     "against": fam, "other": other, "other_share": shares[other], "metric": m,
                                     "front_minus_other": d.value, "low": d.low, "high": d.high,
                                     "front_better": (d.low > 0) if higher else (d.high < 0),
                                     "front_worse": (d.high < 0) if higher else (d.low > 0)})
        summary[name] = {"searches": [str(r.folder) for r in runs], "schedules": len(plans),
                         "seconds": time.perf_counter() - t0, "lowest_share_no_significant_loss": lowest,
                         "best_family_no_significant_loss": best_family,
                         "macs_per_image_full_guided": float(runs[0].costs.full_cost(1))}
        print(f"\n== fronts, {name}: lowest FLOP share with no significant loss (every distribution metric and class "
              "accuracy against full width guided at every step)")
        for g, v in lowest.items():
            shown = "none" if v is None else f"{v['share']:.1%}  {v['schedule']}"
            print(f"  {g:<40} {shown}")
    # two models: each one's front member at a budget against the other's at equal MACs per image (paired seeds)
    if len(results) == 2:
        (a, (ra, sa)), (b_, (rb, sb)) = results.items()
        ma, mb = summary[a]["macs_per_image_full_guided"], summary[b_]["macs_per_image_full_guided"]
        cross = []
        for budget in args.budget:
            macs = budget * min(ma, mb)

            def pick(res, shares_, full):
                cand = [k for k in shares_ if " front " in k and shares_[k] * full <= macs + 1e-6]
                return min(cand, key=lambda k: (res.interval(k, "fid").value, shares_[k])) if cand else None

            ka, kb = pick(ra, sa, ma), pick(rb, sb, mb)
            if ka is None or kb is None:
                continue
            for m in ra.metrics:
                if m in DISTRIBUTION:
                    d = ra.draws[ka][m].minus(rb.draws[kb][m], ra.settings.level)
                    cross.append({"macs_per_image": macs, "a": f"{a}: {ka}", "b": f"{b_}: {kb}", "metric": m,
                                  "a_minus_b": d.value, "low": d.low, "high": d.high})
        summary["cross_model"] = cross
        if cross:
            with pd.option_context("display.width", 200, "display.float_format", "{:.4g}".format):
                print("\n== DiT against UNet at equal MACs per image (paired over the same seeds and labels)")
                print(pd.DataFrame(cross).to_string(index=False))
    budgets = pd.DataFrame(rows)
    if not budgets.empty and "metric" in budgets:
        shown = budgets[budgets["metric"].isin(("fid", "kid", "class_accuracy"))]
        with pd.option_context("display.width", 220, "display.float_format", "{:.4g}".format):
            print("\n== fronts against the families and each other at each budget (paired; front minus other)")
            print(shown[["model", "budget", "front", "front_share", "other", "other_share", "metric",
                         "front_minus_other", "low", "high", "front_better", "front_worse"]].to_string(index=False))
    return (pd.concat(long) if long else pd.DataFrame()), budgets, summary


# ---------------------------------------------------------------------------------------------- speed


def speed_part(models, fronts_summary: dict, searches_of, args) -> dict:
    """Wall-clock saving / FLOP saving of each model's best front member at batch 1 and 64 (measured here)."""
    from ddsm.diffusion.noise import NoiseSchedule
    from ddsm.plan import StepPlan
    from ddsm.report.export import time_schedules
    from ddsm.samplers import make_sampler
    from ddsm.search import load_search

    out = {}
    for name, checkpoint, net in models:
        info = fronts_summary.get(name)
        runs = [load_search(f) for f in searches_of.get(name, [])]
        if not info or not runs:
            continue
        run0 = runs[0]
        pick = info["lowest_share_no_significant_loss"].get(f"{run0.folder.name} front")
        members = {f"{run0.folder.name} front {i:02d}": m for i, m in enumerate(run0.front.to_dict(orient="records"), 1)}
        if pick is None or pick["schedule"] not in members:
            mid = sorted(members, key=lambda k: members[k]["share"])[len(members) // 2]
            pick = {"schedule": mid, "share": float(members[mid]["share"])}
        plan = run0.plan_of(members[pick["schedule"]])
        sampler = make_sampler(NoiseSchedule(net.config.diffusion), sampler_of(args))
        full = StepPlan((max(net.config.geometry.widths),) * args.steps)
        res = {"schedule": pick["schedule"], "flop_share": pick["share"], "flop_saving": 1.0 - pick["share"]}
        for batch in args.speed_batches:
            seeds = list(range(args.seed, args.seed + batch))
            t = time_schedules(net.model, sampler, [plan, full], seeds, repeats=args.repeats, warmup=1)
            ts, tf = statistics.median(t[0]), statistics.median(t[1])
            res[f"batch_{batch}"] = {"seconds": ts, "full_seconds": tf, "wall_saving": 1.0 - ts / tf,
                                     "wall_over_flop_saving": (1.0 - ts / tf) / (1.0 - pick["share"])}
            print(f"speed, {name}: {pick['schedule']} at batch {batch}: {ts:.3f} s vs full {tf:.3f} s: wall saving "
                  f"{1 - ts / tf:.1%} for FLOP saving {1 - pick['share']:.1%} "
                  f"(ratio {(1 - ts / tf) / (1 - pick['share']):.2f})")
        out[name] = res
    return out


# ---------------------------------------------------------------------------------------------- main


def named(specs: list[str], what: str) -> list[tuple[str, str]]:
    out = []
    for spec in specs or []:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise DDSMError(f"{what} {spec!r} must be NAME=PATH, e.g. dit=runs/mnist-dit")
        out.append((name, path))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="capacity", help=f"comma-separated parts to run: {', '.join(PARTS)}")
    ap.add_argument("--checkpoint", action="append", required=True, metavar="NAME=CHECKPOINT",
                    help="a class-conditional supernet, named (repeat: one per backbone)")
    ap.add_argument("--search", action="append", metavar="NAME=FOLDER",
                    help="a finished search on the checkpoint NAME (repeat: several searches per model)")
    ap.add_argument("--featurenet", required=True, help="feature net file of the data (with its classifier), or 'mnist'")
    ap.add_argument("--num", type=int, default=1000, help="samples per schedule on the verdict seeds [1000]")
    ap.add_argument("--teacher-num", type=int, default=1000, help="full-width samples of the teacher FID's reference")
    ap.add_argument("--teacher-seed", type=int, default=1_000_000, help="first seed of the teacher reference [1000000]")
    ap.add_argument("--seed", type=int, default=10_000, help="first verdict seed [10000]")
    ap.add_argument("--draws", type=int, default=200, help="bootstrap resamples [200]")
    ap.add_argument("--steps", type=int, default=10, help="DDIM steps [10]")
    ap.add_argument("--guidance-scale", type=float, default=2.0, help="classifier-free guidance scale [2]")
    ap.add_argument("--scales", type=float, nargs="+", default=[1.0, 1.5, 2.0, 3.0, 4.0], help="scale part: scales")
    ap.add_argument("--scale-num", type=int, default=500, help="scale part: samples per scale on seeds 0.. [500]")
    ap.add_argument("--budget", type=float, action="append", default=None, help="fronts part: budgets [0.3 0.5 0.7]")
    ap.add_argument("--speed-batches", type=int, nargs="+", default=[1, 64], help="speed part: batches [1 64]")
    ap.add_argument("--repeats", type=int, default=5, help="speed part: timed runs per schedule [5]")
    ap.add_argument("--out", type=Path, default=Path("experiments/results"), help="folder for conditional.json/.csv")
    ap.add_argument("--progress", action="store_true", help="show sampling progress")
    ap.add_argument("--sample-cache", default=None, help="fronts part: keep each schedule's samples in this folder "
                    "(a stopped run resumes schedule by schedule)")
    args = ap.parse_args()
    parts = parse_parts(args.parts, PARTS)
    args.budget = args.budget or [0.3, 0.5, 0.7]
    models = [(n, p, load_conditional(n, p)) for n, p in named(args.checkpoint, "--checkpoint")]
    searches_of: dict[str, list[str]] = {}
    for n, f in named(args.search, "--search"):
        if n not in {m[0] for m in models}:
            raise DDSMError(f"--search {n}={f}: no --checkpoint is named {n!r}")
        searches_of.setdefault(n, []).append(f)
    args.out.mkdir(parents=True, exist_ok=True)
    command = " ".join(sys.argv)
    settings = {"num": args.num, "teacher_num": args.teacher_num, "seed": args.seed, "draws": args.draws,
                "steps": args.steps, "guidance_scale": args.guidance_scale, "sampler": "ddim"}
    doc: dict = {"command": command, "settings": settings}
    if "scale" in parts:
        table, doc["scale"] = scale_part(models, args)
        write_atomic(args.out / "conditional-scale.csv", lambda p: table.to_csv(p, index=False))
    if "capacity" in parts:
        tables, caps = [], {}
        for name, path, net in models:
            table, caps[name] = capacity(name, path, net, args)
            tables.append(table)
        doc["capacity"] = {"settings": settings, **caps}
        long = pd.concat(tables)
        write_atomic(args.out / "conditional.csv", lambda p: long.to_csv(p, index=False))
    fronts_summary = {}
    if "fronts" in parts or "speed" in parts:
        old = args.out / "conditional.json"
        if "fronts" in parts:
            long, budgets, fronts_summary = fronts_part(models, searches_of, args)
            doc["fronts"] = {"settings": settings, **fronts_summary}
            write_atomic(args.out / "conditional-fronts.csv", lambda p: long.to_csv(p, index=False))
            write_atomic(args.out / "conditional-budgets.csv", lambda p: budgets.to_csv(p, index=False))
        elif old.is_file():
            import json

            fronts_summary = json.loads(old.read_text()).get("fronts", {})
    if "speed" in parts:
        doc["speed"] = {"device": "cpu", "batches": args.speed_batches, "repeats": args.repeats,
                        **speed_part(models, fronts_summary, searches_of, args)}
    write_parts(args.out / "conditional.json", doc, parts, PARTS)
    print(f"-> {args.out / 'conditional.json'}")
    return 0


if __name__ == "__main__":
    run(main)
