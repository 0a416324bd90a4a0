"""SFDDM on digits: do distilled K-step students beat the teacher's own K-step DDIM, and does steps x widths pay?

Three parts, one script; every judgement is the verdict's (``ddsm.metrics.verdict``): FID, KID, precision,
recall, classifier confidence, teacher FID and proxy in the shipped feature net's space, on held-out seeds,
each with a 95 % basic bootstrap interval; differences are paired (same seeds, same resamples). The reference
("full") is the teacher at full width with DDIM 20 steps, the sampler the width search uses.

1. **Students** (``students``): each student at full width against the teacher's DDIM on the *same* K timesteps
   (the student before distillation), and against the teacher at 20 and 50 steps.
2. **Growth** (``growth``): a student's EMA snapshots (``--growth-run``; every ``snapshot_every`` steps and the
   final one) at full width against the same references, and each snapshot against the one before it (paired:
   it must not get significantly worse as it trains); the distillation's training time against the teacher's.
3. **Front** (``front``): the joint search of ``--joint`` (default ``search_spaces/digits-steps.yaml``: the
   teacher and the students, widths per step) in ``--work``; every member of the joint front and of the
   teacher's width-only front (the same search's teacher part) judged on ``--front-num`` held-out seeds.
   Hypervolume in (FID, MACs share of the teacher's full width) of both fronts against one reference point, with
   the paired interval of the difference; per front the cheapest member significantly worse than the teacher
   at 20 steps in no verdict metric but the proxy (a pixel distance to the 20-step sample, which any other
   sampler changes).

    python experiments/bench_sfddm.py                       # every part
    python experiments/bench_sfddm.py --parts students --num 200

Prints tables; writes ``<out>/sfddm.json`` (sections of parts not rerun are kept; ``part_commands`` names the
command of each) and ``<out>/sfddm_*.csv`` atomically.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

from _script import parse_parts, run, write_parts  # noqa: E402

from ddsm import DDSMError, load_supernet  # noqa: E402
from ddsm.checkpoint import training_data  # noqa: E402
from ddsm.diffusion.noise import NoiseSchedule  # noqa: E402
from ddsm.distill import student_sampler  # noqa: E402
from ddsm.io import write_atomic  # noqa: E402
from ddsm.metrics.featurenet import FeatureNet  # noqa: E402
from ddsm.metrics.fid import reference_images  # noqa: E402
from ddsm.metrics.verdict import FULL, METRICS, Verdict, VerdictSettings, worse_than  # noqa: E402
from ddsm.plan import StepPlan  # noqa: E402
from ddsm.samplers import SamplerConfig, make_sampler  # noqa: E402
from ddsm.samplers.batched import generate_many  # noqa: E402
from ddsm.search.front import hypervolume_draws  # noqa: E402

PARTS = ("students", "growth", "front")
STUDENTS = ("digits-sfddm-k2", "digits-sfddm-k4", "digits-sfddm-k8")


def _full_samples(net, sampler_cfg: SamplerConfig, seeds) -> torch.Tensor:
    sampler = make_sampler(NoiseSchedule(net.config.diffusion), sampler_cfg)
    plan = StepPlan((max(net.config.unet.widths),) * sampler_cfg.steps)
    return generate_many(net.model, sampler, [plan], list(seeds), batch_size=256, fuse=False)[0]


def _teacher_same_k(student, opts: dict) -> SamplerConfig:
    """The teacher's DDIM on a student's K timesteps, guided as ``opts`` say even where the student has its
    guidance distilled in (and so samples unguided)."""
    return student_sampler(student.model_copy(update={"guidance_scale": None}), **opts)


def _worse(res, a: str, b: str, metric: str) -> bool:
    d = res.compare(a, b, metric)
    return d.excludes(0.0) and (d.value < 0 if METRICS[metric][1] else d.value > 0)


def _rows(res, names: list[str], against: list[str], extra: dict) -> pd.DataFrame:
    rows = []
    for name in names:
        for m in res.metrics:
            iv = res.interval(name, m)
            row = {"model": name, **extra.get(name, {}), "metric": m, "value": iv.value, "low": iv.low,
                   "high": iv.high, "n": iv.n}
            for b in against:
                if b == name:
                    continue
                d, col = res.compare(name, b, m), "full" if b == FULL else b.replace(" ", "_")
                row.update({f"minus_{col}": d.value, f"minus_{col}_low": d.low, f"minus_{col}_high": d.high,
                            f"differs_{col}": d.excludes(0.0)})
            rows.append(row)
    return pd.DataFrame(rows)


def _judge(teacher, args, features, data, samples: dict, settings) -> object:
    judge = Verdict(teacher, SamplerConfig(kind="ddim", steps=20, **args.opts), features, reference_images(data, "all"),
                    settings, search_seeds=range(0, 64))
    return judge.score({}, samples=samples)


def part_students(teacher, students: dict, args, features, data) -> tuple[pd.DataFrame, dict]:
    settings = VerdictSettings(num=args.num, seed=args.seed, teacher_num=2 * args.num, draws=args.draws)
    seeds = settings.seeds
    samples, extra, t0 = {}, {}, time.perf_counter()
    samples["teacher-50"] = _full_samples(teacher, SamplerConfig(kind="ddim", steps=50, **args.opts), seeds)
    extra["teacher-50"] = {"steps": 50}
    for name, net in students.items():
        k = net.config.student.steps
        own = student_sampler(net.config.student, **args.opts)
        samples[f"teacher-ddim{k}"] = _full_samples(teacher, _teacher_same_k(net.config.student, args.opts), seeds)
        samples[name] = _full_samples(net, own, seeds)
        extra[f"teacher-ddim{k}"] = {"steps": k}
        extra[name] = {"steps": k}
    before = {}
    for name, net in getattr(args, "before_nets", {}).items():  # the same K's earlier student, same seeds
        samples[name] = _full_samples(net, student_sampler(net.config.student, **args.opts), seeds)
        extra[name] = {"steps": net.config.student.steps, "role": "before"}
        before[net.config.student.steps] = name
    res = _judge(teacher, args, features, data, samples, settings)
    names = [FULL, *samples]
    table = _rows(res, names, [FULL, "teacher-50"], {FULL: {"steps": 20}, **extra})
    for name, net in students.items():  # each student against its own K-step DDIM starting point
        k = net.config.student.steps
        for m in res.metrics:
            if k in before:  # after the fix minus before it (paired): negative FID = the fix helped
                d = res.compare(name, before[k], m)
                sel = (table["model"] == name) & (table["metric"] == m)
                table.loc[sel, "minus_before"] = d.value
                table.loc[sel, "minus_before_low"] = d.low
                table.loc[sel, "minus_before_high"] = d.high
                table.loc[sel, "differs_before"] = d.excludes(0.0)
            d = res.compare(name, f"teacher-ddim{k}", m)
            sel = (table["model"] == name) & (table["metric"] == m)
            table.loc[sel, "minus_ddim_same_k"] = d.value
            table.loc[sel, "minus_ddim_same_k_low"] = d.low
            table.loc[sel, "minus_ddim_same_k_high"] = d.high
            table.loc[sel, "differs_ddim_same_k"] = d.excludes(0.0)
    meta = {"seeds": f"{seeds.start}..{seeds.stop - 1}", "n": args.num, "draws": args.draws,
            "reference": "teacher, full width, DDIM 20 (leading spacing)", "seconds": round(time.perf_counter() - t0, 1),
            "students": {name: {"steps": net.config.student.steps, "phi": list(net.config.student.phi),
                                "guidance_distilled": net.config.student.guidance_scale,
                                "train_seconds": net.header.get("train_seconds"), "step": net.header.get("step")}
                         for name, net in students.items()},
            "before": {name: {"steps": net.config.student.steps, "prediction": net.config.diffusion.prediction_type,
                              "step": net.header.get("step")} for name, net in getattr(args, "before_nets", {}).items()}}
    return table, meta


def part_growth(teacher, args, features, data) -> tuple[pd.DataFrame, dict]:
    folder = Path(args.growth_run)
    snaps = sorted((folder / "snapshots").glob("ema-*.safetensors"))
    if not snaps:
        raise DDSMError(f"{str(folder)!r} holds no snapshots/ema-*.safetensors; give the K=4 distillation run")
    nets = {f"step {int(p.stem.split('-')[1])}": load_supernet(p) for p in snaps}
    final = load_supernet(folder / "supernet.safetensors")
    nets[f"step {final.header.get('step')}"] = final
    settings = VerdictSettings(num=args.num, seed=args.seed, teacher_num=2 * args.num, draws=args.draws)
    own = student_sampler(final.config.student, **args.opts)
    samples = {"teacher-ddim-same-k": _full_samples(teacher, _teacher_same_k(final.config.student, args.opts),
                                                    settings.seeds)}
    samples.update({name: _full_samples(net, own, settings.seeds) for name, net in nets.items()})
    res = _judge(teacher, args, features, data, samples, settings)
    table = _rows(res, list(samples), [FULL, "teacher-ddim-same-k"], {})
    # each snapshot against the one before it (paired, same seeds): the distillation must not get worse as it trains
    names = sorted(nets, key=lambda n: int(n.split()[1]))
    steps_vs_previous = []
    for prev, nxt in zip(names, names[1:]):
        for m in res.metrics:
            d = res.compare(nxt, prev, m)
            steps_vs_previous.append({"snapshot": nxt, "previous": prev, "metric": m, "minus_previous": d.value,
                                      "low": d.low, "high": d.high,
                                      "significantly_worse": worse_than(m, d.low, d.high)})
    rate = final.header.get("train_seconds") / max(1, final.header.get("step"))
    table["distill_seconds"] = [0.0 if n.startswith("teacher") else round(rate * int(n.split()[1]), 1)
                                for n in table["model"]]
    meta = {"run": str(folder), "steps": final.config.student.steps, "n": args.num,
            "seeds": f"{settings.seeds.start}..{settings.seeds.stop - 1}",
            "distill_seconds_per_step": rate, "distill_train_seconds": final.header.get("train_seconds"),
            "teacher_train_seconds": teacher.header.get("train_seconds"), "teacher_steps": teacher.header.get("step"),
            "vs_previous_snapshot": steps_vs_previous,
            "worse_than_previous": sorted({f"{r['snapshot']} {r['metric']}" for r in steps_vs_previous
                                           if r["significantly_worse"] and r["metric"] != "proxy"})}
    return table, meta


def _call_seconds(path: str, teacher_calls: int) -> dict:
    """{(width, cached): seconds of one call} from a ``ddsm cost --cache-level L`` table, and the teacher's
    full-width schedule's total under the key "full"."""
    from ddsm.io import read_json

    table = read_json(Path(path), "cost table")
    out = {(float(e["width"]), "cache_level" in e): float(e["latency_s"]) for e in table["entries"]
           if int(e.get("batch_size", table.get("batch_size", 1))) == 1}
    out["full"] = teacher_calls * out[(1.0, False)]
    return out


