"""From a finished search to samplers and people: schedule files, a measured front table, figures.

A search folder (see :mod:`ddsm.search.loop`) holds the Pareto front as
per-step width lists and a proxy-quality number each. This module turns it
into what a sampler loads and what a person reads:

- :func:`export_front`: one :class:`~ddsm.schedule.Schedule` file per front
  member, ranked **cheapest first** (``front-01-share0.23.json`` is the
  cheapest), ``best-under-B.json`` for requested budgets, and ``front.csv`` /
  ``front.parquet``: predicted cost (MACs, share, FLOP saving) beside the
  *measured* wall-clock time of sampling with each schedule against the
  full-width schedule on the same device and seeds.
- :func:`plot_front`, :func:`plot_widths`, :func:`plot_sensitivity`,
  :func:`plot_samples`: PNG + SVG figures (matplotlib's object API, so no
  pyplot state and no GUI backend: files are rendered by Agg).

Both refuse, with a one-line :class:`~ddsm.errors.DDSMError` and before
anything is written: a missing folder, a folder that is not a search or has
not finished a generation (no ``state.json``), a search with no feasible
point, a checkpoint of another supernet than the search's, and an output
folder that is not empty and is not an earlier report of the *same* search.
A report folder carries a manifest (``export.json`` / ``plots.json``) naming
the search and the files written, so re-running replaces its own files (each
atomically) and removes those it no longer writes, and nothing else.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ddsm.errors import DDSMError
from ddsm.io import read_json, write_atomic, write_json
from ddsm.search.log import EvaluationLog, genome_key, parse_genome
from ddsm.search.seeding import sensitivity_probes, two_segment_seeds, uniform_seeds
from ddsm.search.space import SearchSpace

EXPORT_KIND = "ddsm.export"
PLOTS_KIND = "ddsm.plots"
#: the manifest each kind of report folder carries (its identity and the files it wrote)
MANIFESTS = {EXPORT_KIND: "export.json", PLOTS_KIND: "plots.json"}
REPORT_VERSION = 1
#: quality metrics that are a distance to the full-width samples: exactly 0 at full width by construction
TEACHER_RELATIVE = ("proxy", "proxy_linear")
METRIC_LABELS = {
    "proxy": "proxy: mean squared distance to full-width samples",
    "proxy_linear": "linear proxy: predicted mean squared distance to full-width samples",
    "fid": "FID",
}
_TOL = 1e-12
#: the T-Stitch family's name in figures (its point labels read "narrow width × narrow steps")
TWO_SEGMENT = "two-segment: narrow width×steps first, then full width"


# ---------------------------------------------------------------------------- loading a search


@dataclass
class SearchRun:
    """A finished (or stopped after a generation) search folder, read and checked."""

    folder: Path
    space: SearchSpace
    meta: dict[str, Any]  # search.json: identity, objectives, budget, cost_per_width, full_cost
    state: dict[str, Any]  # state.json: the checkpoint after the last finished generation (generation, history)
    front: pd.DataFrame  # front.json members, cheapest first: genome (tuple), widths (tuple), quality, cost, share, generation
    log: pd.DataFrame | None  # the evaluation log, None if the folder has none
    #: family members scored for a report by :func:`evaluate_missing` (genome, quality, valid, share); never logged
    extra: pd.DataFrame | None = None

    @property
    def quality(self) -> str:
        """Name of the quality column (lower is better)."""
        return self.space.objectives.quality

    @property
    def budget(self) -> float:
        """The search's cost budget, as a share of the full-width schedule."""
        return float(self.meta["budget"])

    @property
    def generations_finished(self) -> int:
        """Generations the front comes from (the last finished one is this minus one)."""
        return int(self.state["generation"]) + 1

    @property
    def cost_per_width(self) -> dict:
        """Cost of one denoiser call per width (per (width, side) in a resolution space), in the search's cost unit."""
        out: dict = {}
        for k, v in self.meta["cost_per_width"].items():
            w, _, r = str(k).partition("@")
            out[(float(w), int(r)) if r else float(w)] = float(v)
        return out

    def identity(self) -> dict[str, Any]:
        """What a report folder belongs to: this folder and the search that ran in it."""
        return {"search": str(self.folder.resolve()), "space": self.meta.get("space"),
                "supernet": self.meta.get("supernet"), "costs": self.meta.get("costs")}


