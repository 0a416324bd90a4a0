"""The one exception type users see for bad input.

Every message is a single line that names the offending value and what would
have been valid; the CLI prints it and exits with status 2, no traceback.
"""

from __future__ import annotations


class DDSMError(ValueError):
    """Bad input to ddsm: a value, file or combination that cannot work."""

    #: longest message kept; the middle of a longer one (a huge quoted value) is cut out
    MAX_CHARS = 600

    def __init__(self, message: str) -> None:
        # Multi-line messages break the "one clear line" promise of the CLI.
        text = " ".join(str(message).split())
        if len(text) > self.MAX_CHARS:
            half = self.MAX_CHARS // 2 - 3
            text = f"{text[:half]} ... {text[-half:]}"
        super().__init__(text)
