"""The diffusers bridge: a supernet + schedule in a diffusers scheduler loop gives ddsm's own samples."""

from __future__ import annotations

import sys

import pytest
import torch

pytest.importorskip("diffusers")

from ddsm.checkpoint import Supernet, save_supernet  # noqa: E402
from ddsm.config import DiffusionConfig, ModelConfig  # noqa: E402
from ddsm.diffusion.noise import NoiseSchedule, make_betas  # noqa: E402
from ddsm.errors import DDSMError  # noqa: E402
from ddsm.integrations.diffusers import (  # noqa: E402
    ScheduledDenoiser, make_diffusers_scheduler, sample_with_diffusers,
)
from ddsm.samplers import SamplerConfig, generate, make_sampler  # noqa: E402
from ddsm.schedule import Schedule  # noqa: E402

STEPS = 5
WIDTHS = [0.25, 0.25, 0.5, 1.0, 1.0]  # mixed: narrow while the image is mostly noise
SEEDS = [0, 1, 2, 3, 11, 12]
CASES = {
    "ddim-eta0": SamplerConfig(kind="ddim", steps=STEPS),
    "ddim-eta0.5": SamplerConfig(kind="ddim", steps=STEPS, eta=0.5),
    "ddim-eta1-trailing": SamplerConfig(kind="ddim", steps=STEPS, eta=1.0, timestep_spacing="trailing"),
    "ddpm": SamplerConfig(kind="ddpm", steps=STEPS),
    "ddpm-linspace-noclip": SamplerConfig(kind="ddpm", steps=STEPS, timestep_spacing="linspace", clip_sample=False),
}


@pytest.fixture
def net(random_supernet, tiny_model_config) -> Supernet:
    return Supernet(model=random_supernet(), config=tiny_model_config, header={}, source="test")


def ddsm_samples(net: Supernet, cfg: SamplerConfig, widths, seeds=SEEDS) -> torch.Tensor:
    return generate(net.model, make_sampler(NoiseSchedule(net.config.diffusion), cfg), widths, seeds)


# ---------------------------------------------------------------------------- same samples


@pytest.mark.parametrize("case", list(CASES))
def test_diffusers_loop_gives_ddsm_samples(net, case):
    cfg = CASES[case]
    schedule = Schedule.for_model(net.config, cfg, WIDTHS)
    ours = ddsm_samples(net, cfg, WIDTHS)
    # A batch size that splits the seeds unevenly: each image depends on its seed only.
    theirs = sample_with_diffusers(net, schedule, SEEDS, batch_size=4)
    assert theirs.shape == ours.shape == (len(SEEDS), 1, 8, 8) and theirs.dtype == torch.float32
    assert torch.isfinite(theirs).all()
    # Float tolerance, relative for the unclipped case whose x0 = x / sqrt(alpha_bar) reaches ~1e3 at t = 49.
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-5)
    # Not vacuous: another width schedule (or other seeds) gives visibly different images.
    other = list(reversed(WIDTHS))
    assert (theirs - ddsm_samples(net, cfg, other)).abs().max().item() > 1e-2
    assert (theirs - ddsm_samples(net, cfg, WIDTHS, [s + 100 for s in SEEDS])).abs().max().item() > 1e-2


def test_linear_beta_schedule_gives_ddsm_samples(random_supernet, tiny_model_config):
    config = tiny_model_config.model_copy(update={"diffusion": DiffusionConfig(num_timesteps=50, beta_schedule="linear",
                                                                               beta_end=0.2)})
    net = Supernet(model=random_supernet(), config=config, header={}, source="test")
    for cfg in (CASES["ddim-eta0.5"], CASES["ddpm"]):
        schedule = Schedule.for_model(config, cfg, WIDTHS)
        diff = (sample_with_diffusers(net, schedule, SEEDS) - ddsm_samples(net, cfg, WIDTHS)).abs().max().item()
        assert diff < 1e-5, cfg


def test_the_loop_runs_each_step_at_its_scheduled_width(net, monkeypatch):
    seen = []
    forward = net.model.forward
    monkeypatch.setattr(net.model, "forward", lambda x, t: seen.append((net.model.width, t)) or forward(x, t))
    cfg = CASES["ddim-eta0"]
    schedule = Schedule.for_model(net.config, cfg, WIDTHS)
    sample_with_diffusers(net, schedule, SEEDS[:2])
    assert seen == list(zip(WIDTHS, schedule.timesteps))


# ---------------------------------------------------------------------------- the scheduler's settings


@pytest.mark.parametrize("case", list(CASES))
def test_scheduler_visits_the_schedule_timesteps(net, case):
    cfg = CASES[case]
    schedule = Schedule.for_model(net.config, cfg, WIDTHS)
    scheduler = make_diffusers_scheduler(net, cfg)
    assert type(scheduler).__name__ == {"ddim": "DDIMScheduler", "ddpm": "DDPMScheduler"}[cfg.kind]
    assert [float(t) for t in scheduler.timesteps] == list(schedule.timesteps)
    assert scheduler.config.clip_sample == cfg.clip_sample
    assert scheduler.config.prediction_type == "epsilon"


