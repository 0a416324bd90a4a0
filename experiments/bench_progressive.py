"""Spectral Progressive Diffusion on digits: is the resolution gene worth having?

Four parts, one script:

1. **The transition keeps the noise white.** For Haar (8 -> 16) and the
   orthonormal DCT (4 -> 16, 4 -> 12), the residual after a growth (state
   minus its scaled clean signal, divided by sqrt(1 - ab')) must be white
   noise of unit variance: its exact covariance (the maps are linear, so it
   is pushed through column by column) and a Monte-Carlo estimate, next to
   naive nearest and bilinear upsampling, which are not white.
2. **The power-spectrum rule.** A and beta fitted on the training digits, and
   the per-step sides the rule predicts for the progressive search space.
3. **Fronts.** Width-only (``search_spaces/digits-proxy.yaml``) against width and
   resolution (``search_spaces/digits-progressive.yaml``), same proxy, same
   budget, on the resolution-aware supernet (``--trained``) and on the shipped
   one (training-free). Every front member within budget is then scored with
   FID (``--fid-num`` samples): hypervolume in (FID, cost share) against one
   reference point for all fronts (the worst FID, so unusable cheap schedules
   count) and against a "useful" one (twice the shipped full-width FID, 1.1 x
   budget), and the best FID within 25 % and 50 % of the full-width cost. The transition steps the search chose are listed against
   the rule's.
4. **Training-free against resolution-aware training at equal cost.** The same
   resolution schedules (both progressive fronts and the rule's schedules at
   every uniform width) scored with FID on the shipped supernet, the
   resolution-aware fine-tune and, with ``--control``, a fine-tune of the same
   recipe at 16 only (which separates "more training" from "training at the
   small sides").

    python experiments/bench_progressive.py --trained digits-progressive --control runs/digits-finetune-control

Prints tables; writes ``<out>/progressive.json``, ``<out>/progressive_fid.csv``
and ``<out>/progressive_residual.csv`` atomically. Search folders go under ``--work``.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ddsm import load_data, load_supernet
from ddsm.diffusion.noise import NoiseSchedule
from ddsm.diffusion.resolution import alpha_bar_after_growth, downsample, grow, upsample
from ddsm.io import write_atomic, write_json
from ddsm.checkpoint import data_config_for
from ddsm.metrics.evaluator import FIDEvaluator
from ddsm.metrics.fid import FID
from ddsm.metrics.verdict import VerdictSettings, check_disjoint
from ddsm.samplers.base import spaced_timesteps
from ddsm.plan import StepPlan
from ddsm.search import SearchConfig, SerialRunner
from ddsm.search.front import hypervolume, pareto_front, reference_point
from ddsm.search.log import parse_genome
from ddsm.search.setup import prepare_search
from ddsm.search.problem import WidthProblem
from ddsm.spectrum import fit_power_spectrum, rule_resolutions

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_search import get_featurenet  # noqa: E402

ALPHA_BAR = 0.3  # noise level of the state grown in part 1


# ---------------------------------------------------------------------------- 1. residual whiteness


def exact_residual_cov(small: int, large: int, transform: str) -> np.ndarray:
    """Covariance of the growth residual / sqrt(1 - ab'), exactly: ``grow`` is linear in (eps, fresh noise)."""
    ab = ALPHA_BAR
    ab_new = float(alpha_bar_after_growth(ab, large / small))
    n_s, n_l = small * small, large * large
    cols = []
    # residual = grow(sqrt(1-ab) eps, fresh)[noise part]: push each unit input through
    eye_s = torch.eye(n_s, dtype=torch.float64).reshape(n_s, 1, small, small)
    y, _ = grow((1 - ab) ** 0.5 * eye_s, ab, large, torch.zeros(n_s, 1, large, large, dtype=torch.float64), transform)
    cols.append(y.reshape(n_s, n_l))
    eye_l = torch.eye(n_l, dtype=torch.float64).reshape(n_l, 1, large, large)
    y, _ = grow(torch.zeros(n_l, 1, small, small, dtype=torch.float64), ab, large, eye_l, transform)
    cols.append(y.reshape(n_l, n_l))
    R = torch.cat(cols) / (1 - ab_new) ** 0.5  # rows: unit inputs, columns: output pixels
    return (R.T @ R).numpy()


def residual_row(name: str, small: int, large: int, transform: str | None, B: int, gen: torch.Generator) -> dict:
    ab = ALPHA_BAR
    x0 = torch.rand((1, 1, large, large), generator=gen, dtype=torch.float64) * 2 - 1
    eps = torch.randn((B, 1, small, small), generator=gen, dtype=torch.float64)
    if transform is not None:
        x0s = downsample(x0, small, transform)
        state = ab**0.5 * x0s + (1 - ab) ** 0.5 * eps
        fresh = torch.randn((B, 1, large, large), generator=gen, dtype=torch.float64)
        y, ab_new = grow(state, ab, large, fresh, transform)
        ab_new = float(ab_new)
        res = (y - ab_new**0.5 * upsample(x0s, large, transform)) / (1 - ab_new) ** 0.5
        C = exact_residual_cov(small, large, transform)
        exact = float(np.abs(C - np.eye(len(C))).max())
    else:  # naive: interpolate the state, keep the noise level
        x0s = F.avg_pool2d(x0, large // small)
        state = ab**0.5 * x0s + (1 - ab) ** 0.5 * eps
        mode = name.split()[0]
        up = lambda z: F.interpolate(z, size=(large, large), mode=mode,  # noqa: E731
                                     **({} if mode == "nearest" else {"align_corners": False}))
        res = (up(state) - ab**0.5 * up(x0s)) / (1 - ab) ** 0.5
        exact = math.nan
    f = res.reshape(B, -1)
    cov = torch.cov(f.T)
    off = cov - torch.diag(torch.diag(cov))
    spec = torch.fft.fft2(res, norm="ortho").abs().pow(2).mean(0)[0]
    return {"transition": name, "exact_max_abs_cov_minus_I": exact, "mc_samples": B,
            "mc_mean": float(f.mean()), "mc_variance": float(f.var()),
            "mc_max_abs_offdiag_cov": float(off.abs().max()),
            "mc_spectrum_min_over_max": float(spec.min() / spec.max())}


# ---------------------------------------------------------------------------- 3./4. searches and FID


def search(space: SearchConfig, checkpoint: str, out: Path, transitions: list) -> dict:
    prepared = prepare_search(space, checkpoint)
    runner = SerialRunner(prepared.factory, decode=space.decode, quality=space.objectives.quality, device="cpu")
    t0 = time.perf_counter()
    res = prepared.run(out, runner=runner, progress=True, resume=(out / "state.json").exists(),
                       transition_seeds=transitions)
    return {"result": res, "seconds": time.perf_counter() - t0, "problem": WidthProblem(space, prepared.costs)}


def front_members(space: SearchConfig, run: dict) -> list[dict]:
    rows = []
    for g, share in zip(run["result"].front["genome"], run["result"].front["share"]):
        genome = parse_genome(g)
        if share <= space.budget + 1e-12:
            rows.append({"genome": " ".join(map(str, genome)), "share": float(share), "plan": space.decode(genome),
                         "sides": space.genes_to_resolutions(genome)})
    return rows


def plan_key(plan) -> tuple:
    return StepPlan.of(plan).pairs()


def front_summary(rows: pd.DataFrame, ref: tuple[float, float], useful: tuple[float, float]) -> dict:
    pts = rows.to_dict(orient="records")
    front = pareto_front(pts, quality="fid")
    out = {"schedules": len(rows), "hypervolume": hypervolume(front, quality="fid", ref=ref),
           "hypervolume_useful": hypervolume(front, quality="fid", ref=useful)}
    for cap in (0.25, 0.5):
        sel = rows[rows["share"] <= cap + 1e-12]
        best = sel.loc[sel["fid"].idxmin()] if len(sel) else None
        out[f"best_fid_within_{int(cap * 100)}pct"] = None if best is None else float(best["fid"])
        out[f"its_share_{int(cap * 100)}pct"] = None if best is None else float(best["share"])
    return out


def transitions_of(sides: list[int] | None, levels: tuple[int, ...]) -> dict[str, int | None]:
    if sides is None:
        return {}
    return {str(r): next((i for i, s in enumerate(sides) if s >= r), None) for r in levels[1:]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="digits", help="the supernet trained at 16 only (training-free mode)")
    ap.add_argument("--trained", default="digits-progressive", help="the resolution-aware supernet (train.resolutions)")
    ap.add_argument("--control", default=None, help="optional: the same fine-tune at 16 only")
    ap.add_argument("--width-space", default="search_spaces/digits-proxy.yaml")
    ap.add_argument("--space", default="search_spaces/digits-progressive.yaml")
    ap.add_argument("--fid-num", type=int, default=360)
    ap.add_argument("--mc", type=int, default=20000, help="Monte-Carlo samples per transition in part 1")
    ap.add_argument("--featurenet", default=None, help="feature net file [default: trained once into --out]")
    ap.add_argument("--work", default=None)
    ap.add_argument("--out", default="experiments/results")
    args = ap.parse_args(argv)
    out = Path(args.out)
    work = Path(args.work or tempfile.mkdtemp(prefix="ddsm-bench-progressive-"))
    summary: dict = {"fid_samples": args.fid_num}

    print("== 1. residual after a growth (should be unit white noise)")
    gen = torch.Generator().manual_seed(0)
    residual = pd.DataFrame([
        residual_row("haar 8->16", 8, 16, "haar", args.mc, gen),
        residual_row("dct 4->16", 4, 16, "dct", args.mc, gen),
        residual_row("dct 4->12", 4, 12, "dct", args.mc, gen),
        residual_row("nearest 8->16 (naive)", 8, 16, None, args.mc, gen),
        residual_row("bilinear 8->16 (naive)", 8, 16, None, args.mc, gen),
    ])
    print(residual.to_string(index=False, float_format="{:.4g}".format))
    summary["residual"] = residual.to_dict(orient="records")

    space_w, space_r = SearchConfig.load(args.width_space), SearchConfig.load(args.space)
    shipped = load_supernet(args.checkpoint)
    unet = shipped.config.unet
    data = load_data(data_config_for(args.checkpoint), unet.image_size, unet.in_channels)

    print("\n== 2. power-spectrum rule")
    fit = fit_power_spectrum(data.train)
    noise = NoiseSchedule(shipped.config.diffusion)
    ts = spaced_timesteps(noise.num_timesteps, space_r.sampler.steps, space_r.sampler.timestep_spacing).tolist()
    rule_sides = rule_resolutions(fit, space_r.resolutions, ts, noise)
    rule_genes = space_r.resolutions_to_genes(rule_sides)
    print(f"P(w) = {fit.A:.4g} w^-{fit.beta:.4g} (R^2 {fit.r2:.3f}); rule sides {rule_sides}; "
          f"transition steps {dict(zip(space_r.resolutions[1:], rule_genes))}")
    summary["spectrum"] = {"A": fit.A, "beta": fit.beta, "r2": fit.r2, "rule_sides": rule_sides,
                           "rule_transitions": transitions_of(rule_sides, space_r.resolutions)}

    print("\n== 3. searches")
    runs = {
        ("trained", "width"): search(space_w, args.trained, work / "trained-width", []),
        ("trained", "width+resolution"): search(space_r, args.trained, work / "trained-res", [rule_genes]),
        ("training-free", "width"): search(space_w, args.checkpoint, work / "free-width", []),
        ("training-free", "width+resolution"): search(space_r, args.checkpoint, work / "free-res", [rule_genes]),
    }
    summary["searches"] = {f"{a}/{b}": {"seconds": r["seconds"], "evaluations": len(r["result"].evaluations),
                                         "front": len(r["result"].front)} for (a, b), r in runs.items()}

    # Everything to score with FID, per supernet: its own fronts, plus (part 4) every resolution schedule on both.
    rows = []
    for (who, kind), r in runs.items():
        sp = space_r if kind != "width" else space_w
        for m in front_members(sp, r):
            rows.append({"set": f"{who}/{kind}", "supernet": who, **m})
    res_plans = {plan_key(m["plan"]): m for m in rows
                 if m["plan"].resolutions is not None and min(m["plan"].resolutions) < unet.image_size}
    problem_r = runs[("trained", "width+resolution")]["problem"]
    for j, w in enumerate(space_r.widths):
        genome = (j,) * space_r.n_genes + tuple(rule_genes)
        plan = space_r.decode(genome)
        res_plans.setdefault(plan_key(plan), {"genome": " ".join(map(str, genome)),
                                              "share": float(problem_r.share(genome)[0]), "plan": plan,
                                              "sides": list(plan.resolutions)})
    supernets = {"training-free": args.checkpoint, "trained": args.trained}
    if args.control:
        supernets["control"] = args.control
    for who in supernets:
        for m in res_plans.values():
            rows.append({"set": "equal-cost", "supernet": who, **{k: m[k] for k in ("genome", "share", "plan", "sides")}})
        full = [1.0] * space_w.sampler.steps
        rows.append({"set": "full width", "supernet": who, "genome": "", "share": 1.0, "plan": full, "sides": None})
    table = pd.DataFrame(rows)

    fid = FID.for_data(data, featurenet=get_featurenet(args.featurenet, data, out), split="train",
                       cache_dir=out / "fid-reference")
    table["fid"] = math.nan
    t0 = time.perf_counter()
    for who, ckpt in supernets.items():
        sel = table["supernet"] == who
        net = load_supernet(ckpt, device="cpu")
        plans: dict[tuple, object] = {}  # each distinct schedule once
        for p in table.loc[sel, "plan"]:
            plans.setdefault(plan_key(p), p)
        print(f"\n== FID on {who}: {len(plans)} schedules x {args.fid_num} samples")
        # held-out seeds: never the ones the search selected its schedules on
        verdict = VerdictSettings(num=max(args.fid_num, 50))
        check_disjoint(verdict.seeds, space_w.search_seeds)
        ev = FIDEvaluator(net, space_w.sampler, fid, num=args.fid_num, seed=verdict.seed, fuse=False, cache_mb=512, progress=True)
        scores = dict(zip(plans, ev.evaluate(list(plans.values()))["fid"].to_numpy()))
        table.loc[sel, "fid"] = [scores[plan_key(p)] for p in table.loc[sel, "plan"]]
    summary["fid_seconds"] = time.perf_counter() - t0

    fronts = table[table["set"].str.contains("/")]
    ref = reference_point(list(fronts["fid"]))
    # The worst FID sets `ref`, so unusable cheap schedules (FID in the hundreds) dominate that area; the
    # "useful" reference only counts FID below twice the shipped supernet's full-width FID, within 1.1 x budget.
    free_full = float(table[(table["set"] == "full width") & (table["supernet"] == "training-free")]["fid"].iloc[0])
    useful = (2 * free_full, 1.1 * space_r.budget)
    summary["fid_reference_point"], summary["fid_useful_reference_point"] = list(ref), list(useful)
    summary["fronts"] = {s: front_summary(g, ref, useful) for s, g in fronts.groupby("set")}
    chosen = fronts[fronts["set"].str.endswith("width+resolution")]
    summary["searched_transitions"] = [
        {"set": r["set"], "share": r["share"], "fid": r["fid"], **transitions_of(r["sides"], space_r.resolutions)}
        for r in chosen.to_dict(orient="records")]
    eq = table[table["set"] == "equal-cost"].pivot_table(index=["genome", "share"], columns="supernet", values="fid")
    eq = eq.reset_index().sort_values("share")
    gap = {"schedules": len(eq),
           "median_fid_training_free_minus_trained": float((eq["training-free"] - eq["trained"]).median()),
           "mean_fid_training_free": float(eq["training-free"].mean()), "mean_fid_trained": float(eq["trained"].mean())}
    if "control" in eq:
        gap["median_fid_control_minus_trained"] = float((eq["control"] - eq["trained"]).median())
        gap["mean_fid_control"] = float(eq["control"].mean())
    full = table[table["set"] == "full width"].set_index("supernet")["fid"]
    gap["full_width_fid"] = {k: float(v) for k, v in full.items()}
    summary["equal_cost"] = gap

    table["resolutions"] = [" ".join(map(str, s)) if s else "" for s in table["sides"]]
    table["widths"] = [" ".join(f"{w:g}" for w in StepPlan.of(p).widths) for p in table["plan"]]
    table = table.drop(columns=["plan", "sides"])
    with pd.option_context("display.width", 160, "display.max_colwidth", 70, "display.float_format", "{:.4g}".format):
        print("\nfronts (FID, within budget)"); print(pd.DataFrame(summary["fronts"]).T.to_string())
        print("\ntransitions the search chose (first step at each larger side), rule:",
              summary["spectrum"]["rule_transitions"])
        print(pd.DataFrame(summary["searched_transitions"]).to_string(index=False))
        print("\ntraining-free vs resolution-aware at equal cost"); print(eq.to_string(index=False))
        print(pd.Series({k: v for k, v in gap.items() if k != "full_width_fid"}).to_string())
        print("full-width FID per supernet:", gap["full_width_fid"])
    write_json(out / "progressive.json", summary)
    write_atomic(out / "progressive_fid.csv", lambda p: table.to_csv(p, index=False))
    write_atomic(out / "progressive_residual.csv", lambda p: residual.to_csv(p, index=False))
    print(f"\n-> {out / 'progressive.json'} (search folders in {work})")
    return 0


if __name__ == "__main__":
    from _script import run

    run(main)
