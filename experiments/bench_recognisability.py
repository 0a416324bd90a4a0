"""How recognisable are a digits supernet's samples, per width and over training time?

A classifier trained on real 16x16 digits (RBF SVC, scikit-learn) labels
generated samples. For each width (uniform schedule, DDIM, the same seeds) we
report the mean top-class probability and the class histogram, next to the
same figures for real held-out digits. With ``--run-dir``, EMA snapshots of a
training run are scored at chosen training times too.

    python experiments/bench_recognisability.py --checkpoint digits
    python experiments/bench_recognisability.py --checkpoint digits --run-dir runs/digits-reference --minutes 10 30 60

Prints a table and writes experiments/results/recognisability.{json,csv}.
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
from sklearn.svm import SVC

from ddsm import DDSMError, SamplerConfig, generate, load_digits, load_supernet, make_sampler
from ddsm.diffusion import NoiseSchedule
from ddsm.io import write_atomic, write_json


def fit_classifier(size: int, seed: int = 0) -> tuple[SVC, dict]:
    """RBF SVC on the real training split; also returns its held-out accuracy and confidence."""
    d = load_digits(size=size)
    clf = SVC(kernel="rbf", C=10.0, gamma="scale", probability=True, random_state=seed)
    clf.fit(d.train.flatten(1).numpy(), d.train_labels.numpy())
    real = score(clf, d.holdout)
    real["accuracy"] = float((clf.predict(d.holdout.flatten(1).numpy()) == d.holdout_labels.numpy()).mean())
    return clf, real


def score(clf: SVC, x: torch.Tensor) -> dict:
    """Mean top-class probability and class histogram of images ``x`` in [-1, 1]."""
    x = x.clamp(-1, 1).flatten(1).numpy()
    p = clf.predict_proba(x)
    hist = np.bincount(p.argmax(1), minlength=10)
    return {"mean_top_prob": float(p.max(1).mean()), "histogram": hist.tolist(), "n": int(len(x))}


def sample_widths(ref: str | Path, widths, num: int, steps: int, seed: int) -> list[dict]:
    net = load_supernet(ref)
    sampler = make_sampler(NoiseSchedule(net.config.diffusion), SamplerConfig(kind="ddim", steps=steps))
    rows = []
    for w in widths or net.config.unet.widths:
        t0 = time.perf_counter()
        x = generate(net.model, sampler, w, list(range(seed, seed + num)))
        rows.append({"width": float(w), "x": x, "seconds": time.perf_counter() - t0,
                     "train_seconds": net.header.get("train_seconds"), "step": net.header.get("step")})
    return rows


def snapshots_at(run_dir: Path, minutes: list[float]) -> list[tuple[float, Path]]:
    """For each target time, the last EMA snapshot whose training time does not exceed it."""
    from ddsm.checkpoint import read_tensors

    snaps = []
    for p in sorted((run_dir / "snapshots").glob("ema-*.safetensors")):
        _, header = read_tensors(p)
        snaps.append((header["train_seconds"], p))
    if not snaps:
        raise DDSMError(f"{run_dir} has no snapshots/ema-*.safetensors (train with snapshot_every > 0)")
    out = []
    for m in minutes:
        eligible = [s for s in snaps if s[0] <= m * 60 + 1e-6]
        if eligible:
            out.append((m, eligible[-1][1]))
        else:
            print(f"note: no snapshot within the first {m:g} min of training", file=sys.stderr)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", default="digits", help="supernet to score (run folder, file or 'digits')")
    ap.add_argument("--run-dir", type=Path, default=None, help="training run whose snapshots to score over time")
    ap.add_argument("--minutes", type=float, nargs="*", default=[10, 30, 60], help="training times to score")
    ap.add_argument("--num", type=int, default=500, help="samples per width")
    ap.add_argument("--steps", type=int, default=50, help="DDIM steps")
    ap.add_argument("--seed", type=int, default=0, help="sample i uses seed SEED+i")
    ap.add_argument("--out", type=Path, default=Path("experiments/results"))
    args = ap.parse_args(argv)
    torch.manual_seed(0)

    net = load_supernet(args.checkpoint)
    clf, real = fit_classifier(net.config.unet.image_size)
    rows = [{"model": "real held-out", "width": None, "train_min": None, **real}]
    for r in sample_widths(args.checkpoint, None, args.num, args.steps, args.seed):
        rows.append({"model": f"{args.checkpoint}", "width": r["width"],
                     "train_min": round((r["train_seconds"] or 0) / 60, 1), "step": r["step"],
                     "sample_s": round(r["seconds"], 2), **score(clf, r["x"])})
    if args.run_dir is not None:
        for m, snap in snapshots_at(args.run_dir, args.minutes):
            for r in sample_widths(snap, None, args.num, args.steps, args.seed):
                rows.append({"model": f"snapshot@{m:g}min", "width": r["width"],
                             "train_min": round(r["train_seconds"] / 60, 1), "step": r["step"],
                             "sample_s": round(r["seconds"], 2), **score(clf, r["x"])})
    df = pd.DataFrame(rows)
    df["vs_real"] = df["mean_top_prob"] / real["mean_top_prob"]
    shown = df.drop(columns=["histogram"]).copy()
    shown["histogram"] = df["histogram"].map(lambda h: " ".join(f"{v:3d}" for v in h))
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(shown.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "recognisability.json", {"settings": {k: str(v) for k, v in vars(args).items()},
                                                    "rows": json.loads(df.to_json(orient="records"))})
    write_atomic(args.out / "recognisability.csv", lambda p: df.to_csv(p, index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
