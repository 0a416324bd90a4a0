"""The SFDDM student's learning rate per K, on search seeds only (issue 30, after ``sweep_sfddm.py``).

``sweep_sfddm.py`` chose lr 1e-3 on K = 2 (300 steps). This sweep asks whether that rate holds for K = 4 and 8 over
the full recipe (``experiments/configs/digits-sfddm-v.yaml``: 1,000 steps, an EMA snapshot every 200, seed 0):
each candidate rate distils a K-step v student of the shipped digits teacher with the recipe at that rate, and
every snapshot is scored by the verdict's metrics against the teacher's DDIM on the same K timesteps on seeds
2000.. (never the held-out verdict seeds 10000.., which judge the shipped students). The rule that picks a rate
per K: no snapshot significantly worse than the one before in FID or KID (the growth criterion), then the lowest
final FID; the chosen run is the student shipped for that K (it *is* the recipe at that rate).

The lr 1e-3 candidate of K is the recipe's own run, ``runs/sfddm-v-kK`` (trained with the recipe as written). The
2e-4 candidates were first stopped near step 200 for time; K = 4's was resumed (bit-exactly) and finished a session
later, and the rule then chose it for K = 4; K = 8's was not finished (``--table`` scores finished runs only).

    OMP_NUM_THREADS=1 python experiments/sweep_sfddm_lr.py --k 4 --lr 5e-4          # train one candidate
    python experiments/sweep_sfddm_lr.py --table                                    # score every finished one

Each candidate trains in runs/sfddm-sweep-lr/k<K>-lr<lr> (resumable). Results: experiments/results/sfddm-sweep-lr.json.
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
from ddsm.metrics.verdict import Verdict, VerdictSettings, worse_than  # noqa: E402
from ddsm.run_configs import distill_run_config  # noqa: E402
from ddsm.samplers import SamplerConfig  # noqa: E402

CONFIG = ROOT / "experiments" / "configs" / "digits-sfddm-v.yaml"
RESULTS = ROOT / "experiments" / "results" / "sfddm-sweep-lr.json"
FOLDER = ROOT / "runs" / "sfddm-sweep-lr"
SUB_STEPS = {2: 10, 4: 5, 8: 3}
RATES = (2e-4, 5e-4, 1e-3)
RECIPE_RATE = 1e-3  # digits-sfddm-v.yaml's own: its runs are runs/sfddm-v-kK
SEED0 = 2000  # first scoring seed: outside the search's 0..N and the verdict's 10000..


def folder(k: int, lr: float) -> Path:
    return ROOT / "runs" / f"sfddm-v-k{k}" if lr == RECIPE_RATE else FOLDER / f"k{k}-lr{lr:g}"


def train_one(k: int, lr: float) -> Path:
    out = folder(k, lr)
    resume = (out / "checkpoint.safetensors").is_file()
    if resume:
        cfg = distill_run_config(out, resume=True)
    else:
        cfg = distill_run_config(out, teacher="digits", steps=k, sub_steps=SUB_STEPS[k], config_file=CONFIG,
                                 prediction="v_prediction")
        cfg = validate(RunConfig, apply_overrides(cfg.model_dump(mode="json"), **{"train.lr": lr}),
                       source=f"sweep candidate K={k} lr={lr:g}")
    Trainer(cfg, out, progress=False).run(resume=resume)
    return out


def _snapshots(run: Path) -> dict[int, Path]:
    snaps = {int(p.stem.split("-")[1]): p for p in sorted((run / "snapshots").glob("ema-*.safetensors"))}
    final = run / "supernet.safetensors"
    if final.is_file():
        snaps[load_supernet(final).header.get("step")] = final
    return dict(sorted(snaps.items()))


def score(k: int, runs: dict[float, Path], num: int, draws: int) -> dict:
    from bench_sfddm import _full_samples  # the benchmark's own full-width sampling

    teacher = load_supernet("digits")
    data = load_digits(teacher.config.geometry.image_size)
    settings = VerdictSettings(num=num, seed=SEED0, teacher_num=2 * num, draws=draws)
    nets = {(lr, step): load_supernet(p) for lr, run in runs.items() for step, p in _snapshots(run).items()}
    own = student_sampler(next(iter(nets.values())).config.student)
    samples = {"teacher-ddim-same-k": _full_samples(teacher, own, settings.seeds)}
    samples.update({f"lr{lr:g} step {s}": _full_samples(net, own, settings.seeds) for (lr, s), net in nets.items()})
    judge = Verdict(teacher, SamplerConfig(kind="ddim", steps=20), FeatureNet.load("digits", data),
                    reference_images(data, "all"), settings, search_seeds=range(0, 64))
    res = judge.score({}, samples=samples)
    out = {}
    for lr in runs:
        steps = sorted(s for (r, s) in nets if r == lr)
        rows, worse = [], []
        for i, s in enumerate(steps):
            name = f"lr{lr:g} step {s}"
            row = {"step": s, **{m: round(res.interval(name, m).value, 5) for m in res.metrics}}
            d = res.compare(name, "teacher-ddim-same-k", "fid")
            row["fid_minus_ddim"] = [round(d.value, 3), round(d.low, 3), round(d.high, 3)]
            if i:
                for m in ("fid", "kid"):
                    d = res.compare(name, f"lr{lr:g} step {steps[i - 1]}", m)
                    row[f"{m}_minus_previous"] = [round(d.value, 5), round(d.low, 5), round(d.high, 5)]
                    if worse_than(m, d.low, d.high):
                        worse.append(f"step {s} {m}")
            rows.append(row)
        out[f"{lr:g}"] = {"run": str(runs[lr].relative_to(ROOT)), "snapshots": rows, "worse_than_previous": worse,
                          "final_fid": rows[-1]["fid"]}
    ok = [lr for lr, r in out.items() if not r["worse_than_previous"]]
    chosen = min(ok or out, key=lambda lr: out[lr]["final_fid"])
    return {"candidates": out, "chosen_lr": float(chosen), "chosen_run": out[chosen]["run"],
            "rule": "no snapshot significantly worse than the one before in FID or KID, then the lowest final FID"
                    + ("" if ok else " (no candidate met the first condition: lowest final FID alone)")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--k", type=int, choices=sorted(SUB_STEPS), action="append", help="student steps to train")
    ap.add_argument("--lr", type=float, choices=RATES, action="append", help="rates to train")
    ap.add_argument("--table", action="store_true", help="score every finished candidate, print, write results")
    ap.add_argument("--num", type=int, default=500)
    ap.add_argument("--draws", type=int, default=200)
    args = ap.parse_args(argv)
    t0 = time.time()
    for k in args.k or []:
        for lr in args.lr or []:
            train_one(k, lr)
            print(f"K={k} lr={lr:g}: trained ({time.time() - t0:.0f} s)", flush=True)
    if not args.table:
        return 0
    doc = {"what": "SFDDM v-student learning rate per K on search seeds (issue 30)", "recipe": str(CONFIG.relative_to(ROOT)),
           "seeds": f"{SEED0}..{SEED0 + args.num - 1}", "command": "python " + " ".join(sys.argv), "k": {}}
    for k in (4, 8):
        runs = {lr: folder(k, lr) for lr in RATES if (folder(k, lr) / "supernet.safetensors").is_file()}
        if not runs:
            continue
        doc["k"][str(k)] = result = score(k, runs, args.num, args.draws)
        print(f"K = {k}: FID per snapshot (seeds {doc['seeds']}); chosen lr {result['chosen_lr']:g}")
        for lr, r in result["candidates"].items():
            fids = " ".join(f"{row['fid']:.1f}" for row in r["snapshots"])
            print(f"  lr {lr:>6}: {fids}  worse than previous: {', '.join(r['worse_than_previous']) or 'none'}")
    write_json(RESULTS, doc)
    print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
