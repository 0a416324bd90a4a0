"""Cached steps beside width (issue 32): does reusing deep features per step beat width alone and DeepCache?

Four parts on the shipped digits supernet (or ``--checkpoint``, ``--space``, ``--featurenet``: e.g. the slimmed
latent DiTPipeline of issue 31, ``runs/latent-slim`` with ``search_spaces/latent-dpm.yaml`` and ``mnist``); every
judgement is the verdict's (``ddsm.metrics.verdict``) on held-out seeds 10000.. (never the search's 0..255),
paired 95 % bootstrap intervals against full width:

1. **costs**: per width, the MACs of a full and of a cached call at every cache level, and the measured time of
   one call at batch 1 and 64 (median of round-robin repeats, one process).
2. **search**: three NSGA-II searches with one recipe (``search_spaces/digits.yaml``): widths only; widths x
   reuse genes at ``--level``; and the same priced by the measured time of one call at batch 1 (a cost table
   ``ddsm cost --cache-level`` measures first) (``ddsm search``; resumable folders under ``--work``).
3. **verdict**: every member of both fronts, DeepCache's uniform interval at full width (a full step every N
   steps, N = 2..5) and the uniform widths, judged on ``--num`` held-out seeds; per family the cheapest schedule
   (by MACs and by measured time) significantly worse than full width in no metric; the hypervolume in (FID,
   MACs share) of the joint front, the width-only front and the DeepCache family, with paired intervals.
4. **speed**: wall-clock saving over FLOP saving at batch 1 and 64 of the joint front's cheapest schedule with no
   significant loss (and of the width-only front's), timed round-robin in one process.
5. **confirm**: every schedule the verdict found free of a significant loss, and those of other bench_cache runs on the same checkpoint (``--confirm-also WORK:OUT``), judged again on
   ``--confirm-num`` seeds from ``--confirm-seed`` that neither the searches nor the verdict saw: scanning many
   members for one free of a significant loss favours lucky ones, and fresh seeds say whether the choice holds.

    python experiments/bench_cache.py                          # every part
    python experiments/bench_cache.py --parts costs --repeats 20
    python experiments/bench_cache.py --checkpoint runs/latent-slim --space search_spaces/latent-dpm.yaml \
        --featurenet mnist --work runs/bench-cache-latent --out runs/bench-cache-latent

Prints tables; writes ``<out>/cache.json`` (sections of parts not rerun are kept) and ``<out>/cache_*.csv``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

from _script import parse_parts, run, write_parts  # noqa: E402

from ddsm import DDSMError, load_supernet  # noqa: E402
from ddsm.cost.macs import count_cached_macs, count_macs  # noqa: E402
from ddsm.cost.model import CostModel  # noqa: E402
from ddsm.cost.table import CostTable  # noqa: E402
from ddsm.checkpoint import training_data  # noqa: E402
from ddsm.diffusion.noise import NoiseSchedule  # noqa: E402
from ddsm.io import write_atomic  # noqa: E402
from ddsm.metrics.featurenet import FeatureNet  # noqa: E402
from ddsm.metrics.fid import reference_images  # noqa: E402
from ddsm.metrics.verdict import FULL, Verdict, VerdictSettings, worse_than  # noqa: E402
from ddsm.plan import StepPlan  # noqa: E402
from ddsm.report.export import time_schedules  # noqa: E402
from ddsm.samplers import make_sampler  # noqa: E402
from ddsm.samplers.batched import generate_many  # noqa: E402
from ddsm.search.config import SearchConfig  # noqa: E402
from ddsm.search.folder import load_search  # noqa: E402
from ddsm.search.front import hypervolume_draws  # noqa: E402

PARTS = ("costs", "search", "verdict", "speed", "confirm")
INTERVALS = (2, 3, 4, 5)  # DeepCache: a full step every N steps
SPACE = ROOT / "search_spaces" / "digits.yaml"
#: family -> search folder under --work
FRONTS = {"width front": "width", "joint front": "joint", "joint latency front": "joint-latency"}


def _round_robin(calls: dict, repeats: int) -> dict:
    # median seconds of each call, timed in rounds (every call once per round, the order rotating), so load that
    # drifts during the measurement hits every call alike; one untimed round first
    keys, times = list(calls), {k: [] for k in calls}
    with torch.no_grad():
        for r in range(repeats + 1):
            for j in range(len(keys)):
                k = keys[(j + r) % len(keys)]
                t0 = time.perf_counter()
                calls[k]()
                if r:
                    times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def part_costs(net, args) -> tuple[pd.DataFrame, dict]:
    model = net.model.eval()
    full = count_macs(model, 1.0).total
    rows = []
    gen = torch.Generator().manual_seed(0)
    for b in (1, 64):
        x = torch.randn(b, model.in_channels, model.image_size, model.image_size, generator=gen)
        t = torch.full((b,), 500.0)
        calls, info = {}, {}
        for w in model.widths:
            sub = model.extract_subnet(w).eval()  # a plain subnet per width: the call a deployment would time
            calls[(w, None)] = lambda sub=sub: sub(x, t)
            info[(w, None)] = count_macs(model, w).total / full
            for level in model.reuse_levels():
                with torch.no_grad():
                    _, deep = sub.forward_reuse(x, t, level=level, deep=None)
                calls[(w, level)] = lambda sub=sub, level=level, deep=deep: sub.forward_reuse(x, t, level=level,
                                                                                              deep=deep)
                info[(w, level)] = count_cached_macs(model, w, level).total / full
        seconds = _round_robin(calls, args.repeats)
        base = seconds[(1.0, None)]
        rows += [{"width": w, "call": "full" if level is None else "cached", "level": level, "batch": b,
                  "mac_share": info[w, level], "seconds": sec, "time_share": sec / base}
                 for (w, level), sec in seconds.items()]
    return pd.DataFrame(rows), {"full_macs": full, "repeats": args.repeats, "levels": list(model.reuse_levels()),
                                "timing": "median of round-robin repeats, extracted subnets, one process"}


def joint_space_file(args, latency: bool = False) -> Path:
    """digits.yaml plus reuse genes at ``--level``: the same recipe, one more choice per gene (``latency``: priced
    by the measured time of one call at batch 1 instead of MACs)."""
    doc = yaml.safe_load(Path(args.space).read_text())
    doc["reuse"] = {"level": args.level}
    if latency:
        doc["objectives"] = {**doc["objectives"], "cost": "latency", "batch": 1}
    path = Path(args.work) / f"{Path(args.space).stem}-reuse-level{args.level}{'-latency' if latency else ''}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def part_search(args) -> dict:
    out = {}
    ddsm = str(Path(sys.executable).parent / "ddsm")
    table = Path(args.work) / "cost.json"
    if not table.exists():  # the latency search's prices: one call per width (full and cached), batches 1 and 64
        subprocess.run([ddsm, "cost", "--checkpoint", args.checkpoint, "--out", str(table), "--batch-size", "1",
                        "--batch-size", "64", "--cache-level", str(args.level), "--repeats", "30", "--no-progress"],
                       check=True)
    searches = [("width", Path(args.space)), ("joint", joint_space_file(args))]
    if SearchConfig.load(args.space).sampler.guidance_scale in (None, 1.0):
        searches.append(("joint-latency", joint_space_file(args, latency=True)))
    else:  # a measured latency table times one pass per call; ddsm search refuses it for a guided sampler
        out["joint-latency"] = {"skipped": "a guided search prices its two passes per call in MACs only"}
    for name, space in searches:
        folder = Path(args.work) / name
        cmd = [ddsm, "search", "--space", str(space), "--checkpoint", args.checkpoint, "--out", str(folder),
               "--no-progress",
               *(["--cost", str(table)] if name == "joint-latency" else [])]
        if (folder / "search.json").exists():
            cmd.append("--resume")
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True)
        out[name] = {"command": " ".join(cmd[1:]), "seconds_this_run": round(time.perf_counter() - t0, 1),
                     "front": len(load_search(folder).front)}
        print(f"search {name}: {out[name]}", flush=True)
    return out


def deepcache_plan(steps: int, n: int, level: int, width: float = 1.0) -> StepPlan:
    return StepPlan((width,) * steps, cached=tuple(i % n != 0 for i in range(steps)), cache_level=level)


def candidates(net, args) -> tuple[dict[str, tuple[str, StepPlan]], SearchConfig]:
    """name -> (family, plan): both fronts' members, the DeepCache intervals and the uniform widths."""
    runs = {fam: load_search(Path(args.work) / folder) for fam, folder in FRONTS.items()
            if (Path(args.work) / folder / "front.json").exists()}
    space = runs["width front"].space
    steps = space.sampler.steps
    out: dict[str, tuple[str, StepPlan]] = {}
    for fam, run_ in runs.items():
        for i, m in enumerate(run_.front.to_dict(orient="records"), start=1):
            out[f"{fam} #{i}"] = (fam, run_.plan_of(m))
    for n in INTERVALS:
        out[f"DeepCache N={n}"] = ("DeepCache", deepcache_plan(steps, n, args.level))
    for w in net.config.geometry.widths[:-1]:
        out[f"uniform {w:g}"] = ("uniform", StepPlan((w,) * steps))
    return out, space


