"""The search run folder: the one module that writes it and reads it.

Files (``schema_version`` 1 each):

- ``space.json``: the resolved search config, written before any work;
- ``search.json``: what the folder belongs to (the search config's hash, the
  supernet fingerprint, the cost model's hash: a resume with another one of
  these is refused before anything in the folder changes), the objectives,
  the budget and the cost model (:meth:`ddsm.cost.CostModel.to_json`);
- ``evaluations.parquet`` (or ``.csv``): the evaluation log and cache
  (:mod:`ddsm.search.log`);
- ``state.json``: NSGA-II's state after the last finished generation
  (:mod:`ddsm.search.state`), with the hypervolume reference point and
  per-generation statistics;
- ``front.csv`` / ``front.json``: the current Pareto front, cheapest first.

:class:`SearchFolder` writes them for the search loop; :func:`load_search`
reads a folder back as a checked :class:`SearchRun` for export, plots,
sweeps and the quickstart, whose front also comes back as
:class:`~ddsm.schedule.Schedule` objects (:meth:`SearchRun.schedules`).
:func:`write_front_files` and :func:`read_front` write and read every
front's two files, the joint search's (:mod:`ddsm.search.joint`) too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ddsm import __version__
from ddsm.config import ModelConfig, width_index
from ddsm.cost.model import CostModel
from ddsm.samplers.base import guided_passes
from ddsm.errors import DDSMError
from ddsm.io import read_json, write_atomic, write_json
from ddsm.limits import clip
from ddsm.runfolder import claim_folder, read_manifest, write_manifest
from ddsm.plan import StepPlan
from ddsm.schedule import Schedule
from ddsm.search.front import front_frame
from ddsm.search.log import EvaluationLog, parse_genome, parse_uncond
from ddsm.search.config import SearchConfig
from ddsm.search.state import load_state

SEARCH_VERSION = 1
FRONT_VERSION = 1
SEARCH_KIND = "ddsm.search"
FRONT_KIND = "ddsm.search_front"
#: what each identity key is called in a refusal
_IDENTITY_NAMES = {"space": "search space", "supernet": "supernet", "costs": "cost model",
                   "weights": "supernet weights (sha256)"}


# ---------------------------------------------------------------------------- writing (the search loop)


class SearchFolder:
    """A search run folder as the search loop writes it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def state_path(self) -> Path:
        """``state.json``: NSGA-II's state after the last finished generation."""
        return self.path / "state.json"

    @staticmethod
    def identity(space: SearchConfig, supernet: str | None, costs: CostModel,
                 weights: str | None = None) -> dict[str, Any]:
        """What decides the result of a search run in this folder (``weights``: the supernet file's sha256)."""
        return {"space": space.fingerprint(), "supernet": supernet, "costs": costs.fingerprint(),
                **({"weights": weights} if weights is not None else {})}

    def claim(self, identity: dict[str, Any], *, resume: bool) -> None:
        """Refuse a folder holding another search (or any search, without ``resume``) before writing to it."""

        def describe(saved: dict, diff: list[str]) -> str:
            return "it belongs to another search; differs in: " + "; ".join(
                f"{_IDENTITY_NAMES[k]} {saved.get(k)!s} (folder) vs {identity[k]!s} (now)" for k in diff)

        claim_folder(self.path, manifest="search.json", kind=SEARCH_KIND, what="search", identity=identity,
                     resume=resume, describe=describe)

    def start(self, space: SearchConfig, identity: dict[str, Any], costs: CostModel) -> None:
        """Write ``space.json`` and ``search.json`` (before any evaluation)."""
        self.path.mkdir(parents=True, exist_ok=True)
        # search.json first: it marks the folder, so a kill between the two leaves a search that resumes
        write_manifest(self.path / "search.json", kind=SEARCH_KIND, version=SEARCH_VERSION, identity=identity,
                       objectives=space.objectives.model_dump(), budget=space.budget,
                       cost_per_width=costs.to_json(), full_cost=costs.full_cost(space.sampler.calls),
                       **({"cached_cost_per_width": costs.cached_json(), "cache_level": costs.cache_level}
                          if costs.cached is not None else {}),
                       **({"latency_batch": costs.batch} if costs.batch is not None else {}))
        write_json(self.path / "space.json", space.model_dump(mode="json"))

    def log(self, space: SearchConfig) -> EvaluationLog:
        """The evaluation log (and cache) of this folder, created on first flush."""
        return EvaluationLog(self.path, quality=space.objectives.quality, format=space.cache.format,
                             flush_seconds=space.cache.flush_seconds)

    def write_front(self, front: list[dict], *, quality: str, meta: dict[str, Any]) -> None:
        """Write ``front.csv`` and ``front.json`` (widths per member, quality, cost, budget share) atomically."""
        members = [{"genome": list(parse_genome(r["genome"])),
                    "widths": [float(w) for w in str(r["widths"]).split(",")],
                    **({"resolutions": [int(x) for x in r["resolutions"].split()]} if _has_text(r, "resolutions") else {}),
                    **({"uncond_widths": list(parse_uncond(r["uncond_widths"]))} if _has_text(r, "uncond_widths") else {}),
                    **({"cached": [x == "1" for x in r["cached"].split()]} if _has_text(r, "cached") else {}),
                    quality: r[quality], "cost": r["cost"], "share": r["share"], "generation": r["generation"]}
                   for r in front]
        write_front_files(self.path, front_frame(front, quality=quality),
                          {"kind": FRONT_KIND, "schema_version": FRONT_VERSION, **meta, "members": members})


