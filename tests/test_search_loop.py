"""The search loop: a serial run, exact resume (in-process stop and SIGKILL), the cache, refused folders."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from ddsm.errors import DDSMError
from ddsm.io import read_parquet
from ddsm.search import SearchConfig, SyntheticEvaluatorFactory, run_search
from ddsm.search.log import _EXACT_FLOATS
from ddsm.search.synthetic import SyntheticEvaluator

COSTS = {0.25: 1 / 16, 0.5: 1 / 4, 0.75: 9 / 16, 1.0: 1.0}
EXACT = ["generation", "genome", "widths", "proxy", "valid", "cost", "share", "constraint"]


def tiny_space(**kw) -> SearchConfig:
    base = dict(sampler={"steps": 12}, segments=6, population=8, generations=5, budget=0.45, seed=3,
                seeding={"n_random": 2, "knapsack_budgets": 3}, cache={"flush_seconds": 0})
    base.update(kw)
    return SearchConfig(**base)


def run(space: SearchConfig, out: Path, factory=SyntheticEvaluatorFactory(), **kw):
    kw.setdefault("supernet", "net-a")
    return run_search(space, evaluator_factory=factory, costs=COSTS, out_dir=out, progress=False,
                      device="cpu", chunk_size=2, **kw)


def log_of(out: Path) -> pd.DataFrame:
    path = out / "evaluations.parquet"
    df = read_parquet(path) if path.exists() else pd.read_csv(out / "evaluations.csv", **_EXACT_FLOATS)
    return df[EXACT]


def outcome(out: Path) -> tuple:
    """Everything that must be bitwise identical between a run and an interrupted-and-resumed run."""
    state = json.loads((out / "state.json").read_text())
    return (log_of(out), (out / "front.csv").read_text(), state["pop"], state["rng"], state["generation"],
            state["hv_ref"], [h["hypervolume"] for h in state["history"]])


def assert_same(a: Path, b: Path) -> None:
    la, *ra = outcome(a)
    lb, *rb = outcome(b)
    pd.testing.assert_frame_equal(la, lb, check_exact=True)
    assert ra == rb


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Uninterrupted runs, per log format."""
    made = {}

    def get(fmt: str) -> Path:
        if fmt not in made:
            out = tmp_path_factory.mktemp(f"ref-{fmt}")
            run(tiny_space(cache={"format": fmt, "flush_seconds": 0}), out)
            made[fmt] = out
        return made[fmt]

    return get


def test_serial_run_writes_a_front_within_budget(reference):
    out = reference("parquet")
    assert {"space.json", "search.json", "state.json", "front.csv", "front.json", "evaluations.parquet"} <= \
        {p.name for p in out.iterdir()}
    space = SearchConfig.model_validate(json.loads((out / "space.json").read_text()))
    assert space == tiny_space(cache={"format": "parquet", "flush_seconds": 0})
    front = json.loads((out / "front.json").read_text())
    members = front["members"]
    assert front["kind"] == "ddsm.search_front" and front["budget"] == 0.45 and len(members) >= 3
    ev = SyntheticEvaluator()
    for m in members:
        assert len(m["widths"]) == 12 and m["share"] <= 0.45 + 1e-12
        assert m["proxy"] == ev.quality(m["widths"])
        assert m["cost"] == pytest.approx(sum(COSTS[w] for w in m["widths"]))
    shares, qualities = [m["share"] for m in members], [m["proxy"] for m in members]
    assert shares == sorted(shares) and qualities == sorted(qualities, reverse=True)  # a true trade-off curve
    log = log_of(out)
    assert log["genome"].is_unique and set(log["generation"]) == {-1, 0, 1, 2, 3, 4}
    assert (log["generation"] == -1).sum() == 1 + 6 * 3  # the sensitivity probes
    state = json.loads((out / "state.json").read_text())
    assert state["generation"] == 4 and len(state["history"]) == 5
    hv = [h["hypervolume"] for h in state["history"]]
    assert hv == sorted(hv) and hv[-1] > 0  # the log only grows, so the front's hypervolume cannot shrink


