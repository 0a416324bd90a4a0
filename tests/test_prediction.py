"""What a model outputs (ε, v, x0): the conversions, the samplers against diffusers', and v-predicting SFDDM students."""

from __future__ import annotations

import pytest
import torch

from ddsm.config import DiffusionConfig, ModelConfig
from ddsm.diffusion.noise import NoiseSchedule
from ddsm.diffusion.prediction import PREDICTION_TYPES, eps_and_x0, model_target
from ddsm.distill import student_config, teacher_target, x0_for_jump
from ddsm.errors import DDSMError
from ddsm.samplers import SamplerConfig, make_sampler

from cli_helpers import assert_bad_input, invoke
from conftest import TINY_T, randomise

KINDS = list(PREDICTION_TYPES)


@pytest.mark.parametrize("kind", KINDS)
def test_a_target_converts_back_to_its_noise_and_clean_image(kind):
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 1, 8, 8, generator=g, dtype=torch.float64), torch.randn(4, 1, 8, 8, generator=g,
                                                                                          dtype=torch.float64)
    ab = torch.tensor([0.02, 0.3, 0.7, 0.98], dtype=torch.float64).reshape(-1, 1, 1, 1)
    x = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    e, c = eps_and_x0(model_target(eps, x0, ab, kind), x, ab, kind)
    torch.testing.assert_close(e, eps)
    torch.testing.assert_close(c, x0)


def test_the_default_prediction_type_keeps_every_fingerprint():
    plain, eps = ModelConfig(), ModelConfig(diffusion=DiffusionConfig(prediction_type="epsilon"))
    v = ModelConfig(diffusion=DiffusionConfig(prediction_type="v_prediction"))
    assert plain.fingerprint() == eps.fingerprint() != v.fingerprint()
    assert "prediction_type" not in plain.model_dump(mode="json")["diffusion"]


@pytest.mark.parametrize("kind", ["v_prediction", "sample"])
@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_a_step_on_any_prediction_type_matches_diffusers(kind, sampler):
    """ddsm's step and diffusers' (made by the bridge with the model's prediction_type) on the same output."""
    pytest.importorskip("diffusers")
    from ddsm.integrations.diffusers import make_diffusers_scheduler

    config = ModelConfig(diffusion=DiffusionConfig(num_timesteps=TINY_T, prediction_type=kind))
    scfg = SamplerConfig(kind=sampler, steps=5, clip_sample=False)
    ours = make_sampler(NoiseSchedule(config.diffusion), scfg)
    ours.set_timesteps(scfg.steps)
    theirs = make_diffusers_scheduler(config, scfg)
    g = torch.Generator().manual_seed(1)
    for t in ours.timesteps.tolist():
        x, out, noise = (torch.randn(2, 1, 8, 8, generator=g) for _ in range(3))
        a = ours.step(out, t, x, noise=noise)
        if sampler == "ddim":
            torch.testing.assert_close(a.prev_sample, theirs.step(out, int(t), x, eta=0.0).prev_sample,
                                       atol=1e-5, rtol=1e-5)
        # DDPM: diffusers draws its own noise, so the clean-image estimate the step is built on is compared
        b = theirs.step(out, int(t), x).pred_original_sample
        torch.testing.assert_close(a.pred_original_sample, b, atol=1e-5, rtol=1e-5)


@pytest.fixture
def teacher(tiny_model_config):
    from ddsm.nn.unet import SlimUNet

    return randomise(SlimUNet(tiny_model_config.unet), seed=7, std=0.1).eval()