def write_front_files(folder: Path, table: pd.DataFrame, doc: dict[str, Any]) -> None:
    """A front's two files, each written atomically: ``front.csv`` (``table``, no index), then ``front.json``."""
    write_atomic(folder / "front.csv", lambda p: table.to_csv(p, index=False))
    write_json(folder / "front.json", doc)


def read_front(folder: Path, *, kind: str, what: str) -> dict[str, Any] | None:
    """``folder``'s ``front.json`` (read as ``what``: one line if unreadable), or None if it is no front of ``kind``."""
    doc = read_json(folder / "front.json", what)
    return doc if isinstance(doc, dict) and doc.get("kind") == kind else None


def _has_text(row: dict, key: str) -> bool:
    v = row.get(key)
    return isinstance(v, str) and bool(v)


# ---------------------------------------------------------------------------- reading (reports, sweeps)


def _integral(v: Any) -> bool:
    return not isinstance(v, bool) and (isinstance(v, int) or (isinstance(v, float) and v.is_integer()))


def _front_member(m: Any, i: int, space: SearchConfig, q: str, where: str) -> dict[str, Any]:
    """Member ``i`` of a search's ``front.json`` as a row, checked (the file may have been edited): one line if not."""
    def bad(what: str) -> DDSMError:
        return DDSMError(f"{where}: member {i} {what}; was the file edited?")

    if not isinstance(m, dict):
        raise bad(f"is a {type(m).__name__}, not a mapping")
    missing = [k for k in ("genome", "widths", q, "cost", "share", "generation") if k not in m]
    if missing:
        raise bad(f"lacks {', '.join(missing)}")
    steps = space.sampler.calls
    numbers = {k: m[k] for k in (q, "cost", "share")}
    for k, v in numbers.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or (k != q and v < 0):
            raise bad(f"has {k} {clip(repr(v), 40)}; a finite number{'' if k == q else ' >= 0'} is valid")
    widths, genome = m["widths"], m["genome"]
    numeric = isinstance(widths, list) and all(isinstance(w, (int, float)) and not isinstance(w, bool) for w in widths)
    if not numeric or len(widths) != steps or any(width_index(w, space.widths) is None for w in widths):
        raise bad(f"has widths {clip(repr(widths), 60)}; valid: {steps} of {list(space.widths)}")
    sides = m.get("resolutions")
    if sides and (not isinstance(sides, list) or len(sides) != steps
                  or not all(_integral(r) and r > 0 for r in sides)):
        raise bad(f"has resolutions {clip(repr(sides), 60)}; valid: {steps} positive sides")
    if not isinstance(genome, list) or not all(_integral(g) for g in genome):
        raise bad(f"has genome {clip(repr(genome), 60)}; valid: a list of integers")
    uncond = m.get("uncond_widths")
    if space.guidance_genes:
        if (not isinstance(uncond, list) or len(uncond) != steps
                or any(u is not None and (isinstance(u, bool) or not isinstance(u, (int, float))
                                          or width_index(u, space.widths) is None) for u in uncond)):
            raise bad(f"has uncond_widths {clip(repr(uncond), 60)}; valid: {steps} of {list(space.widths)} or null")
        uncond = tuple(None if u is None else float(u) for u in uncond)
    elif uncond is not None:
        raise bad("has uncond_widths, but its search space has no guidance genes")
    cached = m.get("cached")
    if space.reuse is not None:
        if not isinstance(cached, list) or len(cached) != steps or not all(isinstance(c, bool) for c in cached) \
                or (cached and cached[0]):
            raise bad(f"has cached {clip(repr(cached), 60)}; valid: {steps} true/false, the first false")
        cached = tuple(cached)
    elif cached is not None:
        raise bad("has cached steps, but its search space has no reuse genes")
    gen = m["generation"]
    if not _integral(gen):  # -1: found while seeding, before the first generation
        raise bad(f"has generation {clip(repr(gen), 40)}; valid: an integer")
    return {"genome": tuple(int(g) for g in genome), "widths": tuple(float(w) for w in widths),
            "resolutions": tuple(int(r) for r in sides) if sides else None, "uncond_widths": uncond,
            "cached": cached, "cache_level": None if space.reuse is None else space.reuse.level,
            q: float(numbers[q]), "cost": float(numbers["cost"]), "share": float(numbers["share"]),
            "generation": int(gen)}


