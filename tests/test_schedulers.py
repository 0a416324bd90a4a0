"""Any diffusers scheduler: a supernet sampled with DPM-Solver++, UniPC, Euler, Heun, ... one width per model call."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("diffusers")

from cli_helpers import assert_bad_input, invoke  # noqa: E402
from ddsm.checkpoint import Supernet, save_supernet  # noqa: E402
from ddsm.errors import DDSMError  # noqa: E402
from ddsm.integrations.diffusers import sample_with_diffusers  # noqa: E402
from ddsm.integrations.schedulers import SCHEDULERS, make_scheduler, model_calls, sample_with_scheduler  # noqa: E402
from ddsm.plan import StepPlan  # noqa: E402
from ddsm.samplers import SamplerConfig  # noqa: E402

STEPS = 5
SEEDS = [0, 1, 2, 7, 8]


@pytest.fixture
def net(random_supernet, tiny_model_config) -> Supernet:
    return Supernet(model=random_supernet(), config=tiny_model_config, header={}, source="test")


def record_widths(net: Supernet, monkeypatch) -> list:
    seen: list = []
    forward = net.model.forward
    monkeypatch.setattr(net.model, "forward", lambda x, t, **kw: seen.append((net.model.width, float(t)))
                        or forward(x, t, **kw))
    return seen


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_every_listed_scheduler_runs_a_per_call_schedule_end_to_end(net, name, monkeypatch):
    scheduler = make_scheduler(net, name, STEPS)
    calls = model_calls(scheduler)
    widths = [0.25 if k % 2 else 1.0 for k in range(calls)]
    seen = record_widths(net, monkeypatch)
    x = sample_with_scheduler(net, scheduler, widths, SEEDS, batch_size=3)
    assert x.shape == (len(SEEDS), 1, 8, 8) and torch.isfinite(x).all()
    # each model call ran at its own width, at the scheduler's timesteps, in two batches (3 + 2 seeds)
    assert [w for w, _ in seen] == widths * 2
    assert [t for _, t in seen[:calls]] == [float(t) for t in scheduler.timesteps]
    # an image depends on its seed only (batching, the caller's scheduler object is not advanced by a run)
    again = sample_with_scheduler(net, scheduler, widths, SEEDS[::-1], batch_size=5)
    torch.testing.assert_close(again, x.flip(0), rtol=1e-5, atol=1e-5)  # BLAS differs per batch size
    # not vacuous: another width per call gives other images
    other = sample_with_scheduler(net, scheduler, [1.0] * calls, SEEDS)
    assert (other - x).abs().max() > 1e-3


def test_a_second_order_scheduler_gets_one_width_per_call(net, monkeypatch):
    heun = make_scheduler(net, "heun", STEPS)
    # Heun calls the model twice in every step but the last (its Euler step ends there)
    assert model_calls(heun) == 2 * STEPS - 1
    widths = [0.25, 0.5, 0.75, 1.0, 0.25, 0.5, 0.75, 1.0, 0.5]
    seen = record_widths(net, monkeypatch)
    sample_with_scheduler(net, heun, widths, SEEDS[:1])
    assert [w for w, _ in seen] == widths
    # the corrector call sees the same timestep as its predictor: a width per call, not per step
    ts = [t for _, t in seen]
    assert ts[1] == ts[2] and ts[3] == ts[4]
    with pytest.raises(DDSMError, match=r"5 widths for 9 model calls of HeunDiscreteScheduler with 5 steps"):
        sample_with_scheduler(net, heun, widths[:STEPS], SEEDS)


@pytest.mark.parametrize("kind", ["ddim", "ddpm"])
def test_ddim_and_ddpm_by_name_are_ddsm_own_walk(net, kind):
    widths = [0.25, 0.25, 0.5, 1.0, 1.0]
    ours = sample_with_scheduler(net, make_scheduler(net, kind, STEPS), widths, SEEDS)
    bridge = sample_with_diffusers(net, StepPlan.of(widths), SEEDS, sampler=SamplerConfig(kind=kind, steps=STEPS))
    assert torch.equal(ours, bridge)


@pytest.mark.parametrize("name, eta", [("euler", 0.0), ("euler-ancestral", 1.0)])
def test_euler_is_ddsm_ddim_unclipped_so_search_verdict_and_export_take_it(net, name, eta):
    """Euler (deterministic) is DDIM with eta 0 and Euler-ancestral DDIM with eta 1, without clipping x0: on the same
    grid and per-sample noise they give ddsm's DDIM samples, so a space with that sampler searches for them."""
    from ddsm.diffusion import NoiseSchedule
    from ddsm.samplers import generate, make_sampler

    widths = [0.25, 0.5, 1.0, 1.0, 0.5]
    ddim = make_sampler(NoiseSchedule(net.config.diffusion),
                        SamplerConfig(kind="ddim", steps=STEPS, eta=eta, clip_sample=False))
    scheduler = make_scheduler(net, name, STEPS)
    assert [int(t) for t in scheduler.timesteps] == [int(t) for t in ddim.timesteps.tolist()]
    theirs = sample_with_scheduler(net, scheduler, widths, SEEDS)
    torch.testing.assert_close(generate(net.model, ddim, widths, SEEDS), theirs, rtol=1e-4, atol=1e-4)


