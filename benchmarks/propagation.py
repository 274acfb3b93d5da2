"""Propagation through a z-stack: napari-sam against transformers' own ways, in one process.

The stack is ``synthetic_cells`` (uint16, 3D); the object is the largest cell on the middle slice, clicked at its
centre. Models have seeded random weights (no download), so masks mean nothing and every stopping rule is off to
force propagation through every slice: only speed and memory are compared.

- SAM-1 (ViT-B architecture), time to first mask on a new slice: ours ``Predictor.set_image`` (encoder, cold
  cache) + one ``predict``; reference ``SamProcessor`` (PIL image processor) + ``SamModel`` + ``post_process_masks``
  as in transformers' docs. Time per slice: ours ``propagate`` through the stack from the cell's true mask (no
  prefetching); reference the naive way, that documented call per slice with the previous slice's box and interior
  points, on ``--reference-slices`` slices (both run an encoder per slice).
- SAM2 video (SAM2.1 hiera-tiny architecture; ``--sam2 test``: the tests' tiny config): ours ``propagate_video``
  (frames prepared when the model asks for them); reference transformers' ``Sam2VideoInferenceSession`` holding
  all frames, prepared up front on the device as ``init_video_session`` does (by our ``slice_input``: the video
  processor needs torchvision), then ``propagate_in_video_iterator`` forward and in reverse. Time to the first mask,
  time per further slice.

- Many objects (``--objects``): every object of a plane carried at once (``propagate_objects``) against one by one
  (``propagate`` per object), with the bundled tiny-cells on a densely packed 256² stack: objects per second.

Peak memory: resident memory above the start, sampled every 5 ms (and on CUDA the peak allocated GPU memory).

Writes benchmarks/results/propagation.json (``--results``): a table for SAM-1, one for the SAM2 video model and one
for many objects.

    python benchmarks/propagation.py [--slices 64] [--size 512] [--device cpu] [--dtype float32] [--sam2 test]
        [--results PATH]

A small run checks the script: ``--slices 4 --size 128 --image-size 256 --reference-slices 1 --sam2 test``.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from transformers import Sam2VideoConfig, Sam2VideoModel, SamProcessor  # noqa: E402
from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil  # noqa: E402
from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceSession  # noqa: E402

from napari_sam import Predictor  # noqa: E402
from napari_sam.core.image import default_contrast_limits, display_rgb  # noqa: E402
from napari_sam.core.model import PRECISIONS, model_geometry, resolve_dtype, video_geometry  # noqa: E402
from napari_sam.core.objects import mask_box  # noqa: E402
from napari_sam.core.workflows import interior_points, propagate, propagate_objects  # noqa: E402
from napari_sam.core.workflows.propagation.video import propagate_video, slice_input
from napari_sam.demo import synthetic_cells  # noqa: E402
from napari_sam.testing.random_weights import random_sam, random_video_model, randomize_weights, sam_config  # noqa: E402

import results  # noqa: E402  (benchmarks/results.py)
from measuring import measured  # noqa: E402  (benchmarks/measuring.py)


def hiera_tiny_model(seed: int = 1) -> Sam2VideoModel:
    """SAM2.1 hiera-tiny's architecture (as transformers' conversion script builds it) with random weights.

    The tiny Hiera is transformers' default backbone: embed dim 96, blocks per stage [1, 2, 7, 2], heads
    [1, 2, 4, 8], windows [8, 4, 14, 7], global attention in blocks [5, 7, 9], window background 7 x 7; 1024 input.
    The object-score head gets a +2 bias so that the object stays present (see ``random_video_model``).
    """
    backbone = dict(model_type="sam2_hiera_det_model", hidden_size=96, num_attention_heads=1,
                    blocks_per_stage=[1, 2, 7, 2], embed_dim_per_stage=[96, 192, 384, 768],
                    num_attention_heads_per_stage=[1, 2, 4, 8], window_size_per_stage=[8, 4, 14, 7],
                    global_attention_blocks=[5, 7, 9], window_positional_embedding_background_size=[7, 7])
    vision = dict(model_type="sam2_vision_model", backbone_config=backbone, backbone_channel_list=[768, 384, 192, 96])
    config = Sam2VideoConfig(vision_config=vision, enable_temporal_pos_encoding_for_object_pointers=True,
                             enable_occlusion_spatial_embedding=True)
    model = randomize_weights(Sam2VideoModel(config), seed).eval()
    with torch.no_grad():
        model.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(2.0)
    return model


def peak(rss: int, gpu: int | None) -> str:
    """Peak memory for the results tables: ``"peak +1.62 GiB"``, with the GPU's where there is one."""
    return f"peak {results.size(rss)}" + ("" if gpu is None else f" RSS, {results.size(gpu, '')} GPU")