def load_search(folder: str | Path) -> SearchRun:
    """Read a search folder; a one-line DDSMError if it is missing, not a search, unfinished or has no front.

    "Unfinished" means no generation has finished (no ``state.json``): the
    front of a search stopped after some generation is that generation's
    front and is accepted (``generations_finished`` tells which).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DDSMError(f"search folder {str(folder)!r} does not exist; give the --out folder of `ddsm search`")
    if not (folder / "search.json").is_file():
        raise DDSMError(f"{str(folder)!r} holds no search (no search.json); give the --out folder of `ddsm search`")
    meta = read_json(folder / "search.json", "search manifest")
    if not isinstance(meta, dict) or meta.get("kind") != "ddsm.search":
        raise DDSMError(f"{str(folder / 'search.json')!r} is not a ddsm search manifest")
    missing = [k for k in ("space", "supernet", "objectives", "budget", "cost_per_width", "full_cost") if k not in meta]
    if missing:
        raise DDSMError(f"search manifest {str(folder / 'search.json')!r} lacks {missing}; written by another ddsm version?")
    if not (folder / "space.json").is_file():
        raise DDSMError(f"search folder {str(folder)!r} lacks space.json")
    space = SearchSpace.load(folder / "space.json")
    if space.fingerprint() != meta["space"]:
        raise DDSMError(f"space.json of {str(folder)!r} (hash {space.fingerprint()}) does not match its search.json "
                        f"({meta['space']}); the folder was edited by hand")
    if not (folder / "state.json").is_file() or not (folder / "front.json").is_file():
        raise DDSMError(f"the search in {str(folder)!r} has not finished a generation (no state.json / front.json); "
                        f"let it run or continue it with `ddsm search --out {folder} --resume`")
    from ddsm.search.state import load_state

    state = load_state(folder / "state.json")
    front_doc = read_json(folder / "front.json", "search front")
    if not isinstance(front_doc, dict) or front_doc.get("kind") != "ddsm.search_front":
        raise DDSMError(f"{str(folder / 'front.json')!r} is not a ddsm search front")
    if front_doc.get("space") != meta["space"]:
        raise DDSMError(f"front.json of {str(folder)!r} belongs to another search space than its search.json")
    q = space.objectives.quality
    members = front_doc.get("members") or []
    if not members:
        raise DDSMError(f"the search in {str(folder)!r} found no feasible schedule (valid and within budget "
                        f"{float(meta['budget']):g}): nothing to report; raise the budget or check the evaluator")
    front = pd.DataFrame([{"genome": tuple(int(g) for g in m["genome"]), "widths": tuple(float(w) for w in m["widths"]),
                           "resolutions": tuple(int(r) for r in m["resolutions"]) if m.get("resolutions") else None,
                           q: float(m[q]), "cost": float(m["cost"]), "share": float(m["share"]),
                           "generation": int(m["generation"])} for m in members])
    # front.json is written cheapest first; sorting again keeps the rank promise if a hand edit reordered it
    front = front.sort_values(["share", q], kind="stable").reset_index(drop=True)
    log = None
    if (folder / "evaluations.parquet").exists() or (folder / "evaluations.csv").exists():
        log = EvaluationLog(folder, quality=q).frame()  # reading never writes
    return SearchRun(folder=folder, space=space, meta=meta, state=state, front=front, log=log)


def check_checkpoint(run: SearchRun, net) -> None:
    """Refuse a supernet other than the one the search ran on (by architecture fingerprint)."""
    if net.fingerprint != run.meta["supernet"]:
        raise DDSMError(f"checkpoint {net.source!r} is supernet {net.fingerprint}, but the search in "
                        f"{str(run.folder)!r} ran on supernet {run.meta['supernet']}; give the checkpoint it used")


def check_out_dir(out: str | Path, *, kind: str, identity: dict[str, Any]) -> list[str]:
    """Refuse an output folder that holds anything but reports of this same search; the files it listed before.

    An empty or missing folder is fine. A non-empty one must carry a report
    manifest (``export.json`` or ``plots.json``) and every manifest in it must
    name the same search; then the files the previous report of ``kind``
    wrote are returned, so the caller can drop those it no longer writes.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DDSMError(f"--out {str(out)!r} is a file; give a folder")
    if not out.exists() or not any(out.iterdir()):
        return []
    found = {k: out / name for k, name in MANIFESTS.items() if (out / name).is_file()}
    if not found:
        raise DDSMError(f"--out {str(out)!r} is not empty and holds no ddsm report; choose a new or empty folder "
                        "(nothing there was touched)")
    previous: list[str] = []
    for k, path in found.items():
        try:
            data = read_json(path, "report manifest")
        except DDSMError:
            data = None
        if not isinstance(data, dict) or data.get("kind") != k:
            raise DDSMError(f"--out {str(out)!r} holds a {path.name} that is not a ddsm report manifest; "
                            "choose a new or empty folder")
        diff = [key for key, v in identity.items() if data.get(key) != v]
        if diff:
            raise DDSMError(f"--out {str(out)!r} holds a report of another search ({data.get('search')}; differs in "
                            f"{', '.join(diff)}); choose a new or empty folder, it is not overwritten")
        if k == kind:
            # only plain names inside the folder: a hand-edited manifest must not make us delete elsewhere
            previous = [f for f in data.get("files", []) if isinstance(f, str) and f and "/" not in f
                        and "\\" not in f and f not in (".", "..")]
    return previous


