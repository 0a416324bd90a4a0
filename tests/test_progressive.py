"""Resolution schedules in the samplers, the schedule file, the evaluator, the CLI and the diffusers bridge."""

import json
import warnings

import pytest
import torch

from cli_helpers import assert_bad_input, invoke
from ddsm.checkpoint import load_supernet
from ddsm.diffusion.noise import NoiseSchedule
from ddsm.diffusion.resolution import alpha_bar_after_growth
from ddsm.errors import DDSMError
from ddsm.metrics.evaluator import ProxyEvaluator
from ddsm.samplers import SamplerConfig, generate, make_sampler
from ddsm.samplers.batched import TrajectoryCache, generate_many
from ddsm.plan import StepPlan
from ddsm.samplers.progressive import ResolutionWarning, check_resolutions
from ddsm.schedule import Schedule

STEPS = 6
SIDES = [2, 2, 4, 4, 8, 8]  # the tiny supernet's image is 8x8
WIDTHS = [1.0, 1.0, 0.5, 0.5, 0.25, 1.0]


def _sampler(config, kind="ddim", eta=0.0):
    return make_sampler(NoiseSchedule(config.diffusion), SamplerConfig(kind=kind, steps=STEPS, eta=eta))


@pytest.mark.parametrize("kind,eta", [("ddim", 0.0), ("ddim", 0.7), ("ddpm", 0.0)])
def test_generate_many_equals_generate_for_resolution_schedules(random_supernet, tiny_model_config, kind, eta):
    model = random_supernet()
    s = _sampler(tiny_model_config, kind, eta)
    other = [4, 4, 4, 8, 8, 8]
    one = generate(model, s, WIDTHS, range(5), resolutions=SIDES)
    two = generate(model, s, WIDTHS, range(5), resolutions=other)
    plain = generate(model, s, WIDTHS, range(5))
    plans = [StepPlan(tuple(WIDTHS), tuple(SIDES)), list(zip(WIDTHS, other)), WIDTHS]
    for fuse in (False, True):
        many = generate_many(model, s, plans, range(5), fuse=fuse, cache=TrajectoryCache(1 << 24))
        tol = 0 if not fuse else 1e-5
        assert (many[0] - one).abs().max() <= tol and (many[1] - two).abs().max() <= tol
        assert (many[2] - plain).abs().max() <= tol
    assert one.shape == plain.shape == (5, 1, 8, 8)
    assert (one - plain).abs().max() > 1e-3  # the resolution schedule changed the samples


def test_image_size_throughout_is_the_width_schedule(random_supernet, tiny_model_config):
    model = random_supernet()
    s = _sampler(tiny_model_config, "ddpm")
    assert torch.equal(generate(model, s, WIDTHS, range(3), resolutions=[8] * STEPS), generate(model, s, WIDTHS, range(3)))


def test_a_sample_depends_on_its_seed_only(random_supernet, tiny_model_config):
    model = random_supernet()
    s = _sampler(tiny_model_config, "ddpm")
    alone = generate(model, s, WIDTHS, [7], resolutions=SIDES)
    batched = generate(model, s, WIDTHS, [3, 7, 9], resolutions=SIDES, batch_size=2)
    assert torch.allclose(alone[0], batched[1], atol=1e-5)  # up to float rounding of batched convolutions


def test_the_step_after_a_growth_starts_at_the_grown_noise_level(random_supernet, tiny_model_config):
    model = random_supernet()
    seen = []
    forward = model.forward
    model.forward = lambda x, t: (seen.append((x.shape[-1], float(t))), forward(x, t))[1]
    s = _sampler(tiny_model_config)
    generate(model, s, WIDTHS, range(2), resolutions=SIDES)
    ts = s.timesteps.tolist()
    sched = NoiseSchedule(tiny_model_config.diffusion)
    for i in (2, 4):  # growth before steps 2 (2 -> 4) and 4 (4 -> 8)
        side, t = seen[i]
        assert side == SIDES[i]
        expected = float(alpha_bar_after_growth(sched.alpha_bar_at(ts[i]), 2))
        assert float(sched.alpha_bar_at(t)) == pytest.approx(expected, rel=1e-9)
        assert t > ts[i]  # noisier than the visited timestep
    assert [t for _, t in seen][1] == ts[1]  # no growth: the visited timestep


