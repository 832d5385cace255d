"""The triton workaround (src/napari_xt/__init__.py) acts only where it fixes a crash: no CUDA
and Mesa's LLVM (llvmpipe OpenGL) already in the process. The crash itself is covered by
test_reader_and_manifest.py::test_plugin_loads_after_the_viewer_exists."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import pytest

import napari_xt


@pytest.mark.parametrize(("llvm", "cuda"), [(False, False), (True, True), (False, True)])
def test_triton_is_left_alone_unless_both_hold(monkeypatch, llvm: bool, cuda: bool) -> None:
    monkeypatch.setattr(napari_xt, "system_llvm_loaded", lambda: llvm)
    monkeypatch.setattr(napari_xt, "_cuda_available", lambda: cuda)
    assert napari_xt.TritonGuard().find_spec("triton") is None


def test_triton_is_refused_without_cuda_once_mesa_llvm_is_loaded(monkeypatch) -> None:
    monkeypatch.setattr(napari_xt, "system_llvm_loaded", lambda: True)
    monkeypatch.setattr(napari_xt, "_cuda_available", lambda: False)
    monkeypatch.delitem(sys.modules, "triton", raising=False)  # restored after the test
    guard = napari_xt.TritonGuard()
    assert guard.find_spec("numpy") is None  # other modules: untouched
    with pytest.raises(ModuleNotFoundError, match="llvmpipe"):
        guard.find_spec("triton")
    assert sys.modules["triton"] is None  # torch then treats triton as not installed


def test_triton_still_loads_where_it_is_safe() -> None:
    """Importing the plugin before any OpenGL exists leaves triton importable (and loaded
    then, a later llvmpipe is harmless)."""
    try:
        importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("triton is not installed")
    code = "import napari_xt, triton, sys\nprint('loaded', type(sys.modules['triton']).__name__)\n"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0 and "loaded module" in result.stdout, result.stderr[-2000:]
