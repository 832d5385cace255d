"""The widget's remembered settings and default output folder stay inside each test's tmp_path
(never the user's config folder or ~/napari-xt)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def results_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from napari_xt._settings import CONFIG_ENV, save_settings

    monkeypatch.setenv(CONFIG_ENV, str(tmp_path / "config"))
    results = tmp_path / "results"
    save_settings({"output_folder": str(results)})
    return results
