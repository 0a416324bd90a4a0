"""Export a search's front: one schedule file per member, ranked cheapest first, with measured speed-ups.

:func:`export_front` writes ``front-01-share0.23.json`` (the cheapest) and
onwards, ``best-under-B.json`` for requested budgets, and ``front.csv`` /
``front.parquet``: predicted cost (MACs, share, FLOP saving) beside the
*measured* wall-clock time of sampling with each schedule against the
full-width schedule on the same device and seeds, at the batch the user
names (default: the batch the user samples with, see :func:`timing_batch`),
beside the speed-up the search's cost predicted. Each schedule file records
that measurement (``measured``), so a speed-up is never quoted without its
batch and device. Everything is checked before the output folder is touched
(:mod:`ddsm.report.outdir`).
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd
import torch

from ddsm.checkpoint import training_data
from ddsm.cost.model import CostModel, SHARE_TOL
from ddsm.diffusion.noise import NoiseSchedule
from ddsm.errors import DDSMError
from ddsm.io import write_atomic
from ddsm.metrics.featurenet import FeatureNet
from ddsm.metrics.fid import reference_images
from ddsm.metrics.verdict import Verdict
from ddsm.plan import StepPlan
from ddsm.report.outdir import EXPORT_KIND, check_out_dir, writing_report
from ddsm.samplers import generate, make_sampler
from ddsm.search.folder import SearchRun
from ddsm.search.log import genome_key

#: images per timed batch when neither the user nor a latency search names one: ``ddsm sample``'s default
#: (64 samples in one batch of at most 256), the batch a user sampling with the exported files gets
DEFAULT_TIMING_BATCH = 64


def timing_batch(run: SearchRun, batch: int | None = None) -> int:
    """The batch export times at: ``batch`` if given, else the batch a latency search priced, else ``ddsm sample``'s."""
    if batch is not None:
        return int(batch)
    if run.space.objectives.cost == "latency" and run.meta.get("latency_batch"):
        return int(run.meta["latency_batch"])
    return DEFAULT_TIMING_BATCH


def macs_model(run: SearchRun, net) -> CostModel:
    """MACs per image of one denoiser call per width (and side) of the search.

    A FLOP search's cost model already is MACs per image (fvcore, or the MAC
    column of a cost table); a latency search's is seconds, so MACs are
    counted here with fvcore.
    """
    if run.space.objectives.cost == "flops":
        return run.costs
    macs = CostModel.count(net, run.space.widths, run.space.resolutions)  # latency spaces are never guided
    return macs if run.space.reuse is None else macs.count_cached(net, run.space.reuse.level)


def decoder_macs(model) -> int | None:
    """fvcore MACs of decoding one image with a latent model's decoder; None for a pixel-space model."""
    if getattr(model, "codec", None) is None:
        return None
    from ddsm.cost.macs import count_decoder_macs

    return count_decoder_macs(model.codec, model.in_channels, model.image_size)


def front_table(run: SearchRun, macs: CostModel, decoder_macs: int | None = None) -> pd.DataFrame:
    """The front, cheapest first: rank, schedule file, quality, MACs per image, shares, generation, genome, widths.

    ``share`` is the search's own cost share (FLOPs, or latency for a latency
    search); ``flop_saving`` is ``1 - MACs / full-width MACs``, equal to
    ``1 - share`` for a FLOP search. ``predicted_speedup`` is ``1 / share``:
    what the search's cost promises. A latency search's front is in seconds
    too: ``predicted_seconds`` is the sum of its steps' measured latencies
    (one batch of the cost table's size). A latent model's shares are of the
    denoiser calls alone; ``share_with_decoder`` adds its decoder's
    ``decoder_macs`` (once per image) to the schedule and to the full width.
    """
    q = run.quality
    steps = run.space.sampler.calls
    full = macs.full_cost(steps)
    n = len(run.front)
    digits = max(2, len(str(n)))
    rows = []
    for i, m in enumerate(run.front.to_dict(orient="records"), start=1):
        plan = SearchRun.plan_of(m)
        total = macs.plan_cost(plan)
        row = {"rank": i, "schedule": f"front-{i:0{digits}d}-share{m['share']:.2f}.json", q: m[q],
               "macs_per_image": total, "share": m["share"], "flop_saving": 1.0 - total / full,
               "predicted_speedup": 1.0 / m["share"],
               **({"predicted_seconds": m["cost"]} if run.space.objectives.cost == "latency" else {}),
               "generation": m["generation"], "genome": genome_key(m["genome"]),
               "widths": ",".join(f"{w:g}" for w in m["widths"])}
        if decoder_macs is not None:
            row["share_with_decoder"] = (total + decoder_macs) / (full + decoder_macs)
        if plan.uncond is not None:
            row["uncond_widths"] = ",".join("none" if u is None else f"{u:g}" for u in plan.uncond)
        if run.space.reuse is not None:
            row["cached"] = ",".join(str(int(plan.is_cached(i))) for i in range(steps))
        if run.space.resolutions is not None:
            row["resolutions"] = ",".join(str(r) for r in (m.get("resolutions") or [run.space.resolutions[-1]] * steps))
        rows.append(row)
    return pd.DataFrame(rows)


