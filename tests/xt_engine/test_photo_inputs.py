"""PNG / JPEG inputs (Pillow) and the top-5 classes ``xt infer`` prints for classifiers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from PIL import Image

from xt_engine.cli import main
from xt_engine.errors import InputError
from xt_engine.io import open_image


def _rgb(h: int = 40, w: int = 50) -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_rgb_png_is_a_three_channel_cyx_source(tmp_path: Path) -> None:
    data = _rgb()
    Image.fromarray(data).save(tmp_path / "photo.png")
    source = open_image(tmp_path / "photo.png")
    assert (source.axes, source.num_channels, source.dtype) == ("cyx", 3, np.uint8)
    assert source.shape_yx(0) == (40, 50) and source.num_levels == 1
    np.testing.assert_array_equal(source.read(0, 5, 7, 25, 30), data[5:25, 7:30].transpose(2, 0, 1))
    assert source.metadata["format"] == "PNG"


def test_gray_png_8_and_16_bit_are_one_channel(tmp_path: Path) -> None:
    gray = _rgb()[..., 0]
    Image.fromarray(gray).save(tmp_path / "gray.png")
    source = open_image(tmp_path / "gray.png")
    assert (source.num_channels, source.dtype) == (1, np.uint8)
    np.testing.assert_array_equal(source.read(0, 0, 0, 40, 50)[0], gray)
    deep = (gray.astype(np.uint16) * 257).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    source = open_image(tmp_path / "deep.png")
    assert (source.num_channels, source.dtype) == (1, np.uint16)
    np.testing.assert_array_equal(source.read(0, 0, 0, 40, 50)[0], deep)


def test_jpeg_and_a_png_without_suffix_open(tmp_path: Path) -> None:
    data = np.full((32, 48, 3), (200, 100, 50), np.uint8)
    Image.fromarray(data).save(tmp_path / "photo.jpg", quality=95)
    source = open_image(tmp_path / "photo.jpg")
    assert (source.axes, source.num_channels, source.metadata["format"]) == ("cyx", 3, "JPEG")
    assert np.abs(source.read(0, 0, 0, 32, 48).astype(int) - data.transpose(2, 0, 1)).max() < 4
    Image.fromarray(data).save(tmp_path / "no_suffix", format="PNG")
    assert open_image(tmp_path / "no_suffix").num_channels == 3


def test_alpha_is_dropped_when_opaque_and_refused_when_transparent(tmp_path: Path) -> None:
    rgba = np.dstack([_rgb(), np.full((40, 50), 255, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "opaque.png")
    source = open_image(tmp_path / "opaque.png")
    assert source.num_channels == 3
    np.testing.assert_array_equal(source.read(0, 0, 0, 40, 50), rgba[..., :3].transpose(2, 0, 1))
    rgba[3, 4, 3] = 128
    Image.fromarray(rgba).save(tmp_path / "clear.png")
    with pytest.raises(InputError, match=r"clear\.png has transparent pixels.*fix: flatten"):
        open_image(tmp_path / "clear.png")
    Image.fromarray(_rgb()).convert("P").save(tmp_path / "palette.png")
    assert open_image(tmp_path / "palette.png").num_channels == 3


@pytest.fixture
def classifier(tmp_path: Path) -> Path:
    from xt_engine.models import create_model, model_config
    from xt_engine.weights.checkpoint import save_checkpoint

    config = model_config("test_convnext_txl_cls")
    config.head.num_classes = 7
    return save_checkpoint(create_model(config).eval(), tmp_path / "cls.safetensors")


def _top(out: str) -> list[tuple[float, str]]:
    lines = out[out.index("top 5 classes:") :].splitlines()[1:6]
    rows = [line.split(". p = ", 1)[1].split("  ", 1) for line in lines]
    return [(float(p), name) for p, name in rows]


def test_infer_prints_the_top_5_classes_with_labels(
    tmp_path: Path, classifier: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Image.fromarray(_rgb(100, 90)).save(tmp_path / "photo.png")
    labels = tmp_path / "labels.txt"
    names = ["ant", "bee", "cat", "dog", "eel", "fox", "gnu"]
    labels.write_text("\n".join(names) + "\n")
    store = tmp_path / "out.zarr"
    args = ["infer", str(tmp_path / "photo.png"), "--model", str(classifier)]
    assert main([*args, "--out", str(store), "--labels", str(labels)]) == 0
    top = _top(capsys.readouterr().out)
    stored = zarr.open_group(str(store), mode="r").attrs["xt"]["classification"]
    probs = stored["probabilities"]
    best = sorted(range(7), key=lambda k: -probs[k])[:5]
    assert [name for _, name in top] == [f"{names[k]} ({k})" for k in best]
    np.testing.assert_allclose([p for p, _ in top], [probs[k] for k in best], atol=1e-4)
    assert stored["class_name"] == names[best[0]]
    assert main([*args, "--out", str(tmp_path / "again.zarr")]) == 0  # no names: class_K
    assert [name for _, name in _top(capsys.readouterr().out)] == [f"class_{k}" for k in best]


def test_labels_with_the_wrong_count_exit_2(
    tmp_path: Path, classifier: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Image.fromarray(_rgb()).save(tmp_path / "photo.png")
    labels = tmp_path / "labels.txt"
    labels.write_text("ant\nbee\n")
    args = ["infer", str(tmp_path / "photo.png"), "--model", str(classifier)]
    assert main([*args, "--out", str(tmp_path / "o.zarr"), "--labels", str(labels)]) == 2
    assert "has 2 names for the model's 7 classes" in capsys.readouterr().err
