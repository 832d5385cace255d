"""The task interface: what a task (segmentation, detection, classification) owns, end to end.

A :class:`Task` turns the contextualised tokens of regions into results, and trains them:

- **its head**: :meth:`Task.build_head` builds the model's ``head`` module (its parameters are
  a checkpoint's ``head.*``); :meth:`Task.decode` runs it per region and returns the fields it
  fills on :class:`~xt_engine.models.xt_model.RegionOutputs` (``logits``; ``heatmap`` and
  ``log_size``; none for image-level tasks);
- **the image-level answer** (image-level tasks): :meth:`Task.pool` carries what the answer
  needs from chunk to chunk in :class:`~xt_engine.models.xt_model.XTState`, and
  :meth:`Task.finish` gives it after the last chunk (``XTModel.finish``);
- **a region's results** at inference: :meth:`Task.region_results` crops the head's outputs to
  each region's output tile (blending, decoding, border suppression) and returns one
  :class:`RegionResult` per region: what ``RegionDone`` carries and the store writes;
- **training**: :meth:`Task.loss` (its targets made from the label masks), and validation
  metrics as counts summed over batches (:meth:`Task.empty_counts`, :meth:`Task.val_counts`)
  turned into per-class scores (:meth:`Task.val_scores`).

Tasks are stateless: one instance per task (:func:`xt_engine.tasks.task_for`), and every method
reads the model's *current* head config, ``model.config.head`` (``xt infer
--detection-threshold`` replaces it for a run). Code picks behaviour through the task object
and the capabilities it declares, never by comparing task names:

- ``pixel_outputs``: per-pixel class maps (labels, probabilities, seam blending);
- ``image_level``: one answer per image from :meth:`Task.finish`, nothing per region;
- ``trainable``: ``xt train`` trains it (:meth:`Task.loss` and the metrics exist).

Shapes: regions batch-major, N = B images x their regions; ``grid`` (N, D, gh, gw), the
contextualised tokens laid out on each region's patch grid; ``features``, the region encoder
pyramid finest first (``features[0]`` is (N, C0, R / s0, R / s0)); training crops (B, C, S, S)
and label masks (B, S, S) long with ``IGNORE_INDEX`` on padding, S a multiple of R.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
from torch import nn

from xt_engine.config import HeadConfig
from xt_engine.errors import ConfigError

if TYPE_CHECKING:
    from xt_engine.models.xt_model import RegionOutputs, XTModel, XTState
    from xt_engine.runtime.blending import SeamBlender
    from xt_engine.tasks.detection import BorderSuppression
    from xt_engine.tiling import Region
    from xt_engine.train.config import TrainConfig

IGNORE_INDEX = -1  # label mask value of padding (pixels past the image edge): no target there


@dataclass(frozen=True)
class RegionResult:
    """One region's results, cropped to its output tile: what ``RegionDone`` carries and the
    store writes (None: not produced by the task or not asked for).

    - ``labels`` (h, w) uint8 class indices (pixel tasks);
    - ``probabilities`` (K, h, w) float16 softmax of the class logits (pixel tasks, on request);
    - ``detections`` (M, 6) float32 rows ``(y, x, class, score, height, width)``, centres in the
      inference level's pixels (detection).
    """

    labels: np.ndarray | None = None
    probabilities: np.ndarray | None = None
    detections: np.ndarray | None = None


class Task:
    """A task's head, region results and training (module docstring); subclasses override what
    their capabilities need. The defaults: no image-level answer, no per-region results."""

    name: ClassVar[str] = ""
    pixel_outputs: ClassVar[bool] = False
    image_level: ClassVar[bool] = False
    trainable: ClassVar[bool] = False

    def build_head(
        self, config: HeadConfig, context_dim: int, feature_channels: list[int], region_size: int
    ) -> nn.Module:
        """The head for ``config`` over D = ``context_dim`` tokens, a region encoder with
        ``feature_channels`` (finest first) and regions of ``region_size`` px."""
        raise NotImplementedError

    def decode(
        self, head: nn.Module, grid: torch.Tensor, features: list[torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Per-region head outputs from ``grid`` (N, D, gh, gw) and the pyramid: the
        :class:`~xt_engine.models.xt_model.RegionOutputs` fields to set."""
        return head(grid, features)

    def uses_cls_token(self, config: HeadConfig) -> bool:
        """Whether the head has a cls token (1, 1, D) the context encoder runs after the
        regions' tokens (``head.cls_token``)."""
        return False

    def pool(
        self,
        config: HeadConfig,
        state: XTState,
        tokens: torch.Tensor,
        valid: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, int] | None:
        """The running pooled sum (B, D) and token count after a chunk's contextualised
        ``tokens`` (B, L, D) (``valid`` (L,) bool: the tokens that count; None: all), or None
        when the task pools nothing."""
        return None

    def finish(self, model: XTModel, state: XTState) -> torch.Tensor:
        """The image-level answer (B, K) after the last chunk (image-level tasks only)."""
        raise ValueError("finish() is for classification models")

    def region_results(
        self,
        model: XTModel,
        regions: list[Region],
        outputs: RegionOutputs,
        *,
        probabilities: bool = False,
        blender: SeamBlender | None = None,
        suppressor: BorderSuppression | None = None,
    ) -> list[RegionResult]:
        """Each of a decoded batch's ``regions`` (in raster order, their outputs batch-major)
        -> its results cropped to its output tile. ``probabilities``: also the class
        probabilities; ``blender``: blend pixel outputs with the earlier neighbours'
        (overlapping regions); ``suppressor``: drop detections an earlier neighbouring region
        reported. Each task uses the ones it has outputs for."""
        return [RegionResult() for _ in regions]

    def loss(
        self,
        model: XTModel,
        outputs: dict[str, torch.Tensor],
        masks: torch.Tensor,
        cfg: TrainConfig,
        class_weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Scalar training loss of the head ``outputs`` (fields of B * N regions) against the
        label ``masks`` (B, S, S) of the crops they came from."""
        raise self.untrainable()

    def empty_counts(self, config: HeadConfig) -> np.ndarray:
        """Validation counts before the first batch (int64; summed over batches)."""
        raise self.untrainable()

    def val_counts(
        self, model: XTModel, outputs: dict[str, torch.Tensor], masks: torch.Tensor
    ) -> np.ndarray:
        """One validation batch's counts (shaped as :meth:`empty_counts`)."""
        raise self.untrainable()

    def val_scores(self, counts: np.ndarray) -> dict[str, list[float]]:
        """Summed counts -> per-class scores (NaN where undefined)."""
        raise self.untrainable()

    def untrainable(self) -> ConfigError:
        """The error for training a task that cannot be trained."""
        return ConfigError(
            f"training a {self.name} head is not supported yet",
            "train a segmentation or detection model",
        )


def crops_to_regions(crops: torch.Tensor, region: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C, S, S) -> regions (B, N, C, R, R) in raster order and their (N, 2) grid (row, col)."""
    b, c, s, _ = crops.shape
    n = s // region
    regions = crops.reshape(b, c, n, region, n, region).permute(0, 2, 4, 1, 3, 5)
    rc = torch.stack(torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij"), -1)
    return regions.reshape(b, n * n, c, region, region), rc.reshape(-1, 2).to(crops.device)


def masks_to_regions(masks: torch.Tensor, region: int) -> torch.Tensor:
    """(B, S, S) -> (B * N, R, R), regions batch-major in raster order."""
    b, s, _ = masks.shape
    n = s // region
    return masks.reshape(b, n, region, n, region).permute(0, 1, 3, 2, 4).reshape(-1, region, region)
