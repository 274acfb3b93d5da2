"""Large images: a synthetic 8192² uint16 image of 20-30 px cells, kept as a zarr array on disk and read lazily,
with the bundled tiny-cells model (256-pixel input, so the image is seen in 256² native-resolution tiles).

The image is generated once (in a child process, so that its temporary arrays never count in this process's
memory) and written as a zarr array of 512² chunks into a temporary folder; its ground-truth labels are kept in
memory as one uint16 array. For fp32 weights and, where the CPU computes bf16 fast
(``napari_sam.core.model.devices.fast_bfloat16``), bf16 weights, it measures:

1. the first mask on a fresh region: ``set_image`` of the zarr array and one click on a cell in a region never
   embedded, with the contrast limits left to ``set_image`` (it samples regions of the image) and given (as the
   docks pass the layer's), against one tile's ``frame_embedding`` (read, preprocessing, encoder) of another fresh
   tile in the same run; medians over ``--regions`` regions;
2. a click in an already embedded region: the median of ``--clicks`` clicks on cells in an embedded view;
3. segment everything over the whole image in tiles (16 points per side, thresholds 0.7 / 0.8, labels painted
   into a zarr array on disk): wall time, tiles, objects, recall of ``--recall-cells`` cells at IoU >= 0.7, and
   the peak resident memory above the loaded model (sampled every 5 ms by benchmarks/measuring.py); then the same
   on the untiled path (the whole image resized to the model's 256-pixel input);
4. the embedding store: every tile of a ``--crop``² crop embedded into a new store, then a new predictor (empty
   memory cache, same store, as after a restart) embedding the same crop again, and the same crop with no store.

The process's address space is capped (``--memory-limit-gb``, default half the machine's memory), so that a run
needing more fails with an out-of-memory error, reported in the table with where it happened, rather than
bringing in the OOM killer. A markdown table of the results, with the machine, is printed at the end.
``--quick`` runs on a 4096² image, for development. The table is written to benchmarks/results/large_image.json too
(``--results``). A smaller run checks the script: ``--size 2048 --crop 512 --regions 1 --clicks 2 --recall-cells 10``.

    python benchmarks/large_image.py [--size 8192] [--quick] [--results PATH]
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import os
import re
import resource
import tempfile
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
import zarr  # noqa: E402
from scipy import ndimage  # noqa: E402

from napari_sam import Predictor, segment_everything  # noqa: E402
from napari_sam.core.embeddings import EmbeddingStore  # noqa: E402
from napari_sam.core.model import PRECISIONS, fast_bfloat16  # noqa: E402
from napari_sam.core.settings import TilingSettings  # noqa: E402
from napari_sam.demo import synthetic_cells  # noqa: E402

import results as results_file  # noqa: E402  (benchmarks/results.py)
from measuring import measured, resident_bytes  # noqa: E402  (benchmarks/measuring.py)

MODEL = "tiny-cells"
CELLS_PER_PIXEL = 5000 / 4096**2  # the density of tests/core/test_large_image.py
CHUNK = 512  # zarr chunks of the image and of the labels painted by segment everything
MIN_PIXELS = 150  # cells smaller than this (cut by the image border) are never sampled
EVERYTHING = {"points_per_side": 16, "pred_iou_thresh": 0.7, "stability_score_thresh": 0.8}
RECALL_IOU = 0.7


# --- the image ------------------------------------------------------------------------------------------------


def generate(folder: str, size: int, seed: int) -> tuple[float, float, int]:
    """Write the synthetic image as ``folder``/image.zarr and its labels as ``folder``/labels.npy; returns (seconds
    generating, seconds writing, number of cells). Runs in a child process."""
    start = time.perf_counter()
    image, labels = synthetic_cells((size, size), seed=seed, radius_range=(10.0, 15.0),
                                    n_cells=round(CELLS_PER_PIXEL * size * size))
    generating = time.perf_counter() - start
    start = time.perf_counter()
    array = zarr.create_array(os.path.join(folder, "image.zarr"), shape=image.shape, chunks=(CHUNK, CHUNK),
                              dtype=image.dtype)
    array[...] = image
    np.save(os.path.join(folder, "labels.npy"), labels)
    return generating, time.perf_counter() - start, int(labels.max())


class Cells:
    """The ground truth: labels (H, W) uint16, each cell's box and area, and cells drawn from it."""

    def __init__(self, labels: np.ndarray, seed: int):
        self.labels = labels
        self.boxes = ndimage.find_objects(labels)
        self.areas = sum(np.bincount(labels[start: start + 512].ravel(), minlength=len(self.boxes) + 1)[1:]
                         for start in range(0, len(labels), 512))  # in bands: no image-sized int64 copy
        self.ids = np.flatnonzero(self.areas >= MIN_PIXELS) + 1
        self.centres = np.array([[(self.boxes[i - 1][0].start + self.boxes[i - 1][0].stop) / 2,
                                  (self.boxes[i - 1][1].start + self.boxes[i - 1][1].stop) / 2] for i in self.ids])
        self.rng = np.random.default_rng(seed)

    def mask(self, cell: int) -> np.ndarray:
        """The cell's mask over its box."""
        return self.labels[self.boxes[cell - 1]] == cell

    def click(self, cell: int) -> list[float]:
        """The cell's deepest pixel (farthest from its outline), in image pixels."""
        depth = ndimage.distance_transform_edt(np.pad(self.mask(cell), 1))[1:-1, 1:-1]
        row, col = np.unravel_index(int(np.argmax(depth)), depth.shape)
        box = self.boxes[cell - 1]
        return [float(row + box[0].start), float(col + box[1].start)]

    def nearest(self, position) -> int:
        return int(self.ids[np.argmin(np.abs(self.centres - np.asarray(position)).sum(axis=1))])

    def inside(self, region, count: int, margin: int = 48) -> list[int]:
        """``count`` random cells whose centres lie in ``region`` (row0, col0, row1, col1) shrunk by ``margin``."""
        row0, col0, row1, col1 = region
        rows, cols = self.centres[:, 0], self.centres[:, 1]
        within = self.ids[(rows >= row0 + margin) & (rows < row1 - margin) & (cols >= col0 + margin)
                          & (cols < col1 - margin)]
        return [int(c) for c in self.rng.permutation(within)[:count]]

    def sample(self, count: int) -> list[int]:
        return [int(c) for c in self.rng.permutation(self.ids)[:count]]

    def iou(self, prediction, cell: int) -> float:
        """IoU of a prediction's best mask with ``cell``."""
        frame, mask = prediction.frame, prediction.best_masks()[0]
        inside = int(np.count_nonzero(mask & (self.labels[frame.slices] == cell)))
        return inside / (int(mask.sum()) + int(self.areas[cell - 1]) - inside)