def sam1(args, volume, start, click, cell, device) -> dict:
    config = sam_config(image_size=args.image_size)
    geometry = model_geometry(config)
    model = random_sam(config, seed=0).to(device=device, dtype=resolve_dtype(args.dtype))
    reference_model = random_sam(config, seed=0).to(device)
    processor = SamProcessor(image_processor=SamImageProcessorPil(
        size={"longest_edge": args.image_size}, pad_size={"height": args.image_size, "width": args.image_size}))
    limits = default_contrast_limits(volume[start], False)  # what propagate uses

    def rgb8(image):  # the slice as napari shows it, which is what a user would hand the processor
        return (display_rgb(image, limits, False) * 255 + 0.5).floor().byte().permute(1, 2, 0).numpy()

    def reference_call(image, points_xy, box_xy=None):
        inputs = processor(images=rgb8(image), input_points=[[points_xy]],
                           input_boxes=None if box_xy is None else [[box_xy]], return_tensors="pt")
        model_inputs = {key: inputs[key].to(device=device, dtype=torch.float32)
                        for key in ("pixel_values", "input_points", "input_boxes") if key in inputs}
        with torch.no_grad():
            out = reference_model(**model_inputs, multimask_output=box_xy is None)
        masks = processor.post_process_masks(out.pred_masks.cpu(), inputs["original_sizes"],
                                             inputs["reshaped_input_sizes"])
        return masks[0][0, int(out.iou_scores[0, 0].argmax())].cpu().numpy()

    def first_mask(predictor, image):
        predictor.set_image(image, contrast_limits=limits)
        return predictor.predict(points=[click]).best_masks()[0]

    def reference_propagation(first, count):  # forward from the start slice, then backward, as ours
        done, previous = 0, first
        for index in [*range(start + 1, len(volume)), *range(start - 1, -1, -1)][:count]:
            previous = first if index == start - 1 else previous
            row0, col0, row1, col1 = mask_box(previous)
            previous = reference_call(volume[index], interior_points(previous)[:, ::-1].tolist(),
                                      [col0, row0, col1, row1])
            done += 1
            if not previous.any():
                break
        return done

    predictor = Predictor(model, geometry, device, checkpoint="benchmark")
    first_mask(predictor, volume[0])  # warm-up: first runs pay for allocations and kernel selection
    reference_call(volume[0], [list(click[::-1])])
    ours_first = measured(device, first_mask, predictor, volume[start])[0]
    reference_first = measured(device, reference_call, volume[start], [list(click[::-1])])[0]
    print(f"SAM-1 time to first mask on a new slice: ours ({args.dtype}) {results.seconds(ours_first)}, "
          f"transformers (fp32) {results.seconds(reference_first)}, ratio {reference_first / ours_first:5.2f} x")

    calls = []
    fresh = Predictor(model, geometry, device, checkpoint="benchmark-propagation")  # empty embedding cache
    seconds, rss, gpu, result = measured(
        device, propagate, fresh, volume, start, 0, cell, contrast_limits=limits, score_threshold=0.0,
        iou_threshold=0.0, min_area=0, max_regrowth=0.0, max_shift=0.0, use_mask_input=args.mask_input,
        progress=lambda done, total: calls.append(done))
    # one call per slice segmented, the start one included, and a last one; the start slice is encoded only to
    # turn the start mask into mask_input logits
    slices = len(calls) - 1 - (0 if args.mask_input else 1)
    reached = result.stop - result.start + 1
    ours = seconds / slices
    print(f"SAM-1 propagation per slice: ours {results.seconds(ours)} ({slices} slices, {reached} kept, "
          f"mask input {'on' if args.mask_input else 'off'}, {peak(rss, gpu)})")
    ref_seconds, ref_rss, ref_gpu, done = measured(device, reference_propagation, cell,
                                                   min(args.reference_slices, len(volume) - 1))
    reference = ref_seconds / max(done, 1)
    print(f"SAM-1 propagation per slice: transformers, one documented call per slice {results.seconds(reference)} "
          f"({done} slices, {peak(ref_rss, ref_gpu)})")
    print(f"SAM-1 propagation ratio per slice (transformers / ours): {reference / ours:5.2f} x")
    return {"first": {"napari-sam": ours_first, "transformers": reference_first},
            "per_slice": {"napari-sam": ours, "transformers": reference},
            "slices": {"napari-sam": slices, "transformers": done}, "kept": reached,
            "peak_bytes": {"napari-sam": rss, "transformers": ref_rss},
            "gpu_peak_bytes": {"napari-sam": gpu, "transformers": ref_gpu}}


