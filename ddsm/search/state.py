"""The search state: NSGA-II's state after a generation, as JSON (no pickle).

pymoo users report resumed searches that differ from uninterrupted ones
(pymoo issues #558, #574). What must travel for an exact resume, and does:

- the population in survival order: genomes ``X`` (integers), objectives
  ``F``, constraints ``G``, and each member's ``rank`` and ``crowding`` (the
  tournament reads them);
- the algorithm's generation counter ``n_iter`` and evaluation count;
- the state of the numpy ``Generator`` every operator draws from
  (``bit_generator.state``: plain integers, JSON-safe).

On load, a fresh NSGA-II is built from the search space, ``setup`` re-binds
it to the problem (with ``NoTermination``: the loop counts generations), and
the saved state is written into it. The population's F and G are set through
the same ``StaticProblem`` + ``Evaluator`` path as during the search, so the
constraint violations pymoo derives from them are computed the same way.
Floats are written with ``repr`` (exact round trip); non-finite ones as the
strings ``"inf"``, ``"-inf"``, ``"nan"`` so the file stays strict JSON.
The file is replaced atomically after every generation.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
from pymoo.core.evaluator import Evaluator
from pymoo.core.population import Population
from pymoo.problems.static import StaticProblem

from ddsm.errors import DDSMError
from ddsm.io import write_json

STATE_VERSION = 1
STATE_KIND = "ddsm.search_state"


def _enc(x: Any) -> Any:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else repr(x)  # 'inf', '-inf', 'nan'


def _dec(x: Any) -> Any:
    return None if x is None else float(x)


def population_arrays(pop: Population) -> dict[str, Any]:
    """The parts of a population the next generation depends on, as JSON-ready lists."""
    return {
        "X": np.asarray(pop.get("X"), dtype=np.int64).tolist(),
        "F": [[_enc(v) for v in row] for row in np.asarray(pop.get("F"), dtype=np.float64)],
        "G": [[_enc(v) for v in row] for row in np.asarray(pop.get("G"), dtype=np.float64)],
        "rank": [None if ind.get("rank") is None else int(ind.get("rank")) for ind in pop],
        "crowding": [_enc(ind.get("crowding")) for ind in pop],
    }


def evaluated_population(problem, X: np.ndarray, F: np.ndarray, G: np.ndarray) -> Population:
    """A population with F and G set the way the search sets them (StaticProblem + Evaluator)."""
    pop = Population.new(X=np.asarray(X, dtype=np.int64))
    Evaluator().eval(StaticProblem(problem, F=np.asarray(F, dtype=np.float64), G=np.asarray(G, dtype=np.float64)), pop)
    return pop


def save_state(path: str | Path, algorithm, *, generation: int, extra: dict[str, Any]) -> None:
    """Write the algorithm's state after ``generation`` (0-based) atomically."""
    state = {
        "kind": STATE_KIND,
        "schema_version": STATE_VERSION,
        "generation": generation,
        "n_iter": int(algorithm.n_iter),
        "n_eval": int(algorithm.evaluator.n_eval),
        "rng": algorithm.random_state.bit_generator.state,
        "pop": population_arrays(algorithm.pop),
        **extra,
    }
    write_json(path, state)


def load_state(path: str | Path) -> dict[str, Any]:
    """Read a state file written by :func:`save_state`; one-line DDSMError if it is not one."""
    path = Path(path)
    try:
        state = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DDSMError(f"cannot read search state {str(path)!r}: {e}") from None
    if not isinstance(state, dict) or state.get("kind") != STATE_KIND:
        raise DDSMError(f"{str(path)!r} is not a ddsm search state file")
    if state.get("schema_version") != STATE_VERSION:
        raise DDSMError(f"search state {str(path)!r} has schema_version {state.get('schema_version')!r}; "
                        f"this ddsm reads {STATE_VERSION}")
    return state


def restore(algorithm, problem, state: dict[str, Any]) -> None:
    """Write ``state`` into an algorithm that was just ``setup`` on ``problem``."""
    p = state["pop"]
    X = np.asarray(p["X"], dtype=np.int64).reshape(-1, problem.n_var)
    F = np.asarray([[_dec(v) for v in row] for row in p["F"]], dtype=np.float64).reshape(-1, problem.n_obj)
    G = np.asarray([[_dec(v) for v in row] for row in p["G"]], dtype=np.float64).reshape(-1, problem.n_ieq_constr)
    pop = evaluated_population(problem, X, F, G)
    for ind, rank, crowding in zip(pop, p["rank"], p["crowding"]):
        if rank is not None:
            ind.set("rank", int(rank))
        if crowding is not None:
            ind.set("crowding", _dec(crowding))
    algorithm.pop = pop
    algorithm.off = None
    algorithm.is_initialized = True
    algorithm.n_iter = int(state["n_iter"])
    algorithm.evaluator.n_eval = int(state["n_eval"])
    algorithm.start_time = time.time()
    algorithm.random_state.bit_generator.state = state["rng"]
    algorithm._set_optimum()
