"""The cost model: one key format, one JSON form, one way to sum a schedule, the same numbers everywhere."""

from __future__ import annotations

import numpy as np
import pytest

from ddsm.cost import CostModel, CostTable
from ddsm.errors import DDSMError
from ddsm.io import stable_hash
from ddsm.plan import StepPlan
from ddsm.search import SearchConfig, WidthProblem

WIDTHS = (0.25, 0.5, 0.75, 1.0)
COSTS = {0.25: 1 / 16, 0.5: 1 / 4, 0.75: 9 / 16, 1.0: 1.0}
SIDED = {(w, r): w * w * r * r for w in WIDTHS for r in (8, 16)}


def test_json_form_round_trips_in_both_key_formats():
    flat = CostModel.from_mapping(COSTS, WIDTHS)
    assert flat.to_json() == {"0.25": 1 / 16, "0.5": 1 / 4, "0.75": 9 / 16, "1.0": 1.0}
    assert CostModel.from_json(flat.to_json()) == flat
    sided = CostModel.from_mapping(SIDED, WIDTHS, (8, 16))
    assert list(sided.to_json())[:3] == ["0.25@8", "0.25@16", "0.5@8"]  # width-major
    assert CostModel.from_json(sided.to_json()) == sided


def test_fingerprint_is_the_hash_of_the_width_major_costs():
    sided = CostModel.from_mapping(SIDED, WIDTHS, (8, 16))
    assert sided.fingerprint() == stable_hash([float(SIDED[w, r]).hex() for w in WIDTHS for r in (8, 16)])


def test_a_plan_costs_the_same_in_the_model_and_in_the_search_problem():
    rng = np.random.default_rng(0)
    space = SearchConfig(sampler={"steps": 6}, segments=3, population=4)
    problem = WidthProblem(space, COSTS)
    for g in rng.integers(0, 4, size=(20, 3)):
        assert problem.costs.plan_cost(space.decode(g)) == problem.cost(g[None])[0]
        assert problem.costs.share(space.decode(g)) == problem.share(g[None])[0]
    rspace = SearchConfig(sampler={"steps": 6}, segments=3, population=4, resolutions=(8, 16))
    rproblem = WidthProblem(rspace, SIDED)
    for g in rng.integers(0, 4, size=(20, 4)):
        g[3] = rng.integers(0, 6)
        assert rproblem.costs.plan_cost(rspace.decode(g)) == rproblem.cost(g[None])[0]


def test_lookups_and_refusals():
    m = CostModel.from_mapping(SIDED, WIDTHS, (8, 16))
    assert m.call(0.5, 8) == 16 and m.call(0.5) == 64  # no side: the image size (the largest)
    assert m.plan_cost(StepPlan((0.5, 1.0), (8, 16))) == 16 + 256 and m.full_cost(3) == 3 * 256
    with pytest.raises(DDSMError, match="no cost for width 0.3"):
        m.call(0.3)
    with pytest.raises(DDSMError, match="at side 4"):
        m.call(0.5, 4)
    with pytest.raises(DDSMError, match="no cost for width 0.5 at resolution 16"):
        CostModel.from_mapping({(0.5, 8): 1.0, (1.0, 8): 1.0, (1.0, 16): 2.0}, (0.5, 1.0), (8, 16))
    with pytest.raises(DDSMError, match="positive and finite"):
        CostModel.from_mapping({0.5: 0.0, 1.0: 1.0}, (0.5, 1.0))
    with pytest.raises(DDSMError, match="unknown cost unit"):
        CostModel(widths=(1.0,), sides=(None,), calls=((1.0,),), unit="joules")


def test_a_cost_table_gives_its_own_numbers_as_a_model(random_supernet, tiny_model_config):
    table = CostTable.measure(random_supernet(), tiny_model_config, "cpu", resolutions=[4, 8], repeats=1, warmup=0)
    m = table.cost_model("macs", sides=(4, 8))
    assert all(m.call(w, r) == table.macs(w, r) for w in table.widths for r in (4, 8))
    lat = table.cost_model("latency")
    assert lat.unit == "latency" and lat.call(0.5) == table.latency(0.5)
    assert table.schedule_cost([0.5, 1.0], resolutions=[4, 8]) == m.plan_cost(StepPlan((0.5, 1.0), (4, 8)))
