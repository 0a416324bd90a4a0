"""Do two output folders of ddsm hold the same results? Every deterministic file compared exactly.

For restructurings that must not change behaviour: run the same commands
with two versions of ddsm into two folders, then

    python experiments/compare_runs.py OLD NEW [--alias OLD_SRC NEW_SRC] [--out FILE]

Every file under OLD is matched with NEW:

- JSON (and JSON lines): parsed and compared exactly after dropping what measures time or
  names a process (keys listed in ``VOLATILE``) and replacing each folder's
  absolute path (and its parent's, and each ``--alias`` pair: say where
  each version's package lives) by a placeholder;
- CSV / Parquet: read with pandas and compared exactly (float bits
  included), the ``VOLATILE`` columns dropped, paths replaced as for JSON;
- safetensors: every tensor and the header's metadata compared exactly;
- PNG / SVG figures, logs and Ray Tune's own files: listed as not compared
  (renderers and timestamps vary); the data they show is in the files above.

Prints one line per file and a summary; exits 1 if anything differs.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import pandas as pd

#: keys and columns that record wall-clock time or the process that did the work
VOLATILE = {"seconds", "full_seconds", "speedup", "wallclock_saving", "evals_per_s", "worker", "timing",
            "latency_s", "latency_iqr_s", "speedup_vs_predicted", "screen_seconds", "device_name", "threads", "train_seconds", "torch_version"}
#: path parts whose files are not compared
SKIP_PARTS = {"tune", "__pycache__"}
SKIP_SUFFIXES = {".png", ".svg", ".log", ".pkl"}


def _clean(obj: Any, roots: dict[str, str]) -> Any:
    if isinstance(obj, dict):
        return {k: _clean(v, roots) for k, v in obj.items() if k not in VOLATILE}
    if isinstance(obj, list):
        return [_clean(v, roots) for v in obj]
    if isinstance(obj, str):
        for path, token in roots.items():
            obj = obj.replace(path, token)
        return obj
    if isinstance(obj, float) and math.isnan(obj):
        return "nan"
    return obj


def _frame(path: Path, roots: dict[str, str]) -> pd.DataFrame:
    from ddsm.search.log import _EXACT_FLOATS

    df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, keep_default_na=False,
                                                                             **_EXACT_FLOATS)
    df = df.drop(columns=[c for c in df.columns if c in VOLATILE])
    for c in df.columns:
        if pd.api.types.is_object_dtype(df[c]) or pd.api.types.is_string_dtype(df[c]):
            df[c] = df[c].map(lambda v: _clean(v, roots))
    return df


def _tensors(path: Path) -> tuple[dict, dict]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})


def compare(a: Path, b: Path, roots: dict[str, str]) -> str:
    """'same', 'DIFFERENT: ...' or 'not compared (...)' for one pair of files."""
    if a.suffix in SKIP_SUFFIXES or SKIP_PARTS & set(a.parts):
        return "not compared (figure, log or Ray Tune state)"
    if not b.exists():
        return "DIFFERENT: missing in the new folder"
    if a.suffix == ".json":
        x, y = (_clean(json.loads(p.read_text()), roots) for p in (a, b))
        return "same" if x == y else "DIFFERENT: JSON content"
    if a.suffix in (".csv", ".parquet"):
        x, y = _frame(a, roots), _frame(b, roots)
        if list(x.columns) != list(y.columns):
            return f"DIFFERENT: columns {list(x.columns)} vs {list(y.columns)}"
        try:
            pd.testing.assert_frame_equal(x, y, check_exact=True)
        except AssertionError as e:
            return f"DIFFERENT: {str(e).splitlines()[0]}"
        return "same"
    if a.suffix == ".safetensors":
        (ta, ma), (tb, mb) = _tensors(a), _tensors(b)
        if ta.keys() != tb.keys() or any(not ta[k].equal(tb[k]) for k in ta):
            return "DIFFERENT: tensors"
        ma, mb = ({k: _clean(json.loads(v) if v[:1] in "{[" else v, roots) for k, v in m.items()} for m in (ma, mb))
        return "same" if ma == mb else "DIFFERENT: metadata"
    if a.suffix == ".jsonl":  # a metrics log: one JSON object per line
        x, y = ([_clean(json.loads(ln), roots) for ln in p.read_text().splitlines() if ln.strip()] for p in (a, b))
        return "same" if x == y else "DIFFERENT: JSON lines"
    return "same" if a.read_bytes() == b.read_bytes() else "DIFFERENT: bytes"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path)
    ap.add_argument("--alias", nargs=2, action="append", default=[], metavar=("OLD_PATH", "NEW_PATH"),
                    help="two paths that mean the same thing in the two runs (e.g. each version's source tree)")
    ap.add_argument("--out", type=Path, default=None, help="also write the per-file verdicts as JSON")
    args = ap.parse_args(argv)
    pairs = [(args.old.resolve(), args.new.resolve()), (args.old.resolve().parent, args.new.resolve().parent),
             *((Path(a).resolve(), Path(b).resolve()) for a, b in args.alias)]
    # longest paths first, so a folder is replaced before its parent
    roots = dict(sorted({str(p): f"<PATH{i}>" for i, pair in enumerate(pairs) for p in pair}.items(),
                        key=lambda kv: -len(kv[0])))
    rows = {}
    for a in sorted(p for p in args.old.rglob("*") if p.is_file()):
        rel = a.relative_to(args.old)
        rows[str(rel)] = compare(a, args.new / rel, roots)
    extra = sorted(str(p.relative_to(args.new)) for p in args.new.rglob("*")
                   if p.is_file() and not (args.old / p.relative_to(args.new)).exists()
                   and not SKIP_PARTS & set(p.parts))
    for name in extra:
        rows[name] = "DIFFERENT: only in the new folder"
    width = min(60, max(map(len, rows), default=4))
    for name, verdict in rows.items():
        print(f"{name if len(name) <= width else name[:width - 1] + '…':<{width}}  {verdict}")
    counts = {k: sum(v.startswith(k) for v in rows.values()) for k in ("same", "DIFFERENT", "not compared")}
    print(f"{counts['same']} same, {counts['DIFFERENT']} different, {counts['not compared']} not compared")
    if args.out is not None:
        from ddsm.io import write_json

        write_json(args.out, {"old": str(args.old), "new": str(args.new), "counts": counts, "files": rows})
    return 1 if counts["DIFFERENT"] else 0


if __name__ == "__main__":
    sys.exit(main())
