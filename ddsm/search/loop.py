"""The search loop: NSGA-II ask/tell over width schedules, cached, its state saved every generation, resumable.

One generation: ``ask`` NSGA-II for genomes; answer those already in the
evaluation log from it and send the rest to the runner (serial or Ray);
append the new rows to the log; hand F and G to pymoo (``StaticProblem`` +
``Evaluator``); ``tell``; then write the Pareto front and the search state.
Generation 0 is the seeded first population; the seeding probes are logged
as generation -1.

The run folder (``out_dir``) and its files are :mod:`ddsm.search.folder`'s.

Resume: restore ``state.json`` (algorithm re-bound to the problem, generator
state restored) and continue; the generation that was cut short is asked
again, gets the same genomes, and finds the ones already evaluated in the
log. An interrupted-and-resumed search therefore ends with the same front and
log as an uninterrupted one, given an evaluator that returns the same
numbers for the same candidates (with a batched real evaluator: up to float
rounding, unless ``chunk_size`` is 1).
"""

from __future__ import annotations

import inspect
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from pymoo.core.evaluator import Evaluator
from pymoo.core.termination import NoTermination
from pymoo.problems.static import StaticProblem
from tqdm.auto import tqdm

from ddsm.cost.model import CostModel
from ddsm.errors import DDSMError
from ddsm.plan import StepPlan
from ddsm.search.folder import SearchFolder
from ddsm.search.front import front_frame, hypervolume, pareto_front, reference_point
from ddsm.search.log import LEADING, TRAILING, EvaluationLog, genome_key, uncond_text, widths_text
from ddsm.search.problem import WidthProblem, build_algorithm
from ddsm.runfolder import check_run_folder, start_under_lock
from ddsm.search.runners import EvaluatorFactory, Runner, check_runner_options, make_runner
from ddsm.search.seeding import initial_population, sensitivity_probes
from ddsm.search.staged import JUDGE, SCREEN, StagedDecode, promote
from ddsm.search.config import SearchConfig
from ddsm.search.state import load_state, restore, save_state

SEED_GENERATION = -1  # generation recorded for the seeding probes


@dataclass
class SearchResult:
    """What a search produced (everything is also in ``out_dir``)."""

    out_dir: Path
    front: pd.DataFrame  # non-dominated schedules within budget, cheapest first
    evaluations: pd.DataFrame  # the whole evaluation log
    generations: int  # generations finished (0-based count: the last one is generations - 1)
    hypervolume: float  # of the front, against the run's fixed reference point
    history: list[dict] = field(default_factory=list)  # per-generation statistics
    evaluated: int = 0  # evaluations computed by this call
    cached: int = 0  # genomes answered from the log by this call
    sharing: dict | None = None  # the evaluators' denoiser work in this call (SharingStats fields), if counted
    #: per stage ('screen', 'judge'): candidates scored by this call and their summed worker seconds
    stages: dict = field(default_factory=dict)


def saved_fractions(sharing: Mapping[str, int] | None) -> dict[str, float]:
    """Shares of denoiser evaluations avoided: by all sharing (prefixes + trajectory cache), by the cache alone."""
    if not sharing or not sharing.get("naive_image_evals"):
        return {}
    ran = sharing["image_evals"]
    out = {"denoiser_saved": 1.0 - ran / sharing["naive_image_evals"]}
    if sharing.get("shared_image_evals"):
        out["trajectory_cache_saved"] = 1.0 - ran / sharing["shared_image_evals"]
    return out


