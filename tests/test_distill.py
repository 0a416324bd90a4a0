"""SFDDM: the student's inputs are the teacher's, its targets are the teacher's multi-step transitions, resume is exact."""

from __future__ import annotations

import pytest
import torch

from ddsm.config import ModelConfig, RunConfig, validate
from ddsm.diffusion.noise import NoiseSchedule
from ddsm.diffusion.losses import hidden_loss
from ddsm.distill import eps_for_jump, student_config, student_phi, student_sampler, teacher_target
from ddsm.errors import DDSMError
from ddsm.samplers import generate, make_sampler
from ddsm.train import Trainer

from conftest import TINY_T, randomise, run_config_dict


@pytest.fixture
def teacher_file(tmp_path, tiny_model_config):
    """A tiny random-weight teacher saved as a supernet file."""
    from ddsm.checkpoint import save_supernet
    from ddsm.nn.unet import SlimUNet

    model = randomise(SlimUNet(tiny_model_config.unet), seed=7, std=0.1).eval()
    path = tmp_path / "teacher.safetensors"
    save_supernet(path, model, tiny_model_config, state_dict=model.state_dict(), step=0)
    return path


def _distill_config(teacher_file, tiny_model_config, steps=4, **distill):
    student = student_config(tiny_model_config, steps)
    d = run_config_dict(iters=3)
    d["model"] = student.model_dump(mode="json")
    d["distill"] = {"teacher": str(teacher_file), "steps": steps, **distill}
    return validate(RunConfig, d)


# ---------------------------------------------------------------------------- phi and the student's sampler


def test_phi_starts_at_zero_and_spreads_over_the_teachers_timesteps():
    assert student_phi(1000, 4) == (0, 333, 666, 999)
    assert student_phi(1000, 4, "leading") == (0, 250, 500, 750)
    assert student_phi(1000, 1) == (0,)
    assert student_phi(50, 50) == tuple(range(50))


@pytest.mark.parametrize("steps", [0, 51, -1, 2.5, True])
def test_bad_step_counts_are_one_line_errors(steps):
    with pytest.raises(DDSMError, match=r"not a number of student steps in 1\.\.50"):
        student_phi(50, steps)


def test_student_fingerprint_names_teacher_and_steps_and_the_teachers_is_unchanged(tiny_model_config):
    a, b = student_config(tiny_model_config, 4), student_config(tiny_model_config, 2)
    assert a.student.teacher == tiny_model_config.fingerprint()
    assert len({a.fingerprint(), b.fingerprint(), tiny_model_config.fingerprint()}) == 3
    # a config without a student (nor a diffusers model) hashes as it did before either existed
    from ddsm.io import stable_hash

    assert tiny_model_config.fingerprint() == stable_hash({k: v for k, v in tiny_model_config.model_dump(mode="json")
                                                           .items() if k not in ("student", "diffusers")})


def test_student_sampler_visits_phi_from_the_noisiest(tiny_model_config):
    st = student_config(tiny_model_config, 3).student
    cfg = student_sampler(st)
    sampler = make_sampler(NoiseSchedule(tiny_model_config.diffusion), cfg)
    assert sampler.timesteps.tolist() == [float(t) for t in reversed(st.phi)]


def test_explicit_timesteps_must_match_the_steps_and_descend():
    from ddsm.samplers import SamplerConfig

    with pytest.raises(DDSMError, match="2 explicit timesteps for 3 steps"):
        validate(SamplerConfig, {"steps": 3, "timesteps": [10, 0]})
    with pytest.raises(DDSMError, match="strictly descending"):
        validate(SamplerConfig, {"steps": 2, "timesteps": [0, 10]})


# ---------------------------------------------------------------------------- the target


