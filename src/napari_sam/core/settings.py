"""Settings of segment everything, propagation and refinement: frozen dataclasses holding each field's default,
limits and help, in one place.

The widgets' controls (and the command line) are generated from these classes; the core functions take them.
Each class checks its values when it is made, so a bad value raises a ``ValueError`` that names the field::

    settings = EverythingSettings(points_per_side=16)
    settings.replace(pred_iou_thresh=0.7)          # a new, checked object
    EverythingSettings.from_dict({"points_per_side": 0})   # ValueError: points_per_side must be ...

A checkpoint may recommend its own settings (:class:`~napari_sam.core.model.recommendations.Recommendations`,
read from ``napari_sam.json`` in its folder); they replace the defaults where that checkpoint is loaded.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np


def setting(default, low=None, high=None, help: str = "", *, advanced: bool = False, label: str | None = None,
            step=None, choices: tuple[str, ...] | None = None, flag: str | None = None):
    """A dataclass field with its limits (inclusive; for text settings, its ``choices``), help text, whether it is
    an advanced setting, its short label in a widget, the step of a spin box, and its command-line option (default:
    ``--`` and its name with dashes)."""
    return field(default=default, metadata={"low": low, "high": high, "help": help, "advanced": advanced,
                                            "label": label, "step": step, "choices": choices, "flag": flag})


@dataclass(frozen=True)
class SettingInfo:
    """What a widget or a command line needs to know about one setting."""

    name: str
    kind: type
    default: Any
    low: Any
    high: Any
    help: str
    advanced: bool
    label: str
    step: Any
    choices: tuple[str, ...] | None = None
    flag: str = ""


def _coerce(name: str, kind: type, value, low, high, choices=None):
    """``value`` as ``kind`` within [low, high] (or one of ``choices``), or a ValueError naming ``name``."""
    limits = f" from {low} to {high}" if low is not None and high is not None else ""
    if kind is str:
        if choices is None:  # free text (a name or a path), checked by its class
            if not isinstance(value, str):
                raise ValueError(f"{name} must be text, got {value!r}.")
            return value
        if value not in choices:
            raise ValueError(f"{name} must be one of {list(choices or ())}, got {value!r}.")
        return str(value)
    if kind is bool:
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        raise ValueError(f"{name} must be True or False, got {value!r}.")
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number{limits}, got {value!r}.")
    if kind is int:
        if not float(value).is_integer():
            raise ValueError(f"{name} must be a whole number{limits}, got {value!r}.")
        value = int(value)
    else:
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number{limits}, got {value!r}.")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name} must be{limits or ' within its limits'}, got {value!r}.")
    return value


class Settings:
    """Checking, listing and copying for the settings dataclasses below."""

    __dataclass_fields__: ClassVar[dict[str, Any]]  # every settings class is a dataclass

    def __post_init__(self):
        for info in self.fields():
            value = _coerce(info.name, info.kind, getattr(self, info.name), info.low, info.high, info.choices)
            object.__setattr__(self, info.name, value)
        self._check()

    def _check(self) -> None:
        """Checks that involve several fields (override)."""

    @classmethod
    def fields(cls) -> list[SettingInfo]:
        """Every setting, in declaration order."""
        hints = typing.get_type_hints(cls)
        return [SettingInfo(name=f.name, kind=hints[f.name], default=f.default, low=f.metadata["low"],
                            high=f.metadata["high"], help=f.metadata["help"], advanced=f.metadata["advanced"],
                            label=f.metadata["label"] or f.name.replace("_", " "), step=f.metadata["step"],
                            choices=f.metadata["choices"],
                            flag=f.metadata["flag"] or "--" + f.name.replace("_", "-"))
                for f in dataclasses.fields(cls)]

    def replace(self, **changes):
        """A checked copy with ``changes``; unknown names raise ValueError listing the known ones."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"Unknown {type(self).__name__} setting(s) {sorted(unknown)}; the settings are "
                             f"{[f.name for f in dataclasses.fields(self)]}.")
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, values: dict):
        """Defaults replaced by ``values`` (checked)."""
        return cls().replace(**dict(values))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


