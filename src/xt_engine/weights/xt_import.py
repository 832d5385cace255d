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
from the shapes; its window size leaves no trace in the weights, so xT's backbone of that size
is taken, window 16 (``swinv2_tiny_window16_256`` ...), and ``backbone`` overrides it), renames
every tensor and fails unless every tensor of the file is used and every weight of the model is
filled.

The imported config carries xT's conventions (checked against the official code's outputs,
tests/xt_engine/test_xt_parity.py), so a saved and reloaded checkpoint computes the same:

- ``num_heads = dim // 128`` (xT's ``LLMLayer`` ignores its configured head count);
- ``norm_eps`` 1e-5 (``LlamaRMSNorm``), ``mlp_activation`` gelu (``LlamaMLP``: down(GELU(gate)
  * up)); qkv with bias, scale head_dim ** -0.5, causal; xT's HyperAttention is exact attention
  up to 4096 keys, so the hyper decoder is imported as kind ``transformer_xl`` (exact; longer
  images, up to ``MAX_SEQUENCE_TOKENS``, stay exact where xT would approximate);
- ``position_order`` col_row (MAE's ``get_2d_sincos_pos_embed``: the first half encodes the
  column), added after ``input_proj``; the cls token gets none;
- ``token_order`` image: the last-stage SwinV2 maps of all regions (no final norm) stitched
  into one map and flattened row-major, the cls token appended at the end of that one sequence
  (a whole-sequence model, see :attr:`XTModel.whole_sequence`), logits from its output via
  ``cls`` (LayerNorm, Linear);
- Mamba: ``layout`` xt (``LN(x) + Mamba(LN(x))``, even blocks on the reversed sequence, cls
  included), no final norm.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from xt_engine.config import XTConfig
from xt_engine.errors import CheckpointError
from xt_engine.models import XTModel, create_model
from xt_engine.models.region_encoder import read_state_dict

# xT's backbones (xt/models/backbones/swin_timm.py), one per size: window 16 at 256 px
SWINV2_CANDIDATES = (
    "swinv2_tiny_window16_256",
    "swinv2_small_window16_256",
    "swinv2_base_window16_256",
    "swinv2_large_window12to16_192to256",
)
# tokens a whole-sequence import runs in one call: a 4096 x 4096 px image at stride 32
# (an iNat crop of 512 px is 256 tokens)
MAX_SEQUENCE_TOKENS = 16384
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
    xt_heads = max(1, int(dim) // 128)
    heads = num_heads or xt_heads
    if num_heads is not None and (num_heads < 1 or dim % num_heads):
        raise CheckpointError(
            f"--num-heads {num_heads} does not divide the decoder width {dim}",
            f"omit --num-heads (xT uses {xt_heads}) or pick a divisor of {dim}",
        )
    context: dict[str, object] = {
        "kind": "mamba" if is_mamba else "transformer_xl",
        "dim": int(dim),
        "depth": len(layer_ids),
        "num_heads": heads,
        "final_norm": False,
        "memory_tokens": 4096,
        "position_order": "col_row",
        "token_order": "image",
        "max_sequence_tokens": MAX_SEQUENCE_TOKENS,
        # xT's: causal, sin-cos positions at 1, no 2-D biases (this project's defaults differ)
        "bidirectional": False,
        "position_scale": 1.0,
        "distance_bias": False,
        "relative_range": 0,
    }
    if is_mamba:
        context["layout"] = "xt"
    else:
        context["mlp_ratio"] = state["decoder.layers.0.mlp.gate_proj.weight"].shape[0] / dim
        context |= {"norm_eps": 1e-5, "mlp_activation": "gelu"}
    head = {
        "task": "classification",
        "num_classes": int(state["decoder.cls.1.weight"].shape[0]),
        "pool": "cls",
    }
    renamed: dict[str, torch.Tensor] = {}
    unused: list[str] = []
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
    path: str | Path,
    *,
    backbone: str | None = None,
    region_size: int = 256,
    num_heads: int | None = None,
) -> XTModel:
    """Read a released xT ``.pth`` file and return the converted model (``num_heads``
    overrides xT's ``dim // 128``)."""
    return convert_xt_state_dict(
        read_state_dict(path), backbone=backbone, region_size=region_size, num_heads=num_heads
    )
