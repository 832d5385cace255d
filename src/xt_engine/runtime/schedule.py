"""The context schedule: how the regions of an image meet the context encoder.

One answer per input: what the context sees is decided by the model's config alone, never by
the batch size, the device or where a run was resumed.

- **Context chunks.** The region sequence (raster order) is cut into chunks of
  ``context_encoder.chunk_regions`` regions, aligned at region 0. A chunk is one call of the
  context encoder; its state (memory, scan state) is carried to the next chunk. Models whose
  context cannot be streamed exactly (:attr:`XTModel.whole_sequence`: xT's image-wide token
  order, xT's Mamba layout) get one chunk holding every region, and images longer than
  ``context_encoder.max_sequence_tokens`` tokens are refused (never streamed wrongly).
- **Steps.** The region encoder and the head run on batches of ``batch_size`` regions, a pure
  throughput knob: a step holds ``max(1, batch_size // chunk_regions)`` whole chunks; its
  regions are encoded in batches of ``batch_size``, its chunks go through the context one by
  one, and its regions are decoded in batches of ``batch_size``. Cancelling and resuming happen
  between steps, so a resumed run replays the same chunks.
- **Foreground.** A run may leave out regions without foreground (tissue, data: see
  :mod:`.foreground`): the sequence is then the foreground regions in raster order (``order``),
  chunked as above, each keeping its true grid position (distances stay physical).
- **Padding.** A border region reads past the image (or ROI) edge; those pixels take
  ``tiling.pad_value`` and the tokens whose patch lies wholly there are left out of the context:
  they are neither keys nor part of the carried state (:func:`content_tokens`), and they keep
  their own (context-free) features for the head, whose output there is cropped anyway.

The in-memory path (:func:`forward_regions`, used by the trainer and its validation) runs the
same chunk functions (:func:`causal_chunk`, :func:`backward_chunk`, :func:`forward_chunk`) as the
streaming passes of :mod:`.passes`, so training computes what inference computes.

Shapes: tokens (B, L, D) with L = regions x tokens per region (region by region, raster order
inside each region); positions (L, 2); ``valid`` (L,) bool.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from xt_engine.errors import InputError
from xt_engine.models import RegionOutputs, XTModel, XTState
from xt_engine.tiling import Region


@dataclass(frozen=True)
class ContextSchedule:
    """Context chunks over the regions ``order`` (grid indices in raster order; None: all
    ``num_regions``) in runs of ``chunk_regions`` (see module docstring)."""

    num_regions: int
    chunk_regions: int
    order: tuple[int, ...] | None = None

    @classmethod
    def for_model(
        cls, model: XTModel, num_regions: int, order: Sequence[int] | None = None
    ) -> ContextSchedule:
        """The model's schedule over ``order`` (None: every region); whole-sequence models get
        one chunk, or an InputError when the image's tokens exceed ``max_sequence_tokens``."""
        cfg = model.config.context_encoder
        run = tuple(order) if order is not None else None
        count = num_regions if run is None else len(run)
        if not getattr(model, "whole_sequence", False):
            return cls(num_regions, cfg.chunk_regions, run)
        tokens = count * model.token_grid[0] * model.token_grid[1]
        if tokens > cfg.max_sequence_tokens:
            raise InputError(
                f"this model's context runs over the whole image in one call (xT's layout), "
                f"and {count} regions make {tokens} tokens, more than its "
                f"max_sequence_tokens={cfg.max_sequence_tokens}",
                "run it on a smaller image, ROI or coarser --level, or use a streamable model",
            )
        return cls(num_regions, max(1, count), run)

    @property
    def length(self) -> int:
        """Regions in the sequence."""
        return self.num_regions if self.order is None else len(self.order)

    def spans(self) -> list[range]:
        """Positions in the sequence of each context chunk."""
        k, n = self.chunk_regions, self.length
        return [range(i, min(i + k, n)) for i in range(0, n, k)]

    def chunks(self) -> list[Sequence[int]]:
        """Grid indices of the regions of each context chunk."""
        if self.order is None:
            return list(self.spans())
        return [self.order[span.start : span.stop] for span in self.spans()]

    def steps(self, batch_size: int) -> list[list[Sequence[int]]]:
        """Whole chunks grouped into steps of ``max(1, batch_size // chunk_regions)`` chunks."""
        if batch_size < 1:
            raise InputError(f"batch_size={batch_size} < 1", "use a batch size of 1 or more")
        per_step = max(1, batch_size // self.chunk_regions)
        chunks = self.chunks()
        return [chunks[i : i + per_step] for i in range(0, len(chunks), per_step)]


def content_tokens(
    regions: list[Region], content_box: tuple[int, int, int, int], token_grid: tuple[int, int]
) -> torch.Tensor:
    """(N * gh * gw,) bool: True where a token's patch overlaps real content.

    ``content_box`` (y0, x0, y1, x1) in level pixels: the pixels a run may read (the ROI, or
    the ROI widened by the overlap margin and clipped to the image). Each region reads
    ``region.size`` px from ``(read_y0, read_x0)``; token (i, j) covers
    ``[i s, (i + 1) s) x [j s, (j + 1) s)`` of that window, ``s = size / gh``.
    """
    gh, gw = token_grid
    masks = []
    for r in regions:
        s = r.size // gh
        ys = r.read_y0 + torch.arange(gh) * s
        xs = r.read_x0 + torch.arange(gw) * s
        rows = (ys + s > content_box[0]) & (ys < content_box[2])
        cols = (xs + s > content_box[1]) & (xs < content_box[3])
        masks.append((rows[:, None] & cols[None, :]).reshape(-1))
    return torch.cat(masks) if masks else torch.zeros(0, dtype=torch.bool)


def _on_valid(
    run: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, Any]],
    tokens: torch.Tensor,
    positions: torch.Tensor,
    valid: torch.Tensor | None,
) -> tuple[torch.Tensor, Any]:
    """``run(tokens, positions) -> (out, extra)`` over the valid tokens only; the others keep
    their input values (``extra`` is passed through)."""
    if valid is None or bool(valid.all()):
        return run(tokens, positions)
    index = valid.nonzero().squeeze(1).to(tokens.device)
    out_valid, extra = run(tokens[:, index], positions[index.to(positions.device)])
    out = tokens.clone()
    out[:, index] = out_valid.to(out.dtype)
    return out, extra