def time_schedules(model, sampler, plans: Sequence, seeds: Sequence[int], *, repeats: int = 5,
                   warmup: int = 1, progress: bool = False) -> list[list[float]]:
    """Wall-clock seconds of sampling ``seeds`` (one batch) with each plan (widths or StepPlan), ``repeats`` times each.

    Round-robin: every round samples every plan once, so load that drifts
    during the measurement (another job, throttling) hits all plans alike;
    the order rotates each round so no plan always runs right after the same
    one. ``warmup`` untimed rounds come first (allocator, kernel selection).
    """
    from tqdm.auto import tqdm

    if repeats < 1 or warmup < 0:
        raise DDSMError(f"--repeats ({repeats}) must be at least 1 and --warmup ({warmup}) at least 0")
    k = len(plans)
    times: list[list[float]] = [[] for _ in plans]
    with tqdm(total=(warmup + repeats) * k, desc="timing", unit="run", disable=not progress) as bar:
        for r in range(warmup + repeats):
            for j in range(k):
                i = (j + r) % k
                t0 = time.perf_counter()
                generate_plan(model, sampler, plans[i], seeds, batch_size=len(seeds))  # returns on the CPU: synced
                if r >= warmup:
                    times[i].append(time.perf_counter() - t0)
                bar.update(1)
    return times


def generate_plan(model, sampler, plan, seeds, **kw):
    """Samples of one plan (a StepPlan or a per-step width list) on ``seeds``: the sampling that gets timed."""

    return generate(model, sampler, StepPlan.of(plan), seeds, **kw)


@dataclass
class ExportResult:
    """What :func:`export_front` wrote."""

    out: Path
    table: pd.DataFrame  # the front table with measured times (also front.csv / front.parquet)
    full_seconds: float  # median seconds of the full-width schedule, same seeds
    files: list[str] = field(default_factory=list)  # names written in ``out``
    budgets: dict[float, int] = field(default_factory=dict)  # requested budget -> rank of its best member
    batch_size: int = DEFAULT_TIMING_BATCH  # images per timed run


def best_under(table: pd.DataFrame, budgets: Sequence[float], *, quality: str) -> dict[float, int]:
    """Rank of the best-quality front member with ``share <= B`` for each budget; a DDSMError if one has none."""
    out: dict[float, int] = {}
    for b in dict.fromkeys(float(b) for b in budgets):
        if not (math.isfinite(b) and b > 0):
            raise DDSMError(f"--budget {b:g} must be a positive cost share (e.g. 0.3 for 30 % of full-width FLOPs)")
        within = table[table["share"] <= b + SHARE_TOL]
        if within.empty:
            raise DDSMError(f"--budget {b:g}: no front member costs that little (the cheapest has share "
                            f"{table['share'].min():.3f}); ask for a budget of at least that")
        out[b] = int(within.sort_values([quality, "share"], kind="stable")["rank"].iloc[0])
    return out


