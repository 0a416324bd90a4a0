"""Steps as a search dimension: one front over a teacher and its distilled K-step students (SFDDM).

A *joint space* (YAML, see ``search_spaces/digits-steps.yaml``) names a width
search space (``base``: the teacher's sampler, widths, budget, objectives and
NSGA-II recipe), the teacher checkpoint and the students distilled from it
(``ddsm distill``). A joint genome is ``(model, width genes of that model)``:
the model gene picks the teacher or one student, and so the number of steps;
the width genes are that model's own.

How it is searched. The model gene is categorical and the width genes of two
models mean different things, so the joint space is the disjoint union of one
width space per model. The Pareto front of a union is the non-dominated set
of the union of its parts' fronts, so the joint front is exact whenever every
part's front is: each model gets its own width search (NSGA-II, or every
schedule when the model has at most ``population x generations`` of them, as a
2-step student has), on shared axes, and the fronts are merged. Shared axes:

- **cost**: the total MACs of the chosen model's steps, as a share of the
  teacher's full-width schedule (so a full-width K-step student costs
  K / teacher steps). The budget is the base space's, in those units.
- **quality**: the teacher-relative proxy against the *teacher's* full-width
  samples with the base sampler on the same seeds. Every model starts from the
  same per-sample noise, so a student's sample i is compared with the
  teacher's sample i; a student at full width is not 0, it is how far the
  student is from the teacher it replaces.

Folder: ``joint.json`` (the resolved joint space and what it belongs to: every
model's fingerprint; a resume with other checkpoints is refused),
``models/<name>/`` one ordinary search folder per model (``ddsm export`` and
``ddsm plot`` work on each), and ``front.csv`` / ``front.json``: the joint
front, cheapest first, each member naming its model, steps and checkpoint.

Every model is prepared and searched as a single search is
(:func:`~ddsm.search.setup.prepare_search`, :func:`~ddsm.search.loop.run_search`):
a student's only with the teacher's samples as its proxy's reference
(:class:`~ddsm.search.setup.TeacherReference`). The folder is claimed, locked
and its manifest and front written and read with the single search's
functions (:mod:`ddsm.runfolder`, :mod:`ddsm.search.folder`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import Field, field_validator, model_validator

from ddsm.checkpoint import Supernet, load_supernet
from ddsm.config import StudentConfig, _Frozen, load_yaml, validate
from ddsm.cost.model import SHARE_TOL, CostModel
from ddsm.distill import student_sampler
from ddsm.errors import DDSMError
from ddsm.io import stable_hash
from ddsm.limits import clip, short
from ddsm.runfolder import check_run_folder, claim_folder, read_manifest, start_under_lock, write_manifest
from ddsm.plan import StepPlan
from ddsm.search.config import SearchConfig
from ddsm.search.shipped import is_joint_doc, space_path
from ddsm.search.folder import load_search, read_front, write_front_files
from ddsm.search.front import hypervolume, pareto_front, reference_point
from ddsm.search.log import parse_genome
from ddsm.search.loop import SearchResult, check_run_options
from ddsm.search.setup import PreparedSearch, TeacherReference, prepare_search, search_costs

JOINT_VERSION = 1
JOINT_KIND = "ddsm.joint_search"
JOINT_FRONT_KIND = "ddsm.joint_front"
#: the name of the teacher's width search among the models
TEACHER = "teacher"


class JointSpace(_Frozen):
    """A search over models (the teacher and its K-step students) and a width per step of the chosen one."""

    base: str = "digits-proxy"  # width search space: teacher sampler, widths, budget, objectives, NSGA-II recipe
    teacher: str = "digits"  # the teacher supernet: shipped name, run folder or file
    students: tuple[str, ...] = Field(min_length=1)  # students distilled from the teacher (ddsm distill)
    include_teacher: bool = True  # also search the teacher's own width schedules

    @field_validator("students")
    @classmethod
    def _distinct(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        twice = sorted({s for s in v if v.count(s) > 1})
        if twice:
            raise ValueError(f"students lists {twice} more than once")
        return v

    @classmethod
    def load(cls, path: str | Path) -> "JointSpace":
        """Read and validate a joint-space YAML (or a shipped one by name); paths inside are taken as written."""
        path = space_path(path)
        doc = load_yaml(path)
        if isinstance(doc, dict) and not is_joint_doc(doc):
            raise DDSMError(f"{clip(str(path), 120)} is a width search space (it lists no students); search it with "
                            "`ddsm search --space`, or write a joint space naming base, teacher and students")
        return validate(cls, doc, source=f"joint space {clip(str(path), 120)}")

    def base_space(self) -> SearchConfig:
        """The base width search space, validated."""
        return SearchConfig.load(self.base)


@dataclass
class Arm:
    """One model of a joint search: its name, its prepared width search and its place on the joint cost axis."""

    name: str  # 'teacher' or 'k<K>'
    prepared: PreparedSearch  # checkpoint, supernet, width space, cost model and evaluator factory
    scale: float  # this model's full-width cost / the teacher's: multiplies its shares onto the joint axis
    exhaustive: bool  # every schedule of this model is evaluated (its front is exact)

    @property
    def checkpoint(self) -> str:
        """The model's checkpoint, as the joint space names it."""
        return self.prepared.checkpoint

    @property
    def net(self) -> Supernet:
        """The model's supernet (loaded on the CPU)."""
        return self.prepared.net

    @property
    def space(self) -> SearchConfig:
        """The model's width search space."""
        return self.prepared.space

    @property
    def costs(self) -> CostModel:
        """The model's cost model (MACs per denoiser call)."""
        return self.prepared.costs

    @property
    def factory(self) -> Any:
        """The model's evaluator factory (a student's: the proxy against the teacher's samples)."""
        return self.prepared.factory

    @property
    def steps(self) -> int:
        """The model's sampling steps."""
        return self.space.sampler.calls


