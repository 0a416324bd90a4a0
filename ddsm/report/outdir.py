"""Report folders (export, plots): which search they belong to, and replacing only their own files.

A report folder carries a manifest (``export.json`` / ``plots.json``) naming
the search it reports on (:meth:`~ddsm.search.folder.SearchRun.identity`) and
the files it wrote. :func:`check_out_dir` refuses, before anything is
written, a folder that is not empty and holds no report, or that holds a
report of another search; :func:`finish_out_dir` writes the manifest last and
removes the files an earlier report of the same kind wrote and this one no
longer does, and nothing else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ddsm.errors import DDSMError
from ddsm.io import read_json, write_json
from ddsm.runfolder import identity_diff

EXPORT_KIND = "ddsm.export"
PLOTS_KIND = "ddsm.plots"
#: the manifest each kind of report folder carries (its identity and the files it wrote)
MANIFESTS = {EXPORT_KIND: "export.json", PLOTS_KIND: "plots.json"}
REPORT_VERSION = 1


def check_out_dir(out: str | Path, *, kind: str, identity: dict[str, Any]) -> list[str]:
    """Refuse an output folder that holds anything but reports of this same search; the files it listed before.

    An empty or missing folder is fine. A non-empty one must carry a report
    manifest (``export.json`` or ``plots.json``) and every manifest in it must
    name the same search; then the files the previous report of ``kind``
    wrote are returned, so the caller can drop those it no longer writes.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DDSMError(f"--out {str(out)!r} is a file; give a folder")
    if not out.exists() or not any(out.iterdir()):
        return []
    found = {k: out / name for k, name in MANIFESTS.items() if (out / name).is_file()}
    if not found:
        raise DDSMError(f"--out {str(out)!r} is not empty and holds no ddsm report; choose a new or empty folder "
                        "(nothing there was touched)")
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


def finish_out_dir(out: Path, *, kind: str, identity: dict[str, Any], files: list[str], previous: list[str],
                    extra: dict[str, Any]) -> None:
    """Write the manifest last (a crash before it leaves an earlier manifest or none), then drop stale files."""
    write_json(out / MANIFESTS[kind], {"kind": kind, "schema_version": REPORT_VERSION, **identity, **extra,
                                       "files": files})
    for name in set(previous) - set(files) - set(MANIFESTS.values()):
        (out / name).unlink(missing_ok=True)

