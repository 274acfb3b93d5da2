"""Prompt latency: napari-sam's Predictor against transformers' documented SAM path, in one process.

Both run the same model (default: SAM ViT-B's architecture with seeded random weights, 1024-pixel input) on the
same image and point prompts:

- ours: ``Predictor.set_image`` and ``precompute`` once (the encoder), then ``predict`` per prompt with the cached
  embedding;
- reference: per prompt, ``SamProcessor`` (PIL image processor) + ``SamModel(pixel_values, input_points)`` +
  ``post_process_masks``, as in transformers' SAM docs.

Writes benchmarks/results/predictor.json (``--results``).

Usage: ``python benchmarks/predictor.py [--image-size 1024] [--shape 520 704] [--rounds 2] [--dtype bfloat16]
[--results PATH]`` (a small ``--image-size``, e.g. 256, runs quickly, to check the script)
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import SamProcessor  # noqa: E402
from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil  # noqa: E402

from napari_sam import Predictor  # noqa: E402
from napari_sam.core.model import (
    model_geometry,  # noqa: E402
    resolve_dtype,  # noqa: E402
)
from napari_sam.testing.random_weights import random_sam, sam_config  # noqa: E402

import results  # noqa: E402  (benchmarks/results.py)


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=1024, help="model input size (ViT-B: 1024)")
    parser.add_argument("--shape", type=int, nargs=2, default=(520, 704), help="image (rows, cols)")
    parser.add_argument("--prompts", type=int, default=20, help="point prompts for ours")
    parser.add_argument("--rounds", type=int, default=2,
                        help="new images, each embedded by ours and prompted once by the reference, alternately")
    parser.add_argument("--dtype", default="float32", help="our weights' dtype: float32 or bfloat16")
    results.add_option(parser, "predictor")
    args = parser.parse_args()

    torch.manual_seed(0)
    config = sam_config(image_size=args.image_size)
    reference_model = random_sam(config, seed=0)
    model = random_sam(config, seed=0).to(resolve_dtype(args.dtype))
    predictor = Predictor(model, model_geometry(config), torch.device("cpu"), checkpoint="benchmark")
    processor = SamProcessor(image_processor=SamImageProcessorPil(
        size={"longest_edge": args.image_size}, pad_size={"height": args.image_size, "width": args.image_size}))

    rng = np.random.default_rng(0)
    rows, cols = args.shape
    images = [rng.integers(0, 256, (rows, cols, 3), dtype=np.uint8) for _ in range(args.rounds + 1)]
    points = np.stack([rng.uniform(0, rows - 1, 100), rng.uniform(0, cols - 1, 100)], axis=1)

    def reference_call(image, point):
        inputs = processor(images=image, input_points=[[[[float(point[1]), float(point[0])]]]], return_tensors="pt")
        with torch.no_grad():
            out = reference_model(pixel_values=inputs["pixel_values"], input_points=inputs["input_points"].float())
        return processor.post_process_masks(out.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"])

    def embed(image):  # set_image is lazy: precompute runs the encoder (or finds the embedding cached)
        predictor.set_image(image)
        predictor.precompute()

    # warm-up: first runs pay for allocations and kernel selection
    embed(images[-1])
    reference_call(images[-1], points[0])
    encode_times, reference_times = [], []
    for image in images[:-1]:  # alternate, so that both see the same machine state
        encode_times.append(timed(embed, image)[0])
        reference_times.append(timed(reference_call, image, points[0])[0])
    cached_time, _ = timed(embed, images[0])
    predictor.predict(points=points[:1])  # warm-up
    predict_times = [timed(predictor.predict, points=points[i: i + 1])[0] for i in range(args.prompts)]

    encode_time = statistics.median(encode_times)
    predict_ms = statistics.median(predict_times) * 1000
    reference_s = statistics.median(reference_times)
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}")
    print(f"model: SAM ViT-B architecture, random weights, input {args.image_size}, ours in {args.dtype}; "
          f"image {rows}x{cols} uint8 RGB")
    print(f"ours  set_image + precompute (encoder): {encode_time:8.2f} s   (median of {args.rounds})")
    print(f"ours  the same again (cached):    {cached_time * 1000:8.1f} ms")
    print(f"ours  predict, one point:         {predict_ms:8.1f} ms  (median of {args.prompts})")
    print(f"ref.  processor + model + post:   {reference_s:8.2f} s   (median of {args.rounds})")
    print(f"ratio per prompt (ref / ours):    {reference_s * 1000 / predict_ms:8.1f} x")
    print(f"ratio first prompt (ref / ours set_image + predict): "
          f"{reference_s / (encode_time + predict_ms / 1000):.2f} x")

    weights = "float32" if args.dtype == "float32" else f"{args.dtype} weights"
    table_rows = [
        [f"encoder (`set_image` + `precompute` of a new image), median of {args.rounds}",
         results.seconds(encode_time), "(part of every call)"],
        ["the same image again (cache hit)", results.seconds(cached_time), ""],
        [f"one point prompt, embedding cached (median of {args.prompts}; transformers: median of {args.rounds})",
         results.seconds(predict_ms / 1000), f"{results.seconds(reference_s)} (processor + model + post-processing)"],
        ["per-prompt speed-up over transformers", results.ratio(reference_s * 1000 / predict_ms), "1×"],
        ["first prompt on a new image (encoder + prompt)",
         results.ratio(reference_s / (encode_time + predict_ms / 1000)), "1×"],
    ]
    results.write(args.results, "predictor", "Prompt latency: napari-sam's Predictor against transformers' SAM path", [
        results.table(f"SAM ViT-B architecture, {args.image_size}-pixel input, {rows}×{cols} RGB image; "
                      f"napari-sam in {weights}",
                      ["step", f"napari-sam, {weights}", "transformers per call (float32)"], table_rows)],
        figures={"dtype": args.dtype, "image_size": args.image_size, "shape": [rows, cols],
                 "encoder_seconds": encode_times, "cached_seconds": cached_time, "predict_seconds": predict_times,
                 "reference_seconds": reference_times})


if __name__ == "__main__":
    main()
