"""Classification: one class for the whole image (an image-level task).

- Head: :class:`ClassificationHead`, LayerNorm -> Linear over pooled tokens (B, D) -> logits
  (B, K). The head is not run per region (``RegionOutputs`` carries the tokens only).
- Pooling (``head.pool``): ``mean`` of every contextualised token of the image, carried from
  chunk to chunk as a running sum and count in ``XTState`` (:meth:`ClassificationTask.pool`;
  padded tokens do not count); or ``cls``, a learned token (1, 1, D) the context encoder runs
  after the last region (streaming: in its own call over the carried state; whole-sequence
  models: appended to their one call, its output kept in the state as ``cls_output``).
- The answer: :meth:`ClassificationTask.finish` (``XTModel.finish``) after the last chunk.
- No per-region results; training is not supported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn

from xt_engine.config import HeadConfig
from xt_engine.tasks.base import Task

if TYPE_CHECKING:
    from xt_engine.models.xt_model import XTModel, XTState


class ClassificationHead(nn.Module):
    """Image-level logits (B, K) from pooled tokens (B, D): ``cls`` = LayerNorm -> Linear.

    ``cls_token`` (1, 1, D) is only used with ``pool="cls"``: the model runs it through the
    context encoder after the last region and feeds its output here.
    """

    def __init__(self, config: HeadConfig, context_dim: int) -> None:
        super().__init__()
        self.pool = config.pool
        if self.pool == "cls":
            self.cls_token = nn.Parameter(torch.zeros(1, 1, context_dim))
            nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.cls = nn.Sequential(
            nn.LayerNorm(context_dim), nn.Linear(context_dim, config.num_classes)
        )

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.cls(pooled)


class ClassificationTask(Task):
    """One class per image (module docstring)."""

    name: ClassVar[str] = "classification"
    image_level: ClassVar[bool] = True

    def build_head(
        self, config: HeadConfig, context_dim: int, feature_channels: list[int], region_size: int
    ) -> nn.Module:
        return ClassificationHead(config, context_dim)

    def decode(
        self, head: nn.Module, grid: torch.Tensor, features: list[torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        return {}  # image-level: the head runs once, in finish()

    def uses_cls_token(self, config: HeadConfig) -> bool:
        return config.pool == "cls"

    def pool(
        self,
        config: HeadConfig,
        state: XTState,
        tokens: torch.Tensor,
        valid: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, int] | None:
        """Mean pooling only: the running sum (B, D) and count with the ``valid`` tokens of
        ``tokens`` (B, L, D) added."""
        if config.pool != "mean":
            return None
        pooled = tokens if valid is None else tokens[:, valid.to(tokens.device)]
        previous = state.pooled_sum if state.pooled_sum is not None else 0
        return pooled.sum(dim=1) + previous, state.pooled_count + pooled.shape[1]

    def finish(self, model: XTModel, state: XTState) -> torch.Tensor:
        """Image logits (B, K): the head over the cls token's output (whole-sequence models:
        the one kept in the state; streaming: the cls token run through the context encoder
        over the carried state now), or over the mean of the pooled tokens."""
        head = model.config.head
        if model.whole_sequence and self.uses_cls_token(head):
            if state.cls_output is None:
                raise ValueError("finish() of a whole-sequence model needs its one forward call")
            return model.head(state.cls_output)
        if head.pool == "cls":
            token = model.head.cls_token
            assert isinstance(token, torch.Tensor)
            cls = token.expand(state.batch_size, -1, -1)
            no_position = torch.zeros(1, 2, dtype=torch.long, device=cls.device)
            out, _ = model.context_encoder(cls, no_position, state.context)
            return model.head(out[:, -1])
        if state.pooled_sum is None or state.pooled_count == 0:
            raise ValueError("finish() needs at least one chunk")
        return model.head(state.pooled_sum / state.pooled_count)
