"""Batch runs on dask.distributed: a LocalCluster of 2 worker processes, tiny-cells, small synthetic images."""

import dataclasses
import json
import os
import signal
import threading
import time

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch

from napari_sam import Predictor, segment_everything
from napari_sam.batch import RunConfig, run_batch
from napari_sam.batch.config import BatchSettings
from napari_sam.batch.prompts_file import PromptsFile
from napari_sam.cli import main
from napari_sam.core.decoding import ObjectPrompt
from napari_sam.core.image import napari_contrast_limits, read_image
from napari_sam.core.settings import EverythingSettings, TilingSettings
from napari_sam.core.workflows import predict_objects, propagate_objects
from napari_sam.demo import synthetic_cells

from helpers import FAST_EVERYTHING, batch_config

pytestmark = pytest.mark.slow

MODEL = "tiny-cells"
FAST = EverythingSettings(**FAST_EVERYTHING)


def reference_predictor():
    torch.set_num_threads(1)  # the workers' thread count: the same arithmetic, bit for bit
    return Predictor.from_pretrained(MODEL, device="cpu", dtype="float32")


def labels_of(folder, name):
    return np.asarray(read_image(folder / f"{name}_labels.ome.tif"))


def wait_for_a_finished_image(out, seconds: float = 120) -> None:
    """Return once the first image's record is written into the output folder ``out``."""
    deadline = time.time() + seconds
    while not any((out / ".napari-sam").glob("*.json")) and time.time() < deadline:
        time.sleep(0.02)


def test_outputs_match_the_api_and_a_rerun_does_no_work(dask_cluster, batch_dataset, tmp_path):
    scheduler, client = dask_cluster
    folder, images = batch_dataset
    out = tmp_path / "out"
    summary = run_batch([str(folder)], str(out), batch_config(), scheduler=scheduler, progress=False)
    assert summary.values["counts"] == {"done": 7, "skipped": 0, "kept": 0, "failed": 1, "no prompts": 0}
    loads = client.run(lambda dask_worker: dask_worker.plugins["napari-sam-model"].loads)
    assert sorted(loads.values()) == [1, 1]  # both workers worked, each loaded the model once for 7 images
    assert [f["name"] for f in summary.failures] == ["corrupt"] and "corrupt.tif" in summary.failures[0]["error"]
    assert summary.exit_status == 1
    predictor = reference_predictor()
    for name, image in images.items():
        expected = segment_everything(predictor, image, FAST, contrast_limits=napari_contrast_limits(image, False))
        labels = labels_of(out, name)
        assert labels.dtype == np.uint32 and labels.shape == image.shape
        np.testing.assert_array_equal(labels, expected.labels)
        table = pd.read_csv(out / f"{name}_objects.csv")
        assert list(table.columns[:3]) == ["id", "plane", "area"]
        ids, counts = np.unique(labels[labels > 0], return_counts=True)
        assert table["id"].tolist() == ids.tolist() and table["area"].tolist() == counts.tolist()
        assert len(table) > 3  # 4 cells of 8-14 px radius per image
    with tifffile.TiffFile(out / "cells_0_labels.ome.tif") as tif:
        assert 'PhysicalSizeX="0.65"' in tif.ome_metadata  # the input's pixel size
    values = json.loads((out / "napari-sam-run.json").read_text())
    assert values["model"] == MODEL and values["versions"]["torch"] and values["cluster"]["workers"] == 2
    assert values["settings"]["segment_everything"]["points_per_side"] == 10
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}

    again = run_batch([str(folder)], str(out), batch_config(), scheduler=scheduler, progress=False)
    assert again.values["counts"]["skipped"] == 7 and again.values["counts"]["done"] == 0
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != "napari-sam-run.json"} == {
        name: stamp for name, stamp in stamps.items() if name != "napari-sam-run.json"}

    changed = run_batch([str(folder)], str(out), batch_config(contrast="0,5000"), scheduler=scheduler, progress=False)
    assert changed.values["counts"]["failed"] == 8  # other settings: nothing is overwritten without --overwrite
    assert "--overwrite" in changed.failures[0]["error"] or "--overwrite" in changed.failures[1]["error"]


