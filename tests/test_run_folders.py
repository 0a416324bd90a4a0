"""Where commands write: unwritable paths, unrelated files, folders of another kind and locked folders are refused
with one line and exit 2, before any work, leaving every file as it was."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ddsm.errors import DDSMError
from ddsm.runfolder import check_run_folder, folder_kind, hold_folder

from cli_helpers import assert_bad_input, invoke, write_space


def snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` with a hash of its content (folders as 'dir')."""
    return {str(p.relative_to(root)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="module")
def search(trained_run, tmp_path_factory):
    """A finished tiny search folder, shared read-only."""
    root = tmp_path_factory.mktemp("search")
    out = root / "search"
    r = invoke("search", "--space", write_space(root / "space.yaml"), "--checkpoint", trained_run, "--out", out,
               "--no-progress")
    assert r.exit_code == 0, r.output
    return out


def _commands(run, search, space, out):
    """Every command that writes, with ``out`` as its output."""
    return {
        "sample": ["sample", "--checkpoint", run, "--width", "1.0", "--steps", "2", "--num", "2", "--out", out],
        "train": ["train", "--iters", "2", "--out", out],
        "cost": ["cost", "--checkpoint", run, "--repeats", "1", "--warmup", "0", "--out", out],
        "search": ["search", "--space", space, "--checkpoint", run, "--out", out],
        "export": ["export", search, "--checkpoint", run, "--out", out],
        "plot": ["plot", search, "--checkpoint", run, "--out", out],
        "spectrum": ["spectrum", "--checkpoint", run, "--out", out],
        "featurenet": ["featurenet", "--checkpoint", run, "--epochs", "1", "--out", out],
        "evaluate": ["evaluate", "--checkpoint", run, "--width", "1.0", "--steps", "2", "--num", "2", "--out", out],
        "verdict": ["verdict", "--checkpoint", run, "--width", "0.5", "--steps", "2", "--num", "50", "--out", out],
        "quickstart": ["quickstart", "--checkpoint", run, "--space", space, "--out", out],
    }


@pytest.mark.parametrize("where", ["below a file", "in procfs"])
def test_an_unwritable_out_is_refused_before_any_work(where, trained_run, search, tmp_path):
    space = write_space(tmp_path / "space.yaml")
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "afile" / "out" if where == "below a file" else Path("/proc/self/ddsm-out")
    before = snapshot(tmp_path)
    for name, args in _commands(trained_run, search, space, out).items():
        line = assert_bad_input(invoke(*args, *(["--no-progress"] if name not in ("spectrum", "plot") else [])))
        assert str(out) in line and ("is a file" in line or "cannot be written" in line), (name, line)
        assert snapshot(tmp_path) == before, name


def test_unrelated_files_are_never_overwritten(trained_run, search, tmp_path):
    precious = {"cost": "precious.json", "spectrum": "notes.json", "featurenet": "weights.safetensors",
                "evaluate": "table.csv", "verdict": "verdict.csv"}
    for name, file in precious.items():
        (tmp_path / file).write_text('{"mine": true}\n' if file.endswith(".json") else "a,b\n1,2\n")
    before = snapshot(tmp_path)
    space = write_space(tmp_path / "space.yaml")
    for name, file in precious.items():
        args = _commands(trained_run, search, space, tmp_path / file)[name]
        line = assert_bad_input(invoke(*args, *(["--no-progress"] if name != "spectrum" else [])), "not overwritten")
        assert file in line
    assert snapshot(tmp_path) == {**before, "space.yaml": snapshot(tmp_path)["space.yaml"]}
    # a file of the command's own kind is replaced: the rerun of a spectrum fit
    fit = tmp_path / "fit.json"
    assert invoke("spectrum", "--checkpoint", trained_run, "--out", fit).exit_code == 0
    assert invoke("spectrum", "--checkpoint", trained_run, "--out", fit).exit_code == 0


def test_folders_of_another_kind_are_refused(trained_run, search, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    samples = tmp_path / "samples"
    assert invoke("sample", "--checkpoint", trained_run, "--width", "1.0", "--steps", "2", "--num", "2",
                  "--out", samples, "--no-progress").exit_code == 0
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert folder_kind(run) == "training run" and folder_kind(samples) == "samples" and folder_kind(search) == "search"
    before = snapshot(tmp_path)
    space = write_space(tmp_path.parent / f"{tmp_path.name}-space.yaml")
    cases = [("sample", run, "holds a ddsm training run"), ("train", search, "holds a ddsm search"),
             ("search", samples, "holds a ddsm samples"), ("quickstart", foreign, "holds no ddsm quickstart"),
             ("sample", foreign, "holds no ddsm samples"), ("train", samples, "holds a ddsm samples")]
    for name, out, needle in cases:
        args = _commands(trained_run, search, space, out)[name]
        assert_bad_input(invoke(*args, "--no-progress"), str(out), needle)
    assert snapshot(tmp_path) == before


def test_refused_commands_leave_no_folder(trained_run, tmp_path):
    space = write_space(tmp_path / "space.yaml")
    missing = tmp_path / "missing"
    assert_bad_input(invoke("train", "--resume", "--out", missing, "--no-progress"), "cannot resume")
    assert not missing.exists()
    for bad in (["--runner", "ray", "--workers", "0"], ["--chunk-size", "0"], ["--device", "cuda:7"],
                ["--runner", "serial", "--address", "127.0.0.1:6379"]):
        assert_bad_input(invoke("search", "--space", space, "--checkpoint", trained_run, "--out", missing, *bad,
                                "--no-progress"))
        assert not missing.exists(), bad
    # the corrected command then starts normally: nothing was claimed by the refused one
    r = invoke("search", "--space", space, "--checkpoint", trained_run, "--out", missing, "--no-progress")
    assert r.exit_code == 0, r.output


HOLD = textwrap.dedent("""
    import sys
    from ddsm.runfolder import hold_folder
    with hold_folder(sys.argv[1], what="test"):
        print("held", flush=True)
        sys.stdin.read()
""")


def test_a_second_process_on_a_run_folder_is_refused_naming_the_holder(trained_run, search, tmp_path):
    folders = {"train": tmp_path / "run", "search": tmp_path / "search", "sample": tmp_path / "samples",
               "export": tmp_path / "report"}
    shutil.copytree(trained_run, folders["train"])
    shutil.copytree(search, folders["search"])
    space = write_space(tmp_path.parent / f"{tmp_path.name}-space.yaml")
    for name, folder in folders.items():
        holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout.readline().strip() == "held"
            before = snapshot(folder)
            args = {"train": ["train", "--resume", "--out", folder],
                    "search": ["search", "--resume", "--checkpoint", trained_run, "--out", folder],
                    "sample": _commands(trained_run, search, space, folder)["sample"],
                    "export": _commands(trained_run, search, space, folder)["export"]}[name]
            assert_bad_input(invoke(*args, "--no-progress"), str(folder), f"in use by pid {holder.pid}")
            assert snapshot(folder) == before
        finally:
            holder.communicate("")
        assert holder.returncode == 0
    # once the holder is gone, the folder is free again
    assert invoke("train", "--resume", "--out", folders["train"], "--no-progress").exit_code == 0


def test_hold_folder_removes_temp_files_and_folders_it_created_and_rechecks_the_kind(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / ".front.csv.a1b2c3d4.tmp").write_text("")
    (out / ".notes.txt").write_text("a hidden file of the user's")
    with hold_folder(out, what="test"):
        with pytest.raises(DDSMError, match="in use by pid"):  # not re-entrant: one holder, even in one process
            with hold_folder(out, what="test"):
                pass
    assert sorted(p.name for p in out.iterdir()) == [".ddsm.lock", ".notes.txt"]
    new = tmp_path / "new" / "deeper"
    with pytest.raises(RuntimeError):
        with hold_folder(new, what="test"):
            raise RuntimeError("refused")
    assert not (tmp_path / "new").exists()  # every folder it created is gone
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("x")
    with pytest.raises(DDSMError, match="holds no ddsm samples"):  # the kind is checked again under the lock
        with hold_folder(mine, what="samples", kind="samples"):
            pass
    assert sorted(p.name for p in mine.iterdir()) == [".ddsm.lock", "notes.txt"]
    check_run_folder(tmp_path / "fresh", kind="samples")
    assert not (tmp_path / "fresh").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through read-only permissions")
def test_a_read_only_folder_is_refused(trained_run, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert_bad_input(invoke("sample", "--checkpoint", trained_run, "--width", "1.0", "--steps", "2", "--num", "2",
                                "--out", ro / "out", "--no-progress"), "cannot be written")
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)


def test_a_cost_table_alone_does_not_make_a_folder_a_quickstart(trained_run, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    assert invoke("cost", "--checkpoint", trained_run, "--repeats", "1", "--warmup", "0", "--out", folder / "cost.json",
                  "--no-progress").exit_code == 0
    assert folder_kind(folder) is None
    (folder / "search").mkdir()
    (folder / "search" / "search.json").write_text('{"kind": "ddsm.search"}')
    assert folder_kind(folder) == "quickstart"  # a quickstart folder written before quickstart.json existed


@pytest.mark.parametrize("command", [["train", "--config", "CONFIG"], ["distill", "--teacher", "RUN", "--steps", "2"],
                                     ["cost", "--checkpoint", "RUN"]])
def test_an_output_inside_the_installed_package_is_refused(tmp_path, trained_run, tiny_yaml, command):
    import ddsm

    inside = Path(ddsm.__file__).parent / "assets" / "my-run"
    args = [tiny_yaml() if a == "CONFIG" else trained_run if a == "RUN" else a for a in command]
    r = invoke(*args, "--out", inside / ("cost.json" if command[0] == "cost" else ""), "--no-progress")
    assert_bad_input(r, "inside ddsm's installed package")
    assert not inside.exists()
