"""Where one denoiser call's time goes, per width and batch: torch.profiler's operator table on the shipped supernet.

For each (batch, width): ``--calls`` profiled calls after warm-up, the top
``--top`` operators by self CPU time with their share of the call. This is
what explains why a narrow width saves less time than MACs: at batch 1 the
call is mostly fixed per-operator cost (convolutions through
``_slow_conv2d_forward``, group norm, elementwise ops), which narrowing does
not shrink.

    .venv/bin/python experiments/profile_widths.py [--batches 1 256] [--threads 2]

Prints the tables; writes experiments/results/profile_widths.{txt,csv} atomically.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import torch
from torch.profiler import ProfilerActivity, profile

from ddsm.checkpoint import load_supernet
from ddsm.io import write_atomic


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 256])
    ap.add_argument("--widths", type=float, nargs="+", default=[0.25, 1.0])
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--top", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    net = load_supernet("digits", device="cpu")
    model, u = net.model.eval(), net.config.unet
    rows, text = [], []
    for b in args.batches:
        x = torch.randn(b, u.in_channels, u.image_size, u.image_size, generator=torch.Generator().manual_seed(0))
        t = torch.full((b,), 500.0)
        for w in args.widths:
            model.set_active_width(w)
            with torch.no_grad():
                for _ in range(3):
                    model(x, t)
                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    for _ in range(args.calls):
                        model(x, t)
            events = prof.key_averages()
            total = sum(e.self_cpu_time_total for e in events)
            top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[: args.top]
            text.append(f"\nbatch {b}, width {w:g}: {total / args.calls / 1e3:.2f} ms of operator time per call")
            text.append(f"  {'operator':<34} {'share':>6} {'calls/call':>10} {'us/call':>9}")
            for e in top:
                share = e.self_cpu_time_total / total
                text.append(f"  {e.key[:34]:<34} {share:>6.1%} {e.count / args.calls:>10.0f} "
                            f"{e.self_cpu_time_total / args.calls:>9.0f}")
                rows.append({"batch": b, "width": w, "operator": e.key, "share": share,
                             "calls_per_call": e.count / args.calls, "us_per_call": e.self_cpu_time_total / args.calls})
            ops = sum(e.count for e in events) / args.calls
            text.append(f"  operators per call: {ops:.0f}")
    out = "\n".join(text)
    print(out)
    args.out.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out / "profile_widths.txt", lambda p: Path(p).write_text(out + "\n"))
    write_atomic(args.out / "profile_widths.csv", lambda p: pd.DataFrame(rows).to_csv(p, index=False))
    return 0


if __name__ == "__main__":
    from _script import run

    run(main)
