"""xt batch (xt_engine.batch): inputs, a 2-process LocalCluster against serial `xt infer`, a
worker killed mid-image, a corrupt image, shards, two batches on one folder at once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from xt_engine.batch import ImageTask, RunOptions, collect_inputs, new_run_id, run_batch, shard
from xt_engine.batch.report import read_report
from xt_engine.batch.worker import EventLog
from xt_engine.cli import main
from xt_engine.errors import InputError

MODEL = ["--model", "test_convnext_none", "--allow-untrained"]
SHAPES = [(128, 192), (192, 128), (100, 130), (64, 64), (150, 200), (128, 128)]


def _write_images(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    paths = []
    for i, (h, w) in enumerate(SHAPES):
        path = folder / f"img{i}.tif"
        tifffile.imwrite(path, rng.integers(0, 255, (h, w, 3), np.uint8))
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return _write_images(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def serial(images: list[Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each image through a serial `xt infer`."""
    out = tmp_path_factory.mktemp("serial")
    stores = {}
    for path in images:
        store = out / f"{path.stem}.zarr"
        assert main(["infer", str(path), *MODEL, "--out", str(store)]) == 0
        stores[path.stem] = store
    return stores


@pytest.fixture(scope="module")
def client():
    """2 worker processes x 1 thread, closed whatever the tests do."""
    from distributed import Client

    from xt_engine.batch.cluster import local_cluster

    cluster = local_cluster(2, 1, use_gpus=False, dashboard_address=None)
    try:
        with Client(cluster, timeout="60s") as c:
            c.wait_for_workers(2, timeout=120)
            yield c
    finally:
        cluster.close(timeout=30)


def _options(out: Path, **kw: object) -> RunOptions:
    values: dict = {"batch_size": 4, "device": "cpu", "allow_untrained": True} | kw
    return RunOptions("test_convnext_none", str(out), new_run_id(), **values)


def _labels(store: Path) -> list[np.ndarray]:
    root = zarr.open_group(str(store), mode="r")
    group = root["labels/segmentation"]
    return [np.asarray(group[k][:]) for k in sorted(k for k in group.keys() if k.isdigit())]


def _assert_same_store(store: Path, expected: Path) -> None:
    xt = zarr.open_group(str(store), mode="r").attrs["xt"]
    assert xt["complete"] is True
    assert np.asarray(zarr.open_array(str(store / "xt_done"), mode="r")[:]).all()
    got, want = _labels(store), _labels(expected)
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)
    assert (
        xt["report"]["classes"]
        == dict(zarr.open_group(str(expected)).attrs["xt"])["report"]["classes"]
    )


def test_inputs_folders_globs_manifests_and_stable_names(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "case1").mkdir(parents=True)
    (root / "case2").mkdir()
    for rel in ("case1/slide.ome.tif", "case2/slide.svs", "top.png", "notes.txt"):
        (root / rel).write_bytes(b"x")
    zarr.create_array(store=str(root / "case2" / "scene.zarr"), data=np.zeros((8, 8), np.uint8))
    (root / "vms").mkdir()
    for rel in ("vms/a.vms", "vms/a_1.jpg"):  # a Hamamatsu slide: the jpg is one of its parts
        (root / rel).write_bytes(b"x")
    out = root / "results"  # the output folder inside the input is never an input
    out.mkdir()
    zarr.create_group(store=str(out / "old.zarr"))
    elsewhere = zarr.create_group(store=str(root / "case1" / "earlier.zarr"))  # a result store
    elsewhere.attrs["xt"] = {"software": "napari-xt 0", "complete": True}
    names = {t.name: t.path for t in collect_inputs([str(root)], out)}
    assert sorted(names) == ["case1__slide", "case2__scene", "case2__slide", "top", "vms__a"]
    assert [t.name for t in collect_inputs([str(root / "case*" / "*.svs")])] == ["case2__slide"]
    assert [t.name for t in collect_inputs([str(root / "top.png")])] == ["top"]
    manifest = tmp_path / "list.csv"
    manifest.write_text("path,roi,level,output\ndata/top.png,0 0 40 50,,top-roi\ndata/top.png\n")
    tasks = collect_inputs([str(manifest)])
    assert tasks == [
        ImageTask(str(tmp_path / "data/top.png"), "top"),
        ImageTask(str(tmp_path / "data/top.png"), "top-roi", (0, 0, 40, 50)),
    ]
    js = tmp_path / "list.json"
    js.write_text(json.dumps([{"path": str(root / "top.png"), "level": 1, "roi": [1, 2, 3, 4]}]))
    assert collect_inputs([str(js)]) == [ImageTask(str(root / "top.png"), "top", (1, 2, 3, 4), 1)]
    with pytest.raises(InputError, match="both be written to top.zarr"):
        collect_inputs([str(root / "top.png"), str(js)])
    with pytest.raises(InputError, match="not four integers"):
        js.write_text(json.dumps([{"path": "a.tif", "roi": [1, 2]}]))
        collect_inputs([str(js)])
    many = [ImageTask(f"{i}.tif", f"{i:03d}") for i in range(11)]
    shares = [shard(many, i, 3) for i in range(3)]
    assert sorted(t.name for s in shares for t in s) == [t.name for t in many]
    assert shares == [shard(many, i, 3) for i in range(3)]  # the same shares every time