class _Evaluations:
    """Cache-first evaluation of genomes: the log answers what it knows, the runner the rest.

    With a screen (two-stage evaluation, :mod:`ddsm.search.staged`), work
    items are genomes with their stage appended; offspring generations are
    screened, then the promoted genomes judged, and their rows join the log
    together at the end of the generation (an interrupted generation is
    screened again on resume, which gives the same promotions).
    """

    def __init__(self, problem: WidthProblem, log: EvaluationLog, runner: Callable[[], Runner]) -> None:
        self.problem, self.log, self._runner = problem, log, runner
        self.quality = problem.space.objectives.quality
        self.screen = problem.space.screen
        self.requested = self.hits = self.computed = 0
        self.seconds = 0.0
        # per stage: genomes scored and the summed per-candidate seconds the workers reported
        self.stage_counts = {"screen": 0, "judge": 0}
        self.stage_seconds = {"screen": 0.0, "judge": 0.0}

    def __call__(self, genomes: Sequence[Sequence[int]], *, generation: int) -> list[dict]:
        keys = [genome_key(g) for g in genomes]
        todo: dict[str, tuple[int, ...]] = {}
        for k, g in zip(keys, genomes):
            if k not in self.log and k not in todo:
                todo[k] = tuple(int(x) for x in g)
        self.requested += len(keys)
        self.hits += len(keys) - len(todo)
        if todo:
            t0 = time.perf_counter()
            try:
                if self.screen is not None and generation >= 1:
                    self._screened(list(todo.values()), generation)
                else:
                    self._logged_in_chunks(list(todo.values()), generation)
            finally:
                self.log.flush()
            self.computed += len(todo)
            self.seconds += time.perf_counter() - t0
        return [self.log.get(k) for k in keys]

    def _logged_in_chunks(self, genomes_todo: list[tuple[int, ...]], generation: int) -> None:
        waiting: dict[int, list[dict]] = {}
        next_start = 0
        staged = self.screen is not None

        def on_result(start: int, rows: list[dict]) -> None:
            # Rows join the log strictly in input order, a whole chunk at a time, so the
            # logged part of an interrupted generation is always a prefix of whole chunks.
            nonlocal next_start
            waiting[start] = rows
            while next_start in waiting:
                chunk = waiting.pop(next_start)
                self.log.add([self._row(genomes_todo[next_start + i], r, generation,
                                        **({"screen": math.nan, "promoted": True} if staged else {}))
                              for i, r in enumerate(chunk)])
                next_start += len(chunk)

        items = [(*g, JUDGE) for g in genomes_todo] if staged else genomes_todo
        rows = self._runner()(items, on_result=on_result)
        self._count("judge", rows)

    def _screened(self, genomes: list[tuple[int, ...]], generation: int) -> None:
        run, sc = self._runner(), self.screen
        screened = run([(*g, SCREEN) for g in genomes])
        self._count("screen", screened)
        X = np.asarray(genomes, dtype=np.int64)
        shares = self.problem.share(X)
        picked = promote(shares, [r["screen"] for r in screened], [r["valid"] for r in screened],
                         [genome_key(g) for g in genomes], low=self.problem.cheapest_share, budget=self.problem.space.budget,
                         bins=sc.bins, per_bin=sc.promote)
        judged = dict(zip(picked, run([(*genomes[i], JUDGE) for i in picked]))) if picked else {}
        self._count("judge", list(judged.values()))
        rows = []
        for i, (g, r) in enumerate(zip(genomes, screened)):
            extra = {"screen": float(r["screen"]), "promoted": i in judged,
                     "screen_seconds": float(r.get("seconds", math.nan))}
            if i in judged:
                rows.append(self._row(g, judged[i], generation, **extra))
                continue
            why = r.get("error") or f"screened out by {sc.metric} (not among the {sc.promote} best of its cost bin)"
            rows.append(self._row(g, {**{k: v for k, v in r.items() if k != "screen"}, self.quality: math.inf,
                                      "valid": False, "error": why}, generation, **extra))
        self.log.add(rows)

    def _count(self, stage: str, rows: list[dict]) -> None:
        self.stage_counts[stage] += len(rows)
        self.stage_seconds[stage] += sum(float(r.get("seconds", 0.0)) for r in rows)

    def _row(self, genome: tuple[int, ...], result: dict, generation: int, **extra: Any) -> dict:
        X = np.asarray([genome], dtype=np.int64)
        q, valid = float(result[self.quality]), bool(result["valid"])
        F, G = self.problem.objectives(X, [q], [valid])
        row = {"generation": generation, "genome": genome_key(genome),
               "widths": widths_text(self.problem.space.genes_to_widths(genome)),
               **_resolution_column(self.problem.space, genome), **_guidance_column(self.problem.space, genome),
               **_reuse_column(self.problem.space, genome),
               self.quality: q, "valid": valid,
               "cost": float(self.problem.cost(X)[0]), "share": float(F[0, 1]), "constraint": float(G[0, 0]),
               "seconds": float(result.get("seconds", math.nan)), "worker": str(result.get("worker", ""))}
        row.update(extra)
        reserved = set(LEADING) | set(TRAILING) | {self.quality} | set(extra)
        for k, v in result.items():
            if k not in reserved:
                row[k] = v
            elif k not in row:  # pragma: no cover - every reserved key is set above
                row[f"eval_{k}"] = v
        return row


def _guidance_column(space: SearchConfig, genome: Sequence[int]) -> dict:
    uncond = space.genes_to_uncond(genome)
    return {} if uncond is None else {"uncond_widths": uncond_text(uncond)}


def _reuse_column(space: SearchConfig, genome: Sequence[int]) -> dict:
    cached = space.genes_to_cached(genome)
    return {} if cached is None else {"cached": " ".join(str(int(c)) for c in cached)}


def _resolution_column(space: SearchConfig, genome: Sequence[int]) -> dict:
    sides = space.genes_to_resolutions(genome)
    return {} if sides is None else {"resolutions": " ".join(str(r) for r in sides)}


