"""Does capacity matter on the class-conditional MNIST reference, for each backbone (issue 29)?

For each class-conditional supernet given (the DiT and the UNet of
``experiments/configs/mnist-{dit,unet}.yaml``, trained on the built-in
``mnist`` data), every uniform width is judged against full width on held-out
verdict seeds (``ddsm.metrics.verdict``: FID, KID, pixel KID, precision,
recall, the classifier's confidence, **class accuracy** — the feature net's
classifier names the class asked for, seed s asking for class s mod 10 — and
the proxy), each with its paired 95 % interval, guided as ``--guidance-scale``
says. The narrowest width's row answers "is capacity seen to matter?": a
distribution metric whose interval excludes 0 in the worse direction says
yes; none says the reference cannot test the method's claim.

    python experiments/bench_conditional.py --checkpoint dit=runs/mnist-dit --checkpoint unet=runs/mnist-unet \\
        --featurenet runs/mnist-featurenet.safetensors --num 1000 --steps 20 --guidance-scale 1.5

(``ddsm featurenet --data mnist --size 32 --out runs/mnist-featurenet.safetensors`` makes the feature net.)
Prints a table per model and writes ``experiments/results/conditional.{json,csv}`` (or ``--out``) atomically.
The later parts of the issue's evidence (searched fronts against the three families, guidance genes, MACs
against quality across backbones) join this script as parts once the searches run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _script import run  # noqa: E402

from ddsm import DDSMError  # noqa: E402
from ddsm.io import write_atomic, write_json  # noqa: E402

#: metrics that measure the distribution (the proxy measures deviation from full width, not quality)
DISTRIBUTION = ("fid", "kid", "pixel_kid", "precision", "recall", "class_accuracy")


def capacity(name: str, checkpoint: str, args: argparse.Namespace) -> tuple[pd.DataFrame, dict]:
    """Every uniform width against full width on the verdict seeds: the verdict's long table, and its summary."""
    from ddsm.checkpoint import load_supernet, training_data
    from ddsm.cost import CostModel
    from ddsm.metrics.featurenet import FeatureNet
    from ddsm.metrics.fid import reference_images
    from ddsm.metrics.verdict import METRICS, Verdict, VerdictSettings, worse_than
    from ddsm.plan import StepPlan
    from ddsm.samplers.base import SamplerConfig

    net = load_supernet(checkpoint)
    if not net.model.num_classes:
        raise DDSMError(f"--checkpoint {name}={checkpoint!r} is unconditional; this benchmark judges "
                        "class-conditional models (num_classes > 0)")
    geo = net.config.geometry
    data = training_data(checkpoint, geo)
    sampler = SamplerConfig(kind="ddim", steps=args.steps, guidance_scale=args.guidance_scale)
    settings = VerdictSettings(num=args.num, seed=args.seed, teacher_num=args.teacher_num, draws=args.draws)
    judge = Verdict(net, sampler, FeatureNet.load(args.featurenet, data), reference_images(data, "all"), settings,
                    progress=args.progress)
    if "class_accuracy" not in judge.metrics:
        raise DDSMError(f"feature net {args.featurenet!r} has no classifier of the data's classes; train it on the "
                        "labelled data (ddsm featurenet --data mnist ...)")
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
    return table, summary


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", action="append", required=True, metavar="NAME=CHECKPOINT",
                    help="a class-conditional supernet to judge, named (repeat: one per backbone)")
    ap.add_argument("--featurenet", required=True, help="feature net file of the data (with its classifier)")
    ap.add_argument("--num", type=int, default=1000, help="samples per schedule on the verdict seeds [1000]")
    ap.add_argument("--teacher-num", type=int, default=2000, help="full-width samples of the teacher FID's reference")
    ap.add_argument("--seed", type=int, default=10_000, help="first verdict seed [10000]")
    ap.add_argument("--draws", type=int, default=200, help="bootstrap resamples [200]")
    ap.add_argument("--steps", type=int, default=20, help="DDIM steps [20]")
    ap.add_argument("--guidance-scale", type=float, default=None, help="classifier-free guidance scale [none]")
    ap.add_argument("--out", type=Path, default=Path("experiments/results"), help="folder for conditional.json/.csv")
    ap.add_argument("--progress", action="store_true", help="show sampling progress")
    args = ap.parse_args()
    named = []
    for spec in args.checkpoint:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise DDSMError(f"--checkpoint {spec!r} must be NAME=CHECKPOINT, e.g. dit=runs/mnist-dit")
        named.append((name, path))
    tables, summaries = [], {}
    for name, path in named:
        table, summary = capacity(name, path, args)
        tables.append(table)
        summaries[name] = summary
        shown = table[table["metric"].isin(DISTRIBUTION)][["schedule", "share", "metric", "value", "vs_full",
                                                            "vs_full_low", "vs_full_high", "differs_from_full"]]
        with pd.option_context("display.width", 160, "display.float_format", "{:.4g}".format):
            print(f"\n== {name}: {path} ({summary['macs_per_image_full'] / 1e6:.1f} MMACs per image at full width)")
            print(shown.to_string(index=False))
        print(f"capacity matters ({name}): {summary['capacity_matters']} — the narrowest width "
              f"{summary['narrowest_width']:g} is significantly worse in {summary['narrowest_significantly_worse_in']}")
    args.out.mkdir(parents=True, exist_ok=True)
    long = pd.concat(tables)
    write_atomic(args.out / "conditional.csv", lambda p: long.to_csv(p, index=False))
    write_json(args.out / "conditional.json", {"command": " ".join(sys.argv), "settings": {
        "num": args.num, "teacher_num": args.teacher_num, "seed": args.seed, "draws": args.draws,
        "steps": args.steps, "guidance_scale": args.guidance_scale}, "capacity": summaries})
    print(f"-> {args.out / 'conditional.json'}, {args.out / 'conditional.csv'}")
    return 0


if __name__ == "__main__":
    run(main)