def _finish_out_dir(out: Path, *, kind: str, identity: dict[str, Any], files: list[str], previous: list[str],
                    extra: dict[str, Any]) -> None:
    """Write the manifest last (a crash before it leaves an earlier manifest or none), then drop stale files."""
    write_json(out / MANIFESTS[kind], {"kind": kind, "schema_version": REPORT_VERSION, **identity, **extra,
                                       "files": files})
    for name in set(previous) - set(files) - set(MANIFESTS.values()):
        (out / name).unlink(missing_ok=True)


# ---------------------------------------------------------------------------- the front table


def macs_per_width(run: SearchRun, net) -> dict[float, float]:
    """MACs of one denoiser call (one image) per width.

    A FLOP search's ``cost_per_width`` already is MACs per image (fvcore, or
    the MAC column of a cost table); a latency search's is seconds, so MACs
    are counted here with :func:`ddsm.cost.count_macs`.
    """
    if run.space.objectives.cost == "flops":
        return run.cost_per_width
    from ddsm.cost import count_macs

    if run.space.resolutions is None:
        return {float(w): float(count_macs(net.model, w).total) for w in run.space.widths}
    return {(float(w), int(r)): float(count_macs(net.model, w, r).total)
            for w in run.space.widths for r in run.space.resolutions}


def _width_cost(table: dict, w: float, side: int | None = None) -> float:
    # Width-only tables are keyed by width; resolution tables by (width, side), side None meaning the largest.
    if side is None and any(isinstance(k, tuple) for k in table):
        side = max(k[1] for k in table)
    for k, v in table.items():
        kw, kr = k if isinstance(k, tuple) else (k, None)
        if abs(kw - w) < 1e-9 and (kr is None or kr == side):
            return v
    raise DDSMError(f"no cost for width {w:g}" + ("" if side is None else f" at side {side}") + f" (known: {sorted(table)})")


