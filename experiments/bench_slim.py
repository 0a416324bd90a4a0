"""Bring your own model: the worked example's slimmed diffusers UNet, measured (issue 17).

The user model is ``experiments/results/user-model`` (``experiments/diffusers_user_model.py``: a diffusers
``UNet2DModel`` trained on the digits with diffusers' own components). It is slimmed twice with the same
recipe (``experiments/configs/slim-user-model.yaml``, 800 steps, seed 0; its header has both commands), once
with importance-ordered channels (``--order importance``) and once in diffusers' own order (``--order none``,
the default). Five parts:

1. **Equivalence** (``equivalence``). The slimmed supernet at width 1 against diffusers' ``UNet2DModel`` on 16
   random inputs at random (integer and fractional) timesteps, fp32: max |difference|. Then the images of
   diffusers' own ``DDIMPipeline`` (20 steps) and ``DDPMPipeline`` (100 steps) with the slimmed model at full
   width (``pipeline_for_schedule``) against the same pipelines with the original model, same generator.
2. **Quality per width** (``widths``). Every width of four nets: each order before any fine-tuning (the raw
   channel prefixes of the original) and after the same 800-step fine-tune; DDIM 20 steps on held-out seeds
   10000.. (the search never sees them), the verdict's metrics with 95 % basic bootstrap intervals; ordered minus
   unordered at the same width and stage, paired (same seeds, same resamples). And the fine-tune's wall time
   against the original's training time (from the recipes).
3. **Growth** (``growth``). Quality against fine-tune time: every width of each order's EMA snapshots
   (``snapshot_every`` in the recipe), from step 0 (the original's prefixes) to the final supernet, on the same
   held-out seeds as part 2; each step paired against the final one, and ordered minus unordered per step.
4. **Hidden-map term** (``hidden``). A third run, ``--order none --hidden-weight 1`` (``--hidden``), against
   the plain ``--order none`` one: the same snapshots and seeds, every metric, with-term minus without, paired.
5. **Front** (``front``). The proxy-ranked search (``--space``, default ``search_spaces/digits-proxy.yaml``) on each
   slimmed model (``--front-orders``), seeds 0..63; every front member and every uniform width judged on the
   held-out seeds; per uniform width below 1, the best front member that costs no more, paired FID difference; hypervolume in
   (FID, MACs share) of the front against that of the uniform widths, paired bootstrap of the difference.

6. **Solvers** (``solvers``, issue 31). The same search on the default-order model with DDIM at 20 steps (10
   genes) and with DPM-Solver++(2M) at 10 steps (5 genes); every member of each front, each solver's uniform
   widths and its full width sampled on the held-out seeds and judged by one verdict whose reference is the
   original (full width) at DDIM 50, paired: each front, and per solver the lowest cost (MACs per image, as a
   share of the DDIM-50 original's) with no metric significantly worse than the reference.

    python experiments/bench_slim.py                        # every part
    python experiments/bench_slim.py --parts widths --num 500

Prints tables; writes ``<out>/slim.json`` (sections of parts not rerun are kept) and ``<out>/slim_*.csv``
atomically. Runs that are missing are named and their rows skipped.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _script import parse_parts, run, write_parts  # noqa: E402

from ddsm import DDSMError, load_supernet  # noqa: E402
from ddsm.data import load_digits  # noqa: E402
from ddsm.io import write_atomic  # noqa: E402
from ddsm.metrics.featurenet import FeatureNet  # noqa: E402
from ddsm.metrics.fid import reference_images  # noqa: E402
from ddsm.metrics.verdict import FULL, Verdict, VerdictSettings  # noqa: E402
from ddsm.plan import StepPlan  # noqa: E402
from ddsm.samplers import SamplerConfig  # noqa: E402

PARTS = ("equivalence", "widths", "growth", "hidden", "front", "solvers")


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def _at_start(ref: str, order: str):
    """The run's supernet with its shared net reset to the original (ordered as the run ordered it): step 0."""
    from ddsm.nn.channel_order import permute_by_importance

    net = load_supernet(ref)
    with torch.no_grad():
        net.model.net.load_state_dict(net.model.original.state_dict())
        if order == "importance":
            permute_by_importance(net.model.net)
    return net


