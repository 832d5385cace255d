"""The composed xT model: region encoder -> context encoder -> head, and the task.

``XTModel`` receives its parts (it builds nothing itself; see :mod:`.registry`): the three
modules and the :class:`~xt_engine.tasks.Task` that owns the head, which decides what the head
outputs per region, what the state pools for an image-level answer and what :meth:`finish`
returns (:mod:`xt_engine.tasks`). It streams: call :meth:`init_state` once per image, then
:meth:`forward` on chunks of regions in raster order, passing the returned state back in; for
image-level tasks (classification), :meth:`finish` gives the image logits.
The three stages are also callable one by one (:meth:`encode`, :meth:`contextualize`,
:meth:`decode`) for engines that run the context in two passes (bidirectional streaming).

Whole-sequence models (:attr:`XTModel.whole_sequence`: ``context_encoder.token_order`` "image"
or the mamba layout "xt", i.e. imported xT checkpoints) cannot be streamed exactly: they take
all regions of an image in ONE context call (``forward`` or ``contextualize``), then ``finish``.
Their context sees the tokens in xT's order (the region maps stitched into one image map,
flattened row-major; outputs come back region by region), and with ``head.pool`` "cls" the cls
token is appended to that same sequence (no position embedding); its output is kept in the
returned context state (:class:`WholeSequenceState`, read as ``XTState.cls_output``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from xt_engine.config import XTConfig
from xt_engine.errors import InputError
from xt_engine.models.context import ContextEncoder, sincos_position_embedding
from xt_engine.models.region_encoder import RegionEncoder
from xt_engine.tasks import Task

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class XTState:
    """What a model carries between chunks of one image (B images at once)."""

    context: Any
    batch_size: int = 1
    pooled_sum: torch.Tensor | None = None  # (B, D) running sum for mean pooling (Task.pool)
    pooled_count: int = 0

    @property
    def cls_output(self) -> torch.Tensor | None:
        """(B, D): a whole-sequence model's cls token output after its one context call."""
        return getattr(self.context, "cls_output", None)


@dataclass
class WholeSequenceState:
    """Context state of a whole-sequence model after its one call: the encoder's own state,
    and the cls token's output (B, D) when the head pools with ``cls`` (else None)."""

    inner: Any
    cls_output: torch.Tensor | None = None


@dataclass
class RegionOutputs:
    """Per-region outputs of one chunk of N regions of B images (regions batch-major).

    - ``logits`` (B*N, K, R, R): segmentation class logits.
    - ``heatmap`` (B*N, K, R/s, R/s), ``log_size`` (B*N, 2, R/s, R/s): detection.
    - ``attention`` (B*N, gh, gw): per token, the attention it receives from the chunk's
      queries (last context layer, mean over heads and queries): softmax weights for the
      attention kinds (hyper: exact path only), the selective scan's implicit attention
      ``mean_d |alpha_{t,s,d}|`` for mamba; where no attention matrix exists (``none``, hyper
      above its exact threshold, bidirectional two-pass streaming) a documented proxy: how much
      context changed the token, ``|ctx - token| / |token|``. Only filled when asked for.
    - ``tokens`` (B, N*gh*gw, D): the contextualised tokens.
    """

    tokens: torch.Tensor
    logits: torch.Tensor | None = None
    heatmap: torch.Tensor | None = None
    log_size: torch.Tensor | None = None
    attention: torch.Tensor | None = None


