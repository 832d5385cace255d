"""Whole chunks of a local zarr v3 array read and written as files, without zarr's event loop.

The result store's hot path writes one region tile per chunk (and the label pyramid one chunk per
block). Through zarr's array API each such call costs ~0.7 ms of scheduling on top of ~0.25 ms of
zstd and file work, and on a 2-core CPU that time is taken from the model. :class:`ChunkFiles`
does the same work directly, for the one layout the store creates (see :meth:`ChunkFiles.of`):
regular chunk grid, default ``c/i/j`` keys with ``/``, codecs ``bytes`` + ``zstd``, 1-byte dtype,
a :class:`zarr.storage.LocalStore`. Files are written as zarr writes them: the whole chunk (edge
chunks padded with the fill value), through a temporary file renamed into place, and a chunk
equal to the fill value is removed rather than written (zarr's ``write_empty_chunks=False``).
Anything else returns ``None`` from :meth:`ChunkFiles.of` and callers keep using zarr slicing,
which is also the reference the tests compare against.

The layout check reads zarr's array metadata classes from ``zarr.core`` (not public API):
pyproject.toml pins the zarr releases this was checked against (3.0-3.1), and
``tests/xt_engine/test_chunk_files.py`` fails when the installed zarr leaves that range or
when the files stop matching what zarr writes.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np
import zarr
from numcodecs import Zstd
from zarr.codecs import BytesCodec, ZstdCodec
from zarr.core.chunk_grids import RegularChunkGrid
from zarr.core.chunk_key_encodings import DefaultChunkKeyEncoding
from zarr.storage import LocalStore


class ChunkFiles:
    """Chunk-file access to one array; ``index`` is the chunk's grid position, e.g. ``(cy, cx)``."""

    def __init__(
        self, root: Path, chunk_shape: tuple[int, ...], dtype: np.dtype, fill: object
    ) -> None:
        self.root = root
        self.chunk_shape = chunk_shape
        self.dtype = dtype
        self.fill = fill
        self._codec = Zstd(level=0)

    @classmethod
    def of(cls, array: zarr.Array) -> ChunkFiles | None:
        """Direct access to ``array``'s chunks, or ``None`` when its layout is not the plain one
        described in the module docstring (the caller then uses zarr)."""
        meta = array.metadata
        store = array.store
        if meta.zarr_format != 3 or not isinstance(store, LocalStore):
            return None
        codecs, grid = meta.codecs, meta.chunk_grid
        plain = (
            isinstance(grid, RegularChunkGrid)
            and isinstance(meta.chunk_key_encoding, DefaultChunkKeyEncoding)
            and meta.chunk_key_encoding.separator == "/"
            and len(codecs) == 2
            and isinstance(codecs[0], BytesCodec)
            and isinstance(codecs[1], ZstdCodec)
            and not codecs[1].checksum
            and np.dtype(array.dtype).itemsize == 1
            and array.order == "C"
            and not array.config.write_empty_chunks
        )
        if not plain:
            return None
        root = Path(store.root) / array.path
        assert isinstance(grid, RegularChunkGrid)
        return cls(root, tuple(grid.chunk_shape), np.dtype(array.dtype), meta.fill_value)

    def path(self, index: tuple[int, ...]) -> Path:
        return self.root.joinpath("c", *(str(i) for i in index))

    def write(self, index: tuple[int, ...], data: np.ndarray) -> None:
        """Store ``data`` (at most the chunk's shape; an edge chunk's valid part) as the chunk at
        ``index``; the rest of the chunk is the fill value."""
        if data.shape != self.chunk_shape:
            full = np.full(self.chunk_shape, self.fill, dtype=self.dtype)
            full[tuple(slice(0, n) for n in data.shape)] = data
            data = full
        path = self.path(index)
        if not np.any(data != self.fill):
            path.unlink(missing_ok=True)
            return
        encoded = self._codec.encode(np.ascontiguousarray(data, dtype=self.dtype))
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{uuid.uuid4().hex}.partial")
        try:
            partial.write_bytes(encoded)
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)

    def read(self, index: tuple[int, ...]) -> np.ndarray:
        """The whole chunk at ``index`` (the fill value where none was written)."""
        try:
            encoded = self.path(index).read_bytes()
        except FileNotFoundError:
            return np.full(self.chunk_shape, self.fill, dtype=self.dtype)
        raw = self._codec.decode(encoded)
        return np.frombuffer(raw, dtype=self.dtype).reshape(self.chunk_shape).copy()
