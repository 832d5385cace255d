"""The two-pass token cache (:mod:`xt_engine.runtime.token_cache`): rows written in any order
read back bit for bit, unwritten rows are refused (never zeros), and the cache is one file in
the run's temporary folder, gone after the run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from xt_engine.runtime.token_cache import FILE_NAME, TokenCache


def test_rows_written_in_reverse_steps_read_back_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((10, 4, 3)).astype(np.float32)
    rows[0, 0, 0] = np.float32(1e-40)  # a denormal survives: the file holds the bytes
    with TokenCache(tmp_path, 10, 4, 3) as cache:
        for first, last in [(7, 10), (3, 7), (0, 3)]:  # pass 1's order: the last step first
            cache.write(first, rows[first:last])
        assert (tmp_path / FILE_NAME).stat().st_size == rows.nbytes
        for first, last in [(0, 3), (3, 7), (7, 10), (2, 9)]:
            np.testing.assert_array_equal(cache.read(first, last), rows[first:last])
        assert cache.read(0, 10).tobytes() == rows.tobytes()


def test_rows_never_written_are_refused_not_read_as_zeros(tmp_path: Path) -> None:
    with TokenCache(tmp_path, 6, 2, 2) as cache:
        cache.write(4, np.ones((2, 2, 2), np.float32))  # rows 0..3 are a hole in the file
        with pytest.raises(ValueError, match="not all written"):
            cache.read(0, 2)
        with pytest.raises(ValueError, match="do not fit"):
            cache.write(5, np.ones((2, 2, 2), np.float32))
        with pytest.raises(ValueError, match="do not fit"):
            cache.write(0, np.ones((1, 2, 3), np.float32))


def test_a_two_pass_run_writes_one_cache_file_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import xt_engine.runtime.passes as passes
    from xt_engine import create_model, run_inference

    seen: list[tuple[Path, int, int, int]] = []
    real = passes.TokenCache

    def spy(folder, rows, per_region, dim):  # type: ignore[no-untyped-def]
        seen.append((Path(folder), rows, per_region, dim))
        return real(folder, rows, per_region, dim)

    monkeypatch.setattr(passes, "TokenCache", spy)
    model = create_model("test_convnext_txl_bidir").eval()
    image = np.random.default_rng(0).integers(0, 255, (256, 320, 3), np.uint8)
    list(run_inference(image, model, cache_dir=tmp_path, feature_cache_mib=0))
    ((folder, rows, per_region, dim),) = seen
    grid = model.token_grid
    assert rows == 4 * 5 and per_region == grid[0] * grid[1]
    assert dim == model.config.context_encoder.dim
    assert not folder.exists() and list(tmp_path.iterdir()) == []