def test_students_noisy_input_at_step_k_is_the_teachers_at_phi_k(teacher_file, tiny_model_config, tiny_data,
                                                                   tmp_path, monkeypatch):
    cfg = _distill_config(teacher_file, tiny_model_config)
    d = Trainer(cfg, tmp_path / "run", device="cpu", data=tiny_data, progress=False)
    seen = {}

    def spy(teacher, schedule, x, k, phi, sub_steps, prediction, cond=None, guidance_scale=None):
        seen.update(x=x.clone(), k=k.clone())
        return teacher_target(teacher, schedule, x, k, phi, sub_steps, prediction, cond, guidance_scale)

    monkeypatch.setattr("ddsm.distill.teacher_target", spy)
    gen_state = d.gen.get_state()
    d.train_step()
    # Replay the draws: the same images, steps and noise through the teacher's own forward process.
    g = torch.Generator()
    g.set_state(gen_state)
    idx = torch.randint(len(d.x_train), (cfg.train.batch_size,), generator=g)
    k = torch.randint(len(d.target.phi), (cfg.train.batch_size,), generator=g)
    eps = torch.randn((cfg.train.batch_size, *d.x_train.shape[1:]), generator=g)
    teacher_state = NoiseSchedule(tiny_model_config.diffusion).q_sample(d.x_train[idx], d.target.phi[k], eps)
    assert torch.equal(seen["k"], k)
    torch.testing.assert_close(seen["x"], teacher_state, rtol=0, atol=0)


def test_with_k_equal_to_the_teachers_steps_the_target_is_the_teachers_own_step(teacher_file, tiny_model_config):
    from ddsm.checkpoint import load_supernet

    teacher = load_supernet(teacher_file).model
    schedule = NoiseSchedule(tiny_model_config.diffusion)
    phi = torch.tensor(student_phi(TINY_T, TINY_T))  # phi_k = k: every teacher timestep is a student step
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 1, 8, 8, generator=gen)
    k = torch.tensor([0, 1, 5, 20, 48, 49])
    target, hidden = teacher_target(teacher, schedule, x, k, phi, sub_steps=1)
    with torch.no_grad():
        eps, h = teacher(x, phi[k].float(), return_hidden=True)
    torch.testing.assert_close(target, eps, rtol=1e-4, atol=1e-4)  # one DDIM step there and solved back: float32
    torch.testing.assert_close(hidden, h)


def test_with_one_sub_step_the_target_is_the_teachers_own_output_at_any_k(teacher_file, tiny_model_config):
    # the authors' code's output target (the teacher's single output at x_{phi_k}) is ddsm's at sub_steps = 1,
    # for a student of few steps too, where each jump spans many teacher timesteps
    from ddsm.checkpoint import load_supernet

    teacher = load_supernet(teacher_file).model
    schedule = NoiseSchedule(tiny_model_config.diffusion)
    phi = torch.tensor(student_phi(TINY_T, 4))
    x = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    k = torch.tensor([0, 1, 2, 3, 3, 2, 1, 0])
    target, _ = teacher_target(teacher, schedule, x, k, phi, sub_steps=1)
    with torch.no_grad():
        eps = teacher(x, phi[k].float())
    torch.testing.assert_close(target, eps, rtol=1e-4, atol=1e-4)
    further, _ = teacher_target(teacher, schedule, x, k, phi, sub_steps=3)
    assert not torch.allclose(further[k > 0], eps[k > 0], atol=1e-3)  # more sub-steps: the transition, not the call


def test_the_target_jump_lands_where_the_teachers_sub_steps_do(teacher_file, tiny_model_config):
    from ddsm.checkpoint import load_supernet

    teacher = load_supernet(teacher_file).model
    schedule = NoiseSchedule(tiny_model_config.diffusion)
    phi = torch.tensor(student_phi(TINY_T, 2))  # (0, 49)
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    target, _ = teacher_target(teacher, schedule, x, torch.ones(3, dtype=torch.long), phi, sub_steps=7)
    # the teacher's own 7-step DDIM from 49 to 0, unclipped, then one step of the student with the target
    ts = [49 - 49 * i / 7 for i in range(8)]
    xs = x
    with torch.no_grad():
        for a, b in zip(ts, ts[1:]):
            ab_a, ab_b = schedule.alpha_bar_at(a).float(), schedule.alpha_bar_at(b).float()
            e = teacher(xs, torch.full((3,), a))
            xs = ab_b.sqrt() * (xs - (1 - ab_a).sqrt() * e) / ab_a.sqrt() + (1 - ab_b).sqrt() * e
    ab_t, ab_s = schedule.alpha_bar_at(49.0).float(), schedule.alpha_bar_at(0.0).float()
    landed = ab_s.sqrt() * (x - (1 - ab_t).sqrt() * target) / ab_t.sqrt() + (1 - ab_s).sqrt() * target
    torch.testing.assert_close(landed, xs, rtol=1e-4, atol=1e-4)