def test_cli_reports_the_corrupt_file_in_the_exit_status(dask_cluster, batch_dataset, tmp_path, capsys):
    scheduler, _ = dask_cluster
    folder, _ = batch_dataset
    settings = tmp_path / "settings.json"
    batch_config().save(settings)
    status = main(["segment", str(folder / "corrupt.tif"), str(folder / "cells_1.tif"), "--out",
                   str(tmp_path / "out"), "--settings", str(settings), "--scheduler", scheduler, "--no-progress"])
    captured = capsys.readouterr()
    assert status == 1
    assert "1 done" in captured.out and "1 failed" in captured.out
    assert "failed: corrupt: Could not read" in captured.err


def test_a_killed_worker_still_gives_the_complete_identical_outputs(dask_cluster, batch_dataset, clean_batch_outputs,
                                                                   tmp_path):
    scheduler, client = dask_cluster
    folder, images = batch_dataset
    clean = clean_batch_outputs
    out = tmp_path / "killed"
    pids = client.run(os.getpid)
    result = {}
    thread = threading.Thread(target=lambda: result.update(
        summary=run_batch([str(folder)], str(out), batch_config(), scheduler=scheduler, progress=False)))
    thread.start()
    wait_for_a_finished_image(out)  # the others are under way
    victim = sorted(pids.values())[0]
    os.kill(victim, signal.SIGKILL)
    assert thread.is_alive() and len(list((out / ".napari-sam").glob("*.json"))) < 7  # killed mid-run
    thread.join(300)
    summary = result["summary"]
    assert summary.values["counts"]["done"] == 7, summary.failures
    assert victim not in client.run(os.getpid).values()  # the worker was replaced
    for name in images:
        np.testing.assert_array_equal(labels_of(out, name), labels_of(clean, name))
        assert (out / f"{name}_objects.csv").read_text() == (clean / f"{name}_objects.csv").read_text()
    assert not list(out.glob(".*.partial"))


def test_a_stack_is_propagated_from_a_prompts_file(dask_cluster, tmp_path):
    scheduler, _ = dask_cluster
    stack, truth = synthetic_cells((12, 96, 96), seed=970_200, ndim=3, n_cells=6, radius_range=(14.0, 20.0))
    inputs = tmp_path / "stacks"
    inputs.mkdir()
    tifffile.imwrite(inputs / "stack.tif", stack)
    cells = [label for label in np.unique(truth[6]) if label and (truth[6] == label).sum() > 150][:2]
    rows = ["image,plane,object,kind,row,col,row2,col2"]
    for number, label in enumerate(cells, start=1):
        r, c = np.argwhere(truth[6] == label).mean(axis=0)
        rows.append(f"stack.tif,6,{number},positive,{r:.1f},{c:.1f},,")
    prompts = tmp_path / "prompts.csv"
    prompts.write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    assert main(["segment", str(inputs), "--out", str(out), "--mode", "propagate", "--prompts", str(prompts),
                 "--model", MODEL, "--precision", "float32", "--scheduler", scheduler, "--no-progress"]) == 0
    labels = labels_of(out, "stack")
    assert labels.shape == stack.shape
    predictor = reference_predictor()
    limits = napari_contrast_limits(stack, False)
    recommended = predictor.recommended.propagation
    table = pd.read_csv(out / "stack_objects.csv")
    predictor.set_image(stack[6], contrast_limits=limits)
    first = np.zeros(stack.shape[1:], np.uint32)
    for number, prompt in enumerate(PromptsFile(prompts).by_image["stack.tif"], start=1):
        found = predict_objects(predictor, [ObjectPrompt(prompt.prompt.points, prompt.prompt.labels)])[0]
        first[found.masks[0] & (first == 0)] = number  # earlier objects keep their pixels
    expected = propagate_objects(predictor, stack, 6, 0, first, recommended, contrast_limits=limits)
    np.testing.assert_array_equal(labels, expected.labels)  # the plane's objects went through together
    for number in (1, 2):
        start, stop = expected.extents[number]
        assert stop > start  # it went through more than one plane
        assert sorted(table[table["id"] == number]["plane"]) == list(range(start, stop + 1))


