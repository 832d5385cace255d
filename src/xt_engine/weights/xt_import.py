"""Import of the released xT checkpoints (iNat-2018 classification, SwinV2 backbones).

The files are torch pickles (read with ``weights_only=True``) holding a state dict at the top
level or under ``state_dict``, keys possibly prefixed ``module.``:

- ``encoder.model.*``: a timm SwinV2 ``features_only`` backbone (stages ``layers_0..3``);
- ``decoder.input_proj`` [D, C]; ``decoder.layers.i.*``: Transformer-XL layers (``attn.qkv``,
  ``attn.proj``, RMSNorm ``input_layernorm`` / ``post_attention_layernorm``, gated MLP) or Mamba
  layers (``norm``, ``mixer.*``);
- ``decoder.cls_token`` [1, 1, D] (appended after the last region) and ``decoder.cls.0``
  (LayerNorm) / ``decoder.cls.1`` (Linear [K, D]).

:func:`convert_xt_state_dict` derives our config from the tensor shapes (the SwinV2 size comes
from the shapes; its window size leaves no trace in the weights, so window 16 is tried first and
``backbone`` overrides it), renames every tensor and
fails unless every tensor of the file is used and every weight of the model is filled.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from xt_engine.config import XTConfig
from xt_engine.errors import CheckpointError
from xt_engine.models import XTModel, create_model
from xt_engine.models.region_encoder import read_state_dict

SWINV2_CANDIDATES = (
    "swinv2_tiny_window16_256",
    "swinv2_tiny_window8_256",
    "swinv2_small_window16_256",
    "swinv2_small_window8_256",
    "swinv2_base_window16_256",
    "swinv2_base_window8_256",
)
_RENAMES = (
    ("encoder.model.", "region_encoder.backbone."),
    ("decoder.input_proj.", "input_proj."),
    ("decoder.layers.", "context_encoder.layers."),
    ("decoder.cls_token", "head.cls_token"),
    ("decoder.cls.", "head.cls."),
)
# model entries that the released files do not carry and that keep their construction values
_NOT_IN_FILE = ("pixel_mean", "pixel_std")


def _rename(key: str) -> str | None:
    for old, new in _RENAMES:
        if key.startswith(old):
            return new + key[len(old) :]
    return None


def convert_xt_state_dict(
    state: dict[str, torch.Tensor],
    *,
    backbone: str | None = None,
    region_size: int = 256,
    num_heads: int | None = None,
) -> XTModel:
    """A model holding the released weights (see module docstring); raises CheckpointError."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    for required in ("decoder.input_proj.weight", "decoder.cls.1.weight", "decoder.cls_token"):
        if required not in state:
            raise CheckpointError(
                f"not an xT checkpoint: {required} is missing",
                "pass a released xT classification checkpoint (.pth)",
            )
    dim, in_channels = state["decoder.input_proj.weight"].shape
    layer_ids = {int(m.group(1)) for k in state if (m := re.match(r"decoder\.layers\.(\d+)\.", k))}
    is_mamba = "decoder.layers.0.mixer.in_proj.weight" in state
    context: dict[str, object] = {
        "kind": "mamba" if is_mamba else "transformer_xl",
        "dim": int(dim),
        "depth": len(layer_ids),
        "num_heads": num_heads or max(1, int(dim) // 64),
        "final_norm": False,
        **({"layout": "xt"} if is_mamba else {}),
        "memory_tokens": 4096,
    }
    if not is_mamba:
        context["mlp_ratio"] = state["decoder.layers.0.mlp.gate_proj.weight"].shape[0] / dim
    head = {
        "task": "classification",
        "num_classes": int(state["decoder.cls.1.weight"].shape[0]),
        "pool": "cls",
    }
    renamed = {}
    unused = []
    for key, value in state.items():
        new = _rename(key)
        (unused.append(key) if new is None else renamed.__setitem__(new, value))
    if unused:
        raise CheckpointError(
            f"{len(unused)} tensors of the xT file have no place in the model (e.g. {unused[:3]})",
            "check that the file is a released xT classification checkpoint",
        )
    errors = []
    for name in [backbone] if backbone else SWINV2_CANDIDATES:
        config = XTConfig.from_dict(
            {
                "tiling": {"region_size": region_size},
                "region_encoder": {"name": name, "in_chans": 3},
                "context_encoder": context,
                "head": head,
            }
        )
        model = create_model(config)
        own = model.state_dict()
        missing = [
            k
            for k in own
            if k not in renamed and not k.endswith(_NOT_IN_FILE) and not _is_derived_buffer(k)
        ]
        wrong = [
            k
            for k, v in renamed.items()
            if (k in own and own[k].shape != v.shape)
            or (k not in own and not _is_derived_buffer(k))
        ]
        if missing or wrong:
            errors.append(
                f"{name}: {len(missing)} missing, {len(wrong)} unplaced/wrong shape "
                f"(e.g. {(missing + wrong)[:2]})"
            )
            continue
        model.load_state_dict({k: v for k, v in renamed.items() if k in own}, strict=False)
        if model.region_encoder.channels[-1] != in_channels:
            raise CheckpointError(
                f"decoder.input_proj takes {in_channels} channels but {name} "
                f"gives {model.region_encoder.channels[-1]}"
            )
        return model.eval()
    raise CheckpointError(
        "the xT file fits none of the backbones tried: " + "; ".join(errors),
        "name the backbone with --backbone (a timm SwinV2 name)",
    )


def _is_derived_buffer(key: str) -> bool:
    """Buffers timm recomputes at construction (SwinV2 relative position tables, masks)."""
    return key.endswith(("relative_position_index", "relative_coords_table", "attn_mask"))


def import_xt_checkpoint(
    path: str | Path, *, backbone: str | None = None, region_size: int = 256
) -> XTModel:
    """Read a released xT ``.pth`` file and return the converted model."""
    return convert_xt_state_dict(read_state_dict(path), backbone=backbone, region_size=region_size)