def sam2(args, volume, start, click, device) -> dict:
    model = (hiera_tiny_model() if args.sam2 == "hiera-tiny" else random_video_model())
    model = model.to(device=device, dtype=resolve_dtype(args.dtype))
    geometry, shape = video_geometry(model.config), volume.shape[1:]
    limits = default_contrast_limits(volume[start], False)  # what propagate_video uses; given to both sides
    size = geometry.image_size

    def ours():
        stamps = [time.perf_counter()]
        result = propagate_video(model, volume, start, 0, points=[click], contrast_limits=limits, score_threshold=0.0,
                                 iou_threshold=0.0, min_area=0, max_regrowth=0.0, max_shift=0.0,
                                 on_slice=lambda index, mask, score: stamps.append(time.perf_counter()))
        return stamps, result

    def reference():
        stamps, masks = [time.perf_counter()], {}
        session = Sam2VideoInferenceSession(
            video=torch.stack([slice_input(image, geometry, limits, False, device) for image in volume]),
            video_height=shape[0], video_width=shape[1], inference_device=device, inference_state_device=device,
            video_storage_device=device, dtype=model.dtype)
        session.add_point_inputs(session.obj_id_to_idx(1), start, {
            "point_coords": torch.tensor([[[[click[1] * size[1] / shape[1], click[0] * size[0] / shape[0]]]]]),
            "point_labels": torch.ones((1, 1, 1), dtype=torch.int32)})
        session.obj_with_new_inputs = [1]
        for reverse in (False, True):  # each pass yields the start frame (the reverse one from the cache)
            for output in model.propagate_in_video_iterator(session, start_frame_idx=start, reverse=reverse):
                if output.frame_idx not in masks:
                    logits = F.interpolate(output.pred_masks[:1, :1].float(), size=shape, mode="bilinear",
                                           align_corners=False)
                    masks[output.frame_idx] = (logits[0, 0] > 0).cpu().numpy()
                    stamps.append(time.perf_counter())
        return stamps, masks

    name = "SAM2.1 hiera-tiny" if args.sam2 == "hiera-tiny" else "SAM2 test-size"
    propagate_video(model, volume[start:start + 1], 0, 0, points=[click])  # warm-up, one frame
    per_slice, found = {}, {"model": name}
    for label, function in (("ours", ours), ("transformers", reference)):
        seconds, rss, gpu, (stamps, _) = measured(device, function)
        first, rest = stamps[1] - stamps[0], (stamps[-1] - stamps[1]) / max(len(stamps) - 2, 1)
        per_slice[label] = rest
        found["napari-sam" if label == "ours" else label] = {
            "first": first, "per_slice": rest, "slices": len(stamps) - 1, "seconds": seconds, "peak_bytes": rss,
            "gpu_peak_bytes": gpu}
        print(f"{name} video, {label:12s}: first mask {results.seconds(first)}, then {results.seconds(rest)} per slice "
              f"({len(stamps) - 1} slices, {results.seconds(seconds)} in all, {peak(rss, gpu)})")
    ratio = per_slice["transformers"] / per_slice["ours"]
    print(f"{name} video ratio per slice (transformers / ours): {ratio:5.2f} x")
    return found