def front_table(run: SearchRun, macs: dict[float, float]) -> pd.DataFrame:
    """The front, cheapest first: rank, schedule file, quality, MACs per image, shares, generation, genome, widths.

    ``share`` is the search's own cost share (FLOPs, or latency for a latency
    search); ``flop_saving`` is ``1 - MACs / full-width MACs``, equal to
    ``1 - share`` for a FLOP search.
    """
    q = run.quality
    steps = run.space.sampler.steps
    full = _width_cost(macs, 1.0) * steps
    n = len(run.front)
    digits = max(2, len(str(n)))
    rows = []
    for i, m in enumerate(run.front.to_dict(orient="records"), start=1):
        sides = m.get("resolutions") or [None] * len(m["widths"])
        total = float(sum(_width_cost(macs, w, r) for w, r in zip(m["widths"], sides)))
        row = {"rank": i, "schedule": f"front-{i:0{digits}d}-share{m['share']:.2f}.json", q: m[q],
               "macs_per_image": total, "share": m["share"], "flop_saving": 1.0 - total / full,
               "generation": m["generation"], "genome": genome_key(m["genome"]),
               "widths": ",".join(f"{w:g}" for w in m["widths"])}
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
                _generate(model, sampler, plans[i], seeds, batch_size=len(seeds))  # returns on the CPU: synced
                if r >= warmup:
                    times[i].append(time.perf_counter() - t0)
                bar.update(1)
    return times


def _generate(model, sampler, plan, seeds, **kw):
    from ddsm.samplers import generate

    sides = getattr(plan, "resolutions", None)
    return generate(model, sampler, list(getattr(plan, "widths", plan)), seeds, resolutions=sides, **kw)


# ---------------------------------------------------------------------------- export


@dataclass
class ExportResult:
    """What :func:`export_front` wrote."""

    out: Path
    table: pd.DataFrame  # the front table with measured times (also front.csv / front.parquet)
    full_seconds: float  # median seconds of the full-width schedule, same seeds
    files: list[str] = field(default_factory=list)  # names written in ``out``
    budgets: dict[float, int] = field(default_factory=dict)  # requested budget -> rank of its best member


def best_under(table: pd.DataFrame, budgets: Sequence[float], *, quality: str) -> dict[float, int]:
    """Rank of the best-quality front member with ``share <= B`` for each budget; a DDSMError if one has none."""
    out: dict[float, int] = {}
    for b in dict.fromkeys(float(b) for b in budgets):
        if not (math.isfinite(b) and b > 0):
            raise DDSMError(f"--budget {b:g} must be a positive cost share (e.g. 0.3 for 30 % of full-width FLOPs)")
        within = table[table["share"] <= b + _TOL]
        if within.empty:
            raise DDSMError(f"--budget {b:g}: no front member costs that little (the cheapest has share "
                            f"{table['share'].min():.3f}); ask for a budget of at least that")
        out[b] = int(within.sort_values([quality, "share"], kind="stable")["rank"].iloc[0])
    return out


def _provenance(run: SearchRun, member: dict, rank: int) -> dict[str, Any]:
    from ddsm import __version__

    ev = run.space.evaluator
    return {"search": str(run.folder.resolve()), "space": run.meta["space"], "costs": run.meta.get("costs"),
            "seed": run.space.seed, "generation": int(member["generation"]),
            "generations_finished": run.generations_finished, "front_rank": rank, "genome": list(member["genome"]),
            "objectives": dict(run.meta["objectives"]), "search_budget": run.budget,
            "evaluator": {"num_samples": ev.num_samples, "seed": ev.seed}, "tool": f"ddsm {__version__}"}


