"""The instance head: a small decoder on a checkpoint's image embeddings that predicts, for every pixel of a frame,
whether it is inside an object (foreground) and how far it lies from its object's centre and boundary, from which
instances come out by seeded watershed (:mod:`~napari_sam.core.workflows.instances`), as micro-sam's automatic
instance segmentation does.

It reads the frozen encoder's main embedding (upsampled twice), the higher-resolution feature maps of the families
that have them (SAM2.1 and the SAM3 tracker), and the model input itself through a shallow convolution branch, and
predicts its three maps at 8 times the embedding's resolution (twice the mask decoder's; half the model input's for
SAM's patches of 16 pixels).

A head lives in its checkpoint folder: ``instance_head.safetensors``, described by the ``"instances"`` section of
``napari_sam.json`` (its architecture and the fingerprint of the encoder whose embeddings it was trained on). A head
is used only with the encoder it was trained on: another encoder's embeddings mean something else.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..errors import ModelLoadError
from ..model.recommendations import HEAD_SECTION

#: The head's weights in a checkpoint folder, and its section of ``napari_sam.json``.
HEAD_FILE = "instance_head.safetensors"
#: The maps the head predicts, in this order: foreground logit, distance to the object's centre and to its boundary
#: (each normalised to [0, 1] within its object: 0 at the centre, 1 at the farthest pixel; 1 deep inside, 0 at the
#: boundary).
MAPS = ("foreground", "center_distance", "boundary_distance")
#: Values of each encoder weight that :func:`encoder_fingerprint` keeps.
SAMPLES_PER_WEIGHT = 2
#: Prefixes of the weights that do not shape the image embeddings (the prompt encoder and the mask decoder, but for
#: the SAM2 family's convolutions on the high-resolution maps, which do).
_NOT_EMBEDDING = ("prompt_encoder.", "mask_decoder.", "shared_image_embedding.")


def _embedding_weights(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """The weights a model's image features depend on, by name: all but the prompt encoder's and the mask decoder's,
    except the decoder's convolutions of the high-resolution maps (SAM2 family), which do."""
    return sorted((name, tensor) for name, tensor in model.state_dict().items()
                  if not name.startswith(_NOT_EMBEDDING) or ".conv_s" in name)


def encoder_fingerprint(model: nn.Module) -> dict:
    """What identifies a model's image encoder, whatever precision it is loaded in: ``{"layout": a digest of its
    weights' names and shapes, "sample": a few values of each weight}`` (:data:`SAMPLES_PER_WEIGHT`, float32).
    Fine-tuning the decoder keeps it; another checkpoint, or an encoder trained on, changes it
    (:func:`same_encoder`)."""
    layout = hashlib.blake2b(digest_size=16)
    sample = []
    for name, tensor in _embedding_weights(model):
        layout.update(repr((name, tuple(tensor.shape))).encode())
        flat = tensor.detach().reshape(-1)
        if flat.numel() and not tensor.is_meta:
            positions = torch.arange(SAMPLES_PER_WEIGHT, device=flat.device) * flat.numel() // SAMPLES_PER_WEIGHT
            sample += flat[positions].float().cpu().tolist()
    return {"layout": layout.hexdigest(), "sample": [float(f"{v:.6g}") for v in sample]}


def same_encoder(recorded: dict, model: nn.Module) -> bool:
    """Whether ``model``'s encoder is the one :func:`encoder_fingerprint` recorded: the same layout, and every
    sampled value within 2 % (bfloat16 keeps 3 significant digits)."""
    current = encoder_fingerprint(model)
    if not isinstance(recorded, dict) or recorded.get("layout") != current["layout"]:
        return False
    before, now = torch.tensor(recorded.get("sample", []), dtype=torch.float64), torch.tensor(current["sample"],
                                                                                              dtype=torch.float64)
    return before.shape == now.shape and bool(torch.allclose(now, before, rtol=2e-2, atol=1e-4))


