"""The widget's current settings as the equivalent ``xt infer`` line and a Slurm job-array script
running ``xt batch`` (no Qt: the widget's parts are read, nothing is changed).

The line is exactly what ``xt infer`` accepts (every value ``shlex.quote``d; the options the
widget sets are always written, so a reader sees every choice): IMAGE, ``--model``, ``--out`` (a
new store in the output folder, as the next run would write), ``--level`` (omitted when the
widget takes the engine's level for the model's pixel size, which is ``xt infer``'s default),
``--roi`` (level-0 pixels of the scope: the current view or a Shapes layer's bounding box),
``--batch-size``, ``--device``, ``--precision``, ``--overlap``, ``--foreground`` and
``--attention``. What has no command-line equivalent is said in ``#`` comment lines above it,
with a placeholder instead of an invented path: an image without a file (``IMAGE``), channels
stacked from several layers, a Labels / Shapes layer as the foreground mask (``MASK``), separate
weight files.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from napari_xt._foreground import LABELS_PREFIX, SHAPES_PREFIX
from napari_xt._inputs import LAYER_META, layer_source
from napari_xt._settings import new_store_path
from napari_xt._view import auto_level, scope_box0
from xt_engine.errors import XTError
from xt_engine.io import SLIDE_SUFFIXES, TIFF_SUFFIXES, ImageSource
from xt_engine.runtime.foreground import METHODS

NO_FILE = "the image is a napari layer without a file: save it first (File > Save Selected Layers)"
SBATCH = (
    "--job-name=xt-batch",
    "--array=0-3",
    "--gres=gpu:1",
    "--cpus-per-task=8",
    "--mem=32G",
    "--time=04:00:00",
    "--requeue",
    "--output=xt-batch-%A_%a.log",
)


@dataclass
class Command:
    """``xt SUBCOMMAND`` arguments (unquoted) and the comment lines that go above them."""

    args: list[str]
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        return " ".join(shlex.quote(a) for a in ["xt", *self.args])

    def text(self) -> str:
        return "".join(f"# {note}\n" for note in self.notes) + self.line()


@dataclass
class _Settings:
    """What both commands share: the image's path (None without a file), the options after
    IMAGE and ``--out``, the level-0 ROI, the foreground choice and the notes so far."""

    image: str | None
    options: list[str]
    roi: tuple[int, int, int, int] | None
    foreground: str
    notes: list[str]


def infer_command(widget: Any) -> Command:
    """``xt infer`` with the widget's settings (XTError when there is no image layer, or the
    scope's Shapes layer has no shape over the image)."""
    s = _settings(widget)
    folder = widget.output.folder()
    out = str(new_store_path(folder)) if folder else "OUT.zarr"
    if not folder:
        s.notes.append("no output folder is set: OUT.zarr is a placeholder")
    args = ["infer", s.image or "IMAGE", "--out", out, *s.options]
    if s.roi is not None:
        args += ["--roi", *(str(v) for v in s.roi)]
    return Command(args, s.notes)


def slurm_script(widget: Any) -> str:
    """A Slurm job-array script whose tasks share the images of ``xt batch`` (each array task
    takes its share from ``SLURM_ARRAY_TASK_ID`` / ``SLURM_ARRAY_TASK_COUNT``; a requeued one
    resumes), with the widget's settings; INPUT is the image's folder's files of its kind."""
    s = _settings(widget)
    notes = list(s.notes)
    if s.image is None:
        images = "IMAGES"
        notes.append("IMAGES: a folder, a quoted glob or a CSV manifest (path, roi, level, output)")
    else:
        images = _images_like(Path(s.image))
    options = list(s.options)
    device = options[options.index("--device") + 1]
    options[options.index("--device") + 1] = "cpu" if device == "cpu" else device.split(":")[0]
    if s.roi is not None:
        roi = " ".join(str(v) for v in s.roi)
        notes.append(
            f"the widget's ROI (level-0 Y0 X0 Y1 X1: {roi}) is one image's: give ROIs in a "
            "CSV manifest's roi column"
        )
    if s.foreground not in METHODS:  # a mask is one image's: xt batch takes the methods only
        i = options.index("--foreground")
        del options[i : i + 2]
        notes.append("xt batch takes a foreground method (auto, none, otsu, nodata), not a mask")
    folder = widget.output.folder() or "OUT_DIR"
    args = ["batch", images, "--out-dir", folder, *options]
    sbatch = [line for line in SBATCH if device != "cpu" or not line.startswith("--gres")]
    lines = ["#!/bin/bash", *(f"#SBATCH {line}" for line in sbatch), "#"]
    lines += [
        "# napari-xt: the widget's settings for a cluster. Each array task runs every N-th image",
        "# of INPUT (N = the array's size) and skips the complete ones; a requeued task resumes.",
        "# Adjust the array size, the resources and INPUT (a folder, a quoted glob, a manifest).",
        *(f"# {note}" for note in notes),
        "set -euo pipefail",
        Command(args).line(),
    ]
    return "\n".join(lines) + "\n"


