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

from ...model import RECOMMENDATIONS_FILE, read_checkpoint_json, resolve_checkpoint
from ...settings import EverythingSettings

#: The files a checkpoint folder written here holds (besides ``model.safetensors`` and ``config.json``).
CARD, RECORD = "README.md", "training.json"
#: The base's image-processor settings, as older and newer transformers versions save them.
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")


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


def recommendations(original, everything: EverythingSettings) -> dict:
    """The ``napari_sam.json`` of the new checkpoint: the base's recommendations with ``everything``."""
    rec = original.recommended
    return {"segment_everything": everything.to_dict(), "propagation": rec.propagation.to_dict(),
            "refine": rec.refine.to_dict(), "image": rec.image.to_dict()}


def write_checkpoint(model, original, out: Path, everything: EverythingSettings, result, settings,
                     overwrite: bool) -> None:
    """Write the checkpoint folder ``out`` for ``model`` (trained from ``original``'s, a Predictor) atomically."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        model.save_pretrained(temporary, safe_serialization=True)
        for name in PROCESSOR_FILES:  # a base without them is read with its family's defaults: so is this folder
            processor = read_checkpoint_json(resolve_checkpoint(original.checkpoint), name)
            if processor is not None:
                write_json(temporary / name, processor)
        write_json(temporary / RECOMMENDATIONS_FILE, recommendations(original, everything))
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
                               if key in ("points_per_side", "pred_iou_thresh", "stability_score_thresh")},
        "base_segment_everything": {key: value for key, value in dataclasses.asdict(
            original.recommended.everything).items() if key in ("pred_iou_thresh", "stability_score_thresh")}}


def model_card(record: dict) -> str:
    """The model card (Markdown) of a fine-tuned checkpoint."""
    data, before, after = record["data"], record["validation_before"], record["validation_after"]
    settings = record["settings"]
    what = {"none": "the mask decoder and prompt encoder (image encoder frozen)",
            "lora": f"the mask decoder, prompt encoder and LoRA adapters of rank {settings['lora_rank']} on the image "
                    "encoder's attention (merged into these weights)",
            "full": "the whole model"}[settings["encoder"]]
    split = ("a share of the images held out" if data["split"] == "images" else
             "a share of the objects of the one image held out" if data["split"] == "objects" else
             "validation images given apart")
    rows = [("click (median IoU)", "click_median_iou"), ("box (median IoU)", "box_median_iou"),
            ("segment everything recall", "everything_recall"),
            ("segment everything precision", "everything_precision")]
    table = "\n".join(f"| {label} | {before[key]:.3f} | {after[key]:.3f} |" for label, key in rows)
    thresholds = record["segment_everything"]
    return f"""# Fine-tuned from {record['base']}

A {record['family']} checkpoint fine-tuned with napari-sam (`napari-sam train`) on its user's own annotations.
It loads wherever a checkpoint loads: the Segment Anything docks, `napari_sam.Predictor.from_pretrained`, batch runs
and image series.

## Training
- Base: `{record['base']}` (not modified).
- Trained: {what}, with SAM's interactive recipe (clicks, noisy boxes and correction clicks with the previous mask
  as a prompt; multimask with the best candidate's loss; the IoU head regressed on the true IoU).
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

Segment everything runs here with the thresholds that found the validation objects best
(`napari_sam.json`): predicted IoU {thresholds['pred_iou_thresh']}, stability {thresholds['stability_score_thresh']}.
The base's figures are with its own recommended thresholds.

These figures are on the user's own held-out annotations; on other images the model may do better or worse than
its base.
"""
