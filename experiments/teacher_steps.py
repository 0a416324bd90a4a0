"""A teacher's full-width quality against its step count, per guidance scale, on the search seeds.

SFDDM's student imitates its teacher's many-step transitions, so it can only beat the teacher's few-step sampler if
the teacher gets better with more steps. Issue 30 found the guided MNIST teacher getting *worse* with steps at scale
2 (stop 40). This script measures, on seeds the held-out verdicts never use (default 2000..2499, the sweep's choosing
seeds), FID, KID, precision, recall and class accuracy of the teacher's DDIM at each step count and scale, each
paired against the same scale's fewest steps, so that the distillation's scale is chosen here and judged elsewhere.

    python experiments/teacher_steps.py --teacher mnist-unet --featurenet mnist --scales 1,1.5,2 --steps 4,10,20,50
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _script import run  # noqa: E402
from bench_sfddm import _full_samples  # noqa: E402  (the teacher at full width, as the students are judged)

from ddsm import DDSMError, load_supernet  # noqa: E402
from ddsm.checkpoint import training_data  # noqa: E402
from ddsm.io import write_atomic, write_json  # noqa: E402
from ddsm.metrics.featurenet import FeatureNet  # noqa: E402
from ddsm.metrics.fid import reference_images  # noqa: E402
from ddsm.metrics.verdict import Verdict, VerdictSettings, worse_than  # noqa: E402
from ddsm.samplers import SamplerConfig  # noqa: E402

METRICS = ("fid", "kid", "precision", "recall", "class_accuracy")


def _floats(spec: str, what: str) -> list[float]:
    try:
        vals = [float(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise DDSMError(f"--{what} {spec!r} is not a comma-separated list of numbers") from None
    if not vals:
        raise DDSMError(f"--{what} is empty; give at least one value")
    return vals


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--teacher", default="mnist-unet", help="teacher supernet [mnist-unet]")
    ap.add_argument("--featurenet", default="mnist", help="feature net of the teacher's data [mnist]")
    ap.add_argument("--scales", default="1,1.5,2", help="guidance scales (1: the conditional model alone) [1,1.5,2]")
    ap.add_argument("--steps", default="4,10,20,50", help="DDIM step counts [4,10,20,50]")
    ap.add_argument("--spacing", default="leading", choices=("leading", "trailing", "linspace"),
                    help="DDIM timestep spacing (ddsm's default, leading, starts a 4-step grid at t = 750; a student's "
                    "own grid is linspace) [leading]")
    ap.add_argument("--num", type=int, default=500, help="samples per cell [500]")
    ap.add_argument("--seed", type=int, default=2000, help="first seed: search seeds, never the held-out ones [2000]")
    ap.add_argument("--draws", type=int, default=200, help="bootstrap resamples [200]")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads [2]")
    ap.add_argument("--out", default=str(ROOT / "experiments" / "results" / "teacher-steps"), help="results stem")
    args = ap.parse_args(argv)
    scales, steps = _floats(args.scales, "scales"), _floats(args.steps, "steps")
    if any(k < 1 or k != int(k) for k in steps):
        raise DDSMError(f"--steps {args.steps!r}: step counts must be whole numbers >= 1")
    if any(not 0 <= s <= 100 for s in scales):
        raise DDSMError(f"--scales {args.scales!r}: guidance scales must lie in [0, 100]")
    steps = [int(k) for k in steps]
    if args.seed + args.num > 10_000:
        raise DDSMError(f"--seed {args.seed} with --num {args.num} reaches the held-out seeds 10000..; choose below")
    torch.set_num_threads(args.threads)
    teacher = load_supernet(args.teacher)
    if not teacher.model.num_classes:
        scales = [None]  # an unconditional teacher has no guidance to choose
    data = training_data(args.teacher, teacher.config.geometry)
    features = FeatureNet.load(args.featurenet, data)
    settings = VerdictSettings(num=args.num, seed=args.seed, teacher_num=2 * args.num, draws=args.draws)
    samples, t0 = {}, time.perf_counter()
    for s in scales:
        for k in steps:
            guided = {} if s is None else {"guidance_scale": s}
            cfg = SamplerConfig(kind="ddim", steps=k, timestep_spacing=args.spacing, **guided)
            samples[f"scale {s} ddim {k}"] = _full_samples(teacher, cfg, settings.seeds)
            print(f"  sampled scale {s}, DDIM {k} ({time.perf_counter() - t0:.0f} s)", flush=True)
    ref = SamplerConfig(kind="ddim", steps=20, **({} if scales[0] is None else {"guidance_scale": 2.0}))
    res = Verdict(teacher, ref, features, reference_images(data, "all"), settings).score({}, samples=samples)
    rows = []
    for s in scales:
        base = f"scale {s} ddim {steps[0]}"
        for k in steps:
            name = f"scale {s} ddim {k}"
            for m in (m for m in METRICS if m in res.metrics):
                iv, d = res.interval(name, m), res.compare(name, base, m)
                rows.append({"scale": s, "steps": k, "metric": m, "value": iv.value, "low": iv.low, "high": iv.high,
                             "minus_fewest": d.value, "minus_fewest_low": d.low, "minus_fewest_high": d.high,
                             "worse_than_fewest": name != base and worse_than(m, d.low, d.high), "n": iv.n})
    table = pd.DataFrame(rows)
    wide = table.pivot_table(index=["scale", "steps"], columns="metric", values="value").reset_index()
    print(wide.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    out = Path(args.out)
    write_atomic(out.with_suffix(".csv"), lambda p: table.to_csv(p, index=False))
    write_json(out.with_suffix(".json"), {
        "command": " ".join([Path(sys.executable).name, *sys.argv]), "teacher": args.teacher,
        "seeds": f"{settings.seeds.start}..{settings.seeds.stop - 1} (search seeds)", "n": args.num,
        "spacing": args.spacing,
        "draws": args.draws, "seconds": round(time.perf_counter() - t0, 1), "threads": args.threads,
        "torch": torch.__version__, "rows": rows})
    print(f"-> {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    run(main)
