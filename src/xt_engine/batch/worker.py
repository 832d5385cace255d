"""One image of a batch, on a dask worker or in this process: :func:`process_image`.

The model is loaded once per worker process (:class:`ModelCache`, kept by the
:class:`XTWorkerPlugin` a batch registers on every worker), never shipped with a task: a task
carries only its :class:`~xt_engine.batch.inputs.ImageTask` and the :class:`RunOptions`. The
plugin sets torch's threads to the worker's thread count; the GPU a worker uses is the one
``CUDA_VISIBLE_DEVICES`` leaves it (the local cluster and Slurm's ``--gres=gpu:1`` set it).

What happens to the image's store (``OUT_DIR/NAME.zarr``) is decided here and the rest is left to
:func:`~xt_engine.runtime.run_inference`, which keeps its own refusals (not a store of this
tool, the input itself), its determinant check on resume and its lock:

* complete, same run (:func:`xt_engine.batch.provenance.differing_field` finds nothing):
  ``skipped``; complete, another run: ``failed`` naming the field, unless ``overwrite``;
* incomplete: resumed (regions recorded done are neither decoded nor written again); with
  ``overwrite``, redone unless this batch (its ``run_id``) wrote it: a retried image resumes;
* locked by another process: ``busy`` (the batch tries again later).

Every attempt appends to ``OUT_DIR/logs/NAME.jsonl``: a ``start`` line (attempt, pid, worker,
the regions the store already had done), one ``decoded`` line per batch of regions, an ``end``
line: what shows that a retried image decodes no region twice.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from xt_engine.batch.inputs import ImageTask
from xt_engine.batch.report import ImageResult
from xt_engine.runtime.feature_cache import DEFAULT_FEATURE_CACHE_MIB

if TYPE_CHECKING:
    from xt_engine.models import XTModel

PLUGIN_NAME = "xt-batch"
#: what a progress callback receives: (store name, regions done, regions in all)
ProgressCallback = Callable[[str, int, int], None]


@dataclass(frozen=True)
class RunOptions:
    """How every image of a batch runs (the ``xt infer`` options of the same names)."""

    model: str
    out_dir: str
    run_id: str
    allow_untrained: bool = False
    level: int | None = None
    pixel_size: float | None = None
    pixel_unit: str | None = None
    batch_size: int = 8
    device: str = "auto"
    precision: str = "auto"
    compile: bool = False
    flush_denormal: bool = True
    quantize: str = "none"
    feature_cache_mib: int = DEFAULT_FEATURE_CACHE_MIB
    foreground: str = "auto"
    overlap: int = 0
    blend: bool = True
    probabilities: bool = False
    attention: bool = False
    overwrite: bool = False
    labels: str | None = None
    detection_threshold: float | None = None
    max_detections: int | None = None

    def result_options(self) -> dict[str, Any]:
        """The options that change a result and that the store's provenance does not already
        hold (recorded as ``xt.batch.options``; a complete store is skipped only when equal)."""
        return {
            "foreground": self.foreground,
            "blend": self.blend,
            "probabilities": self.probabilities,
            "attention": self.attention,
            "precision": self.precision,
            "pixel_size": self.pixel_size,
            "pixel_unit": self.pixel_unit,
        }


class ModelCache:
    """The models of one process, loaded on first use and kept (by name and overrides)."""

    def __init__(self) -> None:
        self._models: dict[tuple[object, ...], tuple[XTModel, dict[str, object]]] = {}
        self._lock = threading.Lock()
        self.loads = 0

    def get(self, options: RunOptions) -> tuple[XTModel, dict[str, object]]:
        """The model and its provenance entries (name, trained, checkpoint hash)."""
        from xt_engine.cli_infer import _apply_labels, _detection_overrides, _model_provenance
        from xt_engine.weights.loading import load_model

        key = (
            options.model,
            options.allow_untrained,
            options.labels,
            options.detection_threshold,
            options.max_detections,
        )
        with self._lock:
            if key not in self._models:
                model = load_model(options.model, allow_untrained=options.allow_untrained)
                _detection_overrides(model, argparse.Namespace(**asdict(options)))
                if options.labels:
                    _apply_labels(model, Path(options.labels))
                self._models[key] = (model, _model_provenance(options.model))
                self.loads += 1
            return self._models[key]


try:
    from distributed import WorkerPlugin
except ImportError:  # pragma: no cover - distributed is a dependency; serial runs need none
    WorkerPlugin = object  # type: ignore[assignment,misc]


class XTWorkerPlugin(WorkerPlugin):
    """Registered on every worker of a batch: torch's threads = the worker's threads, and the
    worker's :class:`ModelCache`."""

    cache: ModelCache

    def setup(self, worker: Any) -> None:  # on the worker (the plugin is sent without a cache)
        import logging

        import torch

        for library in ("tifffile", "wsidicom"):  # as `xt` does: their complaints about a bad
            logging.getLogger(library).setLevel(logging.CRITICAL)  # file come back as its error
        self.cache = ModelCache()
        torch.set_num_threads(max(1, int(worker.state.nthreads)))


