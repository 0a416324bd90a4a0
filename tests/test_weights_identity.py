"""A run folder knows the weights it was built on: another file with the same architecture in their place is refused.

Fingerprints name architectures; two trainings of one recipe share one. The
sha256 of each weights file a run reads is recorded where the run starts
(checkpoint header, search.json, joint.json), and a resume or an export that
finds other weights there refuses in one line, exit 2.
"""

from __future__ import annotations

import shutil

import pytest
import yaml

from ddsm.checkpoint import load_supernet, save_supernet

from cli_helpers import assert_bad_input, invoke, write_space
from conftest import randomise


def _same_architecture_other_weights(src, dst, seed: int = 7) -> None:
    net = load_supernet(src)
    save_supernet(dst, randomise(net.model, seed), net.config)


def test_a_distillation_refuses_to_resume_after_its_teacher_was_replaced(trained_run, tmp_path):
    teacher = tmp_path / "teacher.safetensors"
    shutil.copy(trained_run / "supernet.safetensors", teacher)
    out = tmp_path / "student"
    assert invoke("distill", "--teacher", teacher, "--steps", "2", "--iters", "1", "--out", out,
                  "--no-progress").exit_code == 0
    _same_architecture_other_weights(trained_run, teacher)  # same fingerprint, other weights
    before = (out / "checkpoint.safetensors").read_bytes()
    assert_bad_input(invoke("distill", "--out", out, "--resume", "--iters", "2", "--no-progress"),
                     "teacher weights changed since the run started", "new --out")
    assert (out / "checkpoint.safetensors").read_bytes() == before


def test_a_fine_tune_refuses_to_resume_after_its_start_was_replaced(trained_run, tiny_yaml, tmp_path):
    start = tmp_path / "start.safetensors"
    shutil.copy(trained_run / "supernet.safetensors", start)
    cfg = tiny_yaml(init_from=str(start), iters=1)
    out = tmp_path / "ft"
    assert invoke("train", "--config", cfg, "--out", out, "--no-progress").exit_code == 0
    _same_architecture_other_weights(trained_run, start)
    assert_bad_input(invoke("train", "--out", out, "--resume", "--iters", "2", "--no-progress"),
                     "init_from weights changed")


def test_a_search_refuses_to_resume_or_export_on_other_weights(trained_run, tmp_path):
    ckpt = tmp_path / "net.safetensors"
    shutil.copy(trained_run / "supernet.safetensors", ckpt)
    space = write_space(tmp_path / "space.yaml")
    out = tmp_path / "search"
    assert invoke("search", "--space", space, "--checkpoint", ckpt, "--out", out, "--no-progress").exit_code == 0
    log = (out / "evaluations.parquet").read_bytes()
    _same_architecture_other_weights(trained_run, ckpt)
    assert_bad_input(invoke("search", "--checkpoint", ckpt, "--out", out, "--resume", "--no-progress"),
                     "supernet weights (sha256)")
    assert (out / "evaluations.parquet").read_bytes() == log  # nothing mixed into the log
    assert_bad_input(invoke("export", out, "--checkpoint", ckpt, "--out", tmp_path / "exp", "--no-progress"),
                     "holds other weights", "search again")
    assert not (tmp_path / "exp").exists()


@pytest.fixture
def students(trained_run, tmp_path):
    out = {}
    for k in (2,):
        r = invoke("distill", "--teacher", trained_run, "--steps", k, "--iters", "1", "--out", tmp_path / f"k{k}",
                   "--no-progress")
        assert r.exit_code == 0, r.output
        out[k] = tmp_path / f"k{k}"
    return out