@dataclass
class SearchRun:
    """A finished (or stopped after a generation) search folder, read and checked."""

    folder: Path
    space: SearchConfig
    meta: dict[str, Any]  # search.json: identity, objectives, budget, cost_per_width, full_cost
    state: dict[str, Any]  # state.json: NSGA-II's state after the last finished generation (generation, history)
    front: pd.DataFrame  # front.json members, cheapest first: genome (tuple), widths (tuple), quality, cost, share, generation
    log: pd.DataFrame | None  # the evaluation log, None if the folder has none
    #: family members scored for a report by :func:`ddsm.report.analysis.evaluate_missing`; never logged
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
    def costs(self) -> CostModel:
        """The search's cost model (one call per width, or per (width, side)), in its cost unit."""
        unit = "macs" if self.space.objectives.cost == "flops" else "latency"
        costs = CostModel.from_json(self.meta["cost_per_width"], unit=unit, batch=self.meta.get("latency_batch"),
                                    passes=guided_passes(self.space.sampler) if unit == "macs" else 1)
        cached = self.meta.get("cached_cost_per_width")
        return costs if cached is None else costs.with_cached({float(w): c for w, c in cached.items()},
                                                               self.meta["cache_level"])

    def identity(self) -> dict[str, Any]:
        """What a report folder belongs to: this folder and the search that ran in it."""
        return {"search": str(self.folder.resolve()), "space": self.meta.get("space"),
                "supernet": self.meta.get("supernet"), "weights": self.meta.get("weights"),
                "costs": self.meta.get("costs")}

    def check_supernet(self, net) -> None:
        """Refuse a supernet other than the one the search ran on: by architecture fingerprint, then by weights."""
        if net.fingerprint != self.meta["supernet"]:
            raise DDSMError(f"checkpoint {net.source!r} is supernet {net.fingerprint}, but the search in "
                            f"{str(self.folder)!r} ran on supernet {self.meta['supernet']}; give the checkpoint it used")
        saved = self.meta.get("weights")  # a search written before weights were recorded has none to compare
        if saved is not None and net.weights_sha256 != saved:
            raise DDSMError(f"checkpoint {net.source!r} holds other weights (sha256 {net.weights_sha256[:12]}...) than "
                            f"the search in {str(self.folder)!r} measured ({saved[:12]}...); give the checkpoint it "
                            "used, or search again")

    @staticmethod
    def plan_of(member: dict[str, Any]) -> StepPlan:
        """The schedule of a front member (a row of :attr:`front`): widths, sides, guidance choices, cached steps."""
        sides, uncond, cached = member.get("resolutions"), member.get("uncond_widths"), member.get("cached")
        cached = tuple(cached) if isinstance(cached, (tuple, list)) and any(cached) else None
        return StepPlan(tuple(member["widths"]), tuple(sides) if sides else None,
                        tuple(uncond) if isinstance(uncond, (tuple, list)) else None, cached,
                        member.get("cache_level") if cached else None)

    def schedules(self, model: ModelConfig, **fields: list[dict[str, Any]]) -> list[Schedule]:
        """The front as Schedule files would hold it, cheapest first; ``fields`` give per-member extras.

        Each keyword (``predicted``, ``quality``, ``provenance``) is a list of
        one dict per member, merged over what the search knows: the member's
        quality and cost share, and where it came from.
        """
        out = []
        for i, m in enumerate(self.front.to_dict(orient="records")):
            extra = {k: v[i] for k, v in fields.items()}
            out.append(Schedule.for_model(
                model, self.space.sampler, self.plan_of(m), weights=self.meta.get("weights"),
                predicted={"cost_share": float(m["share"]), **extra.get("predicted", {})},
                quality={self.quality: float(m[self.quality]), **extra.get("quality", {})},
                provenance={**self.provenance(m, i + 1), **extra.get("provenance", {})}))
        return out

    def provenance(self, member: dict, rank: int) -> dict[str, Any]:
        """Where front member ``rank`` (1 = cheapest) came from: this search, its settings, its genome."""
        ev = self.space.evaluator
        return {"search": str(self.folder.resolve()), "space": self.meta["space"], "costs": self.meta.get("costs"),
                "seed": self.space.seed, "generation": int(member["generation"]),
                "generations_finished": self.generations_finished, "front_rank": rank,
                "genome": list(member["genome"]), "objectives": dict(self.meta["objectives"]),
                "search_budget": self.budget, "evaluator": {"num_samples": ev.num_samples, "seed": ev.seed},
                **({"screen": {"num_samples": self.space.screen.num_samples, "seed": self.space.screen.seed}}
                   if self.space.screen is not None else {}),
                "tool": f"ddsm {__version__}"}


