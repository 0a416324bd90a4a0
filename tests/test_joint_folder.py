"""The folder pieces the joint search shares with the single search: the start check under the lock, manifests,
front files, and a student's proxy factory built by the single search's setup."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from ddsm.errors import DDSMError
from ddsm.runfolder import LOCK_NAME, read_manifest, start_under_lock, write_manifest
from ddsm.search.folder import read_front, write_front_files


def test_start_under_lock_checks_before_and_again_under_the_lock(tmp_path):
    out = tmp_path / "run"
    seen = []

    def check():
        seen.append((out / LOCK_NAME).exists())

    start = start_under_lock(out, check, what="search", kind="search")
    assert seen == [False] and not out.exists()  # the first check runs at the call, before any lock file
    with start as held:
        assert held == out and seen == [False, True]  # the second under the lock
    assert len(seen) == 2


def test_a_refusal_before_the_lock_touches_nothing_and_one_under_it_removes_what_it_made(tmp_path):
    def refuse():
        raise DDSMError("no")

    with pytest.raises(DDSMError, match="no"):
        start_under_lock(tmp_path / "a", refuse, what="search")
    assert not (tmp_path / "a").exists()

    calls = []

    def second_refuses():  # another process started a run between the two checks
        calls.append(1)
        if len(calls) > 1:
            raise DDSMError("taken meanwhile")

    with pytest.raises(DDSMError, match="taken meanwhile"):
        with start_under_lock(tmp_path / "b", second_refuses, what="search"):
            raise AssertionError("the block must not run")  # pragma: no cover
    assert not (tmp_path / "b").exists()  # hold_folder removes the folder it created


def test_a_start_never_entered_takes_no_lock(tmp_path):
    start_under_lock(tmp_path / "c", lambda: None, what="search")
    assert not (tmp_path / "c").exists()


def test_manifest_and_front_files_round_trip(tmp_path):
    write_manifest(tmp_path / "m.json", kind="ddsm.x", version=1, identity={"space": "abc"}, extra=[1, 2])
    assert list(json.loads((tmp_path / "m.json").read_text())) == ["kind", "schema_version", "space", "extra"]
    assert read_manifest(tmp_path / "m.json", kind="ddsm.x", what="x")["space"] == "abc"
    with pytest.raises(DDSMError, match="is not a ddsm y manifest"):
        read_manifest(tmp_path / "m.json", kind="ddsm.y", what="y")

    write_front_files(tmp_path, pd.DataFrame({"a": [1, 2]}), {"kind": "ddsm.f", "members": [{"a": 1}]})
    assert (tmp_path / "front.csv").read_text() == "a\n1\n2\n"
    assert read_front(tmp_path, kind="ddsm.f", what="front")["members"] == [{"a": 1}]
    assert read_front(tmp_path, kind="ddsm.other", what="front") is None
    (tmp_path / "front.json").write_text("{")
    with pytest.raises(DDSMError, match="front"):
        read_front(tmp_path, kind="ddsm.f", what="front")


def test_a_teacher_reference_needs_the_proxy_without_a_screen(tmp_path):
    from ddsm.samplers.base import SamplerConfig
    from ddsm.search.config import SearchConfig
    from ddsm.search.setup import TeacherReference, evaluator_factory

    ref = TeacherReference(checkpoint="digits", sampler=SamplerConfig(kind="ddim", steps=4))
    proxy = SearchConfig.load("digits-proxy")
    f = evaluator_factory(proxy, "digits-sfddm-k2", reference=ref)
    assert f.reference == ref and f.quality == "proxy"
    fid = proxy.model_copy(update={"objectives": proxy.objectives.model_copy(update={"quality": "proxy_linear"})})
    with pytest.raises(DDSMError, match="needs the proxy as quality"):
        evaluator_factory(fid, "digits-sfddm-k2", reference=ref)