def _ends(iv) -> tuple[float, float]:
    return iv.low, iv.high


def _against_full(res, name: str) -> dict:
    """The FID difference of ``name`` from full width with its interval, and every metric it is significantly worse
    in (the per-seed proxy left out)."""
    worse = [m for m in res.metrics if m != "proxy" and worse_than(m, *_ends(res.compare(name, FULL, m)))]
    d = res.compare(name, FULL, "fid")
    return {"fid_minus_full": d.value, "low": d.low, "high": d.high, "worse_in": ",".join(worse)}


def _cost_table_path(args) -> Path:
    return Path(args.cost_table) if args.cost_table else Path(args.work) / "cost.json"


def time_models(net, args) -> dict[int, CostModel]:
    """batch -> the latency cost model (full and cached calls at ``--level``) of the measured cost table: a plan's
    time share is the sum of its calls' measured seconds over full width's."""
    table = CostTable.load(_cost_table_path(args), net.config)
    widths = net.config.geometry.widths
    return {b: table.with_cached(table.cost_model("latency", widths, batch=b), args.level, "latency", batch=b)
            for b in (1, 64) if b in table.batch_sizes}


def part_verdict(net, args, features, data) -> tuple[pd.DataFrame, dict]:
    cands, space = candidates(net, args)
    macs = CostModel.count(net, net.config.geometry.widths).count_cached(net, args.level)
    settings = VerdictSettings(num=args.num, teacher_num=2 * args.num, draws=args.draws)
    sampler = make_sampler(NoiseSchedule(net.config.diffusion), space.sampler)
    unique = list(dict.fromkeys(p for _, p in cands.values()))
    t0 = time.perf_counter()
    by_level: dict = {}
    for p in unique:  # one batched call per cache level (generate_many samples one level at a time)
        by_level.setdefault(p.cache_level, []).append(p)
    x_of = {}
    for plans in by_level.values():
        for p, x in zip(plans, generate_many(net.model, sampler, plans, list(settings.seeds), fuse=False)):
            x_of[p] = x
    samples = {name: x_of[p] for name, (_, p) in cands.items()}
    sampling_s = time.perf_counter() - t0
    judge = Verdict(net, space.sampler, features, reference_images(data, "all"), settings,
                    search_seeds=space.search_seeds)
    res = judge.score({}, samples=samples)
    times = time_models(net, args)
    rows = []
    for name, (fam, p) in cands.items():
        rows.append({"schedule": name, "family": fam, "mac_share": macs.share(p),
                     **{f"time_share_b{b}": m.share(p) for b, m in times.items()}, "cached_steps": p.cached_steps,
                     "widths": " ".join(f"{w:g}" for w in p.widths),
                     "cached": "".join("c" if c else "." for c in p.cached) if p.cached else "",
                     "fid": res.interval(name, "fid").value, **_against_full(res, name)})
    table = pd.DataFrame(rows).sort_values(["family", "mac_share"]).reset_index(drop=True)
    summary: dict = {"seeds": f"{settings.seeds.start}..{settings.seeds.stop - 1}", "n": args.num,
                     "sampling_seconds": round(sampling_s, 1), "level": args.level,
                     "full_fid": res.interval(FULL, "fid").value,
                     "time_shares": "sum of the cost table's measured call times (batch 1 and 64) over full width's "
                                    f"({_cost_table_path(args)})",
                     "cheapest_no_loss": {}, "cheapest_no_loss_by_time_b1": {}}
    keys = ("schedule", "mac_share", *[f"time_share_b{b}" for b in times], "fid_minus_full", "low", "high")
    for by, col in (("cheapest_no_loss", "mac_share"), ("cheapest_no_loss_by_time_b1", "time_share_b1")):
        if col not in table:  # a cost table without batch 1
            continue
        for fam, rows_ in table.groupby("family"):
            ok = rows_[rows_["worse_in"] == ""].sort_values(col)
            summary[by][fam] = None if ok.empty else {k: ok.iloc[0][k] for k in keys}
    worst = float(table["fid"].max())
    ref = (worst + 0.1 * abs(worst), 1.1)
    hv = {}
    fams = [f for f in ("joint front", "joint latency front", "width front", "DeepCache") if (table["family"] == f).any()]
    for fam in fams:
        members = [(res.draws[r.schedule]["fid"], r.mac_share) for r in table[table["family"] == fam].itertuples()]
        hv[fam] = hypervolume_draws(members, ref=ref)
    summary["hypervolume"] = {"reference": list(ref), "axes": "FID x MACs share of full width",
                              **{f: {"value": d.value, "interval": [d.interval().low, d.interval().high]}
                                 for f, d in hv.items()}}
    for a, b in (("joint front", "width front"), ("joint front", "DeepCache"), ("joint latency front", "width front")):
        if a not in hv or b not in hv:
            continue
        diff = hv[a].minus(hv[b], settings.level)
        summary["hypervolume"][f"{a} minus {b}"] = {"value": diff.value, "interval": [diff.low, diff.high],
                                                    "differs": diff.excludes(0.0)}
    return table, summary


