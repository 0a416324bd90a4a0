"""The backbone slot: what every slimmable denoiser network offers (:class:`Backbone`), and the helpers they share.

Samplers, the cost model, the memory guard, the search and the trainer talk
to a network only through :class:`Backbone`. A new network family (a
transformer, another diffusers model) is one module that satisfies it plus
one line in :data:`ddsm.nn.registry.BACKBONES`; the contract tests in
``tests/test_backbones.py`` then run over it unchanged.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

from ddsm.config import width_index
from ddsm.errors import DDSMError


@runtime_checkable
class Backbone(Protocol):
    """A slimmable ε-prediction network: every width in ``widths`` runs a prefix of the widest net's weights."""

    config: Any  # the backbone's own architecture config (what rebuilds it)

    @property
    def widths(self) -> tuple[float, ...]:
        """The widths the supernet serves, ascending, ending at 1.0."""

    @property
    def width(self) -> float:
        """The width the network currently runs at."""

    @property
    def image_size(self) -> int:
        """Side of the square images it was built for."""

    @property
    def in_channels(self) -> int:
        """Image channels in (and ε channels out)."""

    @property
    def num_classes(self) -> int:
        """Class labels a conditional model takes (0: unconditional); label ``num_classes`` is the null label."""

    def check_width(self, width: float) -> float:
        """``width`` as the supernet's own float (the one matching rule, :func:`~ddsm.config.width_index`), or a DDSMError."""

    def set_active_width(self, width: float) -> "Backbone":
        """Run at ``width`` from now on; returns the network."""

    def extract_subnet(self, width: float) -> "Backbone":
        """A plain-``torch.nn`` copy at ``width`` with identical outputs; the supernet's active width is untouched."""

    def forward(self, x: torch.Tensor, t: torch.Tensor | float, *, cond: Any = None,
                return_hidden: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """ε for noisy ``x`` (B, C, H, W) at timesteps ``t``; ``cond`` is the backbone's conditioning: class labels
        (B,) of a conditional model (:func:`class_labels`; None: the null label), None for an unconditional one.

        ``return_hidden`` also returns the last hidden map (before the output
        layer), which distillation matches between a student and its teacher.
        """

    def reuse_levels(self) -> tuple[int, ...]:
        """Where a cached call can reuse the deep features of an earlier full call (empty: nowhere); see
        :meth:`forward_reuse`. A larger level runs more of the network at a cached call."""

    def forward_reuse(self, x: torch.Tensor, t: torch.Tensor | float, *, level: int, deep: torch.Tensor | None,
                      cond: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(ε, deep features): with ``deep`` None a full call (ε exactly as :meth:`forward`) that also returns the
        features to reuse at ``level``; given ``deep``, a cached call that runs only the part outside ``level``."""

    def valid_resolutions(self) -> list[int]:
        """Sides up to ``image_size`` a state can have (what resolution schedules may use)."""

    def resolution_step(self) -> int:
        """Every side the network runs on is a positive multiple of this (its total downsampling factor)."""

    def forward_bytes(self, resolution: int, batch_size: int = 1) -> int:
        """Estimated peak activation bytes of one float32 forward pass at width 1 (the memory guard's input)."""


def check_width_of(widths: tuple[float, ...], width: float, *, fixed: bool = False) -> float:
    """``width`` as the float in ``widths`` it matches, or a one-line DDSMError naming the valid ones.

    ``fixed``: ``widths`` is the one width of an extracted subnet (the message says so).
    """
    i = width_index(width, widths)
    if i is None:
        if fixed:
            raise DDSMError(f"this is a fixed-width subnet at {widths[0]}; cannot run at width {width}")
        raise DDSMError(f"width {width!r} is not served by this supernet; valid widths: {list(widths)}")
    return widths[i]


class GeometryFromConfig:
    """``image_size``, ``in_channels`` and ``num_classes`` read off the backbone's geometry ``config``."""

    config: Any

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def in_channels(self) -> int:
        return self.config.in_channels

    @property
    def num_classes(self) -> int:
        """Class labels a conditional model takes (0: unconditional); label ``num_classes`` is the null label."""
        return self.config.num_classes


def to_images(model: Any, x: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """A sampler's final states as images: a latent model's (one with an autoencoder, ``codec``) decoded by its
    decoder, ``batch_size`` at a time on the model's device, float32 on the CPU; any other model's as they are. Any
    leading dimensions (schedules, seeds) are kept."""
    codec = getattr(model, "codec", None)
    if codec is None:
        return x
    lead, flat = x.shape[:-3], x.reshape(-1, *x.shape[-3:])
    device = next(codec.parameters()).device
    out = torch.cat([codec.decode(flat[i:i + batch_size].to(device)).float().cpu()
                     for i in range(0, len(flat), batch_size)])
    return out.reshape(*lead, *out.shape[1:])


class NoFeatureReuse:
    """Mixin of a backbone that offers no cache level: every cached call is refused with one line."""

    def reuse_levels(self) -> tuple[int, ...]:
        return ()

    def forward_reuse(self, x, t, *, level: int, deep, cond: Any = None):
        check_reuse_level(self, level)  # raises: no level is offered
        raise AssertionError("unreachable")  # pragma: no cover


def check_reuse_level(model: Backbone, level: int) -> int:
    """``level`` if ``model`` can reuse features there, else a one-line DDSMError listing the levels it offers."""
    levels = tuple(model.reuse_levels())
    if not levels:
        raise DDSMError(f"{type(model).__name__} cannot reuse cached features (it offers no cache level); use a "
                        "schedule without cached steps")
    if isinstance(level, bool) or not isinstance(level, int) or level not in levels:
        raise DDSMError(f"cache level {level!r} is not offered by {type(model).__name__}; valid levels: "
                        f"{list(levels)}")
    return level


def fit_channels(deep: torch.Tensor, channels: int) -> torch.Tensor:
    """``deep`` (B, C, ...) with exactly ``channels`` channels: its prefix, or zeros appended (a slimmable net's
    narrower widths are channel prefixes, and a channel a narrower call never computed reads as absent)."""
    have = deep.shape[1]
    if have == channels:
        return deep
    if have > channels:
        return deep[:, :channels]
    pad = deep.new_zeros((deep.shape[0], channels - have, *deep.shape[2:]))
    return torch.cat([deep, pad], dim=1)


def divisor_sides(image_size: int, step: int) -> list[int]:
    """Multiples of ``step`` that divide ``image_size``: the sides a network with that downsampling runs on."""
    return [d for d in range(step, image_size + 1, step) if image_size % d == 0]


def unet_forward_bytes(image_size: int, level_channels: list[int], maps_per_level: int, attn_sides: list[int],
                       resolution: int, batch_size: int = 1) -> int:
    """Peak-activation estimate of a UNet: skips plus working maps per level, and the largest attention matrix.

    ``level_channels`` are the channels of each level at width 1, ``maps_per_level``
    the maps a level keeps alive at once, ``attn_sides`` the training-size sides
    that get single-head attention (the deepest level always does). The math
    kernel the MAC count pins SDPA to materialises ``(side**2)**2`` scores per image.
    """
    sides = [max(resolution * (image_size // 2**i) // image_size, 1) for i in range(len(level_channels))]
    maps = sum(c * s * s * maps_per_level for c, s in zip(level_channels, sides))
    attended = [s for i, s in enumerate(sides) if image_size // 2**i in attn_sides] + [sides[-1]]
    scores = max((s * s) ** 2 for s in attended)
    return 4 * max(batch_size, 1) * (maps + scores)


def class_labels(cond: Any, num_classes: int, batch: int, device: torch.device) -> torch.Tensor | None:
    """``cond`` as one label per sample (the null label ``num_classes`` where ``cond`` is None), or None for an
    unconditional model (``num_classes`` 0), which refuses any ``cond``; one-line DDSMError for a bad label.

    Every backbone reads its ``cond`` through this, so labels mean the same in each (the null label included, which
    classifier-free guidance samples with and training substitutes for dropped labels).
    """
    if num_classes == 0:
        if cond is not None:
            raise DDSMError("this model is unconditional (num_classes 0); it takes no class labels")
        return None
    if cond is None:
        return torch.full((batch,), num_classes, dtype=torch.long, device=device)
    y = torch.as_tensor(cond, device=device)
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise DDSMError(f"class labels must be integers, got dtype {y.dtype}")
    if y.ndim == 0:
        y = y.expand(batch)
    if y.shape != (batch,):
        raise DDSMError(f"class labels must be one per sample, shape ({batch},), got {tuple(y.shape)}")
    bad = (y < 0) | (y > num_classes)
    if bad.any():
        raise DDSMError(f"class label {int(y[bad][0])} is out of range; valid labels: 0..{num_classes - 1}, and "
                        f"{num_classes} for the null (unconditional) label")
    return y.long()
