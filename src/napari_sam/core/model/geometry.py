"""A checkpoint's geometry: the sizes and normalisation of its input and output (:class:`ModelGeometry`), built in
one place (:func:`model_geometry`) from its ``config.json``, its image processor's settings and the framing its
``napari_sam.json`` recommends. Nothing here assumes SAM's usual 1024-pixel input."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ModelLoadError
from ..settings import FramingSettings
from .families import FAMILIES
from .processor_config import IMAGENET_MEAN, IMAGENET_STD, image_settings, per_channel, positive_number


@dataclass(frozen=True)
class ModelGeometry:
    """Sizes and normalisation of a SAM checkpoint.

    The pixel pipeline (:func:`~napari_sam.core.image.preparation.model_input`) is transformers' SAM image
    processor's: 8-bit levels, resized by Pillow's filter ``resample``, times ``rescale_factor`` if
    ``do_rescale``, normalised with ``mean``/``std`` if ``do_normalize``, zero-padded to ``pad_size`` if
    ``do_pad``. Fields after ``std`` have defaults (SAM's usual settings).

    Attributes:
        image_size: side of the square model input, in pixels (1024 for Meta's SAM).
        longest_edge: the image's longest side is resized to this many pixels (usually ``image_size``).
        pad_size: (height, width) the resized image is zero-padded to, bottom and right.
        embedding_size: side of the square image embedding (``image_size // patch_size``).
        mask_size: side of the low-resolution mask logits the decoder returns (4 x ``embedding_size``).
        mean, std: per-channel (R, G, B) normalisation, applied to the rescaled values (usually in [0, 1]).
        resample: PIL filter id of the resize: 0 nearest, 1 lanczos, 2 bilinear, 3 bicubic, 4 box, 5 hamming.
        do_rescale, rescale_factor: whether 8-bit levels (0..255) are multiplied by ``rescale_factor`` (1/255).
        do_normalize: whether ``mean``/``std`` are applied.
        do_pad: whether the resized image is padded; when False it must resize to exactly ``pad_size``.
        square: the image is stretched to the square ``pad_size`` (aspect not kept, no padding) and low-resolution
            masks are upsampled straight to the image's size, as the SAM2 family's processors do.
        family: the checkpoint's family (:data:`~napari_sam.core.model.families.FAMILIES`).
        max_upscale: the most an image smaller than the input is enlarged (the rest padded); 0 fills the input
            whatever the image's size, as SAM does. Set by a checkpoint trained at its images' own pixel scale
            (``"image": {"max_upscale": ...}`` in its ``napari_sam.json``), whose objects would otherwise grow
            past the sizes it knows; :meth:`Predictor.from_pretrained` sets it. Square (SAM2-family) inputs ignore
            it.
        tile_scale: model-input pixels per image pixel in a large image's tiles (0: 1, native resolution). A
            checkpoint trained on objects larger than those of its users' images sees images magnified
            (``"image": {"tile_scale": ...}``): tiles of ``image_size / tile_scale`` pixels, and with auto tiling
            every image larger than one tile is tiled. Square (SAM2-family) inputs ignore it.
    """

    image_size: int
    longest_edge: int
    pad_size: tuple[int, int]
    embedding_size: int
    mask_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resample: int = 2
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    do_pad: bool = True
    square: bool = False
    family: str = "sam"
    max_upscale: float = 0.0
    tile_scale: float = 0.0

    @property
    def default_tile(self) -> int:
        """Side of a tile in image pixels when the tiling settings leave it to the model: the input's side, or
        less for a checkpoint that sees images magnified (``tile_scale`` > 1)."""
        return int(round(self.image_size / self.tile_scale)) if self.tile_scale > 1 else self.image_size

    @property
    def whole_limit(self) -> float:
        """Auto tiling sees an image whole up to this many default tiles on its longest side: 2 (an image
        shrunk by at most half keeps most of its pixels), or 1 for a magnifying checkpoint, which would see any
        larger image below the scale it needs."""
        return 1.0 if self.tile_scale > 1 else 2.0

    def input_size(self, frame) -> tuple[int, int]:
        """(height, width) of ``frame``'s pixels inside the model input: its region times its scale (SAM), or the
        whole square input (``square``: the SAM2 family stretches every frame to it)."""
        return self.pad_size if self.square else frame.resized_size


def model_geometry(config, family: str = "sam", preprocessor: dict | None = None,
                   source: str = "the preprocessor config", framing: FramingSettings | None = None) -> ModelGeometry:
    """The :class:`ModelGeometry` of a checkpoint: the one place one is built.

    Args:
        config: the checkpoint's transformers config.
        family: its family's name (:data:`~napari_sam.core.model.families.FAMILIES`).
        preprocessor: its image processor's settings as a dict, or None. SAM and SAM-HQ honour every field of SAM's
            image processor, a missing key meaning the processor's own default (see
            :func:`~napari_sam.core.model.processor_config.image_settings`); without a preprocessor config the
            sizes come from the model config, with bilinear resizing and ImageNet mean/std. The SAM2 family reads
            ``image_mean``/``image_std``/``rescale_factor`` (defaults: ImageNet's; SAM3's 0.5) and checks ``size``.
        source: names the preprocessor config in errors.
        framing: how the checkpoint fits images into its input (its ``napari_sam.json``'s ``"image"`` section;
            None: SAM's rule). Square (SAM2-family) inputs ignore it.

    Raises:
        ModelLoadError: the preprocessor config asks for what napari-sam cannot reproduce, or does not fit the model.
    """
    if FAMILIES[family].square:
        return _square_geometry(config, family, preprocessor or {}, source)
    vision = config.vision_config
    image_size = int(vision.image_size)
    embedding_size = image_size // int(vision.patch_size)
    settings = image_settings(preprocessor, image_size, source)
    framing = framing or FramingSettings()
    return ModelGeometry(
        image_size=image_size, longest_edge=settings.longest_edge, pad_size=settings.pad_size,
        embedding_size=embedding_size, mask_size=4 * embedding_size, mean=settings.mean, std=settings.std,
        resample=settings.resample, do_rescale=settings.do_rescale, rescale_factor=settings.rescale_factor,
        do_normalize=settings.do_normalize, do_pad=settings.do_pad, family=family,
        max_upscale=framing.max_upscale, tile_scale=framing.tile_scale)


def _square_geometry(config, family: str, preprocessor: dict, source: str) -> ModelGeometry:
    """A SAM2-family checkpoint's square input of the prompt encoder's size (1024; 1008 for SAM3)."""
    sizes = config.vision_config.backbone_config if family == "sam3" else config.prompt_encoder_config
    side = int(sizes.image_size)
    embedding = side // int(sizes.patch_size)
    size = preprocessor.get("size")
    if size is not None and (not isinstance(size, dict) or (size.get("height"), size.get("width")) != (side, side)):
        raise ModelLoadError(f"{source} resizes to {size!r}; the model takes {side}x{side} images.")
    half = (0.5, 0.5, 0.5) if family.startswith("sam3") else None
    values = {"image_mean": half or IMAGENET_MEAN, "image_std": half or IMAGENET_STD, "rescale_factor": 1 / 255,
              **preprocessor}
    return ModelGeometry(image_size=side, longest_edge=side, pad_size=(side, side), embedding_size=embedding,
                         mask_size=4 * embedding, mean=per_channel(values["image_mean"], "image_mean", source),
                         std=per_channel(values["image_std"], "image_std", source, positive=True),
                         rescale_factor=positive_number(values["rescale_factor"], "rescale_factor", source),
                         do_pad=False, square=True, family=family)