def part_equivalence(args) -> dict:
    from diffusers import DDIMPipeline, DDPMPipeline, UNet2DModel

    from ddsm.integrations.slim_pipeline import pipeline_for_schedule
    from ddsm.schedule import Schedule

    net = load_supernet(args.ordered)
    original = UNet2DModel.from_pretrained(str(Path(args.user_model) / "unet")).eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(16, 1, 16, 16, generator=gen)
    t = torch.cat([torch.randint(0, 1000, (8,), generator=gen).float(), torch.rand(8, generator=gen) * 999])
    with torch.no_grad():
        ours = net.model.set_active_width(1.0)(x, t)
        theirs = original(x, t).sample
    out = {"model_max_abs_diff": float((ours - theirs).abs().max()), "inputs": "16 random (1,16,16), 8 integer and "
           "8 fractional timesteps, fp32"}
    for kind, steps, pipe_cls in (("ddim", 20, DDIMPipeline), ("ddpm", 100, DDPMPipeline)):
        sampler = SamplerConfig(kind=kind, steps=steps, timestep_spacing="leading")
        pipe = pipeline_for_schedule(args.ordered, Schedule.uniform(net.config, sampler, 1.0))
        kw = dict(batch_size=8, num_inference_steps=steps, output_type="np")
        a = pipe(generator=torch.Generator().manual_seed(1), **kw).images
        b = pipe_cls(unet=original, scheduler=pipe.scheduler)(generator=torch.Generator().manual_seed(1), **kw).images
        out[f"{kind}_{steps}_pipeline_images_max_abs_diff"] = float(np.abs(a - b).max())
    return out


