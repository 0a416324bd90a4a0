"""Changing the resolution of a variance-preserving state (Spectral Progressive Diffusion).

A state at side ``s`` is ``x = sqrt(ab) * x0_s + sqrt(1 - ab) * eps`` where
``x0_s = downsample(x0)`` is the clean image at that side in pixel units (the
mean of every block, so brightness is kept) and ``eps`` is white noise.

Everything rests on an **orthonormal** analysis ``A`` from side ``L`` to side
``s < L`` (rows orthonormal: ``A A^T = I``), with ``r = L / s``:

- ``analysis(x) = A x``: the low band of ``x`` on the small grid. Unit white
  noise stays unit white, which is how low-resolution noise is drawn.
- ``synthesis(z) = A^T z``: back to the large grid, high band empty.
- ``downsample(x0) = A x0 / r`` and ``upsample(x) = r A^T x`` are the
  clean-image maps; ``downsample(upsample(x)) == x``.

Haar (``r = 2``, applied per octave for 4, 8, ...) makes ``A`` the block sum
divided by ``r``, so ``upsample`` repeats pixels; the orthonormal DCT (any
integer ``r``) keeps the lowest ``s x s`` cosine coefficients. Both nest:
16 -> 8 -> 4 equals 16 -> 4 within one family, so noise projected to any side
and grown back stays consistent. Bilinear or nearest interpolation without
the ``1/r`` and the fresh high band would not keep the noise white.

Growing the state (:func:`grow`): ``A^T x`` carries the signal at amplitude
``sqrt(ab) / r`` relative to ``upsample(x0_s)`` and the old noise in the low
band; fresh noise of the same variance ``1 - ab`` fills the high band; dividing
by ``sqrt(ab / r^2 + 1 - ab)`` makes it a VP state again at

    ab' = (ab / r^2) / (ab / r^2 + 1 - ab)

(the signal-to-noise ratio drops by ``r^2``), so the sampler continues from the
noisier, generally fractional, timestep whose alpha_bar is ``ab'``.
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import torch
import torch.nn.functional as F

from ddsm.errors import DDSMError

Transform = Literal["auto", "haar", "dct"]
TRANSFORMS = ("auto", "haar", "dct")


def ratio(small: int, large: int) -> int:
    """The integer factor ``large / small`` per side, or a one-line error."""
    if small <= 0 or large <= 0 or large % small:
        raise DDSMError(f"resolution {small} does not divide {large}: growing needs an integer ratio per side")
    return large // small


def is_octave(r: int) -> bool:
    """Whether ``r`` is a power of 2 (a whole number of Haar levels)."""
    return r >= 1 and not r & (r - 1)


def pick_transform(small: int, large: int, transform: Transform = "auto") -> str:
    """The orthonormal basis used between two sides: 'auto' is Haar per octave (x2, x4, ...) and the DCT otherwise."""
    r = ratio(small, large)
    if transform not in TRANSFORMS:
        raise DDSMError(f"transform {transform!r} is not one of {', '.join(TRANSFORMS)}")
    if transform == "auto":
        return "haar" if is_octave(r) else "dct"
    if transform == "haar" and not is_octave(r):
        raise DDSMError(f"Haar needs a power-of-2 ratio; {small} -> {large} is x{r} (use 'dct')")
    return transform


@functools.lru_cache(maxsize=32)
def _dct_matrix_cpu(n: int) -> torch.Tensor:
    # Orthonormal DCT-II: C[k, i] = a_k cos(pi (i + 1/2) k / n); C C^T = I.
    i = torch.arange(n, dtype=torch.float64)
    k = i[:, None]
    c = torch.cos(math.pi * (i[None, :] + 0.5) * k / n) * math.sqrt(2.0 / n)
    c[0] /= math.sqrt(2.0)
    return c


def _dct_matrix(n: int, like: torch.Tensor) -> torch.Tensor:
    return _dct_matrix_cpu(n).to(device=like.device, dtype=like.dtype)


def _low_band(small: int, large: int, like: torch.Tensor) -> torch.Tensor:
    # The (small x large) 1-D analysis matrix of the DCT route: IDCT_small . crop . DCT_large.
    return _dct_matrix(small, like).T @ _dct_matrix(large, like)[:small]


def _route(small: int, large: int, transform: Transform, like: torch.Tensor) -> int | torch.Tensor:
    # Haar: the ratio r (block sums / r); DCT: the 1-D analysis matrix.
    if pick_transform(small, large, transform) == "haar":
        return ratio(small, large)
    return _low_band(small, large, like)


def haar_dwt(x: torch.Tensor) -> torch.Tensor:
    """One orthonormal Haar level of ``x`` (B, C, H, W): sub-bands (B, 4, C, H/2, W/2) in order LL, LH, HL, HH.

    Each 2x2 block ``[[a, b], [c, d]]`` gives ``LL = (a+b+c+d)/2`` (so ``LL`` is
    :func:`analysis` to half the side), the horizontal detail ``LH = (a-b+c-d)/2``,
    the vertical ``HL = (a+b-c-d)/2`` and the diagonal ``HH = (a-b-c+d)/2``: four
    orthonormal patterns, so :func:`haar_idwt` inverts it exactly. Sums and
    differences rather than a strided convolution: on the CPU a 2x2 stride-2
    convolution over B*C single-channel maps is several times slower.
    """
    B, C, H, W = x.shape
    if H % 2 or W % 2:
        raise DDSMError(f"a Haar wavelet level needs even sides; got a {H}x{W} feature map")
    q = x.reshape(B, C, H // 2, 2, W // 2, 2)
    a, b, c, d = q[:, :, :, 0, :, 0], q[:, :, :, 0, :, 1], q[:, :, :, 1, :, 0], q[:, :, :, 1, :, 1]
    s_top, d_top, s_bot, d_bot = a + b, a - b, c + d, c - d
    if _differentiable(x):
        return torch.stack([s_top + s_bot, d_top + d_bot, s_top - s_bot, d_top - d_bot], dim=1) * 0.5
    # Sampling: the same sums written straight into one output (fewer large temporaries; the same bits).
    out = x.new_empty(B, 4, C, H // 2, W // 2)
    torch.add(s_top, s_bot, out=out[:, 0])
    torch.add(d_top, d_bot, out=out[:, 1])
    torch.sub(s_top, s_bot, out=out[:, 2])
    torch.sub(d_top, d_bot, out=out[:, 3])
    return out.mul_(0.5)


def _differentiable(x: torch.Tensor) -> bool:
    # out= ops record no gradient: use them only where none is wanted
    return torch.is_grad_enabled() and x.requires_grad


def haar_idwt(bands: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`haar_dwt`: sub-bands (B, 4, C, h, w) to (B, C, 2h, 2w)."""
    B, four, C, h, w = bands.shape
    if four != 4:
        raise DDSMError(f"Haar synthesis needs 4 sub-bands (LL, LH, HL, HH), got {four}")
    ll, lh, hl, hh = bands.unbind(dim=1)
    p, q, r, u = ll + hl, ll - hl, lh + hh, lh - hh
    if _differentiable(bands):
        top = torch.stack([p + r, p - r], dim=-1)  # a, b: (B, C, h, w, 2)
        bottom = torch.stack([q + u, q - u], dim=-1)  # c, d
        return torch.stack([top, bottom], dim=3).reshape(B, C, 2 * h, 2 * w) * 0.5
    out = bands.new_empty(B, C, h, 2, w, 2)
    torch.add(p, r, out=out[:, :, :, 0, :, 0])
    torch.sub(p, r, out=out[:, :, :, 0, :, 1])
    torch.add(q, u, out=out[:, :, :, 1, :, 0])
    torch.sub(q, u, out=out[:, :, :, 1, :, 1])
    return out.mul_(0.5).reshape(B, C, 2 * h, 2 * w)