def test_the_v_target_makes_one_student_step_land_where_the_teachers_sampler_did(teacher, tiny_model_config):
    """The landing is the teacher's own DDIM sampler's (x0 clipped, as it samples) over the sub-steps."""
    schedule = NoiseSchedule(tiny_model_config.diffusion)
    phi = torch.tensor([0, 9, 24, TINY_T - 1])
    g = torch.Generator().manual_seed(2)
    side, sub = tiny_model_config.unet.image_size, 3
    x = torch.randn(4, 1, side, side, generator=g)
    k = torch.tensor([3, 2, 1, 3])
    v, _ = teacher_target(teacher, schedule, x, k, phi, sub_steps=sub, prediction="v_prediction")
    v_config = tiny_model_config.diffusion.model_copy(update={"prediction_type": "v_prediction"})
    for i in range(len(k)):
        ts, te = float(phi[k[i]]), float(phi[k[i] - 1])
        walk = [ts + (te - ts) * j / sub for j in range(sub + 1)]
        sampler = make_sampler(schedule, SamplerConfig(kind="ddim", steps=sub + 1, timesteps=tuple(walk)))
        sampler.set_timesteps()
        y = x[i : i + 1]
        with torch.no_grad():
            for t in walk[:-1]:
                y = sampler.step(teacher(y, torch.tensor([t])), t, y).prev_sample
        student = make_sampler(NoiseSchedule(v_config), SamplerConfig(kind="ddim", steps=2, timesteps=(ts, te),
                                                                       clip_sample=False))
        student.set_timesteps()
        landed = student.step(v[i : i + 1], ts, x[i : i + 1]).prev_sample
        torch.testing.assert_close(landed, y, atol=1e-4, rtol=1e-4)


def test_with_as_many_student_steps_as_teacher_steps_the_student_step_is_the_teachers(teacher, tiny_model_config):
    """K = T and one sub-step: each student step reproduces the teacher's own DDIM step exactly (the last one, to
    the clean image, as the student samples it: with its clean-image estimate clipped like the teacher's)."""
    schedule = NoiseSchedule(tiny_model_config.diffusion)
    v_schedule = NoiseSchedule(tiny_model_config.diffusion.model_copy(update={"prediction_type": "v_prediction"}))
    phi = torch.arange(TINY_T)
    x = torch.randn(5, 1, tiny_model_config.unet.image_size, tiny_model_config.unet.image_size,
                    generator=torch.Generator().manual_seed(3))
    k = torch.tensor([0, 1, 17, 30, TINY_T - 1])
    v, _ = teacher_target(teacher, schedule, x, k, phi, sub_steps=1, prediction="v_prediction")
    walk = tuple(float(t) for t in phi.flip(0))
    teacher_steps = make_sampler(schedule, SamplerConfig(kind="ddim", steps=TINY_T, timesteps=walk))
    teacher_steps.set_timesteps()
    for i, t in enumerate(float(phi[j]) for j in k):
        student = make_sampler(v_schedule, SamplerConfig(kind="ddim", steps=TINY_T, timesteps=walk,
                                                         clip_sample=t == 0))
        student.set_timesteps()
        with torch.no_grad():
            theirs = teacher_steps.step(teacher(x[i : i + 1], torch.tensor([t])), t, x[i : i + 1]).prev_sample
        ours = student.step(v[i : i + 1], t, x[i : i + 1]).prev_sample
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