def student_space(base: SearchConfig, student: StudentConfig, scale: float) -> tuple[SearchConfig, bool]:
    """The width space of one student: its own sampler, the base recipe, the joint budget in its own units.

    Returns the space and whether it is searched exhaustively (at most
    ``population x generations`` schedules: then every one is evaluated).
    """
    s = base.sampler
    # guided as the teacher's space says (a student with guidance distilled in: unguided, one call per step)
    own = student_sampler(student, kind=s.kind, eta=s.eta, clip_sample=s.clip_sample, guidance_scale=s.guidance_scale)
    k = student.steps
    segments = base.segments if base.segments is not None and base.segments < k else None
    genes = segments or k
    distinct = (len(base.widths) * (2 if base.reuse is not None else 1)) ** genes  # reuse genes double each choice
    data = base.model_dump(mode="json")
    data.update(sampler=own.model_dump(mode="json"), segments=segments, budget=min(1.0, base.budget / scale))
    exhaustive = distinct <= base.population * base.generations
    if exhaustive:
        data.update(population=distinct, generations=1)
    return validate(SearchConfig, data, source=f"the {k}-step student's width space"), exhaustive


def _name(net) -> str:
    return f"k{net.config.student.steps}"


def prepare_joint(joint: JointSpace, *, nets: dict[str, Any] | None = None) -> list[Arm]:
    """Check a joint space against its checkpoints and build one :class:`Arm` per model; one-line errors."""
    nets = dict(nets or {})
    base = joint.base_space()
    if base.objectives.quality != "proxy" or base.objectives.cost != "flops":
        raise DDSMError(f"a joint search compares models on the teacher-relative proxy and MACs; the base space "
                        f"{joint.base!r} has quality {base.objectives.quality!r} and cost {base.objectives.cost!r} "
                        "(set objectives: {quality: proxy, cost: flops})")
    if base.resolutions is not None:
        raise DDSMError(f"base space {joint.base!r} searches resolutions; a joint search takes a width-only space")
    if base.guidance_genes:
        raise DDSMError(f"base space {joint.base!r} has guidance_genes; a joint search takes widths only (a "
                        "student's guidance is not a per-step choice): set guidance_genes: false")
    if base.screen is not None:
        raise DDSMError(f"base space {joint.base!r} has a screen (two-stage evaluation); a joint search scores every "
                        "candidate on the proxy: drop screen from the base space")
    teacher = nets.get(joint.teacher) or load_supernet(joint.teacher, device="cpu")
    if teacher.config.student is not None:
        raise DDSMError(f"teacher {joint.teacher!r} is itself a distilled student; give the model it was distilled from")
    arms: list[Arm] = []
    t_prep = prepare_search(base, joint.teacher, net=teacher)
    teacher_full = t_prep.costs.full_cost(base.sampler.calls)
    if joint.include_teacher:
        arms.append(Arm(TEACHER, t_prep, 1.0, False))
    reference = TeacherReference(checkpoint=joint.teacher, sampler=base.sampler)
    seen: dict[int, str] = {}
    for ref in joint.students:
        net = nets.get(ref) or load_supernet(ref, device="cpu")
        st = net.config.student
        if st is None:
            raise DDSMError(f"students entry {ref!r} is not a distilled student (no student section in its config); "
                            "make one with ddsm distill")
        if st.teacher != teacher.fingerprint:
            raise DDSMError(f"student {ref!r} was distilled from teacher {st.teacher}, but this joint space's teacher "
                            f"{joint.teacher!r} is {teacher.fingerprint}; give its own teacher or students of this one")
        if st.steps in seen:
            raise DDSMError(f"students {seen[st.steps]!r} and {ref!r} both take {st.steps} steps; keep one per K")
        seen[st.steps] = ref
        if st.guidance_scale is not None and base.sampler.guidance_scale != st.guidance_scale:
            raise DDSMError(f"student {ref!r} has guidance scale {st.guidance_scale:g} distilled in, but base space "
                            f"{joint.base!r} has sampler.guidance_scale {base.sampler.guidance_scale!r}: its proxy "
                            f"would compare it with another teacher; set sampler.guidance_scale {st.guidance_scale:g}")
        # priced with the student's own passes: one a step where the teacher's guidance is distilled into it
        unguided = base.sampler.model_copy(update={"guidance_scale": None})
        costs = search_costs(base if st.guidance_scale is None else base.model_copy(update={"sampler": unguided}), net)
        scale = costs.full_cost(st.steps) / teacher_full
        # in the joint budget's own units (the teacher's full-width schedule), not the student space's derived one
        cheapest = st.steps * costs.call(base.widths[0]) / teacher_full
        if cheapest > base.budget + SHARE_TOL:
            raise DDSMError(f"student {ref!r} cannot fit the joint budget {base.budget:g}: its {st.steps} steps at the "
                            f"narrowest width {base.widths[0]:g} cost {cheapest:.4g} of the teacher's full-width "
                            f"{base.sampler.steps}-step schedule; drop it from students, or raise the budget of base "
                            f"space {joint.base!r} to at least {cheapest:.4g}")
        space, exhaustive = student_space(base, st, scale)
        arms.append(Arm(_name(net), prepare_search(space, ref, net=net, reference=reference), scale, exhaustive))
    return arms


