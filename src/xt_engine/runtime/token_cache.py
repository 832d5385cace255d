"""The two-pass token cache: pass 1's backward-context outputs on disk until pass 2 reads them.

One flat file of float32 rows, ``(rows, tokens per region, dim)`` in C order, written and read
at byte offsets with ``os.pwrite`` / ``os.preadv``: a step's rows are one contiguous run, so a
step is one system call each way. (A zarr array cost ~5 ms a call on a 2-core CPU, through its
event loop, against ~0.05 ms here; the file holds the same bytes.) The file is sparse until
written and costs nothing in RAM beyond the page cache, which the OS may evict; its size is
checked against the free space before the run (:func:`xt_engine.runtime.passes.check_cache_space`)
and a full disk raises the ``OSError`` that :func:`xt_engine.runtime.resources.write_error` turns
into one line.
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
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)

    def write(self, first: int, values: np.ndarray) -> None:
        """Rows ``first .. first + len(values) - 1`` (``values``: ``(n, per_region, dim)``)."""
        if values.shape[1:] != self.row_shape or first < 0 or first + len(values) > self.rows:
            raise ValueError(
                f"rows {first}+{values.shape} do not fit {self.rows} x {self.row_shape}"
            )
        data = np.ascontiguousarray(values, dtype=np.float32).data.cast("B")
        offset = first * self.row_bytes
        while data:  # a short write (a signal, a nearly full disk) continues where it stopped
            written = os.pwrite(self._fd, data, offset)
            if written == 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))
            data, offset = data[written:], offset + written
        self._written[first : first + len(values)] = True

    def read(self, first: int, last: int) -> np.ndarray:
        """Rows ``first .. last - 1`` as a new ``(last - first, per_region, dim)`` array."""
        if not 0 <= first <= last <= self.rows:
            raise ValueError(f"rows {first}..{last} outside 0..{self.rows}")
        if not self._written[first:last].all():  # a bug in the caller's order, never zeros
            raise ValueError(f"token cache rows {first}..{last} were not all written")
        out = np.empty((last - first, *self.row_shape), dtype=np.float32)
        view, offset = out.data.cast("B"), first * self.row_bytes
        while view:
            got = os.preadv(self._fd, [view], offset)
            if got == 0:
                raise OSError(
                    errno.EIO, "the token cache file is shorter than written", str(self.path)
                )
            view, offset = view[got:], offset + got
        return out

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> TokenCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