def export_front(run: SearchRun, net, out: str | Path, *, budgets: Sequence[float] = (), repeats: int = 5,
                 warmup: int = 1, num: int | None = None, seed: int = 0, progress: bool = False, verdict=None,
                 featurenet: str = "digits") -> ExportResult:
    """Write schedule files, ``best-under-B.json`` files and the measured front table into ``out``.

    With ``verdict`` (a :class:`~ddsm.metrics.verdict.VerdictSettings`), every
    member is also judged against full width on held-out seeds in the space
    of ``featurenet``: its metrics, intervals and paired differences join the
    table (columns ``verdict_<metric>`` with ``_low``, ``_high``, ``_vs_full``,
    ``_vs_full_low``, ``_vs_full_high`` and ``_differs_from_full``) and each
    schedule file's ``quality``.

    Everything is checked before ``out`` is created or touched (see the
    module docstring). Times: sampling ``num`` images (seeds ``seed..seed+num-1``,
    one batch; default :func:`timing_batch`) on ``net``'s device, ``warmup``
    untimed rounds then the median of ``repeats``, every schedule and the
    full-width one measured round-robin in this process
    (:func:`time_schedules`). Columns ``seconds``, ``speedup``,
    ``wallclock_saving`` and ``speedup_vs_predicted`` (measured over
    predicted speed-up) join the table; each file's ``measured`` holds the
    same with the batch, device and threads.
    """

    out = Path(out)
    run.check_supernet(net)
    num = timing_batch(run, num)
    if num < 1:
        raise DDSMError(f"--num must be at least 1, got {num}")
    if repeats < 1 or warmup < 0:
        raise DDSMError(f"--repeats ({repeats}) must be at least 1 and --warmup ({warmup}) at least 0")
    q = run.quality
    table = front_table(run, macs_model(run, net), decoder_macs(net.model))
    chosen = best_under(table, budgets, quality=q)
    identity = run.identity()
    check_out_dir(out, kind=EXPORT_KIND, identity=identity)

    scfg = run.space.sampler
    # Building every schedule before timing: a schedule that does not fit the supernet fails before minutes of timing.
    schedules = run.schedules(net.config, predicted=[
        {"macs": float(r["macs_per_image"]), "flop_saving": float(r["flop_saving"])}
        for r in table.to_dict(orient="records")])

    judged = _judge(run, net, schedules, table, verdict, featurenet, progress) if verdict is not None else None
    if judged is not None:
        schedules = judged

    sampler = make_sampler(NoiseSchedule(net.config.diffusion), scfg)
    plans = [s.plan() for s in schedules] + [StepPlan((1.0,) * scfg.calls)]
    times = time_schedules(net.model, sampler, plans, list(range(seed, seed + num)), repeats=repeats, warmup=warmup,
                           progress=progress)
    medians = [statistics.median(t) for t in times]
    full_s = medians[-1]
    table["seconds"] = medians[:-1]
    table["full_seconds"] = full_s
    table["speedup"] = full_s / table["seconds"]
    table["wallclock_saving"] = 1.0 - table["seconds"] / full_s
    table["speedup_vs_predicted"] = table["speedup"] / table["predicted_speedup"]
    device = str(next(net.model.parameters()).device)
    timing = {"device": device, "batch_size": num, "seed": seed, "repeats": repeats, "warmup": warmup,
              "threads": torch.get_num_threads(), "full_seconds": full_s}
    schedules = [s.model_copy(update={"measured": {**timing, "seconds": float(r["seconds"]),
                                                   "speedup": float(r["speedup"]),
                                                   "predicted_speedup": float(r["predicted_speedup"])}})
                 for s, r in zip(schedules, table.to_dict(orient="records"))]

    with writing_report(out, kind=EXPORT_KIND, identity=identity) as report:
        files = report.files
        for s, name in zip(schedules, table["schedule"]):
            s.save(out / name)
            files.append(name)
        for b, rank in chosen.items():
            s = schedules[rank - 1]
            name = f"best-under-{b:g}.json"
            s.model_copy(update={"provenance": {**s.provenance, "budget": b}}).save(out / name)
            files.append(name)
        write_atomic(out / "front.csv", lambda p: table.to_csv(p, index=False))
        write_atomic(out / "front.parquet", lambda p: table.to_parquet(p, index=False))
        files += ["front.csv", "front.parquet"]
        report.extra.update({"checkpoint": net.source, "weights": net.weights_sha256,
                             "generations_finished": run.generations_finished,
                             "budgets": {repr(b): r for b, r in chosen.items()}, "timing": timing,
                             **({"verdict": schedules[0].provenance["verdict"]} if judged is not None else {})})
    return ExportResult(out=out, table=table, full_seconds=full_s, files=files, budgets=chosen, batch_size=num)


def _judge(run: SearchRun, net, schedules: list, table: pd.DataFrame, settings, featurenet: str, progress: bool):
    """Judge every member on held-out seeds; fills ``table``'s verdict columns, returns the schedules with them."""

    data = training_data(net.source, net.config.image_geometry)
    judge = Verdict(net, run.space.sampler, FeatureNet.load(featurenet, data), reference_images(data, "all"),
                    settings, search_seeds=run.space.search_seeds, progress=progress)
    names = list(table["schedule"])
    result = judge.score(dict(zip(names, (s.plan() for s in schedules))))
    out, columns = [], {}
    for name, s in zip(names, schedules):
        q = {}
        for m in result.metrics:
            iv, d = result.interval(name, m), result.compare(name, "full width", m)
            one = {m: iv.value, f"{m}_low": iv.low, f"{m}_high": iv.high, f"{m}_vs_full": d.value,
                   f"{m}_vs_full_low": d.low, f"{m}_vs_full_high": d.high}
            q.update(one)
            for k, v in {**one, f"{m}_differs_from_full": d.excludes(0.0)}.items():
                columns.setdefault(k, []).append(v)
        # the search's own quality keeps its name; the verdict's are prefixed
        out.append(s.model_copy(update={"quality": {**s.quality, **{f"verdict_{k}": v for k, v in q.items()}},
                                        "provenance": {**s.provenance, "verdict": result.provenance}}))
    for k, v in columns.items():
        table[f"verdict_{k}"] = v
    return out


def format_table(table: pd.DataFrame, *, quality: str) -> str:
    """The export table as aligned text for a terminal, within 100 columns (front.csv has every column, the
    predicted speed-up among them)."""
    head = (f"{'rank':>4} {quality[:10]:>10} {'MMACs':>8} {'share':>6} {'saved':>6} {'seconds':>8} {'speed-up':>8} "
            f"{'time saved':>10}  schedule")
    lines = [head]
    for r in table.to_dict(orient="records"):
        lines.append(f"{r['rank']:>4d} {r[quality]:>10.4g} {r['macs_per_image'] / 1e6:>8.2f} {r['share']:>6.1%} "
                     f"{r['flop_saving']:>6.1%} {r['seconds']:>8.3f} {r['speedup']:>7.2f}x {r['wallclock_saving']:>10.1%}"
                     f"  {r['schedule']}"[:100])
    return "\n".join(lines)