def recall(cells: Cells, sample: list[int], labels, objects: list, first_id: int = 1) -> tuple[int, float]:
    """(cells found at IoU >= RECALL_IOU, median best IoU) for ``sample``, against the painted ``labels`` (a zarr
    array; an object's painted pixels are those that still carry its id) whose id k is ``objects[k - first_id]``."""
    hits, best = 0, []
    for cell in sample:
        box, target = cells.boxes[cell - 1], cells.mask(cell)
        found = np.asarray(labels[box])
        ids, overlaps = np.unique(found[target], return_counts=True)
        score = 0.0
        for k, overlap in zip(ids, overlaps):
            if not k or overlap <= score * target.sum():  # IoU <= overlap / cell area
                continue
            obj = objects[int(k) - first_id]
            painted = int(np.count_nonzero(np.asarray(labels[obj.rows, obj.cols])[obj.mask] == k))
            score = max(score, overlap / (painted + target.sum() - overlap))
        hits += score >= RECALL_IOU
        best.append(score)
    return hits, float(np.median(best)) if best else 0.0


# --- measurements ---------------------------------------------------------------------------------------------


class EncoderRuns:
    """Counts the vision encoder's forward passes."""

    def __init__(self, predictor: Predictor):
        self.count = 0
        self.hook = predictor.model.vision_encoder.register_forward_hook(self._seen)

    def _seen(self, *args) -> None:
        self.count += 1


def load(dtype: str, **kwargs) -> Predictor:
    predictor = Predictor.from_pretrained(MODEL, device="cpu", dtype=dtype, **kwargs)
    predictor.runs = EncoderRuns(predictor)
    return predictor


def overlaps(frame, others, margin: int) -> bool:
    """Whether ``frame`` comes within ``margin`` pixels of any of ``others``."""
    return any(frame.row0 < o.row1 + margin and o.row0 < frame.row1 + margin and frame.col0 < o.col1 + margin
               and o.col0 < frame.col1 + margin for o in others)


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - start, result


