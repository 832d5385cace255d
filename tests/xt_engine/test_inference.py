from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from xt_engine import (
    CancelToken,
    Finished,
    InputError,
    Progress,
    RegionDone,
    Started,
    create_model,
    open_image,
    run_inference,
)
from xt_engine.store.result_store import LABELS_PATH


def _labels_from_events(events: list, shape: tuple[int, int]) -> np.ndarray:
    out = np.full(shape, 255, dtype=np.uint8)
    for event in events:
        if isinstance(event, RegionDone):
            r = event.region
            out[r.y0 : r.y1, r.x0 : r.x1] = event.labels
    return out


def _reference_labels(model, image: np.ndarray) -> np.ndarray:
    """Whole-image reference: every region in one context call (no streaming), stitched by
    hand; tokens whose patch lies wholly in the padding past the image edge are left out of the
    context (they keep their own features), as the engine's schedule promises."""
    r = model.region_size
    h, w = image.shape[:2]
    rows, cols = -(-h // r), -(-w // r)
    padded = np.zeros((rows * r, cols * r, image.shape[2]), dtype=np.float32)
    padded[:h, :w] = image / 255.0
    regions = [
        padded[i * r : (i + 1) * r, j * r : (j + 1) * r].transpose(2, 0, 1)
        for i in range(rows)
        for j in range(cols)
    ]
    rc = torch.tensor([[i, j] for i in range(rows) for j in range(cols)])
    gh, gw = model.token_grid
    s = r // gh
    keep = [
        (i * r + a * s < h) and (j * r + b * s < w)
        for i, j in rc.tolist()
        for a in range(gh)
        for b in range(gw)
    ]
    keep = torch.tensor(keep)
    with torch.inference_mode():
        features, tokens, positions = model.encode(torch.from_numpy(np.stack(regions))[None], rc)
        context, _ = model.context_encoder(tokens[:, keep], positions[keep], None)
        mixed = tokens.clone()
        mixed[:, keep] = context
        out = model.decode(mixed, features, None)
    labels = out.logits.argmax(1).numpy().astype(np.uint8)
    full = np.zeros((rows * r, cols * r), dtype=np.uint8)
    for n, (i, j) in enumerate(rc.tolist()):
        full[i * r : (i + 1) * r, j * r : (j + 1) * r] = labels[n]
    return full[:h, :w]


@pytest.mark.parametrize("batch_size", [1, 4])
def test_streamed_labels_equal_a_whole_image_forward(
    rgb_image: np.ndarray, batch_size: int
) -> None:
    model = create_model("test_convnext_txl").eval()  # memory 512 >= all 12 regions x 4 tokens
    events = list(run_inference(rgb_image, model, batch_size=batch_size))
    assert isinstance(events[0], Started) and events[0].total == 12
    assert isinstance(events[-1], Finished) and events[-1].done == 12 and not events[-1].cancelled
    streamed = _labels_from_events(events, rgb_image.shape[:2])
    np.testing.assert_array_equal(streamed, _reference_labels(model, rgb_image))
    progress = [e for e in events if isinstance(e, Progress)]
    assert progress[-1].done == 12 and progress[-1].eta_s == 0


def test_output_store_holds_the_labels_pyramid(tmp_path: Path) -> None:
    rgb_image = np.random.default_rng(2).integers(0, 255, (300, 600, 3), dtype=np.uint8)
    model = create_model("test_convnext_none").eval()
    out = tmp_path / "result.zarr"
    events = list(run_inference(rgb_image, model, output=out, batch_size=3))
    streamed = _labels_from_events(events, rgb_image.shape[:2])
    root = zarr.open_group(str(out), mode="r")
    assert root.attrs["xt"]["complete"] is True
    assert root.attrs["ome"]["version"] == "0.5"
    level0 = root[f"{LABELS_PATH}/0"][:]
    np.testing.assert_array_equal(level0, streamed)
    level1 = root[f"{LABELS_PATH}/1"][:]
    np.testing.assert_array_equal(level1, streamed[::2, ::2])
    assert root["xt_done"][:].all()
    ms = root[LABELS_PATH].attrs["ome"]["multiscales"][0]
    assert [d["path"] for d in ms["datasets"]] == ["0", "1"]


def test_cancel_stops_between_batches_and_store_stays_incomplete(
    rgb_image: np.ndarray, tmp_path: Path
) -> None:
    model = create_model("test_convnext_none").eval()
    cancel = CancelToken()
    out = tmp_path / "cancelled.zarr"
    events = []
    for event in run_inference(rgb_image, model, output=out, batch_size=2, cancel=cancel):
        events.append(event)
        if isinstance(event, Progress) and event.done == 4:
            cancel.cancel()
    finished = events[-1]
    assert isinstance(finished, Finished) and finished.cancelled and finished.done == 4
    root = zarr.open_group(str(out), mode="r")
    assert root.attrs["xt"]["complete"] is False
    assert int(root["xt_done"][:].sum()) == 4


def test_channel_mismatch_names_the_fix() -> None:
    model = create_model("test_convnext_none")
    with pytest.raises(InputError, match="model expects 3 input channels, array has 1"):
        next(run_inference(np.zeros((64, 64), np.uint8), model))


def test_roi_and_strip_images() -> None:
    model = create_model("test_convnext_none").eval()
    strip = np.random.default_rng(0).integers(0, 255, (1, 130, 3), dtype=np.uint8)
    events = list(run_inference(strip, model))
    assert events[0].total == 3
    assert all(e.labels.shape[0] == 1 for e in events if isinstance(e, RegionDone))
    image = np.zeros((300, 300, 3), np.uint8)
    events = list(run_inference(image, model, roi=(10, 20, 100, 90)))
    boxes = [
        (e.region.y0, e.region.x0, e.region.y1, e.region.x1)
        for e in events
        if isinstance(e, RegionDone)
    ]
    assert boxes == [(10, 20, 74, 84), (10, 84, 74, 90), (74, 20, 100, 84), (74, 84, 100, 90)]


def test_open_image_reads_tiff_pyramids_and_ome_zarr(tmp_path: Path) -> None:
    import tifffile

    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (256, 320, 3), dtype=np.uint8)
    path = tmp_path / "pyramid.ome.tif"
    with tifffile.TiffWriter(path) as tif:
        tif.write(
            base,
            subifds=1,
            tile=(64, 64),
            metadata={"axes": "YXS", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5},
        )
        tif.write(base[::2, ::2], subfiletype=1, tile=(64, 64))
    source = open_image(path)
    assert source.axes == "yxc" and source.num_levels == 2 and source.num_channels == 3
    assert source.shape_yx(1) == (128, 160) and source.pixel_size == (0.5, 0.5)
    np.testing.assert_array_equal(
        source.read(0, 10, 20, 30, 50), base[10:30, 20:50].transpose(2, 0, 1)
    )

    store = tmp_path / "image.ome.zarr"
    root = zarr.open_group(str(store), mode="w", zarr_format=3)
    root.create_array("s0", data=base.transpose(2, 0, 1)[None], chunks=(1, 1, 64, 64))
    root.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [
            {
                "axes": [
                    {"name": "t", "type": "time"},
                    {"name": "c", "type": "channel"},
                    {"name": "y", "type": "space", "unit": "micrometer"},
                    {"name": "x", "type": "space", "unit": "micrometer"},
                ],
                "datasets": [
                    {
                        "path": "s0",
                        "coordinateTransformations": [
                            {"type": "scale", "scale": [1, 1, 0.25, 0.25]}
                        ],
                    }
                ],
            }
        ],
    }
    source = open_image(store)
    assert (
        source.axes == "cyx" and source.pixel_size == (0.25, 0.25) and source.unit == "micrometer"
    )
    np.testing.assert_array_equal(source.read(0, 0, 0, 5, 7), base[:5, :7].transpose(2, 0, 1))


