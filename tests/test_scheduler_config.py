"""The scheduler in a user's folder: read into the ddsm sampler that steps as it does, so search, export and verdict
run on it, and ``ddsm sample --scheduler FOLDER`` runs the user's own scheduler object."""

from __future__ import annotations

import json

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from cli_helpers import assert_bad_input, invoke, search_and_export  # noqa: E402
from ddsm.checkpoint import Supernet  # noqa: E402
from ddsm.config import validate  # noqa: E402
from ddsm.diffusion import NoiseSchedule  # noqa: E402
from ddsm.errors import DDSMError  # noqa: E402
from ddsm.integrations.schedulers import make_scheduler, model_calls, sample_with_scheduler  # noqa: E402
from ddsm.samplers import SamplerConfig, generate, make_sampler  # noqa: E402

SEEDS = [0, 1, 2, 7]
T = 50  # the tiny supernet's training timesteps


def user_scheduler(folder, cls: str, **options):
    """A pipeline folder holding only the user's scheduler, saved by diffusers itself."""
    getattr(diffusers, cls)(num_train_timesteps=T, **options).save_config(folder / "scheduler")
    return folder


@pytest.mark.parametrize("cls, options, kind", [
    ("DDPMScheduler", {}, "ddpm"),
    ("DDIMScheduler", {"steps_offset": 1}, "ddim"),
    ("DPMSolverMultistepScheduler", {}, "dpm++"),  # its own 'linspace' grid, which is not DDIM's
    ("DPMSolverMultistepScheduler", {"timestep_spacing": "leading"}, "dpm++"),
    ("UniPCMultistepScheduler", {"timestep_spacing": "trailing"}, "unipc"),
    ("EulerDiscreteScheduler", {"timestep_spacing": "leading"}, "ddim"),
    ("EulerAncestralDiscreteScheduler", {"timestep_spacing": "trailing"}, "ddim"),
    ("HeunDiscreteScheduler", {"timestep_spacing": "leading"}, "heun"),
])
def test_the_sampler_read_from_a_folder_steps_as_the_users_scheduler(random_supernet, tiny_model_config, tmp_path,
                                                                     cls, options, kind):
    folder = user_scheduler(tmp_path, cls, **options)
    config = validate(SamplerConfig, {"scheduler": str(folder), "steps": 5})
    assert config.kind == kind
    net = Supernet(model=random_supernet(), config=tiny_model_config, header={}, source="test")
    theirs_scheduler = make_scheduler(net, str(folder), 5)  # the user's class and options, ddsm's betas
    assert type(theirs_scheduler).__name__ == cls
    widths = ([0.25, 0.5, 1.0, 1.0, 0.5] * 2)[: model_calls(theirs_scheduler)]
    assert len(widths) == config.calls
    ours = generate(net.model, make_sampler(NoiseSchedule(tiny_model_config.diffusion), config), widths, SEEDS)
    theirs = sample_with_scheduler(net, theirs_scheduler, widths, SEEDS)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=2e-4)


@pytest.mark.parametrize("cls, options, needle", [
    ("PNDMScheduler", {}, "scheduler 'PNDMScheduler' of"),
    ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}, "use_karras_sigmas True of DPMSolver"),
    ("DPMSolverMultistepScheduler", {"solver_order": 3}, "solver_order 3"),
    ("DDIMScheduler", {"thresholding": True}, "thresholding True"),
    ("EulerDiscreteScheduler", {"timestep_spacing": "linspace"}, "visits fractional timesteps"),
])
def test_what_ddsm_cannot_reproduce_is_one_line(tmp_path, cls, options, needle):
    folder = user_scheduler(tmp_path, cls, **options)
    with pytest.raises(DDSMError, match=needle) as e:
        validate(SamplerConfig, {"scheduler": str(folder), "steps": 7})
    assert "\n" not in str(e.value)
    with pytest.raises(DDSMError, match="not both"):
        validate(SamplerConfig, {"scheduler": str(user_scheduler(tmp_path / "ok", "DDIMScheduler")), "kind": "ddim"})
    with pytest.raises(DDSMError, match="a hub id"):
        validate(SamplerConfig, {"scheduler": "someone/their-model", "steps": 7})


def test_search_export_verdict_and_sample_take_the_folders_scheduler(trained_run, tmp_path):
    folder = user_scheduler(tmp_path / "user", "HeunDiscreteScheduler", timestep_spacing="trailing")
    files = search_and_export(trained_run, tmp_path, {"scheduler": str(folder), "steps": 3})
    written = json.loads((tmp_path / "search" / "space.json").read_text())
    # the resolved sampler is what is recorded beside the search (it stays what it was if the folder changes)
    assert written["sampler"]["kind"] == "heun" and "scheduler" not in written["sampler"]
    doc = json.loads(files[0].read_text())
    assert doc["sampler"]["kind"] == "heun" and doc["sampler"]["timestep_spacing"] == "trailing"
    assert len(doc["widths"]) == 5
    r = invoke("sample", "--checkpoint", trained_run, "--scheduler", folder, "--width", "0.5", "--steps", "3",
               "--num", 2, "--out", tmp_path / "s", "--no-progress")
    assert r.exit_code == 0, r.output
    info = json.loads((tmp_path / "s" / "sample.json").read_text())
    assert info["scheduler"]["class"] == "HeunDiscreteScheduler" and info["scheduler"]["model_calls"] == 5
    assert info["scheduler"]["config"]["timestep_spacing"] == "trailing"
    bad = invoke("verdict", "--checkpoint", trained_run, "--width", "0.5", "--scheduler", tmp_path / "nowhere",
                 "--num", "50", "--teacher-num", "50", "--no-progress")
    assert_bad_input(bad, "is not a scheduler_config.json nor a folder holding one")