def test_eps_for_jump_inverts_one_ddim_step():
    g = torch.Generator().manual_seed(2)
    x, e = torch.randn(4, 3, generator=g, dtype=torch.float64), torch.randn(4, 3, generator=g, dtype=torch.float64)
    ab_t, ab_s = torch.tensor(0.2, dtype=torch.float64), torch.tensor(0.9, dtype=torch.float64)
    x_s = ab_s.sqrt() * (x - (1 - ab_t).sqrt() * e) / ab_t.sqrt() + (1 - ab_s).sqrt() * e
    torch.testing.assert_close(eps_for_jump(x, x_s, ab_t, ab_s), e, rtol=1e-12, atol=1e-12)


def test_hidden_term_compares_the_narrow_map_with_the_teachers_first_channels():
    t = torch.randn(2, 8, 4, 4)
    assert float(hidden_loss(t[:, :2].clone(), t)) == 0.0
    assert float(hidden_loss(t[:, 2:4].clone(), t)) > 0


# ---------------------------------------------------------------------------- training


def test_an_untrained_student_is_the_teachers_k_step_ddim(teacher_file, tiny_model_config, tiny_data, tmp_path):
    from ddsm.checkpoint import load_supernet

    cfg = _distill_config(teacher_file, tiny_model_config, steps=3)
    d = Trainer(cfg, tmp_path / "run", device="cpu", data=tiny_data, progress=False)
    teacher = load_supernet(teacher_file).model
    sched = NoiseSchedule(tiny_model_config.diffusion)
    scfg = student_sampler(cfg.model.student)
    a = generate(d.model, make_sampler(sched, scfg), 1.0, [0, 1])
    b = generate(teacher, make_sampler(sched, scfg), 1.0, [0, 1])
    assert torch.equal(a, b)


def test_distillation_losses_are_finite_and_resume_is_bitwise_exact(teacher_file, tiny_model_config, tiny_data,
                                                                    tmp_path):
    def cfg(iters):
        c = _distill_config(teacher_file, tiny_model_config, sub_steps=2)
        return c.model_copy(update={"train": c.train.model_copy(update={"iters": iters})})

    a = Trainer(cfg(6), tmp_path / "a", device="cpu", data=tiny_data, progress=False)
    a.run()
    Trainer(cfg(3), tmp_path / "b", device="cpu", data=tiny_data, progress=False).run()
    b = Trainer(cfg(6), tmp_path / "b", device="cpu", data=tiny_data, progress=False)
    with pytest.warns(UserWarning, match="resuming with iters"):
        b.run(resume=True)
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert all(torch.equal(a.ema[k], b.ema[k]) for k in a.ema)


def test_a_teacher_of_another_architecture_is_refused(teacher_file, tiny_model_config, tiny_data, tmp_path):
    other = student_config(ModelConfig(unet=tiny_model_config.unet.model_copy(update={"base_channels": 16})), 4)
    d = run_config_dict()
    d["model"] = other.model_dump(mode="json")
    d["distill"] = {"teacher": str(teacher_file), "steps": 4}
    with pytest.raises(DDSMError, match="this student was distilled from"):
        Trainer(validate(RunConfig, d), tmp_path / "run", device="cpu", data=tiny_data, progress=False)
    assert not (tmp_path / "run").exists()


def test_run_config_needs_both_distill_and_student(teacher_file, tiny_model_config):
    d = run_config_dict()
    d["distill"] = {"teacher": str(teacher_file), "steps": 4}
    with pytest.raises(DDSMError, match="needs both distill and model.student"):
        validate(RunConfig, d)


# ---------------------------------------------------------------------------- the command


def test_cli_distills_resumes_and_samples_with_the_student(trained_run, tmp_path):
    from cli_helpers import invoke

    from ddsm.checkpoint import load_supernet

    out = tmp_path / "student"
    r = invoke("distill", "--teacher", trained_run, "--steps", "3", "--iters", "2", "--out", out, "--no-progress")
    assert r.exit_code == 0, r.output
    assert "3-step v_prediction student" in r.output  # new students predict v by default
    r = invoke("distill", "--out", out, "--resume", "--iters", "4", "--no-progress")
    assert r.exit_code == 0, r.output
    net = load_supernet(out)
    assert net.config.student.steps == 3 and net.config.student.teacher == load_supernet(trained_run).fingerprint