def many_objects(args, device) -> dict:
    """Every object of a plane at once (``propagate_objects``) against one object at a time (``propagate`` per
    object, as pressing P on each does), with the bundled tiny-cells on a densely packed stack: objects per second,
    and the encoder runs each way (fresh embedding caches)."""
    volume, labels = synthetic_cells((args.slices, 256, 256), 70, seed=2, ndim=3, radius_range=(6.0, 10.0),
                                     layers=2)
    start = args.slices // 2
    ids, areas = np.unique(labels[start][labels[start] > 0], return_counts=True)
    chosen = ids[np.argsort(-areas)[: args.objects]]
    plane = np.where(np.isin(labels[start], chosen), labels[start], 0)

    def encoder_runs(predictor) -> list:
        calls: list = []
        predictor.model.vision_encoder.register_forward_hook(lambda *_: calls.append(1))
        return calls

    def together():
        predictor = Predictor.from_pretrained("tiny-cells", device=device)
        runs = encoder_runs(predictor)
        propagate_objects(predictor, volume, start, 0, plane)
        return len(runs)

    def one_by_one():
        predictor = Predictor.from_pretrained("tiny-cells", device=device)
        runs = encoder_runs(predictor)
        for object_id in chosen:
            propagate(predictor, volume, start, 0, plane == object_id)
        return len(runs)

    together(), one_by_one()  # warm-up
    found = {"objects": len(chosen)}
    for label, function in (("napari-sam", together), ("one by one", one_by_one)):
        seconds, rss, gpu, runs = measured(device, function)
        found[label] = {"seconds": seconds, "encoder_runs": runs, "peak_bytes": rss, "gpu_peak_bytes": gpu}
        print(f"{len(chosen)} objects through {args.slices} slices, {label:10s}: {results.seconds(seconds)} "
              f"({len(chosen) / seconds:.2f} objects/s), {runs} encoder runs, {peak(rss, gpu)}")
    ratio = found["one by one"]["seconds"] / found["napari-sam"]["seconds"]
    print(f"many objects ratio (one by one / together): {ratio:5.2f} x")
    return found


