"""The folder a fine-tuned model is saved to: a checkpoint that loads wherever a checkpoint loads (the docks, the
API, batch runs, image series).

- ``model.safetensors`` and ``config.json`` (``save_pretrained``; LoRA adapters already merged), and the base's
  ``preprocessor_config.json`` or ``processor_config.json`` where it has them;
- ``napari_sam.json``: the base's recommended settings, with segment everything's thresholds calibrated on the
  validation images;
- ``README.md``, the model card (base, data, settings, seed, time, the validation figures before and after), and
  ``training.json`` with the same in a machine-readable form.

The folder is written beside its final place and renamed into it, so a killed run leaves no half-written
checkpoint; the base's folder is never written to.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import shutil
import tempfile
from pathlib import Path

from ...decoding import HEAD_SECTION, save_head
from ...model import RECOMMENDATIONS_FILE, read_checkpoint_json, resolve_checkpoint
from ...settings import EverythingSettings

#: The files a checkpoint folder written here holds (besides ``model.safetensors`` and ``config.json``).
CARD, RECORD = "README.md", "training.json"
#: The base's image-processor settings, as older and newer transformers versions save them.
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")


#: The segment everything settings a training run calibrates, by method (what the model card reports).
_CALIBRATED = {"grid": ("method", "points_per_side", "pred_iou_thresh", "stability_score_thresh"),
               "instances": ("method", "foreground_thresh", "center_distance_thresh", "boundary_distance_thresh",
                             "min_seed_area", "min_instance_area"),
               "instances+sam": ("method", "foreground_thresh", "center_distance_thresh", "boundary_distance_thresh",
                                 "min_seed_area", "min_instance_area")}
#: What the model card calls the instance head.
INSTANCE_HEAD = "foreground and distance maps, micro-sam's automatic instance segmentation"


def check_out(out: Path, base: str, overwrite: bool) -> None:
    """Refuse an output folder that exists (unless ``overwrite``), that is a file, or that is the base's.

    Raises:
        ValueError: naming the folder and what to do.
    """
    base_folder = Path(resolve_checkpoint(base))
    if base_folder.exists() and out.resolve() == base_folder.resolve():
        raise ValueError(f"The output folder {out} is the base checkpoint's: the base is never modified; choose "
                         "another folder.")
    if out.exists() and not out.is_dir():
        raise ValueError(f"The output {out} is a file, not a folder.")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ValueError(f"The output folder {out} exists: choose another, or replace it (--overwrite).")


def recommendations(original, everything: EverythingSettings, head: dict | None = None) -> dict:
    """The ``napari_sam.json`` of the new checkpoint: the base's recommendations with ``everything``, and the
    ``"instances"`` section of its instance head (``head``; else the base's, when its encoder is kept)."""
    rec = original.recommended
    values = {"segment_everything": everything.to_dict(), "propagation": rec.propagation.to_dict(),
              "refine": rec.refine.to_dict(), "image": rec.image.to_dict()}
    if head is not None:
        values[HEAD_SECTION] = head
    return values


def write_checkpoint(model, original, out: Path, everything: EverythingSettings, result, settings,
                     overwrite: bool, head=None) -> None:
    """Write the checkpoint folder ``out`` for ``model`` (trained from ``original``'s, a Predictor) atomically, with
    an instance ``head`` (an :class:`~napari_sam.core.decoding.InstanceHead`) when given; a decoder-only model keeps
    its base's head (its encoder, hence its embeddings, are the base's)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        model.save_pretrained(temporary, safe_serialization=True)
        for name in PROCESSOR_FILES:  # a base without them is read with its family's defaults: so is this folder
            processor = read_checkpoint_json(resolve_checkpoint(original.checkpoint), name)
            if processor is not None:
                write_json(temporary / name, processor)
        if head is None and original.has_head and settings.encoder == "none":
            head = original.instance_head()  # its encoder, hence its embeddings, are the base's
        section = save_head(head, temporary) if head is not None else None
        write_json(temporary / RECOMMENDATIONS_FILE, recommendations(original, everything, section))
        record = training_record(original, result, settings, everything)
        write_json(temporary / RECORD, record)
        (temporary / CARD).write_text(model_card(record), encoding="utf-8")
        for path in temporary.iterdir():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
        if out.exists():
            old = out.with_name(f".{out.name}.replaced")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
            os.replace(temporary, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(temporary, out)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def write_json(path: Path, values: dict) -> None:
    path.write_text(json.dumps(values, indent=2) + "\n", encoding="utf-8")


def training_record(original, result, settings, everything: EverythingSettings) -> dict:
    """What the model card says, as a dict (``training.json``)."""
    return {
        "base": original.checkpoint, "family": original.family.label,
        "trained": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "device": str(original.device), "data": result.split, "settings": settings.to_dict(), "seed": settings.seed,
        "steps": result.steps, "best_step": result.best_step, "training_seconds": round(result.seconds, 1),
        "stopped": result.stopped, "validation_before": result.before.to_dict(),
        "validation_after": result.after.to_dict(),
        "segment_everything": {key: value for key, value in dataclasses.asdict(everything).items()
                               if key in _CALIBRATED[everything.method]},
        "base_segment_everything": {key: value for key, value in dataclasses.asdict(
            original.recommended.everything).items() if key in _CALIBRATED[original.recommended.everything.method]}}


def model_card(record: dict) -> str:
    """The model card (Markdown) of a fine-tuned checkpoint."""
    data, before, after = record["data"], record["validation_before"], record["validation_after"]
    settings = record["settings"]
    what = {"none": "the mask decoder and prompt encoder (image encoder frozen)",
            "lora": f"the mask decoder, prompt encoder and LoRA adapters of rank {settings['lora_rank']} on the image "
                    "encoder's attention (merged into these weights)",
            "full": "the whole model"}[settings["encoder"]]
    recipe = ("with SAM's interactive recipe (clicks, noisy boxes and correction clicks with the previous mask\n"
              "  as a prompt; multimask with the best candidate's loss; the IoU head regressed on the true IoU)")
    if settings.get("instances"):
        what = (f"an instance head ({INSTANCE_HEAD}) on the frozen encoder's embeddings; the model's own weights are "
                "the base's")
        recipe = ("to predict each pixel's foreground and its distances to its object's centre and boundary\n"
                  "  (cross-entropy and Dice loss, squared error), from which segment everything's 'instances' method "
                  "splits objects by watershed")
    split = ("a share of the images held out" if data["split"] == "images" else
             "a share of the objects of the one image held out" if data["split"] == "objects" else
             "validation images given apart")
    rows = [("click (median IoU)", "click_median_iou"), ("box (median IoU)", "box_median_iou"),
            ("segment everything recall", "everything_recall"),
            ("segment everything precision", "everything_precision")]
    table = "\n".join(f"| {label} | {before[key]:.3f} | {after[key]:.3f} |" for label, key in rows)
    thresholds = record["segment_everything"]
    method = f"method '{thresholds.get('method', 'grid')}'"
    chosen = ", ".join(f"{name} {value}" for name, value in thresholds.items() if name != "method")
    return f"""# Fine-tuned from {record['base']}

A {record['family']} checkpoint fine-tuned with napari-sam (`napari-sam train`) on its user's own annotations.
It loads wherever a checkpoint loads: the Segment Anything docks, `napari_sam.Predictor.from_pretrained`, batch runs
and image series.

## Training
- Base: `{record['base']}` (not modified).
- Trained: {what}, {recipe}.
- Data: {data['training_objects']} objects in {data['training_images']} image(s) or plane(s) to learn from,
  {data['validation_objects']} objects in {data['validation_images']} to validate on ({split}).
- {record['steps']} steps in {record['training_seconds']:.0f} s on {record['device']}; ended by
  {record['stopped']}; the best validation was at step {record['best_step']} (kept).
- Seed {record['seed']}; learning rate {settings['learning_rate']}; {settings['objects_per_step']} objects per step.
- Finished {record['trained']}.

## Validation
On the held-out objects, through napari-sam's API (one click at a random pixel inside each object, its bounding
box, segment everything matched at IoU ≥ 0.5):

| | base | this model |
|---|---|---|
{table}

Segment everything runs here with the {method} and the thresholds that found the validation objects best
(`napari_sam.json`): {chosen}. The base's figures are with its own recommended settings.

These figures are on the user's own held-out annotations; on other images the model may do better or worse than
its base.
"""
