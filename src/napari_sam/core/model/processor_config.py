"""A SAM checkpoint's image-processor settings (``preprocessor_config.json``), read and checked against the model.

transformers' ``SamImageProcessor`` turns an image into the model's input in this order: convert to RGB, resize the
longest side to ``size["longest_edge"]`` with the PIL filter ``resample``, multiply by ``rescale_factor``,
normalise with ``image_mean``/``image_std``, zero-pad bottom/right to ``pad_size``; each step only when its
``do_*`` flag is true. :func:`image_settings` reads those fields as the processor does, keys the file leaves out
taking the processor's own class defaults (:data:`SAM_PROCESSOR_DEFAULTS`), and refuses, naming the field, what
napari-sam cannot reproduce or what cannot work with the model:

- ``do_resize`` false: transformers then feeds the image at its own size but still scales the prompts as if it had
  been resized to ``size["longest_edge"]``, so prompts and image disagree;
- ``size`` without ``longest_edge`` (the legacy int form included: transformers reads an int as height/width and
  then fails), or a longest edge larger than the model's input;
- ``pad_size`` other than the model's input (``vision_config.image_size`` square);
- ``do_pad`` false with a longest edge smaller than the model's input (no image would fit; with the same edge, only
  square images fit, and :func:`~napari_sam.core.image.preparation.model_input` refuses the others);
- ``resample`` that is not one of Pillow's filters 0-5 (Pillow's newer MKS filters 6 and 7 are not reproduced);
- ``do_center_crop`` true (not part of SAM's preprocessing: prompts and masks would be misplaced);
- flags that are not true/false/null (null counts as false, as in transformers), factors, means and standard
  deviations that are not finite numbers (a standard deviation of 0 included).

``do_convert_rgb`` is accepted either way: the model always gets the image as napari shows it, in RGB.
``mask_size`` and ``mask_pad_size`` only shape segmentation maps for training in transformers; inference never
reads them, so they are accepted whatever they say.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from ..errors import ModelLoadError

#: ImageNet statistics (transformers' ``IMAGENET_DEFAULT_MEAN`` / ``_STD``), SAM's normalisation.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: transformers' ``SamImageProcessor`` class defaults: what a key missing from a preprocessor config means.
#: ``tests/core/test_loading.py`` checks them against ``SamImageProcessorPil()``.
SAM_PROCESSOR_DEFAULTS = MappingProxyType({
    "do_resize": True,
    "size": MappingProxyType({"longest_edge": 1024}),
    "resample": 2,
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": IMAGENET_MEAN,
    "image_std": IMAGENET_STD,
    "do_pad": True,
    "pad_size": MappingProxyType({"height": 1024, "width": 1024}),
    "mask_size": MappingProxyType({"longest_edge": 256}),
    "mask_pad_size": MappingProxyType({"height": 256, "width": 256}),
    "do_convert_rgb": True,
    "do_center_crop": None,
})

_MKS = {6: "MKS2013", 7: "MKS2021"}


@dataclass(frozen=True)
class ImageSettings:
    """How a checkpoint's images become model input (the fields of
    :class:`~napari_sam.core.model.geometry.ModelGeometry` that come from its preprocessor config).

    Attributes:
        longest_edge: the image's longest side is resized to this many pixels.
        pad_size: (height, width) of the zero padding, bottom and right.
        resample: PIL filter id of the resize (2: bilinear).
        do_rescale, rescale_factor: whether 8-bit levels are multiplied by ``rescale_factor``.
        do_normalize, mean, std: whether values are normalised per RGB channel with ``mean``/``std``.
        do_pad: whether the resized image is padded (False: it must already be ``pad_size``).
    """

    longest_edge: int
    pad_size: tuple[int, int]
    resample: int = 2
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    do_pad: bool = True


def _refuse(source: str, field: str, why: str) -> ModelLoadError:
    return ModelLoadError(f"{source}: {field} {why}")


def _flag(values: dict, field: str, source: str) -> bool:
    value = values[field]
    if value is None:  # transformers treats a null flag as false
        return False
    if not isinstance(value, bool):
        raise _refuse(source, field, f"must be true or false, not {value!r}.")
    return value


def _positive_int(value, field: str, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _refuse(source, field, f"must be a positive integer, not {value!r}.")
    return value


def _number(value, field: str, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _refuse(source, field, f"must be a finite number, not {value!r}.")
    return float(value)


def positive_number(value, field: str, source: str) -> float:
    """``value`` as a float, or a ModelLoadError naming ``field`` of ``source`` unless it is finite and above 0."""
    number = _number(value, field, source)
    if number <= 0:
        raise _refuse(source, field, f"must be above 0, not {value!r}.")
    return number


def per_channel(value, field: str, source: str, positive: bool = False) -> tuple[float, float, float]:
    """A number or a list of three numbers (one per RGB channel), as transformers' normalisation takes them;
    ``positive``: each above 0 (a standard deviation)."""
    parse = positive_number if positive else _number
    if isinstance(value, (list, tuple)):
        if len(value) != 3:
            raise _refuse(source, field, f"must be one number or three (R, G, B), not {len(value)}: {value!r}.")
        return tuple(parse(v, field, source) for v in value)  # type: ignore[return-value]
    number = parse(value, field, source)
    return (number, number, number)


def _standard_deviations(value, field: str, source: str) -> tuple[float, float, float]:
    return per_channel(value, field, source, positive=True)


def _used(parse, values: dict, field: str, source: str, used: bool, default):
    """``values[field]`` parsed; a value its step does not use may be anything (it is then ``default`` if invalid)."""
    try:
        return parse(values[field], field, source)
    except ModelLoadError:
        if used:
            raise
        return default


def _longest_edge(size, source: str) -> int:
    if isinstance(size, Mapping) and "longest_edge" in size:
        return _positive_int(size["longest_edge"], "size.longest_edge", source)
    raise _refuse(source, "size", f"must be {{\"longest_edge\": n}} (SAM resizes the longest side), not {size!r}: "
                  "transformers' SAM processor cannot resize with it.")


def _pad_size(pad, source: str) -> tuple[int, int]:
    if isinstance(pad, int) and not isinstance(pad, bool):  # transformers reads an int as a square
        side = _positive_int(pad, "pad_size", source)
        return side, side
    if isinstance(pad, Mapping) and "height" in pad and "width" in pad:
        return (_positive_int(pad["height"], "pad_size.height", source),
                _positive_int(pad["width"], "pad_size.width", source))
    raise _refuse(source, "pad_size", f"must be {{\"height\": h, \"width\": w}}, not {pad!r}.")


def _resample(value, source: str) -> int:
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if is_int and 0 <= value <= 5:
        return value
    if is_int and value in _MKS:
        raise _refuse(source, "resample", f"{value} is Pillow's {_MKS[value]} filter, which napari-sam does not "
                      "reproduce; use 0-5 (2: bilinear, SAM's default).")
    raise _refuse(source, "resample", f"must be a PIL filter id 0-5 (0 nearest, 1 lanczos, 2 bilinear, 3 bicubic, "
                  f"4 box, 5 hamming), not {value!r}.")


def image_settings(preprocessor: dict | None, image_size: int,
                   source: str = "the preprocessor config") -> ImageSettings:
    """The :class:`ImageSettings` of a checkpoint whose model takes ``image_size`` x ``image_size`` input.

    Args:
        preprocessor: the preprocessor config as a dict, or None when the checkpoint has none: then the sizes come
            from the model (``image_size``) with bilinear resizing and ImageNet mean/std.
        image_size: the model's input side (``vision_config.image_size``).
        source: names the file in error messages.

    Raises:
        ModelLoadError: a field napari-sam cannot reproduce, or one that does not fit the model (see the module).
    """
    if preprocessor is None:
        return ImageSettings(longest_edge=image_size, pad_size=(image_size, image_size))
    if not isinstance(preprocessor, dict):
        raise ModelLoadError(f"{source} must hold a JSON object, not {type(preprocessor).__name__}.")
    values = {**SAM_PROCESSOR_DEFAULTS, **preprocessor}
    if not _flag(values, "do_resize", source):
        raise _refuse(source, "do_resize", "is false: transformers then gives the model the image at its own size "
                      "but still scales prompts as if it had been resized to size.longest_edge, so prompts and "
                      "image disagree. napari-sam always resizes; set do_resize to true.")
    if values["do_center_crop"] not in (None, False):
        raise _refuse(source, "do_center_crop", "is set: cropping is not part of SAM's preprocessing (prompts and "
                      "masks would be misplaced); remove it.")
    for flag in ("do_convert_rgb", "do_rescale", "do_normalize", "do_pad"):
        _flag(values, flag, source)  # checked even where unused
    longest_edge = _longest_edge(values["size"], source)
    pad_size = _pad_size(values["pad_size"], source)
    model_side = f"the model's input {image_size}x{image_size} (vision_config.image_size)"
    if pad_size != (image_size, image_size):
        raise ModelLoadError(f"Inconsistent checkpoint: pad_size {pad_size[0]}x{pad_size[1]} in {source} differs from "
                             f"{model_side}; transformers' pixel values would not fit the model.")
    if longest_edge > image_size:
        raise ModelLoadError(f"Inconsistent checkpoint: size.longest_edge {longest_edge} in {source} is larger than "
                             f"{model_side}; the resized image would not fit the padding.")
    do_pad = _flag(values, "do_pad", source)
    if not do_pad and longest_edge != image_size:
        raise _refuse(source, "do_pad", f"is false with size.longest_edge {longest_edge} smaller than {model_side}: "
                      "no resized image would have the model's input size.")
    do_rescale = _flag(values, "do_rescale", source)
    do_normalize = _flag(values, "do_normalize", source)
    factor = _used(positive_number, values, "rescale_factor", source, do_rescale, 1 / 255)
    mean = _used(per_channel, values, "image_mean", source, do_normalize, IMAGENET_MEAN)
    std = _used(_standard_deviations, values, "image_std", source, do_normalize, IMAGENET_STD)
    return ImageSettings(longest_edge=longest_edge, pad_size=pad_size, resample=_resample(values["resample"], source),
                         do_rescale=do_rescale, rescale_factor=factor, do_normalize=do_normalize, mean=mean, std=std,
                         do_pad=do_pad)
