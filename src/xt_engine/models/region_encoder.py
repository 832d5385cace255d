"""Region encoder: any timm backbone with ``features_only=True`` behind one adapter.

Input is a batch of regions ``(N, C, R, R)`` float32 already normalised (see
:func:`xt_engine.models.normalize.normalize_pixels`); output is the backbone's feature pyramid as a
list of NCHW tensors, finest first (channel-last backbones such as Swin are permuted to NCHW).

Weights only ever come from local files; ``pretrained`` is never passed to timm, so nothing
reaches for the network.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import timm
import torch
from timm.models import FeatureInfo
from torch import nn

from xt_engine.config import RegionEncoderConfig
from xt_engine.errors import CheckpointError, ConfigError
from xt_engine.models.depthwise import use_fast_depthwise_backward


class RegionEncoder(nn.Module):
    """Wraps ``timm.create_model(name, features_only=True)``.

    Attributes:
        channels: channel count of each pyramid level, finest first.
        reductions: stride of each level relative to the region, finest first.
    """

    def __init__(self, config: RegionEncoderConfig, region_size: int) -> None:
        super().__init__()
        self.config = config
        try:
            self.backbone = _create_backbone(config, region_size)
        except RuntimeError as err:  # timm raises RuntimeError for unknown names
            raise ConfigError(
                f"region_encoder.name={config.name!r} is not a timm model with features_only",
                'run `python -c "import timm; print(timm.list_models())"` for valid names',
            ) from err
        # features_only models carry a FeatureInfo (nn.Module types attributes as Tensor | Module)
        info = cast(FeatureInfo, self.backbone.feature_info)
        self.channels: list[int] = list(info.channels())
        self.reductions: list[int] = list(info.reduction())
        self._channels_last = getattr(self.backbone, "output_fmt", "NCHW") == "NHWC"
        use_fast_depthwise_backward(self.backbone)  # training on the CPU; forward unchanged
        if config.weights:
            load_backbone_weights(self.backbone, config.weights)

    def forward(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        """``pixels`` (N, C, R, R) -> pyramid ``[(N, C_i, R / s_i, R / s_i), ...]`` finest first."""
        features = self.backbone(pixels)
        if self._channels_last:
            features = [f.permute(0, 3, 1, 2).contiguous() for f in features]
        return list(features)


def _create_backbone(config: RegionEncoderConfig, region_size: int) -> nn.Module:
    """Build the timm model; models with a fixed input size (ViT, Swin, Hiera) get ``img_size``."""
    try:
        return timm.create_model(
            config.name,
            pretrained=False,
            features_only=True,
            in_chans=config.in_chans,
            img_size=region_size,
        )
    except TypeError:  # the constructor takes no img_size: a fully convolutional backbone
        return timm.create_model(
            config.name, pretrained=False, features_only=True, in_chans=config.in_chans
        )


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a plain state dict from ``.safetensors``, ``.pth``/``.pt`` or ``.bin`` (weights only)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist", "pick an existing local file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any decode failure means "not a weights file"
        raise CheckpointError(
            f"{path} is not a readable weights file ({type(err).__name__})",
            "pass a .safetensors, .pth or .bin file holding a state dict",
        ) from err
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(
            f"{path} does not hold a state dict of tensors", "export model.state_dict()"
        )
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> None:
    """Load a timm (non-features_only) state dict into a ``features_only`` backbone.

    Classifier keys (``head.*``, ``fc.*``, ``classifier.*``) are dropped; every remaining backbone
    parameter must be present with the right shape, or a CheckpointError names what is missing.
    """
    state = read_state_dict(path)
    own = backbone.state_dict()
    remapped: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        for candidate in (key, key.replace(".", "_", 1)):
            if candidate in own:
                remapped[candidate] = value
                break
    missing = [k for k in own if k not in remapped]
    wrong = [k for k, v in remapped.items() if v.shape != own[k].shape]
    if missing or wrong:
        detail = f"{len(missing)} missing (e.g. {missing[:2]})" if missing else ""
        if wrong:
            detail += f" {len(wrong)} with wrong shape (e.g. {wrong[0]}: "
            detail += f"{tuple(remapped[wrong[0]].shape)} vs {tuple(own[wrong[0]].shape)})"
        raise CheckpointError(
            f"weights in {path} do not fit backbone: {detail.strip()}",
            "use weights saved from the same timm model name and in_chans",
        )
    backbone.load_state_dict(remapped)
