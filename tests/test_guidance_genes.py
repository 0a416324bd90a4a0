"""Guidance as part of the schedule: per step, the unconditional pass's width or no guidance at all.

A plan's ``uncond`` (a schedule file's ``uncond_widths``) names, per sampling step, the width of the
unconditional pass, or None where the step takes no guidance (the conditional prediction alone). The cost
counts each pass at its own width; the search's genome carries one guidance gene per width gene.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from ddsm.checkpoint import Supernet
from ddsm.config import ModelConfig, validate
from ddsm.cost.model import CostModel
from ddsm.diffusion import NoiseSchedule
from ddsm.errors import DDSMError
from ddsm.nn import build_backbone
from ddsm.plan import StepPlan
from ddsm.samplers import SamplerConfig, generate, make_sampler
from ddsm.samplers.batched import generate_many
from ddsm.samplers.loop import guided_eps
from ddsm.schedule import Schedule
from ddsm.search import SearchConfig
from ddsm.search.problem import WidthProblem
from ddsm.search.seeding import initial_population, interval_seeds, sensitivity_probes, sensitivity_table

from cli_helpers import TINY_SEARCH_SPACE, assert_bad_input, invoke
from conftest import TINY_UNET, randomise

WIDTHS = (0.25, 0.5, 0.75, 1.0)
TINY_DIT = {"image_size": 8, "patch_size": 2, "hidden_size": 32, "depth": 2, "num_heads": 4, "widths": WIDTHS,
            "num_classes": 10}
CONFIG = {"dit": TINY_DIT, "diffusion": {"num_timesteps": 50}}
GUIDED = SamplerConfig(kind="ddim", steps=4, guidance_scale=3.0)
SEEDS = [0, 1, 2, 3, 4]


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    config = validate(ModelConfig, CONFIG)
    return Supernet(randomise(build_backbone(config)).eval(), config, {}, "memory")


def sampler(config: SamplerConfig = GUIDED):
    return make_sampler(NoiseSchedule(validate(ModelConfig, CONFIG).diffusion), config)


def test_no_guidance_at_every_step_is_conditional_sampling(net):
    unguided = generate(net.model, sampler(SamplerConfig(kind="ddim", steps=4)), StepPlan((0.5,) * 4), SEEDS)
    none = generate(net.model, sampler(), StepPlan((0.5,) * 4, uncond=(None,) * 4), SEEDS)
    assert torch.equal(none, unguided)
    guided = generate(net.model, sampler(), StepPlan((0.5,) * 4), SEEDS)
    assert not torch.equal(guided, unguided)
    # the unconditional pass at the step's own width is the plain guided sampler, bit for bit
    assert torch.equal(generate(net.model, sampler(), StepPlan((0.5,) * 4, uncond=(0.5,) * 4), SEEDS), guided)


def test_an_unconditional_pass_at_its_own_width_follows_the_guidance_formula(net):
    m = net.model
    x, t, y = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(5)), 20.0, torch.tensor([1, 2, 3])
    with torch.no_grad():
        m.set_active_width(1.0)
        eps_c = m(x, t, cond=y)
        m.set_active_width(0.25)
        eps_u = m(x, t, cond=torch.full_like(y, 10))
        m.set_active_width(1.0)
        got = guided_eps(m, x, t, y, 2.5, 0.25)
    assert m.width == 1.0  # left at the conditional width
    torch.testing.assert_close(got, eps_u + 2.5 * (eps_c - eps_u), rtol=0, atol=1e-6)


def test_sampling_many_guidance_plans_at_once_equals_sampling_each(net):
    plans = [StepPlan((0.5, 1.0, 0.25, 0.25), uncond=(None, 0.25, 1.0, None)),
             StepPlan((0.5, 1.0, 0.25, 0.25), uncond=(None, 0.5, 1.0, 0.25)),
             StepPlan((0.5, 1.0, 0.25, 0.25))]
    many = generate_many(net.model, sampler(), plans, SEEDS, fuse=False)
    for k, p in enumerate(plans):
        assert torch.equal(many[k], generate(net.model, sampler(), p, SEEDS))
    torch.testing.assert_close(generate_many(net.model, sampler(), plans, SEEDS, fuse=True), many, rtol=0, atol=1e-5)


def test_the_cost_counts_each_pass_at_its_own_width():
    one = {0.25: 1.0, 0.5: 2.0, 0.75: 3.0, 1.0: 4.0}
    guided = CostModel.from_mapping(one, WIDTHS).per_step(2)
    assert guided.plan_cost(StepPlan((1.0, 0.5))) == 2 * (4 + 2)  # both passes at the step's width
    assert guided.plan_cost(StepPlan((1.0, 0.5), uncond=(1.0, 0.5))) == 2 * (4 + 2)
    assert guided.plan_cost(StepPlan((1.0, 0.5), uncond=(0.25, None))) == 4 + 1 + 2
    assert guided.share(StepPlan((1.0, 1.0), uncond=(None, None))) == 0.5
    with pytest.raises(DDSMError, match="need a guided cost model"):
        CostModel.from_mapping(one, WIDTHS).plan_cost(StepPlan((1.0,), uncond=(None,)))


def test_a_schedule_file_keeps_its_guidance_choices_and_old_files_their_bytes(net, tmp_path):
    config = net.config
    plain = Schedule.uniform(config, GUIDED, 0.5)
    assert "uncond_widths" not in plain.model_dump(mode="json")
    s = Schedule.for_model(config, GUIDED, StepPlan((0.5,) * 4, uncond=(None, 0.25, 1.0, 0.5)))
    s.save(tmp_path / "s.json")
    assert json.loads((tmp_path / "s.json").read_text())["uncond_widths"] == [None, 0.25, 1.0, 0.5]
    back = Schedule.load(tmp_path / "s.json", config)
    assert back.plan() == s.plan() and back.plan().uncond == (None, 0.25, 1.0, 0.5)
    plain_model = validate(ModelConfig, {"unet": TINY_UNET, "diffusion": {"num_timesteps": 50}})
    with pytest.raises(DDSMError, match="this supernet is unconditional"):
        Schedule.for_model(plain_model, SamplerConfig(kind="ddim", steps=4), StepPlan((0.5,) * 4, uncond=(None,) * 4))
    with pytest.raises(DDSMError, match="which guides nothing"):
        Schedule.for_model(config, SamplerConfig(kind="ddim", steps=4), StepPlan((0.5,) * 4, uncond=(None,) * 4))
    with pytest.raises(DDSMError, match=r"uncond_widths \[0.3\] are not served"):
        Schedule.for_model(config, GUIDED, StepPlan((0.5,) * 4, uncond=(0.3,) * 4))
    with pytest.raises(DDSMError, match="but the guidance scale is None"):  # a plan alone, unguided sampler
        generate(net.model, sampler(SamplerConfig(kind="ddim", steps=4)), StepPlan((0.5,) * 4, uncond=(None,) * 4),
                 SEEDS)


def space(**changes) -> SearchConfig:
    doc = {**TINY_SEARCH_SPACE, "sampler": {"kind": "ddim", "steps": 4, "guidance_scale": 3.0}, "segments": 2,
           "guidance_genes": True, "budget": 0.6, **changes}
    return validate(SearchConfig, doc)


def test_the_genome_carries_a_guidance_gene_per_width_gene():
    sp = space()
    assert (sp.n_vars, sp.upper_bounds) == (4, (3, 3, 4, 4))
    plan = sp.decode((3, 0, 0, 2))
    assert plan == StepPlan((1.0, 1.0, 0.25, 0.25), uncond=(None, None, 0.5, 0.5))
    assert sp.uncond_to_genes(plan.uncond) == (0, 2)
    assert sp.guided((1, 2)) == (1, 2, 2, 3)  # by default each gene's unconditional pass at its own width
    with pytest.raises(DDSMError, match=r"guidance genes \[5\] are not valid; valid: 0 \(no guidance\) or 1..4"):
        sp.check_genome((0, 0, 5, 0))
    # a space without guidance genes keeps its fingerprint and genome
    plain = validate(SearchConfig, {**TINY_SEARCH_SPACE, "sampler": {"kind": "ddim", "steps": 4,
                                                                     "guidance_scale": 3.0}})
    assert "guidance_genes" not in plain.model_dump(mode="json") and plain.n_vars == 2  # space.json keeps its bytes
    assert sp.model_dump(mode="json")["guidance_genes"] is True
    assert plain.fingerprint() == validate(SearchConfig, {**plain.model_dump(mode="json"),
                                                          "guidance_genes": False}).fingerprint()
    assert plain.fingerprint() != sp.fingerprint()


def test_the_problem_prices_guidance_genes_and_seeds_the_three_families():
    sp = space(seeding={"uniform": True, "two_segment": [0.5], "n_random": 2, "sensitivity": False}, population=16,
               budget=0.7)
    costs = {w: float(i + 1) for i, w in enumerate(WIDTHS)}
    problem = WidthProblem(sp, CostModel.from_mapping(costs, WIDTHS).per_step(2))
    full_guided = sp.guided((3, 3))
    assert problem.share(np.asarray([full_guided]))[0] == 1.0
    assert problem.share(np.asarray([(3, 3, 0, 0)]))[0] == 0.5  # no guidance anywhere: one pass per step
    assert problem.cheapest_genome == (0, 0, 0, 0)
    X0 = [tuple(g) for g in initial_population(problem)]
    assert sp.guided((1, 1)) in X0  # uniform width, guided at every step
    assert (1, 1, 0, 2) in X0  # interval guidance: the first half unguided
    assert (0, 3, 1, 4) in X0  # two-segment, guided at every step
    assert set(interval_seeds(sp)) == {(j, j, 0, j + 1) for j in range(4)}
    assert all(problem.share(np.asarray([g]))[0] <= 0.7 + 1e-12 for g in X0)


def test_sensitivity_probes_each_guidance_choice_and_the_knapsack_uses_them():
    sp = space()
    probes = sensitivity_probes(sp)
    assert probes[0] == (3, 3, 4, 4) and len(probes) == 1 + 2 * 3 + 2 * 4
    assert (3, 3, 0, 4) in probes and (3, 3, 4, 1) in probes
    table = sensitivity_table(sp, list(range(len(probes))))
    assert table.shape == (4, 5) and np.isinf(table[:2, 4]).all() and (table[:, :4][:2] >= 0).all()
    assert table[2, 4] == 0 and table[2, 0] == probes.index((3, 3, 0, 4))


def test_a_search_with_guidance_genes_runs_exports_and_plots(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"model": {"dit": {**TINY_DIT, "widths": list(WIDTHS)},
                                             "diffusion": {"num_timesteps": 50}},
                                   "train": {"iters": 1, "batch_size": 8, "checkpoint_every": 1000}}))
    assert invoke("train", "--config", cfg, "--out", tmp_path / "run", "--no-progress").exit_code == 0
    doc = {**TINY_SEARCH_SPACE, "sampler": {"kind": "ddim", "steps": 4, "guidance_scale": 3.0},
           "guidance_genes": True, "budget": 0.7, "population": 6, "generations": 2}
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(doc))
    r = invoke("search", "--space", tmp_path / "space.yaml", "--checkpoint", tmp_path / "run",
               "--out", tmp_path / "search", "--no-progress")
    assert r.exit_code == 0, r.output
    front = json.loads((tmp_path / "search" / "front.json").read_text())["members"]
    assert all(len(m["uncond_widths"]) == 4 for m in front)
    r = invoke("export", tmp_path / "search", "--checkpoint", tmp_path / "run", "--out", tmp_path / "exp",
               "--repeats", "1", "--warmup", "0", "--num", "2", "--no-progress")
    assert r.exit_code == 0, r.output
    files = sorted((tmp_path / "exp").glob("front-*.json"))
    scheds = [json.loads(f.read_text()) for f in files]
    assert all(len(s["uncond_widths"]) == 4 for s in scheds)
    # the exported cost share is the pass-by-pass cost the search priced
    for m, s in zip(front, scheds):
        assert s["predicted"]["cost_share"] == pytest.approx(m["share"], abs=1e-12)
    # the member with the most steps unguided: sample, evaluate and the verdict follow its choices
    pick = max(files, key=lambda f: json.loads(f.read_text())["uncond_widths"].count(None))
    sched = Schedule.load(pick)
    assert None in sched.uncond_widths
    r = invoke("sample", "--checkpoint", tmp_path / "run", "--schedule", pick, "--num", "3",
               "--out", tmp_path / "s", "--no-progress")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "s" / "sample.json").read_text())["uncond_widths"] == list(sched.uncond_widths)
    from ddsm.checkpoint import load_supernet, read_tensors

    net = load_supernet(tmp_path / "run")
    want = generate(net.model, make_sampler(NoiseSchedule(net.config.diffusion), sched.sampler), sched, [0, 1, 2])
    assert torch.equal(read_tensors(tmp_path / "s" / "samples.safetensors")[0]["samples"], want)
    r = invoke("featurenet", "--checkpoint", tmp_path / "run", "--out", tmp_path / "fn.safetensors", "--epochs", "1",
               "--no-progress")
    assert r.exit_code == 0, r.output
    r = invoke("verdict", "--checkpoint", tmp_path / "run", "--schedule", pick, "--num", "50", "--teacher-num", "50",
               "--draws", "10", "--featurenet", tmp_path / "fn.safetensors", "--no-progress", "--out", tmp_path / "v.csv")
    assert r.exit_code == 0, r.output
    assert "class_accuracy" in (tmp_path / "v.csv").read_text()
    r = invoke("plot", tmp_path / "search", "--checkpoint", tmp_path / "run", "--out", tmp_path / "plots",
               "--num", "2", "--evaluate-missing")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "plots" / "widths.png").is_file()
    # the report page: a heatmap row per pass, blank (None) where a step takes no guidance; the verdict's member
    r = invoke("report", tmp_path / "search", "--export", tmp_path / "exp", "--verdict", tmp_path / "v.csv",
               "--samples", "2", "--out", tmp_path / "report.html")
    assert r.exit_code == 0, r.output
    text = (tmp_path / "report.html").read_text(encoding="utf-8")
    data = json.loads(text.split('<script id="ddsm-data" type="application/json">')[1].split("</script>")[0]
                      .replace("<\\/", "</"))
    front = json.loads((tmp_path / "search" / "front.json").read_text())["members"]
    for m, member in zip(data["front"], front):
        assert [p["name"] for p in m["passes"]] == ["cond. pass", "uncond. pass"]
        assert m["passes"][1]["values"] == member["uncond_widths"]
    assert sum(m["verdict"] is not None for m in data["front"]) == 1  # the one schedule the verdict judged


@pytest.mark.parametrize("changes, needle", [
    ({"sampler": {"kind": "ddim", "steps": 4}}, "guidance_genes need a guided sampler"),
    ({"sampler": {"kind": "ddim", "steps": 4, "guidance_scale": 1.0}}, "guidance_genes need a guided sampler"),
    ({"resolutions": [4, 8]}, "guidance_genes and resolutions cannot be searched together"),
    ({"objectives": {"quality": "proxy", "cost": "latency"}}, "guidance_genes price passes in MACs"),
])
def test_bad_guidance_gene_spaces_are_one_line(tmp_path, changes, needle):
    doc = {**TINY_SEARCH_SPACE, "sampler": {"kind": "ddim", "steps": 4, "guidance_scale": 3.0},
           "guidance_genes": True, **changes}
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(doc))
    r = invoke("search", "--space", tmp_path / "space.yaml", "--checkpoint", "digits", "--out", tmp_path / "out")
    assert_bad_input(r, needle)
    assert not (tmp_path / "out").exists()


def test_the_diffusers_loop_follows_the_schedules_guidance_choices(net):
    pytest.importorskip("diffusers")
    from ddsm.integrations.diffusers import sample_with_diffusers

    sched = Schedule.for_model(net.config, GUIDED, StepPlan((0.5, 1.0, 0.25, 0.25), uncond=(None, 0.25, 1.0, 0.5)))
    ours = generate(net.model, sampler(), sched, SEEDS)
    torch.testing.assert_close(sample_with_diffusers(net, sched, SEEDS), ours, rtol=0, atol=1e-4)
    assert not torch.allclose(ours, generate(net.model, sampler(), StepPlan((0.5, 1.0, 0.25, 0.25)), SEEDS))


@pytest.mark.parametrize("recipe", ["mnist-dit", "mnist-unet"])
@pytest.mark.parametrize("name", ["mnist", "mnist-fixed"])
def test_the_mnist_search_spaces_fit_both_mnist_recipes(recipe, name):
    from pathlib import Path

    from ddsm.config import RunConfig, load_yaml

    root = Path(__file__).resolve().parents[1]
    model = validate(RunConfig, load_yaml(root / "experiments" / "configs" / f"{recipe}.yaml")).model
    sp = SearchConfig.load(name)
    sp.check_supernet(model.geometry.widths, model.geometry)  # guided: needs the recipe's classes
    assert sp.sampler.guidance_scale == 2.0 and sp.guidance_genes == (name == "mnist")
    # the two differ only in the guidance genes: same seeds, sampler, budget, recipe
    other = SearchConfig.load("mnist-fixed" if name == "mnist" else "mnist")
    assert sp.model_dump(exclude={"guidance_genes"}) == other.model_dump(exclude={"guidance_genes"})


def test_the_proxy_teacher_is_full_width_guided_at_every_step_only(net):
    from ddsm.metrics.proxy import TeacherProxy

    proxy = TeacherProxy(net.model, sampler(), seeds=SEEDS)
    assert proxy.is_teacher(StepPlan((1.0,) * 4)) and proxy.is_teacher(StepPlan((1.0,) * 4, uncond=(1.0,) * 4))
    assert not proxy.is_teacher(StepPlan((1.0,) * 4, uncond=(None,) * 4))
    assert not proxy.is_teacher(StepPlan((1.0,) * 4, uncond=(1.0, 1.0, 0.5, 1.0)))


@pytest.mark.parametrize("name, backbone", [("mnist-dit", "SlimDiT"), ("mnist-unet", "SlimUNet")])
def test_the_shipped_mnist_references_are_conditional_and_know_their_data(name, backbone):
    from ddsm.checkpoint import data_config_for, load_supernet
    from ddsm.metrics.featurenet import featurenet_for

    net = load_supernet(name)
    assert type(net.model).__name__ == backbone and net.model.num_classes == 10
    assert net.config.geometry.image_size == 32 and net.header["recipe"]["iters"] == 3000
    assert data_config_for(name).source == "mnist" and featurenet_for("auto", name) == "mnist"
    SearchConfig.load("mnist").check_supernet(net.config.geometry.widths, net.config.geometry)
