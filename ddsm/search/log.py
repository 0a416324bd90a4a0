"""The evaluation log: every evaluated schedule, one row each, and the cache of the search.

One row per distinct genome, in the order evaluations finished in input
order (so a run and its resume write the same rows in the same order):
``generation`` (-1 for the seeding probes), ``genome`` and ``widths`` (comma
-separated, exact), the quality column, ``valid``, ``cost``, ``share`` (of the
full-width cost), ``constraint`` (``share - budget``, plus 1 when invalid),
``seconds``, ``worker``, then whatever else the evaluator returned.

A genome found in the log is never evaluated again: the log is the cache,
and what makes a resumed search replay the interrupted generation for free.
The file is Parquet (``evaluations.parquet``), or CSV when pyarrow is
missing or asked for; it is rewritten atomically (temp file + rename) on
every flush, so a crash leaves the previous complete version, never a torn
one. Rewriting costs milliseconds for the thousands of rows a search makes.
Floats round-trip exactly in both formats.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd

from ddsm.cost.model import SHARE_TOL
from ddsm.errors import DDSMError
from ddsm.io import read_parquet, write_atomic

LEADING = ["generation", "genome", "widths"]
#: pandas < 3 parses CSV floats with a fast, inexact parser unless asked; pandas 3 is exact and deprecates the flag
_EXACT_FLOATS = {"float_precision": "round_trip"} if int(pd.__version__.split(".")[0]) < 3 else {}
TRAILING = ["valid", "cost", "share", "constraint", "seconds", "worker"]


def genome_key(genome: Iterable[int]) -> str:
    """The log's text form of a genome: ``'3,3,2,0'``."""
    return ",".join(str(int(x)) for x in genome)


def parse_genome(key: str) -> tuple[int, ...]:
    """Inverse of :func:`genome_key`."""
    return tuple(int(x) for x in str(key).split(",")) if str(key) else ()


def widths_text(widths: Sequence[float]) -> str:
    """Exact text of a width list (``repr`` of each float)."""
    return ",".join(repr(float(w)) for w in widths)


#: how ``uncond_text`` writes a step without guidance
NO_GUIDANCE = "none"


def uncond_text(uncond: Sequence[float | None]) -> str:
    """Exact text of a per-step unconditional width list (``none`` where a step takes no guidance)."""
    return ",".join(NO_GUIDANCE if u is None else repr(float(u)) for u in uncond)


def parse_uncond(text: str) -> tuple[float | None, ...]:
    """Inverse of :func:`uncond_text`."""
    return tuple(None if x == NO_GUIDANCE else float(x) for x in str(text).split(","))


def _parquet_available() -> bool:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True


def _plain(v: Any) -> Any:
    return v.item() if hasattr(v, "item") and not isinstance(v, (str, bytes)) else v


class EvaluationLog:
    """Rows of evaluated genomes, looked up by genome, flushed to one file atomically."""

    def __init__(self, folder: str | Path, *, quality: str, format: str = "auto", flush_seconds: float = 10.0) -> None:
        self.folder = Path(folder)
        self.quality = quality
        self.flush_seconds = flush_seconds
        parquet, csv = self.folder / "evaluations.parquet", self.folder / "evaluations.csv"
        # An existing log keeps its format whatever the setting says (the setting only picks it for new logs).
        if parquet.exists():
            self.path = parquet
        elif csv.exists():
            self.path = csv
        elif format == "csv" or (format == "auto" and not _parquet_available()):
            self.path = csv
        elif format in ("parquet", "auto"):
            if not _parquet_available():
                raise DDSMError("cache.format 'parquet' needs pyarrow (pip install pyarrow); or use format: csv")
            self.path = parquet
        else:
            raise DDSMError(f"cache.format {format!r} is not one of auto, parquet, csv")
        self.rows: list[dict] = []
        self.index: dict[str, int] = {}
        self._dirty = False
        self._last_flush = time.monotonic()
        if self.path.exists():
            for row in self._read():
                self._insert(row)

    # -- reading ---------------------------------------------------------------------

    def _read(self) -> list[dict]:
        try:
            if self.path.suffix == ".parquet":
                df = read_parquet(self.path)
            else:
                df = pd.read_csv(self.path, keep_default_na=False, na_values=["nan"], **_EXACT_FLOATS,
                                 dtype={"genome": str, "widths": str, "worker": str})
        except Exception as e:  # a foreign or damaged file: say which, do not guess
            raise DDSMError(f"cannot read evaluation log {str(self.path)!r}: {type(e).__name__}: {e}") from None
        missing = [c for c in [*LEADING, self.quality, *TRAILING] if c not in df.columns]
        if missing:
            raise DDSMError(f"evaluation log {str(self.path)!r} lacks columns {missing}; was it written by another "
                            "ddsm version or for another quality objective?")
        return [{k: _plain(v) for k, v in rec.items()} for rec in df.to_dict(orient="records")]

    def _insert(self, row: dict) -> None:
        key = str(row["genome"])
        if key in self.index:  # never happens through add(); guards hand-edited logs
            return
        self.index[key] = len(self.rows)
        self.rows.append(row)

    # -- the cache -------------------------------------------------------------------

    def __contains__(self, key: str) -> bool:
        return key in self.index

    def __len__(self) -> int:
        return len(self.rows)

    def get(self, key: str) -> dict | None:
        """The row of genome ``key`` (see :func:`genome_key`), or None."""
        i = self.index.get(key)
        return None if i is None else self.rows[i]

    def add(self, rows: Sequence[dict]) -> None:
        """Append rows of newly evaluated genomes; flush if ``flush_seconds`` have passed."""
        for row in rows:
            if str(row["genome"]) in self.index:
                raise ValueError(f"genome {row['genome']} is already in the evaluation log")
            self._insert(row)
        self._dirty = self._dirty or bool(rows)
        if time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        """Write the whole log atomically (if anything changed)."""
        if not self._dirty:
            return
        df = self.frame()
        if self.path.suffix == ".parquet":
            write_atomic(self.path, lambda p: df.to_parquet(p, index=False))
        else:
            write_atomic(self.path, lambda p: df.to_csv(p, index=False, na_rep="nan"))
        self._dirty = False
        self._last_flush = time.monotonic()

    def frame(self) -> pd.DataFrame:
        """The log as a DataFrame, columns in a fixed order."""
        if not self.rows:
            return pd.DataFrame(columns=[*LEADING, self.quality, *TRAILING])
        df = pd.DataFrame(self.rows)
        fixed = [*LEADING, self.quality, *TRAILING]
        return df[fixed + [c for c in df.columns if c not in fixed]]

    def feasible(self, budget: float) -> list[dict]:
        """Rows that were scored and fit the budget."""
        return [r for r in self.rows if r["valid"] and math.isfinite(r[self.quality]) and r["constraint"] <= 0.0
                and r["share"] <= budget + SHARE_TOL]