@pytest.mark.parametrize("beta_schedule, name", [("cosine", "squaredcos_cap_v2"), ("linear", "linear")])
def test_scheduler_uses_ddsm_betas_and_alpha_bar(beta_schedule, name):
    diffusion = DiffusionConfig(num_timesteps=50, beta_schedule=beta_schedule)
    scheduler = make_diffusers_scheduler(ModelConfig(diffusion=diffusion), CASES["ddpm"])
    assert scheduler.config.beta_schedule == name
    assert torch.equal(scheduler.betas, make_betas(diffusion).float())
    noise = NoiseSchedule(diffusion)
    assert torch.equal(scheduler.alphas_cumprod, noise.alpha_bar_at(torch.arange(50.0)).float())


def test_ddim_spacing_diffusers_cannot_walk_is_refused(net):
    # linspace over 50 steps visits 49, 37, 24, 12, 0, but diffusers' DDIM steps t -> t - 10.
    with pytest.raises(DDSMError, match="cannot walk ddsm's timesteps") as e:
        make_diffusers_scheduler(net, SamplerConfig(kind="ddim", steps=STEPS, timestep_spacing="linspace"))
    assert "\n" not in str(e.value) and "'leading'" in str(e.value)


# ---------------------------------------------------------------------------- the denoiser and its checks


def test_denoiser_looks_the_width_up_per_step(net):
    schedule = Schedule.for_model(net.config, CASES["ddim-eta0"], WIDTHS)
    denoiser = ScheduledDenoiser(net, schedule)
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    for i, t in enumerate(schedule.timesteps):
        for t_as in (t, torch.tensor(int(t)), torch.full((2,), int(t))):  # how schedulers and pipelines pass it
            assert denoiser.step_index(t_as) == i and denoiser.width_at(t_as) == WIDTHS[i]
        eps = denoiser(x, torch.tensor(int(t)))
        assert net.model.width == WIDTHS[i]
        assert torch.equal(eps, net.model.set_active_width(WIDTHS[i])(x, t))
    with pytest.raises(DDSMError, match="timestep 7 is not visited by this schedule"):
        denoiser(x, 7)
    with pytest.raises(DDSMError, match="one timestep per call"):
        denoiser(x, torch.tensor([40, 30]))


def test_schedule_for_another_supernet_is_refused(net, tiny_model_config, tmp_path):
    other_config = tiny_model_config.model_copy(update={"diffusion": DiffusionConfig(num_timesteps=60)})
    assert other_config.fingerprint() != net.fingerprint
    foreign = Schedule.for_model(other_config, CASES["ddim-eta0"], WIDTHS)
    for call in (lambda: ScheduledDenoiser(net, foreign), lambda: sample_with_diffusers(net, foreign, SEEDS)):
        with pytest.raises(DDSMError, match=f"made for supernet {other_config.fingerprint()}") as e:
            call()
        assert "\n" not in str(e.value)
    # The same through files: a supernet checkpoint and a schedule file for another one.
    save_supernet(tmp_path / "net.safetensors", net.model, net.config)
    foreign.save(tmp_path / "foreign.json")
    Schedule.for_model(net.config, CASES["ddim-eta0"], WIDTHS).save(tmp_path / "own.json")
    loaded = ScheduledDenoiser.load(str(tmp_path / "net.safetensors"), str(tmp_path / "own.json"))
    assert loaded.widths == WIDTHS
    with pytest.raises(DDSMError, match="foreign.json.*does not fit this supernet"):
        ScheduledDenoiser.load(str(tmp_path / "net.safetensors"), str(tmp_path / "foreign.json"))


def test_missing_diffusers_gives_the_install_hint(net, monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers", None)  # makes `import diffusers` fail
    schedule = Schedule.for_model(net.config, CASES["ddim-eta0"], WIDTHS)
    for call in (lambda: make_diffusers_scheduler(net, schedule.sampler), lambda: sample_with_diffusers(net, schedule, [0])):
        with pytest.raises(DDSMError, match="pip install diffusers") as e:
            call()
        assert "\n" not in str(e.value)


def test_a_step_plan_runs_in_diffusers_like_its_schedule_file(net):
    from ddsm.integrations.diffusers import sample_with_diffusers
    from ddsm.plan import StepPlan

    cfg = SamplerConfig(kind="ddim", steps=4)
    plan = StepPlan((0.25, 0.5, 1.0, 1.0))
    sched = Schedule.for_model(net.config, cfg, plan)
    a = sample_with_diffusers(net, plan, [0, 1], sampler=cfg)
    assert torch.equal(a, sample_with_diffusers(net, sched, [0, 1]))
    with pytest.raises(DDSMError, match="needs sampler="):
        sample_with_diffusers(net, plan, [0])