def causal_chunk(
    model: XTModel,
    tokens: torch.Tensor,
    positions: torch.Tensor,
    state: XTState,
    valid: torch.Tensor | None = None,
    need_attention: bool = False,
) -> tuple[torch.Tensor, XTState, torch.Tensor | None]:
    """One context chunk of a causal (one-pass) model: -> tokens (B, L, D), next state, and
    the attention received per token (B, L) when asked (0 on padded tokens)."""
    received: list[torch.Tensor | None] = [None]

    def run(t: torch.Tensor, p: torch.Tensor) -> tuple[torch.Tensor, Any]:
        out, ctx, att = model.contextualize(t, p, state.context, need_attention)
        received[0] = att
        return out, ctx

    out, ctx_state = _on_valid(run, tokens, positions, valid)
    attention = _scatter(received[0], tokens, valid)
    next_state = XTState(ctx_state, state.batch_size, state.pooled_sum, state.pooled_count)
    _carry_extras(state, next_state)
    pooled = model.task.pool(model.config.head, state, out, valid)
    if pooled is not None:  # the task's image-level answer pools the valid tokens
        next_state.pooled_sum, next_state.pooled_count = pooled
    return out, next_state, attention


def _carry_extras(old: XTState, new: XTState) -> None:
    """Fields a model keeps in its state beyond the context (e.g. a whole-sequence model's cls
    output) follow the state."""
    for name, value in vars(old).items():
        if name not in ("context", "batch_size", "pooled_sum", "pooled_count"):
            setattr(new, name, value)


def _scatter(
    values: torch.Tensor | None, tokens: torch.Tensor, valid: torch.Tensor | None
) -> torch.Tensor | None:
    """Per-valid-token values (B, Lv) -> (B, L) with zeros on padded tokens."""
    if values is None or valid is None or bool(valid.all()):
        return values
    full = values.new_zeros(tokens.shape[:2])
    full[:, valid.to(values.device)] = values
    return full


def backward_chunk(
    model: XTModel,
    tokens: torch.Tensor,
    positions: torch.Tensor,
    state: Any,
    valid: torch.Tensor | None = None,
) -> tuple[torch.Tensor, Any]:
    """The backward direction of a two-pass (bidirectional) model over one chunk (chunks are
    fed in reverse raster order): -> backward tokens (B, L, D) in the chunk's order, state."""
    context = model.context_encoder
    return _on_valid(
        lambda t, p: context.backward_direction(t, p, state),  # type: ignore[operator]
        tokens,
        positions,
        valid,
    )


