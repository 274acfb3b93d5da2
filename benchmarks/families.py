"""The SAM families on this machine: encoder time and prompt latency of our Predictor against transformers' own
model call, per family, at the real architectures' sizes with random weights (no download), in one process.

- ours: ``set_image`` + the first prompt (the encoder runs once), then one point prompt on the cached embedding;
- transformers: the model's forward on pixel values and the same point (SAM and SAM-HQ through ``SamProcessor``'s
  PIL backend; the SAM2 family's processors need torchvision, so their pixel values are built as documented: the
  image stretched to the square input, normalised), which runs the encoder on every call.

Writes benchmarks/results/families.json (``--results``). One family with one round checks the script quickly:
``--families sam2 --rounds 1``.

    python benchmarks/families.py [--families sam sam_hq sam2 sam2_base_plus sam3_tracker] [--rounds 3]
        [--results PATH]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from napari_sam import Predictor  # noqa: E402
from napari_sam.core.model import FAMILIES  # noqa: E402
from napari_sam.core.settings import TilingSettings  # noqa: E402
from napari_sam.demo import synthetic_cells  # noqa: E402
from napari_sam.testing.random_weights import randomize_weights, sam_config  # noqa: E402

import results  # noqa: E402  (benchmarks/results.py)

#: The families' names in the results table.
LABELS = {"sam": "SAM ViT-B", "sam_hq": "SAM-HQ ViT-B", "sam2": "SAM2.1 Hiera-T (image model)",
          "sam2_base_plus": "SAM2.1 Hiera-B+ (image model)", "sam3_tracker": "SAM3 tracker (image model)"}


def config_of(name: str):
    """(family, config) of the real architectures, by benchmark name."""
    import transformers

    if name == "sam":
        return "sam", sam_config()  # ViT-B
    if name == "sam_hq":
        return "sam_hq", transformers.SamHQConfig()  # ViT-B
    if name == "sam2":
        return "sam2", transformers.Sam2Config()  # Hiera-T (SAM2.1 tiny's image model)
    if name == "sam2_base_plus":
        backbone = dict(model_type="sam2_hiera_det_model", hidden_size=112, num_attention_heads=2,
                        embed_dim_per_stage=[112, 224, 448, 896], num_attention_heads_per_stage=[2, 4, 8, 16],
                        blocks_per_stage=[2, 3, 16, 3], global_attention_blocks=[12, 16, 20],
                        window_positional_embedding_background_size=[14, 14])
        return "sam2", transformers.Sam2Config(vision_config=dict(backbone_config=backbone,
                                                                  backbone_channel_list=[896, 448, 224, 112]))
    if name == "sam3_tracker":
        return "sam3_tracker", transformers.Sam3TrackerConfig()  # SAM3's image encoder, 1008 input
    raise ValueError(name)


def reference_call(model, family: str, image: np.ndarray, point_rc, side: int):
    """transformers' own call: pixel values from the image, the model's forward with one point."""
    height, width = image.shape[:2]
    rgb = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]
    if FAMILIES[family].square:
        mean = torch.tensor((0.5,) * 3 if family == "sam3_tracker" else (0.485, 0.456, 0.406)).view(1, 3, 1, 1)
        std = torch.tensor((0.5,) * 3 if family == "sam3_tracker" else (0.229, 0.224, 0.225)).view(1, 3, 1, 1)
        pixels = F.interpolate(rgb, size=(side, side), mode="bilinear", antialias=True)
        pixels = (pixels.float() - 255 * mean) / (255 * std)
        scale = (side / width, side / height)
    else:
        from transformers import SamProcessor
        from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil

        processor = SamProcessor(image_processor=SamImageProcessorPil())
        pixels = processor(images=image, return_tensors="pt")["pixel_values"].float()
        ratio = side / max(height, width)
        scale = (ratio, ratio)
    point = torch.tensor([[[[point_rc[1] * scale[0], point_rc[0] * scale[1]]]]])
    with torch.inference_mode():
        return model(pixel_values=pixels, input_points=point, input_labels=torch.ones(1, 1, 1, dtype=torch.long))


def run(name: str, rounds: int, image: np.ndarray, root: Path) -> dict:
    family, config = config_of(name)
    _, model_class = FAMILIES[family].classes()
    model = randomize_weights(model_class(config), seed=0).eval()
    folder = root / name
    model.save_pretrained(folder)
    parameters = sum(p.numel() for p in model.parameters()) / 1e6
    side = config.prompt_encoder_config.image_size
    predictor = Predictor.from_pretrained(folder, device="cpu", tiling=TilingSettings(mode="whole"))
    point = (image.shape[0] * 0.45, image.shape[1] * 0.55)
    first = []
    for seed in range(rounds):
        other = np.roll(image, seed * 7, axis=1)  # a new image each round: the encoder runs
        start = time.perf_counter()
        predictor.set_image(other)
        predictor.predict(points=[point], point_labels=[1])
        first.append(time.perf_counter() - start)
    prompts = []
    for _ in range(max(5, rounds)):
        start = time.perf_counter()
        predictor.predict(points=[point], point_labels=[1])
        prompts.append(time.perf_counter() - start)
    theirs, reference = [], model_class.from_pretrained(folder).eval()  # transformers' own modules, unpatched
    for _ in range(rounds):
        start = time.perf_counter()
        reference_call(reference, family, image, point, side)
        theirs.append(time.perf_counter() - start)
    return {"name": name, "family": family, "parameters": parameters, "side": side,
            "first": statistics.median(first), "prompt": statistics.median(prompts),
            "theirs": statistics.median(theirs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", nargs="+", default=["sam", "sam_hq", "sam2", "sam2_base_plus", "sam3_tracker"])
    parser.add_argument("--rounds", type=int, default=2)
    results.add_option(parser, "families")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    torch.set_num_threads(cores)
    image = synthetic_cells((520, 704), seed=7, dtype=np.uint8)[0]
    image = np.stack([image] * 3, axis=-1)
    print(f"520x704 RGB image, float32, {cores} threads, torch {torch.__version__}")
    print(f"{'model':16s} {'params':>8s} {'input':>6s} {'encoder+1st prompt':>19s} {'prompt':>9s} "
          f"{'transformers call':>18s} {'per prompt':>10s}")
    rows, failed, figures = [], [], {}
    with tempfile.TemporaryDirectory() as root:
        for name in args.families:
            try:
                r = run(name, args.rounds, image, Path(root))
            except Exception as error:  # noqa: BLE001 - report and go on with the next family
                print(f"{name:16s} failed: {type(error).__name__}: {error}")
                failed.append(f"{LABELS.get(name, name)} failed ({type(error).__name__}: {error}).")
                continue
            print(f"{r['name']:16s} {r['parameters']:7.1f}M {r['side']:6d} {r['first']:18.2f}s "
                  f"{1000 * r['prompt']:7.1f}ms {r['theirs']:17.2f}s {r['theirs'] / r['prompt']:9.0f}x")
            figures[name] = r
            rows.append([LABELS.get(name, name), f"{r['parameters']:.0f} M",
                         f"{r['side']}²" if FAMILIES[r["family"]].square else str(r["side"]),
                         results.seconds(r["first"]), results.seconds(r["prompt"]), results.seconds(r["theirs"]),
                         results.ratio(r["theirs"] / r["prompt"])])
    notes = (f"float32, medians of {args.rounds} new images (prompts on the cached embedding: of "
             f"{max(5, args.rounds)}); input: the longest side (SAM, SAM-HQ) or the square the image is stretched to. "
             "Per prompt: transformers' call over napari-sam's prompt on the cached embedding.")
    results.write(args.results, "families", "The SAM families: napari-sam's Predictor against transformers' model call",
                  [results.table("SAM families, random weights at the real architectures' sizes, 520×704 RGB image", [
                      "model", "parameters", "input", "new image: encoder + first prompt",
                      "prompt on the cached embedding", "transformers' call (encoder every time)", "per prompt"],
                      rows, notes=" ".join([notes, *failed]))],
                  figures={"rounds": args.rounds, "threads": cores, **figures})


if __name__ == "__main__":
    main()