def test_a_conditional_model_is_guided_at_every_call(random_supernet, tiny_unet, tiny_model_config):
    config = tiny_model_config.model_copy(update={"unet": tiny_unet.model_copy(update={"num_classes": 3})})
    net = Supernet(model=random_supernet(config=config.unet), config=config, header={}, source="test")
    scheduler = make_scheduler(net, "dpm++", STEPS)
    cond = sample_with_scheduler(net, scheduler, 1.0, SEEDS, labels=[0, 1, 2, 0, 1])
    # scale 1 is the conditional prediction alone; another scale or other labels give other images
    assert torch.equal(sample_with_scheduler(net, scheduler, 1.0, SEEDS, labels=[0, 1, 2, 0, 1],
                                             guidance_scale=1.0), cond)
    guided = sample_with_scheduler(net, scheduler, 1.0, SEEDS, labels=[0, 1, 2, 0, 1], guidance_scale=3.0)
    assert (guided - cond).abs().max() > 1e-3
    assert (sample_with_scheduler(net, scheduler, 1.0, SEEDS, labels=[1, 2, 0, 1, 2]) - cond).abs().max() > 1e-3


def test_bad_names_options_and_widths_are_one_line_errors(net):
    with pytest.raises(DDSMError, match=r"scheduler 'pndm' is not supported; choose one of ddpm .*heun"):
        make_scheduler(net, "pndm", STEPS)
    with pytest.raises(DDSMError, match=r"EulerDiscreteScheduler has no option 'solver_order'; its options are"):
        make_scheduler(net, "euler", STEPS, solver_order=2)
    with pytest.raises(DDSMError, match=r"option 'prediction_type' is fixed by the supernet"):
        make_scheduler(net, "dpm++", STEPS, prediction_type="v_prediction")
    with pytest.raises(DDSMError, match=r"steps 0 is not in 1\.\.50"):
        make_scheduler(net, "unipc", 0)
    with pytest.raises(DDSMError, match=r"width 0\.3 is not served"):
        sample_with_scheduler(net, make_scheduler(net, "euler", STEPS), 0.3, SEEDS)
    # an option of the scheduler is passed through
    assert make_scheduler(net, "dpm++", STEPS, solver_order=3).config.solver_order == 3


def test_cli_samples_with_a_named_scheduler(random_supernet, tiny_model_config, tmp_path):
    path = tmp_path / "net.safetensors"
    save_supernet(path, random_supernet(), tiny_model_config)
    out = tmp_path / "samples"
    r = invoke("sample", "--checkpoint", path, "--scheduler", "heun", "--steps", STEPS, "--width", "0.5",
               "--num", 3, "--out", out, "--no-progress")
    assert r.exit_code == 0, r.output
    info = json.loads((out / "sample.json").read_text())
    assert info["scheduler"]["class"] == "HeunDiscreteScheduler" and info["scheduler"]["model_calls"] == 9
    assert info["widths"] == [0.5] * 9
    for args, needle in [(["--scheduler", "pndm", "--width", "1"], "scheduler 'pndm' is not supported"),
                         (["--scheduler", "euler", "--width", "1", "--sampler", "ddpm"], "drop --schedule")]:
        bad = tmp_path / "bad"
        assert_bad_input(invoke("sample", "--checkpoint", path, *args, "--out", bad), needle)
        assert not bad.exists()