#: How segment everything finds objects: SAM's point grid, a trained instance head alone, or the head's objects as
#: prompts to SAM's decoder.
EVERYTHING_METHODS = ("grid", "instances", "instances+sam")


#: The settings only SAM's grid reads, and those only the instance methods read.
_GRID_ONLY = frozenset({"points_per_side", "pred_iou_thresh", "stability_score_thresh", "points_per_batch",
                        "stability_score_offset", "box_nms_thresh", "crop_n_points_downscale_factor"})
_INSTANCES_ONLY = frozenset({"foreground_thresh", "center_distance_thresh", "boundary_distance_thresh",
                             "min_seed_area", "min_instance_area"})


@dataclass(frozen=True)
class EverythingSettings(Settings):
    """Segment everything: SAM's automatic mask generator (the ``grid`` method; defaults are Meta's), or a trained
    instance head (``instances``; alone, or its objects refined by SAM's decoder: ``instances+sam``)."""

    method: str = setting(
        "grid", help="grid: SAM's generator (a grid of point prompts, every one decoded, then filtered); instances: "
        "the checkpoint's instance head (foreground and distance maps split by watershed: much faster; the "
        "checkpoint needs a head, see napari-sam train --instances); instances+sam: the head's objects as box and "
        "point prompts to SAM, which redraws and scores them.", choices=EVERYTHING_METHODS, label="method")
    points_per_side: int = setting(
        32, 1, 256, "Grid of one-point prompts: points per side² per image (and per crop). More finds smaller "
        "objects, and takes longer.", label="points per side")
    pred_iou_thresh: float = setting(
        0.88, 0.0, 1.0, "Keep masks whose predicted IoU (the model's estimate of its own quality) is above this. "
        "0 turns this filter off.", label="min predicted IoU", step=0.01)
    stability_score_thresh: float = setting(
        0.95, 0.0, 1.0, "Keep masks that barely change when the logit threshold moves by the stability offset. "
        "0 turns this filter off.", label="min stability", step=0.01)
    min_mask_region_area: int = setting(
        0, 0, 1 << 30, "Remove islands and fill holes smaller than this many pixels (0: off).",
        label="min region (px)", step=10)
    points_per_batch: int = setting(
        64, 1, 4096, "Prompts decoded at once. Lower it to save memory; the result does not change.",
        advanced=True, label="points per batch", step=8)
    stability_score_offset: float = setting(
        1.0, 0.0, 100.0, "How far the logit threshold moves to measure a mask's stability.", advanced=True,
        label="stability offset", step=0.1)
    box_nms_thresh: float = setting(
        0.7, 0.0, 1.0, "Of two masks whose boxes overlap more than this (IoU), keep the better one.",
        advanced=True, label="box overlap (NMS)", step=0.05)
    crop_n_layers: int = setting(
        0, 0, 4, "Extra layers of overlapping crops, each embedded again: finds small objects in large images, "
        "slower.", advanced=True, label="crop layers")
    crop_nms_thresh: float = setting(
        0.7, 0.0, 1.0, "Box overlap (IoU) above which masks from different crops are duplicates.", advanced=True,
        label="crop overlap (NMS)", step=0.05)
    crop_overlap_ratio: float = setting(
        512 / 1500, 0.0, 0.99, "How much neighbouring crops overlap, as a fraction of the image's short side.",
        advanced=True, label="crop overlap ratio", step=0.05)
    crop_n_points_downscale_factor: int = setting(
        1, 1, 64, "Each crop layer's grid has this many times fewer points per side than the layer above.",
        advanced=True, label="crop points divisor")
    prefer_smaller_crops: bool = setting(
        True, help="Of duplicates across crops keep the one from the smaller crop, as Meta's generator does; "
        "unticked, keep the higher predicted IoU, as transformers' pipeline does.", advanced=True,
        label="prefer smaller crops")

    foreground_thresh: float = setting(
        0.5, 0.0, 1.0, "instances: pixels whose foreground probability is above this belong to objects.",
        advanced=True, label="foreground", step=0.05)
    center_distance_thresh: float = setting(
        0.5, 0.0, 1.0, "instances: objects grow from seeds, pixels whose predicted distance to their object's centre "
        "(0 at the centre, 1 at its farthest pixel) is below this.", advanced=True,
        label="centre distance", step=0.05)
    boundary_distance_thresh: float = setting(
        0.5, 0.0, 1.0, "instances: seeds also need a predicted distance to the boundary (1 deepest inside, 0 at the "
        "edge) above this; higher values split touching objects more.", advanced=True,
        label="boundary dist.", step=0.05)
    min_seed_area: int = setting(
        4, 0, 1 << 20, "instances: seeds smaller than this many pixels are dropped (their pixels go to the "
        "neighbouring objects): fewer objects split in two.", advanced=True, label="min seed (px)", step=1)
    min_instance_area: int = setting(
        8, 0, 1 << 30, "instances: objects smaller than this many pixels are dropped.", advanced=True,
        label="min object (px)", step=2)

    def _check(self) -> None:
        for layer in range(self.crop_n_layers + 1):
            if self.points_per_side // self.crop_n_points_downscale_factor**layer < 1:
                raise ValueError(
                    f"crop layer {layer} would have no points: points_per_side ({self.points_per_side}) divided "
                    f"by crop_n_points_downscale_factor^{layer} ({self.crop_n_points_downscale_factor**layer}) "
                    "is below 1. Lower the factor or the crop layers, or raise points_per_side.")

    def applies(self, name: str, method: str | None = None) -> bool:
        """Whether the setting ``name`` matters with ``method`` (default: this one's): the grid's settings do not
        for the instance methods, nor the instance thresholds for the grid; the others (the merge across tiles and
        crops, the small-region clean-up) matter for all."""
        method = method or self.method
        if name in _GRID_ONLY:
            return method == "grid"
        if name in _INSTANCES_ONLY:
            return method != "grid"
        return True

    def grid_sides(self) -> list[int]:
        """Points per side of each crop layer's grid."""
        return [self.points_per_side // self.crop_n_points_downscale_factor**layer
                for layer in range(self.crop_n_layers + 1)]


