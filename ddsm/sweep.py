"""Sweeps: many searches (search spaces x budgets x seeds) as Ray Tune trials, resumable, with one results table.

Every trial is one full :func:`~ddsm.search.run_search` with the serial
runner in its own run folder ``SWEEP/runs/<space>-b<budget>-s<seed>``; Ray
Tune places trials on the cluster (``cpus_per_trial`` each, so a 2-core
machine runs two at once) and keeps its own state in ``SWEEP/tune``.

Resuming works at two levels. ``Tuner.restore`` brings back the trials that
had not finished (and those that errored); a restarted trial finds its run
folder and resumes its search from the last finished generation, never
evaluating a schedule already in that search's log. A sweep therefore ends
with the same fronts whether or not it was interrupted.

``SWEEP/sweep.json`` (written before any work) says what the folder holds:
the search spaces (with their fingerprints), budgets, seeds and supernet
fingerprint. A resume with another grid or supernet is refused before
anything changes. ``SWEEP/results.csv`` and ``results.parquet`` hold one row
per trial: its settings, generations, evaluations, front size,
hypervolume, best quality within budget and run folder.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from ddsm.checkpoint import load_supernet
from ddsm.config import validate
from ddsm.errors import DDSMError
from ddsm.io import write_atomic, write_json
from ddsm.runfolder import check_run_folder, claim_folder, hold_folder
from ddsm.search.config import SearchConfig
from ddsm.search.shipped import space_path
from ddsm.search.folder import read_state
from ddsm.search.loop import saved_fractions
from ddsm.search.ray_runner import check_address, start_local_ray, stop_local_ray
from ddsm.search.runners import cores as local_cores
from ddsm.search.setup import prepare_search

SWEEP_VERSION = 1


@dataclass(frozen=True)
class Trial:
    """One search of a sweep: a search space with its budget and seed replaced."""

    space_file: str  # the search-space YAML as given
    budget: float  # replaces the space's budget
    seed: int  # replaces the space's seed

    @property
    def name(self) -> str:
        """Run-folder name: ``<space stem>-b<budget>-s<seed>``."""
        return f"{Path(self.space_file).stem}-b{self.budget:g}-s{self.seed}"

    @cached_property
    def space(self) -> SearchConfig:
        """The trial's validated search space (read once)."""

        base = SearchConfig.load(self.space_file)
        return validate(SearchConfig, {**base.model_dump(mode="json"), "budget": self.budget, "seed": self.seed},
                        source=f"--seed {self.seed} / --budget {self.budget:g} with {Path(self.space_file).name}")


def grid(space_files: Sequence[str], budgets: Sequence[float], seeds: Sequence[int]) -> list[Trial]:
    """Every (space, budget, seed) combination, validated before any trial starts."""
    if not space_files or not budgets or not seeds:
        raise DDSMError("a sweep needs at least one --space, one --budget and one --seed")
    for b in budgets:
        if not 0 < float(b) <= 1:  # nan too
            raise DDSMError(f"--budget {b:g} is outside (0, 1]: a budget is a share of the full-width cost, e.g. 0.5")
    trials = [Trial(str(space_path(f).resolve()), float(b), int(s)) for f in space_files for b in budgets for s in seeds]
    names = [t.name for t in trials]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DDSMError(f"the sweep repeats trials {dupes}: give distinct spaces (by file name), budgets and seeds")
    for t in trials:
        t.space  # a bad file or a budget out of range fails here, in one line
    return trials


def _identity(trials: list[Trial], supernet: str) -> dict[str, Any]:
    return {"supernet": supernet,
            "trials": [{"name": t.name, "space": t.space.fingerprint(), "budget": t.budget, "seed": t.seed}
                       for t in trials]}


def _claim(out: Path, identity: dict, resume: bool) -> None:
    claim_folder(out, manifest="sweep.json", kind="ddsm.sweep", what="sweep", identity=identity, resume=resume,
                 require_empty=True, describe=lambda saved, diff: "it holds another sweep (other spaces, budgets, "
                 "seeds or supernet); start this one in a new folder")


def _run_trial(config: dict) -> None:
    """The Ray Tune trainable: one search, resumed if its run folder already holds one."""
    import torch
    from ray import tune

    # Tune gives each trial `cpus_per_trial` cores; more threads would fight the other trials for them.
    torch.set_num_threads(max(1, int(config["cpus"])))
    trial = Trial(config["space_file"], config["budget"], config["seed"])
    space = trial.space
    run = Path(config["runs"]) / trial.name
    prepared = prepare_search(space, config["checkpoint"], featurenet=config["featurenet"], cost_table=config["cost"])
    res = prepared.run(run, runner="serial", resume=(run / "search.json").exists(), progress=False,
                       device=config["device"])
    quality = space.objectives.quality
    tune.report({"generations": res.generations, "evaluations": len(res.evaluations), "computed": res.evaluated,
                 "front": len(res.front), "hypervolume": res.hypervolume,
                 "best": float(res.front[quality].min()) if len(res.front) else float("nan"),
                 **saved_fractions(res.sharing)})