def identity(joint: JointSpace, arms: list[Arm]) -> dict[str, Any]:
    """What a joint folder belongs to: the joint space (base resolved), every model's fingerprint and weights."""
    return {"space": stable_hash({**joint.model_dump(mode="json"), "base": joint.base_space().fingerprint()}),
            "models": {a.name: a.net.fingerprint for a in arms},
            "weights": {a.name: a.net.weights_sha256 for a in arms}}


@dataclass
class JointResult:
    """A joint search's merged front and each model's search result."""

    front: pd.DataFrame  # cheapest first: model, steps, checkpoint, fingerprint, genome, widths, proxy, share, cost
    results: dict[str, SearchResult] = field(default_factory=dict)  # per model
    hypervolume: float = math.nan


def run_joint(joint: JointSpace, arms: list[Arm], out: str | Path, *, resume: bool = False, **options: Any
              ) -> JointResult:
    """Run (or resume) every model's width search under ``out/models/`` and merge the fronts (module docstring)."""
    check_run_options(**options)  # the single search's check, before joint.json or a lock is written
    out = check_run_folder(out, kind="joint search")
    ident = identity(joint, arms)

    def differing(key: str, saved_value: Any) -> str:
        # per model where the key maps models to values (fingerprints, weights): only the models that changed
        now = ident[key]
        if isinstance(saved_value, dict) and isinstance(now, dict):
            models = [m for m in sorted(set(saved_value) | set(now)) if saved_value.get(m) != now.get(m)]
            return ", ".join(f"model {m!r}: {short(saved_value.get(m), 24)} then, {short(now.get(m), 24)} now"
                             for m in models)
        return f"saved {clip(str(saved_value), 200)}, now {clip(str(now), 200)}"

    def describe(saved, diff):
        # only what differs: the saved and the new value of each differing key (identical dicts said nothing)
        shown = "; ".join(f"{k}: {differing(k, saved.get(k))}" for k in diff)
        hint = (" (the joint space or its base space changed: resume with the same --space, or start a new --out)"
                if "space" in diff else "")
        return f"it holds a joint search of other {' and '.join(diff)} ({shown}){hint}"

    def claim() -> None:
        claim_folder(out, manifest="joint.json", kind=JOINT_KIND, what="joint search", identity=ident, resume=resume,
                     describe=describe, require_empty=True)

    with start_under_lock(out, claim, what="joint search", kind="joint search"):
        if not (out / "joint.json").exists():
            write_manifest(out / "joint.json", kind=JOINT_KIND, version=JOINT_VERSION, identity=ident,
                           joint=joint.model_dump(mode="json"),
                           arms={a.name: {"checkpoint": a.checkpoint, "steps": a.steps, "scale": a.scale,
                                          "exhaustive": a.exhaustive} for a in arms})
    results = {}
    for a in arms:
        sub = out / "models" / a.name
        results[a.name] = a.prepared.run(sub, resume=resume and (sub / "search.json").exists(), **options)
    front = merge_fronts(out, arms)
    return JointResult(front=front, results=results, hypervolume=_hv(front))


