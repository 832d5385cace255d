"""The result store: an OME-Zarr (NGFF 0.5) written region by region, its label pyramid, the
chunk-file fast path, NGFF metadata and the run's provenance."""

from xt_engine.store.detections import DETECTION_COLUMNS, DETECTIONS_FILE
from xt_engine.store.result_store import LABELS_PATH, OutputStore

__all__ = ["DETECTIONS_FILE", "DETECTION_COLUMNS", "LABELS_PATH", "OutputStore"]
