"""A setting its run kind ignores, and a backbone nobody registered, are refused where the config is read.

One line naming the key (or name) and what is valid, exit 2, nothing written.
"""

from __future__ import annotations

import pytest
import yaml

from ddsm.config import RunConfig, validate
from ddsm.errors import DDSMError

from cli_helpers import assert_bad_input, invoke
from conftest import run_config_dict


@pytest.mark.parametrize("key, value, kinds", [
    ("spectral_weight", 0.5, "train runs only"),
    ("resolutions", [4], "train runs only"),
    ("full_resolution_share", 0.3, "train runs only"),
    ("distill_weight", 0.9, "train and slim runs only"),
])
def test_a_distillation_refuses_train_keys_it_would_ignore(trained_run, tmp_path, key, value, kinds):
    cfg = tmp_path / "recipe.yaml"
    cfg.write_text(yaml.safe_dump({"train": {key: value, "iters": 1, "batch_size": 8}}))
    out = tmp_path / "student"
    result = invoke("distill", "--teacher", trained_run, "--steps", "2", "--config", cfg, "--out", out, "--no-progress")
    assert_bad_input(result, f"train.{key}", kinds, "distill run")
    assert not out.exists()


@pytest.mark.parametrize("key, value", [("spectral_weight", 0.5), ("resolutions", [4]), ("spectral_schedule", "late_high")])
def test_a_slim_run_config_refuses_the_spectral_and_resolution_keys(key, value):
    d = run_config_dict(**{key: value})
    d["model"]["diffusers"] = {"unet": {"sample_size": 8}, "weights_sha256": "0" * 64}
    d["slim"] = {"source": "somewhere"}
    with pytest.raises(DDSMError, match=rf"train\.{key} applies to train runs only, not to this slim run"):
        validate(RunConfig, d)


def test_the_defaults_and_the_same_values_written_back_are_accepted_by_every_kind(trained_run, tmp_path):
    out = tmp_path / "student"
    assert invoke("distill", "--teacher", trained_run, "--steps", "2", "--iters", "1", "--out", out,
                  "--no-progress").exit_code == 0
    # the resolved config.json lists every key at its default: resuming from it is not a refusal
    assert invoke("distill", "--out", out, "--resume", "--iters", "2", "--no-progress").exit_code == 0


def test_an_unregistered_backbone_is_refused_before_anything_is_written(tmp_path):
    d = run_config_dict()
    d["model"]["backbone"] = "vit"
    cfg = tmp_path / "vit.yaml"
    cfg.write_text(yaml.safe_dump(d))
    out = tmp_path / "run"
    assert_bad_input(invoke("train", "--config", cfg, "--out", out, "--no-progress"),
                     "backbone 'vit' is not registered", "registered backbones: diffusers_dit, diffusers_unet, dit, unet")
    assert not out.exists()


def test_distilling_a_slimmed_diffusers_model_names_the_teacher_flag(tmp_path):
    """It used to say "(root): a slim run needs both slim and model.diffusers", naming nothing the user typed."""
    pytest.importorskip("diffusers")
    from test_slim import _slim, _user_model

    folder = _user_model(tmp_path / "user-model")
    assert _slim(tmp_path, folder, tmp_path / "slimmed", iters=1).exit_code == 0
    out = tmp_path / "student"
    assert_bad_input(invoke("distill", "--teacher", tmp_path / "slimmed", "--steps", "2", "--out", out,
                            "--no-progress"), "--teacher", "slimmed diffusers model", "ddsm train")
    assert not out.exists()