def part_speed(net, args, verdict: dict) -> dict:
    """Per front (and DeepCache): its cheapest member with no significant loss, else its member closest to full
    width in FID (the verdict's table), timed against full width at batch 1 and 64."""
    cands, space = candidates(net, args)
    sampler = make_sampler(NoiseSchedule(net.config.diffusion), space.sampler)
    full = StepPlan((1.0,) * space.sampler.steps)
    table = pd.read_csv(Path(args.out) / "cache_verdict.csv")
    out = {}
    for fam in ("joint front", "joint latency front", "width front", "DeepCache"):
        best = (verdict.get("cheapest_no_loss") or {}).get(fam)
        why = "cheapest with no significant loss"
        if not best:
            rows = table[table["family"] == fam].sort_values(["fid_minus_full", "mac_share"])
            if rows.empty:
                continue
            best, why = rows.iloc[0].to_dict(), "closest to full width in FID (none is free of a significant loss)"
        plan = cands[best["schedule"]][1]
        flop = 1 - best["mac_share"]
        out[fam] = {"schedule": best["schedule"], "chosen_as": why, "flop_saving": flop,
                    "fid_minus_full": [best["fid_minus_full"], best["low"], best["high"]], "batches": {}}
        for b in (1, 64):
            t = time_schedules(net.model, sampler, [plan, full], list(range(10_000, 10_000 + b)), repeats=args.repeats)
            ts, tf = statistics.median(t[0]), statistics.median(t[1])
            out[fam]["batches"][str(b)] = {"seconds": ts, "full_seconds": tf, "wall_saving": 1 - ts / tf,
                                           "wall_over_flop_saving": (1 - ts / tf) / flop}
            print(f"{fam:<12} batch {b:>3}: {ts:.3f} s vs {tf:.3f} s full; wall saving {1 - ts / tf:.1%}, "
                  f"FLOP saving {flop:.1%}, ratio {(1 - ts / tf) / flop:.2f}", flush=True)
    return out