def process_image(
    task: ImageTask,
    options: RunOptions,
    attempt: int = 1,
    delay: float = 0.0,
    *,
    cache: ModelCache | None = None,
    on_progress: ProgressCallback | None = None,
) -> ImageResult:
    """Run (or skip) one image into ``OUT_DIR/NAME.zarr`` (see the module docstring). Never
    raises for the image's own problems: they come back as a ``failed`` result with the error."""
    if delay:
        time.sleep(delay)
    worker, cache, on_progress = _here(cache, on_progress, progress_topic(options.run_id))
    started = time.perf_counter()
    store = Path(options.out_dir) / f"{task.name}.zarr"
    result = ImageResult(task.path, store.name, "failed", attempts=attempt, worker=worker)
    log = EventLog(Path(options.out_dir) / "logs" / f"{task.name}.jsonl")
    from xt_engine.errors import XTError
    from xt_engine.store.safety import StoreBusy

    try:
        model, model_info = cache.get(options)
        _run(task, options, attempt, store, model, model_info, result, log, on_progress)
    except StoreBusy as err:
        result.status, result.error = "busy", str(err)
    except Exception as err:  # noqa: BLE001 - an image's failure is reported, the batch goes on
        result.error = str(err) if isinstance(err, XTError) else _describe(err)
        if _now_complete(task, options, store, cache):  # another batch finished it meanwhile
            result.status, result.error = "skipped", ""
        elif _locked(store):  # another process is writing it (its metadata was mid-write)
            result.status = "busy"
    result.seconds = time.perf_counter() - started
    if result.status in ("done", "skipped"):
        result.report = _store_report(store)
    log.write("end", attempt=attempt, status=result.status, error=result.error)
    log.close()
    return result


def _run(
    task: ImageTask,
    options: RunOptions,
    attempt: int,
    store: Path,
    model: XTModel,
    model_info: dict[str, object],
    result: ImageResult,
    log: EventLog,
    on_progress: ProgressCallback | None,
) -> None:
    from xt_engine.batch.provenance import decide, plan_image
    from xt_engine.cli_infer import _device
    from xt_engine.runtime import Finished, Progress, RegionDone, Started, run_inference

    source, level, roi = plan_image(task, model, options)
    action = decide(store, source, level, roi, model, options)
    device = _device(options.device)
    result.device = _device_label(device)
    if action == "skip":
        result.status = "skipped"
        return
    batch_record = {"run_id": options.run_id, "options": options.result_options()}
    events = run_inference(
        source,
        model,
        output=store,
        level=level,
        roi=roi,
        batch_size=options.batch_size,
        device=device,
        attention=options.attention,
        resume=action == "resume",
        overwrite=action == "replace",
        foreground=options.foreground,
        provenance=model_info | {"batch": batch_record},
        precision=options.precision,
        compile=options.compile,
        flush_denormal=options.flush_denormal,
        quantize=options.quantize,
        feature_cache_mib=options.feature_cache_mib,
        overlap=options.overlap,
        probabilities=options.probabilities,
        blend=options.blend,
    )
    decoded: list[int] = []
    last = 0.0
    for event in events:
        if isinstance(event, Started):
            result.regions_total = event.total
            log.write(
                "start",
                attempt=attempt,
                pid=os.getpid(),
                worker=result.worker,
                action=action,
                done_before=_done_regions(store),
            )
        elif isinstance(event, RegionDone):
            decoded.append(event.region.index)
        elif isinstance(event, Progress):
            log.write("decoded", regions=decoded)
            result.regions += len(decoded)
            decoded = []
            now = time.monotonic()
            if on_progress is not None and (now - last > 0.5 or event.done == event.total):
                on_progress(task.name, event.done, event.total)
                last = now
        elif isinstance(event, Finished):
            result.run_seconds = event.seconds
    result.status = "done"


