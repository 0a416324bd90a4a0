"""Which run a folder belongs to: the one identity check that every resumable folder uses.

A resumable run (a search, a sweep) writes a manifest naming what it is
(``kind``) and what decides its result (its *identity*: hashes of its
settings, the supernet's fingerprint, ...). Before anything in the folder
changes, :func:`claim_folder` refuses a fresh start over an existing run, a
resume of a folder that holds none, and a resume with another identity.
Report folders (export, plots) carry manifests of the same kind and compare
identities with :func:`identity_diff`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

from ddsm.errors import DDSMError
from ddsm.io import read_json


def identity_diff(saved: Mapping[str, Any], identity: Mapping[str, Any]) -> list[str]:
    """The keys of ``identity`` whose value ``saved`` does not share."""
    return [k for k, v in identity.items() if saved.get(k) != v]


def read_manifest(path: str | Path, *, kind: str, what: str) -> dict[str, Any]:
    """A manifest's JSON object, or a one-line DDSMError if it is unreadable or of another kind."""
    data = read_json(path, f"{what} manifest")
    if not isinstance(data, dict) or data.get("kind") != kind:
        raise DDSMError(f"{str(path)!r} is not a ddsm {what} manifest")
    return data


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
        if require_empty and out.exists() and any(out.iterdir()):
            raise DDSMError(f"{str(out)!r} is not empty and holds no {what}; choose an empty or new folder")
        return
    if not resume:
        raise DDSMError(f"{str(out)!r} already holds a {what}; pass --resume to continue it or choose another folder")
    saved = read_manifest(path, kind=kind, what=what)
    diff = identity_diff(saved, identity)
    if diff:
        raise DDSMError(f"cannot resume {str(out)!r}: {describe(saved, diff)}")
