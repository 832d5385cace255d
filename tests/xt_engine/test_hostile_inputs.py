"""The fuzz table (issue 17): hostile or broken inputs, made by the test, answered by the CLI
with exit 2 and exactly one line on stderr naming the problem (no traceback), with the peak
resident memory of the process bounded (< 1.5 GB) where a header could ask for more.

Each case makes its files in a temporary folder and returns the ``xt`` arguments. The cases
whose peak memory matters (``bounded``: a header asking for a huge allocation) each run the CLI
in a fresh subprocess whose peak RSS (Linux ``VmHWM``, read at exit) comes back in a file; the
others run one after another through ``xt_engine.cli.main`` in one subprocess (one interpreter
start: importing torch costs seconds), each with its own stderr, any escaping exception written
there as its traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import zarr

RSS_LIMIT_MB = 1536.0

# runs the CLI, then writes the process's peak RSS (MiB) to $XT_TEST_RSS, however main ended
_WRAPPER = """
import os, sys
try:
    from xt_engine.cli import main
    code = main(sys.argv[1:])
finally:
    with open("/proc/self/status") as status:
        peak = next((int(l.split()[1]) for l in status if l.startswith("VmHWM:")), 0) / 1024
    with open(os.environ["XT_TEST_RSS"], "w") as out:
        out.write(str(peak))
sys.exit(code)
"""

# runs the CLI once per argument list in sys.argv[1] (JSON), each with its own stderr
_BATCH = """
import contextlib, io, json, os, sys, traceback
from xt_engine.cli import main
results = []
for args, cwd in json.load(open(sys.argv[1])):
    os.chdir(cwd)
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = main(args)
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else 1
        except BaseException:
            traceback.print_exc()
            code = 1
    results.append([code, err.getvalue()])