def _hv(front: pd.DataFrame) -> float:
    rows = front.to_dict(orient="records")
    return hypervolume(rows, quality="proxy", ref=reference_point([r["proxy"] for r in rows])) if rows else math.nan


def merge_fronts(out: str | Path, arms: list[Arm]) -> pd.DataFrame:
    """The joint front from every model's evaluation log (on the joint cost axis); writes front.csv/front.json."""
    out = Path(out)
    rows = []
    for i, a in enumerate(arms):
        run = load_search(out / "models" / a.name)
        for r in (run.log.to_dict(orient="records") if run.log is not None else []):
            if not r["valid"] or not math.isfinite(float(r["proxy"])):
                continue
            genome = parse_genome(r["genome"])
            plan = a.space.decode(genome)
            share = float(a.costs.share(plan)) * a.scale
            if share > a.space.budget * a.scale + SHARE_TOL:
                continue
            rows.append({"model": a.name, "steps": a.steps, "checkpoint": a.checkpoint,
                         "fingerprint": a.net.fingerprint, "genome": (i, *genome),
                         "widths": tuple(plan.widths), "proxy": float(r["proxy"]), "share": share,
                         "cost": float(a.costs.plan_cost(plan)),
                         **({"cached": plan.cached, "cache_level": plan.cache_level} if plan.cached else {})})
    front = pareto_front(rows, quality="proxy")
    cols = ["model", "steps", "checkpoint", "fingerprint", "genome", "widths", "proxy", "share", "cost"]
    if any(m.get("cached") for m in front):  # reuse genes: which steps are cached (a front without any keeps its files)
        cols += ["cached", "cache_level"]
    table = pd.DataFrame(front, columns=cols)
    write_front_files(out, flat_front(table), {
        "kind": JOINT_FRONT_KIND, "schema_version": JOINT_VERSION,
        "axes": "proxy against the teacher's full width; MACs share of the teacher's full-width schedule",
        "models": {a.name: a.steps for a in arms},
        "members": [{**m, "genome": list(m["genome"]), "widths": list(m["widths"]),
                     **({"cached": list(m["cached"])} if m.get("cached") else {})} for m in front]})
    return table


def flat_front(table: pd.DataFrame) -> pd.DataFrame:
    """A joint front table as its CSV files hold it: genome and widths as space-separated text."""
    flat = table.assign(genome=table["genome"].map(lambda g: " ".join(map(str, g))),
                        widths=table["widths"].map(lambda w: " ".join(f"{x:g}" for x in w)))
    if "cached" in flat:
        flat["cached"] = flat["cached"].map(lambda c: " ".join(str(int(x)) for x in c) if isinstance(c, tuple) else "")
    return flat


@dataclass
class JointRun:
    """A joint search folder read back: its joint space, models and merged front."""

    folder: Path
    joint: JointSpace
    meta: dict[str, Any]
    front: pd.DataFrame


def read_joint_manifest(folder: str | Path) -> dict[str, Any]:
    """A joint search folder's ``joint.json``; a one-line DDSMError if it is unreadable or not a joint search's."""
    return read_manifest(Path(folder) / "joint.json", kind=JOINT_KIND, what="joint search")


def saved_joint(folder: str | Path) -> JointSpace:
    """The joint space a joint search folder was started with (its ``joint.json``), validated."""
    path = Path(folder) / "joint.json"
    return validate(JointSpace, read_joint_manifest(folder).get("joint"), source=str(path))


