"""Short recipe sweep for the MNIST DiT reference (issue 29), on training images only.

The first DiT (patch 4, lr 1e-3, 3,000 steps) reached class accuracy 0.14 where the
UNet of the same MACs and budget learned its labels: this sweep picks the patch size and
learning rate of the retrain from short runs, scored on *training-split* images (never the
held-out split nor the verdict's seeds):

* ``val_mse``   mean ε-MSE at full width over fixed (image, t, noise) draws, t in {50, 200, 500, 800};
* ``label_gain`` ε-MSE with the null label minus with the true label at the same draws (how much the
  network uses the class; 0 means it ignores it).

    OMP_NUM_THREADS=1 python experiments/sweep_dit.py --only p4-lr1e-3 &
    OMP_NUM_THREADS=1 python experiments/sweep_dit.py --only p2-lr1e-3 &
    python experiments/sweep_dit.py --table      # after all candidates: table + results JSON
    python experiments/sweep_dit.py --shipped mnist-dit --shipped mnist-unet --table   # the same scores of finished
                                                  # supernets (3,000 steps), for scale

Each candidate trains in runs/dit-sweep/<name> (resumable) and writes <name>.json there.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from ddsm import Trainer
from ddsm.config.overrides import load_run_config
from ddsm.io import write_json

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "experiments" / "configs" / "mnist-dit.yaml"
RESULTS = ROOT / "experiments" / "results" / "dit-sweep.json"
# name -> overrides of mnist-dit.yaml; p2 models are narrowed to keep about the same full-width MACs
CANDIDATES = {
    "p4-lr1e-3": {},
    "p4-lr3e-4": {"train.lr": 3e-4},
    "p2-lr1e-3": {"model.dit.patch_size": 2, "model.dit.hidden_size": 64, "model.dit.depth": 6,
                  "model.dit.num_heads": 4},
    "p2-lr3e-4": {"model.dit.patch_size": 2, "model.dit.hidden_size": 64, "model.dit.depth": 6,
                  "model.dit.num_heads": 4, "train.lr": 3e-4},
}
TIMESTEPS = (50, 200, 500, 800)


@torch.no_grad()
def score(trainer: Trainer, n: int = 512, seed: int = 1234) -> dict[str, float]:
    """Full-width ε-MSE with the true and the null label on fixed draws of training images."""
    return score_model(trainer.model, trainer.schedule, trainer.x_train, trainer.y_train, n, seed)


@torch.no_grad()
def score_model(model, sched, x_train, y_train, n: int = 512, seed: int = 1234) -> dict[str, float]:
    """:func:`score` of any conditional supernet on training images ``x_train`` with labels ``y_train``."""
    was = model.training
    model.eval()
    model.set_active_width(max(model.widths))
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(x_train), generator=g)[:n]
    x0, y = x_train[idx].cpu(), y_train[idx].long()
    out: dict[str, float] = {}
    true_all, null_all = [], []
    for t in TIMESTEPS:
        eps = torch.randn(x0.shape, generator=g)
        tt = torch.full((n,), t, dtype=torch.long)
        x_t = sched.q_sample(x0, tt, eps)
        true = ((model(x_t, tt, cond=y) - eps) ** 2).mean().item()
        null = ((model(x_t, tt, cond=None) - eps) ** 2).mean().item()
        out[f"mse@t{t}"] = round(true, 5)
        out[f"gain@t{t}"] = round(null - true, 5)
        true_all.append(true)
        null_all.append(null)
    out["val_mse"] = round(sum(true_all) / len(true_all), 5)
    out["label_gain"] = round((sum(null_all) - sum(true_all)) / len(true_all), 5)
    model.train(was)
    return out


def score_shipped(name: str) -> dict:
    """The scores of a finished supernet (a shipped name or a file), on the same training-split draws."""
    from ddsm import load_supernet
    from ddsm.data import load_data
    from ddsm.diffusion.noise import NoiseSchedule

    net = load_supernet(name)
    cfg = load_run_config(CONFIG)
    geo = net.config.geometry
    data = load_data(cfg.data, geo.image_size, geo.in_channels, labelled=True)
    row = {"name": f"shipped {name}", "iters": net.header.get("step"), "overrides": {},
           **score_model(net.model, NoiseSchedule(net.config.diffusion), data.train, data.train_labels)}
    write_json(ROOT / "runs" / "dit-sweep" / f"shipped-{Path(name).name}.json", row)
    print(json.dumps(row), flush=True)
    return row


def run_one(name: str, iters: int) -> dict:
    out = ROOT / "runs" / "dit-sweep" / name
    cfg = load_run_config(CONFIG, **{"train.iters": iters, "train.warmup": 100, "train.lr_decay": "constant",
                                     "train.checkpoint_every": 100, **CANDIDATES[name]})
    resume = (out / "checkpoint.safetensors").is_file()
    trainer = Trainer(cfg, out, progress=False)
    t0 = time.time()
    trainer.run(resume=resume)
    row = {"name": name, "iters": iters, "overrides": CANDIDATES[name], "train_seconds": round(trainer.train_seconds, 1),
           "wall_seconds_this_call": round(time.time() - t0, 1), **score(trainer)}
    write_json(out / f"{name}.json", row)
    print(json.dumps(row), flush=True)
    return row


def table() -> int:
    rows = []
    for name in CANDIDATES:
        f = ROOT / "runs" / "dit-sweep" / name / f"{name}.json"
        if f.is_file():
            rows.append(json.loads(f.read_text()))
    rows += [json.loads(f.read_text()) for f in sorted((ROOT / "runs" / "dit-sweep").glob("shipped-*.json"))]
    if not rows:
        print("no candidate has finished", file=sys.stderr)
        return 1
    print(f"{'candidate':<18} {'iters':>5} {'val_mse':>8} {'label_gain':>10}  " +
          " ".join(f"{'mse@t' + str(t):>9}" for t in TIMESTEPS))
    for r in rows:
        print(f"{r['name']:<18} {r['iters']:>5} {r['val_mse']:>8.4f} {r['label_gain']:>10.4f}  " +
              " ".join(f"{r[f'mse@t{t}']:>9.4f}" for t in TIMESTEPS))
    write_json(RESULTS, {"what": "DiT recipe sweep on training-split images (issue 29)", "timesteps": TIMESTEPS,
                         "candidates": rows})
    print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=sorted(CANDIDATES), action="append", help="train and score these candidates")
    ap.add_argument("--iters", type=int, default=500)
    ap.add_argument("--table", action="store_true", help="print the finished candidates and write the results")
    ap.add_argument("--shipped", action="append", default=[], help="also score this finished supernet")
    args = ap.parse_args(argv)
    for name in args.shipped:
        score_shipped(name)
    for name in args.only or ([] if args.table else list(CANDIDATES)):
        run_one(name, args.iters)
    return table() if args.table else 0


if __name__ == "__main__":
    sys.exit(main())