@dataclass(frozen=True)
class PropagationSettings(Settings):
    """Propagating objects through a stack, with a SAM checkpoint or a SAM2-family video checkpoint.

    A direction stops at the first slice where a stop rule fires: the score, the overlap with the previous slice or
    the area falls below these, the area grows again after the object had been shrinking (a neighbour that starts
    where the object ends took over), or the mask's centre jumps; the start slice's mask is kept whatever its size.
    A value of 0 turns a rule off.
    """

    score_threshold: float = setting(
        0.6, 0.0, 1.0, "Stop at the first slice whose score is below this: the predicted IoU (SAM) or the object "
        "score (SAM2-family video checkpoints).", label="min score", step=0.05)
    iou_threshold: float = setting(
        0.3, 0.0, 1.0, "Stop at the first slice whose mask overlaps the previous slice's less than this (IoU): the "
        "object changed too much, or the prompt jumped to a neighbour.", label="min overlap", step=0.05)
    min_area: int = setting(
        10, 0, 1 << 30, "Stop at the first slice whose mask has fewer pixels: the object has ended.",
        label="min area (px)")
    max_regrowth: float = setting(
        1.3, 0.0, 100.0, "Stop at the first slice whose area exceeds this many times the smallest area since the "
        "object's widest slice, once it had shrunk below 0.85 of that widest slice: an object's sections widen and "
        "narrow once, so widening again means a neighbour that starts where the object ends took over.",
        label="max regrowth", step=0.05)
    max_shift: float = setting(
        0.3, 0.0, 100.0, "Stop at the first slice whose mask's centre moves further than this many times the "
        "previous mask's radius (the radius of a disc of its area): the prompt jumped to a neighbour.",
        label="max centre shift", step=0.05)
    n_points: int = setting(
        3, 0, 16, "SAM: positive points placed deep inside the previous slice's mask, with its box, as the next "
        "slice's prompt.", advanced=True, label="points per slice")
    zoom: float = setting(
        6.0, 0.0, 100.0, "SAM, one object at a time: segment each slice in a window this many times the previous "
        "mask's size, magnified into the model's input (at most 4 times), when that window is smaller than the "
        "image: small objects get many more of the model's pixels. 0: the image's own frames.", advanced=True,
        label="zoom window (x object)", step=0.5)
    use_mask_input: bool = setting(
        False, help="SAM: also prompt each slice with the previous slice's mask (helps checkpoints trained with "
        "mask prompts, such as Meta's SAM).", advanced=True, label="previous mask as prompt")


