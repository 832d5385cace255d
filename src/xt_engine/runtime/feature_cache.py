"""Pass 1's region features kept in memory for pass 2 of a two-pass run, within a budget.

A two-pass (bidirectional) run encodes every region twice: pass 1 (reverse raster order) for
the backward context, pass 2 (raster order) for the forward context and the head, which needs
the region encoder's feature maps. Pass 1 ends with the first steps of the image, which are the
first steps pass 2 needs, so keeping the outputs of pass 1's *last* steps skips pass 2's reading
and encoding of them. :class:`FeatureCache` keeps steps ``0 .. K-1`` for the largest ``K`` whose
features, tokens and positions fit in ``budget`` bytes (sized from the first step encoded). A
kept step is the same tensors pass 2 would compute (same pixels, same batches), so results do
not change (``tests/xt_engine/test_feature_cache.py``). The kept tensors hold at most the
budget, whatever the image size; the process's peak RSS grows by up to about 1.2x it (the
allocator's overhead: ``benchmarks/feature_cache.py``). Budget 0 keeps nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported by the passes that use this; `xt --help` need not
    import torch

    from xt_engine.tiling import Region

# what pass 1 keeps of a step: its regions, features (one (N, C, h, w) per level), tokens
# (1, N * tokens, D), token positions (N * tokens, 2) and the reader's masks of pixels without
# data (region index -> (R, R) bool, :attr:`RegionReader.missing`)
Kept = tuple[
    "list[Region]", "list[torch.Tensor]", "torch.Tensor", "torch.Tensor", "dict[int, torch.Tensor]"
]
DEFAULT_FEATURE_CACHE_MIB = 512


def encoded_bytes(
    features: Sequence[torch.Tensor], tokens: torch.Tensor, positions: torch.Tensor
) -> int:
    """Bytes held by one step's encoder outputs."""
    parts = [*features, tokens, positions]
    return sum(t.numel() * t.element_size() for t in parts)


class FeatureCache:
    """Steps of pass 1 kept for pass 2 (see the module docstring). ``step_sizes``: regions
    per step, in raster order."""

    def __init__(self, step_sizes: Sequence[int], budget: int) -> None:
        self.step_sizes = list(step_sizes)
        self.budget = budget
        self.keep_below: int | None = None if budget > 0 else 0  # steps 0 .. K-1 are kept
        self.kept: dict[int, Kept] = {}

    def offer(self, number: int, kept: Kept) -> None:
        """Pass 1 has encoded step ``number``; kept if it is one of the first K steps."""
        if self.keep_below is None:  # the first step encoded sizes the rest
            regions = kept[0]
            per_region = encoded_bytes(kept[1], kept[2], kept[3]) / max(len(regions), 1)
            self.keep_below = self._steps_within(per_region)
        if number < self.keep_below:
            self.kept[number] = kept

    def _steps_within(self, per_region: float) -> int:
        total, count = 0.0, 0
        for size in self.step_sizes:
            total += size * per_region
            if total > self.budget:
                break
            count += 1
        return count

    @property
    def kept_steps(self) -> int:
        """How many leading steps pass 2 takes from the cache (0 before pass 1 has sized it)."""
        return self.keep_below or 0

    def take(self, number: int) -> Kept | None:
        """Step ``number``'s kept outputs (released from the cache), or None."""
        return self.kept.pop(number, None)