def test_a_joint_search_refuses_to_resume_or_export_after_a_student_was_replaced(trained_run, students, tmp_path):
    base = write_space(tmp_path / "base.yaml")
    joint = tmp_path / "joint.yaml"
    joint.write_text(yaml.safe_dump({"base": str(base), "teacher": str(trained_run),
                                     "students": [str(students[2])]}))
    out = tmp_path / "joint"
    assert invoke("search-steps", "--space", joint, "--out", out, "--no-progress").exit_code == 0
    student = students[2] / "supernet.safetensors"
    _same_architecture_other_weights(student, student)
    assert_bad_input(invoke("search-steps", "--out", out, "--resume", "--no-progress"),
                     "joint search of other weights (weights: model 'k2': ")
    assert_bad_input(invoke("export-steps", out, "--out", tmp_path / "exp", "--no-progress"),
                     "holds other weights", "'k2'")
    assert not (tmp_path / "exp").exists()



def test_a_schedule_file_is_refused_on_other_weights_unless_allowed_and_the_override_is_recorded(trained_run, tmp_path):
    import json

    import pandas as pd

    from ddsm.integrations.diffusers import ScheduledDenoiser
    from ddsm.schedule import Schedule

    ckpt = tmp_path / "net.safetensors"
    shutil.copy(trained_run / "supernet.safetensors", ckpt)
    search, exp = tmp_path / "search", tmp_path / "exp"
    assert invoke("search", "--space", write_space(tmp_path / "space.yaml"), "--checkpoint", ckpt, "--out", search,
                  "--no-progress").exit_code == 0
    assert invoke("export", search, "--checkpoint", ckpt, "--out", exp, "--repeats", "1", "--warmup", "0",
                  "--num", "2", "--no-progress").exit_code == 0
    sched_file = sorted(exp.glob("front-*.json"))[0]
    old = load_supernet(ckpt).weights_sha256
    assert Schedule.load(sched_file).weights == old  # the schedule names the weights it was measured on
    assert json.loads((exp / "export.json").read_text())["weights"] == old
    r = invoke("sample", "--checkpoint", ckpt, "--schedule", sched_file, "--num", "2", "--out", tmp_path / "s0",
               "--no-progress")
    assert r.exit_code == 0, r.output  # the same weights: accepted, nothing recorded
    assert "allowed_new_weights" not in json.loads((tmp_path / "s0" / "sample.json").read_text())

    _same_architecture_other_weights(trained_run, ckpt)
    for cmd, extra in [("sample", ["--num", "2", "--out", tmp_path / "s1"]), ("evaluate", ["--num", "2"]),
                       ("verdict", ["--num", "50", "--teacher-num", "50", "--draws", "10"]),
                       ("spectrum", ["--num", "2"])]:
        assert_bad_input(invoke(cmd, "--checkpoint", ckpt, "--schedule", sched_file, *extra, "--no-progress"),
                         f"schedule file '{sched_file}' was measured on other weights", "--allow-new-weights")
    assert not (tmp_path / "s1").exists()
    with pytest.raises(Exception, match="measured on other weights"):
        ScheduledDenoiser(load_supernet(ckpt), Schedule.load(sched_file))

    # asked for: used, said on stderr, and recorded beside the outputs
    r = invoke("sample", "--checkpoint", ckpt, "--schedule", sched_file, "--num", "2", "--out", tmp_path / "s2",
               "--allow-new-weights", "--no-progress")
    assert r.exit_code == 0, r.output
    assert "used anyway: --allow-new-weights" in r.stderr
    rec = json.loads((tmp_path / "s2" / "sample.json").read_text())["allowed_new_weights"][str(sched_file)]
    assert rec == {"schedule_weights": old, "checkpoint_weights": load_supernet(ckpt).weights_sha256}
    r = invoke("evaluate", "--checkpoint", ckpt, "--schedule", sched_file, "--width", "1", "--num", "2",
               "--out", tmp_path / "ev.csv", "--allow-new-weights", "--no-progress")
    assert r.exit_code == 0, r.output
    assert list(pd.read_csv(tmp_path / "ev.csv")["measured_on_other_weights"]) == [True, False]
    assert ScheduledDenoiser(load_supernet(ckpt), Schedule.load(sched_file), allow_new_weights=True).weights_override