def run_search(
    space: SearchConfig,
    *,
    evaluator_factory: EvaluatorFactory | None = None,
    costs: CostModel | Mapping,
    out_dir: str | Path,
    runner: str | Runner = "serial",
    workers: int = 1,
    address: str | None = None,
    resume: bool = False,
    progress: bool = True,
    supernet: str | None = None,
    weights: str | None = None,
    device: str = "auto",
    chunk_size: int = 4,
    ray_options: Mapping[str, Any] | None = None,
    transition_seeds: Sequence[Sequence[int]] = (),
) -> SearchResult:
    """Search a width per sampling step under ``space.budget``; see the module docstring.

    ``evaluator_factory(device=...)`` builds the evaluator (once per worker);
    ``costs`` prices one denoiser call at each width (and side): a
    :class:`~ddsm.cost.CostModel` in the unit of ``space.objectives.cost``, or
    a mapping ``{width: cost}`` / ``{(width, side): cost}``; ``supernet`` is
    the checkpoint's fingerprint and ``weights`` its file's sha256, recorded so a
    resume with another supernet, or other weights in its place, is refused. ``runner`` is ``'serial'``, ``'ray'`` (``workers`` actors,
    local Ray or ``address``; ``ray_options`` go to :class:`RayRunner`) or a
    ready :class:`Runner`, which is then not closed here. ``transition_seeds``
    (resolution spaces) are transition genes the first population tries, e.g.
    the power-spectrum rule's (:func:`ddsm.search.setup.spectrum_transitions`).
    """
    out = check_run_folder(out_dir, kind="search")
    folder = SearchFolder(out)
    problem = WidthProblem(space, costs)
    problem.check_budget()
    quality = space.objectives.quality
    identity = folder.identity(space, supernet, problem.costs, weights)
    start = start_under_lock(out, lambda: folder.claim(identity, resume=resume), what="search", kind="search")
    # every runner option is checked before the folder is written
    _check_runner(runner, workers=workers, chunk_size=chunk_size, address=address, device=device,
                  ray_options=ray_options)
    if isinstance(runner, str) and evaluator_factory is None:
        raise DDSMError("run_search needs an evaluator_factory (or a ready Runner)")
    if not isinstance(runner, str):
        # every width, if genes allow, and a growth at every transition gene's step
        probe = space.guided(tuple(i % (space.full_index + 1) for i in range(space.n_genes)),
                             tuple(i % (space.full_index + 2) for i in range(space.n_guidance_genes)) or None,
                             tuple(i % 2 for i in range(space.n_reuse_genes)) or None  # cached steps decode too
                             ) + tuple(range(1, space.n_resolution_genes + 1))
        try:
            decoded = runner.decode((*probe, JUDGE)).plan if space.screen is not None else runner.decode(probe)
        except (DDSMError, AttributeError, TypeError, ValueError):
            decoded = None  # a decode of another layout (a staged one for a plain space, or the other way round)
        if runner.quality != quality or decoded is None or StepPlan.of(decoded) != space.decode(probe):
            raise DDSMError(f"the runner was built for another search space (quality {runner.quality!r}, decode) than "
                            f"this one (quality {quality!r}); build it with decode=space.decode (with a screen: "
                            "decode=ddsm.search.staged.StagedDecode(space.decode))")

    with start:
        made: list[Runner] = []

        def sharing() -> dict | None:
            active = made[0] if made else (None if isinstance(runner, str) else runner)
            return active.sharing() if active is not None else None

        def get_runner() -> Runner:
            if not isinstance(runner, str):
                return runner
            if not made:
                decode = space.decode if space.screen is None else StagedDecode(space.decode)
                made.append(make_runner(runner, evaluator_factory, decode=decode, quality=quality,
                                        chunk_size=chunk_size, workers=workers, address=address, device=device,
                                        **dict(ray_options or {})))
            return made[0]

        try:
            get_runner()  # a runner that cannot start (no cluster, too few GPUs) refuses before the folder is written
            folder.start(space, identity, problem.costs)
        except BaseException:
            for r in made:
                r.close()
            raise
        log = folder.log(space)
        evaluate = _Evaluations(problem, log, get_runner)
        state_path = folder.state_path
        meta = {"space": identity["space"], "supernet": supernet, "objectives": space.objectives.model_dump(),
                "budget": space.budget, "full_cost": problem.full_cost}
        bar = None
        try:
            algorithm = None
            history: list[dict] = []
            hv_ref: tuple[float, float] | None = None
            generation = 0
            if resume and state_path.exists():
                state = load_state(state_path)
                algorithm = build_algorithm(space)
                algorithm.setup(problem, seed=space.seed, termination=NoTermination())
                restore(algorithm, problem, state)
                generation = int(state["generation"]) + 1
                history = list(state.get("history", []))
                hv_ref = tuple(state["hv_ref"]) if state.get("hv_ref") else None
            else:
                def score(genomes: list[tuple[int, ...]]) -> list[float]:
                    rows = evaluate(genomes, generation=SEED_GENERATION)
                    return [r[quality] if r["valid"] else math.inf for r in rows]

                if progress and space.seeding.sensitivity:
                    tqdm.write(f"seeding: {len(sensitivity_probes(space))} sensitivity probes")
                X0 = initial_population(problem, score=score, transitions=transition_seeds)
                algorithm = build_algorithm(space, sampling=X0)
                algorithm.setup(problem, seed=space.seed, termination=NoTermination())

            bar = tqdm(total=space.generations, initial=min(generation, space.generations), desc="search", unit="gen",
                       disable=not progress)
            while generation < space.generations:
                pop = algorithm.ask()
                if pop is None or len(pop) == 0:
                    if progress:
                        tqdm.write(f"generation {generation}: NSGA-II cannot make new distinct offspring; stopping early")
                    break
                requested, hits, t0 = evaluate.requested, evaluate.hits, time.perf_counter()
                computed0, secs0 = evaluate.computed, evaluate.seconds
                X = np.asarray(pop.get("X"), dtype=np.int64)
                rows = evaluate(X, generation=generation)
                F, G = problem.objectives(X, [r[quality] for r in rows], [r["valid"] for r in rows])
                Evaluator().eval(StaticProblem(problem, F=F, G=G), pop)
                algorithm.tell(infills=pop)

                if hv_ref is None:
                    hv_ref = reference_point([r[quality] for r in log.rows if r["generation"] <= 0 and r["valid"]])
                feasible = log.feasible(space.budget)
                front = pareto_front(feasible, quality=quality)
                hv = hypervolume(front, quality=quality, ref=hv_ref)
                new, secs = evaluate.computed - computed0, evaluate.seconds - secs0
                stats = {"generation": generation, "best": min((r[quality] for r in feasible), default=None),
                         "front": len(front), "hypervolume": hv, "evaluated": new,
                         "cached": (evaluate.hits - hits), "asked": evaluate.requested - requested,
                         "evals_per_s": new / secs if secs > 0 else 0.0, "seconds": time.perf_counter() - t0,
                         **saved_fractions(sharing())}
                history.append(stats)
                folder.write_front(front, quality=quality, meta={**meta, "generation": generation})
                save_state(state_path, algorithm, generation=generation,
                           extra={**{k: identity[k] for k in identity}, "hv_ref": list(hv_ref), "history": history})
                bar.update(1)
                bar.set_postfix_str(_postfix(stats))
                generation += 1
        finally:
            if bar is not None:
                bar.close()
            log.flush()
            try:
                final_sharing = sharing()
            except Exception:  # statistics are a report: a runner that cannot give them must not hide the real error
                final_sharing = None
            for r in made:
                r.close()

        feasible = log.feasible(space.budget)
        front = pareto_front(feasible, quality=quality)
        return SearchResult(sharing=final_sharing,
            out_dir=out, front=front_frame(front, quality=quality), evaluations=log.frame(), generations=generation,
            hypervolume=hypervolume(front, quality=quality, ref=hv_ref) if hv_ref else 0.0, history=history,
            evaluated=evaluate.computed, cached=evaluate.hits,
            stages={k: {"candidates": evaluate.stage_counts[k], "seconds": evaluate.stage_seconds[k]}
                    for k in evaluate.stage_counts})


