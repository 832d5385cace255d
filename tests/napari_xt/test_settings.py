"""Where the widget writes results, and what it remembers (no Qt, no viewer)."""

from __future__ import annotations

from pathlib import Path

from napari_xt._settings import (
    beside_image,
    load_settings,
    new_store_path,
    output_folder,
    remember_output_folder,
)


def test_results_go_beside_an_image_file(tmp_path: Path) -> None:
    assert beside_image(tmp_path / "scene.tif") == tmp_path / "scene-xt"
    assert beside_image(tmp_path / "slide.ome.tiff") == tmp_path / "slide-xt"
    assert beside_image(str(tmp_path / "plate.ome.zarr") + "/") == tmp_path / "plate-xt"
    assert output_folder(str(tmp_path / "scene.tif")) == tmp_path / "scene-xt"


def test_picked_folders_are_remembered_per_image_and_for_images_without_a_file(
    tmp_path: Path, results_folder: Path
) -> None:
    image = str(tmp_path / "scene.tif")
    assert output_folder(None) == results_folder  # (the test's settings, see conftest.py)
    remember_output_folder(tmp_path / "elsewhere", image)
    assert output_folder(image) == tmp_path / "elsewhere"
    assert output_folder(str(tmp_path / "other.tif")) == tmp_path / "other-xt"
    assert output_folder(None) == results_folder  # per image: the general choice is untouched
    remember_output_folder(tmp_path / "mine", None)
    assert output_folder(None) == tmp_path / "mine"
    remember_output_folder(tmp_path / "scene-xt", image)  # back to the default: forgotten
    assert str(Path(image).resolve()) not in load_settings()["image_folders"]


def test_each_run_gets_a_new_store_name(tmp_path: Path) -> None:
    first = new_store_path(tmp_path, now=0.0)
    assert first.parent == tmp_path and first.name.startswith("run-") and first.suffix == ".zarr"
    first.mkdir()
    second = new_store_path(tmp_path, now=0.0)  # the same second
    assert second != first and second.name == first.stem + "-2.zarr" and not second.exists()
