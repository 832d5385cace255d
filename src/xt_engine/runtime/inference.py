"""``run_inference``: the whole image through the model region by region, as a generator.

Memory is bounded by the batch of regions, the context state and one read-ahead batch, never by
the image: pixels are read per region from the source, outputs go straight to the store.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch

from xt_engine.errors import Cancelled, ConfigError, InputError
from xt_engine.io import open_image
from xt_engine.models import XTModel, XTState
from xt_engine.runtime.blending import SeamBlender
from xt_engine.runtime.cancel import CancelToken
from xt_engine.runtime.compiled import compiled_view
from xt_engine.runtime.denormals import flush_denormals, flushing
from xt_engine.runtime.events import Event, Finished, Progress, Started
from xt_engine.runtime.feature_cache import DEFAULT_FEATURE_CACHE_MIB
from xt_engine.runtime.foreground import plan_foreground
from xt_engine.runtime.input_values import (
    check_inputs,
    input_mapping,
    modality_foreground,
    prepare_input,
)
from xt_engine.runtime.passes import TOKEN_CACHE_PREFIX, causal_pass, two_pass
from xt_engine.runtime.precision import PRECISIONS, resolve_precision
from xt_engine.runtime.provenance import input_fingerprint, run_determinants
from xt_engine.runtime.quantized import check_quantize
from xt_engine.runtime.region_events import region_events
from xt_engine.runtime.region_reader import RegionReader, mask_missing
from xt_engine.runtime.resolution import plan_resolution
from xt_engine.runtime.resources import peak_rss_mb, write_error
from xt_engine.runtime.schedule import ContextSchedule, two_pass_model
from xt_engine.runtime.writer import BackgroundWriter
from xt_engine.store.result_store import DETECTIONS_FILE, OutputStore, xt_attrs
from xt_engine.store.safety import StoreLock, check_output, clear_store
from xt_engine.tasks.detection import BorderSuppression
from xt_engine.tiling import RegionGrid


def run_inference(
    image: object,
    model: XTModel,
    *,
    output: str | os.PathLike[str] | None = None,
    level: int | None = 0,
    roi: tuple[int, int, int, int] | None = None,
    batch_size: int = 4,
    device: str | torch.device = "cpu",
    cancel: CancelToken | None = None,
    attention: bool = False,
    resume: bool = False,
    provenance: dict[str, object] | None = None,
    precision: str = "auto",
    overlap: int = 0,
    probabilities: bool = False,
    blend: bool = True,
    overwrite: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    foreground: object = "auto",
    pixel_size: float | None = None,
    pixel_unit: str | None = None,
    compile: bool = False,
    quantize: str = "none",
    feature_cache_mib: int = DEFAULT_FEATURE_CACHE_MIB,
    flush_denormal: bool = True,
) -> Iterator[Event]:
    """Yield events while running ``model`` over ``image`` (a path, array or ImageSource).

    Args:
        output: an OME-Zarr path to write results to (optional: events carry results too).
        level: pyramid level to run on; ``roi`` is ``(y0, x0, y1, x1)`` in that level's pixels.
            ``None``: the level closest to ``pixel_size`` or, without it, to the model's
            ``tiling.pixel_size`` (resampled when no level is within 10%; level 0 with an
            ``XTWarning`` when the image states no pixel size), see
            :mod:`xt_engine.runtime.resolution`.
        pixel_size: a target pixel size in ``pixel_unit`` (default micrometer) that picks the
            level (``level`` must then be None or 0).
        batch_size: regions per region-encoder and head call, a throughput knob only: the
            context runs over the chunks the model's config sets (``chunk_regions``), so any
            batch size, device or resume point gives the same result
            (:mod:`xt_engine.runtime.schedule`).
        attention: also export per-token attention (``RegionDone.attention`` and, with
            ``output``, an ``attention`` image in the store).
        cancel: checked between batches; a cancelled run ends with ``Finished(cancelled=True)``
            and leaves the output store marked incomplete.
        resume: continue an interrupted ``output`` store of the same run: regions it records
            as written are not decoded or written again (the context still reads them, so the
            carried state is the same as in an uninterrupted run). The store must match this
            run's provenance and determinants (weights, chunking, scaling, padding, an input
            fingerprint), or the run is refused naming the field.
        cache_dir: where a two-pass (bidirectional) model keeps its temporary token cache
            (``tokens x D x 4`` bytes per region; checked against the free space before the
            run); default: inside the ``output`` store (removed when the run ends; a killed
            run's leftover is removed by the next run on that store), else the temporary
            folder.
        overwrite: replace an existing result store of this tool at ``output``. Without it an
            existing store is refused (complete: ``overwrite``; interrupted: ``resume`` or
            ``overwrite``); a path that is not a result store of this tool, or is or holds
            the input, is refused whatever the flags (:mod:`xt_engine.store.safety`). The
            store is locked while the run writes it: a second run on it is refused.
        provenance: extra entries for the store's ``xt`` attributes (e.g. checkpoint hash).
        precision: ``auto`` (bf16 autocast on CUDA where supported, else fp16; fp32 on CPU),
            ``fp32``, ``bf16`` or ``fp16`` (CUDA only).
        compile: run the region encoder, input projection and head through ``torch.compile``
            (:mod:`xt_engine.runtime.compiled`): faster once compiled (the first batches of
            each shape pay the compilation), the same labels as eager up to fp32 rounding;
            the model passed is not changed.
        quantize: ``none`` or ``int8`` (with ``compile`` only): the region encoder's linear
            layers as int8 (:mod:`xt_engine.runtime.quantized`, needs torchao); labels agree
            with fp32 closely, not bit for bit, and the store records it (a resume must
            quantise alike).
        flush_denormal: on the CPU, compute with denormal floats flushed to zero on every
            thread torch uses, during the run's steps only (:mod:`.denormals`): much faster on
            flat content, the same labels; the store records it (``cpu_denormals``).
        feature_cache_mib: a two-pass (bidirectional) model keeps the region features of the
            image's first steps from pass 1 for pass 2 within this many MiB of memory, so the
            region encoder runs once over them instead of twice (:mod:`.feature_cache`); the
            results are the same for any value; 0 keeps none.
        overlap: px of real neighbouring pixels each region reads on every side beyond the tile
            it outputs (see :mod:`xt_engine.tiling`): no seams at region borders, at a cost of
            ``(R / (R - 2 overlap))^2`` times the regions. A multiple of half the token stride
            (of the stride itself with ``attention``).
        blend: with ``overlap``, blend segmentation probabilities over an ``overlap``-px band
            at the start of each tile with the earlier neighbours' predictions of those pixels
            (:mod:`xt_engine.runtime.blending`); ``False``: each tile is its region's centre crop.
        probabilities: also return (``RegionDone.probabilities``) and store the softmax class
            probabilities as float16 (segmentation models).
        foreground: which regions run (:mod:`xt_engine.runtime.foreground`): ``auto``,
            ``none``, ``otsu``, ``nodata``, or a mask (path or array). Skipped regions are
            background, recorded as done, and never seen by the context. ``auto`` follows
            the model's ``region_encoder.modality`` when it names one
            (:func:`xt_engine.runtime.input_values.modality_foreground`).

    Input values are mapped by the model's config (``input_scaling``, ``input_scale``,
    ``input_range``) and checked against it (channels, ``input_dtype``): see
    :mod:`xt_engine.runtime.input_values`.
    """
    source = open_image(image)
    config = model.config
    check_inputs(source, config)
    planned = plan_resolution(
        source, config.tiling, level=level, pixel_size=pixel_size, pixel_unit=pixel_unit
    )
    source, level = planned.source, planned.level
    foreground = modality_foreground(config, foreground)
    classify = model.task.image_level
    if classify and two_pass_model(model):
        raise ConfigError(
            "streaming a bidirectional context to one image class is not supported",
            "use a causal context encoder for classification, or call the model on the whole "
            "image and XTModel.finish",
        )
    if probabilities and not model.task.pixel_outputs:
        raise ConfigError(
            "class probabilities are written for segmentation models only",
            "drop --probabilities for this detection model",
        )
    if batch_size < 1:
        raise InputError(f"batch_size={batch_size} < 1", "use a batch size of 1 or more")
    if feature_cache_mib < 0:
        raise InputError(
            f"feature_cache_mib={feature_cache_mib} < 0", "use 0 (no feature cache) or more"
        )
    token_stride = model.region_size // model.token_grid[0]
    _check_overlap(overlap, token_stride, attention)
    grid = RegionGrid.for_image(source.shape_yx(level), config.tiling.region_size, roi, overlap)
    plan = plan_foreground(model, source, level, grid, foreground)
    order = None if plan.run.all() else plan.order
    steps = ContextSchedule.for_model(model, len(grid), order).steps(batch_size)
    device = torch.device(device)
    amp_dtype = resolve_precision(precision, device)
    flush = flush_denormal and device.type == "cpu"
    check_quantize(quantize, compile)
    model = model.to(device).eval()
    store: OutputStore | None = None
    lock: StoreLock | None = None
    skip: set[int] = set()
    read_source, scale = prepare_input(source, config)
    determinants = run_determinants(model, scale) | {
        "input_fingerprint": input_fingerprint(source, level, grid),
        "foreground": plan.digest,
    }
    if quantize != "none":  # changes the numbers: recorded (absent: fp32 weights as stored)
        determinants["quantize"] = quantize
    if read_source is not source:  # a value range (dB): offset and scale as the reader sees
        determinants["input_mapping"] = list(input_mapping(source.dtype, config.region_encoder))
    if output is not None:
        path = Path(output)
        input_path = source.metadata.get("path")
        input_path = str(input_path) if input_path else None
        # checked before anything is created there, and again once the lock is held
        check_output(path, input_path=input_path, overwrite=overwrite, resume=resume)
        lock = StoreLock(path)
        state = check_output(path, input_path=input_path, overwrite=overwrite, resume=resume)
        if state == "resume":
            store = OutputStore.resume(
                path,
                source=source,
                level=level,
                grid=grid,
                config=config,
                determinants=determinants,
            )
            skip = store.done_regions()
            for stale in path.glob(TOKEN_CACHE_PREFIX + "*"):  # a killed run's; we hold the lock
                shutil.rmtree(stale, ignore_errors=True)
        else:
            if state == "replace":
                clear_store(path)
            store = OutputStore.create(
                path,
                source=source,
                level=level,
                grid=grid,
                config=config,
                token_stride=token_stride if attention else 0,
                probabilities=probabilities,
                determinants=determinants,
            )
            store.mark_skipped(plan.skipped)
    if store is not None:
        merged: dict[str, Any] = {
            **xt_attrs(store.root),
            "foreground": plan.to_dict(),
            "cpu_denormals": "flush" if flush else "keep",
            **(provenance or {}),
        }
        store.root.attrs["xt"] = merged
    skip |= set(plan.skipped)
    yield Started(len(grid), grid, level, source.shape_yx(level), config.head.num_classes)

    reader = RegionReader(
        read_source, level, grid, scale, device, config.tiling.pad_value, read_source.nodata
    )
    if overlap:
        reader.step_tokens = grid.step // token_stride

    def autocast() -> AbstractContextManager[object]:
        if amp_dtype is None:
            return nullcontext()
        return torch.autocast(device.type, dtype=amp_dtype)

    start = time.perf_counter()
    done = len(skip)
    cancelled = False
    bidirectional = two_pass_model(model)
    context_done = 0  # regions through the first (context) pass of a two-pass run
    final: list[XTState] = []  # the classification state after the last region
    runner = compiled_view(model, quantize) if compile else model
    passes = (
        two_pass(
            runner,
            reader,
            steps,
            batch_size,
            cancel,
            need_attention=attention,
            skip=skip,
            autocast=autocast,
            cache_dir=cache_dir if cache_dir is not None else store.path if store else None,
            feature_budget=feature_cache_mib * 2**20,
        )
        if bidirectional
        else causal_pass(
            runner,
            reader,
            steps,
            batch_size,
            cancel,
            need_attention=attention,
            skip=set() if classify else skip,  # the pooled state needs every region again
            autocast=autocast,
            final_state=final,
        )
    )
    passes = flushing(passes, flush)
    writer = BackgroundWriter(store) if store is not None else None
    segmentation = model.task.pixel_outputs
    blender = SeamBlender(grid) if overlap and blend and segmentation else None
    suppressor = BorderSuppression.for_head(
        grid, config.head, source.downsample(level), model.output_stride
    )
    if suppressor is not None and store is not None and skip:  # resume: the rows written
        suppressor.seed_from_csv(store.path / DETECTIONS_FILE, skip)
    try:
        for regions, outputs in passes:
            if outputs is None:
                context_done += len(regions)
            else:
                events = region_events(
                    model, regions, outputs, attention, probabilities, blender, suppressor
                )
                mask_missing(events, reader)
                if writer is not None:
                    writer.submit(events)
                yield from events
                done += sum(r.index not in skip for r in regions)  # skip: written before
            elapsed = time.perf_counter() - start
            work_done = done - len(skip) + context_done
            work_total = (len(grid) - len(skip)) + (len(grid) if bidirectional else 0)
            rate = (done - len(skip)) / elapsed if elapsed > 0 else 0.0
            work_rate = work_done / elapsed if elapsed > 0 else 0.0
            eta = (work_total - work_done) / work_rate if work_rate else float("inf")
            yield Progress(done, len(grid), rate, eta)
    except Cancelled:
        cancelled = True
    except OSError as err:
        raise write_error(err, output) from err
    finally:
        passes.close()  # now, not at garbage collection: its cleanup restores the threads
        if writer is not None:
            try:
                writer.close()  # everything yielded so far is on disk before the store is marked
            except OSError as err:
                raise write_error(err, output) from err
    image_class = probs = None
    if classify and final and not cancelled:
        with torch.inference_mode(), autocast(), flush_denormals(flush):
            probs = tuple(model.finish(final[0]).float().softmax(dim=-1)[0].tolist())
        image_class = max(range(len(probs)), key=probs.__getitem__)
        if store is not None:
            store.write_classification(probs)
    if store is not None and not cancelled:
        store.mark_complete(missing_pixels=reader.missing_pixels, report=_report(store.path))
    elif store is not None:
        store.pyramid.flush()  # the coarse levels show what is done (a resume completes them)
    if lock is not None:
        lock.release()
    yield Finished(
        done=done,
        total=len(grid),
        seconds=time.perf_counter() - start,
        cancelled=cancelled,
        output=str(store.path) if store is not None else None,
        peak_rss_mb=peak_rss_mb(),
        image_class=image_class,
        image_probabilities=probs,
    )


def _report(path: Path) -> dict[str, Any]:
    """The finished run's per-image report (:mod:`xt_engine.export.report`)."""
    from xt_engine.export.report import measure
    from xt_engine.export.result import open_result

    return measure(open_result(path, partial=True))


def _check_overlap(overlap: int, token_stride: int, attention: bool) -> None:
    """Overlapping regions must keep token positions on the grid (and attention tiles whole)."""
    unit = token_stride if attention else max(1, token_stride // 2)
    if overlap < 0 or overlap % unit:
        what = "with attention export " if attention else ""
        raise InputError(
            f"overlap={overlap} px is not a multiple of {unit} px {what}for this model "
            f"(token stride {token_stride} px)",
            f"use an overlap of 0, {unit}, {2 * unit}, ... px",
        )


__all__ = ["PRECISIONS", "peak_rss_mb", "resolve_precision", "run_inference"]