@pytest.mark.parametrize("args,needles", [
    (["--steps", "0"], ["--steps 0", "1..50"]),
    (["--steps", "51"], ["--steps 51", "1..50"]),
    (["--steps", "2", "--sub-steps", "0", "--iters", "1"], ["sub_steps"]),
    (["--steps", "2", "--spacing", "cosine"], ["--spacing"]),
    (["--steps", "2", "--guidance-scale", "2"], ["--guidance-scale 2", "class-conditional"]),
])
def test_bad_distill_input_is_one_line_and_writes_nothing(trained_run, tmp_path, args, needles):
    from cli_helpers import assert_bad_input, invoke

    out = tmp_path / "student"
    assert_bad_input(invoke("distill", "--teacher", trained_run, *args, "--out", out, "--no-progress"), *needles)
    assert not out.exists()


def test_resume_with_a_teacher_of_another_architecture_is_refused(trained_run, teacher_file, tmp_path):
    from cli_helpers import assert_bad_input, invoke

    out = tmp_path / "student"
    assert invoke("distill", "--teacher", trained_run, "--steps", "2", "--iters", "1", "--out", out,
                  "--no-progress").exit_code == 0
    before = sorted(p.name for p in out.iterdir())
    other = tmp_path / "other.safetensors"
    from ddsm.checkpoint import load_supernet, save_supernet
    from ddsm.config import ModelConfig

    t = load_supernet(teacher_file)
    cfg = ModelConfig(unet=t.config.unet, diffusion=t.config.diffusion.model_copy(update={"num_timesteps": 60}))
    from ddsm.nn.unet import SlimUNet

    m = SlimUNet(cfg.unet)
    save_supernet(other, m, cfg, state_dict=m.state_dict(), step=0)
    r = invoke("distill", "--teacher", other, "--out", out, "--resume", "--iters", "2", "--no-progress")
    assert_bad_input(r, "--teacher", "was distilled from")
    assert sorted(p.name for p in out.iterdir()) == before


def test_ddsm_sample_runs_a_student_on_its_own_k_steps(trained_run, tmp_path):
    import json

    from cli_helpers import assert_bad_input, invoke

    out = tmp_path / "student"
    assert invoke("distill", "--teacher", trained_run, "--steps", "3", "--iters", "1", "--out", out,
                  "--no-progress").exit_code == 0
    r = invoke("sample", "--checkpoint", out, "--width", "0.5", "--num", "2", "--out", tmp_path / "s", "--no-progress")
    assert r.exit_code == 0, r.output
    info = json.loads((tmp_path / "s" / "sample.json").read_text())
    assert info["sampler"]["steps"] == 3 and info["sampler"]["timesteps"] == [49.0, 24.0, 0.0]
    assert info["widths"] == [0.5, 0.5, 0.5]
    r = invoke("sample", "--checkpoint", out, "--width", "1", "--steps", "10", "--num", "2", "--out", tmp_path / "t",
               "--no-progress")
    assert_bad_input(r, "--steps", "3-step student")
    assert not (tmp_path / "t").exists()


def test_evaluate_and_search_take_a_students_own_sampler(trained_run, tmp_path):
    from cli_helpers import assert_bad_input, invoke, write_space

    out = tmp_path / "student"
    assert invoke("distill", "--teacher", trained_run, "--steps", "2", "--iters", "1", "--out", out,
                  "--no-progress").exit_code == 0
    r = invoke("evaluate", "--checkpoint", out, "--width", "0.5", "--num", "2", "--no-progress")
    assert r.exit_code == 0, r.output
    space = write_space(tmp_path / "s.yaml")  # a 4-step sampler: not this student's
    r = invoke("search", "--space", space, "--checkpoint", out, "--out", tmp_path / "srch", "--no-progress")
    assert_bad_input(r, "distilled 2-step student", "sampler.timesteps [49.0, 0.0]")
    assert not (tmp_path / "srch").exists()
    ok = write_space(tmp_path / "ok.yaml", sampler={"kind": "ddim", "steps": 2, "timesteps": [49.0, 0.0]},
                     segments=None)
    r = invoke("search", "--space", ok, "--checkpoint", out, "--out", tmp_path / "srch2", "--no-progress")
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("spacing,kind,ok", [("leading", "ddim", True), ("linspace", "ddpm", True),
                                             ("linspace", "ddim", False)])
