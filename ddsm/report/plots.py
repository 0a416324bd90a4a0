"""Figures of a search folder: the front with its families, widths per step, sensitivity, sample grids.

PNG + SVG through matplotlib's object API (no pyplot state, no GUI backend:
files are rendered by Agg). :func:`plot_search` draws them all into a report
folder after the same checks as export (:mod:`ddsm.report.outdir`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ddsm.cost.model import SHARE_TOL
from ddsm.diffusion.noise import NoiseSchedule
from ddsm.errors import DDSMError
from ddsm.images import grid
from ddsm.io import read_json, write_atomic
from ddsm.metrics.registry import metric_label
from ddsm.metrics.verdict import METRICS
from ddsm.plan import StepPlan
from ddsm.report.analysis import (CACHE_INTERVAL, INTERVAL, TWO_SEGMENT, evaluate_missing, families, full_width_quality, scored_rows,
                                  sensitivity)
from ddsm.report.export import generate_plan
from ddsm.report.outdir import EXPORT_KIND, MANIFESTS, PLOTS_KIND, check_out_dir, writing_report
from ddsm.samplers import make_sampler
from ddsm.search.folder import SearchRun
from ddsm.spectrum import frequency_bands


def _figure(width: float, height: float):
    # The object API renders through Agg on savefig and never touches pyplot's global state or a GUI backend.
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def save_figure(fig, out: Path, stem: str) -> list[Path]:
    """Write ``stem.png`` (150 dpi) and ``stem.svg`` atomically; the paths."""
    paths = []
    # bbox "tight" grows the canvas rather than clip a long legend or label
    for fmt, kw in (("png", {"dpi": 150}), ("svg", {"metadata": {"Date": None}})):
        path = out / f"{stem}.{fmt}"
        write_atomic(path, lambda p, fmt=fmt, kw=kw: fig.savefig(p, format=fmt, bbox_inches="tight", **kw))
        paths.append(path)
    return paths


def _metric_label(run: SearchRun) -> str:
    return f"{metric_label(run.quality)} (lower is better)"


def _cost_label(run: SearchRun) -> str:
    return "FLOPs" if run.space.objectives.cost == "flops" else "latency"


def plot_front(run: SearchRun, out: str | Path) -> list[Path]:
    """``front.png/svg``: quality vs cost share, with every scored point, the front, the families and full width."""
    out = Path(out)
    q = run.quality
    fig = _figure(8.0, 7.2)
    ax = fig.add_subplot()
    scored = scored_rows(run)
    feasible = scored[scored["share"] <= run.budget + SHARE_TOL]
    over = scored[scored["share"] > run.budget + SHARE_TOL]
    ax.scatter(feasible["share"] * 100, feasible[q], s=14, color="0.55", alpha=0.35, linewidths=0,
               label=f"evaluated, within budget ({len(feasible)})", zorder=1)
    if len(over):
        ax.scatter(over["share"] * 100, over[q], s=16, marker="x", color="0.6", alpha=0.45, linewidths=0.8,
                   label=f"evaluated, over budget ({len(over)})", zorder=1)
    ax.axvline(run.budget * 100, color="tab:red", linestyle=":", linewidth=1.2, label=f"budget ({run.budget:.0%})")

    fx, fy = run.front["share"].to_numpy() * 100, run.front[q].to_numpy()
    # A step line: below the next member's cost, the best reachable quality is the cheaper member's.
    ax.step(np.append(fx, run.budget * 100), np.append(fy, fy[-1]), where="post", color="tab:blue", linewidth=2,
            zorder=3)
    ax.plot(fx, fy, "o", color="tab:blue", markersize=6, zorder=4, label=f"Pareto front ({len(fx)} schedules)")
    for i, (x, y) in enumerate(zip(fx, fy), start=1):
        ax.annotate(str(i), (x, y), textcoords="offset points", xytext=(4, 5), fontsize=8, color="tab:blue")

    styles = {"uniform width": ("s", "tab:green", "-"), TWO_SEGMENT: ("^", "tab:orange", ""),
              INTERVAL: ("D", "tab:purple", ""), CACHE_INTERVAL: ("v", "tab:brown", "")}
    for fam in families(run):
        if not len(fam.genomes):
            continue
        marker, color, ls = styles[fam.name]
        rows = fam.rows.assign(label=fam.labels).sort_values("share") if len(fam.rows) else fam.rows
        label = f"{fam.name} ({len(rows)} of {len(fam.genomes)} evaluated" + \
            (f"; {fam.evaluated_now} of them scored for this plot only)" if fam.evaluated_now else ")")
        if len(rows):
            ax.plot(rows["share"] * 100, rows[q], marker=marker, linestyle=ls or "none", color=color, markersize=6,
                    linewidth=1, alpha=0.9, label=label, zorder=2)
            for lab, x, y in zip(rows["label"], rows["share"] * 100, rows[q]):
                ax.annotate(lab, (x, y), textcoords="offset points",
                            xytext=(5, -10), fontsize=7, color=color)
        else:
            ax.plot([], [], marker=marker, linestyle="none", color=color, label=label)

    fq, how = full_width_quality(run)
    if fq is not None:
        ax.plot([100], [fq], marker="*", markersize=14, color="black", linestyle="none", zorder=5,
                label=f"full width ({q} {fq:.3g}, {how})")
    else:
        ax.axvline(100, color="black", linestyle="--", linewidth=1, label="full width (quality not evaluated)")
    ax.set_xlabel(f"cost (% of full-width {_cost_label(run)})")
    ax.set_ylabel(_metric_label(run))
    ax.set_xlim(0, 105)
    if run.space.objectives.cost == "latency":  # a latency front is in seconds too: the measured sum of its steps
        full_s = float(run.meta["full_cost"])
        top = ax.secondary_xaxis("top", functions=(lambda p: p / 100 * full_s, lambda t: t / full_s * 100))
        batch = run.meta.get("latency_batch")
        top.set_xlabel("predicted seconds per sampling run" + (f" (batch {batch})" if batch else ""))
    ax.grid(True, alpha=0.3)
    s = run.space.sampler
    note = "" if run.log is not None else " (no evaluation log: front only)"
    ax.set_title(f"Search '{run.folder.name}': {q} vs cost, {s.kind.upper()} {s.steps} steps, "
                 f"{run.generations_finished} generations{note}", fontsize=10)
    # Below the axes, not on them: wherever it sat inside it would hide some evaluated points.
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=1, fontsize=8, frameon=False)
    return save_figure(fig, out, "front")


def plot_widths(run: SearchRun, out: str | Path) -> list[Path]:
    """``widths.png/svg``: width per sampling step (noisiest left) of each front member (cheapest on top).

    A search with guidance genes draws two rows per member: the conditional pass, then the unconditional pass
    (grey where a step takes no guidance).
    """
    from matplotlib.colors import BoundaryNorm, ListedColormap
    import matplotlib

    out = Path(out)
    q = run.quality
    space = run.space
    widths = list(space.widths)
    members = run.front.to_dict(orient="records")
    labels = [f"#{i}  {r['share']:.0%}  {q} {r[q]:.3g}" for i, r in enumerate(members, start=1)]
    rows = [list(w) for w in run.front["widths"]]
    if space.guidance_genes:  # a row per pass: conditional, then unconditional (NaN: no guidance at that step)
        rows = [r for m in members for r in (list(m["widths"]), [np.nan if u is None else u for u in m["uncond_widths"]])]
        labels = [lab for base in labels for lab in (f"{base}  cond", "uncond")]
    M = np.array(rows, dtype=float)
    n, steps = M.shape
    fig = _figure(max(7.0, 0.32 * steps + 3.5), max(3.2, 0.34 * n + 1.8))
    ax = fig.add_subplot()
    cmap = ListedColormap(matplotlib.colormaps["viridis"](np.linspace(0.1, 0.95, len(widths)))).with_extremes(
        bad="lightgrey")
    # One colour per allowed width (a discrete scale: widths are categories, not a continuum).
    if len(widths) > 1:
        mids = [(a + b) / 2 for a, b in zip(widths, widths[1:])]
        edges = [2 * widths[0] - mids[0], *mids, 2 * widths[-1] - mids[-1]]
    else:
        edges = [widths[0] - 0.5, widths[0] + 0.5]
    norm = BoundaryNorm(edges, cmap.N)
    im = ax.imshow(M, aspect="auto", cmap=cmap, norm=norm, interpolation="nearest",
                   extent=(0.5, steps + 0.5, n + 0.5, 0.5))
    for b in np.cumsum(space.segment_lengths)[:-1]:  # gene boundaries: widths can only change here
        ax.axvline(b + 0.5, color="white", linewidth=1.5)
    sides = run.front["resolutions"] if "resolutions" in run.front else []
    for row, cached in enumerate(run.front["cached"] if "cached" in run.front else [], start=1):
        for step, c in enumerate(cached or (), start=1):  # reuse spaces: a cached step's cell is marked
            if c:
                ax.text(step, row, "c", ha="center", va="center", fontsize=7, color="white", fontweight="bold")
    for row, member_sides in enumerate(sides, start=1):  # resolution spaces: the side of every reduced step
        for step, side in enumerate(member_sides or (), start=1):
            if side < space.resolutions[-1]:
                ax.text(step, row, str(side), ha="center", va="center", fontsize=6, color="white")
    ax.set_xticks(range(1, steps + 1) if steps <= 30 else np.linspace(1, steps, 11).round().astype(int))
    ax.set_yticks(range(1, n + 1))
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xlabel("sampling step (1 = noisiest; white lines: gene boundaries"
                  + ("; grey: no guidance" if space.guidance_genes else "")
                  + ("; c: cached step, deep features reused" if space.reuse is not None else "") + ")")
    ax.set_ylabel(f"front member (rank, % {_cost_label(run)}, quality)")
    cb = fig.colorbar(im, ax=ax, ticks=widths, fraction=0.05, pad=0.02)
    cb.set_label("width (fraction of channels)")
    s = space.sampler
    # suptitle spans the colour bar too, so a short figure cannot run the title into its label
    what = ("Width (and reduced side, in the cells)" if space.resolutions else
            "Width of each pass" if space.guidance_genes else "Width")
    fig.suptitle(f"{what} per sampling step of the {n} front members, cheapest on top ({s.kind.upper()} {s.steps} steps)",
                 fontsize=10)
    return save_figure(fig, out, "widths")


def plot_sensitivity(run: SearchRun, out: str | Path) -> list[Path] | None:
    """``sensitivity.png/svg``: quality lost when one gene alone is narrowed; None if the log has no probes."""
    sens = sensitivity(run)
    if sens is None:
        return None
    out = Path(out)
    q = run.quality
    genes = sorted(sens["gene"].unique())
    fig = _figure(max(6.5, 0.35 * len(genes) + 3.5), 4.5)
    ax = fig.add_subplot()
    import matplotlib

    cond = sens[sens["pass"] == "cond"]
    narrow = sorted(cond["width"].unique())
    colors = matplotlib.colormaps["viridis"](np.linspace(0.1, 0.8, len(narrow)))
    for w, c in zip(narrow, colors):
        d = cond[cond["width"] == w].sort_values("gene")
        ax.plot(d["gene"], d["degradation"], marker="o", color=c, label=f"narrowed to width {w:g}")
    uncond = sens[sens["pass"] == "uncond"]  # guidance genes: the unconditional pass narrowed, or dropped
    for w, c in zip(narrow, colors):
        d = uncond[uncond["width"] == w].sort_values("gene")
        if len(d):
            ax.plot(d["gene"], d["degradation"], marker="s", linestyle="--", color=c,
                    label=f"unconditional pass at width {w:g}")
    d = uncond[uncond["width"].isna()].sort_values("gene")
    if len(d):
        ax.plot(d["gene"], d["degradation"], marker="x", linestyle=":", color="grey", label="no guidance")
    first = sens.drop_duplicates("gene").set_index("gene")
    ax.set_xticks(genes)
    ax.set_xticklabels([f"{first.loc[g, 'first_step']}" if first.loc[g, "first_step"] == first.loc[g, "last_step"]
                        else f"{first.loc[g, 'first_step']}–{first.loc[g, 'last_step']}" for g in genes],
                       fontsize=8, rotation=0 if len(genes) <= 12 else 90)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xlabel("gene: sampling steps it covers (1 = noisiest)")
    ax.set_ylabel(f"increase of {q} over full width\n(0 = nothing lost)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"Sensitivity: {q} lost when one gene alone is narrowed (others at full width)", fontsize=10)
    return save_figure(fig, out, "sensitivity")


def sample_members(run: SearchRun) -> list[int]:
    """0-based front positions shown in the samples figure: cheapest, middle, best quality (distinct)."""
    n = len(run.front)
    return sorted({0, (n - 1) // 2, n - 1})


def plot_samples(run: SearchRun, net, out: str | Path, *, num: int = 16, seed: int = 0) -> list[Path]:
    """``samples.png/svg``: sample grids of the cheapest, middle and best front members beside full width.

    Every grid uses seeds ``seed..seed+num-1`` and the search's sampler, so
    differences between panels come from the widths alone.
    """

    if num < 1:
        raise DDSMError(f"--num must be at least 1, got {num}")
    out = Path(out)
    q = run.quality
    scfg = run.space.sampler
    sampler = make_sampler(NoiseSchedule(net.config.diffusion), scfg)
    seeds = list(range(seed, seed + num))
    picks = sample_members(run)
    names = {0: "cheapest", len(run.front) - 1: "best quality"}
    panels = []
    for i in picks:
        r = run.front.iloc[i]
        title = f"#{i + 1} {names.get(i, 'middle')}\n{r['share']:.0%} {_cost_label(run)}, {q} {r[q]:.3g}"
        panels.append((title, SearchRun.plan_of(r)))
    fq, _ = full_width_quality(run)
    panels.append(("full width\n100% " + _cost_label(run) + ("" if fq is None else f", {q} {fq:.3g}"),
                   StepPlan((1.0,) * scfg.calls)))
    fig = _figure(3.0 * len(panels), 3.6)
    axes = fig.subplots(1, len(panels))
    ncols = max(1, math.ceil(math.sqrt(num)))
    for ax, (title, widths) in zip(np.atleast_1d(axes), panels):
        img = grid(generate_plan(net.model, sampler, widths, seeds, batch_size=num), ncols)
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=255,
                  interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"Samples on the same seeds {seeds[0]}–{seeds[-1]} ({scfg.kind.upper()} {scfg.steps} steps)",
                 fontsize=10)
    return save_figure(fig, out, "samples")


def export_manifest(run: SearchRun, export: str | Path) -> dict[str, Any]:
    """The manifest of an export of ``run`` (``ddsm export --out``), or a one-line DDSMError."""
    export = Path(export)
    manifest = export / MANIFESTS[EXPORT_KIND]
    if not manifest.is_file():
        raise DDSMError(f"--export {str(export)!r} holds no export (no {manifest.name}); give the --out of ddsm export")
    meta = read_json(manifest, "export manifest")
    if not isinstance(meta, dict):
        raise DDSMError(f"--export {str(export)!r}: its {manifest.name} holds a {type(meta).__name__}, not an export "
                        "record; was the file edited? Export again")
    if meta.get("search") != str(run.folder.resolve()):
        raise DDSMError(f"--export {str(export)!r} exports another search ({meta.get('search')}), not {run.folder}")
    return meta


def _verdict_table(run: SearchRun, export: str | Path) -> pd.DataFrame:
    """The front table of an export of ``run`` that carries a verdict, or a one-line DDSMError."""

    export = Path(export)
    meta = export_manifest(run, export)
    if "verdict" not in meta:
        raise DDSMError(f"--export {str(export)!r} has no verdict; export with --verdict N first")
    if not isinstance(meta["verdict"], dict):
        raise DDSMError(f"--export {str(export)!r}: its manifest's verdict is a {type(meta['verdict']).__name__}, not "
                        "a verdict record; was the file edited? Export again with --verdict N")
    table = _checked_verdict_front(export)
    table.attrs["verdict_seeds"] = f"seeds {meta['verdict'].get('verdict_seeds')}"
    return table


def _checked_verdict_front(export: Path) -> pd.DataFrame:
    """An export's ``front.csv`` with the columns :func:`plot_verdict` draws, finite; else one line, before any
    figure is drawn or written."""
    path = export / "front.csv"
    edited = f"--export {str(export)!r}: its front.csv"
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as e:  # EmptyDataError is a ValueError
        raise DDSMError(f"{edited} is not readable ({type(e).__name__}); export again") from None
    metrics = verdict_columns(table)
    needed = ["share", *(f"verdict_{m}{s}" for m in metrics
                         for s in ("_vs_full", "_vs_full_low", "_vs_full_high", "_differs_from_full"))]
    missing = [c for c in needed if c not in table.columns]
    if not metrics or missing or table.empty:
        what = f"lacks column {missing[0]!r}" if missing else "has no verdict rows" if metrics else \
            "has no verdict columns (verdict_<metric>_vs_full...)"
        raise DDSMError(f"{edited} {what}; was it edited? Export again with --verdict N")
    values = table[[c for c in needed if not c.endswith("_differs_from_full")]]
    bad = [c for c in values.columns if not (pd.api.types.is_numeric_dtype(values[c]) and values[c].notna().all())]
    if bad:
        raise DDSMError(f"{edited} has a non-numeric or empty {bad[0]!r}; was it edited? Export again with --verdict N")
    return table


def verdict_columns(table: pd.DataFrame) -> list[str]:
    """The verdict metrics an export table carries (``ddsm export --verdict N``), in table order."""
    return [c[len("verdict_"):-len("_differs_from_full")] for c in table.columns
            if c.startswith("verdict_") and c.endswith("_differs_from_full")]


def plot_verdict(run: SearchRun, table: pd.DataFrame, out: str | Path) -> list[Path]:
    """``front-verdict.png/svg``: every front member's difference from full width per verdict metric, with intervals.

    One panel per metric: x is the member's cost share, y its paired
    difference from full width on the held-out verdict seeds, the bar its
    interval; 0 (the dashed line) is full width. A bar that misses 0 is a
    significant difference (filled marker).
    """

    out = Path(out)
    metrics = verdict_columns(table)
    cols = 3
    rows_ = math.ceil(len(metrics) / cols)
    fig = _figure(4.2 * cols, 3.2 * rows_ + 0.6)
    axes = np.atleast_1d(fig.subplots(rows_, cols)).ravel()
    x = table["share"].to_numpy() * 100
    for ax, m in zip(axes, metrics):
        lo, hi = table[f"verdict_{m}_vs_full_low"].to_numpy(), table[f"verdict_{m}_vs_full_high"].to_numpy()
        mid = table[f"verdict_{m}_vs_full"].to_numpy()
        sig = table[f"verdict_{m}_differs_from_full"].astype(bool).to_numpy()
        ax.errorbar(x, mid, yerr=[mid - lo, hi - mid], fmt="none", ecolor="tab:blue", elinewidth=1, capsize=2)
        ax.plot(x[sig], mid[sig], "o", color="tab:blue", markersize=4, label="differs from full width")
        ax.plot(x[~sig], mid[~sig], "o", mfc="white", color="tab:blue", markersize=4, label="no significant difference")
        ax.axhline(0, color="black", linestyle="--", linewidth=1)
        better = "higher" if METRICS.get(m, ("", False))[1] else "lower"
        ax.set_title(f"{m} ({better} is better)", fontsize=9)
        ax.set_xlabel(f"cost (% of full-width {_cost_label(run)})", fontsize=8)
        ax.set_ylabel("member - full width", fontsize=8)
        ax.grid(True, alpha=0.3)
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    prov = table.attrs.get("verdict_seeds", "held-out seeds")
    fig.suptitle(f"Front of '{run.folder.name}' against full width on {prov}: paired differences with intervals "
                 "(filled: interval excludes 0)", fontsize=10)
    axes[0].legend(fontsize=7)
    return save_figure(fig, out, "front-verdict")


def _plain_rows(rows: pd.DataFrame | None, quality: str) -> list[dict[str, Any]]:
    # strict JSON: native types, and null for a quality the evaluator could not give
    if rows is None:
        return []
    return [{"genome": str(r["genome"]), quality: float(r[quality]) if math.isfinite(r[quality]) else None,
             "valid": bool(r["valid"]), "share": float(r["share"])} for r in rows.to_dict(orient="records")]


@dataclass
class PlotResult:
    """What :func:`plot_search` wrote."""

    out: Path
    files: list[Path]
    skipped: list[str]  # one line per figure not drawn, saying why
    evaluated: int = 0  # family members scored for the plot (not in the search's log)


def plot_search(run: SearchRun, net, out: str | Path, *, num: int = 16, seed: int = 0, evaluate: bool = False,
                featurenet: str | None = None, device: str = "auto", export: str | Path | None = None) -> PlotResult:
    """Every figure into ``out`` after the same checks as :func:`export_front`; see the module docstring.

    With ``evaluate``, the uniform-width and two-segment schedules the log
    lacks are scored first (:func:`evaluate_missing`), on ``device``. With
    ``export``, an export of this search made with a verdict, the members'
    intervals are drawn too (:func:`plot_verdict`).
    """
    out = Path(out)
    run.check_supernet(net)
    if num < 1:
        raise DDSMError(f"--num must be at least 1, got {num}")
    verdict_table = _verdict_table(run, export) if export is not None else None
    identity = run.identity()
    check_out_dir(out, kind=PLOTS_KIND, identity=identity)
    if evaluate:
        run = evaluate_missing(run, net.source, featurenet=featurenet, device=device)
    with writing_report(out, kind=PLOTS_KIND, identity=identity) as report:
        files = plot_front(run, out) + plot_widths(run, out)
        skipped = []
        sens = plot_sensitivity(run, out)
        if sens is None:
            skipped.append("sensitivity: the evaluation log has no sensitivity probes (generation -1; "
                           "seeding.sensitivity was off), so sensitivity.png was not drawn")
        else:
            files += sens
        files += plot_samples(run, net, out, num=num, seed=seed)
        if verdict_table is not None:
            files += plot_verdict(run, verdict_table, out)
        report.files += [p.name for p in files]
        report.extra.update({"checkpoint": net.source, "generations_finished": run.generations_finished,
                             "samples": {"num": num, "seed": seed, "front_ranks": [i + 1 for i in sample_members(run)]},
                             "evaluated_for_plot": _plain_rows(run.extra, run.quality)})
    return PlotResult(out=out, files=files, skipped=skipped, evaluated=0 if run.extra is None else len(run.extra))


def plot_spectra(comparison, out: str | Path, stem: str = "spectrum") -> list[Path]:
    """``stem.png/svg``: radially averaged power of each sample set against real images, and their log ratio."""

    fig = _figure(9.0, 4.2)
    ax_p, ax_r = fig.subplots(1, 2)
    f = np.asarray(comparison.freqs)
    real = np.asarray(comparison.real)
    ax_p.plot(f, real, color="black", linewidth=2.2, label=f"real ({comparison.num_real})")
    for name, p in comparison.power.items():
        err = comparison.errors[name]
        line, = ax_p.plot(f, p, marker="o", markersize=3, label=f"{name} (high {err['high']:.3f})")
        ax_r.plot(f, np.log10(np.maximum(p, 1e-300)) - np.log10(np.maximum(real, 1e-300)), marker="o",
                  markersize=3, color=line.get_color(), label=name)
    ax_p.set_yscale("log")
    ax_p.set(xlabel="radial frequency (cycles per image)", ylabel="mean power |DFT|² (orthonormal)",
             title="power spectrum")
    ax_r.axhline(0.0, color="black", linewidth=1)
    lo, hi = frequency_bands(comparison.side)["high"]
    ax_r.axvspan(lo - 0.5, hi + 0.5, color="0.9", zorder=0, label="high band")
    ax_r.set(xlabel="radial frequency (cycles per image)", ylabel="log10(samples / real)",
             title="per-frequency error (high-band mean |.| in the legend)")
    ax_p.legend(fontsize=7)
    ax_r.legend(fontsize=7)
    return save_figure(fig, Path(out), stem)
