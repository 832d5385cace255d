"""How a model's context runs over the regions of an image: one causal pass, or two passes.

Both generators follow the model's :class:`~.schedule.ContextSchedule`: they yield
``(regions, outputs)`` once per step (whole context chunks, see :mod:`.schedule`) in raster
order, check the cancel token between steps (raising :class:`Cancelled`), and hold at most one
step of pixels and features plus one read-ahead step in memory. Which pass a model takes is a
capability its context encoder declares (``passes``: ``causal`` or ``two_pass``), never a type
check.

Two passes (bidirectional context): pass 1 runs the backward encoder over the chunks in
*reverse* raster order and caches its outputs (L tokens x D per region, float32) in a temporary
file on disk (:mod:`.token_cache`); pass 2 runs in raster order: region encoder again, forward
encoder, merge with the cached backward outputs, head. The token cache costs ``tokens per region x D x 4``
bytes per region on disk and nothing in RAM. The region encoder runs twice, except over the
first steps, whose pass-1 outputs are kept in memory within a budget (:mod:`.feature_cache`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext

import numpy as np
import torch

from xt_engine.errors import Cancelled, InputError
from xt_engine.models import RegionOutputs, XTModel, XTState
from xt_engine.runtime.cancel import CancelToken
from xt_engine.runtime.feature_cache import FeatureCache
from xt_engine.runtime.region_reader import Batch, RegionReader
from xt_engine.runtime.schedule import (
    backward_chunk,
    causal_chunk,
    forward_chunk,
)
from xt_engine.runtime.token_cache import TokenCache
from xt_engine.tiling import Region

Step = list[Sequence[int]]  # whole context chunks (grid indices of their regions)
TOKEN_CACHE_PREFIX = "xt-token-cache-"


def check_cache_space(cache_dir: str | os.PathLike[str] | None, needed: int) -> None:
    """An InputError before the run when the two-pass token cache (``needed`` bytes) does not
    fit in the free space of ``cache_dir`` (default: the temporary folder)."""
    where = str(cache_dir or tempfile.gettempdir())
    free = shutil.disk_usage(where).free
    if needed > free:
        raise InputError(
            f"the two-pass token cache needs {needed / 2**20:.0f} MiB but {where} has "
            f"{free / 2**20:.0f} MiB free",
            "free space there, or pass --cache-dir on a larger disk",
        )


def _encode(
    model: XTModel, pixels: torch.Tensor, rc: torch.Tensor, batch: int, step_tokens: int | None
) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """``model.encode`` over a step's regions in batches of ``batch`` regions, concatenated."""
    n = pixels.shape[1]
    parts = [
        model.encode(pixels[:, i : i + batch], rc[i : i + batch], step_tokens)
        for i in range(0, n, batch)
    ]
    if len(parts) == 1:
        return parts[0]
    features = [torch.cat([p[0][k] for p in parts], dim=0) for k in range(len(parts[0][0]))]
    tokens = torch.cat([p[1] for p in parts], dim=1)
    positions = torch.cat([p[2] for p in parts], dim=0)
    return features, tokens, positions


def _decode(
    model: XTModel,
    regions: list[Region],
    context: torch.Tensor,
    features: list[torch.Tensor],
    attention: torch.Tensor | None,
    batch: int,
    cancel: CancelToken | None,
    skip: set[int],
    autocast: Callable[[], AbstractContextManager[object]],
) -> Iterator[tuple[list[Region], RegionOutputs]]:
    """``model.decode`` over a step's regions in batches of ``batch`` regions, yielded batch by
    batch (the cancel token is checked between them; batches wholly in ``skip`` are not
    decoded). The step's context is complete before its first batch, so stopping between
    batches loses nothing a resume cannot replay."""
    n = len(regions)
    per_region = context.shape[1] // n
    for i in range(0, n, batch):
        if i and cancel is not None and cancel.cancelled:
            raise Cancelled("run cancelled")
        part = regions[i : i + batch]
        if {r.index for r in part} <= skip:
            continue
        s = slice(i * per_region, (i + len(part)) * per_region)
        with torch.inference_mode(), autocast():
            outputs = model.decode(
                context[:, s],
                [f[i : i + batch] for f in features],
                None if attention is None else attention[:, s],
            )
        yield part, outputs  # outside the modes: the consumer runs in its own


def reversed_enumerate(
    steps: list[Step], batches: Iterator[Batch]
) -> Iterator[tuple[int, tuple[Step, Batch]]]:
    """``(number, (step, batch))`` from the last step to the first; ``batches`` are in that
    (reverse) order already."""
    numbers = range(len(steps) - 1, -1, -1)
    yield from zip(numbers, zip(steps[::-1], batches, strict=True), strict=True)


def _indices(step: Step) -> list[int]:
    return [i for chunk in step for i in chunk]