def test_prompts_mode_matches_predictions_in_process(dask_cluster, batch_dataset, tmp_path):
    scheduler, _ = dask_cluster
    folder, images = batch_dataset
    centres = {}
    for name, seed in (("cells_2", 970_002), ("cells_3", 970_003)):
        truth = synthetic_cells((96, 128), seed=seed, radius_range=(8.0, 14.0))[1]
        labels, counts = np.unique(truth[truth > 0], return_counts=True)
        centres[name] = [np.argwhere(truth == label).mean(axis=0).round(1).tolist()
                         for label in labels[np.argsort(-counts)][:2]]
    (r0, c0), (r1, c1) = centres["cells_2"]
    boxed = centres["cells_3"][0]
    prompts = {"objects": [
        {"image": "cells_2.tif", "object": 5, "points": [[r0, c0], [r1, c1]], "point_labels": [1, 0]},
        {"image": "cells_2", "object": 9, "box": [r1 - 8, c1 - 8, r1 + 8, c1 + 8]},
        {"image": "cells_3.tif", "object": 1, "box": [boxed[0] - 9, boxed[1] - 9, boxed[0] + 9, boxed[1] + 9],
         "points": [boxed]}]}
    path = tmp_path / "prompts.json"
    path.write_text(json.dumps(prompts))
    out = tmp_path / "out"
    summary = run_batch([str(folder / "*.tif")], str(out), batch_config(mode="prompts"), prompts=str(path),
                        scheduler=scheduler, progress=False)
    counts = summary.values["counts"]
    assert counts["done"] == 2 and counts["no prompts"] == 4 and counts["failed"] == 1  # the corrupt file
    predictor = reference_predictor()
    file = PromptsFile(path)
    for name in ("cells_2", "cells_3"):
        image, objects = images[name], file.for_image(f"{name}.tif", name)
        predictor.set_image(image, contrast_limits=napari_contrast_limits(image, False))
        expected = np.zeros(image.shape, np.uint32)
        for prompt, found in zip(objects, predict_objects(predictor, [p.prompt for p in objects])):
            expected[found.masks[0] & (expected == 0)] = prompt.object_id
        np.testing.assert_array_equal(labels_of(out, name), expected)
        assert set(pd.read_csv(out / f"{name}_objects.csv")["id"]) == {p.object_id for p in objects}


@pytest.mark.parametrize("method", ["grid", "instances", "instances+sam"])
def test_a_large_image_is_split_into_tile_tasks_with_the_same_result(dask_cluster, tmp_path, method):
    """With every method of segment everything: the instance head's objects cut by a tile task's tiles merge as the
    grid's do."""
    scheduler, _ = dask_cluster
    image = synthetic_cells((200, 360), seed=970_300, radius_range=(8.0, 12.0))[0]
    inputs = tmp_path / "large"
    inputs.mkdir()
    zarr_path = inputs / "large.zarr"
    import zarr

    zarr.create_array(str(zarr_path), data=image, chunks=(64, 64))
    tiling = TilingSettings(mode="tiles", tile_size=96, halo=16)
    everything = FAST.replace(method=method)
    run = RunConfig(batch=BatchSettings(model=MODEL, precision="float32", tiles_per_task=2, contrast="500,3000"),
                    everything=everything, tiling=tiling)
    out = tmp_path / "out"
    summary = run_batch([str(zarr_path)], str(out), run, scheduler=scheduler, progress=False)
    assert summary.values["counts"]["done"] == 1
    predictor = reference_predictor()
    predictor.tiling = tiling
    expected = segment_everything(predictor, image, everything, contrast_limits=(500, 3000))
    assert len(predictor.frames()) > 4  # several tile tasks
    labels = np.asarray(read_image(out / "large_labels.ome.zarr"))  # zarr in, zarr out
    np.testing.assert_array_equal(labels, expected.labels)
    assert len(expected.objects) > 10