def _check_runner(runner: str | Runner, *, workers: int, chunk_size: int, address: str | None, device: str | None,
                  ray_options: Mapping[str, Any] | None) -> None:
    if isinstance(runner, str):  # a ready Runner is taken as it is
        check_runner_options(runner, workers=workers, chunk_size=chunk_size, address=address, device=device,
                             gpus_per_worker=(ray_options or {}).get("gpus_per_worker"))


def check_run_options(**options: Any) -> None:
    """Refuse bad runner settings among :func:`run_search`'s ``options`` (its defaults for those not given) before
    anything is written: what a caller that writes a folder of its own first (a joint search) checks."""
    bound = inspect.signature(run_search).bind_partial(**options)
    bound.apply_defaults()
    a = bound.arguments
    _check_runner(a["runner"], workers=a["workers"], chunk_size=a["chunk_size"], address=a["address"],
                  device=a["device"], ray_options=a["ray_options"])


def _postfix(s: dict) -> str:
    best = "-" if s["best"] is None else f"{s['best']:.4g}"
    rate = s["cached"] / s["asked"] if s["asked"] else 0.0
    saved = f" | denoiser saved {s['denoiser_saved']:.0%}" if "denoiser_saved" in s else ""
    return (f"best {best} | front {s['front']} | hv {s['hypervolume']:.4g} | {s['evals_per_s']:.2f} ev/s | "
            f"log hits {rate:.0%}{saved}")
