"""One answer per input: the batch size, a resume point and training vs inference never change
what the context sees (xt_engine.runtime.schedule)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from xt_engine import CancelToken, Finished, InputError, RegionDone, create_model, run_inference
from xt_engine.models import list_models, model_config
from xt_engine.runtime.region_reader import RegionReader
from xt_engine.runtime.schedule import ContextSchedule, causal_chunk, content_tokens
from xt_engine.store.result_store import LABELS_PATH
from xt_engine.tiling import RegionGrid
from xt_engine.train.trainer import crops_to_regions, forward_crops

BATCH_SIZES = (1, 3, 8, 32)


def _short_memory(name: str) -> torch.nn.Module:
    """A registered contract variant whose memory (24 tokens = 6 regions) is shorter than the
    image and whose chunks (4 regions) are shorter than most batches: the chunking matters."""
    cfg = model_config(name).to_dict()
    cfg["context_encoder"]["chunk_regions"] = 4
    cfg["context_encoder"]["memory_tokens"] = 24
    if cfg["head"]["task"] == "classification":  # the cls token must see the whole image
        cfg["context_encoder"]["memory_tokens"] = 4096
    torch.manual_seed(0)
    return create_model(cfg).eval()


def _run(model, image, batch_size: int, **kw) -> dict:
    """Labels, float32 head outputs per region (captured from the head), detections and the
    image class of one run."""
    captured: list[torch.Tensor] = []

    def hook(_module, _inputs, output) -> None:
        value = output if isinstance(output, torch.Tensor) else next(iter(output.values()))
        captured.append(value.float().clone())

    handle = model.head.register_forward_hook(hook)
    try:
        events = list(run_inference(image, model, batch_size=batch_size, **kw))
    finally:
        handle.remove()
    done = [e for e in events if isinstance(e, RegionDone)]
    finished = events[-1]
    assert isinstance(finished, Finished)
    return {
        "labels": {e.region.index: e.labels for e in done if e.labels is not None},
        "detections": {e.region.index: e.detections for e in done if e.detections is not None},
        "head": torch.cat(captured, dim=0) if captured else None,
        "image": finished.image_probabilities,
    }


@pytest.mark.slow
@pytest.mark.parametrize("name", list_models("test_"))
def test_every_batch_size_gives_the_same_answer(name: str) -> None:
    image = np.random.default_rng(1).integers(0, 256, (300, 330, 3), dtype=np.uint8)  # 5 x 6
    if model_config(name).region_encoder.in_chans == 1:
        image = image[..., 0]
    model = _short_memory(name)
    runs = {bs: _run(model, image, bs) for bs in BATCH_SIZES}
    first = runs[BATCH_SIZES[0]]
    for bs in BATCH_SIZES[1:]:
        run = runs[bs]
        assert run["labels"].keys() == first["labels"].keys()
        for index, labels in first["labels"].items():
            np.testing.assert_array_equal(run["labels"][index], labels, err_msg=f"batch {bs}")
        for index, rows in first["detections"].items():
            np.testing.assert_allclose(run["detections"][index], rows, atol=1e-4)
        if first["image"] is not None:
            np.testing.assert_allclose(run["image"], first["image"], atol=1e-5)
        elif model.config.head.task == "segmentation":  # probabilities within 1e-5
            p, q = run["head"].softmax(dim=1), first["head"].softmax(dim=1)
            assert float((p - q).abs().max()) <= 1e-5, f"batch {bs}"


def _stored_labels(path: Path) -> np.ndarray:
    return zarr.open_group(str(path), mode="r")[f"{LABELS_PATH}/0"][:]


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", ["test_convnext_txl", "test_convnext_txl_bidir", "test_convnext_mamba"]
)
def test_a_resume_with_another_batch_size_equals_the_uninterrupted_run(
    name: str, tmp_path: Path
) -> None:
    image = np.random.default_rng(2).integers(0, 256, (300, 330, 3), dtype=np.uint8)
    model = _short_memory(name)
    whole = tmp_path / "whole.zarr"
    list(run_inference(image, model, output=whole, batch_size=4))
    expected = _stored_labels(whole)
    for stop_after, (first_bs, resume_bs) in enumerate([(3, 8), (1, 32), (8, 1)], start=1):
        out = tmp_path / f"resumed-{stop_after}.zarr"
        cancel = CancelToken()
        written = 0
        for event in run_inference(image, model, output=out, batch_size=first_bs, cancel=cancel):
            written += isinstance(event, RegionDone)
            if written >= stop_after * 3:
                cancel.cancel()
        assert zarr.open_group(str(out), mode="r").attrs["xt"]["complete"] is False
        events = list(run_inference(image, model, output=out, batch_size=resume_bs, resume=True))
        assert events[-1].done == 30 and not events[-1].cancelled
        np.testing.assert_array_equal(_stored_labels(out), expected)


def test_provenance_records_what_decides_the_result_and_resume_refuses_a_mismatch(
    tmp_path: Path,
) -> None:
    image = np.random.default_rng(3).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    model = _short_memory("test_convnext_txl")
    out = tmp_path / "run.zarr"
    cancel = CancelToken()
    for event in run_inference(image, model, output=out, batch_size=2, cancel=cancel):
        if isinstance(event, RegionDone):
            cancel.cancel()
    recorded = zarr.open_group(str(out), mode="r").attrs["xt"]["determinants"]
    assert recorded["context_chunk_regions"] == 4
    assert recorded["input_scale"] == pytest.approx(1 / 255)
    assert recorded["pad_value"] == 0.0
    assert len(recorded["weights_sha256"]) == 64
    other = _short_memory("test_convnext_txl")
    with torch.no_grad():
        next(other.parameters()).add_(1e-3)
    with pytest.raises(InputError, match="weights_sha256 differs"):
        list(run_inference(image, other, output=out, resume=True))
    cfg = model.config.to_dict()
    cfg["context_encoder"]["chunk_regions"] = 8
    rechunked = create_model(cfg).eval()
    rechunked.load_state_dict(model.state_dict())
    with pytest.raises(InputError, match="context_chunk_regions differs"):
        list(run_inference(image, rechunked, output=out, resume=True))
    list(run_inference(image, model, output=out, batch_size=16, resume=True))  # same: accepted
    assert zarr.open_group(str(out), mode="r").attrs["xt"]["complete"] is True


@pytest.mark.parametrize("name", ["test_convnext_txl", "test_convnext_txl_bidir"])
def test_training_forward_equals_inference_on_the_same_crop(name: str) -> None:
    """The trainer's forward on a 4 x 4-region crop (chunks of 4 regions, memory of 6) gives
    the logits the engine computes on that crop as an image."""
    model = _short_memory(name)
    crop = np.random.default_rng(4).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    engine = _run(model, crop, batch_size=3)["head"]  # (16, K, 64, 64), raster order
    pixels = torch.from_numpy(crop.transpose(2, 0, 1)[None].astype(np.float32) * (1 / 255))
    regions, rc = crops_to_regions(pixels, model.region_size)
    with torch.no_grad():
        trained = forward_crops(model, regions, rc)["logits"]
    assert float((trained - engine).abs().max()) <= 1e-5


def test_training_scales_and_pads_crops_as_inference_does() -> None:
    from xt_engine.io import source_from_arrays
    from xt_engine.train.config import TrainConfig
    from xt_engine.train.data import Pair
    from xt_engine.train.trainer import _batch

    cfg = model_config("test_convnext_txl")
    cfg.region_encoder.input_scaling = "float"
    cfg.tiling.pad_value = 1.0
    image = np.full((100, 100, 3), 200, np.uint8)
    pair = Pair(
        "a",
        source_from_arrays(image),
        source_from_arrays(np.zeros((100, 100), np.uint8)),
        np.zeros((0, 3), np.int64),
    )
    train_cfg = TrainConfig(crop_size=128, batch_size=1, positive_ratio=0.0)
    crops, _, content = _batch(
        [pair], train_cfg, np.random.default_rng(0), torch.device("cpu"), cfg
    )
    assert float(crops[content[:, None].expand_as(crops)].max()) == 200.0  # "float": unscaled
    assert bool((crops[~content[:, None].expand_as(crops)] == 1.0).all())  # pad value
    assert int(content.sum()) == 100 * 100


def test_padded_tokens_are_neither_keys_nor_state() -> None:
    """Changing the tokens marked padded changes no valid token's output and no carried
    state."""
    model = _short_memory("test_convnext_txl")
    tokens = torch.randn(1, 40, model.config.context_encoder.dim)
    positions = torch.stack(torch.meshgrid(torch.arange(5), torch.arange(8), indexing="ij"), -1)
    positions = positions.reshape(-1, 2)
    valid = torch.ones(40, dtype=torch.bool)
    valid[[7, 15, 23, 31, 39]] = False  # a padded column
    changed = tokens.clone()
    changed[:, ~valid] = 100.0
    with torch.no_grad():
        a, state_a, _ = causal_chunk(model, tokens, positions, model.init_state(1), valid)
        b, state_b, _ = causal_chunk(model, changed, positions, model.init_state(1), valid)
        after_a, _, _ = causal_chunk(model, tokens, positions, state_a, valid)
        after_b, _, _ = causal_chunk(model, tokens, positions, state_b, valid)
    torch.testing.assert_close(a[:, valid], b[:, valid], rtol=0, atol=1e-6)
    torch.testing.assert_close(after_a, after_b, rtol=0, atol=1e-6)
    torch.testing.assert_close(b[:, ~valid], changed[:, ~valid])  # padded keep their input


def test_an_roi_gives_what_the_cropped_image_gives() -> None:
    """Pixels and tokens beyond the ROI are padding, as beyond an image edge."""
    model = _short_memory("test_convnext_txl")
    image = np.random.default_rng(5).integers(0, 256, (300, 300, 3), dtype=np.uint8)
    roi = (20, 30, 170, 230)
    in_roi = _run(model, image, 3, roi=roi)["labels"]
    cropped = _run(model, np.ascontiguousarray(image[20:170, 30:230]), 5)["labels"]
    for index, labels in cropped.items():
        np.testing.assert_array_equal(in_roi[index], labels)


def test_the_reader_pads_with_the_models_pad_value_and_marks_padded_tokens() -> None:
    from xt_engine.io import open_image

    image = np.full((100, 90, 3), 128, np.uint8)
    source = open_image(image)
    grid = RegionGrid.for_image((100, 90), 64)
    reader = RegionReader(source, 0, grid, 1 / 255, torch.device("cpu"), pad_value=1.0)
    regions, pixels, _ = next(reader.batches([[3]], None))  # bottom-right: 36 x 26 px real
    assert regions[0].height == 36 and regions[0].width == 26
    assert bool((pixels[0, 0, :, 36:, :] == 1.0).all()) and bool(
        (pixels[0, 0, :, :, 26:] == 1).all()
    )
    assert float(pixels[0, 0, :, :36, :26].max()) == pytest.approx(128 / 255)
    valid = content_tokens(regions, reader.content_box, (2, 2)).tolist()  # 32 px tokens
    # token rows start at y 64 and 96 (both < 100: real), columns at x 64 (< 90) and 96 (past)
    assert valid == [True, False, True, False]


def test_whole_sequence_models_get_one_chunk_or_a_clear_refusal() -> None:
    class Whole:
        whole_sequence = True
        token_grid = (8, 8)
        config = model_config("test_convnext_txl")

    Whole.config.context_encoder.max_sequence_tokens = 64 * 10
    schedule = ContextSchedule.for_model(Whole(), 9)  # type: ignore[arg-type]
    assert [list(c) for c in schedule.chunks()] == [list(range(9))]
    assert len(schedule.steps(1)) == 1
    with pytest.raises(InputError, match="max_sequence_tokens=640"):
        ContextSchedule.for_model(Whole(), 11)  # type: ignore[arg-type]


def test_the_weights_hash_ignores_memory_format_and_reads_quantized_weights() -> None:
    """Channels-last weights are the same weights (same hash); int8-quantized linears hash
    (their integer values and scales) instead of failing on packed parameters."""
    from xt_engine.runtime.provenance import weights_sha256

    model = create_model("test_convnext_none").eval()
    plain = weights_sha256(model)
    assert weights_sha256(model.to(memory_format=torch.channels_last)) == plain
    quantized = torch.ao.quantization.quantize_dynamic(
        create_model("test_convnext_none").eval(), {torch.nn.Linear}, dtype=torch.qint8
    )
    assert len(weights_sha256(quantized)) == 64 and weights_sha256(quantized) != plain
