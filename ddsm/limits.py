"""Size limits on user input: seeds, sample counts, resolutions, config files and error messages.

Every value that decides how much memory or time a command takes is bounded
where it enters, so a typo (``--num 10**12``, ``num_timesteps: 1e12``, a YAML
alias bomb) is a one-line :class:`~ddsm.errors.DDSMError` instead of a hang,
an OOM kill or a traceback. The limits:

* seeds: integers in ``0..2**63-1`` (a signed 64-bit integer, as logs and
  Parquet files store them; ``torch.Generator.manual_seed`` takes them all),
  and the last seed of a run, ``seed + num - 1``, too;
* sample counts: positive, and the samples' float32 tensor
  (``num x C x H x W x 4`` bytes) must fit in :data:`MEMORY_SHARE` of the
  memory available now; the error says how many fit;
* grids (``ddsm plot --num``): at most :data:`MAX_GRID_SAMPLES`;
* image sides: at most :data:`MAX_IMAGE_SIDE`;
* config files (YAML, and a user's JSON such as a diffusers ``config.json``):
  at most :data:`MAX_CONFIG_BYTES`, :data:`MAX_NESTING` levels of nesting,
  :data:`MAX_YAML_ALIASES` aliases and :data:`MAX_YAML_NODES` values once
  aliases are expanded (:func:`ddsm.config.load_yaml`, :func:`ddsm.io.read_json`);
* messages: a quoted value is cut to :data:`MAX_VALUE_CHARS` characters and a
  whole message to :data:`MAX_MESSAGE_CHARS` (:func:`short`, :func:`clip`).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from ddsm.errors import DDSMError

#: largest seed: seeds are stored as signed 64-bit integers
MAX_SEED = 2**63 - 1
#: share of the available memory one command's samples (or activations) may take
MEMORY_SHARE = 0.25
#: samples per grid of ``ddsm plot`` (a grid shows a few images; 1024 is a 32 x 32 grid)
MAX_GRID_SAMPLES = 1024
#: largest image side (UNet image_size, ``featurenet --size``): a 1024 x 1024 image is 4 MiB per channel in float32
MAX_IMAGE_SIDE = 1024
#: channels of one layer in a model config read from a user's file (diffusers' largest UNets use 1280)
MAX_CHANNELS = 16_384
#: largest config file (YAML or JSON) read
MAX_CONFIG_BYTES = 1 << 20
#: largest JSON file read (schedules, manifests, search states, cost tables)
MAX_JSON_BYTES = 256 << 20
#: YAML aliases (``*name``) allowed in one config file
MAX_YAML_ALIASES = 100
#: values (scalars, lists, mappings) of one config file with every alias expanded
MAX_YAML_NODES = 100_000
#: nesting of lists and mappings in one config or JSON file (a real one nests a handful of levels)
MAX_NESTING = 64
#: characters of a value quoted in an error message
MAX_VALUE_CHARS = 80
#: characters of one error message
MAX_MESSAGE_CHARS = 300


def short(value: Any, limit: int = MAX_VALUE_CHARS) -> str:
    """``repr(value)``, cut to about ``limit`` characters (with the full length said) when longer."""
    try:
        r = repr(value)
    except RecursionError:  # a deeply nested value
        return f"<{type(value).__name__}, nested too deeply to show>"
    if len(r) <= limit:
        return r
    return f"{r[: max(limit - 24, 8)]}... ({len(r)} chars)"


def clip(message: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``message`` cut to ``limit`` characters (ending in '...') when longer."""
    return message if len(message) <= limit else message[: limit - 3] + "..."


def available_memory() -> int:
    """Bytes of memory available to new allocations now."""
    import psutil

    return int(psutil.virtual_memory().available)


def memory_budget() -> int:
    """Bytes one command's samples or activations may take: :data:`MEMORY_SHARE` of :func:`available_memory`."""
    return int(available_memory() * MEMORY_SHARE)


def _gib(n: float) -> str:
    return f"{n / 2**30:.3g} GiB"


def check_seed(seed: int, num: int = 1, *, flag: str = "--seed", what: str = "samples") -> int:
    """``seed`` if it and the last seed ``seed + num - 1`` lie in 0..2**63-1, else a one-line DDSMError."""
    if not 0 <= seed <= MAX_SEED:
        raise DDSMError(f"{flag} {short(seed)} is out of range; seeds are integers in 0..2**63-1 ({MAX_SEED})")
    if num > 0 and seed + num - 1 > MAX_SEED:
        raise DDSMError(f"{flag} {seed} with {num} {what} would use seeds up to {seed + num - 1}, past the largest "
                        f"seed 2**63-1; use {flag} <= {MAX_SEED - num + 1}")
    return seed


def check_count(num: int, *, flag: str = "--num", what: str = "samples") -> int:
    """``num`` if positive, else a one-line DDSMError."""
    if num <= 0:
        raise DDSMError(f"{flag} {short(num)} must be a positive number of {what}")
    return num


def check_sample_memory(num: int, unet, *, flag: str = "--num", copies: int = 1) -> int:
    """``num`` if ``copies`` float32 tensors of ``num`` images of the supernet ``unet`` (its UNetConfig: in_channels,
    image_size) fit in :func:`memory_budget`.

    The error says how much memory that takes and how many samples fit.
    """
    check_count(num, flag=flag)
    shape = (unet.in_channels, unet.image_size, unet.image_size)
    per = 4 * math.prod(int(s) for s in shape) * max(copies, 1)
    budget = memory_budget()
    fit = budget // per
    if num > fit:
        dims = "x".join(str(int(s)) for s in shape)
        raise DDSMError(f"{flag} {short(num)}: {num} samples of {dims} float32 take {_gib(num * per)}, more than "
                        f"{MEMORY_SHARE:.0%} of the {_gib(budget / MEMORY_SHARE)} of memory available; use "
                        f"{flag} <= {fit}")
    return num


def check_grid_num(num: int, *, flag: str = "--num") -> int:
    """``num`` if it is a sane grid size, 1..:data:`MAX_GRID_SAMPLES`."""
    if not 0 < num <= MAX_GRID_SAMPLES:
        raise DDSMError(f"{flag} {short(num)} is not a grid size; use 1..{MAX_GRID_SAMPLES} samples per grid")
    return num


def check_finite_positive(value: float, *, flag: str) -> float:
    """``value`` if finite and > 0, else a one-line DDSMError."""
    if not (math.isfinite(value) and value > 0):
        raise DDSMError(f"{flag} {short(value)} must be a finite number > 0")
    return value


def check_budgets(budgets: Sequence[float], *, flag: str = "--budget") -> list[float]:
    """Cost budgets as shares of the full-width cost: each in (0, 1]."""
    for b in budgets:
        if not (math.isfinite(b) and 0.0 < b <= 1.0):
            raise DDSMError(f"{flag} {short(b)} is not a cost share; budgets lie in (0, 1] (1 = the full-width cost)")
    return list(budgets)


def check_nesting(value: Any, where: str, limit: int = MAX_NESTING) -> None:
    """Refuse a parsed config or JSON document nested deeper than ``limit`` levels (one line naming ``where``)."""
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, (dict, list, tuple)):
            if depth > limit:
                raise DDSMError(f"{where} is nested more than {limit} levels deep; a config is far flatter")
            stack.extend((c, depth + 1) for c in (v.values() if isinstance(v, dict) else v))
