"""SAM's ViT image encoder: napari-sam's attention (one head and one band of query rows at a time) against
transformers' own, in one process, per precision: wall time (second of two runs) and peak resident memory above the
start, on one 1024² input, with the relative difference of the embeddings. Writes benchmarks/results/encoder.json
(``--results``).

``--smoke`` runs a 2-layer ViT on a 256² input instead, only to check that the script runs (not a measurement).

    python benchmarks/encoder.py [--config vit-b|vit-l|vit-h] [--threads N] [--results PATH] [--smoke]
"""

from __future__ import annotations

import argparse
import copy
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from napari_sam.core.model import fast_encoder  # noqa: E402
from napari_sam.testing.random_weights import random_sam, sam_config  # noqa: E402

import results  # noqa: E402  (benchmarks/results.py)
from measuring import measured  # noqa: E402  (benchmarks/measuring.py)

SIZES = {"vit-b": dict(hidden_size=768, depth=12, heads=12, global_attn_indexes=(2, 5, 8, 11)),
         "vit-l": dict(hidden_size=1024, depth=24, heads=16, global_attn_indexes=(5, 11, 17, 23)),
         "vit-h": dict(hidden_size=1280, depth=32, heads=16, global_attn_indexes=(7, 15, 23, 31))}
SMOKE = dict(image_size=256, hidden_size=64, depth=2, heads=2, global_attn_indexes=(1,), window_size=4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="vit-b", choices=sorted(SIZES))
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--smoke", action="store_true", help="a 2-layer ViT on a 256² input: checks the script only")
    results.add_option(parser, "encoder")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = SMOKE if args.smoke else SIZES[args.config]
    side = config.get("image_size", 1024)
    model = random_sam(sam_config(**config), seed=0)
    pixels = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(0))
    label = "smoke test (2-layer ViT)" if args.smoke else args.config.upper().replace("VIT", "ViT")  # ViT-B
    print(f"SAM {label} encoder, {side}² input, {args.threads} threads, torch {torch.__version__}")
    reference32, rows, figures = None, [], {}
    for dtype in (torch.float32, torch.bfloat16):
        theirs = copy.deepcopy(model).to(dtype)
        ours = copy.deepcopy(theirs)
        fast_encoder.install(ours)
        row = {}
        with torch.inference_mode():
            for name, candidate in (("transformers", theirs), ("napari-sam", ours)):
                measured("cpu", candidate.get_image_embeddings, pixels.to(dtype))  # warm-up
                seconds, peak, _, output = measured("cpu", candidate.get_image_embeddings, pixels.to(dtype))
                row[name] = (seconds, peak, output.float())
        if reference32 is None:
            reference32 = row["transformers"][2]
        difference = float((row["napari-sam"][2] - reference32).norm() / reference32.norm())
        for name, (seconds, peak, _) in row.items():
            print(f"{str(dtype).removeprefix('torch.'):9s} {name:13s} {seconds:6.2f} s  peak +{peak / 2**20:6.0f} MiB")
        print(f"{'':9s} ours vs transformers fp32: relative difference {difference:.2e}; "
              f"time {row['transformers'][0] / row['napari-sam'][0]:.2f}x, "
              f"peak memory {row['napari-sam'][1] / 2**20:.0f} MiB vs {row['transformers'][1] / 2**20:.0f} MiB")
        (their_seconds, their_peak, _), (our_seconds, our_peak, _) = row["transformers"], row["napari-sam"]
        rows.append([{torch.float32: "float32", torch.bfloat16: "bfloat16 weights"}[dtype],
                     f"{results.seconds(their_seconds)}, peak {results.size(their_peak)}",
                     f"{results.seconds(our_seconds)}, peak {results.size(our_peak)}",
                     results.ratio(their_seconds / our_seconds),
                     results.ratio(their_peak / our_peak) if our_peak > 0 and their_peak > 0 else "–",
                     f"{difference:.1e}"])
        figures[str(dtype).removeprefix("torch.")] = {
            "transformers": {"seconds": their_seconds, "peak_bytes": their_peak},
            "napari-sam": {"seconds": our_seconds, "peak_bytes": our_peak}, "relative_difference": difference}
    results.write(args.results, "encoder", "SAM's ViT image encoder: napari-sam's attention against transformers'", [
        results.table(f"SAM {label} encoder, {side}² input", [
            "weights", "transformers", "napari-sam", "speed-up", "less peak memory",
            "relative difference from transformers' float32 embedding"], rows,
            notes="Wall time of the second of two runs; peak resident memory above the start of the call.")],
        figures={"config": "smoke" if args.smoke else args.config, "input": side, "threads": args.threads,
                 **figures})


if __name__ == "__main__":
    main()
