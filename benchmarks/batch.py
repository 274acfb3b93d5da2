"""Batch runs: images per minute on a dask LocalCluster of 1 and of 2 worker processes, against a plain loop of the
Python API in one process writing the same outputs (the engine's overhead), all in one run on the same images.

The images are synthetic cells (uint16 TIFF files). The model is the bundled tiny-cells (the engine's overhead
dominates), or ``--model vit-b``: SAM ViT-B's architecture with seeded random weights at a 1024-pixel input, saved
as a checkpoint folder (the encoder dominates). Times include starting the cluster and loading the model; the
plain loop loads the model once too. Each configuration writes into its own folder, and their labels are compared.

Writes benchmarks/results/batch.json (``--results``). A small run checks the script: ``--images 2 --size 256``.

    python benchmarks/batch.py [--images 16] [--size 512] [--model tiny-cells|vit-b] [--points-per-side 16]
        [--results PATH]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import tifffile  # noqa: E402
import torch  # noqa: E402

from napari_sam import Predictor, segment_everything  # noqa: E402
from napari_sam.batch import RunConfig, run_batch  # noqa: E402
from napari_sam.batch.config import BatchSettings  # noqa: E402
from napari_sam.batch.outputs import LabelsOutput, object_rows, object_table, write_table  # noqa: E402
from napari_sam.core.image import napari_contrast_limits, read_image  # noqa: E402
from napari_sam.demo import synthetic_cells  # noqa: E402

import results  # noqa: E402  (benchmarks/results.py)


def vit_b_checkpoint(folder: Path) -> str:
    """A random-weight SAM ViT-B checkpoint (safetensors and its processor config) saved in ``folder``."""
    from transformers import SamProcessor
    from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil

    from napari_sam.testing.random_weights import random_sam, sam_config

    random_sam(sam_config(), seed=0).save_pretrained(folder)
    SamProcessor(image_processor=SamImageProcessorPil()).save_pretrained(folder)
    return str(folder)


def plain_loop(paths: list[Path], out: Path, config: RunConfig) -> float:
    """The API in a loop: read, segment everything, write labels and table as the batch does."""
    start = time.perf_counter()
    predictor = Predictor.from_pretrained(config.batch.model, device="cpu", dtype=config.batch.precision,
                                          tiling=config.tiling)
    for path in paths:
        image = np.asarray(read_image(path))
        result = segment_everything(predictor, image, config.everything,
                                    contrast_limits=napari_contrast_limits(image, False))
        labels = LabelsOutput(out / f"{path.stem}_labels.ome.tif", image.shape, "tiff", None)
        labels.array[:] = result.labels
        rows = object_rows(labels.array, (), [
            (k + 1, (o.rows.start, o.cols.start, o.rows.stop, o.cols.stop), s, t)
            for k, (o, s, t) in enumerate(zip(result.objects, result.scores, result.stability_scores))])
        labels.commit()
        write_table(out / f"{path.stem}_objects.csv", object_table(rows, 0), "csv")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--size", type=int, default=512, help="image side in pixels")
    parser.add_argument("--model", default="tiny-cells", help="tiny-cells, or vit-b (random weights, 1024 input)")
    parser.add_argument("--points-per-side", type=int, default=16)
    results.add_option(parser, "batch")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="napari-sam-batch-bench-"))
    model = vit_b_checkpoint(root / "vit-b") if args.model == "vit-b" else args.model
    images = root / "images"
    images.mkdir()
    paths = []
    for index in range(args.images):
        image = synthetic_cells((args.size, args.size), seed=990_000 + index)[0]
        paths.append(images / f"cells_{index:03d}.tif")
        tifffile.imwrite(paths[-1], image)
    config = RunConfig(batch=BatchSettings(model=model, precision="float32")).resolved()
    config = RunConfig(batch=config.batch, everything=config.everything.replace(
        points_per_side=args.points_per_side), tiling=config.tiling, propagation=config.propagation)
    cores = len(os.sched_getaffinity(0))
    print(f"{args.images} images of {args.size}x{args.size}, model {args.model}, points per side "
          f"{args.points_per_side}, float32; {cores} cores ({_cpu()}), torch {torch.__version__}")
    torch.set_num_threads(cores)
    loop_out = root / "loop"
    loop_out.mkdir()
    timings = {"plain loop, 1 process": plain_loop(paths, loop_out, config)}
    for workers in (1, 2):
        start = time.perf_counter()
        summary = run_batch([str(images)], str(root / f"batch-{workers}"), config, workers=workers, progress=False,
                            log=lambda message: None)
        timings[f"dask, {workers} worker(s)"] = time.perf_counter() - start
        assert summary.values["counts"]["done"] == args.images, summary.failures
    reference = timings["plain loop, 1 process"]
    for name, seconds in timings.items():
        print(f"{name:24s} {seconds:7.1f} s  {60 * args.images / seconds:7.1f} images/min  "
              f"{reference / seconds:5.2f}x the plain loop")
    identical = {}
    for workers in (1, 2):
        same = sum(np.array_equal(np.asarray(read_image(root / f"batch-{workers}" / f"{p.stem}_labels.ome.tif")),
                                  np.asarray(read_image(loop_out / f"{p.stem}_labels.ome.tif"))) for p in paths)
        print(f"dask, {workers} worker(s): labels identical to the plain loop's for {same} of {len(paths)} images "
              f"(torch threads per process: {cores // workers} against {cores})")
        identical[workers] = int(same)

    def row(label: str, seconds: float, labels: str) -> list[str]:
        return [label, results.seconds(seconds), f"{60 * args.images / seconds:.1f}",
                results.ratio(reference / seconds), labels]

    def threads(count: int) -> str:
        return f"{count} torch thread{'s' if count > 1 else ''}"

    rows = [row(f"plain loop of the API, 1 process ({threads(cores)})", reference, "")]
    rows += [row(f"dask, {w} worker{'s' if w > 1 else ''} ({threads(cores // w)}{' each' if w > 1 else ''})",
                 timings[f"dask, {w} worker(s)"], f"{identical[w]} of {args.images}") for w in (1, 2)]
    model_name = "SAM ViT-B architecture (random weights)" if args.model == "vit-b" else args.model
    results.write(args.results, "batch", "Batch runs: dask workers against a plain loop of the Python API", [
        results.table(f"{args.images} images of {args.size}², {model_name}, segment everything with "
                      f"{args.points_per_side}² points, float32",
                      ["", "wall time", "images per minute", "against the plain loop", "labels as the plain loop's"],
                      rows,
                      notes="Times include starting the cluster and loading the model; the plain loop loads the model "
                            "once too and writes the same outputs.")],
        figures={"images": args.images, "size": args.size, "model": args.model,
                 "points_per_side": args.points_per_side, "cores": cores, "seconds": timings,
                 "identical_labels": identical}, packages=("dask",))


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


if __name__ == "__main__":
    main()