class XTModel(nn.Module):
    pixel_mean: torch.Tensor  # (1, C, 1, 1) buffers
    pixel_std: torch.Tensor

    def __init__(
        self,
        config: XTConfig,
        region_encoder: RegionEncoder,
        context_encoder: ContextEncoder,
        head: nn.Module,
        task: Task,
    ) -> None:
        super().__init__()
        self.config = config
        self.region_encoder = region_encoder
        self.context_encoder = context_encoder
        self.head = head
        self.task = task  # stateless, not a module: no parameters, nothing in the state dict
        dim = config.context_encoder.dim
        self.input_proj = nn.Linear(region_encoder.channels[-1], dim)
        enc = config.region_encoder
        default_mean, default_std = (
            (_IMAGENET_MEAN, _IMAGENET_STD) if enc.in_chans == 3 else ((0.5,), (0.5,))
        )
        mean = torch.tensor(enc.mean or default_mean, dtype=torch.float32)
        std = torch.tensor(enc.std or default_std, dtype=torch.float32)
        self.register_buffer("pixel_mean", mean.expand(enc.in_chans).reshape(1, -1, 1, 1).clone())
        self.register_buffer("pixel_std", std.expand(enc.in_chans).reshape(1, -1, 1, 1).clone())

    @property
    def region_size(self) -> int:
        return self.config.tiling.region_size

    @property
    def token_grid(self) -> tuple[int, int]:
        """Patch-token grid (gh, gw) of one region: region_size / deepest stride."""
        side = self.region_size // self.region_encoder.reductions[-1]
        return side, side

    @property
    def whole_sequence(self) -> bool:
        """True when the context cannot be streamed exactly (xT's image-wide token order, or
        xT's Mamba layout): every region of an image goes into one context call."""
        ctx = self.config.context_encoder
        return ctx.token_order == "image" or (ctx.kind == "mamba" and ctx.layout == "xt")

    @property
    def output_stride(self) -> int:
        """Stride of the detection maps relative to the region."""
        return self.region_encoder.reductions[0]

    def init_state(self, batch_size: int = 1, device: torch.device | None = None) -> XTState:
        param = next(self.parameters())
        device = device or param.device
        return XTState(self.context_encoder.init_state(batch_size, device, param.dtype), batch_size)

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """``pixels`` (N, C, R, R) scaled to [0, 1] -> normalised with the config's mean/std."""
        return (pixels - self.pixel_mean) / self.pixel_std

    def encode(
        self, pixels: torch.Tensor, region_rc: torch.Tensor, step_tokens: int | None = None
    ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """(B, N, C, R, R) in [0, 1], (N, 2) -> pyramid of (B*N, C_i, h_i, w_i), tokens
        (B, N*gh*gw, D) with position embedding added, positions (N*gh*gw, 2).

        ``step_tokens``: tokens between neighbouring regions' origins (default ``gh``: regions
        side by side); overlapping regions pass less, so positions stay physical."""
        b, n, c, r, _ = pixels.shape
        features = self.region_encoder(self.normalize(pixels.reshape(b * n, c, r, r)))
        deepest = features[-1]  # (B*N, C, gh, gw)
        _, _, gh, gw = deepest.shape
        tokens = self.input_proj(deepest.flatten(2).transpose(1, 2))  # (B*N, gh*gw, D)
        tokens = tokens.reshape(b, n * gh * gw, -1)
        positions = _token_positions(region_rc, gh, gw, step_tokens)
        ctx = self.config.context_encoder
        pos = sincos_position_embedding(positions, tokens.shape[-1], ctx.position_order)
        if ctx.position_scale != 1.0:
            pos = pos * ctx.position_scale
        return features, tokens + pos.to(tokens.dtype)[None], positions

    def contextualize(
        self, tokens: torch.Tensor, positions: torch.Tensor, state: Any, need_attention: bool
    ) -> tuple[torch.Tensor, Any, torch.Tensor | None]:
        """Context encoder over one chunk: -> tokens (B, L, D), next context state, and the
        attention received per token (B, L) (see :class:`RegionOutputs`) when asked.

        Whole-sequence models (see the module docstring) take every token of the image in
        this one call: ``state`` must be a fresh one, the tokens run in image order (then back
        to the order given), the cls token is appended when the head pools with it, and the
        next state is a :class:`WholeSequenceState`."""
        if not self.whole_sequence:
            return self._run_context(tokens, positions, state, need_attention)
        if isinstance(state, WholeSequenceState):
            raise InputError(
                "this model's context runs over the whole image in one call (xT's layout) "
                "but was given a second chunk",
                "pass every region of the image in one forward call (e.g. --batch-size >= "
                "the number of regions)",
            )
        limit = self.config.context_encoder.max_sequence_tokens
        if tokens.shape[1] > limit:
            raise InputError(
                f"{tokens.shape[1]} tokens exceed this whole-sequence model's "
                f"max_sequence_tokens={limit}",
                "run it on a smaller image, ROI or coarser level",
            )
        order = image_token_order(positions) if self._image_order else None
        if order is not None:
            tokens, positions = tokens[:, order], positions[order]
        cls = None
        if self._cls_in_context:
            token = self.head.cls_token
            assert isinstance(token, torch.Tensor)
            cls = token.to(tokens.dtype).expand(tokens.shape[0], -1, -1)
            tokens = torch.cat([tokens, cls], dim=1)
            positions = torch.cat([positions, positions.new_zeros(1, 2)])
        with_cls = cls is not None
        out, inner, received = self._run_context(tokens, positions, state, need_attention, with_cls)
        next_state = WholeSequenceState(inner)
        if cls is not None:
            next_state.cls_output = out[:, -1]
            out = out[:, :-1]
        if order is not None:
            inverse = torch.empty_like(order)
            inverse[order] = torch.arange(order.numel(), device=order.device)
            out = out[:, inverse]
            received = received[:, inverse] if received is not None else None
        return out, next_state, received

    @property
    def _image_order(self) -> bool:
        return self.config.context_encoder.token_order == "image"

    @property
    def _cls_in_context(self) -> bool:
        return self.whole_sequence and self.task.uses_cls_token(self.config.head)

    def _run_context(
        self,
        tokens: torch.Tensor,
        positions: torch.Tensor,
        state: Any,
        need_attention: bool,
        with_cls: bool = False,
    ) -> tuple[torch.Tensor, Any, torch.Tensor | None]:
        """The context encoder; the attention received (B, L) by the L tokens (the cls token,
        the last one ``with_cls``, is left out as query and key)."""
        if not need_attention:
            out, state = self.context_encoder(tokens, positions, state)
            return out, state, None
        out, state, weights = self.context_encoder.forward_with_attention(tokens, positions, state)
        extra = int(with_cls)
        length = tokens.shape[1] - extra
        if weights is not None:
            keys = weights[:, :length, weights.shape[-1] - length - extra :]
            received = keys[..., :length].mean(dim=1)  # (B, L) over the chunk's queries
        else:
            real, given = out[:, :length], tokens[:, :length]
            received = (real - given).norm(dim=-1) / given.norm(dim=-1).clamp_min(1e-6)
        return out, state, received

    def decode(
        self, context: torch.Tensor, features: list[torch.Tensor], attention: torch.Tensor | None
    ) -> RegionOutputs:
        """Tokens (B, N*gh*gw, D) + pyramid -> per-region outputs (the fields the task's head
        fills, see :meth:`xt_engine.tasks.Task.decode`)."""
        gh, gw = features[-1].shape[-2:]
        bn = features[-1].shape[0]
        grid = context.reshape(bn, gh, gw, -1).permute(0, 3, 1, 2)
        outputs = RegionOutputs(tokens=context)
        if attention is not None:
            outputs.attention = attention.reshape(bn, gh, gw)
        for key, value in self.task.decode(self.head, grid, features).items():
            setattr(outputs, key, value)
        return outputs

    def forward(
        self,
        pixels: torch.Tensor,
        region_rc: torch.Tensor,
        state: XTState,
        need_attention: bool = False,
        step_tokens: int | None = None,
    ) -> tuple[RegionOutputs, XTState]:
        """Run one chunk of N regions of B images.

        Args:
            pixels: (B, N, C, R, R) in [0, 1] (see :meth:`normalize`), regions in raster order.
            region_rc: (N, 2) long, each region's (row, col) in the image's region grid.
            state: the state returned for the previous chunk (or :meth:`init_state`).
            need_attention: also export the per-token attention map.
            step_tokens: see :meth:`encode` (overlapping regions).
        """
        features, tokens, positions = self.encode(pixels, region_rc, step_tokens)
        context, ctx_state, attention = self.contextualize(
            tokens, positions, state.context, need_attention
        )
        next_state = XTState(
            ctx_state, state.batch_size, state.pooled_sum, state.pooled_count + context.shape[1]
        )
        pooled = self.task.pool(self.config.head, state, context)
        if pooled is not None:  # what the task's image-level answer needs (mean pooling)
            next_state.pooled_sum, next_state.pooled_count = pooled
        return self.decode(context, features, attention), next_state

    def finish(self, state: XTState) -> torch.Tensor:
        """Image-level logits (B, K) after the last chunk (image-level tasks only, see
        :meth:`xt_engine.tasks.Task.finish`)."""
        return self.task.finish(self, state)


def image_token_order(positions: torch.Tensor) -> torch.Tensor:
    """(L, 2) token (row, col) -> (L,) long permutation into row-major order over the token
    map of the whole image (xT's stitched map): sorted by row, then column; ties (overlapping
    regions) keep their given order."""
    width = int(positions[:, 1].max()) + 1 if positions.numel() else 1
    key = positions[:, 0].long() * width + positions[:, 1].long()
    return torch.argsort(key, stable=True)


def _token_positions(
    region_rc: torch.Tensor, gh: int, gw: int, step: int | None = None
) -> torch.Tensor:
    """(N, 2) region (row, col) -> (N * gh * gw, 2) global token (row, col), raster in region;
    region origins ``step`` tokens apart (default ``gh`` / ``gw``)."""
    ii, jj = torch.meshgrid(
        torch.arange(gh, device=region_rc.device),
        torch.arange(gw, device=region_rc.device),
        indexing="ij",
    )
    local = torch.stack([ii.reshape(-1), jj.reshape(-1)], dim=1)  # (gh*gw, 2)
    scale = torch.tensor([step or gh, step or gw], device=region_rc.device)
    return (region_rc[:, None, :] * scale + local[None]).reshape(-1, 2)