def analysis(x: torch.Tensor, side: int, transform: Transform = "auto") -> torch.Tensor:
    """``A x``: the orthonormal low band of ``x`` (..., L, L) on a ``side`` grid; white noise stays white."""
    large = x.shape[-1]
    if side == large:
        return x
    m = _route(side, large, transform, x)
    if isinstance(m, int):
        return F.avg_pool2d(x.reshape(-1, 1, large, large), m).reshape(*x.shape[:-2], side, side) * m
    return m @ x @ m.T


def synthesis(z: torch.Tensor, side: int, transform: Transform = "auto") -> torch.Tensor:
    """``A^T z``: ``z`` (..., s, s) placed in the low band of a ``side`` grid, high band empty."""
    small = z.shape[-1]
    if side == small:
        return z
    m = _route(small, side, transform, z)
    if isinstance(m, int):
        return z.repeat_interleave(m, dim=-1).repeat_interleave(m, dim=-2) / m
    return m.T @ z @ m


def downsample(x0: torch.Tensor, side: int, transform: Transform = "auto") -> torch.Tensor:
    """A clean image at ``side`` in the same pixel units (Haar: the mean of every block)."""
    return analysis(x0, side, transform) * (side / x0.shape[-1])


def upsample(x: torch.Tensor, side: int, transform: Transform = "auto") -> torch.Tensor:
    """The inverse of :func:`downsample` on the low band (Haar: every pixel repeated)."""
    return synthesis(x, side, transform) * (side / x.shape[-1])


def alpha_bar_after_growth(alpha_bar: torch.Tensor | float, r: float) -> torch.Tensor:
    """``ab' = (ab/r^2) / (ab/r^2 + 1 - ab)``: the noise level of a state grown by ``r`` per side."""
    ab = torch.as_tensor(alpha_bar, dtype=torch.float64)
    lo = ab / r**2
    return lo / (lo + 1 - ab)


def grow(x: torch.Tensor, alpha_bar: float | torch.Tensor, side: int, noise: torch.Tensor,
         transform: Transform = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Grow the VP state ``x`` (B, C, s, s) at noise level ``alpha_bar`` to ``side``.

    ``noise`` is standard normal at the new side (only its high band is used).
    Returns the new state and its alpha_bar (float64; lower than ``alpha_bar``).
    """
    small = x.shape[-1]
    if side < small:
        raise DDSMError(f"resolution cannot decrease along a trajectory: {small} -> {side}")
    if side == small:
        return x, torch.as_tensor(alpha_bar, dtype=torch.float64)
    r = ratio(small, side)
    if noise.shape[-1] != side:
        raise DDSMError(f"growth noise has side {noise.shape[-1]}, expected {side}")
    ab = torch.as_tensor(alpha_bar, dtype=torch.float64)
    sigma = (1 - ab).sqrt().to(x.dtype).to(x.device)
    high = noise - synthesis(analysis(noise, small, transform), side, transform)
    y = synthesis(x, side, transform) + sigma * high
    scale = (ab / r**2 + 1 - ab).sqrt().to(x.dtype).to(x.device)
    return y / scale, alpha_bar_after_growth(ab, r)
