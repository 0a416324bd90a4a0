"""The ``ddsm`` command: the group here, the commands in :mod:`.model` (a supernet and its costs),
:mod:`.judge` (scoring and judging schedules), :mod:`.search` (searches, sweeps, reports, the quickstart) and
:mod:`.slim` (slimming a diffusers model).

Each command imports the library inside its own body: ``ddsm --help`` and a
refused flag answer without loading torch, fvcore or pandas. The decisions
themselves (run configs, how flags combine) live in the library
(:mod:`ddsm.run_configs`, :mod:`ddsm.sampler_choice`), callable from Python.

Bad input (DDSMError) prints one line, ``Error: ...``, and exits with status 2.
So does a file-system error on a named path (a disk that fills, a folder removed
mid-run): the outputs were checked before the work began (:mod:`ddsm.outputs`),
so such an error is the machine's, not a bug. Anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import errno
import warnings
from contextlib import contextmanager
from typing import Iterator

import click

from ddsm.errors import DDSMError


_MACHINE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO}


class _BadInput(click.ClickException):
    exit_code = 2


def _usage_line(e: click.UsageError) -> str:
    """Click's usage error as one line that says where the help is (click itself prints three)."""
    where = e.ctx.command_path if e.ctx is not None else "ddsm"
    return f"{e.format_message()} (see: {where} --help)"


def warning_text(message: object, category: type[Warning]) -> str:
    """A warning as the CLI shows it: one line, ``warning: ...``, cut to a sane length; a library's names its kind."""
    from ddsm.limits import MAX_MESSAGE_CHARS, clip

    text = " ".join(str(message).split())
    own = category.__module__.startswith("ddsm") or text.startswith("ddsm: ")
    return clip("warning: " + (text if own or category is UserWarning else f"{category.__name__}: {text}"),
                MAX_MESSAGE_CHARS)


@contextmanager
def one_line_warnings() -> Iterator[None]:
    """Inside, every Python warning (ddsm's or a library's) reaches stderr as one line (:func:`warning_text`), once
    per place as Python would show it, instead of ``file:line: Category: ...`` plus the source line."""
    with warnings.catch_warnings():
        warnings.showwarning = lambda message, category, *_args, **_kw: click.echo(
            warning_text(message, category), err=True)
        yield


class _Group(click.Group):
    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.exceptions.NoArgsIsHelpError:
            raise  # ``ddsm`` alone shows the help
        except click.UsageError as e:
            raise _BadInput(_usage_line(e)) from None

    def invoke(self, ctx: click.Context):
        try:
            with one_line_warnings():
                return super().invoke(ctx)
        except click.UsageError as e:
            raise _BadInput(_usage_line(e)) from None
        except DDSMError as e:
            raise _BadInput(str(e)) from None
        except OSError as e:
            if e.filename is not None:
                raise _BadInput(f"{e.strerror or e}: {str(e.filename)!r}") from None
            if e.errno in _MACHINE_ERRNOS:  # a full disk or quota, a file system gone read-only or failing
                raise _BadInput(f"{e.strerror or e} while writing; free space or fix the disk, then rerun "
                                "(resumable runs continue from their last checkpoint)") from None
            raise


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="ddsm")
def main() -> None:
    """ddsm: denoising diffusion step-aware models.

    Train one slimmable UNet supernet, then sample with a network width chosen
    per denoising step.
    """


_device = click.option("--device", default="auto", show_default=True,
                       help="Torch device: auto (CUDA when present, else CPU), cpu, cuda or cuda:N.")

_allow_new_weights = click.option(
    "--allow-new-weights", is_flag=True, default=False,
    help="Use a schedule file even if it was measured on other weights than the checkpoint's (same architecture); "
         "the override is printed and recorded in the outputs.")


def note_new_weights(overrides: dict[str, dict[str, str]]) -> None:
    """One stderr line per schedule used on other weights than it was measured on (``--allow-new-weights``)."""
    for name, o in overrides.items():
        click.echo(f"warning: schedule file {name!r} was measured on weights {o['schedule_weights'][:12]}..., the "
                   f"checkpoint holds {o['checkpoint_weights'][:12]}... (used anyway: --allow-new-weights)", err=True)



# The command modules register themselves on ``main`` when imported.
from ddsm.cli import judge, model, search, slim  # noqa: E402,F401