def test_the_noisiest_jump_is_well_conditioned_for_v_and_its_gradient_finite(teacher, tiny_model_config):
    schedule = NoiseSchedule(tiny_model_config.diffusion)
    phi = torch.tensor([0, TINY_T // 2, TINY_T - 1])
    assert float(schedule.alpha_bar_at(TINY_T - 1)) < 1e-3  # ᾱ ≈ 0 where the student's first step starts
    x = torch.randn(4, 1, tiny_model_config.unet.image_size, tiny_model_config.unet.image_size,
                    generator=torch.Generator().manual_seed(4))
    k = torch.full((4,), 2)
    v, _ = teacher_target(teacher, schedule, x, k, phi, sub_steps=4, prediction="v_prediction")
    assert torch.isfinite(v).all() and v.abs().max() < 20  # x0_for_jump's denominator stays near sqrt(ᾱ_s)
    student = randomise(type(teacher)(tiny_model_config.unet), seed=8, std=0.1)
    loss = torch.nn.functional.mse_loss(student(x, phi[k].float()), v)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in student.parameters() if p.grad is not None)
    # the clean-image estimate of the jump: exact for a state that DDIM moves to
    ab_t, ab_s = torch.tensor(1e-5, dtype=torch.float64), torch.tensor(0.5, dtype=torch.float64)
    x0 = torch.randn(3, dtype=torch.float64)
    xt = ab_t.sqrt() * x0 + (1 - ab_t).sqrt() * torch.ones(3, dtype=torch.float64)
    xs = ab_s.sqrt() * x0 + (1 - ab_s).sqrt() * torch.ones(3, dtype=torch.float64)
    torch.testing.assert_close(x0_for_jump(xt, xs, ab_t, ab_s), x0)


def test_a_student_records_its_prediction_type_and_bad_ones_are_refused(tiny_model_config, trained_run, tmp_path):
    assert student_config(tiny_model_config, 3).diffusion.prediction_type == "v_prediction"
    assert student_config(tiny_model_config, 3, prediction="epsilon").diffusion.prediction_type == "epsilon"
    with pytest.raises(DDSMError, match="'sample' is not a prediction type a student can take"):
        student_config(tiny_model_config, 3, prediction="sample")
    out = tmp_path / "s"
    assert_bad_input(invoke("distill", "--teacher", trained_run, "--steps", "2", "--prediction", "x0", "--out", out),
                     "--prediction 'x0'", "v_prediction, epsilon")
    assert not out.exists()
    r = invoke("distill", "--teacher", trained_run, "--steps", "2", "--iters", "1", "--out", out, "--no-progress")
    assert r.exit_code == 0, r.output
    from ddsm.checkpoint import load_supernet

    assert load_supernet(out).config.diffusion.prediction_type == "v_prediction"
    assert_bad_input(invoke("distill", "--out", out, "--resume", "--prediction", "epsilon"),
                     "--prediction epsilon cannot change on --resume")
    # a schedule of an ε student does not run on a v student: another supernet
    eps_out = tmp_path / "e"
    r = invoke("distill", "--teacher", trained_run, "--steps", "2", "--iters", "1", "--prediction", "epsilon",
               "--out", eps_out, "--no-progress")
    assert r.exit_code == 0, r.output
    sched = tmp_path / "eps.json"
    from ddsm.schedule import Schedule
    from ddsm.distill import student_sampler

    eps_net = load_supernet(eps_out)
    Schedule.for_model(eps_net.config, student_sampler(eps_net.config.student), [1.0, 1.0]).save(sched)
    assert_bad_input(invoke("sample", "--checkpoint", out, "--schedule", sched, "--out", tmp_path / "smp"),
                     "supernet")


def test_training_refuses_a_v_supernet_from_data(tiny_yaml, tmp_path):
    import yaml

    path = tiny_yaml()
    doc = yaml.safe_load(path.read_text())
    doc["model"]["diffusion"] = {**doc["model"].get("diffusion", {}), "prediction_type": "v_prediction"}
    path.write_text(yaml.safe_dump(doc))
    out = tmp_path / "run"
    assert_bad_input(invoke("train", "--config", path, "--out", out), "prediction_type 'v_prediction'",
                     "ddsm distill")
    assert not out.exists()


def test_a_v_student_samples_the_same_in_ddsm_and_in_diffusers(trained_run, tmp_path):
    pytest.importorskip("diffusers")
    from ddsm.checkpoint import load_supernet
    from ddsm.distill import student_sampler
    from ddsm.integrations.diffusers import sample_with_diffusers
    from ddsm.plan import StepPlan
    from ddsm.samplers import generate

    out = tmp_path / "v"
    r = invoke("distill", "--teacher", trained_run, "--steps", "3", "--iters", "2", "--out", out, "--no-progress")
    assert r.exit_code == 0, r.output
    net = load_supernet(out)
    scfg = student_sampler(net.config.student, "ddpm")
    plan = StepPlan((1.0, 0.5, 1.0))
    ours = generate(net.model, make_sampler(NoiseSchedule(net.config.diffusion), scfg), plan, [0, 1, 2])
    theirs = sample_with_diffusers(net, plan, [0, 1, 2], sampler=scfg)
    assert (ours - theirs).abs().max() < 1e-4