def run_sweep(space_files: Sequence[str], *, budgets: Sequence[float], seeds: Sequence[int], checkpoint: str,
              out_dir: str | Path, resume: bool = False, address: str | None = None, cpus_per_trial: float = 1.0,
              featurenet: str | None = None, cost: str | None = None, device: str = "cpu",
              verbose: int = 1) -> pd.DataFrame:
    """Run (or resume) a sweep; returns the combined results table (also written to ``out_dir``).

    Without ``address`` a private local Ray is started (loopback only, token auth on, a 0700 folder: see
    :func:`ddsm.search.ray_runner.start_local_ray`). With ``address='HOST:PORT'`` the sweep joins that
    cluster and changes nothing about it: its owner must secure it (token authentication, a firewall).
    ``budgets`` outside (0, 1] and ``cpus_per_trial`` <= 0 or above the cluster's CPUs are refused in one line.
    """

    cores = local_cores()  # what a local Ray declares (passed to it below), affinity respected
    if not cpus_per_trial > 0:  # nan too
        raise DDSMError(f"--cpus-per-trial {cpus_per_trial:g} must be positive (this machine has {cores} cores)")
    if address is None and cpus_per_trial > cores:
        raise DDSMError(f"--cpus-per-trial {cpus_per_trial:g} is more than the {cores} cores of the local Ray: no "
                        f"trial could ever start; use at most {cores}")
    out = check_run_folder(out_dir, kind="sweep").resolve()
    # Tune runs trials in their own working folders: every path a trial reads must be absolute.
    checkpoint, featurenet, cost = (str(Path(p).resolve()) if p is not None and Path(p).exists() else p
                                    for p in (checkpoint, featurenet, cost))
    trials = grid(space_files, budgets, seeds)
    net = load_supernet(checkpoint, device="cpu")

    warned: list[str] = []
    for t in trials:  # everything a trial would refuse is refused here, before Tune starts
        for msg in prepare_search(t.space, checkpoint, featurenet=featurenet, cost_table=cost, net=net).warnings:
            if msg not in warned:
                warned.append(msg)
                print(msg, file=sys.stderr)
    identity = _identity(trials, net.fingerprint)
    _claim(out, identity, resume)
    if address is not None and address != "auto":
        check_address(address, timeout=3.0)
    with hold_folder(out, what="sweep", kind="sweep"):
        _claim(out, identity, resume)  # again under the lock: another process may have started this sweep meanwhile
        import ray
        from ray import tune

        owns = not ray.is_initialized()
        temp = None
        if owns:
            if address is None:  # loopback only, token auth on, a private folder (see start_local_ray)
                temp = start_local_ray(ray, num_cpus=cores)
            else:  # the user's cluster, as it is: securing it is theirs to do
                try:
                    ray.init(address=address, logging_level="warning")
                except (ConnectionError, RuntimeError, TimeoutError) as e:
                    raise DDSMError(f"cannot join the Ray cluster at {address!r}: "
                                    f"{str(e).splitlines()[0] if str(e) else e}") from None
        try:
            total = float(ray.cluster_resources().get("CPU", 0))
            if cpus_per_trial > total + 1e-9:
                raise DDSMError(f"--cpus-per-trial {cpus_per_trial:g} is more than the {total:g} CPUs of the Ray "
                                f"cluster: no trial could ever start; use at most {total:g}")
            # written once Ray runs and every check passed: a refused sweep leaves no sweep.json behind
            write_json(out / "sweep.json", {"kind": "ddsm.sweep", "schema_version": SWEEP_VERSION, **identity,
                                            "checkpoint": str(checkpoint), "cpus_per_trial": cpus_per_trial})
            trainable = tune.with_resources(_run_trial, {"cpu": cpus_per_trial})
            tune_dir = out / "tune"
            if resume and tune.Tuner.can_restore(str(tune_dir)):
                tuner = tune.Tuner.restore(str(tune_dir), trainable=trainable, resume_unfinished=True,
                                           resume_errored=True)
            else:
                # The grid's product is exactly the trials above (checked distinct by grid()).
                space = {"space_file": tune.grid_search(sorted({t.space_file for t in trials})),
                         "budget": tune.grid_search(sorted({t.budget for t in trials})),
                         "seed": tune.grid_search(sorted({t.seed for t in trials})),
                         "runs": str(out / "runs"), "checkpoint": str(checkpoint), "featurenet": featurenet, "cost": cost,
                         "device": device, "cpus": cpus_per_trial}
                tuner = tune.Tuner(trainable, param_space=space,
                                   run_config=tune.RunConfig(name="tune", storage_path=str(out), verbose=verbose))
            tuner.fit()
        finally:
            if temp is not None:
                stop_local_ray(ray, temp)
            elif owns:
                ray.shutdown()
        table = collect(out, trials)
        write_atomic(out / "results.csv", lambda p: table.to_csv(p, index=False))
        write_atomic(out / "results.parquet", lambda p: table.to_parquet(p, index=False))
    return table


def collect(out: Path, trials: list[Trial]) -> pd.DataFrame:
    """One row per trial, read from its run folder (the source of truth, whatever Tune kept)."""
    rows = []
    for t in trials:
        run = out / "runs" / t.name
        row: dict[str, Any] = {"trial": t.name, "space": Path(t.space_file).name, "budget": t.budget, "seed": t.seed,
                               "run": str(run)}
        s = read_state(run)
        if s is not None:
            hist = s.get("history", [])
            last = hist[-1] if hist else {}
            row.update({"generations": int(s.get("generation", -1)) + 1, "front": last.get("front"),
                        "hypervolume": last.get("hypervolume"), "best": last.get("best")})
        else:
            row.update({"generations": 0, "front": None, "hypervolume": None, "best": None})
        rows.append(row)
    return pd.DataFrame(rows)