def forward_chunk(
    model: XTModel,
    tokens: torch.Tensor,
    positions: torch.Tensor,
    state: Any,
    backward: torch.Tensor,
    valid: torch.Tensor | None = None,
) -> tuple[torch.Tensor, Any]:
    """The forward direction over one chunk, merged with that chunk's backward tokens:
    -> contextualised tokens (B, L, D), forward state. Padded tokens keep their input."""
    context = model.context_encoder
    forward, state = _on_valid(
        lambda t, p: context.forward_direction(t, p, state),  # type: ignore[operator]
        tokens,
        positions,
        valid,
    )
    merged = context.merge(forward, backward.to(forward.dtype))  # type: ignore[operator]
    if valid is not None and not bool(valid.all()):
        merged = torch.where(valid.to(merged.device)[None, :, None], merged, tokens)
    return merged, state


def two_pass_model(model: XTModel) -> bool:
    """Whether the model's context runs in two passes (a bidirectional context declares it)."""
    return getattr(model.context_encoder, "passes", "causal") == "two_pass"


def forward_regions(
    model: XTModel,
    pixels: torch.Tensor,
    region_rc: torch.Tensor,
    valid: torch.Tensor | None = None,
    truncate: bool = False,
) -> RegionOutputs:
    """Every region of B crops at once, the context over the model's chunks as in inference.

    Args:
        pixels: (B, N, C, R, R) in [0, 1], regions in raster order.
        region_rc: (N, 2) each region's (row, col).
        valid: (B, N * gh * gw) or (N * gh * gw,) bool, tokens with real content (None: all).
            Rows that differ across the batch run the context one crop at a time.
        truncate: detach the carried state between chunks (truncated back-propagation).

    Returns the head's outputs for the B * N regions, batch-major (see :class:`RegionOutputs`).
    """
    b, n = pixels.shape[:2]
    if valid is not None and valid.dim() == 2 and b > 1 and not bool((valid == valid[:1]).all()):
        parts = [
            forward_regions(model, pixels[i : i + 1], region_rc, valid[i], truncate)
            for i in range(b)
        ]
        return _concat_outputs(parts, b)
    if valid is not None and valid.dim() == 2:
        valid = valid[0]
    features, tokens, positions = model.encode(pixels, region_rc)
    per_region = tokens.shape[1] // n
    chunks = ContextSchedule.for_model(model, n).spans()

    def span(chunk: range) -> slice:
        return slice(chunk.start * per_region, chunk.stop * per_region)

    def part(mask: torch.Tensor | None, chunk: range) -> torch.Tensor | None:
        return None if mask is None else mask[span(chunk)]

    outs: list[torch.Tensor] = []
    if two_pass_model(model):
        fwd_state, bwd_state = model.context_encoder.init_state(b, tokens.device, tokens.dtype)
        backward: dict[int, torch.Tensor] = {}
        for i in reversed(range(len(chunks))):
            s = span(chunks[i])
            backward[i], bwd_state = backward_chunk(
                model, tokens[:, s], positions[s], bwd_state, part(valid, chunks[i])
            )
            bwd_state = _detach(bwd_state) if truncate else bwd_state
        for i, chunk in enumerate(chunks):
            s = span(chunk)
            out, fwd_state = forward_chunk(
                model, tokens[:, s], positions[s], fwd_state, backward[i], part(valid, chunk)
            )
            fwd_state = _detach(fwd_state) if truncate else fwd_state
            outs.append(out)
    else:
        state = model.init_state(b, tokens.device)
        for chunk in chunks:
            s = span(chunk)
            out, state, _ = causal_chunk(
                model, tokens[:, s], positions[s], state, part(valid, chunk)
            )
            if truncate:
                state.context = _detach(state.context)
            outs.append(out)
    return model.decode(torch.cat(outs, dim=1), features, None)


def _concat_outputs(parts: list[RegionOutputs], batch: int) -> RegionOutputs:
    """Per-crop outputs (1 crop each) -> one RegionOutputs over the batch (batch-major)."""
    merged = RegionOutputs(tokens=torch.cat([p.tokens for p in parts], dim=0))
    for key in ("logits", "heatmap", "log_size", "attention"):
        values = [getattr(p, key) for p in parts]
        if values[0] is not None:
            setattr(merged, key, torch.cat(values, dim=0))
    return merged


def _detach(value: object) -> Any:
    """A context state with every tensor detached (dataclasses, lists and tuples)."""
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, list | tuple):
        return type(value)(_detach(v) for v in value)
    if hasattr(value, "__dataclass_fields__"):
        for name in value.__dataclass_fields__:
            setattr(value, name, _detach(getattr(value, name)))
    return value