def test_embed_fills_the_store_the_predictor_reads(dask_cluster, batch_dataset, tmp_path):
    scheduler, _ = dask_cluster
    folder, images = batch_dataset
    store = tmp_path / "store"
    tiling = TilingSettings(mode="tiles", tile_size=64, halo=8)
    run = RunConfig(batch=BatchSettings(model=MODEL, precision="float32", mode="embed", tiles_per_task=2),
                    everything=FAST.replace(crop_n_layers=1), tiling=tiling)  # crops do not change what is embedded
    summary = run_batch([str(folder / "cells_4.tif")], str(tmp_path / "out"), run, store=str(store),
                        scheduler=scheduler, progress=False)
    from napari_sam.core.embeddings import EmbeddingStore

    predictor = Predictor.from_pretrained(MODEL, device="cpu", dtype="float32", store=EmbeddingStore(store),
                                          tiling=tiling)
    image = images["cells_4"]
    predictor.set_image(image, contrast_limits=napari_contrast_limits(image, False))
    tiles = len(predictor.frames())
    assert tiles > 2 and summary.values["images"][0]["encoder_runs"] == tiles  # in several tasks
    assert predictor.precompute() == 0
    whole = run_batch([str(folder / "cells_4.tif")], str(tmp_path / "out-whole"),
                      dataclasses.replace(run, tiling=TilingSettings()), store=str(store), scheduler=scheduler,
                      progress=False)
    assert whole.values["images"][0]["encoder_runs"] == 1  # the whole image, once; its crops are not embedded


def test_bad_input_gets_a_clear_message_fast(batch_dataset, tmp_path, capsys):
    folder, _ = batch_dataset
    (tmp_path / "empty").mkdir()

    def error(*args) -> str:
        assert main(["segment", "--model", MODEL, "--no-progress", *args]) == 2
        return capsys.readouterr().err

    assert "holds no image" in error(str(tmp_path / "empty"), "--out", str(tmp_path / "o1"))
    assert "inside the input folder" in error(str(folder), "--out", str(folder / "results"))
    assert "No model checkpoint 'no-such/model'" in error(str(folder), "--out", str(tmp_path / "o2"), "--model",
                                                          "no-such/model")
    assert "needs a prompts file" in error(str(folder), "--out", str(tmp_path / "o3"), "--mode", "prompts")
    (tmp_path / "a-file").write_text("results")  # once NotADirectoryError and exit status 1
    assert "a-file is a file" in error(str(folder), "--out", str(tmp_path / "a-file"))
    assert "a-file is a file" in error(str(folder), "--out", str(tmp_path / "a-file" / "sub"))
    for cap in ("inf", "nan", "0", "-3"):  # once OverflowError after the cluster had started
        assert "size cap must be a finite number of GB above 0" in error(str(folder), "--out", str(tmp_path / "o6"),
                                                                         "--store-gb", cap)
    huge = tmp_path / "huge.csv"
    huge.write_text(f"image,object,kind,row,col\ncells_0.tif,{2**32},positive,10,10\n")
    assert "line 2: object must be a whole number from 1 to 4294967295" in error(
        str(folder), "--out", str(tmp_path / "o7"), "--mode", "prompts", "--prompts", str(huge))
    start = time.perf_counter()
    assert "Could not reach the dask scheduler" in error(str(folder), "--out", str(tmp_path / "o4"), "--scheduler",
                                                         "tcp://127.0.0.1:9")
    assert time.perf_counter() - start < 8
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    tifffile.imwrite(mixed / "z0.tif", np.zeros((32, 32), np.uint16))
    tifffile.imwrite(mixed / "z1.tif", np.zeros((32, 40), np.uint16))
    assert main(["segment", str(mixed), "--stack", "--out", str(tmp_path / "o5"), "--model", MODEL,
                 "--no-progress"]) == 1
    assert "share one size: z0.tif is (32, 32)" in capsys.readouterr().err


