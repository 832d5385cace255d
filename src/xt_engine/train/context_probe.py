"""Deep supervision of the context tokens: a training-only linear probe.

A dense head can lower its pixel loss almost entirely through the region encoder's fine
features: background, and every object whose class a region shows, outweigh the few pixels
whose class only context can tell by orders of magnitude, so the gradient that would teach the
context encoder to fetch a far cue is faint. :class:`ContextProbe` reads every contextualised
token (B, L, D) with one linear layer and predicts which classes its patch holds (multi-label);
:func:`probe_loss` is a class-balanced binary cross-entropy, so a rare class whose presence
needs context weighs as much as the background. The probe is not part of the model (nothing in
the checkpoint or at inference); its weights live in the train state for ``--resume``.
``train.context_aux_weight`` scales it (0: off).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from xt_engine.tasks.base import IGNORE_INDEX, masks_to_regions


class ContextProbe(nn.Module):
    """(B, L, D) tokens -> (B, L, K) logits of each class's presence in the token's patch."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.linear(tokens)


def token_targets(
    masks: torch.Tensor, region: int, grid: tuple[int, int], num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks (B, S, S) -> presence (B * N * gh * gw, K) float of each class in each token's
    patch, and (B * N * gh * gw,) bool: the patch holds a real (not padded) pixel; tokens in
    the order of the model's (regions batch-major raster, tokens raster in the region)."""
    gh, gw = grid
    regions = masks_to_regions(masks, region)  # (B*N, R, R)
    bn = regions.shape[0]
    patches = regions.reshape(bn, gh, region // gh, gw, region // gw).permute(0, 1, 3, 2, 4)
    patches = patches.reshape(bn * gh * gw, -1)  # (T, P)
    valid = (patches != IGNORE_INDEX).any(dim=1)
    onehot = F.one_hot(patches.clamp_min(0).long(), num_classes).bool()
    onehot &= (patches != IGNORE_INDEX)[..., None]
    return onehot.any(dim=1).float(), valid


def probe_loss(logits: torch.Tensor, presence: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Class-balanced BCE: per class, the mean loss over the tokens that hold it and the mean
    over those that do not, averaged (one side only where the batch lacks the other); then the
    mean over classes. ``logits`` / ``presence`` (T, K), ``valid`` (T,)."""
    logits, presence = logits[valid].float(), presence[valid]
    if not len(presence):
        return logits.sum() * 0
    losses = F.binary_cross_entropy_with_logits(logits, presence, reduction="none")  # (T, K)
    sides = []
    for side in (presence, 1 - presence):
        count = side.sum(dim=0)  # (K,)
        sides.append(((losses * side).sum(dim=0) / count.clamp_min(1), count > 0))
    (pos, has_pos), (neg, has_neg) = sides
    per_class = (pos * has_pos + neg * has_neg) / (has_pos.float() + has_neg.float())
    return per_class.mean()