@pytest.mark.parametrize("sides,needle", [
    ([2, 2, 4, 3, 8, 8], "resolution 3 does not divide the image size 8; valid: [2, 4, 8]"),
    ([2, 4, 2, 4, 8, 8], "decreases at step 2: 4 -> 2"),
    ([2, 2, 4, 4, 4, 4], "ends at 4; the last step must run at the image size 8"),
    ([2, 8], "has 2 entries but the sampler takes 6 steps"),
])
def test_bad_resolution_schedules_are_refused(tiny_model_config, sides, needle):
    with pytest.raises(DDSMError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        check_resolutions(sides, tiny_model_config.unet, STEPS)


def test_schedule_file_round_trips_resolutions_and_lists_mismatches(tmp_path, tiny_model_config):
    scfg = SamplerConfig(kind="ddim", steps=STEPS)
    s = Schedule.for_model(tiny_model_config, scfg, WIDTHS, resolutions=SIDES)
    s.save(tmp_path / "s.json")
    back = Schedule.load(tmp_path / "s.json", tiny_model_config)
    assert back.resolutions == tuple(SIDES) and back.plan() == StepPlan(tuple(WIDTHS), tuple(SIDES))
    assert Schedule.for_model(tiny_model_config, scfg, WIDTHS, resolutions=[8] * STEPS).resolutions is None
    data = json.loads((tmp_path / "s.json").read_text())
    data["resolutions"] = [4, 2, 4, 4, 8, 8]
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(DDSMError, match="decreases at step 1"):
        Schedule.load(tmp_path / "bad.json", tiny_model_config)


def test_evaluator_warns_once_when_the_supernet_was_not_trained_at_those_sides(trained_run):
    net = load_supernet(trained_run)
    assert net.trained_resolutions == (8,)
    ev = ProxyEvaluator(net, SamplerConfig(kind="ddim", steps=STEPS), num=2)
    plan = StepPlan(tuple(WIDTHS), tuple(SIDES))
    with pytest.warns(ResolutionWarning, match=r"trained at resolutions \[8\]; steps at \[2, 4\] run training-free"):
        first = ev.evaluate([plan])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = ev.evaluate([plan, WIDTHS])
    assert first["proxy"][0] == again["proxy"][0] and again["valid"].all()


def test_cli_samples_a_resolution_schedule_and_warns_in_one_line(tmp_path, trained_run):
    net = load_supernet(trained_run)
    Schedule.for_model(net.config, SamplerConfig(kind="ddim", steps=STEPS), WIDTHS, resolutions=SIDES).save(tmp_path / "s.json")
    r = invoke("sample", "--checkpoint", trained_run, "--schedule", tmp_path / "s.json", "--num", 3,
               "--out", tmp_path / "out", "--no-progress")
    assert r.exit_code == 0, r.output
    assert "warning: this supernet was trained at resolutions [8]; the schedule's steps at [2, 4] run training-free" in r.output
    info = json.loads((tmp_path / "out" / "sample.json").read_text())
    assert info["resolutions"] == SIDES


def test_cli_refuses_a_decreasing_resolution_schedule(tmp_path, trained_run):
    net = load_supernet(trained_run)
    path = tmp_path / "s.json"
    Schedule.for_model(net.config, SamplerConfig(kind="ddim", steps=STEPS), WIDTHS, resolutions=SIDES).save(path)
    data = json.loads(path.read_text())
    data["resolutions"] = [2, 4, 2, 4, 8, 8]
    path.write_text(json.dumps(data))
    r = invoke("sample", "--checkpoint", trained_run, "--schedule", path, "--num", 2, "--out", tmp_path / "o")
    assert_bad_input(r, "decreases at step 2")


@pytest.mark.parametrize("kind,eta,tol", [("ddim", 0.0, 1e-5), ("ddim", 0.5, 1e-5)])
def test_diffusers_loop_honours_resolution_schedules(trained_run, kind, eta, tol):
    pytest.importorskip("diffusers")
    from ddsm.integrations.diffusers import sample_with_diffusers

    net = load_supernet(trained_run)
    scfg = SamplerConfig(kind=kind, steps=STEPS, eta=eta)
    sched = Schedule.for_model(net.config, scfg, WIDTHS, resolutions=SIDES)
    ours = generate(net.model, _sampler(net.config, kind, eta), WIDTHS, range(4), resolutions=SIDES)
    theirs = sample_with_diffusers(net, sched, range(4))
    assert (ours - theirs).abs().max() < tol


def test_diffusers_ddpm_resolution_schedule_is_reproducible(trained_run):
    pytest.importorskip("diffusers")
    from ddsm.integrations.diffusers import sample_with_diffusers

    net = load_supernet(trained_run)
    sched = Schedule.for_model(net.config, SamplerConfig(kind="ddpm", steps=STEPS), WIDTHS, resolutions=SIDES)
    a, b = sample_with_diffusers(net, sched, [5, 6]), sample_with_diffusers(net, sched, [6])
    assert torch.isfinite(a).all() and torch.equal(a[1], b[0])
