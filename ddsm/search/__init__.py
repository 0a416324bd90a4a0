"""Search a network width for every sampling step: NSGA-II over a slimmable supernet, under a cost budget.

``SearchSpace`` (YAML) says what is searched; ``run_search`` runs the
cached, checkpointed ask/tell loop with a serial or Ray runner and writes the
Pareto front. Ray is imported only when a Ray runner is built
(``from ddsm.search.ray_runner import RayRunner``, or ``ddsm.search.RayRunner``).
"""

from ddsm.search.loop import SearchResult, run_search
from ddsm.search.problem import WidthProblem, build_algorithm
from ddsm.search.runners import Runner, SerialRunner, make_runner
from ddsm.search.seeding import initial_population, solve_mckp
from ddsm.search.space import SearchSpace, check_widths
from ddsm.search.synthetic import SyntheticEvaluator, SyntheticEvaluatorFactory

__all__ = [
    "RayRunner", "Runner", "SearchResult", "SearchSpace", "SerialRunner", "SyntheticEvaluator",
    "SyntheticEvaluatorFactory", "WidthProblem", "build_algorithm", "check_widths", "initial_population",
    "make_runner", "run_search", "solve_mckp",
]


def __getattr__(name: str):
    # RayRunner on first use only, so importing ddsm.search never imports Ray.
    if name == "RayRunner":
        from ddsm.search.ray_runner import RayRunner

        return RayRunner
    raise AttributeError(f"module 'ddsm.search' has no attribute {name!r}")
