"""Cached steps (DeepCache / FORA): a step that reuses the deep features of the last full step.

A plan's ``cached`` marks the steps whose call runs only the outer part of the network at the step's width,
cut at the backbone's ``cache_level``; the first step is always full. What users rely on: a schedule with no
cached step samples exactly as before; the batched evaluator, the trajectory cache and the diffusers bridge
give the loop's samples; the cost counts a cached call's MACs; the search carries one reuse gene per width
gene; bad schedules get one clear line.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ddsm.checkpoint import Supernet
from ddsm.config import ModelConfig, validate
from ddsm.cost.macs import count_cached_macs, count_macs
from ddsm.cost.model import CostModel
from ddsm.diffusion import NoiseSchedule
from ddsm.errors import DDSMError
from ddsm.integrations.diffusers import sample_with_diffusers
from ddsm.nn import build_backbone
from ddsm.plan import StepPlan
from ddsm.samplers import SamplerConfig, generate, make_sampler
from ddsm.samplers.batched import TrajectoryCache, generate_many
from ddsm.schedule import Schedule
from ddsm.search import SearchConfig
from ddsm.search.problem import CanonicalRepair, WidthProblem
from ddsm.search.seeding import initial_population, reuse_interval_seeds

from cli_helpers import assert_bad_input, invoke
from conftest import TINY_T, TINY_UNET, randomise

CONFIG = {"unet": TINY_UNET, "diffusion": {"num_timesteps": TINY_T}}
DDIM = SamplerConfig(kind="ddim", steps=6)
SEEDS = [0, 1, 2, 3, 4]
LEVEL = 1


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    config = validate(ModelConfig, CONFIG)
    return Supernet(randomise(build_backbone(config)).eval(), config, {}, "memory")


def sampler(config: SamplerConfig = DDIM):
    return make_sampler(NoiseSchedule(validate(ModelConfig, CONFIG).diffusion), config)


PLANS = [
    StepPlan((1.0,) * 6),
    StepPlan((1.0,) * 6, cached=(False, True, False, True, False, True), cache_level=LEVEL),
    StepPlan((0.5, 1.0, 0.25, 1.0, 0.75, 0.5), cached=(False, True, True, False, True, True), cache_level=LEVEL),
    StepPlan((0.25,) * 6, cached=(False, True, True, True, True, True), cache_level=LEVEL),
]


def test_a_plan_without_cached_steps_samples_exactly_as_before(net):
    s = sampler()
    before = generate(net.model, s, [1.0, 0.5, 1.0, 0.25, 1.0, 1.0], SEEDS)
    # all-false flags are no caching at all, whatever the level says
    plan = StepPlan((1.0, 0.5, 1.0, 0.25, 1.0, 1.0), cached=(False,) * 6, cache_level=LEVEL)
    assert plan.cached is None and plan.cache_level is None
    assert torch.equal(generate(net.model, s, plan, SEEDS), before)


def test_cached_steps_change_the_samples_and_reuse_the_last_full_step(net):
    s = sampler()
    full, cached = generate(net.model, s, PLANS[0], SEEDS), generate(net.model, s, PLANS[1], SEEDS)
    assert not torch.equal(full, cached) and torch.isfinite(cached).all()
    # the deeper the cut (a larger level), the more of the network a cached call still runs: closer to full
    deep = generate(net.model, s, StepPlan((1.0,) * 6, cached=PLANS[1].cached,
                                           cache_level=max(net.model.reuse_levels())), SEEDS)
    assert (deep - full).abs().mean() < (cached - full).abs().mean()


def test_the_batched_sampler_fused_or_not_with_the_trajectory_cache_gives_the_loops_samples(net):
    s = sampler()
    alone = [generate(net.model, s, p, SEEDS) for p in PLANS]
    unfused = generate_many(net.model, s, PLANS, SEEDS, fuse=False)  # the loop's seed batch: bit for bit
    for k, ref in enumerate(alone):  # bit for bit, plans that cache and plans that do not, in one call
        assert torch.equal(unfused[k], ref), k
    fused = generate_many(net.model, s, PLANS, SEEDS, fuse=True, batch_size=3)  # two seed batches, fused calls
    torch.testing.assert_close(fused, unfused, rtol=1e-5, atol=1e-5)  # batched convolutions round differently
    cache = TrajectoryCache(10**8)
    generate_many(net.model, s, PLANS[:2], SEEDS, fuse=False, cache=cache)
    again = generate_many(net.model, s, PLANS, SEEDS, fuse=False, cache=cache)
    assert cache.hits > 0 and torch.equal(again, unfused)


def test_the_diffusers_bridge_runs_cached_steps_as_the_loop_does(net):
    sched = Schedule.for_model(net.config, DDIM, PLANS[2])
    ours = generate(net.model, sampler(), sched, SEEDS)
    torch.testing.assert_close(sample_with_diffusers(net, sched, SEEDS), ours, rtol=1e-5, atol=1e-5)


def test_a_cached_call_costs_the_outer_part_only_and_the_cost_model_counts_it(net):
    m = net.model
    for w in m.widths:
        assert 0 < count_cached_macs(m, w, LEVEL).total < count_macs(m, w).total
    # a lower level cuts closer to the surface: a cheaper cached call
    levels = m.reuse_levels()
    assert count_cached_macs(m, 1.0, levels[0]).total < count_cached_macs(m, 1.0, levels[-1]).total
    costs = CostModel.count(net, m.widths).count_cached(net, LEVEL)
    plan = PLANS[2]
    want = sum(costs.cached[costs.index(w)[0]] if c else costs.call(w) for w, c in zip(plan.widths, plan.cached))
    assert costs.plan_cost(plan) == pytest.approx(want)
    assert costs.plan_cost(PLANS[0]) == pytest.approx(6 * costs.call(1.0))
    with pytest.raises(DDSMError, match="prices no cached call"):
        CostModel.count(net, m.widths).plan_cost(plan)


def test_schedule_files_with_cached_steps_are_version_2_and_plain_ones_keep_their_bytes(net, tmp_path):
    plain = Schedule.for_model(net.config, DDIM, PLANS[0])
    assert plain.model_dump(mode="json")["schema_version"] == 1 and "cached" not in plain.model_dump(mode="json")
    sched = Schedule.for_model(net.config, DDIM, PLANS[2])
    sched.save(tmp_path / "s.json")
    doc = json.loads((tmp_path / "s.json").read_text())
    # version 2: a ddsm that reads version 1 only refuses the file instead of sampling it without the caching
    assert doc["schema_version"] == 2 and doc["cache_level"] == LEVEL
    back = Schedule.load(tmp_path / "s.json", net.config)
    assert back.plan() == PLANS[2]


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["cached"].__setitem__(0, True), "step 0 is cached"),
    (lambda d: d.update(schema_version=1), "version 2 is exactly the file with cached steps"),
    (lambda d: d.pop("cache_level"), "need a cache_level"),
    (lambda d: d.update(schema_version=3), "has schema_version 3; this ddsm reads 1 and 2"),
])
def test_bad_schedule_files_are_one_line_each_and_write_nothing(net, tmp_path, edit, message):
    doc = Schedule.for_model(net.config, DDIM, PLANS[2]).model_dump(mode="json")
    edit(doc)
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    with pytest.raises(DDSMError, match=message):
        Schedule.load(tmp_path / "bad.json", net.config)


def test_plans_that_cannot_run_are_refused_naming_why(net):
    with pytest.raises(DDSMError, match="step 0 is cached"):
        StepPlan((1.0,) * 3, cached=(True, False, False), cache_level=LEVEL)
    with pytest.raises(DDSMError, match="needs a cache_level"):
        StepPlan((1.0,) * 3, cached=(False, True, False))
    bad_level = StepPlan((1.0,) * 6, cached=PLANS[1].cached, cache_level=42)
    with pytest.raises(DDSMError, match=r"cache level 42 is not offered by SlimUNet; valid levels: \[0, 1, 2, 3\]"):
        generate(net.model, sampler(), bad_level, SEEDS)
    # plans of two cache levels sample in one call (one pass per level), each as it would alone
    other = StepPlan(PLANS[1].widths, cached=PLANS[1].cached, cache_level=0)
    both = generate_many(net.model, sampler(), [PLANS[1], PLANS[0], other], SEEDS, fuse=False)
    for k, p in enumerate([PLANS[1], PLANS[0], other]):
        assert torch.equal(both[k], generate(net.model, sampler(), p, SEEDS))


def test_the_cli_samples_a_cached_schedule_and_refuses_a_bad_one_with_exit_2(tmp_path):
    from ddsm.checkpoint import load_supernet

    net = load_supernet("digits")
    plan = StepPlan((1.0, 0.5, 1.0, 1.0), cached=(False, True, False, True), cache_level=2)
    sched = Schedule.for_model(net.config, SamplerConfig(kind="ddim", steps=4), plan)
    sched.save(tmp_path / "ok.json")
    result = invoke("sample", "--checkpoint", "digits", "--schedule", tmp_path / "ok.json", "--num", 2,
                    "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    # the verdict samples its cached steps and prices them as cached calls
    result = invoke("verdict", "--checkpoint", "digits", "--schedule", tmp_path / "ok.json", "--num", 50,
                    "--teacher-num", 50, "--draws", 10, "--no-progress", "--out", tmp_path / "v.csv")
    assert result.exit_code == 0, result.output
    import pandas as pd

    from ddsm.cost.model import CostModel as CM

    v = pd.read_csv(tmp_path / "v.csv")
    share = v.loc[v["schedule"] != "full width", "share"].iloc[0]
    assert share == pytest.approx(CM.count(net, net.config.geometry.widths).count_cached(net, 2).share(plan))
    doc = sched.model_dump(mode="json")
    doc["cache_level"] = 17
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    assert_bad_input(invoke("sample", "--checkpoint", "digits", "--schedule", tmp_path / "bad.json", "--num", 2,
                            "--out", tmp_path / "bad"), "cache level 17", "valid levels")
    assert not (tmp_path / "bad").exists()


# -- the search -----------------------------------------------------------------------------------------------------


def space(**kw) -> SearchConfig:
    return validate(SearchConfig, {"sampler": {"kind": "ddim", "steps": 6}, "reuse": {"level": LEVEL},
                                   "population": 8, "generations": 2, "budget": 0.6, **kw})


def test_reuse_genes_decode_to_cached_steps_and_the_first_step_is_always_full():
    sp = space(segments=3)
    assert sp.n_vars == 6 and sp.upper_bounds == (3, 3, 3, 1, 1, 1)
    plan = sp.decode((3, 1, 0, 1, 1, 0))
    assert plan.widths == (1.0, 1.0, 0.5, 0.5, 0.25, 0.25)
    assert plan.cached == (False, True, True, True, False, False) and plan.cache_level == LEVEL
    with pytest.raises(DDSMError, match=r"reuse genes \[2\] are not valid"):
        sp.decode((3, 1, 0, 2, 1, 0))
    # one gene per step: the first reuse gene cannot matter, so the repair fixes it at 0 (one genome per schedule)
    one = space()
    X = CanonicalRepair()._do(WidthProblem(one, _costs()), np.array([[3] * 6 + [1] * 6]))
    assert X[0, 6] == 0 and X[0, 7:].tolist() == [1] * 5


def _costs() -> CostModel:
    widths = (0.25, 0.5, 0.75, 1.0)
    return CostModel.from_mapping({w: w * w for w in widths}, widths).with_cached({w: w * w / 4 for w in widths},
                                                                                   LEVEL)


def test_the_problem_prices_cached_steps_and_refuses_a_cost_model_without_them():
    sp = space()
    problem = WidthProblem(sp, _costs())
    full = sp.guided((3,) * 6)
    deepcache = sp.guided((3,) * 6, reuse=(0, 1, 0, 1, 0, 1))
    assert problem.share(np.array([full]))[0] == pytest.approx(1.0)
    assert problem.share(np.array([deepcache]))[0] == pytest.approx((3 + 3 / 4) / 6)
    assert problem.cheapest_genome == (0,) * 7 + (1,) * 5  # the first step is full: its gene canonical 0
    with pytest.raises(DDSMError, match="prices cached calls"):
        WidthProblem(sp, CostModel.from_mapping({w: w for w in sp.widths}, sp.widths))


def test_seeding_includes_deepcache_intervals_and_stays_within_budget():
    sp = space(seeding={"sensitivity": False, "n_random": 2})
    problem = WidthProblem(sp, _costs())
    seeds = reuse_interval_seeds(sp)
    assert sp.guided((3,) * 6, reuse=(0, 1, 0, 1, 0, 1)) in seeds  # full width, a full step every 2
    pop = initial_population(problem)
    assert len(pop) == sp.population and (problem.share(pop) <= sp.budget + 1e-9).all()
    assert any(g[6:].any() for g in pop)  # cached steps are in the first population


def test_reuse_genes_are_refused_with_what_they_cannot_be_searched_with():
    with pytest.raises(DDSMError, match="reuse genes cannot be searched with resolutions"):
        validate(SearchConfig, {"sampler": {"kind": "ddim", "steps": 6}, "reuse": {"level": 1},
                                "resolutions": [4, 8], "objectives": {"quality": "pixel_kid"}})
    # a space without reuse keeps its fingerprint (every older search folder resumes)
    assert SearchConfig().fingerprint() == validate(SearchConfig, {"reuse": None}).fingerprint()


def test_a_search_with_reuse_genes_runs_exports_samples_plots_and_reports(tmp_path):
    import yaml

    from ddsm.checkpoint import load_supernet, read_tensors

    from cli_helpers import TINY_SEARCH_SPACE

    cfg = tmp_path / "c.yaml"
    dit = {"image_size": 8, "patch_size": 2, "hidden_size": 32, "depth": 3, "num_heads": 4,
           "widths": [0.25, 0.5, 0.75, 1.0]}
    cfg.write_text(yaml.safe_dump({"model": {"dit": dit, "diffusion": {"num_timesteps": 50}},
                                   "train": {"iters": 1, "batch_size": 8, "checkpoint_every": 1000}}))
    assert invoke("train", "--config", cfg, "--out", tmp_path / "run", "--no-progress").exit_code == 0
    doc = {**TINY_SEARCH_SPACE, "segments": 4, "reuse": {"level": 1}, "budget": 0.7, "population": 6,
           "generations": 2}
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(doc))
    r = invoke("search", "--space", tmp_path / "space.yaml", "--checkpoint", tmp_path / "run",
               "--out", tmp_path / "search", "--no-progress")
    assert r.exit_code == 0, r.output
    front = json.loads((tmp_path / "search" / "front.json").read_text())["members"]
    assert all(len(m["cached"]) == 4 and not m["cached"][0] for m in front)
    assert any(any(m["cached"]) for m in front)  # the cheap end of the front caches
    r = invoke("export", tmp_path / "search", "--checkpoint", tmp_path / "run", "--out", tmp_path / "exp",
               "--repeats", "1", "--warmup", "0", "--num", "2", "--no-progress")
    assert r.exit_code == 0, r.output
    files = sorted((tmp_path / "exp").glob("front-*.json"))
    scheds = [json.loads(f.read_text()) for f in files]
    for m, s in zip(front, scheds):  # the exported cost share is the cached-call cost the search priced
        assert s["predicted"]["cost_share"] == pytest.approx(m["share"], abs=1e-12)
        assert s.get("cached", [False] * 4) == m["cached"]
    pick = next(f for f, s in zip(files, scheds) if s.get("cached"))
    sched = Schedule.load(pick)
    r = invoke("sample", "--checkpoint", tmp_path / "run", "--schedule", pick, "--num", "3", "--out", tmp_path / "s",
               "--no-progress")
    assert r.exit_code == 0, r.output
    net = load_supernet(tmp_path / "run")
    want = generate(net.model, make_sampler(NoiseSchedule(net.config.diffusion), sched.sampler), sched, [0, 1, 2])
    assert torch.equal(read_tensors(tmp_path / "s" / "samples.safetensors")[0]["samples"], want)
    r = invoke("plot", tmp_path / "search", "--checkpoint", tmp_path / "run", "--out", tmp_path / "plots")
    assert r.exit_code == 0, r.output
    r = invoke("report", tmp_path / "search", "--export", tmp_path / "exp", "--samples", "2", "--out",
               tmp_path / "r.html")
    assert r.exit_code == 0, r.output
    assert "cached step" in (tmp_path / "r.html").read_text()


def test_a_cost_table_times_cached_calls_and_a_latency_search_prices_them(net, tmp_path):
    from ddsm.cost.table import CostTable, search_cost_model

    table = CostTable.measure(net.model, net.config, "cpu", batch_size=[1, 4], repeats=2, warmup=0,
                              cache_levels=[LEVEL])
    table.save(tmp_path / "t.json")
    doc = json.loads((tmp_path / "t.json").read_text())
    assert doc["schema_version"] == 3  # an older ddsm refuses it by its version
    back = CostTable.load(tmp_path / "t.json", net.config)
    assert back.cache_levels == (LEVEL,)
    for w in net.model.widths:
        cached, full = back.entry(w, cache_level=LEVEL), back.entry(w)
        assert cached.macs == count_cached_macs(net.model, w, LEVEL).total < full.macs
    lat = search_cost_model(net, net.model.widths, unit="latency", table=str(tmp_path / "t.json"), batch=1,
                            cache_level=LEVEL)
    assert lat.unit == "latency" and lat.cached == tuple(back.entry(w, None, 1, LEVEL).latency_s
                                                          for w in net.model.widths)
    with pytest.raises(DDSMError, match=r"cache level 0 is not in this cost table; measured levels: \[1\]"):
        search_cost_model(net, net.model.widths, unit="latency", table=str(tmp_path / "t.json"), cache_level=0)
    # a table without cached calls is the version-2 file it was
    plain = CostTable.measure(net.model, net.config, "cpu", batch_size=1, repeats=1, warmup=0)
    assert plain.model_dump(mode="json")["schema_version"] == 2
    assert all("cache_level" not in e for e in plain.model_dump(mode="json")["entries"])
    # a latency search space may carry reuse genes now
    sp = space(objectives={"quality": "proxy", "cost": "latency", "batch": 1})
    problem = WidthProblem(sp, lat)
    # full width, every other step cached: priced from the table's measured seconds (never asserted as a speed)
    share = problem.share(np.array([sp.guided((3,) * 6, reuse=(0, 1) * 3)]))[0]
    assert share == pytest.approx(0.5 * (1 + lat.cached[-1] / lat.calls[-1][0]), rel=1e-9)


def test_a_search_at_a_level_the_backbone_does_not_offer_is_one_line_and_writes_nothing(tmp_path):
    import yaml

    from cli_helpers import TINY_SEARCH_SPACE

    (tmp_path / "space.yaml").write_text(yaml.safe_dump({**TINY_SEARCH_SPACE, "reuse": {"level": 9}}))
    r = invoke("search", "--space", tmp_path / "space.yaml", "--checkpoint", "digits", "--out", tmp_path / "s")
    assert_bad_input(r, "cache level 9 is not offered by SlimUNet", "valid levels: [0, 1, 2, 3, 4, 5]")
    assert not (tmp_path / "s").exists()
