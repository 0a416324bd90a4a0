"""Where a command writes, checked before any work: the path can be written, and nothing unrelated is replaced.

Every ``--out`` goes through this module before a command loads a model or
computes anything: :func:`check_writable` probes the nearest existing folder
(a path inside procfs or sysfs, on a read-only mount, below a regular file or
without permission fails here, in one line, instead of after minutes of work),
and :func:`check_out_file` lets a command replace only a file of its own kind
(a cost table may replace a cost table, never ``notes.txt``). Run folders
(one per training run, search, report...) are checked by
:mod:`ddsm.runfolder`, which uses :func:`check_writable` too.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from ddsm.errors import DDSMError

#: kinds of the single-file artifacts the CLI writes (a feature net's is ddsm.metrics.featurenet.FEATURENET)
COST_TABLE = "ddsm.cost_table"
SPECTRUM = "ddsm.spectrum"
EVALUATION_CSV = "ddsm.evaluation_table"
VERDICT_CSV = "ddsm.verdict_table"
#: what each kind is called in a refusal
KIND_NAMES = {COST_TABLE: "ddsm cost table", SPECTRUM: "ddsm spectrum fit", "ddsm.featurenet": "ddsm feature net",
              EVALUATION_CSV: "ddsm evaluation table", VERDICT_CSV: "ddsm verdict table"}
# a file larger than this is not a JSON artifact ddsm wrote; it is not read to find out
_SNIFF_BYTES = 64 << 20


def _nearest_existing(path: Path) -> Path:
    p = path
    while not os.path.lexists(p) and p != p.parent:
        p = p.parent
    return p


def check_writable(path: str | os.PathLike, *, flag: str = "--out") -> None:
    """Refuse a file or folder path that cannot be created or written, or lies inside ddsm's own package, before
    any work.

    The nearest existing ancestor must be a folder in which a file can be
    created: a probe file is made there and removed at once, so the check
    answers what the write would (permissions, read-only mounts, procfs and
    sysfs, full quotas aside) and leaves nothing behind.
    """
    p = Path(os.path.abspath(path))
    package = Path(os.path.realpath(Path(__file__).parent))
    if Path(os.path.realpath(p)).is_relative_to(package):
        raise DDSMError(f"{flag} {str(path)!r} lies inside ddsm's installed package ({str(package)!r}: its code and "
                        "shipped weights); write outside it, e.g. runs/NAME")
    anc = _nearest_existing(p)
    if anc != p and not anc.is_dir():
        raise DDSMError(f"{flag} {str(path)!r} cannot be created: {str(anc)!r} is a file, not a folder")
    folder = anc if anc.is_dir() else anc.parent
    try:
        fd, probe = tempfile.mkstemp(prefix=".ddsm-probe-", dir=folder)
    except OSError as e:
        raise DDSMError(f"{flag} {str(path)!r} cannot be written: {e.strerror or e} in {str(folder)!r}") from None
    os.close(fd)
    os.unlink(probe)


def artifact_kind(path: str | os.PathLike) -> str | None:
    """The kind of ddsm artifact ``path`` holds (one of the constants above), or None for any other file."""
    p = Path(path)
    try:
        if not p.is_file():
            return None
        suffix = p.suffix.lower()
        if suffix == ".json" and p.stat().st_size <= _SNIFF_BYTES:
            data = json.loads(p.read_text())
            kind = data.get("kind") if isinstance(data, dict) else None
            return kind if isinstance(kind, str) and kind.startswith("ddsm.") else None
        if suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(p), framework="pt") as f:
                header = json.loads((f.metadata() or {}).get("ddsm", "{}"))
            kind = header.get("kind") if isinstance(header, dict) else None
            return kind if isinstance(kind, str) and kind.startswith("ddsm.") else None
        if suffix == ".csv":
            with p.open(errors="replace") as fh:
                head = fh.readline(4096).strip()
            if head.startswith("schedule,"):
                return VERDICT_CSV if ",metric,value,low,high," in head else EVALUATION_CSV
    except Exception:  # unreadable, malformed or foreign (safetensors raises its own types): not ours
        return None
    return None


def check_out_file(path: str | os.PathLike, *, kind: str, flag: str = "--out") -> Path:
    """Refuse an output file path that cannot be written or that holds anything but a ``kind`` artifact.

    A missing file, or one ddsm wrote as the same kind of artifact (a rerun),
    may be (re)written; a folder, an unrelated file or another kind of
    artifact is refused with one line, before any work, and left untouched.
    """
    p = Path(path)
    if p.is_dir():
        raise DDSMError(f"{flag} {str(path)!r} is a folder; give a file name")
    if p.exists():
        found = artifact_kind(p)
        if found != kind:
            what = "an unrelated file" if found is None else f"a {KIND_NAMES.get(found, found)}"
            raise DDSMError(f"{flag} {str(path)!r} exists and is {what}, not a {KIND_NAMES.get(kind, kind)}; "
                            "it is not overwritten: choose another name or remove it")
    check_writable(p, flag=flag)
    return p