@dataclass(frozen=True)
class Interrupting:
    """Evaluator factory whose evaluator raises KeyboardInterrupt once it has seen ``after`` candidates."""

    after: int

    def __call__(self, *, device: str):
        return _Interrupting(self.after)


class _Interrupting(SyntheticEvaluator):
    def __init__(self, after: int) -> None:
        super().__init__()
        self.after, self.seen = after, 0

    def evaluate(self, schedules):
        self.seen += len(schedules)
        if self.seen > self.after:
            raise KeyboardInterrupt
        return super().evaluate(schedules)


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_stopped_mid_generation_and_resumed_equals_uninterrupted(tmp_path, reference, fmt):
    space = tiny_space(cache={"format": fmt, "flush_seconds": 0})
    with pytest.raises(KeyboardInterrupt):
        run(space, tmp_path, factory=Interrupting(after=19 + 8 + 8 + 3))  # probes, gen 0, gen 1, part of gen 2
    state = json.loads((tmp_path / "state.json").read_text())
    log = log_of(tmp_path)
    assert state["generation"] < 4 and (log["generation"] == state["generation"] + 1).any()  # cut mid-generation
    result = run(space, tmp_path, resume=True)
    assert result.cached > 0  # the cut generation's logged candidates came from the log
    assert_same(tmp_path, reference(fmt))


class Recording:
    """Serial-only factory that records every schedule any evaluator it built was asked for."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, ...]] = []

    def __call__(self, *, device: str):
        outer = self

        class _Rec(SyntheticEvaluator):
            def evaluate(self, schedules):
                outer.seen.extend(tuple(s) for s in schedules)
                return super().evaluate(schedules)

        return _Rec()


def test_the_log_is_a_cache_nothing_is_evaluated_twice(tmp_path):
    rec = Recording()
    space = tiny_space(generations=3)
    first = run(space, tmp_path, factory=rec)
    assert len(rec.seen) == len(set(rec.seen)) == first.evaluated == len(log_of(tmp_path))
    logged = set(log_of(tmp_path)["widths"])
    # Resume a finished search with more generations: only new genomes are computed.
    rec2 = Recording()
    more = run(space.model_copy(update={"generations": 5}), tmp_path, factory=rec2, resume=True)
    assert len(rec2.seen) == len(set(rec2.seen)) == more.evaluated
    assert not {",".join(repr(w) for w in s) for s in rec2.seen} & logged
    # A finished search resumed again computes nothing at all.
    rec3 = Recording()
    again = run(space.model_copy(update={"generations": 5}), tmp_path, factory=rec3, resume=True)
    assert rec3.seen == [] and again.evaluated == 0


def test_more_generations_on_resume_equals_a_longer_run(tmp_path, reference):
    run(tiny_space(generations=2, cache={"format": "parquet", "flush_seconds": 0}), tmp_path)
    run(tiny_space(cache={"format": "parquet", "flush_seconds": 0}), tmp_path, resume=True)
    assert_same(tmp_path, reference("parquet"))


_CHILD = """
import sys
from ddsm.search import SearchConfig, SyntheticEvaluatorFactory, run_search
space = SearchConfig.model_validate_json(sys.argv[1])
run_search(space, evaluator_factory=SyntheticEvaluatorFactory(delay=0.15), costs={costs!r},
           out_dir=sys.argv[2], progress=False, device="cpu", chunk_size=2, supernet="net-a")