def test_six_images_on_two_worker_processes_equal_serial_xt_infer(
    client, images: list[Path], serial: dict[str, Path], tmp_path: Path
) -> None:
    from xt_engine.batch.cluster import task_resources

    out = tmp_path / "out"
    tasks = collect_inputs([str(images[0].parent)], out)
    results = run_batch(tasks, _options(out), client, resources=task_resources(client, None))
    assert [r.status for r in results] == ["done"] * 6, [r.error for r in results]
    assert len({r.worker for r in results}) == 2  # both workers ran images
    for path in images:
        _assert_same_store(out / f"{path.stem}.zarr", serial[path.stem])
    # the model was loaded once per worker, not per image (and never shipped with a task)
    loads = client.run(lambda dask_worker: dask_worker.plugins["xt-batch"].cache.loads)
    assert sorted(loads.values()) == [1, 1]
    again = run_batch(tasks, _options(out), client)  # a new run: every store skipped
    assert [r.status for r in again] == ["skipped"] * 6
    from xt_engine.batch.report import RUN_COLUMNS, write_report

    rows = read_report(write_report(out, results))
    assert list(rows[0])[: len(RUN_COLUMNS)] == list(RUN_COLUMNS)
    assert {r["image"] for r in rows if r["status"] == "done"} == {str(p) for p in images}
    assert {r["class"] for r in rows} == {"background", "class_1", "class_2"}  # xt.report rows
    assert all(float(r["regions_per_s"]) > 0 and r["device"] == "cpu" for r in rows)
    report = json.loads((out / "report.json").read_text())["images"]
    assert report[0]["report"]["classes"][0]["class"] == "background"


def test_a_corrupt_image_is_reported_and_the_others_complete(
    client, images: list[Path], serial: dict[str, Path], tmp_path: Path
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for path in images[:2]:
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "broken.tif").write_bytes(images[2].read_bytes()[:300])  # a truncated TIFF
    out = tmp_path / "out"
    argv = ["batch", str(folder), *MODEL, "--out-dir", str(out), "--device", "cpu"]
    assert main([*argv, "--scheduler", client.scheduler.address]) == 1
    rows = {r["store"]: r for r in read_report(out / "report.csv")}
    assert rows["broken.zarr"]["status"] == "failed" and rows["broken.zarr"]["error"]
    for path in images[:2]:
        assert rows[f"{path.stem}.zarr"]["status"] == "done"
        _assert_same_store(out / f"{path.stem}.zarr", serial[path.stem])
    assert main([*argv, "--model", "no_such_model"]) == 2  # bad input: one line, exit 2