@dataclass(frozen=True)
class FramingSettings(Settings):
    """How an image is fitted into the model's input. SAM enlarges a whole image (or crop) until its longest side
    fills the input; a checkpoint trained at its images' own pixel scale may cap that
    (``ModelGeometry.max_upscale``). Large images are seen in native-resolution tiles; a checkpoint trained on
    objects larger than its users' may see them magnified (``ModelGeometry.tile_scale``)."""

    max_upscale: float = setting(
        0.0, 0.0, 100.0, "The most an image smaller than the model's input is enlarged, the rest of the input "
        "padded; 0 fills the input whatever the image's size (SAM's rule).", label="max upscale", step=0.1)
    tile_scale: float = setting(
        0.0, 0.0, 16.0, "Model-input pixels per image pixel in a large image's tiles; 0 or 1: native resolution. "
        "Above 1, tiles are the input's side divided by it, and auto tiling tiles every image larger than one "
        "tile.", label="tile scale", step=0.5)

    def _check(self) -> None:
        for name in ("max_upscale", "tile_scale"):
            if 0 < getattr(self, name) < 1:
                raise ValueError(f"{name} must be 0 (off) or at least 1, got {getattr(self, name)!r}.")


@dataclass(frozen=True)
class RefineSettings(Settings):
    """Refining existing objects with SAM: each object's box, and optionally its mask, is the prompt."""

    use_mask_input: bool = setting(
        True, help="Prompt with the object's mask as well as its box (for checkpoints trained with mask prompts, "
        "such as Meta's SAM); unticked, the box alone.", label="object's mask as prompt")


@dataclass(frozen=True)
class TilingSettings(Settings):
    """How a large image is seen by the model: whole (resized to the model's input) or in native-resolution tiles.

    ``auto`` tiles an image when resizing it whole would shrink it by more than half (its longest side is more than
    twice the tile size): below that, objects keep most of their pixels in the resized image. A checkpoint that
    sees images magnified (``ModelGeometry.tile_scale``) has smaller tiles, and auto tiles any image larger than one.
    """

    mode: str = setting(
        "auto", help="auto: tiles for images more than twice the tile size (more than one tile for a checkpoint "
        "that sees images magnified), else the whole image resized; tiles: always tiles; whole: always the whole "
        "image resized to the model's input.",
        choices=("auto", "tiles", "whole"), label="tiling", flag="--tiling")
    tile_size: int = setting(
        0, 0, 1 << 16, "Side of a tile in image pixels (0: the model's own: its input size, so tiles are seen at "
        "native resolution, or less for a checkpoint that sees images magnified).", advanced=True,
        label="tile (px)", step=64)
    halo: int = setting(
        0, 0, 1 << 15, "Overlap kept around each tile's core, in pixels (0: an eighth of the tile). An object about "
        "twice the halo across, cut by a tile border, still lies whole in a neighbouring tile.", advanced=True,
        label="halo (px)", step=8)

    def _check(self) -> None:
        if self.tile_size:  # with the model's input as the tile (0), the check waits for the model
            self.resolved(self.tile_size)

    def resolved(self, default_tile: int) -> tuple[int, int]:
        """(tile, halo) in pixels for a model whose own tile is ``default_tile`` (its input size, or less for a
        checkpoint that sees images magnified: ``ModelGeometry.default_tile``), checked.

        Raises:
            ValueError: a halo of half the tile or more (no core would be left).
        """
        tile = self.tile_size or default_tile
        halo = self.halo or tile // 8
        if tile < 32:
            raise ValueError(f"tile_size must be at least 32 pixels (or 0 for the model's own), got {tile}.")
        if 2 * halo >= tile - 8:
            raise ValueError(f"halo ({halo}) must be less than half the tile ({tile}) minus 4 pixels, so that each "
                             "tile keeps a core: lower the halo or raise the tile size.")
        return tile, halo

    def tiles(self, image_size: tuple[int, int], default_tile: int, whole_limit: float = 2.0) -> bool:
        """Whether an image of ``image_size`` (H, W) is seen in tiles; auto sees it whole up to ``whole_limit``
        tiles on its longest side (``ModelGeometry.whole_limit``: 1 for a checkpoint that sees images
        magnified)."""
        if self.mode == "whole":
            return False
        return self.mode == "tiles" or max(image_size) > whole_limit * self.resolved(default_tile)[0]