json.dump(results, open(sys.argv[2], "w"))
"""


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[Path], list[str]]  # writes the inputs under the folder, returns xt's args
    needle: str  # a piece of the one line the CLI must print
    bounded: bool = False  # a header asks for a large allocation: peak RSS checked


def run_xt(args: list[str], tmp: Path, env: dict[str, str] | None = None) -> tuple:
    """(exit code, stderr, peak RSS in MiB) of ``xt ARGS`` in a fresh process."""
    rss = tmp / "rss.txt"
    result = subprocess.run(
        [sys.executable, "-c", _WRAPPER, *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp,
        env={**os.environ, "XT_TEST_RSS": str(rss), **(env or {})},
    )
    peak = float(rss.read_text()) if rss.exists() else float("nan")
    return result.returncode, result.stderr, peak


def run_batch(jobs: list[tuple[list[str], Path]], tmp: Path) -> list[tuple[int, str]]:
    """(exit code, stderr) of each ``xt ARGS`` (run in its folder), all in one subprocess."""
    spec, results = tmp / "jobs.json", tmp / "results.json"
    spec.write_text(json.dumps([[args, str(cwd)] for args, cwd in jobs]))
    done = subprocess.run(
        [sys.executable, "-c", _BATCH, str(spec), str(results)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr
    return [(int(code), str(err)) for code, err in json.loads(results.read_text())]


# ---- malformed OME-Zarr metadata -------------------------------------------------------------

_AXES = [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}]


def _scaled(scale: object, path: str = "0") -> list[dict]:
    return [{"path": path, "coordinateTransformations": [{"type": "scale", "scale": scale}]}]


def _ome_zarr(ome: dict, arrays: tuple[str, ...] = ("0",)) -> Callable[[Path], list[str]]:
    def make(tmp: Path) -> list[str]:
        path = tmp / "image.ome.zarr"
        group = zarr.create_group(str(path), zarr_format=3)
        for name in arrays:
            group.create_array(name, shape=(64, 64), dtype="uint8", fill_value=1)
        group.attrs["ome"] = ome
        return ["info", str(path)]

    return make


def _ms(**fields: object) -> dict:
    multiscale = {"axes": _AXES, "datasets": _scaled([1.0, 1.0])} | fields
    return {"version": "0.5", "multiscales": [multiscale]}


ZARR_CASES = [
    Case(
        "zarr: no multiscales, two arrays",
        _ome_zarr({"version": "0.5"}, ("0", "1")),
        "no OME-Zarr multiscales metadata",
    ),
    Case(
        "zarr: multiscales not a list",
        _ome_zarr({"version": "0.5", "multiscales": {"a": 1}}),
        "multiscales metadata must be a non-empty list",
    ),
    Case(
        "zarr: multiscales of strings",
        _ome_zarr({"version": "0.5", "multiscales": ["x"]}),
        "multiscales metadata must be a non-empty list",
    ),
    Case("zarr: datasets empty", _ome_zarr(_ms(datasets=[])), "datasets must be a non-empty"),
    Case("zarr: datasets not a list", _ome_zarr(_ms(datasets=7)), "datasets must be a non-empty"),
    Case(
        "zarr: dataset path missing",
        _ome_zarr(_ms(datasets=_scaled([1, 1], "nope"))),
        "is missing from the store",
    ),
    Case(
        "zarr: 3 axes for a 2-D array",
        _ome_zarr(_ms(axes=[*_AXES, {"name": "c", "type": "channel"}])),
        "3 axes in multiscales",
    ),
    Case("zarr: axes not a list", _ome_zarr(_ms(axes=5)), "axes must be a list"),
    Case(
        "zarr: scale [0, -1]",
        _ome_zarr(_ms(datasets=_scaled([0, -1]))),
        "scale [0, -1] is not a list of finite numbers > 0",
    ),
    Case(
        "zarr: scale not numeric",
        _ome_zarr(_ms(datasets=_scaled(["a", "b"]))),
        "is not a list of finite numbers",
    ),
    Case(
        "zarr: coordinateTransformations not a list",
        _ome_zarr(_ms(datasets=[{"path": "0", "coordinateTransformations": 5}])),
        "coordinateTransformations must be a list",
    ),
    Case(
        "zarr: unknown NGFF version",
        _ome_zarr({**_ms(), "version": "9.9"}),
        "NGFF version '9.9' is not one this reader knows",
    ),
]

# ---- crafted headers: allocations bounded by the work, not by the header ---------------------


def tiff_bytes(
    width: int, height: int, rows: int, strips: list[bytes], bigtiff: bool = False
) -> bytes:
    """A grey uint8 deflate TIFF written byte by byte: ``width`` x ``height`` px claimed in
    strips of ``rows`` rows whose data are ``strips`` (any length: the header decides)."""
    import struct

    n = len(strips)
    unit, count_fmt, head = (
        (8, "Q", b"II+\x00\x08\x00\x00\x00") if bigtiff else (4, "I", b"II*\x00")
    )
    entry = 20 if bigtiff else 12
    ifd_at = 16 if bigtiff else 8
    tags = 9
    ifd_size = (8 if bigtiff else 2) + tags * entry + unit
    arrays_at = ifd_at + ifd_size
    data_at = arrays_at + (2 * n * unit if n > 1 else 0)
    offsets, at = [], data_at
    for strip in strips:
        offsets.append(at)
        at += len(strip)
    long_type = 16 if bigtiff else 4

    def array_or_value(values: list[int], where: int) -> tuple[int, bytes]:
        if n == 1:
            return long_type, struct.pack("<" + count_fmt, values[0])
        return long_type, struct.pack("<" + count_fmt, where)

    fields = [
        (256, long_type, 1, struct.pack("<" + count_fmt, width)),
        (257, long_type, 1, struct.pack("<" + count_fmt, height)),
        (258, 3, 1, struct.pack("<H", 8)),
        (259, 3, 1, struct.pack("<H", 8)),  # deflate
        (262, 3, 1, struct.pack("<H", 1)),
        (273, *array_or_value(offsets, arrays_at), n),
        (277, 3, 1, struct.pack("<H", 1)),
        (278, long_type, 1, struct.pack("<" + count_fmt, rows)),
        (279, *array_or_value([len(x) for x in strips], arrays_at + n * unit), n),
    ]
    out = bytearray(head + struct.pack("<" + count_fmt, ifd_at))
    out += struct.pack("<Q" if bigtiff else "<H", tags)
    for field in fields:
        code, kind = field[0], field[1]
        count = field[3] if code in (273, 279) else field[2]
        value = field[2] if code in (273, 279) else field[3]
        fmt = "<HHQ" if bigtiff else "<HHI"
        out += struct.pack(fmt, code, kind, count) + value.ljust(unit, b"\x00")
    out += b"\x00" * unit  # no next IFD
    if n > 1:
        out += b"".join(struct.pack("<" + count_fmt, o) for o in offsets)
        out += b"".join(struct.pack("<" + count_fmt, len(x)) for x in strips)
    out += b"".join(strips)
    return bytes(out)


def _file(
    name: str, content: Callable[[], bytes], command: str = "info"
) -> Callable[[Path], list[str]]:
    def make(tmp: Path) -> list[str]:
        path = tmp / name
        path.write_bytes(content())
        if command == "info":
            return ["info", str(path)]
        return [
            "infer",
            str(path),
            "--model",
            _gray_model(tmp),
            "--out",
            str(tmp / "out.zarr"),
        ]

    return make


def _gray_model(tmp: Path) -> str:
    """A tiny one-channel checkpoint: the crafted grey images reach the reads it would run."""
    from xt_engine.config import XTConfig
    from xt_engine.models import create_model
    from xt_engine.weights.checkpoint import save_checkpoint

    config = {
        "tiling": {"region_size": 64},
        "region_encoder": {"name": "test_convnext", "in_chans": 1},
        "context_encoder": {"kind": "none", "dim": 32},
        "head": {"task": "segmentation", "num_classes": 2},
    }
    path = tmp / "gray.safetensors"
    save_checkpoint(create_model(XTConfig.from_dict(config)), path)
    return str(path)


def _zlib(n: int = 4096) -> bytes:
    import zlib

    return zlib.compress(b"\x00" * n, 9)


def _zarr_header(shape: list[int], chunks: list[int]) -> Callable[[Path], list[str]]:
    """A zarr v3 array whose zarr.json claims ``shape`` in ``chunks`` (no chunk written)."""

    def make(tmp: Path) -> list[str]:
        path = tmp / "claim.zarr"
        zarr.create_array(str(path), shape=(64, 64), chunks=(64, 64), dtype="uint8")
        meta = json.loads((path / "zarr.json").read_text())
        meta["shape"] = shape
        meta["chunk_grid"]["configuration"]["chunk_shape"] = chunks
        (path / "zarr.json").write_text(json.dumps(meta))
        return [
            "infer",
            str(path),
            "--model",
            _gray_model(tmp),
            "--out",
            str(tmp / "out.zarr"),
        ]

    return make


BOUNDED_CASES = [
    Case(
        "tiff: 10^6 x 10^6 px in one zlib strip (infer)",
        _file("strip.tif", lambda: tiff_bytes(10**6, 10**6, 10**6, [_zlib()]), "infer"),
        "one strip of 1000000 x 1000000 decodes to",
        bounded=True,
    ),
    Case(
        "tiff: 10^6 x 10^6 px in one zlib strip (info)",
        _file("strip.tif", lambda: tiff_bytes(10**6, 10**6, 10**6, [_zlib()])),
        "above the 256 MiB bound on one decode",
        bounded=True,
    ),
    Case(
        "tiff: 10^6 x 10^6 px in 5000 strips of 200 MB, 20 bytes each",
        _file("strips.tif", lambda: tiff_bytes(10**6, 10**6, 200, [_zlib()] * 5000), "infer"),
        "the header claims 953,674 MiB of pixels but the file stores",
        bounded=True,
    ),
    Case(
        "bigtiff: 2^40 x 2^40 px header",
        _file("big.tif", lambda: tiff_bytes(2**40, 2**40, 1, [_zlib()], bigtiff=True), "infer"),
        "the header claims 1099511627776 x 1099511627776 px",
        bounded=True,
    ),
    Case(
        "zarr: 10^31 x 10^31 px header (10^62 px)",
        _zarr_header([10**31, 10**31], [256, 256]),
        "beyond the 1.76e+13 px",
        bounded=True,
    ),
    Case(
        "zarr: one 100000 x 100000 chunk",
        _zarr_header([100_000, 100_000], [100_000, 100_000]),
        "one chunk of 100000 x 100000 decodes to 9,537 MiB",
        bounded=True,
    ),
    Case(
        "tiff: 152 bytes of garbage",
        _file("junk.tif", lambda: b"II*\x00" + b"\xff" * 148),
        "no image directory can be read",
        bounded=True,
    ),
    Case(
        "tiff: truncated header",
        _file("cut.tif", lambda: tiff_bytes(64, 64, 64, [_zlib()])[:30]),
        "is not a readable TIFF",
        bounded=True,
    ),
]


# ---- crafted checkpoints and other inputs (fixed earlier in issue 17; kept in the table) ------

TINY_MODEL = {
    "tiling": {"region_size": 64},
    "region_encoder": {"name": "test_convnext", "in_chans": 3},
    "context_encoder": {"kind": "none", "dim": 32},
    "head": {"task": "segmentation", "num_classes": 2},
}


def _infer_with(write: Callable[[Path], None]) -> Callable[[Path], list[str]]:
    """``xt infer`` of a small RGB TIFF with the checkpoint ``write(path)`` makes."""

    def make(tmp: Path) -> list[str]:
        import tifffile

        tifffile.imwrite(tmp / "rgb.tif", np.zeros((64, 64, 3), np.uint8))
        write(tmp / "m.safetensors")
        return [
            "infer",
            str(tmp / "rgb.tif"),
            "--model",
            str(tmp / "m.safetensors"),
            "--out",
            str(tmp / "out.zarr"),
        ]

    return make


def _tensors(change: Callable[[dict], None] | None = None, config: dict | None = None):
    def write(path: Path) -> None:
        from safetensors.torch import save_file

        from xt_engine.config import XTConfig
        from xt_engine.models import create_model
        from xt_engine.weights.checkpoint import FORMAT

        state = {
            k: v.contiguous()
            for k, v in create_model(XTConfig.from_dict(TINY_MODEL)).state_dict().items()
        }
        if change is not None:
            change(state)
        meta = {"format": FORMAT, "xt_config": json.dumps(config or TINY_MODEL), "extra": "{}"}
        save_file(state, str(path), metadata=meta)

    return write


def _reshape_first(state: dict) -> None:
    key = next(iter(state))
    state[key] = torch_zeros(state[key].numel() + 1)


def _nan_first(state: dict) -> None:
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key] = state[key].clone().fill_(float("nan"))


def torch_zeros(n: int):
    import torch

    return torch.zeros(n)


HUGE_MODEL = {
    **TINY_MODEL,
    "context_encoder": {"kind": "transformer_xl", "dim": 16384, "depth": 48, "num_heads": 128},
}


def _fifo(tmp: Path) -> list[str]:
    os.mkfifo(tmp / "image.tif")
    return ["info", str(tmp / "image.tif")]


OTHER_CASES = [
    Case(
        "checkpoint: not a safetensors file",
        _infer_with(lambda p: p.write_bytes(b"\x80\x04junk" * 20)),
        "not a safetensors file",
    ),
    Case(
        "checkpoint: 200-byte header naming a 100+ GB model",
        _infer_with(_tensors(lambda s: [s.clear(), s.update(w=torch_zeros(1))], HUGE_MODEL)),
        "tensor(s) its config needs",
        bounded=True,
    ),
    Case(
        "checkpoint: a tensor of the wrong shape",
        _infer_with(_tensors(_reshape_first)),
        "has shape [4] but its config",
    ),
    Case("checkpoint: NaN weights", _infer_with(_tensors(_nan_first)), "non-finite"),
    Case("image: a FIFO", _fifo, "not a regular file", bounded=True),
    Case(
        "infer: --device tpu",
        lambda tmp: [*_infer_with(_tensors())(tmp), "--device", "tpu"],
        "--device tpu is not a device here",
    ),
    Case(
        "demo: --size 0",
        lambda tmp: ["demo", "--size", "0", "--out", str(tmp / "d")],
        "--size 0 is too small",
    ),
]


# ---- xt train: manifests, train states, masks, --out ------------------------------------------

TRAIN_CONFIG = {
    "tiling": {"region_size": 64},
    "region_encoder": {"name": "test_convnext", "in_chans": 1},
    "context_encoder": {"kind": "transformer_xl", "dim": 32, "depth": 1, "chunk_regions": 2},
    "head": {"task": "segmentation", "num_classes": 3},
    "train": {"crop_size": 64, "batch_size": 1, "max_steps": 2, "val_every": 2, "val_crops": 1},
}


def _train_data(tmp: Path, mask_max: int = 2) -> list[str]:
    """An image and mask pair, a manifest of them and a config: the args of ``xt train``
    without the data and --out."""
    import tifffile

    rng = np.random.default_rng(0)
    tifffile.imwrite(tmp / "a.tif", rng.integers(0, 255, (96, 128), np.uint8))
    tifffile.imwrite(tmp / "a_mask.tif", rng.integers(0, mask_max + 1, (96, 128), np.uint8))
    (tmp / "cfg.json").write_text(json.dumps(TRAIN_CONFIG))
    return ["train", "--config", str(tmp / "cfg.json")]


def _manifest(name: str, content: str | bytes) -> Callable[[Path], list[str]]:
    def make(tmp: Path) -> list[str]:
        args = _train_data(tmp)
        path = tmp / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return [*args, "--manifest", str(path), "--out", str(tmp / "m.safetensors")]

    return make


def _train(
    out: Callable[[Path], None] | None = None, mask_max: int = 2, flags: tuple[str, ...] = ()
) -> Callable[[Path], list[str]]:
    """``xt train`` on the pair; ``out(tmp)`` prepares what lies at --out first."""

    def make(tmp: Path) -> list[str]:
        args = _train_data(tmp, mask_max)
        (tmp / "list.csv").write_text("image,mask\na.tif,a_mask.tif\n")
        if out is not None:
            out(tmp)
        return [
            *args,
            "--manifest",
            str(tmp / "list.csv"),
            "--out",
            str(tmp / "m.safetensors"),
            *flags,
        ]

    return make


def _checkpoint(tmp: Path) -> None:
    from xt_engine.config import XTConfig
    from xt_engine.models import create_model
    from xt_engine.weights.checkpoint import save_checkpoint

    config = XTConfig.from_dict({k: v for k, v in TRAIN_CONFIG.items() if k != "train"})
    save_checkpoint(create_model(config), tmp / "m.safetensors")


def _bad_state(content: bytes) -> Callable[[Path], None]:
    def put(tmp: Path) -> None:
        _checkpoint(tmp)
        (tmp / "m.safetensors.trainstate.pt").write_bytes(content)

    return put


TRAIN_CASES = [
    Case(
        "manifest: missing",
        lambda tmp: [*_train_data(tmp), "--manifest", str(tmp / "no.csv"), "--out", "m.st"],
        "does not exist",
    ),
    Case(
        "manifest: JSON entry without mask",
        _manifest("m.json", '[{"image": "a.tif"}]'),
        "entry 0 has no image and mask paths",
    ),
    Case(
        "manifest: CSV row without mask column",
        _manifest("m.csv", "image,mask\na.tif\n"),
        "row 2 has no image and mask columns",
    ),
    Case("manifest: empty JSON list", _manifest("m.json", "[]"), "lists no image and mask pairs"),
    Case("manifest: empty CSV", _manifest("m.csv", ""), "lists no image and mask pairs"),
    Case("manifest: not JSON", _manifest("m.json", "{nope"), "is not valid JSON"),
    Case("manifest: JSON object", _manifest("m.json", '{"a": 1}'), "holds no list of pairs"),
    Case("manifest: binary", _manifest("m.csv", b"\xff\xfe\x00\x81" * 64), "is not a text"),
    Case("train: mask label >= num_classes", _train(mask_max=9), "but the model has 3 classes"),
    Case(
        "train: --out exists",
        _train(lambda tmp: (tmp / "m.safetensors").write_bytes(b"weights")),
        "already exists",
    ),
    Case(
        "train: --resume without train state",
        _train(_checkpoint, flags=("--resume",)),
        "no train state",
    ),
    Case(
        "train: train state not a torch file",
        _train(_bad_state(b"garbage" * 10), flags=("--resume",)),
        "cannot be read",
    ),
]

CASES = [*ZARR_CASES, *TRAIN_CASES, *BOUNDED_CASES, *OTHER_CASES]


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[list[str], int, str]]:
    """Every case that is not ``bounded``, run in one subprocess: name -> (args, code, stderr)."""
    jobs = []
    for i, case in enumerate(c for c in CASES if not c.bounded):
        folder = tmp_path_factory.mktemp(f"case{i}")
        jobs.append((case.name, case.make(folder), folder))
    results = run_batch([(args, folder) for _, args, folder in jobs], tmp_path_factory.mktemp("b"))
    return {name: (args, *result) for (name, args, _), result in zip(jobs, results, strict=True)}


def _one_line(args: list[str], code: int, stderr: str, needle: str) -> str:
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr, stderr
    assert code == 2 and len(lines) == 1, (code, stderr)
    assert lines[0].startswith(f"xt {args[0]}: error: ") and needle in lines[0], lines[0]
    assert "(fix: " in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_input_exits_2_with_one_line(case: Case, tmp_path: Path, batch: dict) -> None:
    if not case.bounded:
        _one_line(*batch[case.name], case.needle)
        return
    args = case.make(tmp_path)
    code, stderr, peak = run_xt(args, tmp_path)
    _one_line(args, code, stderr, case.needle)
    assert peak < RSS_LIMIT_MB, f"{case.name}: peak RSS {peak:.0f} MiB"
    print(f"{case.name}: peak RSS {peak:.0f} MiB")


# ---- whole CSV rows ---------------------------------------------------------------------------


@pytest.mark.parametrize("torn", ["1,12.5", "1", "1,12.50,30.00,1,ship,0.9", "\n1,a,b,c"])
def test_a_torn_detection_row_does_not_survive_the_resume_cleanup(
    tmp_path: Path, torn: str
) -> None:
    """A kill mid-write leaves part of a row (here of a region already recorded as done, the
    case a region filter alone keeps); the resume cleanup keeps only whole rows."""
    from xt_engine import open_image
    from xt_engine.models import model_config
    from xt_engine.store.result_store import DETECTIONS_FILE, OutputStore
    from xt_engine.tiling import RegionGrid

    source = open_image(np.zeros((128, 192, 3), np.uint8))
    grid = RegionGrid.for_image(source.shape_yx(0), 64)
    config = model_config("test_convnext_txl_det")
    kw = {"source": source, "level": 0, "grid": grid, "config": config}
    store = OutputStore.create(tmp_path / "det.zarr", **kw)
    rows = np.array([[10.0, 20.0, 1, 0.9, 8.0, 8.0], [30.0, 40.0, 2, 0.5, 4.0, 4.0]], np.float32)
    for i in range(3):
        store.write_region(grid.region(i), None, None, rows + 64 * (i % 3))
    table = tmp_path / "det.zarr" / DETECTIONS_FILE
    whole = table.read_text()
    with table.open("a") as handle:
        handle.write(torn)  # the kill: no line end, fields missing
    OutputStore.resume(tmp_path / "det.zarr", **kw)
    assert table.read_text() == whole


def test_the_decode_bound_is_documented_and_overridable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real 2048 x 2048 single-strip deflate TIFF (a 4 MiB strip) opens under the default
    bound, is refused under XT_MAX_DECODE_MB=1 with the variable named, and a bad value is
    refused naming it."""
    import tifffile

    from xt_engine import InputError, open_image
    from xt_engine.io import limits

    path = tmp_path / "one_strip.tif"
    image = np.random.default_rng(0).integers(0, 255, (2048, 2048), np.uint8)
    tifffile.imwrite(path, image, compression="zlib", rowsperstrip=2048)
    assert limits.DEFAULT_MAX_DECODE_MB == 256 and limits.DECODE_ENV in limits.__doc__
    np.testing.assert_array_equal(open_image(path).read(0, 0, 0, 8, 8)[0], image[:8, :8])
    monkeypatch.setenv("XT_MAX_DECODE_MB", "1")
    with pytest.raises(InputError, match="one strip of 2048 x 2048 decodes to 4 MiB.*XT_MAX_"):
        open_image(path)
    monkeypatch.setenv("XT_MAX_DECODE_MB", "lots")
    with pytest.raises(InputError, match="XT_MAX_DECODE_MB='lots' is not a positive number"):
        open_image(path)
