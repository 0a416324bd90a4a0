"""Shared by the experiment scripts: run ``main`` the way the ``ddsm`` command does."""

from __future__ import annotations

import sys
from typing import Callable

from ddsm import DDSMError


def run(main: Callable[[], int]) -> None:
    """Exit with ``main()``'s status; bad input (DDSMError) is one line on stderr and status 2."""
    try:
        sys.exit(main())
    except DDSMError as e:
        print(f"Error: {e}", file=sys.stderr)
        sys.exit(2)


def parse_parts(spec: str, valid: tuple[str, ...]) -> list[str]:
    """The comma-separated ``--parts`` of a benchmark, each one of ``valid``; a one-line DDSMError otherwise."""
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    bad = [p for p in parts if p not in valid]
    if bad:
        raise DDSMError(f"unknown parts {bad}; valid: {', '.join(valid)}")
    return parts


def write_parts(path, doc: dict, parts: list[str], valid: tuple[str, ...]) -> None:
    """Write a benchmark's results, keeping the sections of parts not rerun from the file already there.

    Parts are run separately (each takes long on 2 cores), so ``part_commands`` records the command that
    produced each part (a file from before it existed names its one ``command`` for every part it holds).
    """
    import json
    from pathlib import Path

    from ddsm.io import write_json

    path = Path(path)
    old = json.loads(path.read_text()) if path.is_file() else {}
    commands = old.get("part_commands") or {p: old.get("command") for p in valid if p in old}
    doc = {**{k: v for k, v in old.items() if k in valid}, **doc}
    doc["part_commands"] = {**commands, **{p: doc["command"] for p in parts}}
    write_json(path, doc)