def read_state(folder: str | Path) -> dict[str, Any] | None:
    """The folder's ``state.json`` (NSGA-II's state after its last finished generation), or None."""
    path = Path(folder) / "state.json"
    return load_state(path) if path.exists() else None


def generations_finished(folder: str | Path) -> int:
    """Generations the search in ``folder`` has finished (0 if none)."""
    state = read_state(folder)
    return 0 if state is None else int(state["generation"]) + 1


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
    meta = read_manifest(folder / "search.json", kind=SEARCH_KIND, what="search")
    missing = [k for k in ("space", "supernet", "objectives", "budget", "cost_per_width", "full_cost") if k not in meta]
    if missing:
        raise DDSMError(f"search manifest {str(folder / 'search.json')!r} lacks {missing}; written by another ddsm version?")
    if not (folder / "space.json").is_file():
        raise DDSMError(f"search folder {str(folder)!r} lacks space.json")
    space = SearchConfig.load(folder / "space.json")
    if space.fingerprint() != meta["space"]:
        raise DDSMError(f"space.json of {str(folder)!r} (hash {space.fingerprint()}) does not match its search.json "
                        f"({meta['space']}); the folder was edited by hand")
    if not (folder / "state.json").is_file() or not (folder / "front.json").is_file():
        raise DDSMError(f"the search in {str(folder)!r} has not finished a generation (no state.json / front.json); "
                        f"let it run or continue it with `ddsm search --out {folder} --resume`")
    state = load_state(folder / "state.json")
    front_doc = read_front(folder, kind=FRONT_KIND, what="search front")
    if front_doc is None:
        raise DDSMError(f"{str(folder / 'front.json')!r} is not a ddsm search front")
    if front_doc.get("space") != meta["space"]:
        raise DDSMError(f"front.json of {str(folder)!r} belongs to another search space than its search.json")
    q = space.objectives.quality
    members = front_doc.get("members") or []
    if not members:
        raise DDSMError(f"the search in {str(folder)!r} found no feasible schedule (valid and within budget "
                        f"{float(meta['budget']):g}): nothing to report; raise the budget or check the evaluator")
    if not isinstance(members, list):
        raise DDSMError(f"{str(folder / 'front.json')!r}: members must be a list; was the file edited?")
    where = repr(str(folder / "front.json"))
    front = pd.DataFrame([_front_member(m, i, space, q, where) for i, m in enumerate(members, start=1)])
    # front.json is written cheapest first; sorting again keeps the rank promise if a hand edit reordered it
    front = front.sort_values(["share", q], kind="stable").reset_index(drop=True)
    log = None
    if (folder / "evaluations.parquet").exists() or (folder / "evaluations.csv").exists():
        log = EvaluationLog(folder, quality=q).frame()  # reading never writes
    return SearchRun(folder=folder, space=space, meta=meta, state=state, front=front, log=log)