def export_front(run: SearchRun, net, out: str | Path, *, budgets: Sequence[float] = (), repeats: int = 5,
                 warmup: int = 1, num: int = 16, seed: int = 0, progress: bool = False) -> ExportResult:
    """Write schedule files, ``best-under-B.json`` files and the measured front table into ``out``.

    Everything is checked before ``out`` is created or touched (see the
    module docstring). Times: sampling ``num`` images (seeds ``seed..seed+num-1``,
    one batch) on ``net``'s device, ``warmup`` untimed rounds then the median
    of ``repeats``, every schedule and the full-width one measured
    round-robin in this process (:func:`time_schedules`).
    """
    from ddsm.diffusion.noise import NoiseSchedule
    from ddsm.samplers import make_sampler
    from ddsm.schedule import Schedule

    out = Path(out)
    check_checkpoint(run, net)
    if num < 1:
        raise DDSMError(f"--num must be at least 1, got {num}")
    if repeats < 1 or warmup < 0:
        raise DDSMError(f"--repeats ({repeats}) must be at least 1 and --warmup ({warmup}) at least 0")
    q = run.quality
    table = front_table(run, macs_per_width(run, net))
    chosen = best_under(table, budgets, quality=q)
    identity = run.identity()
    previous = check_out_dir(out, kind=EXPORT_KIND, identity=identity)

    scfg = run.space.sampler
    # Building every schedule before timing: a schedule that does not fit the supernet fails before minutes of timing.
    schedules = []
    for member, row in zip(run.front.to_dict(orient="records"), table.to_dict(orient="records")):
        schedules.append(Schedule.for_model(
            net.config, scfg, list(member["widths"]), resolutions=member.get("resolutions"),
            predicted={"cost_share": float(row["share"]), "macs": float(row["macs_per_image"]),
                       "flop_saving": float(row["flop_saving"])},
            quality={q: float(member[q])}, provenance=_provenance(run, member, int(row["rank"]))))

    sampler = make_sampler(NoiseSchedule(net.config.diffusion), scfg)
    plans = [s.plan() for s in schedules] + [[1.0] * scfg.steps]
    times = time_schedules(net.model, sampler, plans, list(range(seed, seed + num)), repeats=repeats, warmup=warmup,
                           progress=progress)
    medians = [statistics.median(t) for t in times]
    full_s = medians[-1]
    table["seconds"] = medians[:-1]
    table["full_seconds"] = full_s
    table["speedup"] = full_s / table["seconds"]
    table["wallclock_saving"] = 1.0 - table["seconds"] / full_s

    out.mkdir(parents=True, exist_ok=True)
    files: list[str] = []
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
    device = str(next(net.model.parameters()).device)
    _finish_out_dir(out, kind=EXPORT_KIND, identity=identity, files=files, previous=previous,
                    extra={"checkpoint": net.source, "generations_finished": run.generations_finished,
                           "budgets": {repr(b): r for b, r in chosen.items()},
                           "timing": {"device": device, "num": num, "seed": seed, "repeats": repeats,
                                      "warmup": warmup, "full_seconds": full_s}})
    return ExportResult(out=out, table=table, full_seconds=full_s, files=files, budgets=chosen)