def interactive(dtype: str, image, cells: Cells, regions: int, clicks: int) -> dict:
    """Parts 1 and 2: the first mask on fresh regions against one tile's encoder, then clicks in an embedded view."""
    predictor = load(dtype)
    size = image.shape[0]
    set_time, plan = timed(predictor.set_image, image)
    limits = plan.source.contrast_limits  # what a napari layer would pass
    tile = plan.tiles.tile
    # a warm-up in the top-left corner: the process's first encoder and decoder calls pay one-time costs
    warm_time, warm = timed(predictor.predict, points=[cells.click(cells.nearest((tile // 2, tile // 2)))])
    taken = [warm.frame]

    def fresh_click(position):
        """A cell near ``position`` whose frame is at least a tile away from every frame used so far."""
        order = np.argsort(np.abs(cells.centres - np.asarray(position)).sum(axis=1))
        for cell in cells.ids[order[:500]]:
            point = cells.click(int(cell))
            frame = predictor.frame_for(points=[point])
            if not overlaps(frame, taken, tile):
                taken.append(frame)
                return int(cell), point
        raise RuntimeError(f"no fresh region near {position}: use a larger image or fewer regions")

    def fresh_tile(position):
        frame = min((f for f in plan.tiles.frames() if not overlaps(f, taken, tile)),
                    key=lambda f: np.abs(np.array([f.row0, f.col0]) + tile / 2 - np.asarray(position)).sum())
        taken.append(frame)
        return frame

    steps = [(i + 1) / (regions + 1) for i in range(regions)]
    sampled = [fresh_click((t * size, t * size)) for t in steps]  # set_image without limits: sampled
    given = [fresh_click((t * size, (t + 0.5 / (regions + 1)) * size)) for t in steps]  # the layer's limits
    lone = [fresh_tile((t * size, (1 - t) * size)) for t in steps]
    found = {key: [] for key in ("encoder", "read", "first", "set", "click", "runs", "iou", "given", "given_set")}
    for frame, plain, with_limits in zip(lone, sampled, given):
        found["read"].append(timed(plan.source.read, frame)[0])
        before = predictor.runs.count
        found["encoder"].append(timed(predictor.frame_embedding, frame)[0])
        assert predictor.runs.count == before + 1, "the lone tile was not fresh"
        for (cell, point), contrast, total, setting in ((plain, None, "first", "set"),
                                                        (with_limits, limits, "given", "given_set")):
            before = predictor.runs.count
            start = time.perf_counter()
            predictor.set_image(image, contrast_limits=contrast)
            middle = time.perf_counter()
            prediction = predictor.predict(points=[point])
            end = time.perf_counter()
            found[total].append(end - start)
            found[setting].append(middle - start)
            found["runs"].append(predictor.runs.count - before)
            found["iou"].append(cells.iou(prediction, cell))
            if contrast is None:
                found["click"].append(end - middle)
    result = {key: float(np.median(values)) for key, values in found.items() if key != "runs"}
    result.update(set_image=set_time, warm_up=warm_time, first_runs=found["runs"])
    # part 2: a view embedded (as the widget does around the view as it rests), then clicks on cells in it
    view = min(1024, size // 4)
    centre = size // 2 + size // 16
    region = (centre - view // 2, centre - view // 2, centre + view // 2, centre + view // 2)
    result["view"], result["view_tiles"] = view, len(predictor.frames(region))
    result["view_time"] = timed(predictor.precompute, region)[0]
    before = predictor.runs.count
    latencies, ious = [], []
    for cell in cells.inside(region, clicks):
        point = cells.click(cell)
        latency, prediction = timed(predictor.predict, points=[point])
        latencies.append(latency)
        ious.append(cells.iou(prediction, cell))
    result.update(clicks=len(latencies), click_median=float(np.median(latencies)),
                  click_p90=float(np.percentile(latencies, 90)), click_max=max(latencies),
                  click_runs=predictor.runs.count - before, click_iou=float(np.median(ious)))
    return result


def out_of_memory(error: BaseException) -> bool:
    return isinstance(error, MemoryError) or (isinstance(error, RuntimeError) and "memory" in str(error))


def everything(dtype: str, image, cells: Cells, sample: list[int], folder: Path, mode: str) -> dict:
    """Part 3: segment everything on the whole image, labels painted into a zarr array on disk. A run that runs
    out of memory is reported (with where it failed) instead of ending the benchmark."""
    predictor = load(dtype, tiling=TilingSettings(mode=mode))
    out = zarr.create_array(folder / f"labels-{dtype}-{mode}.zarr", shape=image.shape, chunks=(CHUNK, CHUNK),
                            dtype="uint32")
    gc.collect()
    model_rss, start = resident_bytes(), time.perf_counter()
    try:
        seconds, peak, _, result = measured("cpu", segment_everything, predictor, image, out=out, **EVERYTHING)
    except (MemoryError, RuntimeError) as error:
        if not out_of_memory(error):
            raise
        stack = [frame for frame in traceback.extract_tb(error.__traceback__) if "napari_sam" in frame.filename]
        calls = " → ".join(f"{frame.name}()" for frame in stack) or "?"
        where = f" ({Path(stack[-1].filename).name}:{stack[-1].lineno})" if stack else ""
        wanted = re.search(r"allocate (\d+) bytes", str(error))
        wanted = f", allocating {mib(int(wanted.group(1)))}" if wanted else ""
        return {"failed": f"out of memory after {duration(time.perf_counter() - start)} in {calls}{where}{wanted}",
                "model_rss": model_rss, "tiles": len(predictor.frames())}
    frames = len(predictor.frames())
    retained = resident_bytes() - model_rss
    found, median_iou = recall(cells, sample, out, result.objects)
    return {"seconds": seconds, "peak": peak, "retained": retained, "model_rss": model_rss, "tiles": frames,
            "objects": len(result.objects), "found": found, "sampled": len(sample), "median_iou": median_iou,
            "encoder_runs": predictor.runs.count}


def store_reopen(dtype: str, image, crop: int, folder: Path) -> dict:
    """Part 4: a crop's tiles into a new store, then a new predictor on the same store, then none."""
    region = (0, 0, crop, crop)
    root = folder / f"store-{dtype}"
    results = {}
    for name, store in (("fill", EmbeddingStore(root)), ("reopen", EmbeddingStore(root)), ("memory", None)):
        predictor = load(dtype, store=store)
        predictor.set_image(image)
        seconds, computed = timed(predictor.precompute, region)
        results[name] = {"seconds": seconds, "computed": computed, "runs": predictor.runs.count}
        results["tiles"] = len(predictor.frames(region))
        del predictor
        gc.collect()
    summary = EmbeddingStore(root).summary()
    results["entries"], results["bytes"] = summary["entries"], summary["bytes"]
    return results


# --- report ---------------------------------------------------------------------------------------------------


def machine() -> str:
    model, flags = "unknown CPU", set()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name") and model == "unknown CPU":
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    bf16 = "yes" if "avx512_bf16" in flags else "no"
    return (f"{model}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, avx512_bf16: {bf16}; "
            f"torch {torch.__version__}, transformers {transformers.__version__}, zarr {zarr.__version__}")


NAMES = {"float32": "fp32", "bfloat16": "bf16 weights"}


def table(rows: list[tuple[str, list[str]]], dtypes: list[str]) -> str:
    lines = ["| measurement | " + " | ".join(NAMES[d] for d in dtypes) + " |",
             "|---|" + "---|" * len(dtypes)]
    lines += ["| " + label + " | " + " | ".join(values) + " |" for label, values in rows]
    return "\n".join(lines)


#: Durations and sizes as the results files write them.
duration = results_file.seconds


def mib(nbytes: float) -> str:
    return results_file.size(nbytes, "")


def limit_memory(gib: float) -> None:
    """Cap this process's (and the image generator's) address space, so that a run that needs more memory than
    the machine has fails with an out-of-memory error (reported) instead of bringing in the OOM killer."""
    if gib > 0:
        limit = int(gib * 2**30)
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))


def busy_cpus(seconds: float = 1.0) -> float:
    """How many CPUs other processes keep busy (from /proc/stat over ``seconds``; 0 where it cannot be read)."""
    def times():
        with open("/proc/stat") as handle:
            values = [int(v) for v in handle.readline().split()[1:]]
        return sum(values), values[3] + values[4]  # all, idle + iowait

    try:
        (total0, idle0), _, (total1, idle1) = times(), time.sleep(seconds), times()
    except (OSError, ValueError, IndexError):
        return 0.0
    return (os.cpu_count() or 1) * (1 - (idle1 - idle0) / max(1, total1 - total0))


def total_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def report(results: dict, dtypes: list[str], size: int, crop: int, n_cells: int, args) -> list[tuple[str, list[str]]]:
    def row(label, value):
        return label, [value(results[d]) for d in dtypes]

    def first(r, total, setting):
        i = r["interactive"]
        return f"{duration(i[total])} ({duration(i[setting])} + {duration(i[total] - i[setting])})"

    def ratio(r):
        i = r["interactive"]
        return f"{i['first'] / i['encoder']:.1f}× / {i['given'] / i['encoder']:.1f}× / {i['click'] / i['encoder']:.1f}×"

    def everything_rows(mode, name):
        def ran(value, first=False):
            return lambda r: (r[mode]["failed"] if first else "–") if "failed" in r[mode] else value(r[mode])

        return [
            row(f"segment everything {size}², {name}: wall time",
                ran(lambda m: f"{duration(m['seconds'])} ({m['tiles']} frames)", first=True)),
            row(f"… objects found ({n_cells} cells); recall at IoU ≥ {RECALL_IOU} of {args.recall_cells} cells",
                ran(lambda m: f"{m['objects']}; {m['found'] / max(1, m['sampled']):.0%}")),
            row("… peak RSS above the loaded model", ran(lambda m: f"+{mib(m['peak'])}")),
        ]

    rows = [
        row(f"`set_image` of the {size}² zarr image (contrast limits from sampled regions)",
            lambda r: duration(r["interactive"]["set_image"])),
        row("first call in the process (warm-up: a tile and a click)",
            lambda r: duration(r["interactive"]["warm_up"])),
        row(f"one fresh tile's `frame_embedding` (read + encoder), median of {args.regions}",
            lambda r: duration(r["interactive"]["encoder"])),
        row(f"first mask on a fresh region: `set_image` + click, median of {args.regions}",
            lambda r: first(r, "first", "set")),
        row("… with the layer's contrast limits given (as the docks pass them)",
            lambda r: first(r, "given", "given_set")),
        row("first mask / one tile's encoder (limits sampled / given / the click alone)", ratio),
        row(f"click in an embedded region, median of {args.clicks} (p90)",
            lambda r: f"{duration(r['interactive']['click_median'])} ({duration(r['interactive']['click_p90'])})"),
        row("clicks' median IoU with their cell (fresh / embedded)",
            lambda r: f"{r['interactive']['iou']:.2f} / {r['interactive']['click_iou']:.2f}"),
    ]
    rows += everything_rows("tiles", "in tiles") + everything_rows("whole", "whole image resized to 256 px")
    rows += [
        row(f"store: every tile of a {crop}² crop into a new store",
            lambda r: f"{duration(r['store']['fill']['seconds'])} ({r['store']['tiles']} tiles, "
                      f"{r['store']['fill']['runs']} encoder runs)"),
        row("store: a new predictor on the same store, same crop",
            lambda r: f"{duration(r['store']['reopen']['seconds'])} ({r['store']['reopen']['runs']} encoder runs)"),
        row("same crop, no store (memory cache only)", lambda r: duration(r["store"]["memory"]["seconds"])),
    ]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=None, help="image side in pixels (default 8192, --quick 4096)")
    parser.add_argument("--quick", action="store_true", help="a 4096² image, for development")
    parser.add_argument("--crop", type=int, default=4096, help="side of the crop embedded into the store")
    parser.add_argument("--regions", type=int, default=5, help="fresh regions clicked for the first mask")
    parser.add_argument("--clicks", type=int, default=20, help="clicks in an embedded region")
    parser.add_argument("--recall-cells", type=int, default=300, help="cells sampled for segment everything's recall")
    parser.add_argument("--dtype", choices=PRECISIONS, default="auto",
                        help="auto: fp32, and bf16 too where the CPU computes it fast")
    parser.add_argument("--memory-limit-gb", type=float, default=round(0.5 * total_memory() / 2**30, 1),
                        help="address-space cap of the process in GiB (default: half the memory; 0: none)")
    parser.add_argument("--seed", type=int, default=940_001)
    results_file.add_option(parser, "large_image")
    args = parser.parse_args()
    size = args.size or (4096 if args.quick else 8192)
    crop = min(args.crop, size)
    if args.dtype == "auto":
        dtypes = ["float32"] + (["bfloat16"] if fast_bfloat16(torch.device("cpu")) else [])
    else:
        dtypes = [args.dtype]
    limit_memory(args.memory_limit_gb)
    transformers.utils.logging.disable_progress_bar()
    print(f"machine: {machine()}")
    print(f"model: {MODEL}; image {size}² uint16, cells of radius 10-15 px; precision: {', '.join(dtypes)}; "
          f"address space capped at {args.memory_limit_gb:g} GiB")
    busy = busy_cpus()
    if busy > 0.25:
        print(f"note: other processes kept {busy:.1f} CPUs busy before the start; timings will suffer")

    with tempfile.TemporaryDirectory(prefix="napari-sam-large-") as temporary:
        folder = Path(temporary)
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as child:
            generating, writing, n_cells = child.submit(generate, temporary, size, args.seed).result()
        image = zarr.open_array(folder / "image.zarr", mode="r")
        on_disk = sum(f.stat().st_size for f in (folder / "image.zarr").rglob("*") if f.is_file())
        cells = Cells(np.load(folder / "labels.npy"), args.seed)
        sample = cells.sample(args.recall_cells)
        print(f"image: {n_cells} cells ({len(cells.ids)} of >= {MIN_PIXELS} px); generated in {duration(generating)}"
              f", written in {duration(writing)} (zarr, {CHUNK}² chunks, {mib(on_disk)} on disk)")

        results = {}
        for dtype in dtypes:
            part = results[dtype] = {}
            part["interactive"] = found = interactive(dtype, image, cells, args.regions, args.clicks)
            print(f"[{dtype}] first mask on a fresh region {duration(found['first'])} (set_image "
                  f"{duration(found['set'])} + click {duration(found['click'])}; with the limits given "
                  f"{duration(found['given'])}); encoder runs {found['first_runs']}, IoU {found['iou']:.2f}; one "
                  f"tile's frame_embedding {duration(found['encoder'])} (its read alone {duration(found['read'])})")
            print(f"[{dtype}] a {found['view']}² view embedded in {duration(found['view_time'])} "
                  f"({found['view_tiles']} tiles); {found['clicks']} clicks in it: median "
                  f"{duration(found['click_median'])}, p90 {duration(found['click_p90'])}, max "
                  f"{duration(found['click_max'])}, encoder runs {found['click_runs']}, IoU {found['click_iou']:.2f}")
            for mode in ("tiles", "whole"):
                part[mode] = run = everything(dtype, image, cells, sample, folder, mode)
                if "failed" in run:
                    print(f"[{dtype}] segment everything ({mode}, {run['tiles']} frames): {run['failed']}")
                else:
                    print(f"[{dtype}] segment everything ({mode}): {duration(run['seconds'])}, {run['tiles']} frames,"
                          f" {run['objects']} objects, recall {run['found']}/{run['sampled']} (median IoU "
                          f"{run['median_iou']:.2f}), peak +{mib(run['peak'])} above the model (RSS at the start "
                          f"{mib(run['model_rss'])}), retained +{mib(run['retained'])}")
                gc.collect()
            part["store"] = stored = store_reopen(dtype, image, crop, folder)
            print(f"[{dtype}] store, {crop}² crop ({stored['tiles']} tiles): fill {duration(stored['fill']['seconds'])}"
                  f" ({stored['fill']['runs']} encoder runs), reopen {duration(stored['reopen']['seconds'])} "
                  f"({stored['reopen']['runs']} encoder runs), no store {duration(stored['memory']['seconds'])}; "
                  f"{stored['entries']} entries, {mib(stored['bytes'])}")

    print()
    print(f"Machine: {machine()}")
    print(f"Image: {size}² uint16 zarr ({CHUNK}² chunks), {n_cells} cells; generated in {duration(generating)}, "
          f"written in {duration(writing)}")
    print()
    rows = report(results, dtypes, size, crop, n_cells, args)
    print(table(rows, dtypes))
    results_file.write(
        args.results, "large_image", "Large images: a zarr image read lazily, in tiles, with tiny-cells",
        [results_file.table(f"{size}² uint16 zarr image ({CHUNK}² chunks), {n_cells} cells, {MODEL}",
                            ["measurement", *(NAMES[d] for d in dtypes)], [[label, *values] for label, values in rows],
                            notes=f"Segment everything: {EVERYTHING['points_per_side']}² points per tile, thresholds "
                                  f"{EVERYTHING['pred_iou_thresh']} / {EVERYTHING['stability_score_thresh']}, labels "
                                  "painted into a zarr array on disk. Peak memory: resident memory above the loaded "
                                  "model, sampled every 5 ms.")],
        figures={"size": size, "crop": crop, "cells": n_cells, "generating_seconds": generating,
                 "writing_seconds": writing, **results}, packages=("zarr",))


if __name__ == "__main__":
    main()