@dataclass(frozen=True)
class HeadSpec:
    """The architecture of a head and the encoder it belongs to (the ``"instances"`` section of ``napari_sam.json``).

    Attributes:
        embedding_channels: channels of the main embedding; extra_channels: channels of each higher-resolution map
            it reads (none for SAM and SAM-HQ), extra_scales: each one's size over the embedding's (2 or 4).
        width: channels of its widest layer.
        encoder: :func:`encoder_fingerprint` of the model it was trained on.
        trained: a summary of its training (for the model card), free form.
    """

    embedding_channels: int
    extra_channels: tuple[int, ...]
    width: int
    encoder: dict
    trained: dict = field(default_factory=dict)
    extra_scales: tuple[int, ...] = ()

    def to_dict(self) -> dict:
        return {"file": HEAD_FILE, "embedding_channels": self.embedding_channels,
                "extra_channels": list(self.extra_channels), "extra_scales": list(self.extra_scales),
                "width": self.width, "encoder": self.encoder,
                "trained": self.trained}

    @classmethod
    def from_dict(cls, values, label: str) -> HeadSpec:
        """The spec of a ``napari_sam.json`` section; ModelLoadError naming ``label`` when it is malformed."""
        try:
            if not isinstance(values, dict):
                raise TypeError("not a JSON object")
            spec = cls(int(values["embedding_channels"]), tuple(int(c) for c in values.get("extra_channels", [])),
                       int(values["width"]), dict(values["encoder"]), dict(values.get("trained") or {}),
                       tuple(int(c) for c in values.get("extra_scales", [])))
            if spec.embedding_channels < 1 or spec.width < 16 or any(c < 1 for c in spec.extra_channels):
                raise ValueError("channels must be positive, the width at least 16")
            if len(spec.extra_scales) != len(spec.extra_channels) or any(c not in (2, 4) for c in spec.extra_scales):
                raise ValueError("each extra map needs a scale of 2 or 4")
            return spec
        except (KeyError, TypeError, ValueError) as error:
            raise ModelLoadError(f'The "{HEAD_SECTION}" section of napari_sam.json of {label} is malformed ({error}): '
                                 "train the head again (napari-sam train --instances).") from error


def _block(channels_in: int, channels_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels_in, channels_out, 3, padding=1), nn.GroupNorm(4, channels_out),
                         nn.GELU())


