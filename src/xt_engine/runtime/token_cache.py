"""The two-pass token cache: pass 1's backward-context outputs on disk until pass 2 reads them.

One flat file of float32 rows, ``(rows, tokens per region, dim)`` in C order, written and read
at byte offsets through an unbuffered file: a step's rows are one contiguous run, so a step is
a seek and one ``write`` or ``readinto`` each way (~0.03 ms a step on a 2-core CPU, against
1.7-3.4 ms through a zarr array's event loop: ``docs/benchmarks.md``). The file is sparse until
written and costs nothing in RAM beyond the page cache, which the OS may evict; its size is
checked against the free space before the run
(:func:`xt_engine.runtime.passes.check_cache_space`) and a full disk raises the ``OSError``
that :func:`xt_engine.runtime.resources.write_error` turns into one line.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np

FILE_NAME = "tokens.f32"


class TokenCache:
    """``rows`` rows of ``(per_region, dim)`` float32 in ``folder/tokens.f32`` (created empty).
    Use as a context manager, or call :meth:`close`; the folder's removal is the caller's."""

    def __init__(self, folder: str | os.PathLike[str], rows: int, per_region: int, dim: int):
        self.path = Path(folder) / FILE_NAME
        self.row_shape = (per_region, dim)
        self.row_bytes = per_region * dim * 4
        self.rows = rows
        self._written = np.zeros(rows, dtype=bool)
        self._file = open(self.path, "x+b", buffering=0)  # noqa: SIM115 (closed by close())

    def write(self, first: int, values: np.ndarray) -> None:
        """Rows ``first .. first + len(values) - 1`` (``values``: ``(n, per_region, dim)``)."""
        if values.shape[1:] != self.row_shape or first < 0 or first + len(values) > self.rows:
            raise ValueError(
                f"rows {first}+{values.shape} do not fit {self.rows} x {self.row_shape}"
            )
        data = np.ascontiguousarray(values, dtype=np.float32).data.cast("B")
        offset = first * self.row_bytes
        self._file.seek(offset)
        while data:  # a short write (a signal, a nearly full disk) continues where it stopped
            written = self._file.write(data)
            if not written:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))
            data = data[written:]
        self._written[first : first + len(values)] = True

    def read(self, first: int, last: int) -> np.ndarray:
        """Rows ``first .. last - 1`` as a new ``(last - first, per_region, dim)`` array."""
        if not 0 <= first <= last <= self.rows:
            raise ValueError(f"rows {first}..{last} outside 0..{self.rows}")
        if not self._written[first:last].all():  # a bug in the caller's order, never zeros
            raise ValueError(f"token cache rows {first}..{last} were not all written")
        out = np.empty((last - first, *self.row_shape), dtype=np.float32)
        view = out.data.cast("B")
        self._file.seek(first * self.row_bytes)
        while view:
            got = self._file.readinto(view)
            if not got:
                raise OSError(
                    errno.EIO, "the token cache file is shorter than written", str(self.path)
                )
            view = view[got:]
        return out

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> TokenCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
