"""The image series without Qt: its record, atomic saves, the folder's lock, a batch run keeping what a person
corrected, and the COCO and table exports read back with pycocotools and pandas."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import tifffile

from napari_sam.batch import FolderInUse, Series, export_coco, merged_table, run_batch
from napari_sam.batch.series import DONE, FAILED, IN_PROGRESS, NOT_STARTED, SERIES_FILE, corrected_images
from napari_sam.cli import main
from napari_sam.demo import synthetic_cells

from helpers import batch_config


@pytest.fixture()
def folder(tmp_path):
    """Three 2D images, a 3-plane stack and a corrupt TIFF: (folder, {name: (image, true labels)})."""
    images = tmp_path / "images"
    images.mkdir()
    truth = {}
    for index in range(3):
        image, labels = synthetic_cells((80, 96), seed=990_000 + index, radius_range=(8.0, 12.0))
        tifffile.imwrite(images / f"field_{index}.tif", image)
        truth[f"field_{index}"] = (image, labels)
    planes = [synthetic_cells((64, 72), seed=990_010 + z, radius_range=(8.0, 12.0)) for z in range(3)]
    stack, labels = np.stack([p[0] for p in planes]), np.stack([p[1] for p in planes])
    tifffile.imwrite(images / "stack.tif", stack)
    truth["stack"] = (stack, labels)
    (images / "broken.tif").write_bytes(b"II*\x00 not a tiff at all")
    return images, truth


def test_a_series_saves_labels_and_tables_atomically_and_reopens_where_it_was(folder, tmp_path):
    images, truth = folder
    out = tmp_path / "out"
    with Series([str(images)], out, model="tiny-cells") as series:
        assert [image.name for image in series.images] == ["broken", "field_0", "field_1", "field_2", "stack"]
        assert all(image.status == NOT_STARTED for image in series.images) and series.first_to_do() == 0
        with pytest.raises(ValueError, match="broken.tif"):
            series.open_image(0)
        assert series.images[0].status == FAILED and "broken.tif" in series.images[0].error
        first = series.index("field_0")
        data = series.open_image(first)
        assert np.array_equal(np.asarray(data[...]), truth["field_0"][0])
        assert series.images[first].status == NOT_STARTED  # read, maybe ahead: not started before a visit
        series.visit(first)
        assert series.images[first].status == IN_PROGRESS and series.labels(first) is None
        labels = truth["field_0"][1].astype(np.uint32)
        series.save(first, labels)
        assert np.array_equal(tifffile.imread(out / "field_0_labels.ome.tif"), labels)
        table = pd.read_csv(out / "field_0_objects.csv")
        assert sorted(table["id"]) == sorted(set(np.unique(labels)) - {0})
        assert not list(out.glob(".*.partial"))  # nothing half-written is left
        stack = series.index("stack")
        series.save(stack, truth["stack"][1].astype(np.uint32))
        assert set(pd.read_csv(out / "stack_objects.csv")["plane"]) == {0, 1, 2}
        series.set_status(first, DONE)
        record = json.loads((out / SERIES_FILE).read_text())
        entry = next(e for e in record["images"] if e["name"] == "field_0")
        assert entry["status"] == DONE and entry["corrected"] and entry["model"] == "tiny-cells"
        assert entry["objects"] == len(set(np.unique(labels)) - {0}) and entry["saved"]
    with Series([str(images)], out) as again:  # closed and reopened: where it was
        statuses = {image.name: image.status for image in again.images}
        assert statuses == {"broken": NOT_STARTED, "field_0": DONE, "field_1": NOT_STARTED, "field_2": NOT_STARTED,
                            "stack": IN_PROGRESS}  # a failed file is tried again
        assert again.first_to_do() == 0 and again.images[again.index("stack")].corrected
        assert np.array_equal(again.labels(again.index("field_0")), labels)
    assert corrected_images(out) == {"field_0", "stack"}


def test_a_second_session_is_refused_and_a_stale_lock_can_be_broken(folder, tmp_path):
    images, _ = folder
    out = tmp_path / "out"
    with Series([str(images)], out):
        with pytest.raises(FolderInUse, match=r"in use by another napari-sam run or annotation session \(an "
                                              r"annotation session, process \d+"):
            Series([str(images)], out)
        with pytest.raises(ValueError, match="in use"):
            run_batch([str(images)], str(out), batch_config(), progress=False)
        taken = Series([str(images)], out, break_lock=True)  # its holder is said to be gone
        taken.close()
    script = (f"from napari_sam.batch import Series; s = Series([{str(images)!r}], {str(out)!r}); "
              "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    assert subprocess.run([sys.executable, "-c", script]).returncode == -9  # killed while holding the folder
    Series([str(images)], out).close()  # the lock went with the process


def test_a_batch_run_never_overwrites_what_a_person_corrected(dask_cluster, folder, tmp_path, capsys):
    scheduler, _ = dask_cluster
    images, truth = folder
    inputs = tmp_path / "fields"
    inputs.mkdir()
    for index in range(3):
        (inputs / f"field_{index}.tif").write_bytes((images / f"field_{index}.tif").read_bytes())
    out = tmp_path / "out"
    config = batch_config()
    first = run_batch([str(inputs)], str(out), config, scheduler=scheduler, progress=False)
    assert first.values["counts"]["done"] == 3
    with Series([str(inputs)], out) as series:  # a batch output folder opens for correction as it is
        found = series.images[1]
        assert found.objects is not None and found.objects > 0 and found.model == "tiny-cells"
        assert found.labels == "field_1_labels.ome.tif" and not found.corrected
        batch_labels = np.asarray(series.labels(1))
        corrected = batch_labels.copy()
        corrected[truth["field_1"][1] > 0] = 77  # a person's correction
        series.save(1, corrected)
    before = {path.name: path.read_bytes() for path in out.glob("field_1_*")}
    again = run_batch([str(inputs)], str(out), config, scheduler=scheduler, overwrite=True, progress=False)
    statuses = {entry["name"]: entry["status"] for entry in again.values["images"]}
    assert statuses == {"field_0": "done", "field_1": "kept", "field_2": "done"}
    assert {path.name: path.read_bytes() for path in out.glob("field_1_*")} == before
    assert main(["segment", str(inputs), "--out", str(out), "--model", "tiny-cells", "--overwrite",
                 "--scheduler", scheduler, "--no-progress"]) == 0
    assert "1 kept (corrected by hand)" in capsys.readouterr().out
    assert {path.name: path.read_bytes() for path in out.glob("field_1_*")} == before


def test_coco_and_the_merged_table_read_back(folder, tmp_path, capsys):
    from pycocotools.coco import COCO

    images, truth = folder
    out = tmp_path / "out"
    with Series([str(images)], out) as series:
        for name in ("field_0", "field_2", "stack"):
            series.save(series.index(name), truth[name][1].astype(np.uint32))
    coco_file = tmp_path / "series.json"
    assert main(["export", str(out), "--coco", str(coco_file), "--table", str(tmp_path / "all.csv")]) == 0
    coco = COCO(str(coco_file))
    planes = {(image["napari_sam"]["image"], tuple(image["napari_sam"]["plane"])): image["id"]
              for image in coco.dataset["images"]}
    assert set(planes) == {("field_0", ()), ("field_2", ()), ("stack", (0,)), ("stack", (1,)), ("stack", (2,))}
    for (name, plane), image_id in planes.items():
        labels = truth[name][1][plane]
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
        assert sorted(a["napari_sam_id"] for a in annotations) == sorted(set(np.unique(labels)) - {0})
        for annotation in annotations:
            assert np.array_equal(coco.annToMask(annotation).astype(bool), labels == annotation["napari_sam_id"])
            assert annotation["area"] == int((labels == annotation["napari_sam_id"]).sum())
    table = pd.read_csv(tmp_path / "all.csv")
    assert list(table.columns[:2]) == ["image", "id"] and set(table["image"]) == {"field_0", "field_2", "stack"}
    assert len(table) == len(coco.dataset["annotations"]) == len(merged_table(out))
    assert export_coco(out, tmp_path / "again.json") == {"images": 5, "annotations": len(table)}
    assert main(["export", str(out)]) == 2
    assert "say what to write" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nothing"), "--coco", str(coco_file)]) == 2
