"""``python -m ddsm.cli``: the ``ddsm`` command."""

from ddsm.cli import main

main()