def test_a_second_run_into_a_folder_in_use_is_refused(batch_dataset, tmp_path, capsys):
    """Two runs into one output folder once both reported success, the one finishing last silently replacing the
    other's outputs and summary; a run now holds its output folder, and a second one is refused at once."""
    from filelock import FileLock

    from napari_sam.batch.output_lock import LOCK, RECORDS

    folder, _ = batch_dataset
    out = tmp_path / "out"
    (out / RECORDS).mkdir(parents=True)
    with FileLock(out / RECORDS / LOCK):  # a run in progress (another process holds the same kind of lock)
        start = time.perf_counter()
        assert main(["segment", str(folder), "--out", str(out), "--model", MODEL, "--no-progress"]) == 2
        assert time.perf_counter() - start < 8
    assert f"{out.resolve()} is in use by another napari-sam run or annotation session" in capsys.readouterr().err
    assert not (out / "napari-sam-run.json").exists()


def test_help_explains_the_command(capsys):
    with pytest.raises(SystemExit):
        main(["segment", "--help"])
    text = capsys.readouterr().out
    for needed in ("--scheduler", "--prompts", "--settings", "--points-per-side", "--tiling", "--mode",
                   "examples:", "dask-jobqueue", "Exit status", "_labels.ome.tif"):
        assert needed in text


def test_settings_file_and_command_line_round_trip(tmp_path):
    import argparse

    from napari_sam.cli.batch_runs import add_segment_command, config_from

    run = RunConfig(batch=BatchSettings(model=MODEL, contrast="100,2000"),
                    everything=FAST.replace(prefer_smaller_crops=False),
                    tiling=TilingSettings(mode="tiles", tile_size=512))
    parser = argparse.ArgumentParser()
    add_segment_command(parser.add_subparsers())
    words = run.command_line(["in"], "out").split()[1:]
    assert "--tiling tiles" in " ".join(words) and "--mode" not in words
    # Meta's default that the checkpoint recommends otherwise is written out, so that the command gives this run
    assert "--min-mask-region-area 0" in " ".join(words)
    assert config_from(parser.parse_args(words)).resolved() == run.resolved()
    run.save(tmp_path / "s.json")
    assert RunConfig.load(tmp_path / "s.json") == run
    overridden = config_from(parser.parse_args(["segment", "in", "--out", "o", "--settings", str(tmp_path / "s.json"),
                                                "--points-per-side", "4"]))
    assert overridden.everything.points_per_side == 4 and overridden.everything.pred_iou_thresh == 0.7
    with pytest.raises(SystemExit):  # embedding runs are napari-sam embed's
        parser.parse_args(["segment", "in", "--out", "o", "--mode", "embed"])
    (tmp_path / "bad.json").write_text('{"segment_everything": {"points_per_side": 0}}')
    with pytest.raises(ValueError, match="segment_everything.*points_per_side"):
        RunConfig.load(tmp_path / "bad.json")


def test_the_output_folder_may_sit_beside_named_files_but_not_inside_a_scanned_folder(tmp_path):
    from napari_sam.batch.files import check_output, find_inputs

    data = tmp_path / "data"
    data.mkdir()
    tifffile.imwrite(data / "a.tif", np.zeros((8, 8), np.uint16))
    assert check_output(data / "results", [str(data / "a.tif")]) == (data / "results").resolve()
    with pytest.raises(ValueError, match="inside the input folder"):
        check_output(data / "results", [str(data)])
    with pytest.raises(ValueError, match="inside the input folder"):
        check_output(data / "sub" / "results", [str(data / "*.tif")])
    with pytest.raises(ValueError, match="would both write outputs named 'a'"):
        (tmp_path / "other").mkdir()
        tifffile.imwrite(tmp_path / "other" / "a.tif", np.zeros((8, 8), np.uint16))
        find_inputs([str(data), str(tmp_path / "other")])


