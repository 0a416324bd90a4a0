"""The ``ddsm`` command: the group here, the commands in :mod:`.model` (a supernet and its costs) and
:mod:`.search` (searches, sweeps, reports, the quickstart).

Bad input (DDSMError) prints one line, ``Error: ...``, and exits with status 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import click

from ddsm.errors import DDSMError


class _BadInput(click.ClickException):
    exit_code = 2


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except DDSMError as e:
            raise _BadInput(str(e)) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="ddsm")
def main() -> None:
    """ddsm: denoising diffusion step-aware models.

    Train one slimmable UNet supernet, then sample with a network width chosen
    per denoising step.
    """


_device = click.option("--device", default="auto", show_default=True,
                       help="Torch device: auto (CUDA when present, else CPU), cpu, cuda or cuda:N.")



# The command modules register themselves on ``main`` when imported.
from ddsm.cli import model, search  # noqa: E402,F401
