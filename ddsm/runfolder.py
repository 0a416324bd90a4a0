"""Run folders: what kind of run a folder holds, which run it belongs to, and who is writing it.

Every command that writes a folder (train, sample, search, sweep, export,
plot, quickstart) goes through this module:

- :func:`check_run_folder` (before any work): the folder can be written and
  is new, empty, or holds a run of this same kind (never a training run
  overwritten by samples, nor a folder of the user's own files);
- :func:`hold_folder` (around the writing): one lock per folder, so a second
  process on it is refused with one line naming the holder; stale temporary
  files of a killed run are removed under the lock; a folder this command
  created is removed again if it fails before writing anything;
- :func:`claim_folder` (resumable runs): the identity check below;
- :func:`start_under_lock` (what every run that starts or resumes in a
  folder does): check the start conditions, take the lock, check them again
  under it, then run.

A resumable run (a search, a sweep) writes a manifest naming what it is
(``kind``) and what decides its result (its *identity*: hashes of its
settings, the supernet's fingerprint, ...). Before anything in the folder
changes, :func:`claim_folder` refuses a fresh start over an existing run, a
resume of a folder that holds none, and a resume with another identity.
Report folders (export, plots) carry manifests of the same kind and compare
identities with :func:`identity_diff`.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import socket
import sys
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator, Mapping

from filelock import FileLock, Timeout

from ddsm.errors import DDSMError
from ddsm.io import read_json, write_json
from ddsm.outputs import artifact_kind, check_writable

#: the files that mark each kind of run folder (any one present, holding that artifact kind)
MARKERS: dict[str, tuple[tuple[str, str], ...]] = {
    "training run": (("checkpoint.safetensors", "ddsm.train_state"), ("config.json", "run config")),
    "search": (("search.json", "ddsm.search"),),
    "sweep": (("sweep.json", "ddsm.sweep"),),
    "samples": (("sample.json", "ddsm.samples"),),
    "report": (("export.json", "ddsm.export"), ("plots.json", "ddsm.plots"), ("joint-export.json", "ddsm.joint_export")),
    "quickstart": (("quickstart.json", "ddsm.quickstart"), ("cost.json", "old quickstart")),
    "spectrum plots": (("spectrum.json", "ddsm.spectrum_plots"),),
    "joint search": (("joint.json", "ddsm.joint_search"),),
}
LOCK_NAME = ".ddsm.lock"
HOLDER_NAME = ".ddsm.lock.json"  # pid, host, command and start of the process holding the lock
# what ddsm.io.atomic_path and ddsm.outputs.check_writable leave behind when killed mid-write
_STALE = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$|^\.ddsm-probe-[a-z0-9_]{8}$")


def is_own_file(name: str) -> bool:
    """Whether ``name`` is a lock file or a killed write's leftover, which no emptiness check counts."""
    return name in (LOCK_NAME, HOLDER_NAME) or bool(_STALE.match(name))


def _holds(path: Path, kind: str) -> bool:
    if kind == "run config":  # a training run's config.json carries no kind: its sections say what it is
        try:
            data = read_json(path, "run config")
        except DDSMError:
            return False
        return isinstance(data, dict) and {"model", "train"} <= set(data)
    if kind == "old quickstart":  # written before quickstart.json existed: a cost table beside a search folder
        return artifact_kind(path) == "ddsm.cost_table" and (path.parent / "search" / "search.json").is_file()
    return artifact_kind(path) == kind


def folder_kind(path: str | Path) -> str | None:
    """The kind of run ``path`` holds (a key of :data:`MARKERS`), or None; a marker's name alone is not enough."""
    p = Path(path)
    for kind, markers in MARKERS.items():
        if any((p / name).is_file() and _holds(p / name, artifact) for name, artifact in markers):
            return kind
    return None


def check_run_folder(out: str | Path, *, kind: str, flag: str = "--out") -> Path:
    """Refuse, before any work, a folder that cannot be written or holds anything but a ``kind`` run.

    A new or empty folder is fine (lock files and a killed run's temporary
    files do not count); a folder holding a run of ``kind`` is left to the
    command's own rules (resume, or replace its own files).
    """
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise DDSMError(f"{flag} {str(out)!r} is a file; give a folder")
    check_writable(p, flag=flag)
    if not p.is_dir():
        return p
    clash = _kind_clash(p, kind, flag)
    if clash:
        raise DDSMError(clash)
    return p


def _holder(out: Path) -> str:
    try:
        h = read_json(out / HOLDER_NAME, "lock holder")
        return (f"pid {h.get('pid')} on {h.get('host')} ({h.get('command')}, since {h.get('started')})"
                if isinstance(h, dict) else "another process")
    except DDSMError:
        return "another process"


def _kind_clash(out: Path, kind: str, flag: str) -> str | None:
    """Why ``out`` cannot take a ``kind`` run (it holds another kind, or files of the user's), or None."""
    found = folder_kind(out)
    if found is None and any(not is_own_file(c.name) for c in out.iterdir()):
        return f"{flag} {str(out)!r} is not empty and holds no ddsm {kind}; choose a new or empty folder " \
               "(nothing there was touched)"
    if found is not None and found != kind:
        return f"{flag} {str(out)!r} holds a ddsm {found}, not a {kind}; choose another folder (nothing there was touched)"
    return None