def _settings(widget: Any) -> _Settings:
    images = widget.images
    layer = images.layer()
    if layer is None:
        raise XTError("no image layer", "add one (File > Open, or File > Open Sample)")
    notes: list[str] = []
    layers = images.input_layers()
    source: ImageSource = layer_source(layer)
    image = _file_of(layer)
    if len(layers) > 1:
        names = ", ".join(repr(lyr.name) for lyr in layers)
        notes.append(
            f"the image stacks {len(layers)} napari layers as channels ({names}): save them as "
            "one multichannel file first (IMAGE)"
        )
        image = None
    elif image is None:
        notes.append(NO_FILE)
    elif not isinstance((layer.metadata or {}).get(LAYER_META, {}).get("path"), str):
        notes.append(
            "another reader opened this image: xt infer reads the file itself (with its nodata, "
            "georeference and pixel size, which the widget's run did not see)"
        )
    model = widget.model_combo.currentText()
    opts = ["--model", model]
    weights = [w for w in (widget.region_weights, widget.context_weights) if w]
    if weights:
        notes.append(
            f"the model is {model} with separate weight files ({', '.join(weights)}), which "
            "xt infer does not take: use a checkpoint that holds them (xt train writes one)"
        )
    if not images.model_level_chosen():
        level = images.chosen_level()
        level = auto_level(widget.viewer, layer, source) if level is None else level
        opts += ["--level", str(level)]
    roi = scope_box0(widget.viewer, widget.scope_combo.currentText(), layer, source)
    opts += [
        "--batch-size",
        str(widget.batch_spin.value()),
        "--device",
        widget.device_combo.currentText(),
        "--precision",
        widget.precision_combo.currentText(),
        "--overlap",
        str(widget.overlap_spin.value()),
    ]
    foreground = widget.foreground_combo.currentText()
    if foreground in METHODS:
        opts += ["--foreground", foreground]
    else:
        name = foreground.removeprefix(LABELS_PREFIX).removeprefix(SHAPES_PREFIX)
        notes.append(
            f"the foreground is the napari layer {name!r}: save it as a mask image (nonzero = "
            "foreground, covering the image) and pass that file as MASK"
        )
        opts += ["--foreground", "MASK"]
    if widget.attention_check.isChecked():
        opts.append("--attention")
    return _Settings(image, opts, roi, foreground, notes)


def _file_of(layer: Any) -> str | None:
    """The file ``layer`` shows: the plugin reader's path, else napari's ``source.path``."""
    path = (layer.metadata or {}).get(LAYER_META, {}).get("path")
    if not isinstance(path, str):
        path = getattr(getattr(layer, "source", None), "path", None)
    return str(path) if path and Path(str(path)).exists() else None


def _images_like(image: Path) -> str:
    """``xt batch``'s INPUT for images like ``image``: a glob of its folder's files with its
    suffix (``DIR/*.ome.tif``), or the image itself when it is a folder (OME-Zarr, DICOM)."""
    if image.is_dir():
        return str(image)
    name = image.name.lower()
    known = [s for s in (*TIFF_SUFFIXES, *SLIDE_SUFFIXES) if name.endswith(s)]
    suffix = max(known, key=len) if known else image.suffix
    return str(image.parent / f"*{image.name[len(image.name) - len(suffix) :]}")
