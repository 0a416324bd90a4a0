"""A diffusion transformer goes through every stage a UNet does: train, cost, sample, search, export, verdict.

The network itself is tested in ``tests/test_dit.py`` and by the backbone
contract suite; here the point is that nothing downstream assumes a UNet.
"""

from __future__ import annotations

import json

import pytest
import yaml

from cli_helpers import assert_bad_input, invoke, write_space

TINY_DIT = {"image_size": 8, "patch_size": 2, "hidden_size": 32, "depth": 2, "num_heads": 4,
            "widths": [0.25, 0.5, 0.75, 1.0]}


@pytest.fixture(scope="module")
def dit_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("dit")
    cfg = root / "dit.yaml"
    cfg.write_text(yaml.safe_dump({"model": {"dit": TINY_DIT, "diffusion": {"num_timesteps": 50}},
                                   "train": {"iters": 2, "batch_size": 8, "checkpoint_every": 1000}}))
    r = invoke("train", "--config", cfg, "--out", root / "run", "--no-progress")
    assert r.exit_code == 0, r.output
    return root / "run"


def test_a_dit_trains_and_its_config_holds_no_unet_section(dit_run):
    model = json.loads((dit_run / "config.json").read_text())["model"]
    assert model["dit"]["hidden_size"] == 32 and "unet" not in model


def test_a_dit_is_costed_sampled_searched_exported_and_judged(dit_run, tmp_path):
    r = invoke("cost", "--checkpoint", dit_run, "--out", tmp_path / "cost.json", "--repeats", "1", "--warmup", "0",
               "--batch-size", "1", "--no-progress")
    assert r.exit_code == 0, r.output
    macs = json.loads((tmp_path / "cost.json").read_text())
    assert r.exit_code == 0 and "macs" in json.dumps(macs)
    r = invoke("sample", "--checkpoint", dit_run, "--width", "0.5", "--steps", "3", "--num", "2",
               "--out", tmp_path / "s", "--no-progress")
    assert r.exit_code == 0, r.output
    space = write_space(tmp_path / "space.yaml")
    r = invoke("search", "--space", space, "--checkpoint", dit_run, "--out", tmp_path / "search", "--no-progress")
    assert r.exit_code == 0, r.output
    r = invoke("export", tmp_path / "search", "--checkpoint", dit_run, "--out", tmp_path / "exp", "--repeats", "1",
               "--warmup", "0", "--num", "2", "--no-progress")
    assert r.exit_code == 0, r.output
    sched = sorted((tmp_path / "exp").glob("front-*.json"))[0]
    r = invoke("sample", "--checkpoint", dit_run, "--schedule", sched, "--num", "2", "--out", tmp_path / "s2",
               "--no-progress")
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("changes, needles", [
    ({"patch_size": 3}, ["patch_size 3 does not divide image_size 8"]),
    ({"num_heads": 4, "widths": [0.3, 1.0]}, ["width 0.3 keeps 1.2 of 4 attention heads", "splits a head"]),
    ({"hidden_size": 30, "num_heads": 4}, ["hidden_size 30 is not a multiple of num_heads 4"]),
    ({"mlp_ratio": float("nan")}, ["mlp_ratio", "finite"]),
])
def test_bad_dit_configs_are_one_line_and_nothing_is_written(tmp_path, changes, needles):
    cfg = tmp_path / "dit.yaml"
    cfg.write_text(yaml.safe_dump({"model": {"dit": {**TINY_DIT, **changes}}, "train": {"iters": 1}}))
    assert_bad_input(invoke("train", "--config", cfg, "--out", tmp_path / "run", "--no-progress"), *needles)
    assert not (tmp_path / "run").exists()


def test_a_dit_section_beside_a_unet_section_or_another_backbone_is_refused(tmp_path):
    for model, needle in [({"dit": TINY_DIT, "unet": {"image_size": 8}}, "takes no unet section"),
                          ({"dit": TINY_DIT, "backbone": "unet"}, "a dit section is for backbone 'dit'"),
                          ({"backbone": "dit"}, "backbone 'dit' needs a dit section")]:
        cfg = tmp_path / "dit.yaml"
        cfg.write_text(yaml.safe_dump({"model": model, "train": {"iters": 1}}))
        assert_bad_input(invoke("train", "--config", cfg, "--out", tmp_path / "run", "--no-progress"), needle)
        assert not (tmp_path / "run").exists()