class JointMember(_Frozen):
    """One member of a joint front as ``front.json`` holds it: validated on reading (the file may have been edited)."""

    model: str  # the teacher or a student of this joint search
    steps: int = Field(gt=0)  # the model's sampling steps
    checkpoint: str  # the model's checkpoint, as joint.json's arms record it
    fingerprint: str  # the model's architecture
    genome: tuple[int, ...]  # (model index, width genes)
    widths: tuple[float, ...]  # one width per step, each in (0, 1]
    proxy: float  # the quality (finite: NaN and infinities are refused by the config base)
    share: float = Field(ge=0.0)  # MACs share of the teacher's full-width schedule
    cost: float = Field(ge=0.0)  # MACs of the schedule
    cached: tuple[bool, ...] | None = None  # reuse genes: the cached steps (None: every step full)
    cache_level: int | None = Field(None, ge=0)  # with cached: where the backbone cuts a cached call

    def plan(self) -> StepPlan:
        """The member's schedule: widths and cached steps."""
        return StepPlan(self.widths, cached=self.cached, cache_level=self.cache_level)

    @model_validator(mode="after")
    def _consistent(self) -> "JointMember":
        if len(self.widths) != self.steps:
            raise ValueError(f"{len(self.widths)} widths for a {self.steps}-step model")
        bad = [w for w in self.widths if not 0.0 < w <= 1.0]
        if bad:
            raise ValueError(f"widths must lie in (0, 1], got {short(bad)}")
        if self.cached is not None:
            try:
                self.plan()
            except DDSMError as e:
                raise ValueError(str(e)) from None
        return self


def _check_member(doc: Any, i: int, arms: dict[str, Any], where: str) -> dict[str, Any]:
    """Member ``i`` of ``front.json`` validated against the joint search's models, or a one-line DDSMError."""
    if not isinstance(doc, dict) or doc.get("model") not in arms:
        name = doc.get("model") if isinstance(doc, dict) else doc
        raise DDSMError(f"{where}: member {i} names model {clip(repr(name), 60)}, not one of this joint search's "
                        f"models ({', '.join(sorted(arms)) or 'none'}); was the file edited?")
    m = validate(JointMember, doc, source=f"{where}: member {i}")
    arm = arms[m.model] if isinstance(arms[m.model], dict) else {}
    for key in ("checkpoint", "steps"):
        if arm.get(key) != getattr(m, key):
            raise DDSMError(f"{where}: member {i} gives {key} {clip(repr(getattr(m, key)), 80)}, but the joint search "
                            f"ran model {m.model!r} with {clip(repr(arm.get(key)), 80)}; was the file edited?")
    row = {**m.model_dump(), "genome": tuple(m.genome), "widths": tuple(m.widths)}
    if m.cached is None:  # a front without cached steps reads back as it always did
        row.pop("cached"), row.pop("cache_level")
    return row


def member_plan(member: dict[str, Any]) -> StepPlan:
    """The schedule of a joint front member (a row of :attr:`JointRun.front`): widths and any cached steps."""
    cached = member.get("cached")
    cached = tuple(cached) if isinstance(cached, (tuple, list)) else None
    return StepPlan(tuple(member["widths"]), cached=cached, cache_level=int(member["cache_level"]) if cached else None)


def load_joint(folder: str | Path) -> JointRun:
    """Read a joint search folder; a one-line DDSMError if it is not one or has no front yet."""
    folder = Path(folder)
    if not (folder / "joint.json").is_file():
        raise DDSMError(f"{str(folder)!r} holds no joint search (no joint.json); give the --out folder of "
                        "`ddsm search-steps`")
    meta = read_joint_manifest(folder)
    if not (folder / "front.json").is_file():
        raise DDSMError(f"the joint search in {str(folder)!r} has no front yet; continue it with "
                        f"`ddsm search-steps --out {folder} --resume`")
    doc = read_front(folder, kind=JOINT_FRONT_KIND, what="joint front")
    if doc is None or not doc.get("members") or not isinstance(doc["members"], list):
        raise DDSMError(f"{str(folder / 'front.json')!r} is not a joint front with members")
    arms = meta.get("arms") if isinstance(meta.get("arms"), dict) else {}
    where = repr(str(folder / "front.json"))
    front = pd.DataFrame([_check_member(m, i, arms, where) for i, m in enumerate(doc["members"], start=1)])
    return JointRun(folder=folder, joint=validate(JointSpace, meta["joint"], source=str(folder / "joint.json")),
                    meta=meta, front=front)
