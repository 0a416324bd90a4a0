"""Wall-clock saving over FLOP saving of one front member against full width, at several batches (measured here).

    python experiments/speed_member.py --checkpoint mnist-unet --search runs/mnist-unet-search --rank 17 \
        --out experiments/results/conditional-unet-speed.json

The member samples seeds 10000.. with the search's own sampler (guidance choices included) beside the full-width
schedule guided at every step; round-robin timing, one warm-up round, the median of ``--repeats``
(``ddsm.report.export.time_schedules``). Prints a table; writes the JSON atomically.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _script import run  # noqa: E402

from ddsm import DDSMError  # noqa: E402
from ddsm.io import write_atomic  # noqa: E402


def main() -> None:
    from ddsm.checkpoint import load_supernet
    from ddsm.diffusion.noise import NoiseSchedule
    from ddsm.plan import StepPlan
    from ddsm.report.export import time_schedules
    from ddsm.samplers import make_sampler
    from ddsm.search.folder import load_search

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True, help="the supernet the search ran on")
    ap.add_argument("--search", required=True, type=Path, help="the search folder")
    ap.add_argument("--rank", type=int, required=True, help="front member, 1 = cheapest")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 64], help="images per timed run [1 64]")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per schedule [5]")
    ap.add_argument("--out", type=Path, required=True, help="JSON file to write")
    a = ap.parse_args()
    net, search = load_supernet(a.checkpoint), load_search(a.search)
    search.check_supernet(net)
    members = search.front.to_dict(orient="records")
    if not 1 <= a.rank <= len(members):
        raise DDSMError(f"--rank {a.rank} is not a front member; use 1..{len(members)}")
    m = members[a.rank - 1]
    plan, full = search.plan_of(m), StepPlan((max(net.config.geometry.widths),) * search.space.sampler.steps)
    sampler = make_sampler(NoiseSchedule(net.config.diffusion), search.space.sampler)
    out = {"command": " ".join(sys.argv), "checkpoint": a.checkpoint, "search": str(a.search), "rank": a.rank,
           "flop_share": float(m["share"]), "repeats": a.repeats, "batches": {}}
    print(f"{'batch':>5} {'member s':>9} {'full s':>8} {'wall saving':>11} {'FLOP saving':>11} {'ratio':>6}")
    for b in a.batches:
        t = time_schedules(net.model, sampler, [plan, full], list(range(10_000, 10_000 + b)), repeats=a.repeats)
        ts, tf = statistics.median(t[0]), statistics.median(t[1])
        wall, flop = 1 - ts / tf, 1 - float(m["share"])
        out["batches"][str(b)] = {"seconds": ts, "full_seconds": tf, "wall_saving": wall, "flop_saving": flop,
                                  "wall_over_flop_saving": wall / flop}
        print(f"{b:>5} {ts:>9.3f} {tf:>8.3f} {wall:>11.1%} {flop:>11.1%} {wall / flop:>6.2f}")
    write_atomic(a.out, lambda p: Path(p).write_text(json.dumps(out, indent=1) + "\n"))


if __name__ == "__main__":
    run(main)
