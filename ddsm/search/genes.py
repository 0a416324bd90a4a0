"""The genome layout of a search space: which gene holds what, and how a genome decodes to a schedule.

:class:`GeneLayout` is the part of :class:`~ddsm.search.config.SearchConfig` that reads
genomes (see that module's docstring for the encoding): width genes, then guidance genes,
reuse genes and transition genes. It reads only the space's settings.
"""

from __future__ import annotations

from functools import cached_property
from typing import Sequence

from ddsm.config import width_index
from ddsm.errors import DDSMError
from ddsm.plan import StepPlan


class GeneLayout:
    """Gene counts, bounds, checks and decoding of a :class:`~ddsm.search.config.SearchConfig`."""

    # -- gene layout ----------------------------------------------------------------

    @property
    def n_genes(self) -> int:
        """Number of genes (segments, or sampling steps)."""
        return self.segments if self.segments is not None else self.sampler.calls

    @cached_property
    def segment_lengths(self) -> tuple[int, ...]:
        """Sampling steps covered by each gene, noisiest first."""
        q, r = divmod(self.sampler.calls, self.n_genes)
        return tuple(q + 1 if g < r else q for g in range(self.n_genes))

    @property
    def n_resolution_genes(self) -> int:
        """Transition genes (one per side above the smallest; 0 without resolutions)."""
        return 0 if self.resolutions is None else len(self.resolutions) - 1

    @property
    def n_guidance_genes(self) -> int:
        """Guidance genes (one per width gene with ``guidance_genes``, else 0)."""
        return self.n_genes if self.guidance_genes else 0

    @property
    def n_reuse_genes(self) -> int:
        """Reuse genes (one per width gene with ``reuse``, else 0); they start at ``n_genes + n_guidance_genes``."""
        return self.n_genes if self.reuse is not None else 0

    @property
    def n_choice_genes(self) -> int:
        """Width, guidance and reuse genes: every gene but the transition genes, which start here."""
        return self.n_genes + self.n_guidance_genes + self.n_reuse_genes

    @property
    def n_vars(self) -> int:
        """Length of a genome: width genes, guidance genes, then transition genes."""
        return self.n_choice_genes + self.n_resolution_genes

    @property
    def upper_bounds(self) -> tuple[int, ...]:
        """Largest value of every gene."""
        return ((self.full_index,) * self.n_genes + (self.full_index + 1,) * self.n_guidance_genes
                + (1,) * self.n_reuse_genes + (self.sampler.calls - 1,) * self.n_resolution_genes)

    @property
    def full_choices(self) -> tuple[int, ...]:
        """The choice genes of the full-width schedule: every width gene full, guided at full width, no step
        cached (the sensitivity probes' base)."""
        return self.guided((self.full_index,) * self.n_genes)

    def guided(self, width_genes: Sequence[int], guidance: Sequence[int] | None = None,
               reuse: Sequence[int] | None = None) -> tuple[int, ...]:
        """Width genes with their guidance genes: ``guidance`` as given, or (None) each gene's unconditional pass at
        its own width, as a plain guided sampler runs; the width genes alone without ``guidance_genes``. With reuse
        genes, ``reuse`` follows (None: every step full)."""
        w = tuple(int(x) for x in width_genes)
        if self.guidance_genes:
            w = w + (tuple(x + 1 for x in w[: self.n_genes]) if guidance is None else tuple(int(x) for x in guidance))
        if self.reuse is not None:
            w = w + ((0,) * self.n_genes if reuse is None else tuple(int(x) for x in reuse))
        return w

    @property
    def full_index(self) -> int:
        """Gene value of the full width (the last index)."""
        return len(self.widths) - 1

    def check_genome(self, genome: Sequence[int]) -> tuple[int, ...]:
        """``genome`` as a tuple of ints, or a DDSMError naming the bad gene and the valid range."""
        g = tuple(int(x) for x in genome)
        if len(g) != self.n_vars:
            raise DDSMError(f"genome has {len(g)} genes; this search space has {self.n_vars}")
        bad = [x for x in g[: self.n_genes] if not 0 <= x <= self.full_index]
        if bad:
            raise DDSMError(f"genome values {bad} are not width indices; valid: 0..{self.full_index} "
                            f"(widths {list(self.widths)})")
        bad = [x for x in g[self.n_genes:self.n_genes + self.n_guidance_genes] if not 0 <= x <= self.full_index + 1]
        if bad:
            raise DDSMError(f"guidance genes {bad} are not valid; valid: 0 (no guidance) or 1..{self.full_index + 1} "
                            f"(the unconditional pass at widths {list(self.widths)})")
        n = self.n_genes + self.n_guidance_genes
        bad = [x for x in g[n:self.n_choice_genes] if x not in (0, 1)]
        if bad:
            raise DDSMError(f"reuse genes {bad} are not valid; valid: 0 (full step) or 1 (cached step)")
        bad = [x for x in g[self.n_choice_genes:] if not 0 <= x < self.sampler.calls]
        if bad:
            raise DDSMError(f"transition genes {bad} are not sampling steps; valid: 0..{self.sampler.calls - 1}")
        return g

    def canonical(self, genome: Sequence[int]) -> tuple[int, ...]:
        """The genome with its transition genes sorted and, where the first gene is the first step alone, its
        reuse gene 0 (the first step is full whatever it says): the same schedule, its one genome."""
        g = [int(x) for x in genome]
        if self.n_reuse_genes and self.segment_lengths[0] == 1:
            g[self.n_choice_genes - self.n_reuse_genes] = 0
        return tuple(g[: self.n_choice_genes]) + tuple(sorted(g[self.n_choice_genes:]))

    def genes_to_widths(self, genome: Sequence[int]) -> list[float]:
        """One width per sampling step (noisiest first) for ``genome``."""
        g = self.check_genome(genome)
        out: list[float] = []
        for value, n in zip(g, self.segment_lengths):
            out.extend([self.widths[value]] * n)
        return out

    def genes_to_resolutions(self, genome: Sequence[int]) -> list[int] | None:
        """One side per sampling step for ``genome`` (None for a width-only space)."""
        g = self.check_genome(genome)
        if self.resolutions is None:
            return None
        t = g[self.n_choice_genes:]
        return [self.resolutions[sum(1 for x in t if x <= i)] for i in range(self.sampler.calls)]

    def genes_to_uncond(self, genome: Sequence[int]) -> list[float | None] | None:
        """The unconditional pass's width per sampling step (None where no guidance), or None without guidance genes."""
        g = self.check_genome(genome)
        if not self.guidance_genes:
            return None
        out: list[float | None] = []
        for value, n in zip(g[self.n_genes:self.n_genes + self.n_guidance_genes], self.segment_lengths):
            out.extend([None if value == 0 else self.widths[value - 1]] * n)
        return out

    def genes_to_cached(self, genome: Sequence[int]) -> list[bool] | None:
        """Whether each sampling step is cached (the first never is), or None without reuse genes."""
        g = self.check_genome(genome)
        if self.reuse is None:
            return None
        start = self.n_genes + self.n_guidance_genes
        out: list[bool] = []
        for value, n in zip(g[start:self.n_choice_genes], self.segment_lengths):
            out.extend([bool(value)] * n)
        return [False] + out[1:]

    def decode(self, genome: Sequence[int]) -> StepPlan:
        """The schedule a genome stands for: width (and, with resolutions, side; with guidance genes, the
        unconditional pass) per sampling step."""
        sides = self.genes_to_resolutions(genome)
        uncond = self.genes_to_uncond(genome)
        cached = self.genes_to_cached(genome)
        return StepPlan(tuple(self.genes_to_widths(genome)), None if sides is None else tuple(sides),
                        None if uncond is None else tuple(uncond), None if cached is None else tuple(cached),
                        None if self.reuse is None else self.reuse.level)

    def uncond_to_genes(self, uncond: Sequence[float | None]) -> tuple[int, ...]:
        """The guidance genes of a per-step unconditional width list (None: no guidance); each gene's steps must
        agree."""
        uncond = list(uncond)
        if len(uncond) != self.sampler.calls:
            raise DDSMError(f"uncond list has {len(uncond)} entries; the sampler calls the model {self.sampler.calls} times")
        check_widths([u for u in uncond if u is not None], self.widths, where="uncond list")
        genes, start = [], 0
        for n in self.segment_lengths:
            seg = {None if u is None else _index(u, self.widths) for u in uncond[start:start + n]}
            if len(seg) != 1:
                shown = sorted("none" if j is None else f"{self.widths[j]:g}" for j in seg)
                raise DDSMError(f"steps {start}..{start + n - 1} form one gene but have unconditional widths {shown}; "
                                "give each gene's steps one value")
            j = seg.pop()
            genes.append(0 if j is None else j + 1)
            start += n
        return tuple(genes)

    def resolutions_to_genes(self, sides: Sequence[int]) -> tuple[int, ...]:
        """The transition genes of a per-step side list (non-decreasing, values in ``resolutions``)."""
        if self.resolutions is None:
            return ()
        sides = list(sides)
        if len(sides) != self.sampler.calls or any(s not in self.resolutions for s in sides):
            raise DDSMError(f"resolution list {sides} must hold {self.sampler.calls} sides from {list(self.resolutions)}")
        if any(b < a for a, b in zip(sides, sides[1:])):
            raise DDSMError(f"resolution list {sides} decreases; a resolution may only grow")
        return tuple(next((i for i, s in enumerate(sides) if s >= r), self.sampler.calls - 1)
                     for r in self.resolutions[1:])

    def widths_to_genes(self, widths: Sequence[float]) -> tuple[int, ...]:
        """The genome of a per-step width list; every gene's steps must share one width."""
        widths = list(widths)
        if len(widths) != self.sampler.calls:
            raise DDSMError(f"width list has {len(widths)} entries; the sampler calls the model {self.sampler.calls} times")
        check_widths(widths, self.widths, where="width list")
        genome, start = [], 0
        for n in self.segment_lengths:
            seg = set(widths[start:start + n])
            if len(seg) != 1:
                raise DDSMError(f"steps {start}..{start + n - 1} form one gene but have widths {sorted(seg)}")
            genome.append(_index(widths[start], self.widths))
            start += n
        return tuple(genome)


def _index(w: float, valid: Sequence[float]) -> int:
    i = width_index(w, valid)
    if i is None:
        raise DDSMError(f"width {w} is not one of {list(valid)}")
    return i


def check_widths(widths: Sequence[float], valid: Sequence[float], *, where: str = "widths") -> list[float]:
    """Every width in ``valid`` (returned as its canonical value), or a DDSMError naming the unknown ones."""
    bad = sorted({float(w) for w in widths if width_index(w, valid) is None})
    if bad:
        raise DDSMError(f"{where}: width{'s' if len(bad) > 1 else ''} {', '.join(f'{b:g}' for b in bad)} "
                        f"not served by the supernet; valid: {[float(v) for v in valid]}")
    return [float(valid[_index(w, valid)]) for w in widths]
