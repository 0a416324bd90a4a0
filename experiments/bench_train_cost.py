"""What does one sandwich step cost against one full-width training step?

Both steps run in one process on the same data stream, interleaved, so machine
noise hits them alike; the figure of merit is the ratio of medians.

    python experiments/bench_train_cost.py --config experiments/configs/digits-reference.yaml

Prints a table and writes experiments/results/train_cost.{json,csv}.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from ddsm import Trainer, load_run_config
from ddsm.io import write_atomic, write_json
from ddsm.train import sandwich_widths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="experiments/configs/digits-reference.yaml")
    ap.add_argument("--repeats", type=int, default=15, help="timed steps of each kind")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("experiments/results"))
    args = ap.parse_args(argv)

    cfg = load_run_config(args.config)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, tmp, device="cpu", progress=False)
        widths = cfg.model.unet.widths
        kinds = {
            "full width only": lambda: [widths[-1]],
            "sandwich": lambda: sandwich_widths(widths, cfg.train.n_random_widths, trainer.gen),
        }
        times: dict[str, list[float]] = {k: [] for k in kinds}
        for i in range(args.warmup + args.repeats):
            for name, pick in kinds.items():
                w = pick()
                t0 = time.perf_counter()
                trainer.train_step(widths=w)
                if i >= args.warmup:
                    times[name].append(time.perf_counter() - t0)
    rows = [{"step": k, "median_s": statistics.median(v), "min_s": min(v), "repeats": len(v)} for k, v in times.items()]
    df = pd.DataFrame(rows)
    full = df.loc[df.step == "full width only", "median_s"].item()
    df["ratio_to_full"] = df["median_s"] / full
    print(f"batch {cfg.train.batch_size}, {torch.get_num_threads()} threads, sandwich = widest + narrowest + "
          f"{cfg.train.n_random_widths} random of {list(widths)}")
    print(df.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "train_cost.json", {"config": args.config, "threads": torch.get_num_threads(),
                                              "rows": df.to_dict(orient="records")})
    write_atomic(args.out / "train_cost.csv", lambda p: df.to_csv(p, index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
