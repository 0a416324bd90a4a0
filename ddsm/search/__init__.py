"""Search a network width for every sampling step: NSGA-II over a slimmable supernet, under a cost budget.

``SearchConfig`` (YAML) says what is searched and how; ``prepare_search``
checks it against a supernet checkpoint and builds the costs and the
evaluator factory; ``run_search`` runs the cached, resumable ask/tell loop
with a serial or Ray runner and writes the search folder
(:mod:`ddsm.search.folder`, read back with ``load_search``). Ray is imported
only when a Ray runner is built (``from ddsm.search.ray_runner import
RayRunner``, or ``ddsm.search.RayRunner``). ``JointSpace`` / ``run_joint``
search the step count too: a teacher and its distilled students
(:mod:`ddsm.search.joint`).

``__all__`` is this package's public API (documented in experiments/README.md,
"Python API"); the seeding solver and the NSGA-II assembly are internals of
their modules.
"""

from ddsm.search.config import SearchConfig, check_widths
from ddsm.search.shipped import shipped_spaces
from ddsm.search.folder import SearchRun, load_search
from ddsm.search.joint import JointRun, JointSpace, load_joint, prepare_joint, run_joint
from ddsm.search.loop import SearchResult, run_search
from ddsm.search.problem import WidthProblem
from ddsm.search.runners import Runner, SerialRunner, make_runner
from ddsm.search.setup import PreparedSearch, prepare_search
from ddsm.search.synthetic import SyntheticEvaluator, SyntheticEvaluatorFactory

__all__ = [
    "JointRun", "JointSpace", "PreparedSearch", "RayRunner", "Runner", "SearchConfig", "SearchResult", "SearchRun",
    "SerialRunner", "SyntheticEvaluator", "SyntheticEvaluatorFactory", "WidthProblem", "check_widths", "load_joint",
    "load_search", "make_runner", "prepare_joint", "prepare_search", "run_joint", "run_search", "shipped_spaces",
]


def __getattr__(name: str):
    # RayRunner on first use only, so importing ddsm.search never imports Ray.
    if name == "RayRunner":
        from ddsm.search.ray_runner import RayRunner

        return RayRunner
    raise AttributeError(f"module 'ddsm.search' has no attribute {name!r}")
