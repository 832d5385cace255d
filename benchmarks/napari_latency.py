"""Latency in napari: Run click -> first overlay pixels -> whole scope, and the longest stall.

Opens napari (needs a display: ``xvfb-run -a``), loads the synthetic SAR sample (2048 x 2048),
docks the xT widget with the bundled demo model (bidirectional: two passes) and runs it on:

- ``view (fit)``: the current view right after opening (the whole scene in view, level chosen
  automatically from the zoom) - the first Run of the session, so it includes creating layers;
- ``view (zoom 2)``: a zoomed-in view (level 0);
- ``whole image``: the whole scene at level 0.

For each: seconds from the click to the first region painted into the overlay, to the last
one, and the longest gap of a 10 ms QTimer heartbeat from the click to the end (the event loop's
worst stall). Prints a table, writes ``napari_latency.json`` and a screenshot
``napari_latency.png`` (the viewer after the first run) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import napari
import numpy as np
from PIL import Image
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QApplication


def settle(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        QApplication.processEvents()
        time.sleep(0.01)


def timed_run(widget) -> dict[str, float]:
    beats: list[float] = []
    timer = QTimer()
    timer.timeout.connect(lambda: beats.append(time.perf_counter()))
    painted: list[float] = []
    paint = widget.results.paint

    def timed_paint(event) -> None:
        paint(event)
        painted.append(time.perf_counter())

    widget.results.paint = timed_paint
    finished: list[float] = []
    widget.run_finished.connect(lambda _: finished.append(time.perf_counter()))
    timer.start(10)
    settle(0.1)
    clicked = time.perf_counter()
    widget.run_button.click()
    while not finished and time.perf_counter() - clicked < 300:
        QApplication.processEvents()
        time.sleep(0.002)
    settle(0.1)
    timer.stop()
    widget.results.paint = paint
    widget.run_finished.disconnect()
    stamps = np.asarray([clicked] + [b for b in beats if b > clicked])
    return {
        "first_pixels_s": painted[0] - clicked if painted else float("nan"),
        "last_region_s": painted[-1] - clicked if painted else float("nan"),
        "regions": len(painted),
        "max_stall_ms": float(np.diff(stamps).max() * 1000) if len(stamps) > 1 else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="out/bench")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1400, 860)
    viewer.open_sample("napari-xt", "sar_scene")
    _, widget = viewer.window.add_plugin_dock_widget("napari-xt", "xT inference")
    settle(2.0)  # the widget's warm-up and the first draws
    rows = []
    widget.scope_combo.setCurrentText("Current view")
    rows.append({"scope": "view (fit)", **timed_run(widget)})
    Image.fromarray(viewer.screenshot(canvas_only=False, flash=False)).save(
        out / "napari_latency.png"
    )
    viewer.scene.camera.zoom = viewer.scene.camera.zoom * 2 * 4  # fit zoom x 8: level 0
    settle(0.5)
    rows.append({"scope": "view (zoom in)", **timed_run(widget)})
    widget.scope_combo.setCurrentText("Whole image")
    widget.level_combo.setCurrentIndex(1)  # level 0
    rows.append({"scope": "whole image", **timed_run(widget)})
    print(f"{'scope':16s} {'regions':>8s} {'first px s':>11s} {'last s':>8s} {'max stall ms':>13s}")
    for r in rows:
        print(
            f"{r['scope']:16s} {r['regions']:8d} {r['first_pixels_s']:11.2f} "
            f"{r['last_region_s']:8.2f} {r['max_stall_ms']:13.0f}"
        )
    (out / "napari_latency.json").write_text(json.dumps({"rows": rows}, indent=2))
    viewer.close()


if __name__ == "__main__":
    main()