def test_a_student_runs_in_a_diffusers_loop_when_diffusers_can_walk_its_timesteps(tiny_model_config, spacing, kind,
                                                                                 ok):
    pytest.importorskip("diffusers")
    from ddsm.integrations.diffusers import make_diffusers_scheduler

    st = student_config(tiny_model_config, 5, spacing)
    cfg = student_sampler(st.student, kind=kind)
    if not ok:
        with pytest.raises(DDSMError, match="cannot walk this student's timesteps"):
            make_diffusers_scheduler(st, cfg)
        return
    sched = make_diffusers_scheduler(st, cfg)
    assert [float(t) for t in sched.timesteps] == list(cfg.timesteps)


# ---------------------------------------------------------------------------- a class-conditional teacher


@pytest.fixture
def conditional_teacher(tmp_path, tiny_model_config):
    """A tiny random-weight class-conditional teacher (10 classes and the null label) saved as a supernet file."""
    from ddsm.checkpoint import save_supernet
    from ddsm.nn import build_backbone

    config = validate(ModelConfig, {**tiny_model_config.model_dump(mode="json"),
                                    "unet": {**tiny_model_config.unet.model_dump(mode="json"), "num_classes": 10}})
    model = randomise(build_backbone(config), seed=7, std=0.1).eval()
    path = tmp_path / "conditional-teacher.safetensors"
    save_supernet(path, model, config, state_dict=model.state_dict(), step=0)
    return path, config


def test_a_conditional_teachers_target_is_its_labelled_transition_and_the_null_label_its_unconditional_one(
        conditional_teacher):
    from ddsm.checkpoint import load_supernet

    path, config = conditional_teacher
    teacher = load_supernet(path).model
    schedule = NoiseSchedule(config.diffusion)
    phi = torch.tensor(student_phi(TINY_T, 2))
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    k = torch.tensor([1, 1, 0, 1])
    y = torch.tensor([3, 7, 3, 10])  # 10: the null label
    target, _ = teacher_target(teacher, schedule, x, k, phi, 3, "v_prediction", cond=y)
    for i in range(4):  # each image's target is the one computed for it alone with its label
        one, _ = teacher_target(teacher, schedule, x[i:i + 1], k[i:i + 1], phi, 3, "v_prediction", cond=y[i:i + 1])
        torch.testing.assert_close(target[i:i + 1], one, rtol=1e-5, atol=1e-5)
    plain, _ = teacher_target(teacher, schedule, x[3:], k[3:], phi, 3, "v_prediction")  # no labels: the null one
    torch.testing.assert_close(target[3:], plain, rtol=1e-5, atol=1e-5)
    other, _ = teacher_target(teacher, schedule, x[:1], k[:1], phi, 3, "v_prediction", cond=torch.tensor([5]))
    assert not torch.allclose(other, target[:1])  # the label changes the transition


def test_a_conditional_teachers_v_student_learns_with_labels_and_an_eps_student_is_refused(conditional_teacher,
                                                                                           tmp_path):
    from ddsm.data import ImageData

    path, config = conditional_teacher
    g = torch.Generator().manual_seed(5)
    data = ImageData("random", torch.rand(64, 1, 8, 8, generator=g) * 2 - 1, torch.rand(8, 1, 8, 8, generator=g) * 2 - 1,
                     train_labels=torch.randint(10, (64,), generator=g), holdout_labels=torch.randint(10, (8,), generator=g))
    seen = []

    def run(prediction):
        d = run_config_dict(iters=2)
        d["model"] = student_config(config, 2, prediction=prediction).model_dump(mode="json")
        d["distill"] = {"teacher": str(path), "steps": 2}
        return Trainer(validate(RunConfig, d), tmp_path / prediction, device="cpu", data=data, progress=False)

    trainer = run("v_prediction")
    draw = trainer.target.draw
    trainer.target.draw = lambda t: seen.append(draw(t)) or seen[-1]
    trainer.run()
    assert len(seen) == 2 and all(b.cond is not None and b.cond.shape == (b.x_t.shape[0],) for b in seen)
    # labels from the data, some dropped to the null label (train.label_dropout 0.1 of 64 images per batch)
    assert all(int(b.cond.max()) <= 10 for b in seen) and any(int((b.cond < 10).sum()) > 0 for b in seen)
    with pytest.raises(DDSMError, match="distil a v student of it"):
        run("epsilon")


