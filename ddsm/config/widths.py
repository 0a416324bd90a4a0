"""Width multipliers: the default set, the one matching rule, and the check every width set passes."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, StrictFloat

from ddsm.limits import short

#: the widths a supernet serves unless told otherwise (written once; every default reads it)
DEFAULT_WIDTHS = (0.25, 0.5, 0.75, 1.0)
#: two widths closer than this are the same width (YAML, JSON and user floats need not be bit-exact)
WIDTH_TOL = 1e-9

#: width multipliers: numbers (an int such as 1 is fine), never strings or booleans
Widths = tuple[StrictFloat, ...]


def width_index(width: float, valid) -> int | None:
    """Position of ``width`` in ``valid`` under :data:`WIDTH_TOL`, or None: the one way widths are matched."""
    for i, v in enumerate(valid):
        if abs(float(width) - float(v)) < WIDTH_TOL:
            return i
    return None


def check_width_set(v: tuple[float, ...]) -> tuple[float, ...]:
    """Sorted width multipliers in (0, 1] that include the full width 1.0; a width given twice is an error."""
    if not v:
        raise ValueError("at least one width is required")
    bad = [w for w in v if not 0.0 < w <= 1.0]
    if bad:
        raise ValueError(f"widths must lie in (0, 1], got {short(bad)}")
    dup = sorted({float(w) for i, w in enumerate(v) if width_index(w, v[:i]) is not None})
    if dup:
        raise ValueError(f"width{'s' if len(dup) > 1 else ''} {', '.join(f'{w:g}' for w in dup)} given twice; "
                         "list every width once")
    if width_index(1.0, v) is None:
        raise ValueError(f"widths must include 1.0 (the full-width net), got {short(list(v))}")
    return tuple(sorted(float(w) for w in v))


#: a validated width set: sorted, each width once, in (0, 1], 1.0 included (:func:`check_width_set`)
WidthSet = Annotated[Widths, AfterValidator(check_width_set)]
