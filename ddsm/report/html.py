"""One self-contained, offline HTML page per search: the front and its families, each member's schedule, samples
and verdict on hover or click, the search's progress and each step's sensitivity.

The page is data-driven: :func:`report_data` gathers everything it shows into
one JSON document, and ``page.js`` (package data) draws it with plotly's
bundled JavaScript, embedded in the file, so the page opens from disk with no
server and fetches nothing. Later choices per step (guidance, resolution,
cached steps) are rows of a member's ``passes`` and need no new page code.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ddsm.errors import DDSMError
from ddsm.io import read_json, write_atomic
from ddsm.metrics.verdict import FULL, METRICS, judgement
from ddsm.report.analysis import families, full_width_quality, scored_rows, sensitivity
from ddsm.report.plots import export_manifest, verdict_columns
from ddsm.search.folder import SearchRun

#: the page's own mark: an existing --out file without it is not a ddsm report and is never overwritten
GENERATOR = "ddsm report"
#: columns a verdict CSV (``ddsm verdict --csv``, the quickstart's verdict.csv) must have
VERDICT_COLUMNS = ("schedule", "share", "metric", "value", "low", "high", "n", "vs_full", "vs_full_low",
                   "vs_full_high", "differs_from_full", "search_seeds", "verdict_seeds")
_FILE_IN_NAME = re.compile(r"\(([^()/\\]+\.json)\)\s*$")  # "best under 30% (best-under-0.3.json)"


def _finite(v: Any) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def _png_data_uri(img: np.ndarray, scale: int) -> str:
    from PIL import Image

    im = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
    im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def check_report_out(out: str | Path) -> Path:
    """Refuse an ``--out`` that exists and is not a ddsm report (never overwritten), or is a folder."""
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise DDSMError(f"--out {str(out)!r} must name an .html file")
    if out.is_dir():
        raise DDSMError(f"--out {str(out)!r} is a folder; give a file name ending in .html")
    if out.exists():
        with open(out, "rb") as f:
            head = f.read(4096).decode("utf-8", "replace")
        if f'<meta name="generator" content="{GENERATOR}' not in head:
            raise DDSMError(f"--out {str(out)!r} exists and is not a ddsm report; it is not overwritten, choose "
                            "another file")
    if not out.parent.is_dir():
        raise DDSMError(f"--out {str(out)!r}: folder {str(out.parent)!r} does not exist")
    return out


def read_export(run: SearchRun, export: str | Path) -> tuple[dict[str, Any], pd.DataFrame]:
    """An export of ``run``: its manifest and front.csv, or a one-line DDSMError."""
    export = Path(export)
    meta = export_manifest(run, export)
    try:
        table = pd.read_csv(export / "front.csv")
    except (OSError, ValueError) as e:
        raise DDSMError(f"--export {str(export)!r}: its front.csv is not readable ({type(e).__name__})") from None
    if len(table) != len(run.front) or "schedule" not in table:
        raise DDSMError(f"--export {str(export)!r} has {len(table)} rows in front.csv, the search's front "
                        f"{len(run.front)}: it exports an earlier front of the search; export again")
    return meta, table


def _member_key(widths, uncond=None, cached=None) -> tuple:
    # cached all false (or absent) is no caching: such a member and such a file are one schedule
    return (tuple(float(w) for w in widths), None if uncond is None else tuple(uncond),
            tuple(bool(c) for c in cached) if cached is not None and any(cached) else None)


def _schedule_file(name: str, export: Path | None) -> tuple[Path | None, bool]:
    """The schedule file a verdict row names (``ddsm verdict`` names rows by the file given, the quickstart as
    "best under 30% (best-under-0.3.json)"), if it can be read here; and whether the row names a file at all."""
    hit = _FILE_IN_NAME.search(name)
    text = hit.group(1) if hit else name if name.endswith(".json") else None
    if text is None:
        return None, False
    for p in (Path(text), *([export / Path(text).name] if export is not None else [])):
        if p.is_file():
            return p, True
    return None, True


def read_verdict_csv(run: SearchRun, path: str | Path, export: Path | None) -> pd.DataFrame:
    """A verdict CSV of this search's schedules with a ``member`` column (0-based front position, -1 for none).

    Refused, in one line: a file that is not a verdict CSV, one judged after
    another search (other search seeds), and one whose searched schedules
    match no member of this front.
    """
    path = Path(path)
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError) as e:
        raise DDSMError(f"--verdict {str(path)!r} is not a readable CSV ({type(e).__name__})") from None
    missing = [c for c in VERDICT_COLUMNS if c not in table.columns]
    if missing:
        raise DDSMError(f"--verdict {str(path)!r} is not a ddsm verdict CSV (lacks column {missing[0]!r}); give the "
                        "file `ddsm verdict --csv` or the quickstart wrote")
    ours = {f"{r.start}..{r.stop - 1}" for r in run.space.search_seeds}
    # `ddsm verdict` lists the seeds of every schedule file it judged: the same ranges, maybe repeated
    seeds = {part.strip() for text in table["search_seeds"].astype(str) for part in text.split(";")}
    if seeds != ours and seeds != {"not given"}:
        raise DDSMError(f"--verdict {str(path)!r} judges schedules of another search (search seeds "
                        f"{', '.join(sorted(seeds))}; this search's are {', '.join(sorted(ours))})")
    keys = {_member_key(m["widths"], m.get("uncond_widths") if run.space.guidance_genes else None, m.get("cached")): i
            for i, m in enumerate(run.front.to_dict(orient="records"))}
    shares = run.front["share"].to_numpy()
    member, named = {}, []
    for name in dict.fromkeys(table["schedule"]):
        file, names_one = _schedule_file(str(name), export)
        i = -1
        if file is not None:
            doc = read_json(file, "schedule file")
            i = keys.get(_member_key(doc.get("widths", ()), doc.get("uncond_widths"), doc.get("cached")), -1) \
                if isinstance(doc, dict) else -1
        elif names_one:  # the file is not here to read: the member of the same cost share
            share = float(table.loc[table["schedule"] == name, "share"].iloc[0])
            close = np.flatnonzero(np.isclose(shares, share, rtol=0, atol=1e-9))
            i = int(close[0]) if len(close) else -1
        member[name] = i
        if names_one:
            named.append(name)
    if named and all(member[n] < 0 for n in named):
        raise DDSMError(f"--verdict {str(path)!r} judges schedules of another search: none of {named[:3]} is a "
                        f"member of the front of {str(run.folder)!r}")
    return table.assign(member=table["schedule"].map(member))


def _verdict_from_export(table: pd.DataFrame) -> pd.DataFrame | None:
    """An export front.csv's verdict columns as verdict rows (one per member and metric), or None."""
    metrics = verdict_columns(table)
    if not metrics:
        return None
    rows = []
    for i, r in enumerate(table.to_dict(orient="records")):
        for m in metrics:
            rows.append({"schedule": r["schedule"], "share": r["share"], "metric": m, "value": r.get(f"verdict_{m}"),
                         "vs_full": r[f"verdict_{m}_vs_full"], "vs_full_low": r[f"verdict_{m}_vs_full_low"],
                         "vs_full_high": r[f"verdict_{m}_vs_full_high"],
                         "differs_from_full": bool(r[f"verdict_{m}_differs_from_full"]), "member": i})
    return pd.DataFrame(rows)