def test_shards_cover_every_input_once_without_a_scheduler(
    images: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    argv = ["batch", str(images[0].parent), *MODEL, "--out-dir", str(out), "--device", "cpu"]
    for i in range(2):
        assert main([*argv, "--shard", f"{i}/2"]) == 0
    shares = [read_report(out / f"report.shard-{i}-of-2.csv") for i in range(2)]
    stores = [{r["store"] for r in rows} for rows in shares]
    assert not stores[0] & stores[1]
    assert stores[0] | stores[1] == {f"{p.stem}.zarr" for p in images}
    assert all(r["status"] == "done" for rows in shares for r in rows)
    # a Slurm job array gives the same shares (task ids from SLURM_ARRAY_TASK_MIN on)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "1")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "2")
    assert main(argv) == 0
    again = read_report(out / "report.shard-1-of-2.csv")
    assert {r["store"] for r in again} == stores[1]
    assert {r["status"] for r in again} == {"skipped"}
    assert main([*argv, "--shard", "2/2"]) == 2


def test_keep_denormals_reaches_every_image(images: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = ["batch", str(images[0].parent), *MODEL, "--out-dir", str(out), "--device", "cpu"]
    assert main([*argv, "--shard", "0/3", "--keep-denormals"]) == 0
    stores = [out / r["store"] for r in read_report(out / "report.shard-0-of-3.csv")]
    assert stores
    modes = {zarr.open_group(str(s), mode="r").attrs["xt"]["cpu_denormals"] for s in stores}
    assert modes == {"keep"}


def _done_count(store: Path) -> int:
    try:
        return int(np.asarray(zarr.open_array(str(store / "xt_done"), mode="r")[:]).sum())
    except Exception:  # noqa: BLE001 - not there yet, or being created
        return 0


def _attempts(log: list[dict]) -> list[list[dict]]:
    """The log's lines split at each start line."""
    runs: list[list[dict]] = []
    for event in log:
        if event["event"] == "start":
            runs.append([])
        if runs:
            runs[-1].append(event)
    return runs


@pytest.mark.slow
def test_a_worker_killed_mid_image_the_image_resumes_elsewhere(
    client, images: list[Path], tmp_path: Path
) -> None:
    from xt_engine import run_inference
    from xt_engine.weights.loading import load_model

    big = tmp_path / "in" / "big.tif"
    big.parent.mkdir()
    side = 768  # 144 regions of 64 px, run one by one: long enough to be killed in the middle
    tifffile.imwrite(big, np.random.default_rng(3).integers(0, 255, (side, side, 3), np.uint8))
    for path in images[:3]:
        (big.parent / path.name).write_bytes(path.read_bytes())
    out = tmp_path / "out"
    tasks = collect_inputs([str(big.parent)], out)
    options = _options(out, batch_size=1)
    results: list = []
    thread = threading.Thread(target=lambda: results.extend(run_batch(tasks, options, client)))
    thread.start()
    log = EventLog(out / "logs" / "big.jsonl")
    deadline = time.time() + 180
    while time.time() < deadline and thread.is_alive():
        if _done_count(out / "big.zarr") >= 6:
            break
        time.sleep(0.02)
    starts = [e for e in log.read() if e["event"] == "start"]
    if not thread.is_alive() or _done_count(out / "big.zarr") == (side // 64) ** 2:
        thread.join()
        pytest.skip("the image finished before it could be killed (machine too fast)")
    (start,) = starts
    os.kill(start["pid"], signal.SIGKILL)
    thread.join(timeout=240)
    assert not thread.is_alive()
    by_store = {r.store: r for r in results}
    assert {r.status for r in results} == {"done"}, [r.error for r in results]
    assert by_store["big.zarr"].attempts == 2
    first, second = _attempts(log.read())
    assert first[0]["pid"] != second[0]["pid"]
    done_before = set(second[0]["done_before"])
    again = [i for e in second if e["event"] == "decoded" for i in e["regions"]]
    assert done_before and not done_before & set(again)  # no finished region decoded twice
    regions = (side // 64) ** 2
    assert sorted(done_before | set(again)) == list(range(regions))
    assert len(again) == len(set(again)) == regions - len(done_before)
    reference = tmp_path / "serial.zarr"
    model = load_model("test_convnext_none", allow_untrained=True)  # seeded, as on the workers
    list(run_inference(str(big), model, output=reference))
    _assert_same_store(out / "big.zarr", reference)


@pytest.mark.slow
def test_two_batches_on_one_folder_at_once_corrupt_nothing(
    images: list[Path], serial: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "xt_engine.cli", "batch", str(images[0].parent), *MODEL]
    argv += ["--out-dir", str(out), "--device", "cpu", "--shard", "0/1", "--batch-size", "1"]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for _ in range(2)
    ]
    for proc in procs:
        output, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, output.decode()[-2000:]
    statuses = read_report(out / "report.shard-0-of-1.csv")
    assert {r["status"] for r in statuses} <= {"done", "skipped"}
    for path in images:
        _assert_same_store(out / f"{path.stem}.zarr", serial[path.stem])
        log = EventLog(out / "logs" / f"{path.stem}.jsonl").read()
        decoded = [i for e in log if e["event"] == "decoded" for i in e["regions"]]
        assert sorted(decoded) == sorted(set(decoded))  # each region decoded by one batch once
        ends = sorted(e["status"] for e in log if e["event"] == "end" and e["status"] != "busy")
        assert ends == ["done", "skipped"], ends  # one batch ran it, the other found it done


def test_the_slurm_recipe_asks_for_one_gpu_per_worker() -> None:
    """The documented dask-jobqueue recipe's job script (no Slurm needed to write it)."""
    pytest.importorskip("dask_jobqueue")
    from xt_engine.batch.slurm import slurm_cluster

    cluster = slurm_cluster(
        cores=8,
        memory="64GB",
        walltime="04:00:00",
        queue="gpu",
        scheduler_options={"dashboard_address": ":0"},
    )
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert "#SBATCH --gres=gpu:1" in script and "#SBATCH -p gpu" in script
    assert "--resources GPU=1,image=1" in script and "--nthreads 8" in script
    assert "MALLOC_TRIM" not in script and "PRE_SPAWN_ENVIRON" in script


def test_the_local_cluster_is_sized_to_the_machine() -> None:
    from xt_engine.batch.cluster import local_sizes, parse_cluster

    assert local_sizes(None, None, gpus=0, cores=2, memory_gib=8) == (2, 1)  # one per core
    assert local_sizes(None, None, gpus=0, cores=16, memory_gib=16) == (8, 2)  # 2 GiB each
    assert local_sizes(None, None, gpus=4, cores=16, memory_gib=128) == (4, 4)  # one per GPU
    assert local_sizes(3, None, gpus=0, cores=16, memory_gib=128) == (3, 5)  # never > cores
    assert parse_cluster("local") is None and parse_cluster("local:3") == 3
    with pytest.raises(InputError, match="local or local:N"):
        parse_cluster("local:0")


def test_progress_two_bars_on_a_terminal_one_line_per_image_elsewhere() -> None:
    import io

    from xt_engine.batch.progress import BatchProgress
    from xt_engine.batch.report import ImageResult

    done = ImageResult("a.tif", "a.zarr", "done", seconds=1.5)
    failed = ImageResult("b.tif", "b.zarr", "failed", error="b.tif is damaged")
    tty = io.StringIO()
    bars = BatchProgress(2, tty, tty=True)
    bars("image", "a", 3, 6)
    bars("finished", done)
    bars("finished", failed)
    assert "regions [###############...............] 3/6 a" in tty.getvalue()
    assert f"images  [{'#' * 30}] 2/2, 1 failed" in tty.getvalue().split("\x1b[2F")[-1]
    log = io.StringIO()
    lines = BatchProgress(2, log, tty=False)
    lines("image", "a", 3, 6)
    lines("finished", done)
    lines("finished", failed)
    assert log.getvalue().splitlines() == [
        "xt batch: [1/2] done a.zarr (1.5 s)",
        "xt batch: [2/2] failed b.zarr: b.tif is damaged",
    ]


def test_a_complete_store_of_another_run_needs_overwrite(
    images: list[Path], serial: dict[str, Path], tmp_path: Path
) -> None:
    import shutil

    out = tmp_path / "out"
    out.mkdir()
    shutil.copytree(serial["img0"], out / "img0.zarr")  # written by xt infer, not by a batch
    argv = ["batch", str(images[0]), *MODEL, "--out-dir", str(out), "--shard", "0/1"]
    assert main(argv) == 1
    (row,) = read_report(out / "report.shard-0-of-1.csv")[:1]
    assert row["status"] == "failed" and "complete result of another run" in row["error"]
    assert "--overwrite" in row["error"]
    assert main([*argv, "--overwrite"]) == 0
    assert read_report(out / "report.shard-0-of-1.csv")[0]["status"] == "done"
    _assert_same_store(out / "img0.zarr", serial["img0"])
    assert main(argv) == 0  # now a batch's store: the next batch skips it
    assert read_report(out / "report.shard-0-of-1.csv")[0]["status"] == "skipped"


@pytest.mark.slow
def test_local_gpu_workers_each_see_their_own_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """One worker per visible GPU, CUDA_VISIBLE_DEVICES set per worker process (checked on a
    CPU machine: the variable and the resources, not a GPU)."""
    from distributed import Client

    from xt_engine.batch.cluster import local_cluster, task_resources

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    cluster = local_cluster(threads=1, dashboard_address=None)
    try:
        with Client(cluster, timeout="60s") as c:
            c.wait_for_workers(2, timeout=120)
            seen = c.run(lambda: os.environ.get("CUDA_VISIBLE_DEVICES"))
            assert sorted(seen.values()) == ["3", "5"]
            assert task_resources(c, None) == {"GPU": 1}
    finally:
        cluster.close(timeout=30)