def part_widths(args, sampler, features, data) -> tuple[pd.DataFrame, dict]:
    settings = VerdictSettings(num=args.num, teacher_num=2 * args.num, draws=args.draws)
    nets = {("importance", "start"): lambda: _at_start(args.ordered, "importance"),
            ("none", "start"): lambda: _at_start(args.unordered, "none"),
            ("importance", "fine-tuned"): lambda: load_supernet(args.ordered),
            ("none", "fine-tuned"): lambda: load_supernet(args.unordered)}
    draws = {}
    for key, make in nets.items():
        t0 = time.perf_counter()
        net = make()
        widths = net.config.unet.widths
        plans = {f"width {w:g}": StepPlan((w,) * sampler.steps) for w in widths[:-1]}
        res = Verdict(net, sampler, features, reference_images(data, "all"), settings, progress=args.progress) \
            .score(plans)
        draws[key] = {(max(widths) if s == FULL else float(s.split()[1])): (res, s) for s in res.draws}
        print(f"  order {key[0]}, {key[1]}: {len(plans) + 1} widths x {settings.num} samples in "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
    rows = []
    for (order, stage), per_width in draws.items():
        for w, (res, sched) in per_width.items():
            for m, d in res.draws[sched].items():
                iv = res.interval(sched, m)  # a set statistic's (FID, KID...) from bias-centred resamples
                row = {"order": order, "stage": stage, "width": w, "metric": m, "value": iv.value, "low": iv.low,
                       "high": iv.high, "n": iv.n}
                if order == "importance" and w < 1.0:
                    other, other_sched = draws[("none", stage)][w]
                    diff = d.minus(other.draws[other_sched][m], settings.level)
                    row.update({"minus_unordered": diff.value, "minus_unordered_low": diff.low,
                                "minus_unordered_high": diff.high, "differs": diff.excludes(0.0)})
                rows.append(row)
    recipes = {}
    user = json.loads((Path(args.user_model) / "recipe.json").read_text())
    recipes["user_model_train_seconds"] = user["train_seconds"]
    for name, ref in (("ordered", args.ordered), ("unordered", args.unordered)):
        net = load_supernet(ref)
        recipes[f"{name}_finetune_seconds"] = net.header.get("train_seconds")
        recipes[f"{name}_finetune_steps"] = net.header.get("step")
    recipes["finetune_share_of_training"] = recipes["ordered_finetune_seconds"] / user["train_seconds"]
    return pd.DataFrame(rows), {"settings": {"num": settings.num, "seed": settings.seed, "draws": settings.draws,
                                             "level": settings.level}, "times": recipes}


def _print_widths(table: pd.DataFrame) -> None:
    for m in ("fid", "teacher_fid", "confidence", "proxy"):
        sub = table[table["metric"] == m]
        if sub.empty:
            continue
        print(f"\n{m}:")
        for stage in ("start", "fine-tuned"):
            for w in sorted(sub["width"].unique()):
                a = sub[(sub.stage == stage) & (sub.width == w) & (sub.order == "importance")].iloc[0]
                b = sub[(sub.stage == stage) & (sub.width == w) & (sub.order == "none")].iloc[0]
                d = "" if w == 1.0 else (f"   ordered - unordered {_fmt(a.minus_unordered)} "
                                         f"[{_fmt(a.minus_unordered_low)}, {_fmt(a.minus_unordered_high)}]"
                                         + ("*" if a.differs else ""))
                print(f"  {stage:10s} w={w:<5g} ordered {_fmt(a.value)} [{_fmt(a.low)}, {_fmt(a.high)}]  "
                      f"unordered {_fmt(b.value)} [{_fmt(b.low)}, {_fmt(b.high)}]{d}")


def _snapshots(run: str, order: str):
    """(step -> net maker, the final supernet): the original's prefixes (step 0), every EMA snapshot, the final."""
    final = load_supernet(run)
    nets = {0: lambda: _at_start(run, order)}
    for p in sorted((Path(run) / "snapshots").glob("ema-*.safetensors")):
        nets[int(p.stem.split("-")[1])] = lambda p=p: load_supernet(p)
    nets[int(final.header.get("step"))] = lambda: final
    return nets, final


def _judge_snapshots(args, sampler, features, data, runs: dict[str, tuple[str, str]], versus: tuple[str, str],
                     metrics: tuple[str, ...]) -> tuple[pd.DataFrame, dict]:
    """Every width of every run's snapshots (``_snapshots``) on the held-out seeds, one row per metric.

    ``runs`` maps a label to (run folder, channel order). Each row is paired against the same run's final step
    and, for ``versus = (a, b)``, run ``a``'s rows against run ``b``'s at the same step and width. Every snapshot
    shares the frozen original at width 1, so one verdict (the first run's) holds the reference and the teacher
    samples; each snapshot's narrow widths are sampled on the verdict seeds and judged as ``samples`` beside them.
    """
    from ddsm.samplers.batched import generate_many

    settings = VerdictSettings(num=args.num, teacher_num=2 * args.num, draws=args.draws)
    first = next(iter(runs.values()))[0]
    verdict = Verdict(load_supernet(first), sampler, features, reference_images(data, "all"), settings,
                      progress=args.progress)
    samples, keys, rates = {}, {}, {}
    for label, (ref, order) in runs.items():
        nets, final = _snapshots(ref, order)
        rates[label] = final.header.get("train_seconds") / max(1, final.header.get("step"))
        for step, make in nets.items():
            t0 = time.perf_counter()
            net = make()
            widths = net.config.unet.widths[:-1]
            drawn = generate_many(net.model, verdict.sampler, [StepPlan((w,) * sampler.steps) for w in widths],
                                  list(settings.seeds), fuse=False, progress=args.progress)
            for w, x in zip(widths, drawn):
                name = f"{label} step {step} width {w:g}"
                samples[name], keys[(label, step, w)] = x, name
            print(f"  {label}, step {step}: {len(widths)} widths x {settings.num} samples in "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
    res = verdict.score({}, samples=samples)
    a, b = versus
    rows = []
    for (label, step, w), k in keys.items():
        last = max(s for o, s, v in keys if o == label and v == w)
        comparisons = {"final": keys[(label, last, w)]}
        if label == a and (b, step, w) in keys:
            comparisons[b] = keys[(b, step, w)]
        for m in metrics:
            iv = res.interval(k, m)
            row = {"run": label, "step": step, "finetune_seconds": round(rates[label] * step, 1), "width": w,
                   "metric": m, "value": iv.value, "low": iv.low, "high": iv.high, "n": iv.n}
            for name, other in comparisons.items():
                d = res.compare(k, other, m)
                row.update({f"minus_{name}": d.value, f"minus_{name}_low": d.low, f"minus_{name}_high": d.high,
                            f"differs_from_{name}": d.excludes(0.0)})
            rows.append(row)
    full = {m: res.interval(FULL, m) for m in metrics}
    table = pd.DataFrame(rows).sort_values(["run", "metric", "width", "step"], kind="stable").reset_index(drop=True)
    return table, {"settings": {"num": settings.num, "seed": settings.seed, "draws": settings.draws,
                                "level": settings.level, "sampler": f"ddim {sampler.steps}"},
                   "runs": {k: {"run": v[0], "order": v[1]} for k, v in runs.items()},
                   "original_full_width": {m: {"value": iv.value, "interval": [iv.low, iv.high]}
                                           for m, iv in full.items()},
                   "finetune_seconds_per_step": rates}


def part_growth(args, sampler, features, data) -> tuple[pd.DataFrame, dict]:
    """FID per width against fine-tune steps, both orders; ordered minus unordered per step."""
    return _judge_snapshots(args, sampler, features, data,
                            {"importance": (args.ordered, "importance"), "none": (args.unordered, "none")},
                            ("importance", "none"), ("fid",))


def part_hidden(args, sampler, features, data) -> tuple[pd.DataFrame, dict]:
    """The hidden-map term: the same recipe and order with and without it, every metric, per snapshot."""
    return _judge_snapshots(args, sampler, features, data,
                            {"hidden": (args.hidden, "none"), "none": (args.unordered, "none")},
                            ("hidden", "none"), ("fid", "teacher_fid", "precision", "recall", "confidence", "proxy"))


def _print_snapshots(table: pd.DataFrame, versus: str) -> None:
    def iv(r, k):
        return f"{_fmt(r[k])} [{_fmt(r[k + '_low'])}, {_fmt(r[k + '_high'])}]"

    for (label, m, w), sub in table.groupby(["run", "metric", "width"], sort=False):
        print(f"\n  {label}, {m}, width {w:g}:")
        for r in sub.to_dict(orient="records"):
            other = r.get(f"minus_{versus}")
            extra = (f"  - {versus} {iv(r, f'minus_{versus}')}{'*' if r[f'differs_from_{versus}'] else ''}"
                     if isinstance(other, float) and not np.isnan(other) else "")
            print(f"    step {r['step']:4d} ({r['finetune_seconds']:6.1f} s)  {_fmt(r['value'])} "
                  f"[{_fmt(r['low'])}, {_fmt(r['high'])}]  - final {iv(r, 'minus_final')}"
                  f"{'*' if r['differs_from_final'] else ''}{extra}")


def part_front(args, features, data, order: str) -> tuple[pd.DataFrame, dict]:
    from ddsm.search import SearchConfig
    from ddsm.search.front import hypervolume_draws
    from ddsm.search.log import parse_genome
    from ddsm.search.setup import prepare_search
    from ddsm.cost.macs import count_macs

    space = SearchConfig.load(args.space)
    settings = VerdictSettings(num=args.front_num, teacher_num=2 * args.front_num, draws=args.draws)
    ref = {"importance": args.ordered, "none": args.unordered}[order]
    net = load_supernet(ref)
    prepared = prepare_search(space, ref, net=net)
    out = Path(args.work) / ("search-ordered" if order == "importance" else "search-unordered")
    t0 = time.perf_counter()
    resumed = (out / "search.json").exists()  # a finished search resumes in no time: search_seconds is then ~0
    res = prepared.run(out, runner="serial", resume=resumed, progress=args.progress, device="cpu")
    search_s = time.perf_counter() - t0
    widths = net.config.unet.widths
    macs = {w: float(count_macs(net.model, w).total) for w in widths}
    plans, shares = {}, {}
    for g in res.front["genome"]:
        plan = StepPlan.of(space.decode(parse_genome(g)))
        plans[f"front {g}"] = plan
        shares[f"front {g}"] = sum(macs[w] for w in plan.widths) / (macs[1.0] * len(plan.widths))
    for w in widths[:-1]:
        plans[f"uniform {w:g}"] = StepPlan((w,) * space.sampler.steps)
        shares[f"uniform {w:g}"] = macs[w] / macs[1.0]
    verdict = Verdict(net, space.sampler, features, reference_images(data, "all"), settings,
                      search_seeds=space.search_seeds, progress=args.progress).score(plans)
    shares[FULL] = 1.0
    rows = []
    for k in [*plans, FULL]:
        iv = verdict.interval(k, "fid")
        rows.append({"schedule": k, "share": shares[k], "fid": iv.value, "fid_low": iv.low, "fid_high": iv.high,
                     "n": iv.n})
    table = pd.DataFrame(rows)
    front = [k for k in plans if k.startswith("front")]
    versus = {}
    for w in widths[:-1]:
        u = f"uniform {w:g}"
        cheaper = [k for k in front if shares[k] <= shares[u] + 1e-12]
        if not cheaper:
            continue
        best = min(cheaper, key=lambda k: verdict.interval(k, "fid").value)
        d = verdict.compare(best, u, "fid")
        versus[u] = {"uniform_share": shares[u], "member": best, "member_share": shares[best],
                     "fid_member_minus_uniform": d.value, "interval": [d.low, d.high], "differs": d.excludes(0.0)}
    worst = float(table["fid"].max())
    ref_pt = (worst + 0.1 * abs(worst), 1.1)
    uniform = [f"uniform {w:g}" for w in widths[:-1]] + [FULL]
    hv = {name: hypervolume_draws([(verdict.draws[k]["fid"], shares[k]) for k in keys], ref=ref_pt)
          for name, keys in (("front", front + [FULL]), ("uniform", uniform))}
    diff = hv["front"].minus(hv["uniform"], settings.level)
    summary = {"search_seconds": round(search_s, 1), "search_resumed": resumed, "front_members": len(front),
               "search_seeds": [[r.start, r.stop - 1] for r in space.search_seeds], "verdict_num": settings.num,
               "versus_uniform": versus,
               "hypervolume": {"reference": list(ref_pt), "axes": "FID x MACs share of full width",
                               **{k: {"value": v.value, "interval": [v.interval().low, v.interval().high]}
                                  for k, v in hv.items()},
                               "front_minus_uniform": {"value": diff.value, "interval": [diff.low, diff.high],
                                                       "differs": diff.excludes(0.0)}}}
    return table, summary


def part_solvers(args, features, data) -> tuple[pd.DataFrame, dict]:
    from ddsm.cost.macs import count_macs
    from ddsm.diffusion import NoiseSchedule
    from ddsm.metrics.verdict import DEVIATION, METRICS, worse_than
    from ddsm.samplers import make_sampler
    from ddsm.samplers.batched import TrajectoryCache, generate_many
    from ddsm.search import SearchConfig
    from ddsm.search.log import parse_genome
    from ddsm.search.setup import prepare_search

    net = load_supernet(args.unordered)
    widths = net.config.unet.widths
    macs = {w: float(count_macs(net.model, w).total) for w in widths}
    reference = SamplerConfig(kind="ddim", steps=50)
    base_macs = 50 * macs[1.0]  # the original at DDIM 50: what every share below is of
    settings = VerdictSettings(num=args.front_num, teacher_num=2 * args.front_num, draws=args.draws)
    base = SearchConfig.load(args.space)
    arms = {"ddim20": (SamplerConfig(kind="ddim", steps=20), 10), "dpm++10": (SamplerConfig(kind="dpm++", steps=10), 5)}
    samples, shares, meta = {}, {}, {}
    for arm, (sampler, segments) in arms.items():
        space = SearchConfig.model_validate({**base.model_dump(mode="json"), "sampler": sampler.model_dump(mode="json"),
                                            "segments": segments})
        out = Path(args.work) / f"search-{arm}"
        t0 = time.perf_counter()
        resumed = (out / "search.json").exists()
        res = prepare_search(space, args.unordered, net=net).run(out, runner="serial", resume=resumed,
                                                                 progress=args.progress, device="cpu")
        plans = {f"{arm} front {g}": StepPlan.of(space.decode(parse_genome(g))) for g in res.front["genome"]}
        plans.update({f"{arm} uniform {w:g}": StepPlan((w,) * sampler.steps) for w in widths})
        smp = make_sampler(NoiseSchedule(net.config.diffusion), sampler)
        drawn = generate_many(net.model, smp, list(plans.values()), list(settings.seeds), fuse=False,
                              cache=TrajectoryCache(256 << 20), progress=args.progress)
        for (name, plan), x in zip(plans.items(), drawn):
            samples[name] = x
            shares[name] = sum(macs[w] for w in plan.widths) / base_macs
        meta[arm] = {"sampler": sampler.model_dump(mode="json"), "segments": segments, "front_members": len(res.front),
                     "search_seconds": round(time.perf_counter() - t0, 1), "search_resumed": resumed}
    verdict = Verdict(net, reference, features, reference_images(data, "all"), settings,
                      search_seeds=base.search_seeds, progress=args.progress).score({}, samples=samples)
    shares[FULL] = 1.0
    table = verdict.table().assign(share=lambda d: d["schedule"].map(shares))
    lowest = {}
    for arm in arms:
        safe = []
        for name, rows in table[table["schedule"].str.startswith(arm + " ")].groupby("schedule", sort=False):
            if not any(worse_than(r["metric"], r["vs_full_low"], r["vs_full_high"])
                       for r in rows.to_dict(orient="records") if r["metric"] not in DEVIATION):
                safe.append((shares[name], name))
        share, name = min(safe) if safe else (None, None)
        fid = table[(table["schedule"] == name) & (table["metric"] == "fid")].to_dict(orient="records") if name else []
        lowest[arm] = {"schedule": name, "share_of_ddim50_original": share,
                       "macs_per_image": None if share is None else share * base_macs,
                       "fid_vs_reference": [fid[0]["vs_full"], fid[0]["vs_full_low"], fid[0]["vs_full_high"]]
                       if fid else None}
    summary = {"reference": "the original (full width) at DDIM 50", "reference_macs_per_image": base_macs,
               "metrics": [m for m in METRICS if m in set(table["metric"])], "verdict_num": settings.num,
               "search_seeds": [[r.start, r.stop - 1] for r in base.search_seeds], "arms": meta,
               "lowest_no_loss": lowest}
    return table, summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--user-model", default=str(ROOT / "experiments" / "results" / "user-model"))
    ap.add_argument("--ordered", default=str(ROOT / "runs" / "slim-ordered"), help="slim run, importance order")
    ap.add_argument("--unordered", default=str(ROOT / "runs" / "slim-unordered"), help="slim run, --order none")
    ap.add_argument("--hidden", default=str(ROOT / "runs" / "slim-hidden"),
                    help="slim run, --order none --hidden-weight 1 (part hidden)")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    ap.add_argument("--num", type=int, default=1000, help="held-out samples per width in part 2 [1000]")
    ap.add_argument("--front-num", type=int, default=500, help="held-out samples per schedule in part 3 [500]")
    ap.add_argument("--draws", type=int, default=200, help="bootstrap resamples [200]")
    ap.add_argument("--steps", type=int, default=20, help="DDIM steps of part 2 [20]")
    ap.add_argument("--front-orders", default="none,importance",
                    help="the slim runs part 4 searches, by channel order: none (the default order), importance")
    ap.add_argument("--space", default=str(ROOT / "search_spaces" / "digits-proxy.yaml"), help="search space of part 3")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads [2]")
    ap.add_argument("--work", default=str(ROOT / "runs" / "bench-slim"), help="folder for the search")
    ap.add_argument("--out", default=str(ROOT / "experiments" / "results"), help="folder for the results")
    ap.add_argument("--progress", action="store_true", help="show progress bars")
    args = ap.parse_args(argv)
    parts = parse_parts(args.parts, PARTS)
    need = [args.unordered, args.user_model, *([args.ordered] if set(parts) - {"solvers"} else []),
            *([args.hidden] if "hidden" in parts else [])]
    for ref in need:
        if not Path(ref).exists():
            raise DDSMError(f"{ref!r} does not exist; see this script's docstring for the commands that make it")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    data = load_digits(size=16, channels=1)
    features = FeatureNet.load("digits", data)
    doc: dict = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "threads": args.threads,
                 "torch": torch.__version__,
                 "runs": {k: {"checkpoint": str(v), "fingerprint": load_supernet(v).fingerprint}
                          for k, v in (("ordered", args.ordered), ("unordered", args.unordered)) if v in need}}
    t_all = time.perf_counter()
    if "equivalence" in parts:
        print("\n== equivalence at full width ==", flush=True)
        doc["equivalence"] = part_equivalence(args)
        for k, v in doc["equivalence"].items():
            print(f"  {k}: {v}")
    if "widths" in parts:
        sampler = SamplerConfig(kind="ddim", steps=args.steps)
        print(f"\n== quality per width ({args.num} held-out samples, DDIM {args.steps}) ==", flush=True)
        table, meta = part_widths(args, sampler, features, data)
        _print_widths(table)
        print(f"  times: {meta['times']}")
        write_atomic(out / "slim_widths.csv", lambda p: table.to_csv(p, index=False))
        doc["widths"] = {**meta, "rows": table.to_dict(orient="records")}
    for part, make, versus in (("growth", part_growth, "none"), ("hidden", part_hidden, "none")):
        if part not in parts:
            continue
        sampler = SamplerConfig(kind="ddim", steps=args.steps)
        print(f"\n== {part}: quality against fine-tune steps ({args.num} held-out samples, DDIM {args.steps}) ==",
              flush=True)
        table, meta = make(args, sampler, features, data)
        _print_snapshots(table, versus)
        write_atomic(out / f"slim_{part}.csv", lambda p: table.to_csv(p, index=False))
        doc[part] = {**meta, "rows": table.to_dict(orient="records")}
    if "front" in parts:
        tables, summaries = [], {}
        for order in parse_parts(args.front_orders, ("none", "importance")):
            print(f"\n== the searched front against uniform widths, order {order} ==", flush=True)
            table, summaries[order] = part_front(args, features, data, order)
            print(table.to_string(index=False, float_format=_fmt))
            for k, v in summaries[order].items():
                print(f"  {k}: {v}")
            tables.append(table.assign(order=order))
        table = pd.concat(tables, ignore_index=True)
        write_atomic(out / "slim_front.csv", lambda p: table.to_csv(p, index=False))
        doc["front"] = {"summary": summaries, "rows": table.to_dict(orient="records")}
    if "solvers" in parts:
        print("\n== DPM-Solver++ 10 steps against DDIM 20, judged against the original at DDIM 50 ==", flush=True)
        table, summary = part_solvers(args, features, data)
        fid = table[table["metric"] == "fid"][["schedule", "share", "value", "vs_full", "vs_full_low", "vs_full_high"]]
        print(fid.sort_values("share").to_string(index=False, float_format=_fmt))
        for k, v in summary["lowest_no_loss"].items():
            print(f"  lowest cost with no significant loss, {k}: {v}")
        write_atomic(out / "slim_solvers.csv", lambda p: table.to_csv(p, index=False))
        doc["solvers"] = {**summary, "rows": table.to_dict(orient="records")}
    doc["wall_seconds"] = round(time.perf_counter() - t_all, 1)
    write_parts(out / "slim.json", doc, parts, PARTS)
    print(f"\n-> {out / 'slim.json'} ({doc['wall_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    run(main)