def format_table(table: pd.DataFrame, *, quality: str) -> str:
    """The export table as aligned text for a terminal."""
    head = (f"{'rank':>4} {quality:>10} {'MMACs/img':>10} {'share':>6} {'FLOPs saved':>11} {'seconds':>8} "
            f"{'speed-up':>8} {'time saved':>10}  schedule")
    lines = [head]
    for r in table.to_dict(orient="records"):
        lines.append(f"{r['rank']:>4d} {r[quality]:>10.4g} {r['macs_per_image'] / 1e6:>10.2f} {r['share']:>6.1%} "
                     f"{r['flop_saving']:>11.1%} {r['seconds']:>8.3f} {r['speedup']:>7.2f}x "
                     f"{r['wallclock_saving']:>10.1%}  {r['schedule']}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- families and sensitivity


@dataclass
class Family:
    """A structured family of schedules (uniform width, two-segment) and those of it the log evaluated."""

    name: str
    genomes: list[tuple[int, ...]]  # every member of the family in this space
    rows: pd.DataFrame  # log rows of the members that were evaluated and scored (valid, finite quality)
    labels: list[str]  # one short label per row of ``rows``
    evaluated_now: int = 0  # rows scored for the report (:func:`evaluate_missing`) rather than taken from the log


def _scored(run: SearchRun, *, extra: bool = False) -> pd.DataFrame:
    """Valid rows with a finite quality: of the log, and with ``extra`` also those scored for the report."""
    cols = ["genome", run.quality, "share", "valid"]
    parts = [f for f in (run.log, run.extra if extra else None) if f is not None and not f.empty]
    if not parts:
        return pd.DataFrame(columns=cols)
    rows = pd.concat([f[cols] for f in parts], ignore_index=True).drop_duplicates("genome")
    return rows[rows["valid"].astype(bool) & np.isfinite(rows[run.quality].astype(float))]


def family_genomes(space: SearchSpace) -> list[tuple[int, ...]]:
    """Every uniform-width and two-segment genome of ``space`` (the full-width one included), once each.

    In a resolution space they run at the image size throughout (transition genes 0).
    """
    return [g + (0,) * space.n_resolution_genes
            for g in dict.fromkeys([*uniform_seeds(space), *two_segment_seeds(space)])]


def evaluate_missing(run: SearchRun, checkpoint: str, *, featurenet: str | None = None,
                     device: str = "auto") -> SearchRun:
    """``run`` with the family members its log lacks scored by the search's own evaluator (in ``extra``).

    Same metric, samples and seeds as the search (the space's evaluator
    settings), so the numbers sit on the same axis as the logged ones. The
    search folder is not touched: the rows live in ``run.extra`` only.
    """
    import dataclasses

    from ddsm.search.oracle import evaluator_factory
    from ddsm.search.problem import WidthProblem

    factory = evaluator_factory(run.space, checkpoint, featurenet)  # FID without a feature net fails here, early
    # a logged genome is never scored again, even an invalid one: the search's answer for it stands
    logged = set(run.log["genome"]) if run.log is not None else set()
    todo = [g for g in family_genomes(run.space) if genome_key(g) not in logged]
    if not todo:
        return run
    df = factory(device=device).evaluate([run.space.decode(g) for g in todo])
    shares = WidthProblem(run.space, run.cost_per_width).share(np.asarray(todo, dtype=np.int64))
    extra = pd.DataFrame({"genome": [genome_key(g) for g in todo], run.quality: df[run.quality].astype(float),
                          "valid": df["valid"].astype(bool), "share": shares})
    return dataclasses.replace(run, extra=extra)


def families(run: SearchRun) -> list[Family]:
    """The uniform-width and two-segment (T-Stitch) families, as far as the evaluation log has them.

    Nothing is evaluated here: a member the search never asked about (say a
    uniform width over budget) is absent unless :func:`evaluate_missing`
    scored it into ``run.extra``; the plot says how many of the family are
    shown and where they came from.
    """
    space = run.space
    scored = _scored(run, extra=True).set_index("genome", drop=False)
    extra = set(run.extra["genome"]) if run.extra is not None else set()
    out = []
    full = space.full_index
    pad = (0,) * space.n_resolution_genes  # families run at the image size
    uni = [g + pad for g in uniform_seeds(space)]
    two = [g + pad for g in two_segment_seeds(space)]
    for name, genomes, label in (
        ("uniform width", uni, lambda g: f"w={space.widths[g[0]]:g}"),
        (TWO_SEGMENT, two,
         lambda g: f"{space.widths[g[0]]:g}×{sum(space.segment_lengths[:sum(1 for x in g if x != full)])}"),
    ):
        keys = [genome_key(g) for g in genomes]
        present = [k for k in keys if k in scored.index]
        rows = scored.loc[present].reset_index(drop=True) if present else scored.iloc[0:0]
        out.append(Family(name=name, genomes=genomes, rows=rows, labels=[label(parse_genome(k)) for k in present],
                          evaluated_now=sum(k in extra for k in present)))
    return out


def full_width_quality(run: SearchRun) -> tuple[float | None, str]:
    """Quality of the full-width schedule: from the log, else 0 for the teacher-relative proxies, else unknown."""
    key = genome_key((run.space.full_index,) * run.space.n_genes + (0,) * run.space.n_resolution_genes)
    scored = _scored(run, extra=True)
    hit = scored[scored["genome"] == key]
    if not hit.empty:
        return float(hit[run.quality].iloc[0]), "evaluated"
    if run.quality in TEACHER_RELATIVE:
        return 0.0, "0 by definition"
    return None, "not evaluated"


def sensitivity(run: SearchRun) -> pd.DataFrame | None:
    """Per-gene degradation from the seeding probes (generation -1), or None if the log has none.

    One row per (gene, narrower width): ``degradation = q(gene alone at
    width, rest full) - q(full width)``; ``first_step``/``last_step`` are the
    1-based sampling steps the gene covers (noisiest first).
    """
    if run.log is None or run.log.empty:
        return None
    space = run.space
    probes = [p + (0,) * space.n_resolution_genes for p in sensitivity_probes(space)]
    seeds = run.log[run.log["generation"] == -1].set_index("genome")
    keys = [genome_key(p) for p in probes]
    if keys[0] not in seeds.index or not any(k in seeds.index for k in keys[1:]):
        return None
    base = float(seeds.loc[keys[0], run.quality])
    starts = np.concatenate([[0], np.cumsum(space.segment_lengths)])
    rows = []
    for p, k in zip(probes[1:], keys[1:]):
        g = next(i for i, x in enumerate(p[: space.n_genes]) if x != space.full_index)
        v = float(seeds.loc[k, run.quality]) if k in seeds.index else math.nan
        rows.append({"gene": g, "first_step": int(starts[g]) + 1, "last_step": int(starts[g + 1]),
                     "width": space.widths[p[g]], "degradation": v - base if math.isfinite(v) else math.nan})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------- figures


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
    return f"{METRIC_LABELS.get(run.quality, run.quality)} (lower is better)"


def _cost_label(run: SearchRun) -> str:
    return "FLOPs" if run.space.objectives.cost == "flops" else "latency"


def plot_front(run: SearchRun, out: str | Path) -> list[Path]:
    """``front.png/svg``: quality vs cost share, with every scored point, the front, the families and full width."""
    out = Path(out)
    q = run.quality
    fig = _figure(8.0, 7.2)
    ax = fig.add_subplot()
    scored = _scored(run)
    feasible = scored[scored["share"] <= run.budget + _TOL]
    over = scored[scored["share"] > run.budget + _TOL]
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

    styles = {"uniform width": ("s", "tab:green", "-"), TWO_SEGMENT: ("^", "tab:orange", "")}
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
    ax.grid(True, alpha=0.3)
    s = run.space.sampler
    note = "" if run.log is not None else " (no evaluation log: front only)"
    ax.set_title(f"Search '{run.folder.name}': {q} vs cost, {s.kind.upper()} {s.steps} steps, "
                 f"{run.generations_finished} generations{note}", fontsize=10)
    # Below the axes, not on them: wherever it sat inside it would hide some evaluated points.
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=1, fontsize=8, frameon=False)
    return save_figure(fig, out, "front")