def progress_topic(run_id: str) -> str:
    """The dask event topic a batch's workers report region progress on."""
    return f"{PLUGIN_NAME}-{run_id}"


def _here(
    cache: ModelCache | None, on_progress: ProgressCallback | None, topic: str
) -> tuple[str, ModelCache, ProgressCallback | None]:
    """(worker name, model cache, progress callback): the dask worker's when this runs on
    one, else this process's (``host:pid``) with the cache and callback given."""
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return f"{socket.gethostname()}:{os.getpid()}", cache or ModelCache(), on_progress
    plugin = worker.plugins.get(PLUGIN_NAME)
    if not isinstance(plugin, XTWorkerPlugin):  # a worker that joined without the plugin
        plugin = XTWorkerPlugin()
        plugin.setup(worker)
        worker.plugins[PLUGIN_NAME] = plugin

    def publish(name: str, done: int, total: int) -> None:
        worker.log_event(topic, {"image": name, "done": done, "total": total})

    return f"{worker.address} (pid {os.getpid()})", plugin.cache, publish


def _now_complete(task: ImageTask, options: RunOptions, store: Path, cache: ModelCache) -> bool:
    """After an error: whether the store is now complete for this very run (another batch on
    the same folder finished it while this one looked)."""
    from xt_engine.batch.provenance import decide, plan_image

    try:
        model, _ = cache.get(options)
        source, level, roi = plan_image(task, model, options)
        return decide(store, source, level, roi, model, options, quiet=True) == "skip"
    except Exception:  # noqa: BLE001 - the first error is the one reported
        return False


def _locked(store: Path) -> bool:
    """Whether another process holds the store's lock (probed only where a store exists)."""
    from xt_engine.store.safety import LOCK_FILE, StoreBusy, StoreLock

    if not (store / LOCK_FILE).is_file():
        return False
    try:
        StoreLock(store).release()
    except StoreBusy:
        return True
    except Exception:  # noqa: BLE001 - not writable: not busy, the first error stands
        return False
    return False


def _done_regions(store: Path) -> list[int]:
    import numpy as np
    import zarr

    return [int(i) for i in np.flatnonzero(zarr.open_array(str(store / "xt_done"), mode="r")[:])]


def _store_report(store: Path) -> dict[str, Any] | None:
    from xt_engine.store.safety import read_store_attrs

    xt = read_store_attrs(store) or {}
    report = xt.get("report")
    return report if isinstance(report, dict) else None


def _device_label(device: str) -> str:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return f"{device} (CUDA_VISIBLE_DEVICES={visible})" if device != "cpu" and visible else device


def _describe(err: BaseException) -> str:
    """One line for an unexpected error: its type, message and where it was raised."""
    frame = traceback.extract_tb(err.__traceback__)[-1] if err.__traceback__ else None
    where = f" at {Path(frame.filename).name}:{frame.lineno}" if frame else ""
    return f"{type(err).__name__}: {err}{where}".replace("\n", " ")


class EventLog:
    """JSON lines appended to ``path``, the file kept open while a run writes. ``start`` and
    ``end`` lines are flushed at once, ``decoded`` lines at least every half second (a killed
    process loses at most its last half second of them; one write per batch cost ~1 ms here)."""

    FLUSH_S = 0.5

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: TextIO | None = None
        self._flushed = 0.0

    def write(self, event: str, **fields: object) -> None:
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = self.path.open("a")
        self._handle.write(json.dumps({"event": event, "time": time.time(), **fields}) + "\n")
        now = time.monotonic()
        if event != "decoded" or now - self._flushed > self.FLUSH_S:
            self._handle.flush()
            self._flushed = now

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