"""


def test_sigkill_mid_generation_then_resume_equals_uninterrupted(tmp_path, reference):
    space = tiny_space(cache={"format": "parquet", "flush_seconds": 0})
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-c", _CHILD.format(costs=COSTS), space.model_dump_json(), str(tmp_path)],
                             env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            assert child.poll() is None, child.stderr.read().decode()[-2000:]
            state = tmp_path / "state.json"
            if state.exists() and json.loads(state.read_text())["generation"] >= 1:
                g = json.loads(state.read_text())["generation"]
                if (log_of(tmp_path)["generation"] > g).any():  # some of the next generation is logged
                    break
            time.sleep(0.02)
        else:
            pytest.fail("the child search did not reach generation 2 in time")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stderr.close()
    g = json.loads((tmp_path / "state.json").read_text())["generation"]
    assert g < 4, "killed too late to test a resume"
    run(space, tmp_path, resume=True)
    assert_same(tmp_path, reference("parquet"))


def _snapshot(folder: Path) -> dict:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


def test_resume_with_another_space_or_supernet_is_refused_untouched(reference, tmp_path):
    out = reference("csv")
    before = _snapshot(out)
    other = tiny_space(budget=0.4, cache={"format": "csv", "flush_seconds": 0})
    with pytest.raises(DDSMError) as e:
        run(other, out, resume=True)
    msg = str(e.value)
    assert tiny_space().fingerprint() in msg and other.fingerprint() in msg and "\n" not in msg
    with pytest.raises(DDSMError, match="supernet net-a \\(folder\\) vs net-b \\(now\\)"):
        run(tiny_space(cache={"format": "csv", "flush_seconds": 0}), out, resume=True, supernet="net-b")
    with pytest.raises(DDSMError, match="cost model"):
        run_search(tiny_space(), evaluator_factory=SyntheticEvaluatorFactory(), out_dir=out, resume=True,
                   costs={**COSTS, 0.5: 0.3}, supernet="net-a", progress=False)
    with pytest.raises(DDSMError, match="already holds a search; pass --resume"):
        run(tiny_space(), out)
    assert _snapshot(out) == before
    with pytest.raises(DDSMError, match="holds no search"):
        run(tiny_space(), tmp_path / "empty", resume=True)


class Forbidden:
    def __call__(self, *, device: str):
        raise AssertionError("nothing may be evaluated")


def test_budget_below_the_cheapest_schedule_fails_before_any_work(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(DDSMError) as e:
        run(tiny_space(budget=0.05), out, factory=Forbidden())
    assert "budget 0.05 is below the cheapest schedule" in str(e.value) and "0.0625" in str(e.value)
    assert not out.exists()


def test_invalid_candidates_are_logged_but_never_on_the_front(tmp_path):
    result = run(tiny_space(generations=3), tmp_path, factory=SyntheticEvaluatorFactory(invalid_below=0.45))
    log = pd.read_parquet(tmp_path / "evaluations.parquet")
    bad = log[~log["valid"]]
    assert len(bad) > 0 and (bad["constraint"] > 0.5).all() and (bad["error"] != "").all()
    assert not set(result.front["genome"]) & set(bad["genome"])


def test_search_core_never_imports_ray():
    code = ("import sys, ddsm.search, ddsm.search.loop, ddsm.search.ray_runner, ddsm.search.seeding; "
            "assert 'ray' not in sys.modules, 'ray imported'")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_a_log_rewritten_while_it_is_read_reads_whole(tmp_path):
    """A live folder is read while the search rewrites its log (the SIGKILL test above polls one): every read
    sees one whole version. pyarrow opens a path twice, so a bare pd.read_parquet failed on ~4 % of such reads."""
    import threading

    import numpy as np

    from ddsm.io import write_atomic

    path, done = tmp_path / "evaluations.parquet", threading.Event()
    version = lambda n: pd.DataFrame({"generation": np.full(n, n), "genome": [f"g{i}" * 4 for i in range(n)]})
    write_atomic(path, lambda p: version(1).to_parquet(p, index=False))

    def rewrite():
        n = 1
        while not done.is_set():
            n = n % 60 + 1
            write_atomic(path, lambda p: version(n).to_parquet(p, index=False))

    writer = threading.Thread(target=rewrite)
    writer.start()
    try:
        deadline, reads = time.monotonic() + 2.0, 0
        while time.monotonic() < deadline:
            df = read_parquet(path)
            n = len(df)
            pd.testing.assert_frame_equal(df, version(n))
            reads += 1
    finally:
        done.set()
        writer.join()
    assert reads > 50
