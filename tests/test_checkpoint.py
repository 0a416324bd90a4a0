"""Checkpoint files: round trips, one-line errors for bad files, atomic writes."""

from __future__ import annotations

import os
import shutil

import pytest
import torch
from safetensors.torch import save_file

from ddsm.checkpoint import load_supernet, read_tensors, resolve_checkpoint, save_supernet, save_tensors
from ddsm.config import DiffusionConfig, ModelConfig, UNetConfig
from ddsm.errors import DDSMError
from ddsm.io import atomic_path, stable_hash, write_atomic, write_json
from ddsm.nn.unet import SlimUNet

from conftest import TINY_UNET, randomise


@pytest.fixture
def saved(tmp_path, tiny_model_config):
    """A weights-only supernet file of a random tiny model."""
    model = randomise(SlimUNet(tiny_model_config.unet), seed=4)
    path = tmp_path / "net.safetensors"
    save_supernet(path, model, tiny_model_config, note="hello")
    return path, model


def test_supernet_round_trip(saved, tiny_model_config):
    path, model = saved
    net = load_supernet(path)
    assert net.config == tiny_model_config and net.fingerprint == tiny_model_config.fingerprint()
    assert net.header["note"] == "hello" and net.header["kind"] == "ddsm.supernet"
    sd = model.state_dict()
    assert all(torch.equal(v, sd[k]) for k, v in net.model.state_dict().items())
    assert not net.model.training
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(net.model.set_active_width(0.5)(x, 3.0), model.set_active_width(0.5)(x, 3.0))


def test_half_precision_export_loads_back(tmp_path, tiny_model_config):
    model = randomise(SlimUNet(tiny_model_config.unet))
    save_supernet(tmp_path / "h.safetensors", model, tiny_model_config, dtype=torch.float16)
    net = load_supernet(tmp_path / "h.safetensors")
    ref = model.state_dict()["conv_in.weight"].half().float()
    assert torch.equal(net.model.state_dict()["conv_in.weight"], ref)


def test_run_folder_resolves_to_its_supernet_then_its_checkpoint(tmp_path, trained_run):
    assert resolve_checkpoint(trained_run).name == "supernet.safetensors"
    only_ckpt = tmp_path / "run"
    only_ckpt.mkdir()
    shutil.copy(trained_run / "checkpoint.safetensors", only_ckpt)
    assert resolve_checkpoint(only_ckpt).name == "checkpoint.safetensors"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DDSMError, match="holds no supernet.safetensors or checkpoint.safetensors"):
        load_supernet(empty)


# ---------------------------------------------------------------------------- bad input


def test_missing_path_names_the_path(tmp_path):
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(DDSMError) as info:
        load_supernet(missing)
    assert str(missing) in str(info.value) and "not found" in str(info.value)
    with pytest.raises(DDSMError, match="does not exist"):
        read_tensors(missing)


def _corrupt_random(path, good):
    path.write_bytes(os.urandom(4096))