def test_prompts_files_csv_json_and_geojson(tmp_path):
    csv_file = tmp_path / "p.csv"
    csv_file.write_text("image,plane,object,kind,row,col,row2,col2\n"
                        'a.tif,"3,12",2,positive,10,20,,\n'
                        'a.tif,"3,12",2,negative,11,21,,\n'
                        "a.tif,,1,box,5,6,15,26\n")
    prompts = PromptsFile(csv_file).for_image("a.tif", "a")
    by_id = {p.object_id: p for p in prompts}
    assert by_id[2].plane == (3, 12) and by_id[2].prompt.labels.tolist() == [1, 0]
    assert by_id[2].prompt.points.tolist() == [[10, 20], [11, 21]] and by_id[2].prompt.box is None
    assert by_id[1].plane == () and by_id[1].prompt.box.tolist() == [5, 6, 15, 26]

    geo = tmp_path / "p.geojson"
    geo.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [20, 10]},
         "properties": {"image": "b.png", "object": 1, "positive": False}},
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[5, 1], [30, 1], [30, 9], [5, 1]]]},
         "properties": {"image": "b.png", "object": 1}}]}))
    [prompt] = PromptsFile(geo).for_image("b.png", "b")
    assert prompt.prompt.points.tolist() == [[10, 20]] and prompt.prompt.labels.tolist() == [0]  # (x, y) -> (row, col)
    assert prompt.prompt.box.tolist() == [1, 5, 9, 30]

    geo.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [20, 10]},
         "properties": {"image": "b.png"}}]}))
    with pytest.raises(ValueError, match="needs the properties image and object"):
        PromptsFile(geo)
    for text, message in (("image,object,kind,row,col\na.tif,1,circle,1,2\n", "line 2: kind must be"),
                          ("image,object,kind,row,col\na.tif,0,positive,1,2\n", "line 2: object must be"),
                          ("image,object,kind,row,col\na.tif,,positive,1,2\n", "line 2: object must be.*got ''"),
                          ("image,object,kind,row,col,row2,col2\na.tif,1,box,9,9,1,1\n", "top-left"),
                          ("image,object,kind,row,col,row2,col2\na.tif,1,box,1,1,2,2\na.tif,1,box,1,1,3,3\n",
                           "line 3: object 1 has a second box"),
                          ("image,kind,row,col\na.tif,positive,1,2\n", "needs the columns")):
        csv_file.write_text(text)
        with pytest.raises(ValueError, match=message):
            PromptsFile(csv_file)


def test_a_folder_of_slices_is_one_stack(dask_cluster, tmp_path):
    scheduler, _ = dask_cluster
    # the middle planes of a 5-plane stack: each holds cell sections of 180-570 px (the first plane has only two
    # 7-px cell tips, below what a model is asked to find)
    stack = synthetic_cells((5, 96, 96), seed=970_400, ndim=3, n_cells=8, radius_range=(10.0, 14.0))[0][1:4]
    slices = tmp_path / "embryo"
    slices.mkdir()
    for index in (0, 1, 2):  # natural order: z2 before z10
        tifffile.imwrite(slices / f"z{[2, 10, 11][index]}.tif", stack[index])
    out = tmp_path / "out"
    assert main(["segment", str(slices), "--stack", "--out", str(out), "--model", MODEL, "--precision",
                 "float32", "--points-per-side", "8", "--scheduler", scheduler, "--no-progress"]) == 0
    labels = labels_of(out, "embryo")
    table = pd.read_csv(out / "embryo_objects.csv")
    assert labels.shape == stack.shape and sorted(set(table["plane"])) == [0, 1, 2]
    predictor = reference_predictor()
    limits = napari_contrast_limits(stack, False)
    first = segment_everything(predictor, stack[0], predictor.recommended.everything.replace(points_per_side=8),
                               contrast_limits=limits)
    np.testing.assert_array_equal(labels[0], first.labels)
    assert labels[1][labels[1] > 0].min() == len(first.objects) + 1  # ids go on from plane to plane
    with tifffile.TiffFile(out / "embryo_labels.ome.tif") as tif:
        assert tif.series[0].axes == "ZYX"


