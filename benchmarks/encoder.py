"""SAM's ViT image encoder: napari-sam's attention (one head and one band of query rows at a time) against
transformers' own, in one process, per precision: wall time (second of two runs) and peak resident memory above the
start, on one 1024² input, with the relative difference of the embeddings.

    python benchmarks/encoder.py [--config vit-b|vit-l|vit-h] [--threads N]
"""

from __future__ import annotations

import argparse
import copy
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from napari_sam.core.model import fast_encoder  # noqa: E402
from napari_sam.testing.random_weights import random_sam, sam_config  # noqa: E402

from measuring import measured  # noqa: E402  (benchmarks/measuring.py)

SIZES = {"vit-b": dict(hidden_size=768, depth=12, heads=12, global_attn_indexes=(2, 5, 8, 11)),
         "vit-l": dict(hidden_size=1024, depth=24, heads=16, global_attn_indexes=(5, 11, 17, 23)),
         "vit-h": dict(hidden_size=1280, depth=32, heads=16, global_attn_indexes=(7, 15, 23, 31))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="vit-b", choices=sorted(SIZES))
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = random_sam(sam_config(**SIZES[args.config]), seed=0)
    pixels = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(0))
    print(f"SAM {args.config} encoder, 1024² input, {args.threads} threads, torch {torch.__version__}")
    reference32 = None
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


if __name__ == "__main__":
    main()
