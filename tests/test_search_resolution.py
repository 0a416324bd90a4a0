"""Resolution as a second gene: encoding, cost, seeding, and a search from the CLI to the exported schedule."""

import json
import warnings

import numpy as np
import pytest

from cli_helpers import TINY_SEARCH_SPACE, assert_bad_input, invoke, write_space
from ddsm.errors import DDSMError
from ddsm.schedule import Schedule
from ddsm.search.problem import WidthProblem, build_algorithm
from ddsm.search.seeding import initial_population
from ddsm.search.config import SearchConfig

SPACE = SearchConfig(resolutions=(4, 8, 16), sampler={"kind": "ddim", "steps": 10}, segments=5, budget=0.6,
                    population=8, seeding={"sensitivity": False, "n_random": 2})
COSTS = {(w, r): w * w * r * r for w in SPACE.widths for r in SPACE.resolutions}


def test_any_genome_decodes_to_a_never_decreasing_resolution_ending_at_full_size():
    rng = np.random.default_rng(0)
    for _ in range(200):
        g = tuple(rng.integers(0, 4, 5)) + tuple(rng.integers(0, 10, 2))
        sides = SPACE.genes_to_resolutions(g)
        assert all(b >= a for a, b in zip(sides, sides[1:])) and sides[-1] == 16
        canon = SPACE.canonical(g)
        assert SPACE.genes_to_resolutions(canon) == sides
        assert SPACE.resolutions_to_genes(sides) == canon[5:]


def test_transition_genes_mark_the_first_step_at_each_larger_side():
    plan = SPACE.decode((3, 3, 3, 3, 3, 2, 7))
    assert plan.resolutions == (4, 4, 8, 8, 8, 8, 8, 16, 16, 16)
    assert SPACE.decode((3, 3, 3, 3, 3, 0, 0)).resolutions == (16,) * 10


def test_cost_is_the_sum_of_each_steps_width_and_side():
    p = WidthProblem(SPACE, COSTS)
    g = (3, 0, 1, 2, 3, 2, 7)
    plan = SPACE.decode(g)
    expected = sum(COSTS[(w, r)] for w, r in zip(plan.widths, plan.resolutions))
    assert p.cost(np.asarray([g]))[0] == pytest.approx(expected)
    assert p.cheapest_genome == (0,) * 5 + (9, 9)
    assert p.cheapest_share == pytest.approx((9 * COSTS[(0.25, 4)] + COSTS[(0.25, 16)]) / (10 * COSTS[(1.0, 16)]))


def test_costs_must_cover_every_width_and_side():
    with pytest.raises(DDSMError, match="no cost for width 0.5 at resolution 8"):
        WidthProblem(SPACE, {k: v for k, v in COSTS.items() if k != (0.5, 8)})


def test_seeding_tries_the_given_transitions_and_offspring_stay_canonical():
    p = WidthProblem(SPACE, COSTS)
    X = initial_population(p, transitions=[(6, 3)])
    assert X.shape == (8, 7)
    assert any(tuple(x[5:]) == (3, 6) for x in X)  # sorted on the way in
    assert all(list(x[5:]) == sorted(x[5:]) for x in X)
    algo = build_algorithm(SPACE, sampling=X)
    from pymoo.core.termination import NoTermination
    from pymoo.problems.static import StaticProblem  # noqa: F401

    algo.setup(p, seed=0, termination=NoTermination())
    pop = algo.ask()  # the seeded population comes back repaired
    assert all(list(x[5:]) == sorted(x[5:]) for x in pop.get("X").astype(int))


@pytest.mark.parametrize("changes,needle", [
    ({"resolutions": [8, 4, 16]}, "strictly ascending"),
    ({"resolutions": [4, 8, 16], "objectives": {"quality": "proxy_linear"}}, "proxy_linear scores width schedules only"),
    ({"resolutions": [4, 8, 16], "seeding": {"transitions": [[1]]}}, "must hold 2 steps"),
])
def test_bad_resolution_spaces_are_refused(tmp_path, changes, needle):
    with pytest.raises(DDSMError, match=needle):
        SearchConfig.load(write_space(tmp_path / "s.yaml", **changes))


def test_cli_search_export_and_sample_with_resolutions(tmp_path, trained_run):
    # Population 8: every uniform width is tried at 8 and growing 4 -> 8 before step 2; the cheapest is low-res.
    space = write_space(tmp_path / "s.yaml", resolutions=[4, 8], population=8, generations=1,
                        seeding={**TINY_SEARCH_SPACE["seeding"], "transitions": [[2]]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the workers stay quiet: the search warns once, in one line
        r = invoke("search", "--space", space, "--checkpoint", trained_run, "--out", tmp_path / "run", "--no-progress")
    assert r.exit_code == 0, r.output
    assert r.output.count("warning: the supernet was trained at resolutions [8]; steps at [4] run training-free") == 1
    front = json.loads((tmp_path / "run" / "front.json").read_text())["members"]
    assert any("resolutions" in m for m in front)
    r = invoke("export", tmp_path / "run", "--checkpoint", trained_run, "--out", tmp_path / "exp", "--repeats", 1,
               "--num", 2, "--no-progress")
    assert r.exit_code == 0, r.output
    files = sorted((tmp_path / "exp").glob("front-*.json"))
    sides = [Schedule.load(f).resolutions for f in files]
    assert any(s is not None and s[0] == 4 for s in sides)
    low = files[[i for i, s in enumerate(sides) if s is not None][0]]
    r = invoke("sample", "--checkpoint", trained_run, "--schedule", low, "--num", 2, "--out", tmp_path / "smp",
               "--no-progress")
    assert r.exit_code == 0, r.output
    r = invoke("plot", tmp_path / "run", "--checkpoint", trained_run, "--out", tmp_path / "fig", "--num", 2)
    assert r.exit_code == 0, r.output


def test_cli_search_refuses_sides_that_do_not_divide_the_image(tmp_path, trained_run):
    space = write_space(tmp_path / "s.yaml", resolutions=[6, 8])
    assert_bad_input(invoke("search", "--space", space, "--checkpoint", trained_run, "--out", tmp_path / "run"),
                     "resolution 6 does not divide the image size 8")
    assert not (tmp_path / "run").exists()