def _chosen(net, work: str, out: str) -> tuple[argparse.Namespace, dict[str, StepPlan]]:
    """The bench run at ``work`` / ``out`` (its work folder, cache level, space and verdict seeds) and, by label,
    every schedule it found free of a significant loss (its ``cache_verdict.csv``), not only each family's
    cheapest: re-judging only the cheapest would keep the choice's luck out of view."""
    import json

    doc = Path(out) / "cache.json"
    verdict = json.loads(doc.read_text()).get("verdict") if doc.is_file() else None
    if not verdict:
        raise DDSMError(f"{out} holds no bench_cache verdict (cache.json with a verdict); run --parts verdict first")
    table = pd.read_csv(Path(out) / "cache_verdict.csv", keep_default_na=False)
    run = argparse.Namespace(work=work, level=verdict["level"], cost_table=None, verdict_seeds=verdict["seeds"])
    cands, run.space = candidates(net, run)
    return run, {f"{work}: {name}": cands[name][1] for name in table.loc[table["worse_in"] == "", "schedule"]}


def part_confirm(net, args, features, data) -> tuple[pd.DataFrame, dict]:
    space = SearchConfig.load(args.space)
    settings = VerdictSettings(num=args.confirm_num, seed=args.confirm_seed, teacher_num=2 * args.confirm_num,
                               draws=args.draws)
    bad = [spec for spec in args.confirm_also if len(spec.split(":", 1)) != 2 or "" in spec.split(":", 1)]
    if bad:
        raise DDSMError(f"--confirm-also {bad[0]!r} must be WORK:OUT (another run's --work and --out folders)")
    runs = [(args.work, args.out)] + [tuple(spec.split(":", 1)) for spec in args.confirm_also]
    # plan -> its labels and the run it came from (the same width-only member can come from several runs: sampled
    # and judged once)
    labels: dict[StepPlan, list[str]] = {}
    run_of: dict[StepPlan, argparse.Namespace] = {}
    for work, out in runs:
        run, found = _chosen(net, work, out)
        first, last = (int(v) for v in run.verdict_seeds.split(".."))
        if found and first <= settings.seeds.stop - 1 and settings.seeds.start <= last:
            raise DDSMError(f"--confirm-seed {args.confirm_seed} with --confirm-num {args.confirm_num} overlaps "
                             f"the verdict seeds {run.verdict_seeds} of {work}; pick seeds it never saw")
        if found and run.space.sampler != space.sampler:
            raise DDSMError(f"{work} searched with sampler {run.space.sampler}, not --space's "
                             f"{space.sampler}; confirm runs of one sampler together")
        for name, plan in found.items():
            labels.setdefault(plan, []).append(name)
            run_of.setdefault(plan, run)
    if not labels:
        raise DDSMError("no verdict found a schedule free of a significant loss; nothing to confirm")
    sampler = make_sampler(NoiseSchedule(net.config.diffusion), space.sampler)
    samples, t0 = {}, time.perf_counter()
    for plan, names in labels.items():  # one plan at a time: plans of several cache levels
        samples[" = ".join(names)] = generate_many(net.model, sampler, [plan], list(settings.seeds), fuse=False)[0]
    sampling_s = time.perf_counter() - t0
    judge = Verdict(net, space.sampler, features, reference_images(data, "all"), settings,
                    search_seeds=space.search_seeds)
    res = judge.score({}, samples=samples)
    # each run's own prices (its cost table, its cache level's calls), built once per run
    prices = {run.work: (CostModel.count(net, net.config.geometry.widths).count_cached(net, run.level),
                         time_models(net, run)) for run in {r.work: r for r in run_of.values()}.values()}
    rows = []
    for plan, names in labels.items():
        name, (macs, times) = " = ".join(names), prices[run_of[plan].work]
        rows.append({"schedule": name, "mac_share": macs.share(plan),
                     **{f"time_share_b{b}": m.share(plan) for b, m in times.items()},
                     "cached_steps": plan.cached_steps, **_against_full(res, name)})
    table = pd.DataFrame(rows).sort_values("mac_share").reset_index(drop=True)
    full = res.interval(FULL, "fid")
    summary = {"seeds": f"{settings.seeds.start}..{settings.seeds.stop - 1}", "n": args.confirm_num,
               "sampling_seconds": round(sampling_s, 1), "runs": [f"{w}:{o}" for w, o in runs],
               "full_fid": full.value, "full_fid_interval": [full.low, full.high],
               "holds": table.loc[table["worse_in"] == "", "schedule"].tolist()}
    return table, summary