def _corrupt_truncated(path, good):
    path.write_bytes(good[: len(good) // 2])


def _corrupt_tiny(path, good):
    path.write_bytes(good[:5])


def _corrupt_empty(path, good):
    path.write_bytes(b"")


def _corrupt_foreign(path, good):
    save_file({"w": torch.zeros(2)}, str(path))  # a valid safetensors file, not a ddsm one


@pytest.mark.parametrize("corrupt", [_corrupt_random, _corrupt_truncated, _corrupt_tiny, _corrupt_empty,
                                     _corrupt_foreign], ids=["random", "truncated", "5-bytes", "empty", "foreign"])
def test_corrupt_file_is_a_one_line_error(saved, corrupt):
    path, _ = saved
    bad = path.with_name("bad.safetensors")
    corrupt(bad, path.read_bytes())
    with pytest.raises(DDSMError) as info:
        load_supernet(bad)
    msg = str(info.value)
    assert "corrupt" in msg and str(bad) in msg and "\n" not in msg


def test_corrupt_supernet_inside_a_run_folder(tmp_path):
    (tmp_path / "supernet.safetensors").write_bytes(os.urandom(100))
    with pytest.raises(DDSMError, match="corrupt"):
        load_supernet(tmp_path)


def test_tampered_config_fails_the_fingerprint_check(saved, tiny_model_config):
    path, model = saved
    other = ModelConfig(unet=tiny_model_config.unet, diffusion=DiffusionConfig(num_timesteps=60))
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    bad = path.with_name("tampered.safetensors")
    save_tensors(bad, tensors, {"kind": "ddsm.supernet", "model": other.model_dump(mode="json"),
                                "fingerprint": tiny_model_config.fingerprint()})
    with pytest.raises(DDSMError, match="stored fingerprint does not match"):
        load_supernet(bad)


def test_newer_schema_version_is_refused(saved):
    path, model = saved
    bad = path.with_name("future.safetensors")
    save_file({"w": torch.zeros(1)}, str(bad), metadata={"ddsm": '{"schema_version": 99}'})
    with pytest.raises(DDSMError, match="schema_version 99"):
        load_supernet(bad)


def test_weights_that_do_not_fit_the_architecture(saved, tiny_model_config):
    path, model = saved
    bad = path.with_name("partial.safetensors")
    sd = {k: v for k, v in model.state_dict().items() if not k.startswith("conv_out")}
    save_supernet(bad, model, tiny_model_config, state_dict=sd)
    with pytest.raises(DDSMError, match="does not fit its own architecture: missing"):
        load_supernet(bad)


def test_expected_config_mismatch_names_the_differing_fields(saved, tiny_model_config):
    path, _ = saved
    other = ModelConfig(unet=UNetConfig(**{**TINY_UNET, "base_channels": 16}),
                        diffusion=DiffusionConfig(num_timesteps=100))
    with pytest.raises(DDSMError) as info:
        load_supernet(path, expected=other)
    msg = str(info.value)
    assert "unet.base_channels 8 vs 16" in msg and "diffusion.num_timesteps 50 vs 100" in msg
    assert load_supernet(path, expected=tiny_model_config).config == tiny_model_config


def test_fingerprint_ignores_key_order_but_not_values(tiny_model_config):
    assert stable_hash({"a": 1, "b": [1, 2]}) == stable_hash({"b": [1, 2], "a": 1})
    other = ModelConfig(unet=UNetConfig(**{**TINY_UNET, "dropout": 0.1}), diffusion=tiny_model_config.diffusion)
    assert other.fingerprint() != tiny_model_config.fingerprint()
    assert ModelConfig(**tiny_model_config.model_dump()).fingerprint() == tiny_model_config.fingerprint()


# ---------------------------------------------------------------------------- atomic writes


def test_failed_write_leaves_the_destination_unchanged_and_no_temp_file(tmp_path):
    dest = tmp_path / "artifact.json"
    dest.write_text("old content")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(dest) as tmp:
            tmp.write_text("half of the new")
            raise RuntimeError("disk full")
    assert dest.read_text() == "old content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifact.json"]


def test_failed_first_write_creates_nothing(tmp_path):
    def writer(p):
        p.write_bytes(b"partial")
        raise KeyboardInterrupt  # even an interrupt cleans up

    with pytest.raises(KeyboardInterrupt):
        write_atomic(tmp_path / "sub" / "new.bin", writer)
    assert list((tmp_path / "sub").iterdir()) == []


def test_successful_write_replaces_and_is_readable(tmp_path):
    dest = tmp_path / "a.json"
    dest.write_text("old")
    write_json(dest, {"x": 1})
    assert dest.read_text() == '{\n  "x": 1\n}\n'
    assert oct(dest.stat().st_mode & 0o777) == oct(0o644)  # not mkstemp's private 0600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_failing_checkpoint_save_keeps_the_previous_checkpoint(saved, monkeypatch):
    import ddsm.checkpoint as ckpt

    path, model = saved
    before = path.read_bytes()

    def crash_midway(tensors, filename, metadata=None):
        with open(filename, "wb") as fh:
            fh.write(b"\x00" * 100)  # half a file
        raise OSError("no space left on device")

    monkeypatch.setattr(ckpt, "save_file", crash_midway)
    with pytest.raises(OSError, match="no space"):
        save_supernet(path, model, ckpt.ModelConfig(unet=model.config, diffusion=DiffusionConfig(num_timesteps=50)))
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
    monkeypatch.undo()
    assert load_supernet(path).header["note"] == "hello"