# ---------------------------------------------------------------------------- guided distillation (Meng et al. 2023)


class _Guided(torch.nn.Module):
    """A conditional teacher seen as one network whose output is its guided ε for fixed labels ``y``."""

    def __init__(self, teacher, y, scale):
        super().__init__()
        self.teacher, self.y, self.scale = teacher, y, scale

    def forward(self, x, t, return_hidden=False):
        null = torch.full_like(self.y, self.teacher.num_classes)
        eps_c, hidden = self.teacher(x, t, return_hidden=True, cond=self.y)
        eps = self.teacher(x, t, cond=null) + self.scale * (eps_c - self.teacher(x, t, cond=null))
        return (eps, hidden) if return_hidden else eps


@pytest.mark.parametrize("sub_steps", [1, 3])
def test_a_guided_target_follows_the_teachers_guided_eps_at_every_sub_step(conditional_teacher, sub_steps):
    from ddsm.checkpoint import load_supernet

    path, config = conditional_teacher
    teacher = load_supernet(path).model
    schedule = NoiseSchedule(config.diffusion)
    phi = torch.tensor(student_phi(TINY_T, 3))
    x = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    y = torch.tensor([3, 7, 1, 0, 9])
    for k in (torch.tensor([1, 2, 2, 1, 2]), torch.zeros(5, dtype=torch.long)):  # every image jumps / none does
        target, hidden = teacher_target(teacher, schedule, x, k, phi, sub_steps, "v_prediction", cond=y,
                                        guidance_scale=1.7)
        want, want_hidden = teacher_target(_Guided(teacher, y, 1.7), schedule, x, k, phi, sub_steps, "v_prediction")
        torch.testing.assert_close(target, want, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(hidden, want_hidden)  # the conditional call's hidden map
    k = torch.tensor([0, 1, 2, 2, 1])
    target, _ = teacher_target(teacher, schedule, x, k, phi, sub_steps, "v_prediction", cond=y, guidance_scale=1.7)
    plain, _ = teacher_target(teacher, schedule, x, k, phi, sub_steps, "v_prediction", cond=y)
    assert not torch.allclose(plain, target, atol=1e-4)  # guidance changes the transition
    zero, _ = teacher_target(teacher, schedule, x, k, phi, sub_steps, "v_prediction", cond=y, guidance_scale=0.0)
    null, _ = teacher_target(teacher, schedule, x, k, phi, sub_steps, "v_prediction", cond=torch.full_like(y, 10))
    torch.testing.assert_close(zero, null, rtol=1e-5, atol=1e-5)  # scale 0: the unconditional transition


def test_a_guided_student_records_its_scale_and_samples_unguided(conditional_teacher, tiny_model_config):
    from ddsm.config import ModelConfig
    from ddsm.sampler_choice import choose_sampler

    _, config = conditional_teacher
    guided = student_config(config, 4, guidance_scale=1.5)
    plain = student_config(config, 4)
    assert guided.student.guidance_scale == 1.5 and plain.student.guidance_scale is None
    assert guided.fingerprint() != plain.fingerprint()
    # a student distilled before guided distillation keeps its fingerprint: the unset field is not hashed
    old = plain.model_dump(mode="json")
    del old["student"]["guidance_scale"]
    assert validate(ModelConfig, old).fingerprint() == plain.fingerprint()
    from ddsm.checkpoint import load_supernet

    shipped = load_supernet("digits-sfddm-k4")  # shipped before the field existed, with this fingerprint
    assert shipped.config.fingerprint() == shipped.header["fingerprint"] == "4874ebf7fbb05a1e"
    for scale in (None, 1.5):  # unset or the distilled scale: the conditional output alone, one call per step
        cfg = student_sampler(guided.student, **({} if scale is None else {"guidance_scale": scale}))
        assert cfg.guidance_scale is None and cfg.timesteps == student_sampler(plain.student).timesteps
    with pytest.raises(DDSMError, match=r"--guidance-scale 3 cannot apply.*guidance scale 1.5 is distilled"):
        choose_sampler(guided, [], {"guidance_scale": 3.0})
    assert student_sampler(plain.student, guidance_scale=3.0).guidance_scale == 3.0  # guided at sampling, as before


@pytest.mark.parametrize("scale,prediction,needle", [
    (2.0, "epsilon", "needs a v student"),
    (1.0, "v_prediction", "guides nothing"),
    (-1.0, "v_prediction", "guidance_scale"),
    (float("nan"), "v_prediction", "guidance_scale"),
])
def test_bad_guided_students_are_refused(conditional_teacher, scale, prediction, needle):
    _, config = conditional_teacher
    with pytest.raises(DDSMError, match=needle):
        student_config(config, 4, prediction=prediction, guidance_scale=scale)


def test_guided_distillation_of_an_unconditional_teacher_is_refused(tiny_model_config):
    with pytest.raises(DDSMError, match="--guidance-scale 2 needs a class-conditional teacher"):
        student_config(tiny_model_config, 4, guidance_scale=2.0)


def test_a_guided_student_trains_with_finite_losses_and_resumes_bit_exactly(conditional_teacher, tmp_path):
    import json

    from ddsm.data import ImageData

    path, config = conditional_teacher
    g = torch.Generator().manual_seed(6)
    data = ImageData("random", torch.rand(64, 1, 8, 8, generator=g) * 2 - 1, torch.rand(8, 1, 8, 8, generator=g) * 2 - 1,
                     train_labels=torch.randint(10, (64,), generator=g), holdout_labels=torch.randint(10, (8,), generator=g))

    seen = []

    def spy(*args, **kwargs):
        seen.append(args[8] if len(args) > 8 else kwargs.get("guidance_scale"))
        return teacher_target(*args, **kwargs)

    def trainer(out, iters):
        d = run_config_dict(iters=iters)
        d["model"] = student_config(config, 2, guidance_scale=2.0).model_dump(mode="json")
        d["distill"] = {"teacher": str(path), "steps": 2, "sub_steps": 2}
        return Trainer(validate(RunConfig, d), out, device="cpu", data=data, progress=False)

    a = trainer(tmp_path / "a", 4)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("ddsm.distill.teacher_target", spy)
        a.run()
    assert seen == [2.0] * 4  # every batch's target is the guided transition
    trainer(tmp_path / "b", 2).run()
    b = trainer(tmp_path / "b", 4)
    with pytest.warns(UserWarning, match="resuming with iters"):
        b.run(resume=True)
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    losses = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert losses and all(torch.isfinite(torch.tensor(v)) for r in losses for key, v in r.items()
                          if key.startswith(("loss@", "hidden@")))
    assert a.config.model.student.guidance_scale == 2.0


@pytest.mark.parametrize("k, scale, step, of", [(2, None, 200, 500), (4, 1.5, 180, 300), (8, None, 200, 500)])
def test_the_shipped_mnist_students_are_v_students_of_the_shipped_mnist_unet(k, scale, step, of):
    from ddsm.checkpoint import data_config_for, load_supernet
    from ddsm.metrics.featurenet import featurenet_for

    name = f"mnist-sfddm-k{k}"
    student, teacher = load_supernet(name), load_supernet("mnist-unet")
    st = student.config.student
    assert st.teacher == teacher.fingerprint and st.steps == k and st.guidance_scale == scale
    assert student.config.diffusion.prediction_type == "v_prediction" and student.model.num_classes == 10
    # an EMA snapshot chosen on search seeds, not the run's end: its recipe says which
    assert student.header["step"] == student.header["recipe"]["iters"] == step
    assert student.header["recipe"]["snapshot_of"] == of
    assert data_config_for(name).source == "mnist" and featurenet_for("auto", name) == "mnist"
    if scale is None:  # learnt both transitions: guided when sampled
        assert student_sampler(st, guidance_scale=1.5).guidance_scale == 1.5
        return
    # scale distilled in: sampled unguided on the teacher's timesteps phi, noisiest first; another scale would
    # guide it twice
    assert student_sampler(st).guidance_scale is None
    assert student_sampler(st, guidance_scale=1.5).timesteps == tuple(float(t) for t in reversed(st.phi))
    with pytest.raises(DDSMError, match="--guidance-scale 2 cannot apply"):
        student_sampler(st, guidance_scale=2.0)
