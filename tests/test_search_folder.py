"""The search folder: written and read by one module; its front comes back as schedules; foreign folders refused."""

from __future__ import annotations

import json

import pytest

from ddsm.errors import DDSMError
from ddsm.schedule import Schedule
from ddsm.search import SearchConfig, SyntheticEvaluatorFactory, load_search, run_search
from ddsm.search.folder import SearchFolder, generations_finished, read_state

COSTS = {0.25: 1 / 16, 0.5: 1 / 4, 0.75: 9 / 16, 1.0: 1.0}


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    out = tmp_path_factory.mktemp("folder") / "search"
    space = SearchConfig(sampler={"steps": 4}, segments=2, population=4, generations=2, budget=0.6,
                         seeding={"n_random": 1, "knapsack_budgets": 2})
    run_search(space, evaluator_factory=SyntheticEvaluatorFactory(), costs=COSTS, out_dir=out, progress=False,
               supernet="net-a", device="cpu")
    return out, space


def test_what_the_loop_writes_the_reader_reads(search):
    out, space = search
    run = load_search(out)
    meta = json.loads((out / "search.json").read_text())
    assert run.space == space and run.meta == meta and run.generations_finished == 2 == generations_finished(out)
    assert run.costs.to_json() == meta["cost_per_width"] == {"0.25": 1 / 16, "0.5": 1 / 4, "0.75": 9 / 16, "1.0": 1.0}
    assert read_state(out)["generation"] == 1 and read_state(out.parent / "nothing") is None
    front = json.loads((out / "front.json").read_text())["members"]
    assert [list(w) for w in run.front["widths"]] == [m["widths"] for m in front]


def test_the_front_comes_back_as_schedules(search, tiny_model_config):
    out, _ = search
    run = load_search(out)
    schedules = run.schedules(tiny_model_config, predicted=[{"macs": float(i)} for i in range(len(run.front))])
    assert all(isinstance(s, Schedule) for s in schedules) and len(schedules) == len(run.front)
    for i, (s, m) in enumerate(zip(schedules, run.front.to_dict(orient="records"))):
        assert s.widths == m["widths"] and s.quality == {"proxy": m["proxy"]}
        assert s.predicted == {"cost_share": m["share"], "macs": float(i)}
        assert s.provenance["front_rank"] == i + 1 and s.provenance["search"] == str(out.resolve())
        s.check(tiny_model_config)


def test_claim_refuses_a_fresh_start_a_missing_search_and_another_identity(search):
    out, space = search
    folder = SearchFolder(out)
    identity = json.loads((out / "search.json").read_text())
    identity = {k: identity[k] for k in ("space", "supernet", "costs")}
    folder.claim(identity, resume=True)  # the same search: fine
    with pytest.raises(DDSMError, match="already holds a search; pass --resume"):
        folder.claim(identity, resume=False)
    with pytest.raises(DDSMError, match="holds no search"):
        SearchFolder(out.parent / "empty").claim(identity, resume=True)
    with pytest.raises(DDSMError, match=r"belongs to another search; differs in: supernet net-a \(folder\) vs net-b"):
        folder.claim({**identity, "supernet": "net-b"}, resume=True)
