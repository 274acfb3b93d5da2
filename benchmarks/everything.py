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
"""

from __future__ import annotations

import argparse
import os

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
    results.add_option(parser, "everything")
    args = parser.parse_args()

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


def write_results(args, name: str, columns: list[str], rows: list[list[str]], figures: dict) -> None:
    results.write(args.results, "everything", "Segment everything: napari-sam against transformers' pipeline",
                  [results.table(name, columns, rows, notes="Peak resident memory above the start of each run, "
                                                           "sampled every 5 ms.")], figures=figures)


if __name__ == "__main__":
    main()
