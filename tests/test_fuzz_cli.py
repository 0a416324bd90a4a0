"""The bad-input fuzz table of experiments/fuzz_cli.py: every case must be refused with one ``Error:`` line.

The table runs in-process (ddsm.cli imported once, CliRunner in a forked child
per case, two at a time). The default suite runs a fixed stratified quarter of
it (the first case of every command, then every 4th case: about 25 s of cases
after 20-40 s of fixtures on 2 cores); ``-m slow`` runs the whole table (about
90 s of cases). The classifier tests check that the table cannot pass by
accident, and that the quarter reaches every command.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_fuzz():
    spec = importlib.util.spec_from_file_location("fuzz_cli", ROOT / "experiments" / "fuzz_cli.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["fuzz_cli"] = mod
    spec.loader.exec_module(mod)
    return mod


fuzz = _load_fuzz()


# ------------------------------------------------------------------------- the classifier itself (fast)


def _result(**kw):
    base = {"exit_code": 2, "stdout": "", "stderr": "Error: --num (0) must be positive\n", "killed": None,
            "written": {"added": [], "removed": [], "changed": [], "cwd_added": []}}
    return {**base, **kw}


def test_classifier_accepts_a_clean_refusal():
    assert fuzz.classify(_result()) == ("ok", [])


def test_classifier_flags_a_traceback():
    tb = ('Traceback (most recent call last):\n  File "x.py", line 1, in <module>\n'
          "RuntimeError: Overflow when unpacking long\n")
    outcome, problems = fuzz.classify(_result(exit_code=1, stderr=tb))
    assert outcome == "traceback"
    assert {"traceback", "wrong-exit", "multi-line"} <= set(problems)
    assert fuzz.first_line(tb) == "RuntimeError: Overflow when unpacking long"


def test_classifier_flags_every_other_defect():
    assert fuzz.classify(_result(exit_code=0, stderr=""))[0] == "wrong-exit"
    assert fuzz.classify(_result(stderr="Usage: ddsm x\n\nError: bad\n"))[0] == "multi-line"
    assert fuzz.classify(_result(stderr="warning: hmm\nError: bad\n"))[0] == "multi-line"
    assert fuzz.classify(_result(written={"added": ["out/grid.png"]}))[0] == "wrote"
    assert fuzz.classify(_result(written={"changed": ["precious.txt"]}))[0] == "wrote"
    assert fuzz.classify(_result(written={"cwd_added": ["runs"]}))[0] == "wrote"
    assert fuzz.classify(_result(written={"outside_added": ["/x/ddsm/assets/run"]}))[0] == "wrote"
    assert fuzz.classify(_result(killed="timeout after 60 s", exit_code=-9, stderr=""))[0] == "hang"


def test_snapshot_diff_sees_new_changed_and_removed_files(tmp_path):
    (tmp_path / "keep.txt").write_text("a")
    (tmp_path / "gone.txt").write_text("b")
    before = fuzz.snapshot(tmp_path)
    (tmp_path / "keep.txt").write_text("A")
    (tmp_path / "gone.txt").unlink()
    (tmp_path / "new").mkdir()
    d = fuzz.diff_snapshots(before, fuzz.snapshot(tmp_path))
    assert d == {"added": ["new"], "removed": ["gone.txt"], "changed": ["keep.txt"]}


def test_sandbox_edits_change_the_fixture_copy_after_files_are_written(tmp_path):
    fixtures = tmp_path / "fixtures"
    (fixtures / "run").mkdir(parents=True)
    (fixtures / "run" / "front.json").write_text('{"members": [{"share": 0.5, "proxy": 1.0}], "kind": "k"}')
    (fixtures / "run" / "weights.bin").write_text("w")
    c = fuzz.Case("x", ("export-steps",), files={"run/weights.bin": None}, fixtures=("run",),
                  edits={"run/front.json": {"members.0.share": fuzz.Raw("1e309"), "kind": fuzz.DROP,
                                            "search": f"{fuzz.SANDBOX}/run", "big": lambda: "y" * 3}})
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    assert fuzz.setup_sandbox(c, sandbox, fixtures) is None
    text = (sandbox / "run" / "front.json").read_text()
    assert '"share": 1e309' in text and '"kind"' not in text and '"big": "yyy"' in text
    assert fuzz.json.loads(text)["search"] == f"{sandbox.resolve()}/run"
    assert not (sandbox / "run" / "weights.bin").exists() and (fixtures / "run" / "weights.bin").exists()


def test_table_is_large_and_ids_are_unique():
    ids = [c.id for c in fuzz.CASES]
    assert len(ids) >= 490 and len(set(ids)) == len(ids)
    assert {c.command for c in fuzz.CASES} >= {"train", "sample", "cost", "featurenet", "evaluate", "spectrum",
                                               "verdict", "search", "export", "plot", "sweep", "quickstart",
                                               "distill", "slim", "search-steps", "export-steps"}
    assert all(set(c.fixtures) <= set(fuzz.FIXTURES) for c in fuzz.CASES)


# ------------------------------------------------------------------------- the whole table


EVERY = 4  # the default suite's share of the table: the first case of every command, then every 4th case
QUARTER = fuzz.sample(fuzz.CASES, EVERY)
REST = [c for c in fuzz.CASES if c.id not in {q.id for q in QUARTER}]


def test_the_default_quarter_reaches_every_command_and_the_slow_rest_completes_the_table():
    assert {c.command for c in QUARTER} == {c.command for c in fuzz.CASES}
    assert len(fuzz.CASES) / 5 < len(QUARTER) < len(fuzz.CASES) / 2
    assert sorted(c.id for c in QUARTER + REST) == sorted(c.id for c in fuzz.CASES)
    assert fuzz.sample(fuzz.CASES, 1) == list(fuzz.CASES)
    with pytest.raises(ValueError, match="--sample 0 must be"):
        fuzz.sample(fuzz.CASES, 0)


def _run_table(out: Path, every: int) -> dict:
    """The table (every ``every``-th case), run by the script in a fresh interpreter: its in-process mode forks a
    child per case, and a fork of this pytest process (whose torch thread pool earlier tests started) can
    deadlock."""
    import json
    import subprocess

    r = subprocess.run([sys.executable, str(ROOT / "experiments" / "fuzz_cli.py"), "--in-process", "--out", str(out),
                        "--sample", str(every)], capture_output=True, text=True, cwd=str(out))
    doc = json.loads((out / "fuzz-cli-in-process.json").read_text())
    expected = fuzz.sample(fuzz.CASES, every)
    assert doc["totals"]["inputs tried"] + doc["totals"]["skipped"] == len(expected), r.stderr[-2000:]
    assert not doc["fixture_errors"], doc["fixture_errors"]  # else the cases that need them would only skip
    return {c["id"]: c for c in doc["cases"]}


@pytest.fixture(scope="module")
def quarter_results(tmp_path_factory):
    return _run_table(tmp_path_factory.mktemp("fuzz-quarter"), EVERY)


@pytest.fixture(scope="module")
def table_results(tmp_path_factory):
    return _run_table(tmp_path_factory.mktemp("fuzz-results"), 1)


def _assert_refused_cleanly(r: dict) -> None:
    if r["outcome"] == "skip":
        pytest.skip(r["skipped"])
    w = {k: v for k, v in (r.get("written") or {}).items() if v}
    assert r["outcome"] == "ok", (f"ddsm {' '.join(r['argv'])}: {r['outcome']} (exit {r['exit_code']}); "
                                  f"{r['first_line']!r}; written {w}")


@pytest.mark.timeout(1200)  # the first case runs the quarter (module fixture)
@pytest.mark.parametrize("case_id", [c.id for c in QUARTER])
def test_bad_input_is_refused_cleanly(case_id, quarter_results):
    _assert_refused_cleanly(quarter_results[case_id])


@pytest.mark.slow
@pytest.mark.timeout(1200)  # the first case runs the whole table (module fixture)
@pytest.mark.parametrize("case_id", [c.id for c in REST])
def test_the_rest_of_the_table_is_refused_cleanly(case_id, table_results):
    _assert_refused_cleanly(table_results[case_id])
