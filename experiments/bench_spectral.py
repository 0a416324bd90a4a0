"""Spectral Diffusion on digits: do wavelet gating and spectrum-aware distillation make the cheap widths better?

Four parts, one script, every supernet trained with the same budget (iterations, batch, seed) as the plain
reference (``experiments/configs/digits-*.yaml``):

1. **Quality per width** (``widths``). Every supernet at every width, DDIM on the same held-out seeds: the
   verdict's metrics (FID, KID, precision, recall against the real digits in the shipped feature net's space;
   classifier confidence; teacher FID and proxy against the supernet's *own* full width) and the spectrum error
   per band (mean |log10 P_samples / P_real| over the radially averaged power, high band: above side/4 cycles
   per image), each with its 95 % basic bootstrap interval over seeds. Every variant minus the plain supernet
   at the same width is a paired interval (same seeds, same resamples, different networks).
2. **Cost** (``cost``). fvcore MACs and measured latency per width of every supernet (batch 1 and 64, widths
   and supernets round-robin in one process), and of one wavelet-gated block against the plain block it
   replaces.
3. **Fronts** (``front``). The same search (``--space``, default ``search_spaces/digits-proxy.yaml``) on the plain
   supernet and on ``--best``; every front member judged on held-out seeds against its own full width. Costs are
   MACs as a share of the *plain* supernet's full width (the wavelet blocks are cheaper), so both fronts share one
   axis; hypervolume in (FID, cost) against one reference point, with a paired bootstrap interval of the
   difference; and per supernet the cheapest member that is significantly worse than its own full width in no
   verdict metric but the proxy (a distance to the full-width sample itself, which any change increases).
4. **What settles when** (``settle``). For the full width of each supernet, the DFT power of x0_hat at every
   DDIM step against the final sample's: the share of each radial band already settled,
   ``1 - E|F(x0_hat_k - x_final)|^2 / E|F(x_final)|^2``; and per step the sensitivity to narrowing (proxy of the
   schedule that runs that step alone at the narrowest width), with its Spearman correlation against the share of
   each band that settles in that step.

    python experiments/bench_spectral.py                    # every part, every supernet found
    python experiments/bench_spectral.py --parts cost --num 200

Missing supernets are skipped (named in the output). Prints tables; writes ``<out>/spectral.json`` (the sections of parts not rerun are kept, and
``part_commands`` names the command of each) and ``<out>/spectral_*.csv`` atomically; search folders go under ``--work`` and are resumed when present.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

from _script import parse_parts, run, write_parts  # noqa: E402

from ddsm import DDSMError, load_supernet  # noqa: E402
from ddsm.cost import CostTable  # noqa: E402
from ddsm.data import load_digits  # noqa: E402
from ddsm.diffusion.noise import NoiseSchedule  # noqa: E402
from ddsm.io import write_atomic  # noqa: E402
from ddsm.metrics.featurenet import FeatureNet  # noqa: E402
from ddsm.metrics.fid import reference_images  # noqa: E402
from ddsm.metrics.intervals import Draws, bootstrap_counts  # noqa: E402
from ddsm.metrics.verdict import FULL, METRICS, Verdict, VerdictSettings  # noqa: E402
from ddsm.plan import StepPlan  # noqa: E402
from ddsm.samplers import SamplerConfig, make_sampler  # noqa: E402
from ddsm.samplers.batched import generate_many  # noqa: E402
from ddsm.samplers.loop import eval_mode, per_sample_randn, sample_generators, step_noise, visited_timesteps  # noqa: E402
from ddsm.search import SearchConfig  # noqa: E402
from ddsm.search.front import hypervolume_draws  # noqa: E402
from ddsm.search.log import parse_genome  # noqa: E402
from ddsm.search.setup import prepare_search  # noqa: E402
from ddsm.spectrum import band_error_statistic, frequency_bands, radial_power_per_image  # noqa: E402

PARTS = ("widths", "cost", "front", "settle")
#: the supernets compared, as the recipes name them; plain is the shipped reference
DEFAULT_SUPERNETS = {"plain": "digits", "wavelet": "experiments/results/supernets/digits-wavelet-only.safetensors",
                     "spectral": "experiments/results/supernets/digits-spectral-loss-only.safetensors",
                     "both": "digits-spectral"}
BANDS = ("low", "high")


def _available(spec: dict[str, str]) -> tuple[dict, list[str]]:
    nets, missing = {}, []
    for name, ref in spec.items():
        try:
            nets[name] = (ref, load_supernet(ref, device="cpu"))
        except DDSMError as e:
            missing.append(f"{name} ({ref}): {e}")
    return nets, missing


def _spectrum_draws(x: torch.Tensor, real_mean: np.ndarray, freqs: np.ndarray, counts: np.ndarray) -> dict:
    per_image = radial_power_per_image(x)[1]
    side = x.shape[-1]
    return {f"spectrum_{b}": Draws.of(band_error_statistic(per_image, real_mean, freqs, side, b), len(x), counts)
            for b in BANDS}


# ---------------------------------------------------------------------------- 1. quality per width


def part_widths(nets: dict, args, sampler: SamplerConfig, features, data) -> tuple[pd.DataFrame, dict]:
    settings = VerdictSettings(num=args.num, teacher_num=2 * args.num, draws=args.draws)
    counts = bootstrap_counts(settings.num, settings.draws, settings.bootstrap_seed)
    real = data.holdout
    freqs, real_power = radial_power_per_image(real)
    real_mean = real_power.mean(axis=0)
    draws: dict[str, dict[str, dict[str, Draws]]] = {}
    shown: dict[str, torch.Tensor] = {}  # narrowest and full width of every supernet, for the figure
    for name, (_, net) in nets.items():
        t0 = time.perf_counter()
        widths = net.config.unet.widths
        plans = {f"width {w:g}": StepPlan((w,) * sampler.steps) for w in widths[:-1]}
        judge = Verdict(net, sampler, features, reference_images(data, "all"), settings, progress=args.progress)
        res = judge.score(plans, keep_samples=True)
        draws[name] = {}
        for sched, metric_draws in res.draws.items():
            w = widths[-1] if sched == FULL else float(sched.split()[1])
            draws[name][f"{w:g}"] = {**metric_draws, **_spectrum_draws(res.samples[sched], real_mean, freqs, counts)}
            if w in (widths[0], widths[-1]):
                shown[f"{name} {w:g}"] = res.samples[sched]
        print(f"  {name}: {len(plans) + 1} widths x {settings.num} samples in {time.perf_counter() - t0:.0f} s",
              flush=True)
    rows = []
    for name, per_width in draws.items():
        for w, metric_draws in per_width.items():
            for m, d in metric_draws.items():
                iv = d.interval(settings.level)
                row = {"supernet": name, "width": float(w), "metric": m, "value": iv.value, "low": iv.low,
                       "high": iv.high, "n": iv.n}
                if name != "plain" and "plain" in draws and w in draws["plain"]:
                    diff = d.minus(draws["plain"][w][m], settings.level)
                    row.update({"minus_plain": diff.value, "minus_plain_low": diff.low,
                                "minus_plain_high": diff.high, "differs": diff.excludes(0.0)})
                rows.append(row)
    table = pd.DataFrame(rows)
    from ddsm.report.plots import plot_spectra
    from ddsm.spectrum import compare_spectra

    figures = Path(args.out) / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    plot_spectra(compare_spectra(real, shown), figures, stem="spectral_spectrum")
    meta = {"seeds": f"{settings.seed}..{settings.seed + settings.num - 1}",
            "teacher_seeds": f"{settings.teacher_seed}..{settings.teacher_seed + settings.teacher_num - 1}",
            "interval": f"{settings.level:.0%} basic bootstrap over seeds, {settings.draws} draws, paired across "
                        "supernets", "real_for_spectrum": f"{len(real)} held-out digits"}
    return table, meta


def _print_widths(table: pd.DataFrame) -> None:
    metrics = ["fid", "kid", "precision", "confidence", "spectrum_low", "spectrum_high"]
    for m in metrics:
        sub = table[table["metric"] == m]
        if sub.empty:
            continue
        better = "higher" if METRICS.get(m, ("", False))[1] else "lower"
        print(f"\n{m} ({better} is better); variant - plain [95 % paired interval], * = excludes 0")
        for w, rows in sub.groupby("width"):
            cells = []
            for r in rows.to_dict(orient="records"):
                cell = f"{r['supernet']} {r['value']:.4g}"
                if "minus_plain" in r and isinstance(r.get("minus_plain"), float) and math.isfinite(r["minus_plain"]):
                    cell += f" ({r['minus_plain']:+.3g} [{r['minus_plain_low']:+.3g}, {r['minus_plain_high']:+.3g}]" \
                            f"{'*' if r['differs'] else ''})"
                cells.append(cell)
            print(f"  width {w:<5g} " + " | ".join(cells))


# ---------------------------------------------------------------------------- 2. cost


def part_cost(nets: dict, args) -> pd.DataFrame:
    from ddsm.nn.unet import ConvDownsample, NearestConvUpsample, WaveletGatedDownsample, WaveletGatedUpsample

    plain_full = None
    rows = []
    tables = {}
    for name, (_, net) in nets.items():
        tables[name] = CostTable.measure(net.model, net.config, "cpu", batch_size=[1, 64], repeats=args.repeats,
                                         warmup=3)
        if name == "plain":
            plain_full = tables[name].entry(1.0).macs
    for name, table in tables.items():
        unet = nets[name][1].config.unet
        for w in unet.widths:
            e1, e64 = table.entry(w, batch=1), table.entry(w, batch=64)
            rows.append({"supernet": name, "blocks": f"{unet.down_block}/{unet.up_block}", "width": w,
                         "macs": e64.macs, "share_of_plain_full": e64.macs / plain_full if plain_full else math.nan,
                         "ms_batch1": e1.latency_s * 1e3, "ms_batch64": e64.latency_s * 1e3})
    # one block of each kind where the digits UNet has it (32 channels 16->8 down, 64 channels 8->16 up), per width,
    # batch 64, all timed round-robin in one loop
    from ddsm.nn.slimmable import active, freeze_width

    gen = torch.Generator().manual_seed(0)
    kinds = {"down conv (32 ch, 16->8)": (ConvDownsample, 32, 16), "down wavelet (32 ch, 16->8)":
             (WaveletGatedDownsample, 32, 16), "up nearest+conv (64 ch, 8->16)": (NearestConvUpsample, 64, 8),
             "up wavelet (64 ch, 8->16)": (WaveletGatedUpsample, 64, 8)}
    blocks = {}
    for k, (cls, C, side) in kinds.items():
        for w in (0.25, 0.5, 0.75, 1.0):
            block = freeze_width(cls(C), w).eval()  # plain torch at that width, as an extracted subnet runs it
            x = torch.randn(64, active(C, w), side, side, generator=gen)
            blocks[k, w] = (block, x)
    timed = _round_robin({key: (lambda b=b, x=x: b(x)) for key, (b, x) in blocks.items()}, repeats=5 * args.repeats)
    for (k, w), (b, x) in blocks.items():
        rows.append({"supernet": "block", "blocks": k, "width": w, "macs": _block_macs(b, x[:1]),
                     "share_of_plain_full": math.nan, "ms_batch1": math.nan, "ms_batch64": timed[k, w] * 1e3})
    return pd.DataFrame(rows)


def _round_robin(calls: dict, repeats: int, warmup: int = 5) -> dict[str, float]:
    """Median seconds per call, every call once per round so drifting load hits all alike."""
    times: dict[str, list[float]] = {k: [] for k in calls}
    with torch.no_grad():
        for r in range(warmup + repeats):
            for k, f in calls.items():
                t0 = time.perf_counter()
                f()
                if r >= warmup:
                    times[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in times.items()}


def _block_macs(block: torch.nn.Module, x: torch.Tensor) -> int:
    from ddsm.cost.macs import count_module_macs

    return count_module_macs(block, x).total  # the cost model's rules: dense MACs plus one op per element


# ---------------------------------------------------------------------------- 3. fronts


def part_front(nets: dict, args, features, data, macs_of_plain_full: float) -> tuple[pd.DataFrame, dict]:
    space = SearchConfig.load(args.space)
    settings = VerdictSettings(num=args.front_num, teacher_num=2 * args.front_num, draws=args.draws)
    members, draws, summary = [], {}, {}
    for name in ("plain", args.best):
        if name not in nets:
            continue
        ref, net = nets[name]
        prepared = prepare_search(space, ref, net=net)
        out = Path(args.work) / f"search-{name}"
        t0 = time.perf_counter()
        res = prepared.run(out, runner="serial", resume=(out / "search.json").exists(), progress=args.progress,
                           device="cpu")
        search_s = time.perf_counter() - t0
        plans = {}
        for g, share in zip(res.front["genome"], res.front["share"]):
            plan = StepPlan.of(space.decode(parse_genome(g)))
            plans[f"{name} {g}"] = (plan, float(share))
        judge = Verdict(net, space.sampler, features, reference_images(data, "all"), settings,
                        search_seeds=space.search_seeds, progress=args.progress)
        res_v = judge.score({k: p for k, (p, _) in plans.items()})
        own_full = _macs_full(net)
        draws[name] = res_v.draws
        cheapest = None
        for k, (plan, share) in sorted(plans.items(), key=lambda kv: kv[1][1]):
            # proxy is a distance to the full-width sample itself (0 only at full width): a change, not a loss
            worse = [m for m in res_v.metrics if m != "proxy" and _significantly_worse(res_v, k, m)]
            iv = res_v.interval(k, "fid")
            members.append({"supernet": name, "genome": k.split(" ", 1)[1], "share_own": share,
                            "share_plain": share * own_full / macs_of_plain_full, "fid": iv.value,
                            "fid_low": iv.low, "fid_high": iv.high, "worse_than_own_full": ",".join(worse)})
            if cheapest is None and not worse:
                d = res_v.compare(k, FULL, "fid")
                cheapest = {"genome": k.split(" ", 1)[1], "share_own": share,
                            "share_plain": share * own_full / macs_of_plain_full,
                            "flop_saving_own": 1 - share, "fid_minus_own_full": d.value,
                            "interval": [d.low, d.high]}
        full_iv = res_v.interval(FULL, "fid")
        summary[name] = {"search_seconds": round(search_s, 1), "front": len(plans), "full_width_fid": full_iv.value,
                         "full_width_fid_interval": [full_iv.low, full_iv.high],
                         "full_width_share_of_plain": own_full / macs_of_plain_full,
                         "cheapest_without_significant_loss": cheapest}
    table = pd.DataFrame(members)
    if len(draws) == 2 and not table.empty:
        hv = {}
        worst = float(table["fid"].max())
        ref_pt = (worst + 0.1 * abs(worst), 1.1)
        for name in draws:
            sub = table[table["supernet"] == name]
            keys = [f"{name} {g}" for g in sub["genome"]]
            shares = list(sub["share_plain"])

            hv[name] = hypervolume_draws([(draws[name][k]["fid"], sh) for k, sh in zip(keys, shares)], ref=ref_pt)
        a, b = args.best, "plain"
        diff = hv[a].minus(hv[b], settings.level)
        summary["hypervolume"] = {"reference": list(ref_pt), "axes": "FID (lower better) x MACs share of plain full",
                                  **{k: {"value": v.value, "interval": [v.interval().low, v.interval().high]}
                                     for k, v in hv.items()},
                                  f"{a}_minus_{b}": {"value": diff.value, "interval": [diff.low, diff.high],
                                                     "differs": diff.excludes(0.0)}}
    return table, summary


def _macs_full(net) -> float:
    from ddsm.cost.macs import count_macs

    return float(count_macs(net.model, max(net.config.unet.widths)).total)


def _significantly_worse(res, name: str, metric: str) -> bool:
    d = res.compare(name, FULL, metric)
    if not d.excludes(0.0):
        return False
    return d.value < 0 if METRICS[metric][1] else d.value > 0


# ---------------------------------------------------------------------------- 4. what settles when


def _trajectory_x0(net, sampler, widths: list[float], seeds: list[int]) -> tuple[list[torch.Tensor], torch.Tensor]:
    """x0_hat at every step of one batch, and the final sample."""
    model = net.model
    steps = visited_timesteps(sampler)
    c, s = net.config.unet.in_channels, net.config.unet.image_size
    gens = sample_generators(seeds)
    x = per_sample_randn(gens, (c, s, s), "cpu")
    x0s = []
    with eval_mode(model), torch.no_grad():
        for t, w in zip(steps, widths):
            model.set_active_width(w)
            out = sampler.step(model(x, t), t, x, noise=step_noise(sampler, gens, (c, s, s), "cpu"))
            x0s.append(out.pred_original_sample.float())
            x = out.prev_sample
    return x0s, x.float()


def _band_settled(x0s: list[torch.Tensor], final: torch.Tensor) -> pd.DataFrame:
    freqs, p_final = radial_power_per_image(final)
    p_final = p_final.mean(axis=0)
    bands = frequency_bands(final.shape[-1])
    rows = []
    for k, x0 in enumerate(x0s):
        p_err = radial_power_per_image(x0 - final)[1].mean(axis=0)
        row = {"step": k}
        for b, (lo, hi) in bands.items():
            sel = (freqs >= lo) & (freqs <= hi)
            row[f"settled_{b}"] = float(1 - p_err[sel].sum() / p_final[sel].sum())
        rows.append(row)
    return pd.DataFrame(rows)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = pd.Series(a).rank().to_numpy(), pd.Series(b).rank().to_numpy()
    return float(np.corrcoef(ra, rb)[0, 1])


def part_settle(nets: dict, args, sampler_cfg: SamplerConfig) -> tuple[pd.DataFrame, dict]:
    seeds = list(range(20_000, 20_000 + args.settle_num))
    rows, summary = [], {}
    for name, (_, net) in nets.items():
        sampler = make_sampler(NoiseSchedule(net.config.diffusion), sampler_cfg)
        widths = net.config.unet.widths
        n = sampler_cfg.steps
        x0s, final = _trajectory_x0(net, sampler, [widths[-1]] * n, seeds)
        settled = _band_settled(x0s, final)
        # sensitivity: step k alone at the narrowest width; proxy against full width on the same seeds
        plans = [StepPlan((widths[-1],) * n)] + [StepPlan(tuple(widths[0] if i == k else widths[-1] for i in range(n)))
                                                 for k in range(n)]
        xs = generate_many(net.model, sampler, plans, seeds, batch_size=256, fuse=True)
        sens = np.array([float((xs[k + 1] - xs[0]).pow(2).mean()) for k in range(n)])
        settled["sensitivity"] = sens
        for b in BANDS:
            prev = np.concatenate([[0.0], settled[f"settled_{b}"].to_numpy()[:-1]])
            settled[f"settles_{b}"] = settled[f"settled_{b}"].to_numpy() - prev
        settled.insert(0, "supernet", name)
        rows.append(settled)
        gen = np.random.default_rng(0)
        corr = {}
        for b in BANDS:
            v = settled[f"settles_{b}"].to_numpy()
            rho = _spearman(sens, v)
            boot = [_spearman(sens[i], v[i]) for i in (gen.integers(0, n, n) for _ in range(args.draws))]
            boot = [r for r in boot if math.isfinite(r)]
            # percentile interval over resampled steps: a correlation is bounded, the basic interval would leave [-1, 1]
            lo, hi = np.quantile(boot, [0.025, 0.975]) if boot else (math.nan, math.nan)
            corr[b] = {"spearman": rho, "interval": [float(lo), float(hi)], "steps": n}
        first = {b: next((int(k) for k, v in enumerate(settled[f"settled_{b}"]) if v >= 0.9), None) for b in BANDS}
        summary[name] = {"first_step_90pct_settled": first, "sensitivity_vs_settling": corr,
                         "samples": len(seeds), "seeds": f"{seeds[0]}..{seeds[-1]}"}
    return pd.concat(rows, ignore_index=True), summary


# ---------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, ref in DEFAULT_SUPERNETS.items():
        ap.add_argument(f"--{name}", default=ref, help=f"supernet for {name!r} [{ref}]")
    ap.add_argument("--best", default="both", choices=[k for k in DEFAULT_SUPERNETS if k != "plain"],
                    help="the supernet whose front is searched against the plain one's [both]")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    ap.add_argument("--num", type=int, default=1000, help="held-out samples per width or schedule [1000]")
    ap.add_argument("--front-num", type=int, default=500, help="held-out samples per front member in part 3 [500]")
    ap.add_argument("--draws", type=int, default=200, help="bootstrap resamples [200]")
    ap.add_argument("--steps", type=int, default=20, help="DDIM steps of parts 1 and 4 [20]")
    ap.add_argument("--settle-num", type=int, default=256, help="samples of part 4 [256]")
    ap.add_argument("--repeats", type=int, default=20, help="timed passes per width in part 2 [20]")
    ap.add_argument("--space", default=str(ROOT / "search_spaces" / "digits-proxy.yaml"), help="search space of part 3")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads [2]")
    ap.add_argument("--work", default=str(ROOT / "runs" / "bench-spectral"), help="folder for the searches")
    ap.add_argument("--out", default=str(ROOT / "experiments" / "results"), help="folder for the results")
    ap.add_argument("--progress", action="store_true", help="show progress bars")
    args = ap.parse_args(argv)
    parts = parse_parts(args.parts, PARTS)
    torch.set_num_threads(args.threads)
    nets, missing = _available({k: getattr(args, k) for k in DEFAULT_SUPERNETS})
    for line in missing:
        print(f"skipped: {line}")
    if "plain" not in nets:
        raise DDSMError("the plain supernet is needed as the reference of every comparison")
    out = Path(args.out)
    sampler = SamplerConfig(kind="ddim", steps=args.steps)
    data = load_digits(size=16, channels=1)
    features = FeatureNet.load("digits", data)
    doc: dict = {"command": " ".join([Path(sys.executable).name, *sys.argv]),
                 "supernets": {k: {"checkpoint": ref, "fingerprint": net.fingerprint,
                                   "blocks": f"{net.config.unet.down_block}/{net.config.unet.up_block}",
                                   "spectral_weight": (net.header.get("run") or {}).get("train", {})
                                   .get("spectral_weight", 0.0),
                                   "train_seconds": net.header.get("train_seconds"), "step": net.header.get("step")}
                               for k, (ref, net) in nets.items()},
                 "missing": missing, "sampler": sampler.model_dump(mode="json"), "threads": args.threads,
                 "torch": torch.__version__}
    t_all = time.perf_counter()
    if "cost" in parts:
        print("\n== cost: MACs and latency per width ==", flush=True)
        cost = part_cost(nets, args)
        print(cost.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        write_atomic(out / "spectral_cost.csv", lambda p: cost.to_csv(p, index=False))
        doc["cost"] = cost.to_dict(orient="records")
    if "widths" in parts:
        print(f"\n== quality per width ({args.num} held-out samples, DDIM {args.steps}) ==", flush=True)
        table, meta = part_widths(nets, args, sampler, features, data)
        _print_widths(table)
        write_atomic(out / "spectral_widths.csv", lambda p: table.to_csv(p, index=False))
        doc["widths"] = {**meta, "rows": table.to_dict(orient="records")}
    if "front" in parts:
        print("\n== fronts: plain against the best supernet ==", flush=True)
        plain_full = _macs_full(nets["plain"][1])
        table, summary = part_front(nets, args, features, data, plain_full)
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        for k, v in summary.items():
            print(f"  {k}: {v}")
        write_atomic(out / "spectral_front.csv", lambda p: table.to_csv(p, index=False))
        doc["front"] = {"summary": summary, "members": table.to_dict(orient="records")}
    if "settle" in parts:
        print(f"\n== what settles when (full width, {args.settle_num} samples) ==", flush=True)
        table, summary = part_settle(nets, args, sampler)
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
        for k, v in summary.items():
            print(f"  {k}: {v}")
        write_atomic(out / "spectral_settle.csv", lambda p: table.to_csv(p, index=False))
        doc["settle"] = {"summary": summary, "rows": table.to_dict(orient="records")}
    doc["wall_seconds"] = round(time.perf_counter() - t_all, 1)
    write_parts(out / "spectral.json", doc, parts, PARTS)
    print(f"\n-> {out / 'spectral.json'} ({doc['wall_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    run(main)