def causal_pass(
    model: XTModel,
    reader: RegionReader,
    steps: list[Step],
    batch: int,
    cancel: CancelToken | None,
    need_attention: bool,
    skip: set[int] | None = None,
    autocast: Callable[[], AbstractContextManager[object]] = nullcontext,
    final_state: list[XTState] | None = None,
) -> Iterator[tuple[list[Region], RegionOutputs]]:
    """One pass in raster order, the context state carried from chunk to chunk. Steps whose
    regions are all in ``skip`` (written by an interrupted run) only advance the context.
    The state after the last step is appended to ``final_state`` (classification).

    A whole-sequence model (``model.whole_sequence``) has one step with one chunk: it runs as
    one ``model.forward`` call over every region (its own conventions: token order, cls)."""
    state = model.init_state(1, reader.device)
    stateless = getattr(model.context_encoder, "stateless", False)
    whole = getattr(model, "whole_sequence", False)
    skip = skip or set()
    steps = [s for s in steps if not (stateless and set(_indices(s)) <= skip)]
    order = [_indices(s) for s in steps]
    per_region = model.token_grid[0] * model.token_grid[1]
    for step, (regions, pixels, rc) in zip(steps, reader.batches(order, cancel), strict=True):
        if whole:
            with torch.inference_mode(), autocast():
                outputs, state = model(
                    pixels, rc, state, need_attention=need_attention, step_tokens=reader.step_tokens
                )
            yield regions, outputs
            continue
        with torch.inference_mode(), autocast():
            features, tokens, positions = _encode(model, pixels, rc, batch, reader.step_tokens)
            valid = reader.valid_tokens(regions, model.token_grid, tokens)
            done_already = {r.index for r in regions} <= skip
            outs, received = [], []
            at = 0
            for chunk in step:
                s = slice(at * per_region, (at + len(chunk)) * per_region)
                out, state, att = causal_chunk(
                    model,
                    tokens[:, s],
                    positions[s],
                    state,
                    valid[s],
                    need_attention and not done_already,
                )
                outs.append(out)
                received.append(att)
                at += len(chunk)
            context = torch.cat(outs, dim=1)
            attention = (
                torch.cat(received, dim=1)  # type: ignore[arg-type]
                if need_attention and not done_already
                else None
            )
        yield from _decode(
            model, regions, context, features, attention, batch, cancel, skip, autocast
        )
    if final_state is not None:
        final_state.append(state)


def two_pass(
    model: XTModel,
    reader: RegionReader,
    steps: list[Step],
    batch: int,
    cancel: CancelToken | None,
    need_attention: bool = False,
    skip: set[int] | None = None,
    autocast: Callable[[], AbstractContextManager[object]] = nullcontext,
    cache_dir: str | os.PathLike[str] | None = None,
    feature_budget: int = 0,
) -> Iterator[tuple[list[Region], RegionOutputs | None]]:
    """Bidirectional context in two passes (see the module docstring); pass-1 steps are
    yielded as ``(regions, None)`` so callers can report progress. The token cache lives in
    a temporary folder under ``cache_dir`` (default: the system's), removed on every exit
    but a kill; its size is checked against the free space there first. Pass 1's encoder
    outputs of the first steps are kept for pass 2 within ``feature_budget`` bytes
    (:mod:`.feature_cache`): those steps are read and encoded once."""
    context = model.context_encoder
    per_region = model.token_grid[0] * model.token_grid[1]
    dim = model.config.context_encoder.dim
    order = [_indices(s) for s in steps]
    # cache rows are positions in the run's sequence (a foreground run leaves regions out)
    starts = np.cumsum([0] + [len(o) for o in order]).tolist()
    length = starts[-1]
    check_cache_space(cache_dir, length * per_region * dim * 4)
    with (
        tempfile.TemporaryDirectory(prefix=TOKEN_CACHE_PREFIX, dir=cache_dir) as tmp,
        TokenCache(tmp, length, per_region, dim) as cache,
    ):
        kept = FeatureCache([len(o) for o in order], feature_budget)
        fwd_state, bwd_state = context.init_state(1, reader.device, torch.float32)
        for number, (step, (regions, pixels, rc)) in reversed_enumerate(
            steps, reader.batches(order[::-1], cancel)
        ):
            with torch.inference_mode(), autocast():
                features, tokens, positions = _encode(model, pixels, rc, batch, reader.step_tokens)
                kept.offer(number, (regions, features, tokens, positions, reader.missing))
                del features
                valid = reader.valid_tokens(regions, model.token_grid, tokens)
                outs: list[torch.Tensor] = []
                at = len(regions)
                for chunk in step[::-1]:
                    s = slice((at - len(chunk)) * per_region, at * per_region)
                    out, bwd_state = backward_chunk(
                        model, tokens[:, s], positions[s], bwd_state, valid[s]
                    )
                    outs.insert(0, out)
                    at -= len(chunk)
                backward = torch.cat(outs, dim=1)
            first, last = starts[number], starts[number + 1]
            cache.write(
                first, backward.float().reshape(len(regions), per_region, dim).cpu().numpy()
            )
            yield regions, None
        fresh = reader.batches(order[kept.kept_steps :], cancel)  # the steps not kept
        for number, step in enumerate(steps):
            first, last = starts[number], starts[number + 1]
            taken = kept.take(number)
            if taken is not None:
                if cancel is not None and cancel.cancelled:
                    raise Cancelled("run cancelled")
                regions, features, tokens, positions, reader.missing = taken
            else:
                regions, pixels, rc = next(fresh)
            with torch.inference_mode(), autocast():
                if taken is None:
                    features, tokens, positions = _encode(
                        model, pixels, rc, batch, reader.step_tokens
                    )
                valid = reader.valid_tokens(regions, model.token_grid, tokens)
                backward = torch.from_numpy(cache.read(first, last)).to(tokens.device)
                backward = backward.reshape(1, -1, dim)
                merged_parts = []
                at = 0
                for chunk in step:
                    s = slice(at * per_region, (at + len(chunk)) * per_region)
                    merged, fwd_state = forward_chunk(
                        model, tokens[:, s], positions[s], fwd_state, backward[:, s], valid[s]
                    )
                    merged_parts.append(merged)
                    at += len(chunk)
                merged = torch.cat(merged_parts, dim=1)
                influence = None
                if need_attention:  # no single attention matrix in two passes: the proxy
                    influence = (merged - tokens).norm(dim=-1) / tokens.norm(dim=-1).clamp_min(1e-6)
            # regions written by an interrupted run are skipped (the state is advanced)
            yield from _decode(
                model, regions, merged, features, influence, batch, cancel, skip or set(), autocast
            )