def _verdict_points(table: pd.DataFrame) -> dict[str, Any]:
    metrics = [m for m in dict.fromkeys(table["metric"])]
    points = []
    for name, rows in table.groupby("schedule", sort=False):
        if name == FULL:
            continue
        per = {r["metric"]: {"vs": _finite(r["vs_full"]), "low": _finite(r["vs_full_low"]),
                             "high": _finite(r["vs_full_high"]), "differs": bool(r["differs_from_full"]),
                             "value": None if pd.isna(r.get("value")) else _finite(r["value"])}
               for r in rows.to_dict(orient="records")}
        points.append({"name": str(name), "share": float(rows["share"].iloc[0]), "member": int(rows["member"].iloc[0]),
                       "metrics": per, "words": judgement(rows, "full width", "full")})
    higher = {m: bool(METRICS.get(m, ("", False))[1]) for m in metrics}
    return {"metrics": metrics, "higher_is_better": higher, "points": points}


def _sample_grids(run: SearchRun, net, num: int, seed: int) -> tuple[list[str], str]:
    """A PNG data URI of each front member's samples on seeds ``seed..seed+num-1``, and full width's."""
    from ddsm.diffusion.noise import NoiseSchedule
    from ddsm.images import grid
    from ddsm.plan import StepPlan
    from ddsm.report.export import generate_plan
    from ddsm.samplers import make_sampler

    run.check_supernet(net)
    sampler = make_sampler(NoiseSchedule(net.config.diffusion), run.space.sampler)
    seeds = list(range(seed, seed + num))
    ncols = max(1, math.ceil(math.sqrt(num)))
    side = net.config.geometry.image_size
    scale = max(1, 48 // side)  # small images stay legible

    def uri(plan) -> str:
        return _png_data_uri(grid(generate_plan(net.model, sampler, plan, seeds, batch_size=num), ncols), scale)

    plans = [SearchRun.plan_of(m) for m in run.front.to_dict(orient="records")]
    return [uri(p) for p in plans], uri(StepPlan((1.0,) * run.space.sampler.calls))


def _passes(space, member: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of a member's heatmap: the conditional pass, then any further per-step choice."""
    rows = [{"name": "width" if not space.guidance_genes else "cond. pass",
             "values": [float(w) for w in member["widths"]]}]
    if space.guidance_genes:  # None: no guidance at that step (a blank cell)
        rows.append({"name": "uncond. pass",
                     "values": [None if u is None else float(u) for u in member["uncond_widths"]]})
    if space.reuse is not None:  # the width of a cached step's outer part; None: a full step (a blank cell)
        rows.append({"name": "cached step",
                     "values": [float(w) if c else None for w, c in zip(member["widths"], member["cached"])]})
    if member.get("resolutions"):
        rows.append({"name": "side (px)", "values": [int(s) for s in member["resolutions"]], "kind": "side"})
    return rows


def report_data(run: SearchRun, *, export: str | Path | None = None, verdict: str | Path | None = None,
                net=None, checkpoint: str | None = None, num: int = 16, seed: int = 0) -> dict[str, Any]:
    """Everything the page shows, as plain JSON (see the module docstring); ``net`` samples the grids."""
    q, space = run.quality, run.space
    export = None if export is None else Path(export)
    exp_meta, exp_table = read_export(run, export) if export is not None else (None, None)
    checkpoint = checkpoint or (exp_meta or {}).get("checkpoint")
    verdict_table = read_verdict_csv(run, verdict, export) if verdict is not None else \
        _verdict_from_export(exp_table) if exp_table is not None else None
    grids, full_grid = _sample_grids(run, net, num, seed) if net is not None and num > 0 else ([], None)
    words = {}
    if verdict_table is not None:
        for name, rows in verdict_table[verdict_table["member"] >= 0].groupby("schedule", sort=False):
            words.setdefault(int(rows["member"].iloc[0]), judgement(rows, "full width", "full"))
    members = []
    for i, m in enumerate(run.front.to_dict(orient="records")):
        file = None if exp_table is None else str(exp_table["schedule"].iloc[i])
        sched = f"{export / file}" if file else None
        members.append({
            "rank": i + 1, "share": float(m["share"]), "quality": _finite(m[q]), "generation": int(m["generation"]),
            "genome": [int(g) for g in m["genome"]], "passes": _passes(space, m), "file": sched,
            "seconds": None if exp_table is None or "seconds" not in exp_table else _finite(exp_table["seconds"].iloc[i]),
            "command": (f"ddsm sample --checkpoint {checkpoint or 'CHECKPOINT'} --schedule {sched} --out samples"
                        if sched else f"ddsm export {run.folder} --checkpoint {checkpoint or 'CHECKPOINT'} "
                        f"--out EXPORT, then ddsm sample --schedule EXPORT/front-{i + 1:02d}-share....json"),
            "verdict": words.get(i), "grid": grids[i] if grids else None})
    scored = scored_rows(run)
    fams = [{"name": f.name, "share": [float(s) for s in f.rows["share"]], "quality": [_finite(v) for v in f.rows[q]],
             "labels": list(f.labels)} for f in families(run) if len(f.rows)]
    fq, how = full_width_quality(run)
    sens = sensitivity(run)
    s = space.sampler
    return {
        "title": f"ddsm search '{run.folder.parent.name}/{run.folder.name}'", "search": str(run.folder.resolve()), "quality": q,
        "cost": "FLOPs" if space.objectives.cost == "flops" else "latency", "budget": run.budget,
        "sampler": f"{s.kind.upper()} {s.steps} steps", "widths": [float(w) for w in space.widths],
        "segments": [int(n) for n in space.segment_lengths], "generations": run.generations_finished,
        "front": members,
        "evaluated": {"share": [float(v) for v in scored["share"]], "quality": [_finite(v) for v in scored[q]]},
        "families": fams, "full": {"quality": fq, "how": how, "grid": full_grid,
                                   "seconds": None if exp_meta is None else exp_meta["timing"]["full_seconds"]},
        "verdict": None if verdict_table is None else {
            **_verdict_points(verdict_table),
            "seeds": str(verdict_table["verdict_seeds"].iloc[0]) if "verdict_seeds" in verdict_table else
            f"seeds {exp_meta['verdict'].get('verdict_seeds')}",
            "n": int(verdict_table["n"].iloc[0]) if "n" in verdict_table else None},
        "history": [{"generation": int(h["generation"]), "hypervolume": _finite(h["hypervolume"]),
                     "front": int(h["front"])} for h in run.state.get("history", [])],
        "sensitivity": None if sens is None else [
            {"gene": int(r["gene"]), "steps": f"{r['first_step']}–{r['last_step']}", "pass": r["pass"],
             "width": None if pd.isna(r["width"]) else float(r["width"]), "degradation": _finite(r["degradation"])}
            for r in sens.to_dict(orient="records")],
        "samples": {"num": num if grids else 0, "seed": seed,
                    "note": None if grids else "no sample grids: give --checkpoint (or an --export, whose checkpoint "
                    "is used) and --samples N > 0"},
    }


def render(data: dict[str, Any]) -> str:
    """The page: the data as JSON, plotly's bundled JavaScript and ``page.js``, all inline."""
    from plotly.offline import get_plotlyjs

    script = resources.files("ddsm.report").joinpath("page.js").read_text(encoding="utf-8")
    # "</" inside a JSON string would end the script element early
    blob = json.dumps(data, allow_nan=False).replace("</", "<\\/")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="generator" content="{GENERATOR} 1">
<title>{html.escape(data['title'])}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1em 2em; color: #222; }}
.row {{ display: flex; gap: 1.5em; flex-wrap: wrap; }}
.panel {{ flex: 1 1 560px; min-width: 480px; }}
#detail {{ border: 1px solid #ccc; padding: 0.6em 1em; border-radius: 6px; min-height: 8em; }}
#detail code {{ background: #f4f4f4; padding: 0.1em 0.3em; word-break: break-all; }}
#detail img {{ image-rendering: pixelated; border: 1px solid #ddd; margin-right: 0.5em; }}
.note {{ color: #666; font-size: 0.9em; }}
</style></head>
<body>
<h1 id="title"></h1><p id="summary" class="note"></p>
<div class="row">
 <div class="panel"><div id="front" style="height:520px"></div>
  <label class="note" id="xaxis-label" hidden>x axis: <select id="xaxis"><option value="share">cost share</option>
  <option value="seconds">measured seconds</option></select></label></div>
 <div class="panel"><h3>Member <span id="detail-rank">(hover or click a front point)</span></h3>
  <div id="detail"></div><div id="heatmap" style="height:200px"></div></div>
</div>
<div class="row">
 <div class="panel"><h3>Held-out verdict</h3><p class="note" id="verdict-note"></p>
  <label class="note">metric: <select id="metric"></select></label>
  <div id="verdict" style="height:380px"></div></div>
 <div class="panel"><h3>Search progress</h3><div id="progress" style="height:300px"></div>
  <h3>Sensitivity of each step</h3><div id="sensitivity" style="height:300px"></div></div>
</div>
<script>{get_plotlyjs()}</script>
<script id="ddsm-data" type="application/json">{blob}</script>
<script>{script}</script>
</body></html>
"""


def write_report(run: SearchRun, out: str | Path, **kw: Any) -> Path:
    """Write the page for ``run`` to ``out`` atomically (:func:`report_data` takes ``kw``); its path."""
    out = check_report_out(out)
    page = render(report_data(run, **kw))
    write_atomic(out, lambda p: Path(p).write_text(page, encoding="utf-8"))
    return out
