"""Short sweep of the SFDDM student fine-tune's learning rate, EMA and batch (issue 30), on search seeds only.

Every candidate distils the K = 2 student (the hardest K, still improving at the shipped recipe's end) from the
shipped digits teacher with ``experiments/configs/digits-sfddm.yaml`` plus its overrides, for ``--iters`` steps,
and is scored by the verdict's metrics (FID, KID, precision, recall, ...) against the teacher's DDIM on the same
K timesteps, on seeds 2000.. (never the held-out verdict seeds 10000.., which judge the shipped students).

    OMP_NUM_THREADS=1 python experiments/sweep_sfddm.py --only base --only lr5e-4
    python experiments/sweep_sfddm.py --table           # the finished candidates: table + results JSON

Each candidate trains in runs/sfddm-sweep/<name> (resumable) and writes <name>.json there.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

from ddsm import Trainer, load_supernet  # noqa: E402
from ddsm.config import RunConfig, validate  # noqa: E402
from ddsm.config.overrides import apply_overrides  # noqa: E402
from ddsm.data import load_digits  # noqa: E402
from ddsm.distill import student_sampler  # noqa: E402
from ddsm.io import write_json  # noqa: E402
from ddsm.metrics.featurenet import FeatureNet  # noqa: E402
from ddsm.metrics.fid import reference_images  # noqa: E402
from ddsm.metrics.verdict import Verdict, VerdictSettings  # noqa: E402
from ddsm.run_configs import distill_run_config  # noqa: E402
from ddsm.samplers import SamplerConfig  # noqa: E402

CONFIG = ROOT / "experiments" / "configs" / "digits-sfddm.yaml"
RESULTS = ROOT / "experiments" / "results" / "sfddm-sweep.json"
FOLDER = ROOT / "runs" / "sfddm-sweep"
K, SUB_STEPS = 2, 10
CANDIDATES = {  # name -> overrides of digits-sfddm.yaml
    "base": {},  # lr 2e-4, EMA 0.995, batch 64: the recipe the v students were distilled with
    "lr5e-4": {"train.lr": 5e-4},
    "lr1e-4": {"train.lr": 1e-4},
    "lr1e-3": {"train.lr": 1e-3},  # added after the first five: the best rate (5e-4) was at the edge of the range
    "ema0.99": {"train.ema_decay": 0.99},
    "batch128": {"train.batch_size": 128},
}
SEED0 = 2000  # first scoring seed: outside the search's 0..N and the verdict's 10000..


def train_one(name: str, iters: int) -> Path:
    out = FOLDER / name
    resume = (out / "checkpoint.safetensors").is_file()
    if resume:
        cfg = distill_run_config(out, resume=True, iters=iters)
    else:
        cfg = distill_run_config(out, teacher="digits", steps=K, sub_steps=SUB_STEPS, config_file=CONFIG,
                                 iters=iters, prediction="v_prediction")
        cfg = validate(RunConfig, apply_overrides(cfg.model_dump(mode="json"), **{"train.snapshot_every": 0,
                                                                                  **CANDIDATES[name]}),
                       source=f"sweep candidate {name}")
    trainer = Trainer(cfg, out, progress=False)
    trainer.run(resume=resume)
    return out


def score(names: list[str], num: int, draws: int) -> dict[str, dict]:
    teacher = load_supernet("digits")
    data = load_digits(teacher.config.geometry.image_size)
    features = FeatureNet.load("digits", data)
    settings = VerdictSettings(num=num, seed=SEED0, teacher_num=2 * num, draws=draws)
    from bench_sfddm import _full_samples  # the benchmark's own full-width sampling
    nets = {n: load_supernet(FOLDER / n / "supernet.safetensors") for n in names}
    own = student_sampler(next(iter(nets.values())).config.student)
    samples = {"teacher-ddim-same-k": _full_samples(teacher, own, settings.seeds)}
    samples.update({n: _full_samples(net, own, settings.seeds) for n, net in nets.items()})
    judge = Verdict(teacher, SamplerConfig(kind="ddim", steps=20), features, reference_images(data, "all"),
                    settings, search_seeds=range(0, 64))
    res = judge.score({}, samples=samples)
    out = {}
    for n, net in nets.items():
        row = {"overrides": CANDIDATES[n], "step": net.header.get("step"), "train_seconds": net.header.get("train_seconds")}
        for m in res.metrics:
            v = res.interval(n, m).value
            d = res.compare(n, "teacher-ddim-same-k", m)
            row[m] = round(v, 5)
            row[f"{m}_minus_ddim"] = [round(d.value, 5), round(d.low, 5), round(d.high, 5)]
        out[n] = row
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=sorted(CANDIDATES), action="append", help="train these candidates")
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--table", action="store_true", help="score the finished candidates, print, write results")
    ap.add_argument("--num", type=int, default=500)
    ap.add_argument("--draws", type=int, default=200)
    args = ap.parse_args(argv)
    t0 = time.time()
    for name in args.only or []:
        train_one(name, args.iters)
        print(f"{name}: trained ({time.time() - t0:.0f} s)", flush=True)
    if not args.table:
        return 0
    done = [n for n in CANDIDATES if (FOLDER / n / "supernet.safetensors").is_file()]
    rows = score(done, args.num, args.draws)
    print(f"K = {K}; seeds {SEED0}..{SEED0 + args.num - 1}; value, and minus the teacher's DDIM-{K} [95 % paired]")
    print(f"{'candidate':<10} {'step':>5} {'fid':>8} {'fid - ddim':>26} {'kid':>8}")
    for n, r in rows.items():
        d = r["fid_minus_ddim"]
        print(f"{n:<10} {r['step']:>5} {r['fid']:>8.2f} {d[0]:>8.2f} [{d[1]:>7.2f}, {d[2]:>7.2f}] {r['kid']:>8.4f}")
    write_json(RESULTS, {"what": "SFDDM student fine-tune sweep on search seeds (issue 30)", "k": K,
                         "sub_steps": SUB_STEPS, "seeds": f"{SEED0}..{SEED0 + args.num - 1}", "iters": args.iters,
                         "command": "python " + " ".join(sys.argv), "candidates": rows})
    print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
