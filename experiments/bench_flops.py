"""How many MACs does one denoiser call take at each width, and do two counters agree?

fvcore (with ddsm.cost's handles for attention and elementwise ops) counts
MACs per image on the extracted subnet of each width; torch's FlopCounterMode
counts FLOPs of convs, matmuls and attention only, so torch FLOPs / 2 must
equal fvcore's dense part exactly (ratio 1.000), and fvcore's total is a bit
above it (norms, activations, residual adds). FLOPs do not depend on weights:
an untrained supernet is used unless --checkpoint is given.

    python experiments/bench_flops.py
    python experiments/bench_flops.py --checkpoint runs/digits-reference --resolution 32

Prints a table and writes experiments/results/flops.{json,csv}.
"""

from __future__ import annotations

import argparse
import time
from importlib.metadata import version
from pathlib import Path

import pandas as pd
import torch

from ddsm.checkpoint import load_supernet
from ddsm.config import load_run_config
from ddsm.cost import UNIT, count_macs, torch_flops
from ddsm.io import write_atomic, write_json
from ddsm.nn.unet import SlimUNet

DEFAULT_CONFIG = "experiments/configs/digits-reference.yaml"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=None, help=f"run config YAML [default: {DEFAULT_CONFIG}, or the checkpoint's]")
    ap.add_argument("--checkpoint", default=None, help="count a real supernet (run folder, file or shipped name)")
    ap.add_argument("--resolution", type=int, default=None, help="square input side [default: the training size]")
    ap.add_argument("--out", type=Path, default=Path("experiments/results"))
    args = ap.parse_args(argv)

    start = time.perf_counter()
    if args.checkpoint is not None:
        expected = load_run_config(args.config).model if args.config else None
        net = load_supernet(args.checkpoint, device="cpu", expected=expected)
        model, model_cfg, source = net.model, net.config, net.source
    else:
        config = args.config or DEFAULT_CONFIG
        model_cfg = load_run_config(config).model
        model, source = SlimUNet(model_cfg.unet), f"untrained SlimUNet from {config}"
    resolution = args.resolution or model_cfg.unet.image_size

    rows = []
    for w in model_cfg.unet.widths:
        c = count_macs(model, w, resolution)
        flops = torch_flops(model, w, resolution)
        rows.append({"width": w, "macs": c.total, "dense_macs": c.dense, "attention_macs": c.attention,
                     "other_ops": c.other, "torch_flops": flops})
    df = pd.DataFrame(rows)
    full = df.loc[df.width == 1.0, "macs"].item()
    df.insert(2, "gmacs", df["macs"] / 1e9)
    df.insert(3, "share_of_full", df["macs"] / full)
    df["torch_flops_half"] = df["torch_flops"] // 2
    df["dense_over_torch"] = df["dense_macs"] / df["torch_flops_half"]
    df["total_over_torch"] = df["macs"] / df["torch_flops_half"]
    df["attention_share"] = df["attention_macs"] / df["macs"]

    shown = df[["width", "macs", "gmacs", "share_of_full", "dense_macs", "attention_macs", "other_ops",
                "torch_flops_half", "dense_over_torch", "total_over_torch"]]
    print(f"{source}: supernet {model_cfg.fingerprint()}, {resolution}x{resolution} input, batch 1; unit: {UNIT}")
    print(shown.to_string(index=False, formatters={
        "macs": "{:,}".format, "dense_macs": "{:,}".format, "attention_macs": "{:,}".format,
        "other_ops": "{:,}".format, "torch_flops_half": "{:,}".format, "gmacs": "{:.4f}".format,
        "share_of_full": "{:.3f}".format, "dense_over_torch": "{:.4f}".format, "total_over_torch": "{:.4f}".format,
    }))
    elapsed = time.perf_counter() - start
    print(f"({elapsed:.1f} s)")

    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "flops.json", {
        "kind": "ddsm.bench_flops", "source": source, "supernet": model_cfg.fingerprint(),
        "resolution": resolution, "batch_size": 1, "unit": UNIT, "torch_version": torch.__version__,
        "fvcore_version": version("fvcore"), "rows": df.to_dict(orient="records"),
    })
    write_atomic(args.out / "flops.csv", lambda p: df.to_csv(p, index=False))
    return 0


if __name__ == "__main__":
    from _script import run

    run(main)
