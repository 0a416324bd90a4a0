"""Bring your own latent pipeline: the latent worked example's slimmed DiTPipeline, measured (issue 31).

The user pipeline is ``--user`` (``experiments/diffusers_latent_model.py``: a diffusers ``AutoencoderKL`` and a
class-conditional ``DiTTransformer2DModel`` on its latents of the built-in MNIST digits, saved as a ``DiTPipeline``
folder), slimmed by ``ddsm slim --from-diffusers`` into ``--run``. Parts:

1. **Equivalence** (``equivalence``). The slimmed supernet at width 1 against the user's DiT on 16 random latents,
   integer and fractional timesteps and labels (the null label among them), fp32: max |difference|; the supernet's
   decoder against the user's ``AutoencoderKL.decode`` on the same latents; and the images of diffusers' own
   ``DiTPipeline`` (DDIM 20 steps) with the slimmed model at full width (``pipeline_for_schedule``) against the
   same pipeline with the user's transformer and VAE, same generator and labels.
2. **Quality per width** (``widths``). Every width after the fine-tune, guided DDIM ``--steps`` on held-out seeds
   10000.. (the search never sees them), every sample decoded by the user's decoder and judged by the verdict's
   metrics (the MNIST feature net, class accuracy among them) with 95 % basic bootstrap intervals, each width
   paired against full width; and the fine-tune's training seconds against the original's (from the recipes).
3. **Shares** (``shares``). fvcore MACs per image of one denoiser call at every width and of the decoder (once per
   image), and each uniform width's cost share of full width over 10 and 20 calls, without and with the decoder.
4. **Front** (``front``). The finished search ``--search`` (``search_spaces/latent-dpm.yaml``: DPM-Solver++ 10 steps,
   guided): every front member and every uniform width sampled on ``--front-num`` held-out seeds, decoded and judged
   against full width with the space's sampler; per uniform width, the best front member that costs no more (paired
   FID difference); the cheapest member of each family significantly worse than full width in no distribution metric;
   hypervolume in (FID, MACs share) of the front against the uniform widths, paired.

    python experiments/bench_latent.py --run runs/latent-slim --user runs/latent-user --num 1000

Prints tables; writes ``<out>/latent.json`` (sections of parts not rerun are kept) and ``<out>/latent_*.csv``
atomically.
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

from ddsm import load_supernet  # noqa: E402
from ddsm.io import write_atomic  # noqa: E402

PARTS = ("equivalence", "widths", "shares", "front")
DISTRIBUTION = ("fid", "kid", "precision", "recall", "class_accuracy")


def part_equivalence(args) -> dict:
    from diffusers import DiTPipeline

    from ddsm.integrations.slim_pipeline import pipeline_for_schedule
    from ddsm.nn.backbone import to_images
    from ddsm.samplers import SamplerConfig
    from ddsm.schedule import Schedule

    net = load_supernet(args.run)
    user = DiTPipeline.from_pretrained(args.user, use_safetensors=True, local_files_only=True)
    dit, vae = user.transformer.eval(), user.vae.eval()
    g = net.config.geometry
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(16, g.in_channels, g.image_size, g.image_size, generator=gen)
    t = torch.cat([torch.randint(0, 1000, (8,), generator=gen).float(), torch.rand(8, generator=gen) * 999])
    y = torch.cat([torch.randint(0, 10, (12,), generator=gen), torch.full((4,), 10)])  # 10: the null label
    with torch.no_grad():
        ours = net.model.set_active_width(1.0)(z, t, cond=y)
        theirs = dit(z, timestep=t, class_labels=y).sample[:, : g.in_channels]
        decoded = to_images(net.model, z)
        theirs_decoded = vae.decode(z / vae.config.scaling_factor).sample.clamp(-1, 1)
    out = {"model_max_abs_diff": float((ours - theirs).abs().max()),
           "decoder_max_abs_diff": float((decoded - theirs_decoded).abs().max()),
           "inputs": f"16 random latents {tuple(z.shape[1:])}, 8 integer and 8 fractional timesteps, 12 labels and "
                     "4 null labels, fp32"}
    sampler = SamplerConfig(kind="ddim", steps=20, timestep_spacing="leading")
    pipe = pipeline_for_schedule(args.run, Schedule.uniform(net.config, sampler, 1.0))
    kw = dict(class_labels=list(range(8)), num_inference_steps=20, guidance_scale=1.0, output_type="np")
    a = pipe(generator=torch.Generator().manual_seed(1), **kw).images
    b = DiTPipeline(transformer=dit, vae=vae, scheduler=pipe.scheduler)(generator=torch.Generator().manual_seed(1),
                                                                          **kw).images
    out["ditpipeline_ddim20_images_max_abs_diff"] = float(np.abs(a - b).max())
    out["ditpipeline_images"] = "8 images, labels 0..7, guidance 1 (the user's DiTPipeline guides with label 1000)"
    return out


def part_widths(args) -> tuple[pd.DataFrame, dict]:
    from ddsm.checkpoint import training_data
    from ddsm.metrics.featurenet import FeatureNet
    from ddsm.metrics.fid import reference_images
    from ddsm.metrics.verdict import FULL, Verdict, VerdictSettings
    from ddsm.plan import StepPlan
    from ddsm.samplers import SamplerConfig

    net = load_supernet(args.run)
    data = training_data(args.run)
    sampler = SamplerConfig(kind="ddim", steps=args.steps, guidance_scale=args.guidance_scale)
    settings = VerdictSettings(num=args.num, teacher_num=2 * args.num, draws=args.draws)
    widths = net.config.geometry.widths
    plans = {f"width {w:g}": StepPlan((w,) * sampler.steps) for w in widths[:-1]}
    t0 = time.perf_counter()
    res = Verdict(net, sampler, FeatureNet.load(args.featurenet, data), reference_images(data, "all"), settings,
                  progress=args.progress).score(plans)
    rows = []
    for name in [FULL, *plans]:
        w = max(widths) if name == FULL else float(name.split()[1])
        for m in res.metrics:
            iv = res.interval(name, m)
            row = {"width": w, "metric": m, "value": iv.value, "low": iv.low, "high": iv.high, "n": iv.n}
            if name != FULL:
                d = res.compare(name, FULL, m)
                row.update({"minus_full": d.value, "minus_full_low": d.low, "minus_full_high": d.high,
                            "differs": d.excludes(0.0)})
            rows.append(row)
    recipe = json.loads((Path(args.user) / "recipe.json").read_text())
    meta = {"seeds": f"{settings.seeds.start}..{settings.seeds.stop - 1}", "n": args.num, "draws": args.draws,
            "sampler": sampler.model_dump(mode="json"), "seconds": round(time.perf_counter() - t0, 1),
            "finetune_train_seconds": net.header.get("train_seconds"), "finetune_steps": net.header.get("step"),
            "original_train_seconds": {"vae": recipe.get("vae_train_seconds"),
                                       "dit": recipe.get("dit_train_seconds")}}
    return pd.DataFrame(rows), meta


def part_shares(args) -> tuple[pd.DataFrame, dict]:
    from ddsm.cost.macs import count_decoder_macs, count_macs

    net = load_supernet(args.run)
    g = net.config.geometry
    decoder = count_decoder_macs(net.model.codec, g.in_channels, g.image_size)
    call = {w: count_macs(net.model, w).total for w in g.widths}
    rows = []
    for calls in (10, 20):
        full = calls * call[max(g.widths)]
        for w in g.widths:
            share = calls * call[w] / full
            rows.append({"calls": calls, "width": w, "denoiser_macs_per_call": call[w], "share": share,
                         "share_with_decoder": (calls * call[w] + decoder) / (full + decoder)})
    return pd.DataFrame(rows), {"decoder_macs_per_image": decoder,
                                "decoder_in_full_width_calls": decoder / call[max(g.widths)]}


def part_front(args) -> tuple[pd.DataFrame, dict]:
    from ddsm.checkpoint import training_data
    from ddsm.cost.macs import count_macs
    from ddsm.metrics.featurenet import FeatureNet
    from ddsm.metrics.fid import reference_images
    from ddsm.metrics.verdict import FULL, Verdict, VerdictSettings, worse_than
    from ddsm.plan import StepPlan
    from ddsm.search.folder import SearchRun, load_search
    from ddsm.search.front import hypervolume_draws

    net = load_supernet(args.run)
    run_ = load_search(args.search)
    space = run_.space
    data = training_data(args.run)
    widths = net.config.geometry.widths
    macs = {w: float(count_macs(net.model, w).total) for w in widths}
    plans, shares = {}, {}
    for m in run_.front.to_dict(orient="records"):
        plan = SearchRun.plan_of(m)
        key = "front " + " ".join(f"{w:g}" for w in plan.widths)
        plans[key], shares[key] = plan, sum(macs[w] for w in plan.widths) / (macs[1.0] * len(plan.widths))
    for w in widths[:-1]:
        plans[f"uniform {w:g}"], shares[f"uniform {w:g}"] = StepPlan((w,) * space.sampler.steps), macs[w] / macs[1.0]
    shares[FULL] = 1.0
    settings = VerdictSettings(num=args.front_num, teacher_num=2 * args.front_num, draws=args.draws)
    t0 = time.perf_counter()
    v = Verdict(net, space.sampler, FeatureNet.load(args.featurenet, data), reference_images(data, "all"), settings,
                search_seeds=space.search_seeds, progress=args.progress).score(plans)

    def loses(k):
        return [m for m in v.metrics if m in DISTRIBUTION and worse_than(m, *_ci(v.compare(k, FULL, m)))]

    rows = []
    for k in [*plans, FULL]:
        d = v.compare(k, FULL, "fid") if k != FULL else None
        rows.append({"schedule": k, "share": shares[k], "fid": v.interval(k, "fid").value,
                     "class_accuracy": v.interval(k, "class_accuracy").value if "class_accuracy" in v.metrics else None,
                     "fid_minus_full": None if d is None else d.value, "low": None if d is None else d.low,
                     "high": None if d is None else d.high, "worse_than_full": "" if k == FULL else ",".join(loses(k))})
    front = sorted((k for k in plans if k.startswith("front")), key=shares.get)
    uniform = [f"uniform {w:g}" for w in widths[:-1]]
    versus = {}
    for u in uniform:
        cheaper = [k for k in front if shares[k] <= shares[u] + 1e-12]
        if cheaper:
            best = min(cheaper, key=lambda k: v.interval(k, "fid").value)
            d = v.compare(best, u, "fid")
            versus[u] = {"member": best, "member_share": shares[best], "uniform_share": shares[u],
                         "fid_member_minus_uniform": d.value, "interval": [d.low, d.high], "differs": d.excludes(0.0)}
    worst = max(r["fid"] for r in rows)
    ref_pt = (worst + 0.1 * abs(worst), 1.1)
    hv = {name: hypervolume_draws([(v.draws[k]["fid"], shares[k]) for k in keys], ref=ref_pt)
          for name, keys in (("front", front + [FULL]), ("uniform", uniform + [FULL]))}
    diff = hv["front"].minus(hv["uniform"], settings.level)
    cheapest = {fam: next(({"schedule": k, "share": shares[k]} for k in sorted(keys, key=shares.get) if not loses(k)),
                          None) for fam, keys in (("front", front), ("uniform", uniform))}
    return pd.DataFrame(rows), {
        "search": str(args.search), "sampler": space.sampler.model_dump(mode="json"), "front_members": len(front),
        "seeds": f"{settings.seeds.start}..{settings.seeds.stop - 1}", "n": settings.num,
        "seconds": round(time.perf_counter() - t0, 1), "versus_uniform": versus,
        "cheapest_without_significant_loss": cheapest,
        "hypervolume": {"reference": list(ref_pt), **{k: h.value for k, h in hv.items()},
                        "front_minus_uniform": {"value": diff.value, "interval": [diff.low, diff.high],
                                                "differs": diff.excludes(0.0)}}}


def _ci(d):
    return d.low, d.high


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default=str(ROOT / "runs" / "latent-slim"), help="the ddsm slim run of the pipeline")
    ap.add_argument("--user", default=str(ROOT / "runs" / "latent-user"), help="the user's DiTPipeline folder")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    ap.add_argument("--search", default=str(ROOT / "runs" / "latent-search"), help="the finished search of part 4")
    ap.add_argument("--num", type=int, default=1000, help="held-out samples per width [1000]")
    ap.add_argument("--front-num", type=int, default=1000, help="held-out samples per schedule in part 4 [1000]")
    ap.add_argument("--draws", type=int, default=200, help="bootstrap resamples [200]")
    ap.add_argument("--steps", type=int, default=20, help="DDIM steps of part 2 [20]")
    ap.add_argument("--guidance-scale", type=float, default=2.0, help="classifier-free guidance scale [2]")
    ap.add_argument("--featurenet", default="mnist", help="feature net of the data [mnist]")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads [2]")
    ap.add_argument("--out", default=str(ROOT / "experiments" / "results"), help="folder for the results")
    ap.add_argument("--progress", action="store_true", help="show progress bars")
    args = ap.parse_args(argv)
    parts = parse_parts(args.parts, PARTS)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    doc: dict = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "run": args.run, "user": args.user,
                 "threads": args.threads, "torch": torch.__version__}
    t_all = time.perf_counter()
    fmt = {"float_format": lambda v: f"{v:.4g}", "index": False}
    if "equivalence" in parts:
        doc["equivalence"] = part_equivalence(args)
        print(json.dumps(doc["equivalence"], indent=2))
    if "widths" in parts:
        table, meta = part_widths(args)
        print(table.to_string(**fmt), f"\n  {meta}")
        write_atomic(out / "latent_widths.csv", lambda p: table.to_csv(p, index=False))
        doc["widths"] = {**meta, "rows": table.to_dict(orient="records")}
    if "shares" in parts:
        table, meta = part_shares(args)
        print(table.to_string(**fmt), f"\n  {meta}")
        write_atomic(out / "latent_shares.csv", lambda p: table.to_csv(p, index=False))
        doc["shares"] = {**meta, "rows": table.to_dict(orient="records")}
    if "front" in parts:
        table, meta = part_front(args)
        print(table.to_string(**fmt), f"\n  {meta}")
        write_atomic(out / "latent_front.csv", lambda p: table.to_csv(p, index=False))
        doc["front"] = {**meta, "rows": table.to_dict(orient="records")}
    doc["wall_seconds"] = round(time.perf_counter() - t_all, 1)
    write_parts(out / "latent.json", doc, parts, PARTS)
    print(f"\n-> {out / 'latent.json'} ({doc['wall_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    run(main)
