"""Steps as a search dimension: costs on the teacher's axis, the teacher-referenced proxy, the merged front, refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from cli_helpers import assert_bad_input, invoke, write_space


@pytest.fixture(scope="module")
def students(trained_run, tmp_path_factory):
    """Two students (K = 2 and 3) of the shared tiny teacher, one distillation step each."""
    root = tmp_path_factory.mktemp("students")
    out = {}
    for k in (2, 3):
        r = invoke("distill", "--teacher", trained_run, "--steps", k, "--iters", "1", "--out", root / f"k{k}",
                   "--no-progress")
        assert r.exit_code == 0, r.output
        out[k] = root / f"k{k}"
    return out


def _joint_file(tmp_path, trained_run, students, base_changes=None, **changes):
    base = write_space(tmp_path / "base.yaml", **(base_changes or {}))
    doc = {"base": str(base), "teacher": str(trained_run), "students": [str(s) for s in students], **changes}
    path = tmp_path / "joint.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_a_students_cost_is_the_sum_of_its_k_step_costs_on_the_teachers_axis(trained_run, students, tmp_path):
    from ddsm.search.joint import JointSpace, prepare_joint
    from ddsm.search.problem import WidthProblem

    arms = {a.name: a for a in prepare_joint(JointSpace.load(_joint_file(tmp_path, trained_run, students.values())))}
    teacher, k3 = arms["teacher"], arms["k3"]
    per_call = np.asarray([row[-1] for row in k3.costs.calls])
    genome = tuple(range(k3.space.n_genes))  # the base's 2 segments over the student's 3 steps: 2 + 1 steps
    widths = k3.space.genes_to_widths(genome)
    idx = [list(k3.space.widths).index(w) for w in widths]
    problem = WidthProblem(k3.space, k3.costs)
    assert len(widths) == 3 and len(set(widths)) == 2
    assert problem.cost(np.asarray([genome]))[0] == pytest.approx(per_call[idx].sum())
    # on the joint axis: a share of the teacher's full-width 4-step schedule
    assert k3.scale == pytest.approx(3 / teacher.steps)
    full = teacher.costs.full_cost(teacher.steps)
    assert problem.share(np.asarray([genome]))[0] * k3.scale == pytest.approx(per_call[idx].sum() / full)


def test_small_student_spaces_are_searched_exhaustively(trained_run, students, tmp_path):
    from ddsm.search.joint import JointSpace, prepare_joint

    # population 4 x 4 generations reach all 4^2 schedules of 2 steps, not the 4^3 of 3
    joint = JointSpace.load(_joint_file(tmp_path, trained_run, students.values(), {"generations": 4, "segments": None}))
    arms = {a.name: a for a in prepare_joint(joint)}
    k2, k3 = arms["k2"], arms["k3"]
    assert k2.exhaustive and k2.space.population == 4 ** 2 and k2.space.generations == 1
    assert not k3.exhaustive and k3.space.population == 4 and k3.space.generations == 4
    assert k2.space.sampler.steps == 2 and k2.space.budget == 1.0  # 2/4 of the teacher's cost fits the 0.6 budget


def test_the_student_proxy_is_measured_against_the_teachers_full_width(trained_run, students, tmp_path):
    import torch

    from ddsm.checkpoint import load_supernet
    from ddsm.diffusion.noise import NoiseSchedule
    from ddsm.plan import StepPlan
    from ddsm.samplers.batched import generate_many
    from ddsm.samplers.loop import make_sampler
    from ddsm.search.joint import JointSpace, prepare_joint

    joint = JointSpace.load(_joint_file(tmp_path, trained_run, [students[2]]))
    arm = next(a for a in prepare_joint(joint) if a.name == "k2")
    ev = arm.factory(device="cpu")
    rows = ev.evaluate([StepPlan((1.0, 1.0))])
    teacher = load_supernet(trained_run)
    base = joint.base_space()
    ref = generate_many(teacher.model, make_sampler(NoiseSchedule(teacher.config.diffusion), base.sampler),
                        [StepPlan((1.0,) * base.sampler.steps)], list(range(base.evaluator.num_samples)),
                        batch_size=8, fuse=False)[0]
    student = load_supernet(students[2])
    own = generate_many(student.model, make_sampler(NoiseSchedule(student.config.diffusion), arm.space.sampler),
                        [StepPlan((1.0, 1.0))], list(range(base.evaluator.num_samples)), batch_size=8, fuse=False)[0]
    expected = float((own.double() - ref.double()).pow(2).mean())
    assert expected > 0  # a 2-step student is not the 4-step teacher: its full width is not the reference
    assert rows["proxy"].iloc[0] == pytest.approx(expected, rel=1e-6)
    assert torch.isfinite(own).all()


def test_joint_search_merges_fronts_resumes_and_exports_each_member_for_its_model(trained_run, students, tmp_path):
    from ddsm.schedule import Schedule

    space = _joint_file(tmp_path, trained_run, students.values())
    out = tmp_path / "joint"
    r = invoke("search-steps", "--space", space, "--out", out, "--no-progress")
    assert r.exit_code == 0, r.output
    assert "joint front of" in r.output
    front = json.loads((out / "front.json").read_text())["members"]
    shares = [m["share"] for m in front]
    proxies = [m["proxy"] for m in front]
    assert shares == sorted(shares) and all(a > b for a, b in zip(proxies, proxies[1:]))  # non-dominated
    assert {m["model"] for m in front} <= {"teacher", "k2", "k3"}
    for m in front:
        assert len(m["widths"]) == m["steps"] and m["share"] <= 0.6 + 1e-9
    # every evaluated schedule of every model is dominated by or on the joint front
    for model in ("teacher", "k2", "k3"):
        assert (out / "models" / model / "front.json").is_file()
    before = (out / "front.json").read_text()
    r = invoke("search-steps", "--out", out, "--resume", "--no-progress")
    assert r.exit_code == 0, r.output
    assert (out / "front.json").read_text() == before

    exp = tmp_path / "exp"
    r = invoke("export-steps", out, "--out", exp, "--no-progress")
    assert r.exit_code == 0, r.output
    from ddsm.checkpoint import load_supernet

    nets = {"teacher": load_supernet(trained_run), "k2": load_supernet(students[2]), "k3": load_supernet(students[3])}
    files = sorted(exp.glob("front-*.json"))
    assert len(files) == len(front)
    for f, m in zip(files, front):
        s = Schedule.load(f, nets[m["model"]].config)  # loads for its own model
        assert s.supernet == m["fingerprint"] and list(s.widths) == m["widths"]
        assert s.sampler.steps == m["steps"]
    for name in ("front.png", "widths.png", "front.csv", "joint-export.json"):
        assert (exp / name).is_file()
    # a front member naming no model of the search (a hand-edited front.json): one line, not a KeyError
    import shutil

    edited = tmp_path / "edited"
    shutil.copytree(out, edited)
    doc = json.loads((edited / "front.json").read_text())
    doc["members"][0]["model"] = "ghost"
    (edited / "front.json").write_text(json.dumps(doc))
    r = invoke("export-steps", edited, "--out", tmp_path / "exp2", "--no-progress")
    assert_bad_input(r, "member 1 names model 'ghost', not one of this joint search's models (k2, k3, teacher)")
    assert not (tmp_path / "exp2").exists()


def test_a_student_schedule_is_refused_on_the_teacher_and_the_other_way_round(trained_run, students, tmp_path):
    from ddsm.checkpoint import load_supernet
    from ddsm.distill import student_sampler
    from ddsm.schedule import Schedule

    student = load_supernet(students[2])
    s = Schedule.for_model(student.config, student_sampler(student.config.student), [1.0, 0.5])
    s.save(tmp_path / "student.json")
    r = invoke("sample", "--checkpoint", trained_run, "--schedule", tmp_path / "student.json", "--num", "2",
               "--out", tmp_path / "s1", "--no-progress")
    assert_bad_input(r)
    assert not (tmp_path / "s1").exists()
    teacher = load_supernet(trained_run)
    t = Schedule.uniform(teacher.config, student_sampler(student.config.student).model_copy(
        update={"timesteps": None, "steps": 4}), 1.0)
    t.save(tmp_path / "teacher.json")
    r = invoke("sample", "--checkpoint", students[2], "--schedule", tmp_path / "teacher.json", "--num", "2",
               "--out", tmp_path / "s2", "--no-progress")
    assert_bad_input(r)
    assert not (tmp_path / "s2").exists()


def test_students_of_another_teacher_are_refused_in_one_line(trained_run, students, teacher_of_another_run, tmp_path):
    space = _joint_file(tmp_path, teacher_of_another_run, students.values())
    r = invoke("search-steps", "--space", space, "--out", tmp_path / "j", "--no-progress")
    assert_bad_input(r, "was distilled from teacher", "give its own teacher")
    assert not (tmp_path / "j").exists()


@pytest.mark.parametrize("changes,needles", [
    ({"students": []}, ["students"]),
    ({"colour": "red"}, ["colour"]),
])
def test_bad_joint_spaces_are_one_line(trained_run, students, tmp_path, changes, needles):
    changes = dict(changes)
    space = _joint_file(tmp_path, trained_run, changes.pop("students", students.values()), **changes)
    r = invoke("search-steps", "--space", space, "--out", tmp_path / "j", "--no-progress")
    assert_bad_input(r, *needles)
    assert not (tmp_path / "j").exists()


def test_a_student_that_cannot_fit_the_budget_is_refused_in_the_joint_budgets_units(trained_run, students, tmp_path):
    from ddsm.checkpoint import load_supernet
    from ddsm.cost import CostModel

    costs = CostModel.count(load_supernet(trained_run), (0.25, 0.5, 0.75, 1.0))
    r = costs.call(0.25) / costs.call(1.0)  # the narrowest width's share of one full-width call
    # a 1-step teacher fits budget 2r at width 0.25; the 3-step student needs 3r of the teacher's full-width step
    space = _joint_file(tmp_path, trained_run, [students[3]],
                        base_changes={"sampler": {"kind": "ddim", "steps": 1}, "segments": None, "budget": 2 * r})
    msg = assert_bad_input(invoke("search-steps", "--space", space, "--out", tmp_path / "j", "--no-progress"),
                           "cannot fit the joint budget", "its 3 steps at the narrowest width 0.25",
                           "of the teacher's full-width 1-step schedule", "drop it from students")
    assert f"cost {3 * r:.4g} of" in msg
    assert not (tmp_path / "j").exists()


def test_a_teacher_listed_as_a_student_and_two_students_of_one_k_are_refused(trained_run, students, tmp_path):
    r = invoke("search-steps", "--space", _joint_file(tmp_path, trained_run, [trained_run]), "--out",
               tmp_path / "j", "--no-progress")
    assert_bad_input(r, "is not a distilled student")
    twin = tmp_path / "twin"
    assert invoke("distill", "--teacher", trained_run, "--steps", "2", "--iters", "1", "--out", twin,
                  "--no-progress").exit_code == 0
    r = invoke("search-steps", "--space", _joint_file(tmp_path, trained_run, [students[2], twin]), "--out",
               tmp_path / "j", "--no-progress")
    assert_bad_input(r, "both take 2 steps")
    assert not (tmp_path / "j").exists()


@pytest.fixture
def teacher_of_another_run(tmp_path, tiny_data):
    """A second tiny teacher with another noise schedule, so another fingerprint."""
    from ddsm.config import RunConfig, validate
    from ddsm.train import Trainer

    from conftest import run_config_dict

    d = run_config_dict()
    d["model"]["diffusion"]["num_timesteps"] = 60  # another noise schedule: another fingerprint
    out = tmp_path / "other"
    Trainer(validate(RunConfig, d), out, device="cpu", data=tiny_data, progress=False).run()
    return out


def test_a_base_space_with_a_screen_is_refused_in_one_line(trained_run, students, tmp_path):
    screen = {"metric": "proxy_linear", "num_samples": 2, "bins": 1, "promote": 1}
    r = invoke("search-steps", "--space", _joint_file(tmp_path, trained_run, students.values(), {"screen": screen}),
               "--out", tmp_path / "j", "--no-progress")
    assert_bad_input(r, "has a screen (two-stage evaluation)", "drop screen")
    assert not (tmp_path / "j").exists()


BAD_RUNNER_OPTIONS = [
    (["--workers", "0"], "workers 0 must be a whole number of at least 1"),
    (["--chunk-size", "0"], "chunk_size 0 must be a whole number of at least 1"),
    (["--runner", "ray", "--workers", "-1"], "workers -1 must be a whole number of at least 1"),
    (["--runner", "ray", "--workers", "1000"], "workers 1000 exceeds this machine's"),
]


def test_bad_runner_options_are_refused_before_the_folder_is_written(trained_run, students, tmp_path):
    space = _joint_file(tmp_path, trained_run, students.values())
    for options, needle in BAD_RUNNER_OPTIONS:
        r = invoke("search-steps", "--space", space, "--out", tmp_path / "j", "--no-progress", *options)
        assert_bad_input(r, needle)
        assert not (tmp_path / "j").exists(), options
    # the corrected command then runs (no leftover joint.json or lock refuses it)
    ok = invoke("search-steps", "--space", space, "--out", tmp_path / "j", "--no-progress")
    assert ok.exit_code == 0, ok.output


def test_a_resume_with_another_space_names_only_what_differs(trained_run, students, tmp_path):
    out = tmp_path / "j"
    first = _joint_file(tmp_path, trained_run, students.values(), {"generations": 1})
    assert invoke("search-steps", "--space", first, "--out", out, "--no-progress").exit_code == 0
    other = _joint_file(tmp_path, trained_run, students.values(), {"generations": 1, "budget": 0.5})
    r = invoke("search-steps", "--space", other, "--out", out, "--resume", "--no-progress")
    line = assert_bad_input(r, "holds a joint search of other space (space: saved ", "resume with the same --space")
    assert "models" not in line  # the models did not change: no two identical dicts


@pytest.mark.parametrize("edit, needles", [
    (lambda m: m.update(proxy=float("nan")), ["member 1", "proxy"]),
    (lambda m: m.update(share=1e309), ["member 1", "share"]),
    (lambda m: m.update(widths=m["widths"] + [1.0]), ["member 1", "widths for a"]),
    (lambda m: m.update(checkpoint="/etc/passwd"), ["member 1", "checkpoint '/etc/passwd'", "was the file edited?"]),
    (lambda m: m.update(steps=0), ["member 1", "steps"]),
])
def test_export_steps_refuses_a_hand_edited_front(trained_run, students, tmp_path, edit, needles):
    """Issue 28, finding 7: a front.json edited by hand used to be exported as it was, with exit 0."""
    out = tmp_path / "joint"
    assert invoke("search-steps", "--space", _joint_file(tmp_path, trained_run, [students[2]]), "--out", out,
                  "--no-progress").exit_code == 0
    doc = json.loads((out / "front.json").read_text())
    edit(doc["members"][0])
    (out / "front.json").write_text(json.dumps(doc))  # json writes NaN and 1e309 as NaN and Infinity
    assert_bad_input(invoke("export-steps", out, "--out", tmp_path / "exp", "--no-progress"), *needles)
    assert not (tmp_path / "exp").exists()


def test_a_joint_search_with_reuse_genes_carries_cached_steps_into_every_schedule(trained_run, students, tmp_path):
    """Steps x widths x cache: each model's space gets reuse genes; the merged front, its schedule files and the
    verdict's samples keep each member's cached steps."""
    import torch

    from ddsm.checkpoint import load_supernet
    from ddsm.diffusion import NoiseSchedule
    from ddsm.samplers import generate, make_sampler
    from ddsm.schedule import Schedule
    from ddsm.search.joint import load_joint, member_plan

    space = _joint_file(tmp_path, trained_run, students.values(), base_changes={"reuse": {"level": 1}})
    out = tmp_path / "joint"
    r = invoke("search-steps", "--space", space, "--out", out, "--no-progress")
    assert r.exit_code == 0, r.output
    run = load_joint(out)
    cached = [m for m in run.front.to_dict(orient="records") if isinstance(m.get("cached"), tuple)]
    assert cached, "the cheap end of a cache-priced front caches"
    for m in cached:
        plan = member_plan(m)
        assert plan.cache_level == 1 and not plan.cached[0] and len(plan.cached) == m["steps"]
    exp = tmp_path / "exp"
    r = invoke("export-steps", out, "--out", exp, "--no-progress")
    assert r.exit_code == 0, r.output
    nets = {"teacher": load_supernet(trained_run), "k2": load_supernet(students[2]), "k3": load_supernet(students[3])}
    for f, m in zip(sorted(exp.glob("front-*.json")), run.front.to_dict(orient="records")):
        s = Schedule.load(f, nets[m["model"]].config)
        assert s.plan() == member_plan(m)  # the cached steps are in the file, not only in the cost
        net = nets[m["model"]]
        x = generate(net.model, make_sampler(NoiseSchedule(net.config.diffusion), s.sampler), s, [0, 1])
        assert torch.isfinite(x).all()


def test_a_students_space_is_guided_as_the_teachers_unless_guidance_is_distilled_in(tmp_path):
    from ddsm.config import StudentConfig
    from ddsm.samplers.base import guided_passes
    from ddsm.search.config import SearchConfig
    from ddsm.search.joint import student_space

    base = SearchConfig.load(write_space(tmp_path / "base.yaml", sampler={"kind": "ddim", "steps": 4,
                                                                          "guidance_scale": 1.5}))
    plain = StudentConfig(teacher="0" * 16, phi=(0, 20, 40))
    guided = plain.model_copy(update={"guidance_scale": 1.5})
    space, _ = student_space(base, plain, 0.75)
    assert space.sampler.guidance_scale == 1.5 and guided_passes(space.sampler) == 2  # guided at sampling: two passes a step
    space, _ = student_space(base, guided, 0.75)
    assert space.sampler.guidance_scale is None and guided_passes(space.sampler) == 1  # guided transition: one pass a step
    assert space.sampler.timesteps == (40.0, 20.0, 0.0)


def test_a_guided_students_calls_cost_one_pass_on_the_guided_teachers_axis(tmp_path, tiny_model_config):
    import torch

    from ddsm.checkpoint import save_supernet
    from ddsm.config import ModelConfig, validate
    from ddsm.distill import student_config
    from ddsm.errors import DDSMError
    from ddsm.nn import build_backbone
    from ddsm.search.joint import JointSpace, prepare_joint

    config = validate(ModelConfig, {**tiny_model_config.model_dump(mode="json"),
                                    "unet": {**tiny_model_config.unet.model_dump(mode="json"), "num_classes": 10}})
    torch.manual_seed(0)
    model = build_backbone(config).eval()
    files = {}
    for name, cfg in {"teacher": config, "plain": student_config(config, 2),
                      "guided": student_config(config, 3, guidance_scale=1.5)}.items():
        files[name] = tmp_path / f"{name}.safetensors"
        save_supernet(files[name], model, cfg, state_dict=model.state_dict(), step=0)
    base = write_space(tmp_path / "base.yaml", sampler={"kind": "ddim", "steps": 4, "guidance_scale": 1.5})
    (tmp_path / "joint.yaml").write_text(yaml.safe_dump({"base": str(base), "teacher": str(files["teacher"]),
                                                        "students": [str(files["plain"]), str(files["guided"])]}))
    arms = {a.steps: a for a in prepare_joint(JointSpace.load(tmp_path / "joint.yaml"))}
    # the teacher's full-width 4 guided steps are 8 passes: the plain 2-step student is guided too (4 passes), the
    # 3-step student with guidance distilled in runs 3
    assert arms[2].scale == pytest.approx(4 / 8) and arms[3].scale == pytest.approx(3 / 8)
    assert arms[2].space.sampler.guidance_scale == 1.5 and arms[3].space.sampler.guidance_scale is None
    # against an unguided (or differently guided) teacher the guided student's proxy would judge another model
    for sampler in ({"kind": "ddim", "steps": 4}, {"kind": "ddim", "steps": 4, "guidance_scale": 2.0}):
        write_space(base, sampler=sampler)
        with pytest.raises(DDSMError, match="guidance scale 1.5 distilled in.*set sampler.guidance_scale 1.5"):
            prepare_joint(JointSpace.load(tmp_path / "joint.yaml"))
    # searched alone, its space must not guide it a second time
    from ddsm.search import SearchConfig, prepare_search

    space = write_space(tmp_path / "alone.yaml", segments=None, sampler={
        "kind": "ddim", "steps": 3, "timesteps": [float(t) for t in reversed(student_config(config, 3).student.phi)],
        "guidance_scale": 1.5})
    with pytest.raises(DDSMError, match="guidance_scale 1.5: this student has guidance scale 1.5 distilled in"):
        prepare_search(SearchConfig.load(space), files["guided"])
