"""Report folders (export, plots): which search they belong to, and replacing only their own files.

A report folder carries a manifest (``export.json`` / ``plots.json``) naming
the search it reports on (:meth:`~ddsm.search.folder.SearchRun.identity`) and
the files it wrote. :func:`check_out_dir` refuses, before anything is
written, a folder that cannot be written, that is not empty and holds no
report, or that holds a report of another search. :func:`writing_report`
holds the folder's lock while a report is written and writes the manifest
twice: first with ``complete: false`` (before any file, so a killed report
leaves a folder its rerun recognises and replaces), last with the files it
wrote, after which it removes the files an earlier report of the same kind
wrote and this one no longer does, and nothing else.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ddsm.errors import DDSMError
from ddsm.io import read_json, write_json
from ddsm.runfolder import check_run_folder, hold_folder, identity_diff

EXPORT_KIND = "ddsm.export"
PLOTS_KIND = "ddsm.plots"
JOINT_EXPORT_KIND = "ddsm.joint_export"  # ddsm export-steps: a joint (steps x widths) front
#: the manifest each kind of report folder carries (its identity and the files it wrote)
MANIFESTS = {EXPORT_KIND: "export.json", PLOTS_KIND: "plots.json", JOINT_EXPORT_KIND: "joint-export.json"}
REPORT_VERSION = 1


def check_out_dir(out: str | Path, *, kind: str, identity: dict[str, Any]) -> list[str]:
    """Refuse an output folder that holds anything but reports of this same search; the files it listed before.

    An empty or missing folder is fine. A non-empty one must carry a report
    manifest (``export.json`` or ``plots.json``) and every manifest in it must
    name the same search; then the files the previous report of ``kind``
    wrote are returned, so the caller can drop those it no longer writes.
    """
    out = check_run_folder(out, kind="report")  # a file, unwritable, foreign or of another kind: refused here
    found = {k: out / name for k, name in MANIFESTS.items() if (out / name).is_file()}
    previous: list[str] = []
    for k, path in found.items():
        try:
            data = read_json(path, "report manifest")
        except DDSMError:
            data = None
        if not isinstance(data, dict) or data.get("kind") != k:
            raise DDSMError(f"--out {str(out)!r} holds a {path.name} that is not a ddsm report manifest; "
                            "choose a new or empty folder")
        diff = identity_diff(data, identity)
        if diff:
            raise DDSMError(f"--out {str(out)!r} holds a report of another search ({data.get('search')}; differs in "
                            f"{', '.join(diff)}); choose a new or empty folder, it is not overwritten")
        if k == kind:
            # only plain names inside the folder: a hand-edited manifest must not make us delete elsewhere
            previous = [f for f in data.get("files", []) if isinstance(f, str) and f and "/" not in f
                        and "\\" not in f and f not in (".", "..")]
    return previous


def report_done(out: str | Path, kind: str) -> bool:
    """Whether ``out`` holds a finished report of ``kind`` (a killed one's manifest says ``complete: false``)."""
    path = Path(out) / MANIFESTS[kind]
    try:
        data = read_json(path, "report manifest")
    except DDSMError:
        return False
    return isinstance(data, dict) and data.get("kind") == kind and data.get("complete", True) is not False


@dataclass
class ReportWrite:
    """What a report block wrote (``files``, names inside the folder) and what its manifest adds (``extra``)."""

    files: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def writing_report(out: str | Path, *, kind: str, identity: dict[str, Any]) -> Iterator[ReportWrite]:
    """Hold ``out`` while a report of ``kind`` is written into it; the block records what it wrote."""
    out = Path(out)
    with hold_folder(out, what="report"):
        previous = check_out_dir(out, kind=kind, identity=identity)  # again under the lock
        # a killed report must still be recognised, and what it replaces still removable: list the old files
        write_json(out / MANIFESTS[kind], {"kind": kind, "schema_version": REPORT_VERSION, **identity,
                                           "complete": False, "files": previous})
        report = ReportWrite()
        yield report
        write_json(out / MANIFESTS[kind], {"kind": kind, "schema_version": REPORT_VERSION, **identity,
                                           **report.extra, "complete": True, "files": report.files})
        for name in set(previous) - set(report.files) - set(MANIFESTS.values()):
            (out / name).unlink(missing_ok=True)