def plot_widths(run: SearchRun, out: str | Path) -> list[Path]:
    """``widths.png/svg``: width per sampling step (noisiest left) of each front member (cheapest on top)."""
    from matplotlib.colors import BoundaryNorm, ListedColormap
    import matplotlib

    out = Path(out)
    q = run.quality
    space = run.space
    widths = list(space.widths)
    M = np.array([list(w) for w in run.front["widths"]], dtype=float)
    n, steps = M.shape
    fig = _figure(max(7.0, 0.32 * steps + 3.5), max(3.2, 0.34 * n + 1.8))
    ax = fig.add_subplot()
    cmap = ListedColormap(matplotlib.colormaps["viridis"](np.linspace(0.1, 0.95, len(widths))))
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
    for row, member_sides in enumerate(sides, start=1):  # resolution spaces: the side of every reduced step
        for step, side in enumerate(member_sides or (), start=1):
            if side < space.resolutions[-1]:
                ax.text(step, row, str(side), ha="center", va="center", fontsize=6, color="white")
    ax.set_xticks(range(1, steps + 1) if steps <= 30 else np.linspace(1, steps, 11).round().astype(int))
    ax.set_yticks(range(1, n + 1))
    ax.set_yticklabels([f"#{i}  {r['share']:.0%}  {q} {r[q]:.3g}" for i, r in
                        enumerate(run.front.to_dict(orient="records"), start=1)], fontsize=8)
    ax.set_xlabel("sampling step (1 = noisiest; white lines: gene boundaries)")
    ax.set_ylabel(f"front member (rank, % {_cost_label(run)}, quality)")
    cb = fig.colorbar(im, ax=ax, ticks=widths, fraction=0.05, pad=0.02)
    cb.set_label("width (fraction of channels)")
    s = space.sampler
    # suptitle spans the colour bar too, so a short figure cannot run the title into its label
    what = "Width (and reduced side, in the cells)" if space.resolutions else "Width"
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

    narrow = sorted(sens["width"].unique())
    colors = matplotlib.colormaps["viridis"](np.linspace(0.1, 0.8, len(narrow)))
    for w, c in zip(narrow, colors):
        d = sens[sens["width"] == w].sort_values("gene")
        ax.plot(d["gene"], d["degradation"], marker="o", color=c, label=f"narrowed to width {w:g}")
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
    from ddsm.diffusion.noise import NoiseSchedule
    from ddsm.images import grid
    from ddsm.samplers import make_sampler
    from ddsm.samplers.progressive import StepPlan

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
        plan = r["widths"] if not r.get("resolutions") else StepPlan(tuple(r["widths"]), tuple(r["resolutions"]))
        panels.append((title, plan))
    fq, _ = full_width_quality(run)
    panels.append(("full width\n100% " + _cost_label(run) + ("" if fq is None else f", {q} {fq:.3g}"),
                   [1.0] * scfg.steps))
    fig = _figure(3.0 * len(panels), 3.6)
    axes = fig.subplots(1, len(panels))
    ncols = max(1, math.ceil(math.sqrt(num)))
    for ax, (title, widths) in zip(np.atleast_1d(axes), panels):
        img = grid(_generate(net.model, sampler, widths, seeds, batch_size=num), ncols)
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=255,
                  interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"Samples on the same seeds {seeds[0]}–{seeds[-1]} ({scfg.kind.upper()} {scfg.steps} steps)",
                 fontsize=10)
    return save_figure(fig, out, "samples")


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
                featurenet: str | None = None, device: str = "auto") -> PlotResult:
    """Every figure into ``out`` after the same checks as :func:`export_front`; see the module docstring.

    With ``evaluate``, the uniform-width and two-segment schedules the log
    lacks are scored first (:func:`evaluate_missing`), on ``device``.
    """
    out = Path(out)
    check_checkpoint(run, net)
    if num < 1:
        raise DDSMError(f"--num must be at least 1, got {num}")
    identity = run.identity()
    previous = check_out_dir(out, kind=PLOTS_KIND, identity=identity)
    if evaluate:
        run = evaluate_missing(run, net.source, featurenet=featurenet, device=device)
    out.mkdir(parents=True, exist_ok=True)
    files = plot_front(run, out) + plot_widths(run, out)
    skipped = []
    sens = plot_sensitivity(run, out)
    if sens is None:
        skipped.append("sensitivity: the evaluation log has no sensitivity probes (generation -1; "
                       "seeding.sensitivity was off), so sensitivity.png was not drawn")
    else:
        files += sens
    files += plot_samples(run, net, out, num=num, seed=seed)
    _finish_out_dir(out, kind=PLOTS_KIND, identity=identity, files=[p.name for p in files], previous=previous,
                    extra={"checkpoint": net.source, "generations_finished": run.generations_finished,
                           "samples": {"num": num, "seed": seed, "front_ranks": [i + 1 for i in sample_members(run)]},
                           "evaluated_for_plot": _plain_rows(run.extra, run.quality)})
    return PlotResult(out=out, files=files, skipped=skipped, evaluated=0 if run.extra is None else len(run.extra))