def test_bad_paths_raise_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        open_image(tmp_path / "nope.tif")
    fake = tmp_path / "fake.tif"
    fake.write_text("not a tiff")
    with pytest.raises(InputError, match="not a readable TIFF"):
        open_image(fake)


def test_bidirectional_two_pass_streaming_equals_a_whole_image_forward(
    rgb_image: np.ndarray,
) -> None:
    from xt_engine.models.registry import model_config

    cfg = model_config("test_convnext_txl").to_dict()
    cfg["context_encoder"]["bidirectional"] = True
    model = create_model(cfg).eval()
    events = list(run_inference(rgb_image, model, batch_size=5))
    streamed = _labels_from_events(events, rgb_image.shape[:2])
    np.testing.assert_array_equal(streamed, _reference_labels(model, rgb_image))
    progress = [e for e in events if isinstance(e, Progress)]
    # pass 1 (context only, nothing written): one progress event per step of whole chunks
    steps = -(-12 // model.config.context_encoder.chunk_regions)  # batch 5 < chunk: 1 each
    assert [p.done for p in progress[:steps]] == [0] * steps and progress[steps].done > 0
    assert progress[-1].done == 12 and progress[-1].eta_s == 0


@pytest.mark.parametrize("name", ["test_convnext_txl", "test_convnext_txl_bidir"])
def test_attention_is_exported_to_events_and_store(
    rgb_image: np.ndarray, tmp_path: Path, name: str
) -> None:
    model = create_model(name).eval()
    out = tmp_path / "att.zarr"
    events = list(run_inference(rgb_image, model, output=out, batch_size=4, attention=True))
    done = [e for e in events if isinstance(e, RegionDone)]
    assert all(e.token_stride == 32 and e.attention is not None for e in done)
    stored = zarr.open_group(str(out), mode="r")["attention/0"][:].astype(np.float32)
    assert stored.shape == (5, 7)  # ceil(150 / 32), ceil(200 / 32)
    for event in done:
        r = event.region
        block = stored[
            r.y0 // 32 : r.y0 // 32 + event.attention.shape[0],
            r.x0 // 32 : r.x0 // 32 + event.attention.shape[1],
        ]
        np.testing.assert_allclose(block, event.attention, rtol=1e-2, atol=1e-3)
    assert stored.max() > 0 and np.isfinite(stored).all()
    without = [e for e in run_inference(rgb_image, model) if isinstance(e, RegionDone)]
    assert without[0].attention is None


@pytest.mark.parametrize(
    "name", ["test_convnext_txl", "test_convnext_none", "test_convnext_txl_bidir"]
)
def test_resume_after_cancel_equals_an_uninterrupted_run(
    rgb_image: np.ndarray, tmp_path: Path, name: str
) -> None:
    model = create_model(name).eval()
    whole = _labels_from_events(list(run_inference(rgb_image, model, batch_size=2)), (150, 200))
    out = tmp_path / "resumable.zarr"
    cancel = CancelToken()
    for event in run_inference(rgb_image, model, output=out, batch_size=2, cancel=cancel):
        if isinstance(event, Progress) and event.done == 6:
            cancel.cancel()
    assert zarr.open_group(str(out), mode="r").attrs["xt"]["complete"] is False
    events = list(run_inference(rgb_image, model, output=out, batch_size=2, resume=True))
    assert len([e for e in events if isinstance(e, RegionDone)]) == 6  # only what was missing
    root = zarr.open_group(str(out), mode="r")
    assert root.attrs["xt"]["complete"] is True
    np.testing.assert_array_equal(root[f"{LABELS_PATH}/0"][:], whole)


def test_resume_refuses_a_store_of_another_run(rgb_image: np.ndarray, tmp_path: Path) -> None:
    model = create_model("test_convnext_none").eval()
    out = tmp_path / "other.zarr"
    cancel = CancelToken()
    for _ in run_inference(rgb_image, model, output=out, roi=(0, 0, 100, 100), cancel=cancel):
        cancel.cancel()  # interrupted after the first batch
    with pytest.raises(InputError, match="roi differs"):
        next(run_inference(rgb_image, model, output=out, resume=True))


def test_precision_choices(rgb_image: np.ndarray) -> None:
    from xt_engine import ConfigError

    model = create_model("test_convnext_txl").eval()
    fp32 = _labels_from_events(list(run_inference(rgb_image, model, precision="fp32")), (150, 200))
    bf16 = _labels_from_events(list(run_inference(rgb_image, model, precision="bf16")), (150, 200))
    assert (fp32 == bf16).mean() > 0.95  # bf16 autocast on CPU: close, not bit-equal
    with pytest.raises(ConfigError, match="fp16 autocast needs a CUDA device"):
        next(run_inference(rgb_image, model, precision="fp16"))


def test_bf16_on_a_cpu_without_bf16_hardware_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    from xt_engine.runtime import precision as prec

    avx2 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n"
    sapphire = "flags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
    assert prec.cpu_has_fast_bf16(avx2) is False
    assert prec.cpu_has_fast_bf16(sapphire) is True
    assert prec.cpu_has_fast_bf16("model name\t: ?\n") is None  # no flags line: unknown
    monkeypatch.setattr(prec, "cpu_has_fast_bf16", lambda: False)
    note = prec.slow_precision_note("bf16", "cpu")
    assert note is not None and "--precision fp32" in note
    assert prec.slow_precision_note("fp32", "cpu") is None
    assert prec.slow_precision_note("auto", "cpu") is None
    assert prec.slow_precision_note("bf16", "cuda") is None
    monkeypatch.setattr(prec, "cpu_has_fast_bf16", lambda: True)
    assert prec.slow_precision_note("bf16", "cpu") is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_agrees_with_cpu_fp32(rgb_image: np.ndarray) -> None:
    model = create_model("test_convnext_txl").eval()
    cpu = _labels_from_events(list(run_inference(rgb_image, model, precision="fp32")), (150, 200))
    gpu = _labels_from_events(
        list(run_inference(rgb_image, model, device="cuda", precision="bf16")), (150, 200)
    )
    assert (cpu == gpu).mean() > 0.95


def test_detection_models_stream_points_to_events_and_a_csv(tmp_path: Path) -> None:
    import csv

    import torch

    model = create_model("test_convnext_txl_det").eval()
    with torch.no_grad():  # make class 2 fire at a few fixed cells of every region
        model.head.heatmap.weight.zero_()
        model.head.heatmap.bias.fill_(-10.0)
    base = np.random.default_rng(3).integers(0, 255, (200, 260, 3), dtype=np.uint8)
    pyramid = [base, base[::2, ::2].copy()]
    original = model.head.forward

    def fixed_peaks(context, features):
        out = original(context, features)
        heat = out["heatmap"].clone()
        heat[:, 2, 3, 5] = 4.0  # one confident centre per region at cell (3, 5), stride 4
        return {**out, "heatmap": heat}

    model.head.forward = fixed_peaks
    out = tmp_path / "det.zarr"
    events = [
        e for e in run_inference(pyramid, model, output=out, level=1) if isinstance(e, RegionDone)
    ]
    assert all(e.labels is None for e in events)
    rows = np.concatenate([e.detections for e in events])
    # one detection per region whose cell (3, 5) lies inside the image at level 1 (100 x 130)
    expected = [
        (r.y0 + 14.0, r.x0 + 22.0)
        for r in (e.region for e in events)
        if 14 < r.height and 22 < r.width
    ]
    assert sorted(map(tuple, rows[:, :2].tolist())) == sorted(expected)
    assert set(rows[:, 2].tolist()) == {2.0}
    with (out / "detections.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == len(expected)
    # level-0 coordinates: twice the level-1 pixels
    assert sorted((float(t["y"]), float(t["x"])) for t in table) == sorted(
        (2 * y, 2 * x) for y, x in expected
    )
    assert {t["class_name"] for t in table} == {"class_2"}


def test_overlapping_regions_output_the_centre_of_each_window(tmp_path: Path) -> None:
    """overlap=m, no blending: each output tile is the centre of an R px window read m px up and
    left of it (real neighbouring pixels, zeros outside the image); the store is tiled by R - 2m."""
    image = np.random.default_rng(5).integers(0, 255, (150, 200, 3), dtype=np.uint8)
    model = create_model("test_convnext_none").eval()
    r, m = model.region_size, 16
    out = tmp_path / "overlap.zarr"
    events = list(run_inference(image, model, output=out, batch_size=3, overlap=m, blend=False))
    step = r - 2 * m
    assert events[0].total == -(-150 // step) * -(-200 // step)
    streamed = _labels_from_events(events, image.shape[:2])
    assert (streamed != 255).all()
    padded = np.zeros((150 + 2 * r, 200 + 2 * r, 3), np.float32)
    padded[m : m + 150, m : m + 200] = image.astype(np.float32) * np.float32(
        1 / 255
    )  # row y -> y + m
    for event in events:
        if not isinstance(event, RegionDone):
            continue
        g = event.region
        window = padded[g.y0 : g.y0 + r, g.x0 : g.x0 + r].transpose(2, 0, 1)  # from y0 - m
        with torch.inference_mode():
            pixels = torch.from_numpy(window)[None, None].contiguous()
            # token positions stay physical: region origins are step / token stride tokens apart
            ref, _ = model(
                pixels, torch.tensor([[g.row, g.col]]), model.init_state(1), step_tokens=step // 32
            )
        expected = ref.logits[0].argmax(0).numpy()[m : m + g.height, m : m + g.width]
        np.testing.assert_array_equal(event.labels, expected)
    root = zarr.open_group(str(out), mode="r")
    assert root[f"{LABELS_PATH}/0"].chunks == (step, step)
    assert root.attrs["xt"]["overlap"] == m
    np.testing.assert_array_equal(root[f"{LABELS_PATH}/0"][:], streamed)


def test_overlap_off_the_token_grid_is_refused() -> None:
    model = create_model("test_convnext_none").eval()
    image = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(InputError, match="multiple of 16 px"):
        next(run_inference(image, model, overlap=10))
    with pytest.raises(InputError, match="multiple of 32 px with attention"):
        next(run_inference(image, model, overlap=16, attention=True))


def test_class_probabilities_are_stored_as_float16(tmp_path: Path) -> None:
    image = np.random.default_rng(6).integers(0, 255, (100, 150, 3), dtype=np.uint8)
    model = create_model("test_convnext_none").eval()
    out = tmp_path / "probs.zarr"
    events = list(run_inference(image, model, output=out, batch_size=2, probabilities=True))
    labels = _labels_from_events(events, image.shape[:2])
    root = zarr.open_group(str(out), mode="r")
    probs = root["probabilities/0"]
    assert probs.dtype == np.float16 and probs.shape == (model.config.head.num_classes, 100, 150)
    values = probs[:].astype(np.float32)
    np.testing.assert_allclose(values.sum(axis=0), 1.0, atol=5e-3)
    top = np.sort(values, axis=0)
    clear = top[-1] - top[-2] > 1e-2  # where float16 rounding cannot swap the winner
    np.testing.assert_array_equal(values.argmax(axis=0)[clear], labels[clear])
    axes = root["probabilities"].attrs["ome"]["multiscales"][0]["axes"]
    assert [a["name"] for a in axes] == ["c", "y", "x"]
    region_done = next(e for e in events if isinstance(e, RegionDone))
    assert region_done.probabilities.shape == (model.config.head.num_classes, 64, 64)


@pytest.mark.parametrize("pool", ["mean", "cls"])
def test_classification_streams_to_the_image_class(tmp_path: Path, pool: str) -> None:
    """Streaming in batches with the state carried gives the class of a whole-image call."""
    from xt_engine.models import model_config

    config = model_config("test_convnext_txl_cls")
    config.head.pool = pool
    model = create_model(config).eval()
    image = np.random.default_rng(8).integers(0, 255, (150, 200, 3), dtype=np.uint8)
    out = tmp_path / "cls.zarr"
    events = list(run_inference(image, model, output=out, batch_size=2))
    finished = events[-1]
    assert isinstance(finished, Finished) and finished.done == 12
    r = model.region_size
    padded = np.zeros((3 * r, 4 * r, 3), np.float32)
    padded[:150, :200] = image.astype(np.float32) * np.float32(1 / 255)
    regions = [
        padded[i * r : (i + 1) * r, j * r : (j + 1) * r].transpose(2, 0, 1)
        for i in range(3)
        for j in range(4)
    ]
    rc = torch.tensor([[i, j] for i in range(3) for j in range(4)])
    gh = model.token_grid[0]
    s = r // gh
    keep = torch.tensor(  # tokens with real content; padding is left out of the context
        [
            (i * r + a * s < 150) and (j * r + b * s < 200)
            for i, j in rc.tolist()
            for a in range(gh)
            for b in range(gh)
        ]
    )
    with torch.inference_mode():
        _, tokens, positions = model.encode(torch.from_numpy(np.stack(regions))[None], rc)
        context, ctx_state = model.context_encoder(tokens[:, keep], positions[keep], None)
        if pool == "cls":
            cls, _ = model.context_encoder(
                model.head.cls_token, torch.zeros(1, 2, dtype=torch.long), ctx_state
            )
            expected = model.head(cls[:, -1]).softmax(-1)[0]
        else:
            expected = model.head(context.mean(dim=1)).softmax(-1)[0]
    np.testing.assert_allclose(finished.image_probabilities, expected.numpy(), atol=1e-5)
    assert finished.image_class == int(expected.argmax())
    stored = zarr.open_group(str(out), mode="r").attrs["xt"]
    assert stored["complete"] and stored["classification"]["class"] == finished.image_class


def test_bidirectional_classification_is_refused_with_the_fix() -> None:
    from xt_engine import ConfigError
    from xt_engine.models import model_config

    config = model_config("test_convnext_txl_cls")
    config.context_encoder.bidirectional = True
    with pytest.raises(ConfigError, match="causal context encoder"):
        next(run_inference(np.zeros((64, 64, 3), np.uint8), create_model(config)))