class InstanceHead(nn.Module):
    """Foreground and the two distance maps of a frame from its image features and model input.

    :meth:`forward` takes the embedding (B, C, e, e), the higher-resolution maps the spec names (each (B, c, h, h)
    with h 2e or 4e) and the model input (B, 3, S, S), and returns (B, 3, 8e, 8e) maps: the foreground logit and the
    two distances (squashed to [0, 1])."""

    def __init__(self, spec: HeadSpec):
        super().__init__()
        self.spec = spec
        wide, mid, fine = spec.width, max(4, spec.width // 2), max(4, spec.width // 4)
        self.reduce = nn.Sequential(nn.Conv2d(spec.embedding_channels, wide, 1), nn.GroupNorm(4, wide), nn.GELU())
        self.up1 = nn.ConvTranspose2d(wide, mid, 2, stride=2)  # e -> 2e
        self.up2 = nn.ConvTranspose2d(mid, fine, 2, stride=2)  # 2e -> 4e (the mask decoder's resolution)
        self.up3 = nn.ConvTranspose2d(fine, fine, 2, stride=2)  # 4e -> 8e (half the input's)
        # the higher-resolution maps join at the level of their size (projected to its channels)
        self.extras = nn.ModuleList(nn.Conv2d(c, mid if scale == 2 else fine, 1)
                                    for c, scale in zip(spec.extra_channels, spec.extra_scales))
        self.pixels_half = _block(3, fine)  # the model input at S/2 and S/4: edges finer than any embedding
        self.pixels_quarter = nn.Sequential(nn.Conv2d(fine, fine, 3, stride=2, padding=1), nn.GroupNorm(4, fine),
                                            nn.GELU())
        self.mid = _block(mid, mid)
        self.fuse_quarter = _block(2 * fine, fine)
        self.fuse_half = _block(2 * fine, fine)
        self.out = nn.Conv2d(fine, len(MAPS), 1)

    def forward(self, embedding: torch.Tensor, extras: tuple[torch.Tensor, ...], pixels: torch.Tensor) -> torch.Tensor:
        x = self.up1(self.reduce(embedding))
        x = self._join(x, extras, 2)
        x = self._join(self.up2(self.mid(x)), extras, 4)
        half = nn.functional.avg_pool2d(pixels, 2)
        half = self.pixels_half(half)
        quarter = self.pixels_quarter(half)
        x = self.fuse_quarter(torch.cat([x, _fit(quarter, x)], dim=1))
        x = self.up3(x)
        x = self.fuse_half(torch.cat([x, _fit(half, x)], dim=1))
        maps = self.out(x)
        return torch.cat([maps[:, :1], torch.sigmoid(maps[:, 1:])], dim=1)

    def _join(self, x: torch.Tensor, extras: tuple[torch.Tensor, ...], scale: int) -> torch.Tensor:
        """``x`` plus the projected extra maps of ``scale``."""
        for project, extra, own in zip(self.extras, extras, self.spec.extra_scales):
            if own == scale:
                x = x + _fit(project(extra), x)
        return x


def _fit(features: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``features`` resized to ``like``'s spatial size (they differ only when an input is not a multiple of 16)."""
    if features.shape[-2:] == like.shape[-2:]:
        return features
    return nn.functional.interpolate(features, size=like.shape[-2:], mode="bilinear", align_corners=False)


def head_extras(extras: tuple[torch.Tensor, ...], embedding: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The higher-resolution feature maps of a family's extras (channels first, larger than the embedding): the
    SAM2 family's; none for SAM and SAM-HQ (whose extra is the encoder's intermediate output, channels last)."""
    size = embedding.shape[-1]
    return tuple(t for t in extras if t.ndim == 4 and t.shape[-1] in (2 * size, 4 * size)
                 and t.shape[-2] == t.shape[-1])


def new_head(model: nn.Module, embedding: torch.Tensor, extras: tuple[torch.Tensor, ...], width: int = 64,
             seed: int = 0) -> InstanceHead:
    """A head initialised at random (``seed``) for ``model``'s features (an embedding and the family's extras of
    one frame, as :meth:`~napari_sam.core.model.families.Family.embed` returns them)."""
    torch.manual_seed(seed)
    maps = head_extras(extras, embedding)
    spec = HeadSpec(int(embedding.shape[1]), tuple(int(t.shape[1]) for t in maps), width,
                    encoder_fingerprint(model),
                    extra_scales=tuple(int(t.shape[-1] // embedding.shape[-1]) for t in maps))
    return InstanceHead(spec)


def save_head(head: InstanceHead, folder: Path) -> dict:
    """Write the head's weights into ``folder`` (:data:`HEAD_FILE`); returns its ``napari_sam.json`` section."""
    from safetensors.torch import save_file

    save_file({name: t.detach().cpu().contiguous() for name, t in head.state_dict().items()},
              str(Path(folder) / HEAD_FILE))
    return head.spec.to_dict()


def load_head(folder: str | Path, section, model: nn.Module, label: str, device="cpu") -> InstanceHead:
    """The head of the checkpoint folder ``folder`` (``section``: its ``napari_sam.json`` section), checked against
    ``model``, the checkpoint's model.

    Raises:
        ModelLoadError: the file is missing, unreadable or does not fit the spec, or the head was trained on another
            encoder (its embeddings differ), each naming ``label`` and what to do.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    spec = HeadSpec.from_dict(section, label)
    path = Path(folder) / HEAD_FILE
    if not path.is_file():
        raise ModelLoadError(f"The instance head of {label} is missing: napari_sam.json names {HEAD_FILE}, which the "
                             "folder does not hold. Train it again (napari-sam train --instances).")
    if not same_encoder(spec.encoder, model):
        raise ModelLoadError(f"The instance head of {label} was trained on another image encoder (its embeddings "
                             "differ from this checkpoint's), so it cannot be used here: train a head for this "
                             "checkpoint (napari-sam train --instances --model <this checkpoint>).")
    try:
        state = load_file(str(path))
        head = InstanceHead(spec)
        head.load_state_dict(state, strict=True)
    except (SafetensorError, OSError, RuntimeError, ValueError) as error:
        raise ModelLoadError(f"The instance head file {path} of {label} cannot be read ({str(error)[:200]}): it is "
                             "corrupt or from another version; train the head again (napari-sam train "
                             "--instances).") from error
    return head.to(device).eval()


__all__ = ["HEAD_FILE", "HEAD_SECTION", "MAPS", "HeadSpec", "InstanceHead", "encoder_fingerprint", "head_extras",
           "load_head", "new_head", "same_encoder", "save_head"]