#: How much of the model ``napari-sam train`` changes (see :class:`TrainingSettings`).
ENCODER_TRAINING = ("none", "lora", "full")


@dataclass(frozen=True)
class TrainingSettings(Settings):
    """Fine-tuning a checkpoint on the user's own annotations (``napari-sam train``, the *Train* dock): what is
    trained, for how long, and how it is validated."""

    encoder: str = setting(
        "none", help="What of the image encoder is trained: none (the mask decoder and prompt encoder only, on "
        "embeddings computed once: practical on a CPU), lora (LoRA adapters on its attention, merged into the saved "
        "weights) or full (the whole model).", choices=ENCODER_TRAINING, label="image encoder")
    instances: bool = setting(
        False, help="Train an instance head instead of the model: a small network on the frozen encoder's embeddings "
        "that segment everything's fast 'instances' method uses (the model's own weights are kept as they are).",
        label="instance head")
    minutes: float = setting(
        10.0, 0.05, 24 * 60.0, "Train for at most this many minutes (the validation and saving come after).",
        label="minutes", step=1.0)
    epochs: int = setting(
        0, 0, 100_000, "Train for this many passes over the training objects instead of by time (0: by time; when set, "
        "the minutes do not apply).",
        label="epochs")
    val_fraction: float = setting(
        0.2, 0.05, 0.5, "Share of the images held out to validate on (of the objects, when there is one image).",
        label="validation share", step=0.05)
    learning_rate: float = setting(
        3e-4, 1e-7, 1.0, "AdamW's learning rate (warm-up, then cosine decay).", advanced=True, label="learning rate",
        step=1e-4)
    objects_per_step: int = setting(
        16, 1, 1024, "Objects prompted in each training step (from up to 4 images or tiles).", advanced=True,
        label="objects per step")
    patience: int = setting(
        6, 1, 1000, "Stop early after this many validations without improvement (the best state is kept).",
        advanced=True, label="patience")
    keep_best: bool = setting(
        True, help="Save the state that validated best (else the last one).", advanced=True, label="keep the best")
    lora_rank: int = setting(8, 1, 256, "Rank of the LoRA adapters (--encoder lora).", advanced=True,
                             label="LoRA rank")
    seed: int = setting(0, 0, 2**31 - 1, "Seed of the split, the prompts and the order: the same seed, data and "
                        "machine give the same model.", advanced=True)

    def _check(self) -> None:
        if self.instances and self.encoder != "none":
            raise ValueError(f"An instance head is trained on the frozen encoder's embeddings: use encoder 'none' "
                             f"with instances, not {self.encoder!r}.")
