"""Slurm through dask-jobqueue: one Slurm job per dask worker, one GPU each.

:func:`slurm_cluster` is a ``dask_jobqueue.SLURMCluster`` whose job asks Slurm for GPUs
(``--gres=gpu:N``; Slurm then sets the job's ``CUDA_VISIBLE_DEVICES``), whose worker declares
the resources ``GPU`` and ``image`` (so each worker runs one image at a time on its GPU), whose
scheduler, running in this process, leaves dead workers' retries to the batch, and whose
workers start in the local cluster's environment (see :mod:`xt_engine.batch.cluster`). What is
not given comes from dask-jobqueue's configuration (``~/.config/dask/jobqueue.yaml``, section
``jobqueue.slurm``). Needs ``pip install napari-xt[slurm]``. The whole recipe: docs/batch.md.
"""

from __future__ import annotations

from typing import Any

from xt_engine.batch.cluster import SCHEDULER_CONFIG, WORKER_ENVIRON
from xt_engine.errors import InputError


def slurm_cluster(
    *,
    cores: int | None = None,
    memory: str | None = None,
    walltime: str | None = None,
    queue: str | None = None,
    gpus_per_job: int = 1,
    **kwargs: Any,
) -> Any:
    """A ``SLURMCluster`` with one worker process per job (call ``.scale(jobs=N)`` on it);
    ``kwargs`` go to ``SLURMCluster`` as they are (``account``, ``job_extra_directives``...)."""
    try:
        import dask
        from dask_jobqueue import SLURMCluster
    except ImportError as err:
        raise InputError(
            "Slurm clusters need dask-jobqueue, which is not installed",
            "pip install 'napari-xt[slurm]'",
        ) from err
    extra = list(kwargs.pop("job_extra_directives", []))
    resources = "image=1"
    if gpus_per_job:
        extra.append(f"--gres=gpu:{gpus_per_job}")
        resources = f"GPU={gpus_per_job},image=1"
    given: dict[str, Any] = {"cores": cores, "memory": memory, "walltime": walltime, "queue": queue}
    prologue = list(kwargs.pop("job_script_prologue", []))  # the worker environment, as local
    prologue.append(f'export DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON="{WORKER_ENVIRON}"')
    with dask.config.set(SCHEDULER_CONFIG):
        return SLURMCluster(
            processes=1,
            job_extra_directives=extra,
            job_script_prologue=prologue,
            worker_extra_args=[*kwargs.pop("worker_extra_args", []), "--resources", resources],
            **{k: v for k, v in given.items() if v is not None},
            **kwargs,
        )
