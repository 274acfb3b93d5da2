"""The command line: ``napari-sam embed`` fills the embedding store that prompt mode then reads (a batch run on a
local cluster of one worker here)."""

import pytest
import tifffile

from napari_sam import Predictor
from napari_sam.cli import main
from napari_sam.core.embeddings import EmbeddingStore
from napari_sam.core.image import napari_contrast_limits
from napari_sam.demo import synthetic_cells


def test_embed_fills_the_store_once_and_the_predictor_reads_it(stack_file, tmp_path, capsys):
    path, stack = stack_file
    store = tmp_path / "store"
    embed = ["embed", str(path), "--model", "tiny-cells", "--store", str(store), "--workers", "1", "--no-progress"]
    assert main(embed) == 0
    out = capsys.readouterr().out
    tiles = Predictor.from_pretrained("tiny-cells", device="cpu")
    tiles.set_image(stack[0])
    frames = 2 * len(tiles.frames())  # 18 for a 256-pixel model
    assert tiles.tiled and frames >= 8
    assert f"{frames} frames of 1 image(s): {frames} computed" in out
    assert main(embed) == 0
    assert f"0 computed, {frames} already stored" in capsys.readouterr().out
    predictor = Predictor.from_pretrained("tiny-cells", device="cpu", dtype="auto", store=EmbeddingStore(store))
    predictor.set_image(stack[1], contrast_limits=napari_contrast_limits(stack, False))
    assert predictor.tiled and predictor.precompute() == 0  # what the dock does: nothing to compute


def test_embed_names_bad_input(stack_file, tmp_path, capsys):
    path, _ = stack_file
    assert main(["embed", str(tmp_path / "missing.tif"), "--model", "tiny-cells"]) == 2
    assert "missing.tif does not exist" in capsys.readouterr().err
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert main(["embed", str(path), "--model", "tiny-cells", "--store", str(blocker)]) == 2
    assert str(blocker) in capsys.readouterr().err
    assert main(["embed", str(path), "--model", "tiny-cells", "--store", str(tmp_path / "s"), "--tiling", "tiles",
                 "--tile-size", "128", "--halo", "64"]) == 2
    assert "halo" in capsys.readouterr().err
    assert main(["embed", str(path), "--model", "no/such-model", "--store", str(tmp_path / "s")]) == 2
    assert "no/such-model" in capsys.readouterr().err
    (tmp_path / "broken.tif").write_bytes(b"not a tiff at all")  # found unreadable before any worker starts
    assert main(["embed", str(tmp_path / "broken.tif"), "--model", "tiny-cells", "--store", str(tmp_path / "s")]) == 1
    assert "failed: broken: " in capsys.readouterr().err


def test_embed_into_a_store_that_cannot_keep_the_embeddings_fails_naming_why(stack_file, tmp_path, capsys):
    """A store whose folder takes the probe but no entry (here every shard's name is taken by a file) once made
    embed exit 0 reporting the frames as computed; the image now fails, saying what the store could not do."""
    path, _ = stack_file
    store = tmp_path / "store"
    EmbeddingStore(store)
    for shard in range(256):
        (store / f"{shard:02x}").write_text("in the way")
    assert main(["embed", str(path), "--model", "tiny-cells", "--store", str(store), "--workers", "1",
                 "--no-progress"]) == 1
    error = capsys.readouterr().err
    assert "failed: stack: " in error and "kept 0 of the image's" in error and "could not write" in error


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit):
        main(["embed", "--help"])
    text = capsys.readouterr().out
    assert all(option in text for option in ("--store", "--tiling", "--tile-size", "--halo", "--contrast"))


def test_files_are_read_as_napari_shows_them(tmp_path):
    """A pyramidal TIFF gives its full-resolution level; a large 2D TIFF (napari loads it into memory and takes its
    exact range) gets the contrast limits napari gives its layer, not a sample's, so the docks find what embed
    stored."""
    import numpy as np
    from napari.layers import Image

    from napari_sam.core.image import read_image

    image = synthetic_cells((3200, 3200), seed=940_102, radius_range=(10.0, 15.0), n_cells=800)[0]
    image[5:9, 5:9] = 65000  # a bright corner that a central sample misses
    flat = tmp_path / "large.tif"
    tifffile.imwrite(flat, image)
    data = read_image(flat)
    assert data.shape == image.shape and not isinstance(data, np.ndarray)
    expected = tuple(float(v) for v in Image(tifffile.imread(flat)).contrast_limits)
    assert napari_contrast_limits(data, False) == expected == (float(image.min()), 65000.0)
    pyramid = tmp_path / "pyramid.ome.tif"
    with tifffile.TiffWriter(pyramid) as tif:
        tif.write(image[:1024, :1024], subifds=1, tile=(256, 256))
        tif.write(image[:1024:2, :1024:2], subfiletype=1, tile=(256, 256))
    level0 = read_image(pyramid)
    assert level0.shape == (1024, 1024) and np.array_equal(np.asarray(level0[:8, :8]), image[:8, :8])