def _time_share(plan, seconds: dict) -> float:
    """A schedule's predicted wall time over the teacher's full-width schedule's, from the per-call seconds."""
    cached = plan.cached or (False,) * len(plan.widths)
    return sum(seconds[(float(w), bool(c))] for w, c in zip(plan.widths, cached)) / seconds["full"]


def part_front(teacher, args, features, data) -> tuple[pd.DataFrame, dict]:
    from ddsm.search.joint import TEACHER, JointSpace, member_plan, prepare_joint, run_joint
    from ddsm.search.folder import load_search

    joint = JointSpace.load(args.joint)
    # predicted wall time at batch 1: the measured seconds of each call (width, cached or not) of --time-table,
    # read first so a bad file fails before the long sampling
    seconds = _call_seconds(args.time_table, joint.base_space().sampler.calls) if args.time_table else None
    arms = prepare_joint(joint)
    out = Path(args.work) / "joint"
    t0 = time.perf_counter()
    res = run_joint(joint, arms, out, resume=(out / "joint.json").exists(), runner="serial", progress=args.progress,
                    device="cpu")
    search_s = time.perf_counter() - t0
    nets = {a.name: a.net for a in arms}
    spaces = {a.name: a.space for a in arms}
    def label(prefix, plan):  # cached steps (reuse genes) are marked "c" after their width
        return f"{prefix} " + " ".join(f"{w:g}{'c' if plan.cached and plan.cached[i] else ''}"
                                       for i, w in enumerate(plan.widths))

    members = {}
    for r in res.front.to_dict(orient="records"):
        plan = member_plan(r)
        members[label(f"joint {r['model']}", plan)] = (r["model"], plan, r["share"])
    own = load_search(out / "models" / TEACHER)
    teacher_only = {}
    for r in own.front.to_dict(orient="records"):
        plan = own.plan_of(r)
        teacher_only[label("teacher", plan)] = (TEACHER, plan, r["share"])
    settings = VerdictSettings(num=args.front_num, teacher_num=2 * args.front_num, draws=args.draws)
    unique = {}
    for key, (model, plan, share) in {**members, **teacher_only}.items():
        unique.setdefault((model, plan), (key, share))
    samples = {}
    for (model, plan), (key, _) in unique.items():
        net = nets[model]
        sampler = make_sampler(NoiseSchedule(net.config.diffusion), spaces[model].sampler)
        samples[key] = generate_many(net.model, sampler, [plan], list(settings.seeds), batch_size=256, fuse=False)[0]
    v = _judge(teacher, args, features, data, samples, settings)

    def key_of(model, plan):
        return unique[(model, plan)][0]

    table_rows, summary = [], {}
    ref_fids = []
    fronts = {"joint": members, "teacher_only": teacher_only}
    for front_name, ms in fronts.items():
        cheapest = None
        for name, (model, widths, share) in sorted(ms.items(), key=lambda kv: kv[1][2]):
            k = key_of(model, widths)
            worse = [m for m in v.metrics if m != "proxy" and _worse(v, k, FULL, m)]
            iv, d20 = v.interval(k, "fid"), v.compare(k, FULL, "fid")
            ref_fids.append(iv.value)
            # The paired difference, not the member's own FID interval: resampling seeds biases FID itself.
            table_rows.append({"front": front_name, "model": model, "steps": len(widths),
                               "widths": " ".join(f"{w:g}" for w in widths.widths),
                               "cached_steps": widths.cached_steps, "share": share,
                               **({"time_share_b1": _time_share(widths, seconds)} if seconds else {}),
                               "fid": iv.value,
                               "fid_minus_teacher20": d20.value, "low": d20.low, "high": d20.high,
                               "worse_than_teacher20": ",".join(worse)})
            if cheapest is None and not worse:
                d = v.compare(k, FULL, "fid")
                cheapest = {"model": model, "widths": list(widths.widths), "cached": list(widths.cached or ()),
                            "share": share, "flop_saving": 1 - share,
                            **({"time_share_b1": _time_share(widths, seconds)} if seconds else {}),
                            "fid_minus_teacher20": d.value, "interval": [d.low, d.high]}
        summary[front_name] = {"members": len(ms), "cheapest_without_significant_loss": cheapest}
    worst = max(ref_fids)
    ref_pt = (worst + 0.1 * abs(worst), 1.1)
    hv = {}
    for front_name, ms in fronts.items():
        keys = [key_of(m, w) for m, w, _ in ms.values()]
        shares = [s for _, _, s in ms.values()]

        hv[front_name] = hypervolume_draws([(v.draws[k]["fid"], sh) for k, sh in zip(keys, shares)], ref=ref_pt)
    diff = hv["joint"].minus(hv["teacher_only"], settings.level)
    summary["hypervolume"] = {"reference": list(ref_pt), "axes": "FID (lower better) x MACs share of teacher full",
                              **{k: {"value": d.value, "interval": [d.interval().low, d.interval().high]}
                                 for k, d in hv.items()},
                              "joint_minus_teacher_only": {"value": diff.value, "interval": [diff.low, diff.high],
                                                           "differs": diff.excludes(0.0)}}
    summary["search"] = {"seconds": round(search_s, 1), "proxy_hypervolume_joint": res.hypervolume,
                         "models": {n: {"evaluated": len(r.evaluations), "front": len(r.front)}
                                    for n, r in res.results.items()},
                         "verdict_seeds": f"{settings.seeds.start}..{settings.seeds.stop - 1}"}
    full_iv = v.interval(FULL, "fid")
    summary["teacher20_fid"] = {"value": full_iv.value, "interval": [full_iv.low, full_iv.high]}
    return pd.DataFrame(table_rows), summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--teacher", default="digits", help="teacher supernet [digits]")
    ap.add_argument("--students", default=",".join(STUDENTS), help="comma-separated student checkpoints")
    ap.add_argument("--before", default="", help="comma-separated earlier students, one per K, judged on the same "
                    "seeds as --students (before/after a fix, paired)")
    ap.add_argument("--growth-run", default=str(ROOT / "runs" / "sfddm-k4"), help="K=4 distillation run folder")
    ap.add_argument("--joint", default=str(ROOT / "search_spaces" / "digits-steps.yaml"), help="joint space of part 3")
    ap.add_argument("--time-table", default="", help="part 3: a `ddsm cost --cache-level L` table (batch 1) whose "
                    "per-call seconds predict each member's time share of the teacher's full width")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    ap.add_argument("--featurenet", default="digits", help="feature net of the teacher's data: a shipped name "
                    "(digits, mnist) or a file [digits]")
    ap.add_argument("--guidance-scale", type=float, default=2.0, help="classifier-free guidance scale of a "
                    "class-conditional teacher and its students (issue 29's, chosen on search seeds) [2]")
    ap.add_argument("--num", type=int, default=1000, help="held-out samples per model in parts 1 and 2 [1000]")
    ap.add_argument("--seed", type=int, default=VerdictSettings.seed, help="first sample seed of parts 1 and 2: the "
                    "held-out verdict seeds by default; 2000 (search seeds) to choose something, e.g. a snapshot, "
                    f"without looking at them [{VerdictSettings.seed}]")
    ap.add_argument("--front-num", type=int, default=500, help="held-out samples per front member in part 3 [500]")
    ap.add_argument("--draws", type=int, default=200, help="bootstrap resamples [200]")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads [2]")
    ap.add_argument("--work", default=str(ROOT / "runs" / "bench-sfddm"), help="folder for the joint search")
    ap.add_argument("--out", default=str(ROOT / "experiments" / "results"), help="folder for the results")
    ap.add_argument("--progress", action="store_true", help="show progress bars")
    args = ap.parse_args(argv)
    parts = parse_parts(args.parts, PARTS)
    torch.set_num_threads(args.threads)
    teacher = load_supernet(args.teacher)
    data = training_data(args.teacher, teacher.config.geometry)  # labelled for a class-conditional teacher
    features = FeatureNet.load(args.featurenet, data)
    # a class-conditional teacher and its students sample guided, one label per seed (as the verdict does)
    args.opts = {"guidance_scale": args.guidance_scale} if teacher.model.num_classes else {}
    out = Path(args.out)
    doc: dict = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "teacher": args.teacher,
                 "featurenet": args.featurenet, "sampler_options": args.opts,
                 "threads": args.threads, "torch": torch.__version__}
    t_all = time.perf_counter()
    fmt = {"float_format": lambda v: f"{v:.4g}", "index": False}
    if "students" in parts:
        students = {s: load_supernet(s) for s in args.students.split(",") if s}
        args.before_nets = {f"before {b}": load_supernet(b) for b in args.before.split(",") if b}
        print(f"\n== students at full width ({args.num} samples, seeds {args.seed}..) ==", flush=True)
        table, meta = part_students(teacher, students, args, features, data)
        cols = ["model", "steps", "metric", "value", "low", "high", "minus_full", "minus_full_low", "minus_full_high",
                "minus_ddim_same_k", "minus_ddim_same_k_low", "minus_ddim_same_k_high", "minus_before",
                "minus_before_low", "minus_before_high"]
        print(table[[c for c in cols if c in table]].to_string(**fmt))
        write_atomic(out / "sfddm_students.csv", lambda p: table.to_csv(p, index=False))
        doc["students"] = {**meta, "rows": table.to_dict(orient="records")}
    if "growth" in parts:
        print(f"\n== quality against distillation time ({args.num} samples, seeds {args.seed}..) ==", flush=True)
        table, meta = part_growth(teacher, args, features, data)
        cols = ["model", "distill_seconds", "metric", "value", "low", "high", "minus_full", "minus_full_low",
                "minus_full_high", "minus_teacher-ddim-same-k", "minus_teacher-ddim-same-k_low",
                "minus_teacher-ddim-same-k_high"]
        print(table[table["metric"].isin(["fid", "precision", "recall"])][cols].to_string(**fmt))
        print(f"  {meta}")
        write_atomic(out / "sfddm_growth.csv", lambda p: table.to_csv(p, index=False))
        doc["growth"] = {**meta, "rows": table.to_dict(orient="records")}
    if "front" in parts:
        print("\n== joint front (steps x widths) against the teacher's width-only front ==", flush=True)
        table, summary = part_front(teacher, args, features, data)
        print(table.to_string(**fmt))
        for k, v in summary.items():
            print(f"  {k}: {v}")
        write_atomic(out / "sfddm_front.csv", lambda p: table.to_csv(p, index=False))
        doc["front"] = {"summary": summary, "members": table.to_dict(orient="records")}
    doc["wall_seconds"] = round(time.perf_counter() - t_all, 1)
    write_parts(out / "sfddm.json", doc, parts, PARTS)
    print(f"\n-> {out / 'sfddm.json'} ({doc['wall_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    run(main)
