"""The trainer contract: every kind of run (train, distill, slim) is the one trainer's, and each keeps its promises.

Bit-exact resume after a shorter run, after Ctrl-C in the middle of a step and
after SIGKILL; the EMA in the exported supernet and in snapshots; the same
``loss@w`` meaning in every metrics log. Adding a target to
:data:`ddsm.train.TARGETS` means adding one config maker to :data:`KINDS`.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ddsm.checkpoint import read_tensors, save_supernet
from ddsm.config import RunConfig, validate
from ddsm.distill import student_config
from ddsm.nn.unet import SlimUNet
from ddsm.train import TARGETS, Trainer

from conftest import assert_same_training_state, randomise, run_config_dict

diffusers = pytest.importorskip("diffusers")

from test_diffusers_folder import _save as _user_model  # noqa: E402  (the tiny diffusers model of the folder tests)


def _train(tmp: Path, **train) -> RunConfig:
    return validate(RunConfig, run_config_dict(**train))


def _distill(tmp: Path, **train) -> RunConfig:
    base = validate(RunConfig, run_config_dict())
    teacher = tmp / "teacher.safetensors"
    if not teacher.exists():
        save_supernet(teacher, randomise(SlimUNet(base.model.unet)), base.model)
    d = run_config_dict(**train)
    d["model"] = student_config(base.model, 3).model_dump(mode="json")
    d["distill"] = {"teacher": str(teacher), "steps": 3, "sub_steps": 2}
    return validate(RunConfig, d)


def _slim(tmp: Path, **train) -> RunConfig:
    from ddsm.integrations.diffusers_folder import model_config_for, read_diffusers_folder

    folder = tmp / "user-model"
    if not folder.exists():
        _user_model(folder)
    d = run_config_dict(**train)
    d["model"] = model_config_for(read_diffusers_folder(folder), (0.5, 1.0)).model_dump(mode="json")
    d["slim"] = {"source": str(folder), "hidden_weight": 0.5}
    return validate(RunConfig, d)


#: a config maker per run kind: (folder for its inputs, **train overrides) -> RunConfig
KINDS = {"train": _train, "distill": _distill, "slim": _slim}


def test_every_run_kind_has_a_contract_case():
    assert set(KINDS) == set(TARGETS)


@pytest.fixture(params=sorted(KINDS))
def make(request, tmp_path):
    return lambda **train: KINDS[request.param](tmp_path, **train)


def test_resume_after_a_shorter_run_is_bitwise_exact(make, tiny_data, tmp_path):
    kw = dict(lr_decay="constant", warmup=0)  # iters may then change on resume without changing the result
    a = Trainer(make(iters=4, **kw), tmp_path / "a", device="cpu", data=tiny_data, progress=False)
    a.run()
    Trainer(make(iters=2, **kw), tmp_path / "b", device="cpu", data=tiny_data, progress=False).run()
    b = Trainer(make(iters=4, **kw), tmp_path / "b", device="cpu", data=tiny_data, progress=False)
    b.run(resume=True)
    assert_same_training_state(a, b)


def test_ctrl_c_in_the_middle_of_a_step_resumes_bitwise_exactly(make, tiny_data, tmp_path, monkeypatch):
    cfg = make(iters=4, warmup=1, lr_decay="cosine")
    a = Trainer(cfg, tmp_path / "a", device="cpu", data=tiny_data, progress=False)
    a.run()
    b = Trainer(cfg, tmp_path / "b", device="cpu", data=tiny_data, progress=False)
    real_ema = Trainer._ema_update

    def interrupted_ema(self):
        if self.step == 2:  # after the optimizer step, before its EMA update
            signal.raise_signal(signal.SIGINT)
        return real_ema(self)

    monkeypatch.setattr(Trainer, "_ema_update", interrupted_ema)
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        b.run()
    monkeypatch.undo()
    # the step the signal arrived in was finished, then the run stopped; the caller's handler was put back
    assert read_tensors(tmp_path / "b" / "checkpoint.safetensors")[1]["step"] == 2
    assert signal.getsignal(signal.SIGINT) is before
    b2 = Trainer(cfg, tmp_path / "b", device="cpu", data=tiny_data, progress=False)
    b2.run(resume=True)
    assert_same_training_state(a, b2)


_CHILD = """
import sys, time
from ddsm.config import RunConfig, load_yaml, validate
from ddsm.train import Trainer
real = Trainer.train_step
def slow(self, *args, **kwargs):
    time.sleep(0.25)
    return real(self, *args, **kwargs)
Trainer.train_step = slow
Trainer(validate(RunConfig, load_yaml(sys.argv[1])), sys.argv[2], device="cpu", progress=False).run()
"""


def test_a_run_killed_with_sigkill_resumes_to_the_uninterrupted_result(make, tmp_path):
    cfg = make(iters=8, checkpoint_every=2, warmup=1, lr_decay="cosine", threads=1)
    (tmp_path / "cfg.json").write_text(json.dumps(cfg.model_dump(mode="json")))
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(tmp_path / "cfg.json"), str(tmp_path / "b")])
    ckpt, deadline = tmp_path / "b" / "checkpoint.safetensors", time.monotonic() + 120
    while time.monotonic() < deadline and child.poll() is None:
        if ckpt.exists() and read_tensors(ckpt)[1]["step"] >= 2:
            child.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    assert child.wait(timeout=60) == -signal.SIGKILL  # killed mid-run, not finished
    b = Trainer(cfg, tmp_path / "b", device="cpu", progress=False)
    b.run(resume=True)
    a = Trainer(cfg, tmp_path / "a", device="cpu", progress=False)
    a.run()
    assert_same_training_state(a, b)


def test_the_supernet_and_snapshots_hold_the_ema_weights(make, tiny_data, tmp_path):
    out = tmp_path / "run"
    tr = Trainer(make(iters=4, snapshot_every=2, ema_decay=0.5), out, device="cpu", data=tiny_data, progress=False)
    tr.run()
    assert sorted(p.name for p in (out / "snapshots").iterdir()) == ["ema-000002.safetensors",
                                                                       "ema-000004.safetensors"]
    for path in (out / "supernet.safetensors", out / "snapshots" / "ema-000004.safetensors"):
        tensors, _ = read_tensors(path)
        assert all(torch.equal(tensors[f"model.{k}"], v) for k, v in tr.ema.items())
    model = tr.model.state_dict()
    assert any(not torch.equal(model[k], v) for k, v in tr.ema.items())  # the EMA is not the raw weights


def test_loss_at_a_width_is_the_eps_term_and_each_extra_term_has_its_own_name(make, tiny_data, tmp_path):
    tr = Trainer(make(iters=1), tmp_path / "run", device="cpu", data=tiny_data, progress=False)
    losses = tr.train_step()
    widths = tr.target.widths()
    assert {f"loss@{w:g}" for w in (widths[0], widths[-1])} <= losses.keys()
    extra = {k.split("@")[0] for k in losses if "@" in k} - {"loss"}
    assert extra == {term.name for term in tr.terms}
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
