"""SearchConfig: YAML loading, one-line errors, gene layout, width checks, identity."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ddsm.errors import DDSMError
from ddsm.search.config import SearchConfig, check_widths

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, data, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("name", ["digits-smoke", "digits", "digits-progressive"])
def test_shipped_spaces_load(name):
    space = SearchConfig.load(ROOT / "search_spaces" / f"{name}.yaml")
    assert space.sampler.kind == "ddim" and 20 <= space.sampler.steps <= 50
    assert sum(space.segment_lengths) == space.sampler.steps
    if name == "digits":
        assert space.budget >= 0.5 and 16 <= space.population <= 32 and space.generations >= 8  # covers 50 % FLOPs


def test_progressive_space_fits_the_shipped_resolution_aware_supernet():
    from ddsm.checkpoint import load_supernet

    space = SearchConfig.load(ROOT / "search_spaces" / "digits-progressive.yaml")
    net = load_supernet("digits-progressive")
    space.check_supernet(net.config.unet.widths, net.config.unet)
    assert set(space.resolutions) == set(net.trained_resolutions) == {8, 16}
    assert net.fingerprint == load_supernet("digits").fingerprint  # same architecture: schedules carry over


def test_the_shipped_steps_space_joins_the_teacher_and_its_shipped_students():
    from ddsm.search import shipped_spaces
    from ddsm.search.joint import JointSpace, prepare_joint

    assert "digits-steps" in shipped_spaces(joint=True) and "digits-steps" not in shipped_spaces()
    arms = {a.name: a for a in prepare_joint(JointSpace.load("digits-steps"))}
    assert set(arms) == {"teacher", "k2", "k4", "k8"}
    assert [arms[n].steps for n in ("teacher", "k2", "k4", "k8")] == [20, 2, 4, 8]
    assert arms["k2"].exhaustive and not arms["teacher"].exhaustive
    assert arms["k4"].scale == pytest.approx(4 / 20)  # same network: a full-width step costs the same


def test_the_shipped_mnist_steps_space_prices_each_student_by_its_own_passes():
    from ddsm.search.joint import JointSpace, prepare_joint

    arms = {a.name: a for a in prepare_joint(JointSpace.load("mnist-steps"))}
    assert set(arms) == {"teacher", "k4", "k8"}
    assert arms["teacher"].space.sampler.guidance_scale == 1.5 and arms["teacher"].steps == 20
    # the 4-step student has the teacher's scale distilled in: unguided, one pass a step of the teacher's 40
    assert arms["k4"].space.sampler.guidance_scale is None and arms["k4"].scale == pytest.approx(4 / 40)
    # the 8-step student learnt both transitions: guided when sampled, two passes a step
    assert arms["k8"].space.sampler.guidance_scale == 1.5 and arms["k8"].scale == pytest.approx(16 / 40)


def test_a_joint_space_given_to_ddsm_search_and_a_width_space_to_search_steps_are_one_line(tmp_path):
    from ddsm.search.joint import JointSpace

    with pytest.raises(DDSMError, match="search-steps"):
        SearchConfig.load("digits-steps")
    with pytest.raises(DDSMError, match="lists no students"):
        JointSpace.load("digits")


def test_smoke_space_is_tiny():
    space = SearchConfig.load(ROOT / "search_spaces" / "digits-smoke.yaml")
    assert space.sampler.steps == 20 and space.n_genes == 5 and space.population == 8 and space.generations == 3


@pytest.mark.parametrize("data, needle", [
    ("widths: [0.5, 1.0\n", "malformed YAML"),
    ({"widths": [0.5, 1.0], "budjet": 0.4}, "budjet"),
    ({"budget": 1.5}, "budget"),
    ({"budget": 0}, "budget"),
    ({"widths": [0.25, 0.5]}, "must include 1.0"),
    ({"widths": [0.5, 1.2]}, "(0, 1]"),
    ({"segments": 30, "sampler": {"steps": 20}}, "segments 30 exceeds the sampler's 20 model calls"),
    ({"objectives": {"quality": "lpips"}}, "objectives.quality"),
    ({"objectives": {"cost": "energy"}}, "objectives.cost"),
    ({"mutation": {"prob_var": 2}}, "mutation.prob_var"),
    ({"seeding": {"two_segment": [0.5, 1.0]}}, "two_segment"),
    ({"sampler": {"kind": "euler"}}, "sampler.kind"),
    ({"widths": [0.5, 1.0], "segments": 2, "population": 8}, "population 8 exceeds the 4 distinct schedules"),
])
def test_bad_files_give_one_line_errors(tmp_path, data, needle):
    with pytest.raises(DDSMError) as e:
        SearchConfig.load(write(tmp_path, data))
    msg = str(e.value)
    assert needle in msg and "\n" not in msg


def test_missing_file(tmp_path):
    with pytest.raises(DDSMError, match="cannot read"):
        SearchConfig.load(tmp_path / "nope.yaml")


def test_segments_are_contiguous_and_near_equal():
    space = SearchConfig(sampler={"steps": 22}, segments=5, population=4)
    assert space.segment_lengths == (5, 5, 4, 4, 4)
    widths = space.genes_to_widths((0, 1, 2, 3, 0))
    assert widths == [0.25] * 5 + [0.5] * 5 + [0.75] * 4 + [1.0] * 4 + [0.25] * 4
    assert space.widths_to_genes(widths) == (0, 1, 2, 3, 0)


def test_one_gene_per_step_by_default():
    space = SearchConfig(sampler={"steps": 6}, population=4)
    assert space.n_genes == 6 and space.genes_to_widths((3, 2, 1, 0, 0, 3)) == [1.0, 0.75, 0.5, 0.25, 0.25, 1.0]


def test_widths_are_sorted_and_a_repeated_width_is_refused():
    assert SearchConfig(widths=[1.0, 0.5, 0.25], population=4).widths == (0.25, 0.5, 1.0)
    with pytest.raises(Exception, match="width 0.5 given twice"):
        SearchConfig(widths=[1.0, 0.5, 0.5, 0.25], population=4)


def test_bad_genomes_are_named():
    space = SearchConfig(sampler={"steps": 4}, population=4)
    with pytest.raises(DDSMError, match=r"genome values \[4\] are not width indices; valid: 0..3"):
        space.genes_to_widths((0, 1, 2, 4))
    with pytest.raises(DDSMError, match="3 genes; this search space has 4"):
        space.genes_to_widths((0, 1, 2))


def test_width_check_against_supernet_names_the_unknown_width():
    space = SearchConfig(widths=[0.3, 0.5, 1.0], population=4)
    with pytest.raises(DDSMError) as e:
        space.check_supernet((0.25, 0.5, 0.75, 1.0))
    assert "0.3" in str(e.value) and "[0.25, 0.5, 0.75, 1.0]" in str(e.value)
    assert check_widths([0.5, 1.0 + 1e-12], (0.25, 0.5, 1.0)) == [0.5, 1.0]


def test_fingerprint_ignores_generations_and_cache_only():
    base = SearchConfig(population=4)
    assert base.fingerprint() == SearchConfig(population=4, generations=99, cache={"format": "csv"}).fingerprint()
    assert base.fingerprint() != SearchConfig(population=4, budget=0.4).fingerprint()
    assert base.fingerprint() != SearchConfig(population=4, evaluator={"num_samples": 64}).fingerprint()


def test_the_shipped_reuse_spaces_add_reuse_genes_to_their_width_recipes():
    from ddsm.search.joint import JointSpace

    reuse = SearchConfig.load(ROOT / "search_spaces" / "digits-proxy-reuse.yaml")
    plain = SearchConfig.load(ROOT / "search_spaces" / "digits-proxy.yaml")
    assert reuse.reuse is not None and reuse.reuse.level == 1
    assert reuse.model_dump(exclude={"reuse"}) == plain.model_dump(exclude={"reuse"})  # the same recipe otherwise
    joint = JointSpace.load(ROOT / "search_spaces" / "digits-steps-cache.yaml")
    steps = JointSpace.load(ROOT / "search_spaces" / "digits-steps.yaml")
    assert joint.base_space() == reuse and joint.students == steps.students and joint.teacher == steps.teacher
