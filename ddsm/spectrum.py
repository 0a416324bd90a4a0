"""The power-spectrum rule of Spectral Progressive Diffusion: when should the state grow?

Natural images have a radial power spectrum ``P(w) ~ A * |w|^-beta``. In a
VP state ``sqrt(ab) x0 + sqrt(1 - ab) eps`` with the orthonormal 2-D DFT,
frequency ``w`` carries signal power ``ab * P(w)`` and noise power ``1 - ab``
(white noise has unit power at every frequency in these units). A state of
side ``s`` holds the frequencies below ``s / 2`` cycles per image; the band
starting at ``s / 2`` can be left out while noise dominates it:

    SNR_t(w) = ab_t * A * w^-beta / (1 - ab_t) < threshold   (1: signal below noise)

so the rule runs each step at the smallest allowed side whose first left-out
band is still below the threshold, and at the image size from the first step
where no smaller side qualifies. ``A`` and ``beta`` are fitted on the training
images in the model's own units ([-1, 1] pixels, frequencies in cycles per image).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import torch

from ddsm.diffusion.noise import NoiseSchedule
from ddsm.errors import DDSMError


@dataclass(frozen=True)
class SpectrumFit:
    """``P(w) ~ A * w^-beta`` fitted by least squares in log-log over every non-zero frequency up to side/2."""

    A: float  # power at 1 cycle per image
    beta: float  # spectral slope
    r2: float  # coefficient of determination of the log-log fit
    freqs: tuple[float, ...]  # radial bin centres (cycles per image)
    power: tuple[float, ...]  # mean power per bin

    def power_at(self, w: float | np.ndarray) -> np.ndarray:
        """The fitted power at radial frequency ``w`` (cycles per image)."""
        return self.A * np.asarray(w, dtype=np.float64) ** -self.beta

    def snr(self, w: float, alpha_bar: float | np.ndarray) -> np.ndarray:
        """Signal-to-noise ratio of frequency ``w`` in a state at noise level ``alpha_bar``."""
        ab = np.asarray(alpha_bar, dtype=np.float64)
        return ab * self.power_at(w) / np.maximum(1 - ab, 1e-300)

    def to_dict(self) -> dict:
        return asdict(self)


def _power(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # Mean |DFT_ortho(x)|^2 per frequency, and each frequency's radius in cycles per image.
    if x.ndim != 4 or x.shape[-1] != x.shape[-2] or len(x) == 0:
        raise DDSMError(f"power spectrum needs a non-empty batch of square images (N, C, H, H), got {tuple(x.shape)}")
    n = x.shape[-1]
    p = torch.fft.fft2(x.double(), norm="ortho").abs().pow(2).mean(dim=(0, 1))
    k = torch.fft.fftfreq(n, d=1.0 / n, dtype=torch.float64)
    return p, torch.sqrt(k[:, None] ** 2 + k[None, :] ** 2)


def radial_power_spectrum(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean power ``|DFT_ortho(x)|^2`` of images (N, C, H, H) per integer radial frequency 1..H/2 (for display)."""
    p, radius = _power(x)
    radius = radius.round().long()
    freqs, power = [], []
    for w in range(1, x.shape[-1] // 2 + 1):
        sel = radius == w
        if sel.any():
            freqs.append(float(w))
            power.append(float(p[sel].mean()))
    return np.asarray(freqs), np.asarray(power)


def fit_power_spectrum(x: torch.Tensor) -> SpectrumFit:
    """Fit ``A`` and ``beta`` on images in model units.

    Every non-zero frequency up to ``side / 2`` is one point (binning would
    bias the slope: a bin's mean power is not the power at its centre).
    """
    freqs, power = radial_power_spectrum(x)
    p, radius = _power(x)
    sel = (radius > 0) & (radius <= x.shape[-1] / 2)
    if int(sel.sum()) < 2 or (p[sel] <= 0).any():
        raise DDSMError(f"cannot fit a power law to images of side {x.shape[-1]}: need at least 2 positive frequencies")
    lx, ly = np.log(radius[sel].numpy()), np.log(p[sel].numpy())
    slope, intercept = np.polyfit(lx, ly, 1)
    resid = ly - (intercept + slope * lx)
    r2 = 1.0 - float(resid @ resid) / float(((ly - ly.mean()) ** 2).sum())
    return SpectrumFit(A=float(np.exp(intercept)), beta=float(-slope), r2=r2,
                       freqs=tuple(freqs.tolist()), power=tuple(power.tolist()))


def rule_resolutions(fit: SpectrumFit, sides: Sequence[int], timesteps: Sequence[float], noise: NoiseSchedule,
                     *, threshold: float = 1.0) -> list[int]:
    """The side of every sampling step the rule predicts (non-decreasing; the last step at the largest side)."""
    sides = sorted(int(s) for s in sides)
    if not (math.isfinite(threshold) and threshold > 0):
        raise DDSMError(f"threshold {threshold} must be positive and finite (1: grow once signal reaches the noise)")
    out = []
    for t in timesteps:
        ab = float(noise.alpha_bar_at(float(t)))
        ok = [s for s in sides[:-1] if fit.snr(s / 2, ab) < threshold]
        out.append(ok[0] if ok else sides[-1])
    out[-1] = sides[-1]
    for i in range(1, len(out)):  # SNR grows as t falls, so this only guards float ties
        out[i] = max(out[i], out[i - 1])
    return out


# ---------------------------------------------------------------------------- samples against real data


def radial_power_per_image(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Each image's power ``|DFT_ortho|^2`` (mean over channels) per integer radial frequency 1..H/2: (freqs, (N, F))."""
    if x.ndim != 4 or x.shape[-1] != x.shape[-2] or len(x) == 0:
        raise DDSMError(f"power spectrum needs a non-empty batch of square images (N, C, H, H), got {tuple(x.shape)}")
    n = x.shape[-1]
    p = torch.fft.fft2(x.double(), norm="ortho").abs().pow(2).mean(dim=1)  # (N, H, H)
    k = torch.fft.fftfreq(n, d=1.0 / n, dtype=torch.float64)
    radius = torch.sqrt(k[:, None] ** 2 + k[None, :] ** 2).round().long()
    freqs = [w for w in range(1, n // 2 + 1) if bool((radius == w).any())]
    power = torch.stack([p[:, radius == w].mean(dim=1) for w in freqs], dim=1)
    return np.asarray(freqs, dtype=np.float64), power.numpy()


def frequency_bands(side: int) -> dict[str, tuple[int, int]]:
    """Radial bands (inclusive, cycles per image): low up to side/4, high above it up to side/2."""
    q = max(1, side // 4)
    return {"low": (1, q), "high": (q + 1, side // 2)}


def band_errors(power: np.ndarray, real: np.ndarray, freqs: np.ndarray, side: int) -> dict[str, float]:
    """Mean ``|log10 P_samples(w) - log10 P_real(w)|`` over each band's radial frequencies (0: the real spectrum).

    ``power`` and ``real`` are mean spectra (F,) over images; a spectrum in
    decibels would be 10x these numbers.
    """
    err = np.abs(np.log10(np.maximum(power, 1e-300)) - np.log10(np.maximum(real, 1e-300)))
    out = {}
    for name, (lo, hi) in frequency_bands(side).items():
        sel = (freqs >= lo) & (freqs <= hi)
        out[name] = float(err[sel].mean()) if sel.any() else float("nan")
    return out


@dataclass(frozen=True)
class SpectrumComparison:
    """Radially averaged power spectra of sample sets against real images, and their per-band errors."""

    side: int  # image side
    freqs: tuple[float, ...]  # radial frequencies, cycles per image
    real: tuple[float, ...]  # mean power of the real images per frequency
    power: dict[str, tuple[float, ...]]  # the same for each named sample set
    errors: dict[str, dict[str, float]]  # per sample set: band -> mean |log10 ratio|
    num_real: int  # real images
    num_samples: dict[str, int]  # samples per set

    def to_dict(self) -> dict:
        return {**asdict(self), "bands": frequency_bands(self.side)}


def compare_spectra(real: torch.Tensor, samples: dict[str, torch.Tensor]) -> SpectrumComparison:
    """Compare every named sample set's spectrum with the real images' (all of one side)."""
    side = real.shape[-1]
    freqs, pr = radial_power_per_image(real)
    r = pr.mean(axis=0)
    power, errors, counts = {}, {}, {}
    for name, x in samples.items():
        if x.shape[1:] != real.shape[1:]:
            raise DDSMError(f"samples {name!r} have shape {tuple(x.shape[1:])}, the real images {tuple(real.shape[1:])}")
        p = radial_power_per_image(x)[1].mean(axis=0)
        power[name], errors[name], counts[name] = tuple(p.tolist()), band_errors(p, r, freqs, side), len(x)
    return SpectrumComparison(side, tuple(freqs.tolist()), tuple(r.tolist()), power, errors, len(real), counts)


def band_error_statistic(per_image: np.ndarray, real: np.ndarray, freqs: np.ndarray, side: int, band: str):
    """A bootstrap statistic (see :mod:`ddsm.metrics.intervals`): a band's error of the seed-weighted mean spectrum.

    ``per_image`` is (N, F) from :func:`radial_power_per_image` of N samples on
    N seeds; ``real`` the real images' mean spectrum (F,), held fixed.
    """
    if band not in frequency_bands(side):
        raise DDSMError(f"unknown band {band!r}; valid: {sorted(frequency_bands(side))}")

    def stat(counts: np.ndarray) -> float:
        return band_errors(counts @ per_image / counts.sum(), real, freqs, side)[band]

    return stat
