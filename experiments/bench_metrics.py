"""How good is each quality metric? FID floors, proxy-vs-FID agreement and cost, FID reproducibility.

The search needs a cheap fitness that ranks width schedules the way FID does.
This benchmark measures, on one supernet:

(a) FID against the real training images (feature net trained on the data),
    every set at the same sample count n (the held-out split's size unless
    ``--table-num`` says otherwise; FID is biased upwards at small n, so only
    equal n compare): held-out real images (the floor: what a perfect
    generator would score at that n), the full-width net, every uniform width;
(b) over ``--candidates`` random schedules (seeded; each draws its own mix of
    widths, so mean widths spread from narrow to wide) with DDIM, every metric
    on the same ``--num`` samples: the Spearman rank correlation with FID of
    the exact teacher-relative proxy and of the first-order (linear) proxy,
    the time per candidate of each and their cost ratios. The linear proxy
    pays a one-off table of single-step drifts and then almost nothing per
    candidate, so it is also timed over ``--linear-candidates`` schedules;
(c) FID reproducibility: the full-width FID computed twice from scratch with
    the same seed; the absolute difference.

    python experiments/bench_metrics.py --checkpoint digits
    python experiments/bench_metrics.py --checkpoint digits --num 360 --steps 20 --candidates 30

Prints tables and writes, atomically, ``<out>/metrics.json``,
``<out>/metrics_fid_table.csv`` and ``<out>/metrics_candidates.csv``. The feature
net is read from ``--featurenet`` or trained once and kept in ``<out>``.
Budget on 2 CPU cores for the 1.1M-parameter digits supernet: roughly
num x candidates x steps x 2 ms, minus what shared prefixes save.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ddsm import SamplerConfig, load_data, load_supernet
from ddsm.io import write_atomic, write_json
from ddsm.checkpoint import data_config_for
from ddsm.metrics.evaluator import FIDEvaluator, ProxyEvaluator
from ddsm.metrics.featurenet import FeatureNet, featurenet_info, train_featurenet
from ddsm.metrics.fid import FID
from ddsm.metrics.linear_proxy import LinearProxyEvaluator


def random_schedules(widths: tuple[float, ...], steps: int, count: int, seed: int) -> list[list[float]]:
    """``count`` schedules; each draws a width mix from a flat Dirichlet, then every step's width from that mix.

    Drawing every step uniformly would give all candidates about the same mean
    width (and quality); a per-candidate mix spreads them across the range.
    """
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        mix = rng.dirichlet(np.ones(len(widths)))
        out.append([float(widths[i]) for i in rng.choice(len(widths), size=steps, p=mix)])
    return out


def get_featurenet(path: str | None, data, out: Path, seed: int, epochs: int) -> FeatureNet:
    """The given feature net (checked against the data), or one trained once and kept beside the results."""
    if path is not None:
        return FeatureNet.load(path, data)
    default = out / f"featurenet-{data.fingerprint()}.safetensors"
    if default.is_file():
        return FeatureNet.load(default, data)
    t0 = time.perf_counter()
    net = train_featurenet(data, seed=seed, epochs=epochs, progress=True)
    net.save(default)
    print(f"trained feature net ({net.config.task}, held-out accuracy {net.holdout_accuracy}) in "
          f"{time.perf_counter() - t0:.1f} s -> {default}")
    return net


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, help="run folder, .safetensors file or shipped name ('digits')")
    ap.add_argument("--data", default=None, help="data source [default: the run's, else digits]")
    ap.add_argument("--featurenet", default=None, help="feature net file [default: train one into --out]")
    ap.add_argument("--featurenet-epochs", type=int, default=10)
    ap.add_argument("--num", type=int, default=360, help="samples per candidate in (b), for FID and both proxies")
    ap.add_argument("--table-num", type=int, default=0, help="samples per set in (a) [default: the held-out size]")
    ap.add_argument("--linear-candidates", type=int, default=500, help="schedules the linear proxy is timed over")
    ap.add_argument("--steps", type=int, default=20, help="DDIM steps")
    ap.add_argument("--candidates", type=int, default=30, help="random schedules for (b)")
    ap.add_argument("--seed", type=int, default=0, help="seed of samples, schedules and feature net")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--out", default="experiments/results")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)

    net = load_supernet(args.checkpoint)
    unet = net.config.unet
    data_cfg = data_config_for(args.checkpoint)
    if args.data is not None:
        data_cfg = data_cfg.model_copy(update={"source": args.data})
    data = load_data(data_cfg, unet.image_size, unet.in_channels)
    fnet = get_featurenet(args.featurenet, data, out, args.seed, args.featurenet_epochs)
    fid = FID.for_data(data, featurenet=fnet, split="train", cache_dir=out / "fid-reference")
    sampler = SamplerConfig(kind="ddim", steps=args.steps)
    common = dict(seed=args.seed, batch_size=args.batch_size)
    full = [max(unet.widths)] * args.steps

    # (a) FID table ---------------------------------------------------------------
    rows = []
    n_a = min(args.table_num or len(data.holdout), len(data.holdout))
    t0 = time.perf_counter()
    rows.append({"set": "held-out real (floor)", "n": n_a, "fid": fid.fid(data.holdout[:n_a]),
                 "seconds": time.perf_counter() - t0})
    fid_eval = FIDEvaluator(net, sampler, fid, num=n_a, progress=True, **common)
    for w in reversed(unet.widths):  # one at a time, to time each width on its own
        t0 = time.perf_counter()
        r = fid_eval.evaluate([[w] * args.steps]).iloc[0]
        rows.append({"set": f"width {w:g}" + (" (full)" if w == max(unet.widths) else ""), "n": n_a,
                     "fid": r["fid"], "seconds": time.perf_counter() - t0})
    table_a = pd.DataFrame(rows)

    # (b) proxy vs FID over random schedules -----------------------------------------
    cands = random_schedules(unet.widths, args.steps, args.candidates, args.seed)
    proxy_eval = ProxyEvaluator(net, sampler, num=args.num, **common)
    t0 = time.perf_counter()
    proxy_eval.evaluate([full])  # the teacher, sampled once and cached
    teacher_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    proxy_df = proxy_eval.evaluate(cands)
    proxy_seconds = time.perf_counter() - t0
    lin_eval = LinearProxyEvaluator(net, sampler, num=args.num, **common)
    t0 = time.perf_counter()
    lin_eval.prepare([tuple(w for _ in range(args.steps)) for w in unet.widths])  # every single-step drift
    lin_setup = time.perf_counter() - t0
    t0 = time.perf_counter()
    lin_df = lin_eval.evaluate(cands)
    lin_seconds = time.perf_counter() - t0
    many = random_schedules(unet.widths, args.steps, args.linear_candidates, args.seed + 1)
    t0 = time.perf_counter()
    lin_eval.evaluate(many)
    lin_many_seconds = time.perf_counter() - t0
    fid_eval_b = FIDEvaluator(net, sampler, fid, num=args.num, progress=True, **common)
    t0 = time.perf_counter()
    fid_df = fid_eval_b.evaluate(cands)
    fid_seconds = time.perf_counter() - t0
    cand = pd.DataFrame({
        "widths": [" ".join(f"{w:g}" for w in c) for c in cands],
        "mean_width": [float(np.mean(c)) for c in cands],
        "proxy": proxy_df["proxy"], "proxy_linear": lin_df["proxy_linear"], "fid": fid_df["fid"],
        "valid": proxy_df["valid"] & lin_df["valid"] & fid_df["valid"],
        "error": (proxy_df["error"] + " " + lin_df["error"] + " " + fid_df["error"]).str.strip(),
    })
    ok = cand[cand["valid"]]
    from scipy.stats import spearmanr

    def rank(a: str, b: str) -> tuple[float, float]:
        return tuple(float(v) for v in spearmanr(ok[a], ok[b])) if len(ok) > 2 else (float("nan"), float("nan"))

    rho, p = rank("proxy", "fid")
    rho_lin, p_lin = rank("proxy_linear", "fid")
    fid_per = fid_seconds / len(cands)
    lin_per = (lin_setup + lin_seconds + lin_many_seconds) / (len(cands) + len(many))
    summary_b = {
        "candidates": len(cands), "valid": int(cand["valid"].sum()), "steps": args.steps, "samples": args.num,
        "spearman_proxy_fid": rho, "spearman_p": p,
        "spearman_linear_fid": rho_lin, "spearman_linear_p": p_lin,
        "spearman_linear_proxy": rank("proxy_linear", "proxy")[0],
        "spearman_mean_width_fid": rank("mean_width", "fid")[0],
        "fid_seconds_per_candidate": fid_per,
        "proxy_seconds_per_candidate": proxy_seconds / len(cands),
        "cost_ratio_fid_over_proxy": fid_seconds / proxy_seconds if proxy_seconds > 0 else float("inf"),
        "linear_setup_seconds": lin_setup,
        "linear_seconds_per_candidate_after_setup": (lin_seconds + lin_many_seconds) / (len(cands) + len(many)),
        "linear_candidates_timed": len(cands) + len(many),
        "linear_seconds_per_candidate_with_setup": lin_per,
        "cost_ratio_fid_over_linear_with_setup": fid_per / lin_per,
        "proxy_teacher_seconds": teacher_seconds,
        "fid_sampling_saved_fraction": fid_eval_b.stats.saved_fraction,
        "proxy_sampling_saved_fraction": proxy_eval.stats.saved_fraction,
    }

    # (c) FID reproducibility ----------------------------------------------------------
    repeat = [FIDEvaluator(net, sampler, fid, num=args.num, **common).evaluate([full])["fid"][0] for _ in range(2)]
    summary_c = {"fid_first": float(repeat[0]), "fid_second": float(repeat[1]),
                 "abs_difference": abs(float(repeat[0]) - float(repeat[1]))}

    # report ------------------------------------------------------------------------------
    with pd.option_context("display.width", 120, "display.max_colwidth", 60, "display.float_format", "{:.4g}".format):
        print("\n(a) FID against the real training images")
        print(table_a.to_string(index=False))
        print(f"\n(b) proxy vs FID over {len(cands)} random schedules (DDIM {args.steps} steps)")
        print(cand.sort_values("fid").to_string(index=False))
        print(pd.Series(summary_b).to_string())
        print("\n(c) FID reproducibility (same seed, computed twice)")
        print(pd.Series(summary_c).to_string())
    result = {
        "checkpoint": net.source, "supernet": net.fingerprint, "data": data.name, "data_fingerprint": data.fingerprint(),
        "featurenet": featurenet_info(fnet), "sampler": sampler.model_dump(mode="json"), "seed": args.seed,
        "threads": torch.get_num_threads(),
        "fid_table": table_a.to_dict(orient="records"), "proxy_vs_fid": summary_b, "fid_reproducibility": summary_c,
    }
    write_json(out / "metrics.json", result)
    write_atomic(out / "metrics_fid_table.csv", lambda p: table_a.to_csv(p, index=False))
    write_atomic(out / "metrics_candidates.csv", lambda p: cand.to_csv(p, index=False))
    print(f"\n-> {out / 'metrics.json'}, {out / 'metrics_fid_table.csv'}, {out / 'metrics_candidates.csv'}")
    return 0


if __name__ == "__main__":
    from _script import run

    run(main)
