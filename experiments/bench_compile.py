"""Does ``torch.compile`` pay for sampling on this device? Eager against compiled, per width, in one process.

On the shipped 'digits' supernet, for each width and batch: the median
seconds of one denoiser call eager (the weight cache on, as ``generate()``
runs it) and compiled with ``torch.compile(dynamic=False)`` (inductor; one
compiled model per width, since a width changes every sliced layer's
shapes), the compile time (first call) and the largest absolute difference
of the outputs. Eager and compiled calls alternate per round so drifting
load hits both alike.

    .venv/bin/python experiments/bench_compile.py [--batches 1 16] [--threads 2]

Prints a table; writes experiments/results/compile.{json,csv} atomically.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
import warnings
from pathlib import Path

import pandas as pd
import torch

from ddsm.checkpoint import load_supernet
from ddsm.io import write_atomic, write_json


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--widths", type=float, nargs="+", default=[0.25, 1.0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    logging.getLogger("torch._dynamo").setLevel(logging.ERROR)
    torch._dynamo.config.recompile_limit = 64  # every sliced layer is its own frame: the default 8 falls back to eager

    net = load_supernet("digits", device=args.device)
    model, u = net.model.eval(), net.config.unet
    rows = []
    for b in args.batches:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(b, u.in_channels, u.image_size, u.image_size, generator=gen).to(args.device)
        t = torch.full((b,), 500.0, device=args.device)
        for w in args.widths:
            torch._dynamo.reset()
            model.set_active_width(w)
            compiled = torch.compile(model, dynamic=False)
            with torch.no_grad():
                t0 = time.perf_counter()
                y_c = compiled(x, t)
                compile_s = time.perf_counter() - t0
                y_e = model(x, t)
                eager, comp = [], []
                for _ in range(args.rounds):
                    for f, acc in ((model, eager), (compiled, comp)):
                        t0 = time.perf_counter()
                        f(x, t)
                        if x.device.type == "cuda":
                            torch.cuda.synchronize()
                        acc.append(time.perf_counter() - t0)
            rows.append({"batch": b, "width": w, "eager_ms": 1e3 * statistics.median(eager),
                         "compiled_ms": 1e3 * statistics.median(comp),
                         "compiled_over_eager": statistics.median(comp) / statistics.median(eager),
                         "compile_s": compile_s, "max_abs_diff": float((y_c - y_e).abs().max())})
            print(f"  batch {b} width {w:g}: eager {rows[-1]['eager_ms']:.2f} ms, compiled "
                  f"{rows[-1]['compiled_ms']:.2f} ms (compile {compile_s:.1f} s)", flush=True)
    df = pd.DataFrame(rows)
    print(df.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "compile.json", {"device": args.device, "threads": args.threads, "rounds": args.rounds,
                                           "torch": torch.__version__, "rows": rows})
    write_atomic(args.out / "compile.csv", lambda p: df.to_csv(p, index=False))
    return 0


if __name__ == "__main__":
    from _script import run

    run(main)
