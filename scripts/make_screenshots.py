"""Screenshots for README.md and docs/user-guide.md (run under a display or xvfb-run -a).

Usage: `xvfb-run -a .venv/bin/python scripts/make_screenshots.py`. Opens napari with the
synthetic SAR sample, docks the xT widget, runs the demo model on the whole scene and on a
zoomed-in view, and saves a PNG after each step to docs/images/. The run stores and the
widget's remembered settings go to a temporary folder (not ~/napari-xt, not your settings).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import napari
from PIL import Image
from qtpy.QtWidgets import QApplication

OUT = Path(__file__).resolve().parents[1] / "docs" / "images"


def wait_for_run(widget) -> None:
    done: list[bool] = []
    widget.run_finished.connect(lambda cancelled: done.append(cancelled))
    widget.run_button.click()
    deadline = time.time() + 300
    while not done and time.time() < deadline:
        QApplication.processEvents()
        time.sleep(0.02)


def shot(viewer, name: str) -> None:
    for _ in range(20):
        QApplication.processEvents()
        time.sleep(0.02)
    Image.fromarray(viewer.screenshot(canvas_only=False, flash=False)).save(OUT / name)
    print("wrote", OUT / name)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="napari-xt-screenshots-"))
    os.environ["NAPARI_XT_CONFIG_DIR"] = str(scratch / "config")
    from napari_xt._settings import save_settings

    save_settings({"output_folder": str(scratch / "results")})
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1400, 860)
    viewer.open_sample("napari-xt", "sar_scene")
    _, widget = viewer.window.add_plugin_dock_widget("napari-xt", "xT inference")
    deadline = time.time() + 120
    while widget.model_loading and time.time() < deadline:  # the model loads in a worker
        QApplication.processEvents()
        time.sleep(0.02)
    shot(viewer, "guide-1-sample-and-widget.png")
    widget.scope_combo.setCurrentText("Whole image")
    wait_for_run(widget)
    shot(viewer, "guide-2-whole-scene.png")
    shot(viewer, "widget.png")
    truth = viewer.layers["ground truth"].data
    ys, xs = (truth == 2).nonzero()
    if len(ys):
        viewer.scene.camera.center = (float(ys[0]), float(xs[0]))
        viewer.scene.camera.zoom = 2.0
    widget.scope_combo.setCurrentText("Current view")
    wait_for_run(widget)
    shot(viewer, "guide-3-current-view.png")
    viewer.reset_view()
    widget.scope_combo.setCurrentText("Whole image")
    wait_for_run(widget)
    widget.inspector.button.setChecked(True)
    if len(ys):
        widget.inspector.inspect_at((float(ys[0]), float(xs[0])))
        deadline = time.time() + 120
        while "xT region attention" not in viewer.layers and time.time() < deadline:
            QApplication.processEvents()
            time.sleep(0.02)
        viewer.layers["xT segmentation"].visible = False
        shot(viewer, "guide-4-inspect-attention.png")
    viewer.close()


if __name__ == "__main__":
    main()