def main() -> int:
    import json

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated parts [{','.join(PARTS)}]")
    ap.add_argument("--checkpoint", default="digits", help="supernet: a shipped name or a run folder [digits]")
    ap.add_argument("--space", default=str(SPACE), help="width search space; the joint ones add reuse genes to it "
                    "[search_spaces/digits.yaml]")
    ap.add_argument("--featurenet", default="digits", help="feature net of the data [digits]")
    ap.add_argument("--level", type=int, default=1, help="cache level of the joint search and DeepCache [1]")
    ap.add_argument("--num", type=int, default=1000, help="held-out samples per schedule [1000]")
    ap.add_argument("--draws", type=int, default=200, help="bootstrap resamples [200]")
    ap.add_argument("--repeats", type=int, default=10, help="timed repeats [10]")
    ap.add_argument("--cost-table", help="measured cost table (ddsm cost --cache-level L, batches 1 and 64) that "
                    "prices the verdict's time shares [<work>/cost.json, which the search part measures]")
    ap.add_argument("--confirm-seed", type=int, default=20_000, help="first seed of the confirm part [20000]")
    ap.add_argument("--confirm-num", type=int, default=1000, help="samples per schedule in the confirm part [1000]")
    ap.add_argument("--confirm-also", action="append", default=[], metavar="WORK:OUT",
                    help="another bench_cache run (its --work and --out) whose chosen schedules the confirm part "
                    "judges too; repeatable")
    ap.add_argument("--work", default=str(ROOT / "runs" / "bench-cache"), help="folder for the searches")
    ap.add_argument("--out", default=str(ROOT / "experiments" / "results"), help="folder for the results")
    args = ap.parse_args()
    parts = parse_parts(args.parts, PARTS)
    net = load_supernet(args.checkpoint)
    data = training_data(args.checkpoint, net.config.image_geometry)  # a latent model: pixels at its decoder's size
    features = FeatureNet.load(args.featurenet, data)
    out = Path(args.out)
    doc: dict = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "threads": torch.get_num_threads(),
                 "torch": torch.__version__}
    fmt = {"float_format": lambda v: f"{v:.4g}", "index": False}
    if "costs" in parts:
        table, meta = part_costs(net, args)
        print(table.to_string(**fmt), flush=True)
        write_atomic(out / "cache_costs.csv", lambda p: table.to_csv(p, index=False))
        # a full call has no level: null in the JSON, not NaN (which strict JSON readers refuse)
        doc["costs"] = {**meta, "rows": table.astype(object).where(table.notna(), None).to_dict(orient="records")}
        write_parts(out / "cache.json", doc, ["costs"], PARTS)
    if "search" in parts:
        doc["search"] = part_search(args)
        write_parts(out / "cache.json", doc, ["search"], PARTS)

    def judged(part: str, table: pd.DataFrame, summary: dict) -> None:
        # a judging part's table and summary: printed, the table as cache_<part>.csv, the summary into cache.json
        print(table.to_string(**fmt), flush=True)
        print(json.dumps(summary, indent=1, default=float), flush=True)
        write_atomic(out / f"cache_{part}.csv", lambda p: table.to_csv(p, index=False))
        doc[part] = summary
        write_parts(out / "cache.json", doc, [part], PARTS)

    if "verdict" in parts:
        judged("verdict", *part_verdict(net, args, features, data))
    if "speed" in parts:
        verdict = doc.get("verdict") or json.loads((out / "cache.json").read_text()).get("verdict", {})
        doc["speed"] = part_speed(net, args, verdict)
        write_parts(out / "cache.json", doc, ["speed"], PARTS)
    if "confirm" in parts:
        judged("confirm", *part_confirm(net, args, features, data))
    return 0


if __name__ == "__main__":
    run(main)
