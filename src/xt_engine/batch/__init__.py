"""Batch runs: many images through one model, one result store each, on ``dask.distributed``
(a local cluster, an existing scheduler, Slurm through dask-jobqueue) or as deterministic
shards with no scheduler; a run report over all of them.

* :mod:`~xt_engine.batch.inputs`: folders, globs and manifests -> :class:`ImageTask` (stable
  store names), shards;
* :mod:`~xt_engine.batch.worker`: one image on a worker (:func:`process_image`), the model
  loaded once per worker (:class:`XTWorkerPlugin`), skip / resume / redo, the event log;
* :mod:`~xt_engine.batch.provenance`: whether a store already holds this run's result;
* :mod:`~xt_engine.batch.runner`: :func:`run_batch`, retries after dead workers, busy stores;
* :mod:`~xt_engine.batch.cluster`: the local cluster, ``--scheduler``, worker resources;
* :mod:`~xt_engine.batch.report`: ``report.csv`` / ``report.json``;
* :mod:`~xt_engine.batch.progress`: the bars.
"""

from __future__ import annotations

from xt_engine.batch.inputs import ImageTask, collect_inputs, shard
from xt_engine.batch.report import ImageResult, write_report
from xt_engine.batch.runner import new_run_id, run_batch
from xt_engine.batch.worker import ModelCache, RunOptions, XTWorkerPlugin, process_image

__all__ = [
    "ImageResult",
    "ImageTask",
    "ModelCache",
    "RunOptions",
    "XTWorkerPlugin",
    "collect_inputs",
    "new_run_id",
    "process_image",
    "run_batch",
    "shard",
    "write_report",
]
