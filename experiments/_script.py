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
