"""Atomic file writes and stable hashing shared by every artifact ddsm writes."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

from ddsm.errors import DDSMError
from ddsm.limits import MAX_JSON_BYTES, check_nesting


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only on success.

    A crash or an exception leaves the destination untouched (old content or
    absent) and removes the temporary file, so no half-written artifact exists.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        # mkstemp creates files private to the user; artifacts are ordinary files.
        os.chmod(tmp_path, 0o644)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_atomic(path: str | os.PathLike, writer: Callable[[Path], Any]) -> None:
    """Call ``writer(tmp_path)`` and atomically move the result to ``path``."""
    with atomic_path(path) as tmp:
        writer(tmp)


def read_parquet(path: str | os.PathLike):
    """Read a Parquet file as a DataFrame from one open of the file.

    pyarrow opens a path more than once (footer, then pages); if a writer's
    atomic rename lands in between, the old footer meets the new pages and the
    read fails ("Page was smaller than expected"). Reading the bytes once pins
    one version, so a live search or sweep folder can be read while it runs.
    """
    import io

    import pandas as pd

    return pd.read_parquet(io.BytesIO(Path(path).read_bytes()))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    text = json.dumps(obj, indent=2, sort_keys=False) + "\n"
    write_atomic(path, lambda p: p.write_text(text))


def read_json(path: str | os.PathLike, what: str, *, max_bytes: int | None = None) -> Any:
    """Parse a JSON file; a one-line DDSMError naming ``what`` and the path if it is unreadable, malformed,
    not a regular file or larger than ``max_bytes`` (default :data:`ddsm.limits.MAX_JSON_BYTES`)."""

    limit = MAX_JSON_BYTES if max_bytes is None else max_bytes
    try:
        p = Path(path)
        if p.exists() and not p.is_file():
            raise DDSMError(f"{what} {str(path)!r} is not a regular file")
        with p.open("rb") as fh:
            blob = fh.read(limit + 1)
        if len(blob) > limit:
            size = f"{limit >> 20} MiB" if limit >= 1 << 20 else f"{limit} bytes"
            raise DDSMError(f"{what} {str(path)!r} is larger than {size}; " + (
                "not a file ddsm wrote" if max_bytes is None else "a config file is far smaller"))
        doc = json.loads(blob.decode("utf-8"))
        check_nesting(doc, f"{what} {str(path)!r}")
        return doc
    except UnicodeDecodeError:
        raise DDSMError(f"{what} {str(path)!r} is not valid JSON: not UTF-8 text (a binary file?)") from None
    except RecursionError:
        raise DDSMError(f"{what} {str(path)!r} is not valid JSON: nested too deeply") from None
    except OSError as e:
        raise DDSMError(f"cannot read {what} {str(path)!r}: {e.strerror or e}") from None
    except json.JSONDecodeError as e:
        raise DDSMError(f"{what} {str(path)!r} is not valid JSON: {e}") from None


def stable_hash(obj: Any, length: int = 16) -> str:
    """Hex digest of the canonical JSON of ``obj`` (key order does not matter)."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def weights_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a weights file, hashed once per process per version of the file: a model's weights identity.

    Fingerprints cover a model's architecture; this covers its weights, so a
    run that started on one file refuses to go on with another put in its
    place. A multi-GB model is not read twice: the key is the file's identity,
    size and modification time, so a rewritten file is hashed again.
    """
    st = Path(path).stat()
    return _sha256(str(Path(path).resolve()), st.st_ino, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _sha256(path: str, inode: int, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