def tables(args, found: dict) -> list[dict]:
    """The results tables: SAM-1 and the SAM2 video model, each napari-sam against transformers."""
    weights = "float32" if args.dtype == "float32" else f"{args.dtype} weights"
    stack = f"{args.slices}-slice {args.size}² uint16 stack"
    columns = ["", "napari-sam", "transformers", "transformers / napari-sam"]
    made = []
    if "sam1" in found:
        f = found["sam1"]
        model = "SAM-1 ViT-B architecture" + ("" if args.image_size == 1024 else f", {args.image_size}-pixel input")
        made.append(results.table(f"{model}, napari-sam in {weights}: {stack}", columns, [
            ["first mask on a new slice", results.seconds(f["first"]["napari-sam"]),
             f"{results.seconds(f['first']['transformers'])} (processor + model + post-processing, float32)",
             results.ratio(f["first"]["transformers"] / f["first"]["napari-sam"])],
            ["propagation per slice",
             f"{results.seconds(f['per_slice']['napari-sam'])} ({f['slices']['napari-sam']} slices), "
             f"{peak(f['peak_bytes']['napari-sam'], f['gpu_peak_bytes']['napari-sam'])}",
             f"{results.seconds(f['per_slice']['transformers'])} per documented call "
             f"({f['slices']['transformers']} slices, float32), "
             f"{peak(f['peak_bytes']['transformers'], f['gpu_peak_bytes']['transformers'])}",
             results.ratio(f["per_slice"]["transformers"] / f["per_slice"]["napari-sam"])]],
            notes="Both sides run one encoder per slice. Peak memory: resident memory above the start."))
    if "sam2" in found:
        f = found["sam2"]
        ours, theirs = f["napari-sam"], f["transformers"]
        made.append(results.table(f"{f['model']} video model in {weights}: {stack}", columns, [
            ["first mask", results.seconds(ours["first"]), results.seconds(theirs["first"]),
             results.ratio(theirs["first"] / ours["first"])],
            ["per further slice",
             f"{results.seconds(ours['per_slice'])}, {peak(ours['peak_bytes'], ours['gpu_peak_bytes'])}",
             f"{results.seconds(theirs['per_slice'])}, {peak(theirs['peak_bytes'], theirs['gpu_peak_bytes'])}",
             results.ratio(theirs["per_slice"] / ours["per_slice"])]],
            notes="napari-sam prepares each frame when the model asks for it; transformers' inference session holds "
                  "every frame, prepared up front. Peak memory: resident memory above the start."))
    if "objects" in found:
        f = found["objects"]
        together, alone = f["napari-sam"], f["one by one"]
        made.append(results.table(
            f"{f['objects']} objects of a plane through a {args.slices}-slice 256² stack (tiny-cells)",
            ["", "all at once (propagate_objects)", "one by one (propagate per object)", "one by one / all at once"],
            [["objects per second", f"{f['objects'] / together['seconds']:.2f}",
              f"{f['objects'] / alone['seconds']:.2f}", results.ratio(alone["seconds"] / together["seconds"])],
             ["encoder runs", str(together["encoder_runs"]), str(alone["encoder_runs"]), ""]],
            notes="Densely packed synthetic cells, the bundled tiny-cells model with its recommended settings (stop "
                  "rules on). One object at a time, small objects are decoded in a window magnified around them "
                  "(an encoder run per object and slice); all at once, each slice is encoded once for every object "
                  "and the objects are decoded together."))
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=64, help="slices in the z-stack")
    parser.add_argument("--size", type=int, default=512, help="slice side in pixels")
    parser.add_argument("--image-size", type=int, default=1024, help="SAM-1 model input size (ViT-B: 1024)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--dtype", default="float32", choices=[p for p in PRECISIONS if p != "auto"],
                        help="our SAM-1 weights' dtype, and the video model's (both sides)")
    parser.add_argument("--sam1", default="vit-b", choices=["vit-b", "none"])
    parser.add_argument("--sam2", default="hiera-tiny", choices=["hiera-tiny", "test", "none"],
                        help="test: the tests' ~1 M-parameter video config with a 64-pixel input, for quick runs")
    parser.add_argument("--reference-slices", type=int, default=3, help="slices the naive SAM-1 reference runs")
    parser.add_argument("--mask-input", action=argparse.BooleanOptionalAction, default=True,
                        help="ours: pass the previous slice's logits as mask_input")
    parser.add_argument("--objects", type=int, default=20, help="objects carried at once (0: skip that case)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    results.add_option(parser, "propagation")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    volume, labels = synthetic_cells((args.slices, args.size, args.size), seed=1, ndim=3,
                                     radius_range=(args.size / 40, args.size / 12))
    start = args.slices // 2
    cell = np.bincount(labels[start].ravel())[1:].argmax() + 1
    rows, cols = np.nonzero(labels[start] == cell)
    click = (float(rows.mean()), float(cols.mean()))
    print(f"stack {args.slices} x {args.size} x {args.size} uint16, start slice {start}, click "
          f"({click[0]:.0f}, {click[1]:.0f}); SAM-1 {args.sam1} input {args.image_size}, SAM2 {args.sam2}; "
          f"random weights; {args.dtype}; device {device}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}")
    print("random weights: the masks mean nothing, so every stopping rule is off and all slices are propagated")
    found = {}
    if args.sam1 != "none":
        found["sam1"] = sam1(args, volume, start, click, labels[start] == cell, device)
    if args.sam2 != "none":
        found["sam2"] = sam2(args, volume, start, click, device)
    if args.objects:
        found["objects"] = many_objects(args, device)
    results.write(args.results, "propagation", "Propagation through a z-stack: napari-sam against transformers",
                  tables(args, found), figures={"slices": args.slices, "size": args.size, "dtype": args.dtype,
                                                "device": str(device), "image_size": args.image_size, **found})


if __name__ == "__main__":
    main()