def test_a_multichannel_ome_tiff_is_refused_until_its_channel_is_chosen(dask_cluster, tmp_path, capsys):
    scheduler, _ = dask_cluster
    cells = synthetic_cells((5, 96, 96), seed=970_400, ndim=3, n_cells=8, radius_range=(10.0, 14.0))[0][1:3]
    rng = np.random.default_rng(0)
    data = np.zeros((2, 2, 2, 96, 96), dtype=cells.dtype)  # (t, c, z, y, x): channel 0 noise, channel 1 the cells
    data[:, 0] = rng.integers(0, int(cells.max()), size=(2, 2, 96, 96))
    data[:, 1] = cells[None]
    movie = tmp_path / "movie.ome.tif"
    tifffile.imwrite(movie, data, ome=True, metadata={"axes": "TCZYX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5})
    out = tmp_path / "out"
    options = ["--model", MODEL, "--precision", "float32", "--points-per-side", "8", "--scheduler", scheduler,
               "--no-progress"]
    assert main(["segment", str(movie), "--out", str(out), *options]) == 1
    assert "movie.ome.tif has 2 channels (axes TCZYX" in capsys.readouterr().err
    assert not list(out.glob("movie_labels*"))

    assert main(["segment", str(movie), "--out", str(out), "--channel", "1", *options]) == 0
    labels = labels_of(out, "movie")
    assert labels.shape == (2, 2, 96, 96)
    with tifffile.TiffFile(out / "movie_labels.ome.tif") as tif:
        assert tif.series[0].axes == "TZYX" and 'PhysicalSizeX="0.5"' in tif.ome_metadata
    predictor = reference_predictor()
    everything = predictor.recommended.everything.replace(points_per_side=8)  # the run's: the checkpoint's
    expected = segment_everything(predictor, cells[1], everything,
                                  contrast_limits=napari_contrast_limits(data[:, 1], False))
    assert len(expected.objects) >= 5  # the cells' channel, not the noise
    np.testing.assert_array_equal(labels[1, 1] > 0, expected.labels > 0)


def test_a_channel_choice_that_does_not_fit_the_file_is_named(tmp_path):
    from napari_sam.batch.files import ImageInput, check_readable, open_input

    data = np.arange(3 * 4 * 16 * 20, dtype=np.uint16).reshape(3, 4, 16, 20)  # (c, z, y, x)
    tifffile.imwrite(tmp_path / "three.ome.tif", data, ome=True, metadata={"axes": "CZYX"})
    item = ImageInput("three", (str(tmp_path / "three.ome.tif"),))
    assert check_readable(item, 2) == (4, 16, 20)
    opened = open_input(item, 2)
    np.testing.assert_array_equal(opened[1], data[2, 1])
    np.testing.assert_array_equal(opened[..., 3:5], data[2, ..., 3:5])
    np.testing.assert_array_equal(np.asarray(opened), data[2])
    with pytest.raises(ValueError, match=r"has 3 channels \(axes CZYX.*--channel.*0 to 2"):
        check_readable(item)
    with pytest.raises(ValueError, match="channel 3 is not one of them"):
        open_input(item, 3)
    tifffile.imwrite(tmp_path / "plain.tif", data[0])  # no channel axis: a stack of 4 planes
    plain = ImageInput("plain", (str(tmp_path / "plain.tif"),))
    assert check_readable(plain) == (4, 16, 20)
    with pytest.raises(ValueError, match="has no channel axis.*channel 1 was chosen"):
        check_readable(plain, 1)
    import zarr

    group = zarr.open_group(str(tmp_path / "two.ome.zarr"), mode="w")  # OME-zarr axes: (t, c, y, x)
    group.create_array("0", shape=(2, 2, 16, 20), dtype="uint16")[:] = data[:2, :2].transpose(1, 0, 2, 3)
    group.attrs["multiscales"] = [{"version": "0.4", "datasets": [{"path": "0"}], "axes": [
        {"name": "t", "type": "time"}, {"name": "c", "type": "channel"}, {"name": "y", "type": "space"},
        {"name": "x", "type": "space"}]}]
    ome_zarr = ImageInput("two", (str(tmp_path / "two.ome.zarr"),))
    with pytest.raises(ValueError, match=r"has 2 channels \(axes TCYX"):
        check_readable(ome_zarr)
    np.testing.assert_array_equal(np.asarray(open_input(ome_zarr, 1)), data[1, :2])


def test_parquet_without_pyarrow_is_refused_before_any_work(batch_dataset, tmp_path, capsys):
    pytest.importorskip("pandas")
    try:
        import pyarrow  # noqa: F401
        pytest.skip("pyarrow is installed")
    except ImportError:
        pass
    folder, _ = batch_dataset
    assert main(["segment", str(folder), "--out", str(tmp_path / "o"), "--model", MODEL, "--table", "parquet"]) == 2
    assert "Parquet tables need pyarrow" in capsys.readouterr().err


def test_propagation_with_a_video_checkpoint_matches_the_api(dask_cluster, tmp_path):
    from napari_sam.core.model import load_video_model
    from napari_sam.core.workflows import propagate_video
    from napari_sam.testing.random_weights import random_video_model

    scheduler, _ = dask_cluster
    folder = tmp_path / "video-model"
    random_video_model().save_pretrained(folder)
    stack, truth = synthetic_cells((8, 70, 90), seed=970_500, ndim=3, n_cells=3)
    inputs = tmp_path / "stacks"
    inputs.mkdir()
    tifffile.imwrite(inputs / "movie.tif", stack)
    cell = np.bincount(truth[4].ravel())[1:].argmax() + 1
    row, col = np.argwhere(truth[4] == cell).mean(axis=0)
    prompts = tmp_path / "p.csv"
    prompts.write_text(f"image,plane,object,kind,row,col\nmovie,4,3,positive,{row:.1f},{col:.1f}\n")
    out = tmp_path / "out"
    assert main(["segment", str(inputs), "--out", str(out), "--mode", "propagate", "--prompts", str(prompts),
                 "--model", MODEL, "--precision", "float32", "--video-model", str(folder), "--scheduler", scheduler,
                 "--no-progress"]) == 0
    predictor = reference_predictor()
    limits = napari_contrast_limits(stack, False)
    predictor.set_image(stack[4], contrast_limits=limits)
    first = predict_objects(predictor, [ObjectPrompt(np.array([[round(row, 1), round(col, 1)]]), np.array([1]))])[0]
    model, geometry, _ = load_video_model(str(folder), device="cpu")
    expected = propagate_video(model, stack, 4, 0, mask=first.masks[0], geometry=geometry,
                               settings=predictor.recommended.propagation, contrast_limits=limits)
    np.testing.assert_array_equal(labels_of(out, "movie") == 3, expected.masks)


def test_a_run_killed_halfway_resumes_where_it_stopped(dask_cluster, batch_dataset, clean_batch_outputs, tmp_path):
    import subprocess
    import sys

    scheduler, _ = dask_cluster
    folder, images = batch_dataset
    clean = clean_batch_outputs
    settings = tmp_path / "settings.json"
    batch_config().save(settings)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "napari_sam.cli", "segment", str(folder), "--out", str(out), "--settings",
               str(settings), "--scheduler", scheduler, "--no-progress"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_a_finished_image(out)
    process.kill()  # the whole command, halfway
    process.wait()
    finished = {p.stem for p in (out / ".napari-sam").glob("*.json")}
    assert 1 <= len(finished) < 7
    resumed = run_batch([str(folder)], str(out), batch_config(), scheduler=scheduler, progress=False)
    counts = resumed.values["counts"]
    assert counts["skipped"] >= len(finished) and counts["skipped"] + counts["done"] == 7 and counts["done"] >= 1
    for name in images:
        np.testing.assert_array_equal(labels_of(out, name), labels_of(clean, name))
    assert not list(out.glob(".*.partial"))