@contextlib.contextmanager
def hold_folder(out: str | Path, *, what: str, kind: str | None = None) -> Iterator[Path]:
    """Create ``out`` if needed and hold its lock for the block; a second process is refused naming the holder.

    Not re-entrant: a second hold of the same folder, in this process or
    another, is refused. Under the lock the folder's kind is checked again
    (with ``kind``: another process may have written a run of another kind
    since :func:`check_run_folder`), and stale temporary files a killed run
    left are removed. If the block raises, the folders this call created are
    removed again while they hold nothing but the lock files, so a refused
    command leaves nothing behind.
    """
    out = Path(out)
    created = [p for p in (out, *out.parents) if not p.exists()]
    out.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(out / LOCK_NAME), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise DDSMError(f"{str(out)!r} is in use by {_holder(out)}: one process per {what} folder; wait for it to "
                        "finish or stop it") from None
    try:
        clash = _kind_clash(out, kind, "--out") if kind is not None else None
        if clash:
            raise DDSMError(clash)
        write_json(out / HOLDER_NAME, {"pid": os.getpid(), "host": socket.gethostname(),
                                       "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:200],
                                       "started": datetime.datetime.now().isoformat(timespec="seconds")})
        for c in out.iterdir():
            if _STALE.match(c.name):
                c.unlink(missing_ok=True)
        yield out
    except BaseException:
        if created:
            # only our own files, one by one: rmdir then fails safely if anything else appeared meanwhile
            for c in out.iterdir():
                if is_own_file(c.name) and c.is_file():
                    c.unlink(missing_ok=True)
            for p in created:
                try:
                    p.rmdir()
                except OSError:
                    break
        raise
    finally:
        (out / HOLDER_NAME).unlink(missing_ok=True)
        lock.release()


def start_under_lock(out: str | Path, check: Callable[[], None], *, what: str,
                     kind: str | None = None) -> ContextManager[Path]:
    """Check a run's start conditions now; entering the returned context holds ``out``'s lock and checks again.

    ``check()`` refuses (a one-line DDSMError) a start the folder does not
    allow: a fresh start over a run, a resume of nothing, a resume of
    another run. The first check runs at this call, before any lock file
    exists, so a refusal touches nothing; what runs between this call and
    the ``with`` (more checks, loading data) runs unlocked; the second
    check, under the lock (:func:`hold_folder` with ``what`` and ``kind``),
    catches another process that started a run there meanwhile::

        with start_under_lock(out, lambda: claim(resume), what="search", kind="search"):
            ...  # write the run
    """
    check()
    return _checked_hold(Path(out), check, what=what, kind=kind)


@contextlib.contextmanager
def _checked_hold(out: Path, check: Callable[[], None], *, what: str, kind: str | None) -> Iterator[Path]:
    with hold_folder(out, what=what, kind=kind) as held:
        check()  # again under the lock: another process may have started a run here meanwhile
        yield held


def identity_diff(saved: Mapping[str, Any], identity: Mapping[str, Any], *,
                  optional: tuple[str, ...] = ("weights",)) -> list[str]:
    """The keys of ``identity`` whose value ``saved`` does not share.

    An ``optional`` key the saved manifest lacks is not a difference: the folder
    was written before that key was recorded, and there is nothing to compare.
    """
    return [k for k, v in identity.items() if saved.get(k) != v and not (k in optional and k not in saved)]


def read_manifest(path: str | Path, *, kind: str, what: str) -> dict[str, Any]:
    """A manifest's JSON object, or a one-line DDSMError if it is unreadable or of another kind."""
    data = read_json(path, f"{what} manifest")
    if not isinstance(data, dict) or data.get("kind") != kind:
        raise DDSMError(f"{str(path)!r} is not a ddsm {what} manifest")
    return data


def write_manifest(path: str | Path, *, kind: str, version: int, identity: Mapping[str, Any], **fields: Any) -> None:
    """Write a resumable run's manifest: its ``kind``, ``schema_version``, identity, then ``fields`` (atomically)."""
    write_json(path, {"kind": kind, "schema_version": version, **identity, **fields})


def claim_folder(out: str | Path, *, manifest: str, kind: str, what: str, identity: Mapping[str, Any],
                 resume: bool, describe: Callable[[dict[str, Any], list[str]], str],
                 require_empty: bool = False) -> None:
    """Refuse a folder that holds another ``what`` (or any, without ``resume``) before writing to it.

    ``describe(saved, differing_keys)`` words the mismatch of a resume with
    another identity; with ``require_empty``, a new run also refuses a
    non-empty folder that holds no manifest.
    """
    out = Path(out)
    path = out / manifest
    if not path.exists():
        if resume:
            raise DDSMError(f"cannot resume: {str(out)!r} holds no {what} (no {manifest}); start without --resume")
        if require_empty and out.exists() and any(not is_own_file(c.name) for c in out.iterdir()):
            raise DDSMError(f"{str(out)!r} is not empty and holds no {what}; choose an empty or new folder")
        return
    if not resume:
        raise DDSMError(f"{str(out)!r} already holds a {what}; pass --resume to continue it or choose another folder")
    saved = read_manifest(path, kind=kind, what=what)
    diff = identity_diff(saved, identity)
    if diff:
        raise DDSMError(f"cannot resume {str(out)!r}: {describe(saved, diff)}")
