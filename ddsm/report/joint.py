"""Reporting on a joint (steps x widths) front: schedule files, two figures and an optional verdict.

:func:`export_joint` writes, into one report folder (``joint-export.json``
names the joint search it belongs to):

- ``front-NN-<model>-shareS.json``: one schedule file per front member,
  cheapest first, for *its* model: a student's names the student's
  fingerprint, its K-step sampler and its K widths (``ddsm sample --schedule``
  refuses it on the teacher and the other way round);
- ``front.csv``: the members, with the verdict's columns when asked for;
- ``front.png/svg``: proxy against the teacher-relative cost share, one colour
  per model; ``widths.png/svg``: each member's widths along its own sampling
  trajectory (a K-step member has K cells spanning the same row), so members
  with different K share one heatmap;
- with a verdict: ``verdict.csv``, every member against the *teacher's* full
  width with the base sampler on held-out seeds, paired (same seeds, same
  resamples), whichever model drew the member's samples.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ddsm import __version__
from ddsm.checkpoint import load_supernet, training_data
from ddsm.diffusion.noise import NoiseSchedule
from ddsm.errors import DDSMError
from ddsm.io import write_atomic
from ddsm.metrics.featurenet import FeatureNet
from ddsm.metrics.fid import reference_images
from ddsm.metrics.verdict import Verdict

from ddsm.report.outdir import JOINT_EXPORT_KIND, check_out_dir, writing_report
from ddsm.report.plots import _figure, save_figure
from ddsm.samplers.batched import generate_many
from ddsm.samplers.loop import make_sampler
from ddsm.schedule import Schedule
from ddsm.search.config import SearchConfig
from ddsm.search.joint import TEACHER, JointRun, flat_front, member_plan


def _arm_space(run: JointRun, model: str) -> SearchConfig:
    return SearchConfig.load(run.folder / "models" / model / "space.json")


def member_name(rank: int, member: dict) -> str:
    """The schedule file name of front member ``rank`` (1 = cheapest)."""
    return f"front-{rank:02d}-{member['model']}-share{member['share']:.3f}.json"


def joint_schedules(run: JointRun, nets: dict[str, Any]) -> list:
    """One :class:`~ddsm.schedule.Schedule` per front member, for its own model and sampler."""
    out = []
    for rank, m in enumerate(run.front.to_dict(orient="records"), start=1):
        net = nets[m["model"]]
        if net.fingerprint != m["fingerprint"]:
            raise DDSMError(f"checkpoint {m['checkpoint']!r} is now supernet {net.fingerprint}, but the joint search "
                            f"used {m['fingerprint']} for model {m['model']!r}")
        saved = (run.meta.get("weights") or {}).get(m["model"])  # absent in folders written before weights were kept
        if saved is not None and net.weights_sha256 != saved:
            raise DDSMError(f"checkpoint {m['checkpoint']!r} holds other weights (sha256 {net.weights_sha256[:12]}...) "
                            f"than the joint search measured for model {m['model']!r} ({saved[:12]}...); put the "
                            "original file back or search again")
        space = _arm_space(run, m["model"])
        out.append(Schedule.for_model(
            net.config, space.sampler, member_plan(m), weights=net.weights_sha256,
            predicted={"cost_share": float(m["share"]), "macs": float(m["cost"])},
            quality={"proxy": float(m["proxy"])},
            provenance={"joint_search": str(run.folder.resolve()), "space": run.meta["space"], "model": m["model"],
                        "steps": int(m["steps"]), "checkpoint": m["checkpoint"], "front_rank": rank,
                        "genome": list(m["genome"]), "cost_axis": "share of the teacher's full-width schedule",
                        "tool": f"ddsm {__version__}"}))
    return out


def _verdict(run: JointRun, nets: dict[str, Any], settings, featurenet: str, progress: bool) -> pd.DataFrame:
    teacher = nets[TEACHER]
    base = _arm_space(run, TEACHER) if (run.folder / "models" / TEACHER).is_dir() else run.joint.base_space()
    data = training_data(run.joint.teacher, teacher.config.image_geometry)
    judge = Verdict(teacher, base.sampler, FeatureNet.load(featurenet, data), reference_images(data, "all"), settings,
                    search_seeds=base.search_seeds, progress=progress)
    plans, samples, extra = {}, {}, {}
    for rank, m in enumerate(run.front.to_dict(orient="records"), start=1):
        name = f"#{rank} {m['model']}"
        extra[name] = {"share": float(m["share"]), "model": m["model"], "steps": int(m["steps"])}
        if m["model"] == TEACHER:
            plans[name] = member_plan(m)
            continue
        net = nets[m["model"]]
        sampler = make_sampler(NoiseSchedule(net.config.diffusion), _arm_space(run, m["model"]).sampler)
        samples[name] = generate_many(net.model, sampler, [member_plan(m)], list(settings.seeds), batch_size=256,
                                      fuse=False)[0]
    return judge.score(plans, extra, samples=samples).table()


def plot_joint(run: JointRun, out: str | Path) -> list[Path]:
    """``front.png/svg`` and ``widths.png/svg`` of a joint front (see the module docstring)."""
    import matplotlib  # lazy: matplotlib loads only when figures are drawn
    from matplotlib.colors import BoundaryNorm, ListedColormap  # lazy: as above
    from matplotlib.patches import Rectangle  # lazy: as above

    out = Path(out)
    front = run.front
    models = list(dict.fromkeys(sorted(front["model"], key=lambda m: (m != TEACHER, m))))
    colours = {m: matplotlib.colormaps["tab10"](i) for i, m in enumerate(models)}
    fig = _figure(7.5, 5.5)
    ax = fig.add_subplot()
    ax.plot(front["share"], front["proxy"], color="0.6", linewidth=1, zorder=1)
    for m in models:
        sub = front[front["model"] == m]
        steps = int(sub["steps"].iloc[0])
        ax.scatter(sub["share"], sub["proxy"], color=colours[m], s=30, zorder=2, label=f"{m} ({steps} steps)")
    ax.set_xlabel("MACs as a share of the teacher's full-width schedule")
    ax.set_ylabel("proxy against the teacher's full width (lower is better)")
    ax.set_yscale("log")
    ax.legend(title="model of the member")
    fig.suptitle(f"Joint front: {len(front)} members over steps and widths", fontsize=10)
    files = save_figure(fig, out, "front")

    widths = sorted({w for ws in front["widths"] for w in ws})
    n = len(front)
    fig = _figure(8.0, max(3.0, 0.34 * n + 1.8))
    ax = fig.add_subplot()
    cmap = ListedColormap(matplotlib.colormaps["viridis"](np.linspace(0.1, 0.95, len(widths))))
    mids = [(a + b) / 2 for a, b in zip(widths, widths[1:])]
    edges = [widths[0] - 0.5, widths[-1] + 0.5] if len(widths) == 1 else \
        [2 * widths[0] - mids[0], *mids, 2 * widths[-1] - mids[-1]]
    norm = BoundaryNorm(edges, cmap.N)
    for row, m in enumerate(front.to_dict(orient="records")):
        k = len(m["widths"])
        for i, w in enumerate(m["widths"]):
            ax.add_patch(Rectangle((i / k, row), 1 / k, 1, facecolor=cmap(norm(w)), edgecolor="white", linewidth=0.8))
    ax.set_xlim(0, 1)
    ax.set_ylim(n, 0)
    ax.set_yticks(np.arange(n) + 0.5)
    ax.set_yticklabels([f"#{i} {m['model']} {m['share']:.1%} proxy {m['proxy']:.3g}"
                        for i, m in enumerate(front.to_dict(orient="records"), start=1)], fontsize=8)
    ax.set_xlabel("position in the member's own sampling trajectory (0 = noisiest; one cell per step)")
    sm = matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap)
    cb = fig.colorbar(sm, ax=ax, ticks=widths, fraction=0.05, pad=0.02)
    cb.set_label("width (fraction of channels)")
    fig.suptitle("Width per step of every joint front member, cheapest on top", fontsize=10)
    return files + save_figure(fig, out, "widths")


def export_joint(run: JointRun, out: str | Path, *, verdict=None, featurenet: str = "digits",
                 progress: bool = False) -> pd.DataFrame:
    """Write the joint front's schedule files, table, figures and (with ``verdict`` settings) the verdict; the table."""
    out = Path(out)
    identity = {"search": str(run.folder.resolve()), "space": run.meta["space"], "models": run.meta["models"],
                "weights": run.meta.get("weights")}
    check_out_dir(out, kind=JOINT_EXPORT_KIND, identity=identity)
    nets = {m: load_supernet(a["checkpoint"], device="cpu") for m, a in run.meta["arms"].items()}
    if verdict is not None and TEACHER not in nets:
        nets[TEACHER] = load_supernet(run.joint.teacher, device="cpu")
    schedules = joint_schedules(run, nets)
    table = run.front.copy()
    table.insert(0, "rank", range(1, len(table) + 1))
    table.insert(1, "schedule", [member_name(i, m) for i, m in enumerate(run.front.to_dict(orient="records"), 1)])
    judged = None
    if verdict is not None:
        judged = _verdict(run, nets, verdict, featurenet, progress)
        for metric, rows in judged.groupby("metric", sort=False):
            by = rows.set_index("schedule")
            keys = [f"#{r} {m}" for r, m in zip(table["rank"], table["model"])]
            for col, src in (("", "value"), ("_low", "low"), ("_high", "high"), ("_vs_full", "vs_full"),
                             ("_vs_full_low", "vs_full_low"), ("_vs_full_high", "vs_full_high"),
                             ("_differs_from_full", "differs_from_full")):
                table[f"verdict_{metric}{col}"] = [by.loc[k, src] for k in keys]
    with writing_report(out, kind=JOINT_EXPORT_KIND, identity=identity) as report:
        for s, name in zip(schedules, table["schedule"]):
            s.save(out / name)
            report.files.append(name)
        flat = flat_front(table)
        write_atomic(out / "front.csv", lambda p: flat.to_csv(p, index=False))
        report.files.append("front.csv")
        if judged is not None:
            write_atomic(out / "verdict.csv", lambda p: judged.to_csv(p, index=False))
            report.files.append("verdict.csv")
        report.files += [p.name for p in plot_joint(run, out)]
    return table
