"""Segment everything: napari-sam's generator against transformers' mask-generation pipeline, in one process.

Both run the same model (default: SAM ViT-B's architecture with seeded random weights, 1024-pixel input) on the
same image with the same grid and thresholds. The pipeline's NMS needs torchvision, which is not installed, so
its post-processing is given the same greedy NMS written in torch. Prints wall time, peak resident memory
above the starting point of each run (sampled every 5 ms), the number of masks on each side, how many of them
have a partner at IoU >= 0.9 on the other side, and the speed ratio. ``--ours-only`` skips the pipeline (for
the memory check at large sizes). Writes benchmarks/results/everything.json (``--results``).

    python benchmarks/everything.py [--size 1024] [--points-per-side 32] [--dtype bfloat16] [--ours-only]
        [--results PATH]

A small run checks the script: ``--size 256 --image-size 256 --points-per-side 4``.

``--methods`` compares segment everything's methods instead (``grid``, ``instances``, ``instances+sam``), each with
the same model in the same run: on held-out synthetic 512 x 512 scenes of several looks (seeds training never
draws) with the bundled tiny-cells and its instance head, recall and precision at IoU 0.5 and the time per image,
with its embeddings cached and from scratch; then the same times on SAM ViT-B's architecture (seeded random
weights) with a head trained on its own embeddings (``napari_sam.finetune(..., instances=True)`` on synthetic nuclei
scenes). Writes benchmarks/results/everything-methods.json.

    python benchmarks/everything.py --methods [--looks nuclei crowded small] [--scenes 2] [--vit-b-images 6]
        [--vit-b-minutes 4]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from transformers import pipeline  # noqa: E402
from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil, _rle_to_mask  # noqa: E402

from napari_sam import Predictor  # noqa: E402
from napari_sam.core.boxes import nms  # noqa: E402
from napari_sam.core.model import model_geometry  # noqa: E402
from napari_sam.core.workflows import segment_everything  # noqa: E402
from napari_sam.demo import synthetic_cells  # noqa: E402
from napari_sam.testing.random_weights import random_sam, sam_config  # noqa: E402

import results  # noqa: E402  (benchmarks/results.py)
from measuring import measured  # noqa: E402  (benchmarks/measuring.py)


def pipeline_post_process(rle_masks, iou_scores, mask_boxes, crops_nms_thresh=0.7):
    keep = nms(mask_boxes.float(), iou_scores, crops_nms_thresh)
    return [_rle_to_mask(rle_masks[i]) for i in keep], iou_scores[keep], [rle_masks[i] for i in keep], \
        mask_boxes[keep]


def partners(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    if not len(a) or not len(b):
        return 0, 0
    x = torch.from_numpy(a).flatten(1).float()
    y = torch.from_numpy(b).flatten(1).float()
    inter = x @ y.T
    iou = inter / (x.sum(1)[:, None] + y.sum(1)[None] - inter).clamp(min=1)
    return int((iou.max(1).values >= 0.9).sum()), int((iou.max(0).values >= 0.9).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1024, help="image side in pixels")
    parser.add_argument("--image-size", type=int, default=1024, help="model input size")
    parser.add_argument("--points-per-side", type=int, default=32)
    parser.add_argument("--pred-iou-thresh", type=float, default=0.88)
    parser.add_argument("--stability-score-thresh", type=float, default=0.95)
    parser.add_argument("--dtype", default="float32", help="our weights' dtype (float32 or bfloat16)")
    parser.add_argument("--ours-only", action="store_true")
    parser.add_argument("--methods", action="store_true", help="compare segment everything's methods instead")
    parser.add_argument("--looks", nargs="+", default=list(METHOD_LOOKS), help="--methods: the looks")
    parser.add_argument("--scenes", type=int, default=2, help="--methods: held-out scenes per look")
    parser.add_argument("--vit-b-images", type=int, default=6,
                        help="--methods: images to train ViT-B's head on (0: leave ViT-B out)")
    parser.add_argument("--vit-b-minutes", type=float, default=4.0, help="--methods: ViT-B's head training time")
    results.add_option(parser, "everything")
    args = parser.parse_args()
    if args.methods:
        compare_methods(args)
        return

    config = sam_config(image_size=args.image_size)
    model = random_sam(config, seed=0)
    cells, _ = synthetic_cells((args.size, args.size), seed=1, radius_range=(args.size / 40, args.size / 12))
    low, high = np.percentile(cells, [0.5, 99.5])
    gray = (np.clip((cells - low) / (high - low), 0, 1) * 255).astype(np.uint8)
    image = np.stack([gray] * 3, axis=-1)
    thresholds = {"pred_iou_thresh": args.pred_iou_thresh, "stability_score_thresh": args.stability_score_thresh}
    print(f"model: SAM ViT-B architecture, random weights, input {args.image_size}; image {args.size}² RGB; "
          f"grid {args.points_per_side}²; {torch.get_num_threads()} torch threads")

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    ours_model = random_sam(config, seed=0).to(dtype)
    predictor = Predictor(ours_model, model_geometry(config), torch.device("cpu"), checkpoint="benchmark")
    ours_time, ours_memory, _, ours = measured("cpu", segment_everything, predictor, image,
                                            points_per_side=args.points_per_side, **thresholds)
    print(f"ours ({args.dtype}): {ours_time:7.1f} s, peak +{ours_memory / 2**20:6.0f} MiB, "
          f"{len(ours.masks)} masks")
    weights = "float32" if args.dtype == "float32" else f"{args.dtype} weights"
    name = (f"{args.size}² image, {args.points_per_side}² grid, thresholds {args.pred_iou_thresh:g} / "
            f"{args.stability_score_thresh:g}, napari-sam in {weights}")
    if args.image_size != 1024:
        name += f", {args.image_size}-pixel model input"
    figures = {"dtype": args.dtype, "size": args.size, "image_size": args.image_size,
               "points_per_side": args.points_per_side, **thresholds,
               "napari-sam": {"seconds": ours_time, "peak_bytes": ours_memory, "masks": len(ours.masks)}}
    if args.ours_only:
        write_results(args, name, ["", f"napari-sam, {weights}"], [
            ["wall time", results.seconds(ours_time)], ["peak memory above the start", results.size(ours_memory)],
            ["masks", str(len(ours.masks))]], figures)
        return

    processor = SamImageProcessorPil(size={"longest_edge": args.image_size},
                                     pad_size={"height": args.image_size, "width": args.image_size})
    processor.post_process_for_mask_generation = pipeline_post_process
    generator = pipeline("mask-generation", model=model, image_processor=processor, device="cpu")
    ref_time, ref_memory, _, theirs = measured("cpu", generator, Image.fromarray(image), points_per_batch=64,
                                            points_per_crop=args.points_per_side, crops_nms_thresh=0.7,
                                            **thresholds)
    their_masks = np.stack(theirs["masks"]) if theirs["masks"] else np.zeros((0, args.size, args.size), bool)
    ours_matched, theirs_matched = partners(ours.masks, their_masks)
    print(f"transformers pipeline (fp32): {ref_time:7.1f} s, peak +{ref_memory / 2**20:6.0f} MiB, "
          f"{len(their_masks)} masks")
    print(f"masks with a partner at IoU >= 0.9: ours {ours_matched}/{len(ours.masks)}, "
          f"pipeline {theirs_matched}/{len(their_masks)}")
    print(f"speed-up: {ref_time / ours_time:.1f}x")
    figures["transformers"] = {"seconds": ref_time, "peak_bytes": ref_memory, "masks": len(their_masks)}
    figures["partners"] = {"napari-sam": ours_matched, "transformers": theirs_matched}
    write_results(args, name, ["", f"napari-sam, {weights}", "transformers pipeline (float32)"], [
        ["wall time", results.seconds(ours_time), results.seconds(ref_time)],
        ["peak memory above the start", results.size(ours_memory), results.size(ref_memory)],
        ["masks", str(len(ours.masks)), str(len(their_masks))],
        ["masks with a partner at IoU ≥ 0.9 on the other side", f"{ours_matched} of {len(ours.masks)}",
         f"{theirs_matched} of {len(their_masks)}"],
        ["speed-up", results.ratio(ref_time / ours_time), "1×"]], figures)


METHODS = ("grid", "instances", "instances+sam")
#: The looks --methods measures by default: those the issue of speed and recall is about, and the others.
METHOD_LOOKS = ("nuclei", "crowded", "small", "defocus", "large", "irregular", "textured", "uneven", "mitotic",
                "cytoplasm", "phase")


def held_out_scenes(look: str, count: int, first: int, size: int = 512):
    from napari_sam.testing.synthetic_microscopy import synthetic_scene

    return [synthetic_scene((size, size), look, seed=seed)[:2] for seed in range(first, first + count)]


def method_figures(predictor, scenes, method: str) -> tuple[float, float, float, float]:
    """(recall, precision, seconds per image with cached embeddings, seconds per image from scratch) of
    ``method`` on ``scenes``."""
    import time

    from napari_sam.core.workflows.training import matched

    settings = predictor.recommended.everything.replace(method=method)
    counts, cached, fresh = np.zeros(4, np.int64), [], []
    for image, labels in scenes:
        predictor.cache.clear()
        start = time.perf_counter()
        segment_everything(predictor, image, settings)
        fresh.append(time.perf_counter() - start)
        start = time.perf_counter()
        found = segment_everything(predictor, image, settings)
        cached.append(time.perf_counter() - start)
        counts += matched(labels, np.asarray(found.labels))
    return counts[1] / max(1, counts[0]), counts[3] / max(1, counts[2]), float(np.median(cached)), \
        float(np.median(fresh))


def compare_methods(args) -> None:
    """``--methods``: the bundled model's methods per look, then ViT-B's architecture with a head of its own."""
    from napari_sam.testing.held_out import HELD_OUT

    torch.manual_seed(0)
    tiny = Predictor.from_pretrained("tiny-cells", device="cpu", dtype=torch.float32)
    rows, figures = [], {"tiny-cells": {}}
    times: dict[str, list[tuple[float, float]]] = {method: [] for method in METHODS}
    for look in args.looks:
        scenes = held_out_scenes(look, args.scenes, HELD_OUT + 5000)
        row, figures["tiny-cells"][look] = [look], {}
        for method in METHODS:
            recall, precision, cached, fresh = method_figures(tiny, scenes, method)
            figures["tiny-cells"][look][method] = {"recall": recall, "precision": precision, "seconds": cached,
                                                   "seconds_with_embedding": fresh}
            times[method].append((cached, fresh))
            row.append(f"{recall:.2f} / {precision:.2f}")
            print(f"{look:10s} {method:14s} recall {recall:.2f} precision {precision:.2f} {cached:6.2f} s "
                  f"({fresh:6.2f} s with the embedding)", flush=True)
        rows.append(row)
    speed = [["time per 512² image, embeddings cached"] + [results.seconds(np.median([t[0] for t in times[m]]))
                                                           for m in METHODS],
             ["time per 512² image, embedding included"] + [results.seconds(np.median([t[1] for t in times[m]]))
                                                            for m in METHODS],
             ["speed-up over the grid, cached"] + [results.ratio(np.median([t[0] for t in times["grid"]])
                                                                 / np.median([t[0] for t in times[m]]))
                                                   for m in METHODS]]
    tables = [results.table(f"tiny-cells on held-out synthetic 512² scenes ({args.scenes} per look): recall / "
                            "precision at IoU ≥ 0.5", ["look", *METHODS], rows),
              results.table("tiny-cells: time per image (median over the looks)", ["", *METHODS], speed)]
    if args.vit_b_images:
        tables.append(vit_b_methods(args, figures))
    results.write(args.results if args.results != results.default_path("everything") else
                  results.default_path("everything-methods"), "everything-methods",
                  "Segment everything's methods: SAM's grid against the instance head", tables, figures=figures)


def vit_b_methods(args, figures: dict) -> dict:
    """SAM ViT-B's architecture (random weights) with a head trained on its embeddings of synthetic nuclei: the
    time of each method per 512² image, and what they find there."""
    import tempfile

    from napari_sam.core.settings import TrainingSettings
    from napari_sam.core.workflows.training import AnnotatedImage, finetune
    from napari_sam.testing.held_out import HELD_OUT

    config = sam_config(image_size=1024)
    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder) / "vit-b"
        random_sam(config, seed=0).save_pretrained(base)
        training = [AnnotatedImage(image, labels, f"nuclei {i}")
                    for i, (image, labels) in enumerate(held_out_scenes("nuclei", args.vit_b_images, 7000))]
        result = finetune(str(base), training, Path(folder) / "with-head",
                          TrainingSettings(instances=True, minutes=args.vit_b_minutes, learning_rate=2e-3),
                          device="cpu", allow_worse=True)
        predictor = Predictor.from_pretrained(result.out, device="cpu", dtype=torch.float32)
        scenes = held_out_scenes("nuclei", 2, HELD_OUT + 5000)
        found = {method: method_figures(predictor, scenes, method) for method in METHODS}
    figures["vit-b"] = {"training_images": args.vit_b_images, "training_steps": result.steps,
                        "training_seconds": result.seconds,
                        **{m: dict(zip(("recall", "precision", "seconds", "seconds_with_embedding"), found[m]))
                           for m in METHODS}}
    rows = [["time per 512² image, embedding cached"] + [results.seconds(found[m][2]) for m in METHODS],
            ["time per 512² image, embedding included"] + [results.seconds(found[m][3]) for m in METHODS],
            ["speed-up over the grid, cached"] + [results.ratio(found["grid"][2] / found[m][2]) for m in METHODS],
            ["recall / precision on 2 nuclei scenes"] + [f"{found[m][0]:.2f} / {found[m][1]:.2f}" for m in METHODS]]
    for method in METHODS:
        print(f"ViT-B {method:14s} {found[method]}", flush=True)
    return results.table(
        f"SAM ViT-B's architecture (random weights, 1024-pixel input; 32² grid, Meta's thresholds), a head trained "
        f"{result.seconds / 60:.0f} min on its embeddings of {args.vit_b_images} synthetic nuclei scenes",
        ["", *METHODS], rows, notes="Random weights find little with any method: the rows that matter are the times.")


def write_results(args, name: str, columns: list[str], rows: list[list[str]], figures: dict) -> None:
    results.write(args.results, "everything", "Segment everything: napari-sam against transformers' pipeline",
                  [results.table(name, columns, rows, notes="Peak resident memory above the start of each run, "
                                                           "sampled every 5 ms.")], figures=figures)


if __name__ == "__main__":
    main()
