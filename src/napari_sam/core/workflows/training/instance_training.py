"""Training an instance head (:mod:`~napari_sam.core.decoding.instance_head`) on the user's annotations: the frames
the model sees at inference, embedded once by the frozen encoder (through the cache and store, as decoder-only
fine-tuning), their labels turned into the head's three maps (:func:`~napari_sam.core.workflows.instances.
instance_targets`), and a quick validation score (the F1 of the objects found at IoU 0.5) for keeping the best
state; then segment everything's instance thresholds calibrated on the validation images through the public API.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ...decoding import InstanceHead, head_extras, new_head
from ...settings import EverythingSettings, TrainingSettings
from ..instances import instance_targets, split_instances
from .examples import AnnotatedImage, TrainingFrame
from .validation import everything_counts, matched, recall_precision, search_settings

#: Channels of a new head's widest layer.
HEAD_WIDTH = 64
#: Frames per training step of the head.
HEAD_FRAMES_PER_STEP = 4
#: Weight of the two distance maps' squared error against the foreground's cross-entropy and Dice loss.
DISTANCE_WEIGHT = 4.0
#: What :func:`calibrate_instances` tries for each instance threshold, in turn (the others held).
INSTANCE_THRESHOLDS = {"foreground_thresh": (0.3, 0.4, 0.5, 0.6, 0.7),
                       "boundary_distance_thresh": (0.3, 0.4, 0.5, 0.6, 0.7),
                       "center_distance_thresh": (0.3, 0.4, 0.5, 0.6, 0.7),
                       "min_seed_area": (1, 4, 10, 20),
                       "min_instance_area": (8, 16, 32, 64)}
#: Labels of pixels where nothing is known (padding, ignored objects), as the validation score sees them.
_UNKNOWN = np.iinfo(np.int32).max


class HeadTrainer:
    """Training steps of an instance head on prepared frames (features and model input each).

    ``schedule`` is set by the caller (it depends on how long training runs); without one the rate stays constant.
    """

    def __init__(self, predictor, frames: list[TrainingFrame], settings: TrainingSettings,
                 head: InstanceHead | None = None):
        first = frames[0].features
        assert first is not None and frames[0].pixels is not None
        self.device = predictor.device
        self.head = (head or new_head(predictor.model, first[0], first[1], HEAD_WIDTH, settings.seed)).to(self.device)
        self.frames = frames
        self.targets = [head_targets(frame, self.output_size(frame)) for frame in frames]
        self.optimizer = torch.optim.AdamW(self.head.parameters(), lr=settings.learning_rate, weight_decay=0.01)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: 1.0)
        self.rng = np.random.default_rng(settings.seed)
        self.steps_per_epoch = max(1, round(len(frames) / min(HEAD_FRAMES_PER_STEP, len(frames))))

    def output_size(self, frame: TrainingFrame) -> tuple[int, int]:
        """The head's output size for a frame: 8 times its embedding's."""
        assert frame.features is not None
        return 8 * frame.features[0].shape[-2], 8 * frame.features[0].shape[-1]

    def maps(self, frames: list[TrainingFrame]) -> torch.Tensor:
        """The head's raw output for ``frames`` (B, 3, 8e, 8e) for embeddings of e x e."""
        embedding = torch.cat([f.features[0] for f in frames]).to(self.device, torch.float32)  # type: ignore[index]
        extras = tuple(torch.cat(parts).to(self.device, torch.float32) for parts in zip(
            *[head_extras(f.features[1], f.features[0]) for f in frames]))  # type: ignore[index]
        pixels = torch.cat([f.pixels for f in frames]).to(self.device)  # type: ignore[misc]
        return self.head(embedding, extras, pixels)

    def step(self) -> float:
        """One step on up to :data:`HEAD_FRAMES_PER_STEP` frames drawn at random; returns its loss."""
        self.head.train()
        chosen = self.rng.choice(len(self.frames), size=min(HEAD_FRAMES_PER_STEP, len(self.frames)), replace=False)
        output = self.maps([self.frames[i] for i in chosen])
        maps = torch.stack([self.targets[i][0] for i in chosen]).to(self.device)
        known = torch.stack([self.targets[i][1] for i in chosen]).to(self.device)
        loss = head_loss(output, maps, known)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.head.parameters(), 1.0)
        self.optimizer.step()
        self.schedule.step()
        return float(loss.detach())

    @torch.no_grad()
    def score(self, checks: list[TrainingFrame], settings: EverythingSettings | None = None) -> float:
        """F1 at IoU 0.5 of the objects the head finds in the validation frames ``checks`` (default thresholds)."""
        self.head.eval()
        settings = settings or EverythingSettings(method="instances")
        totals = np.zeros(4, dtype=np.int64)
        for frame in checks:
            output = self.maps([frame])[0].float()
            output[0] = torch.sigmoid(output[0])
            labels = F.interpolate(frame.labels[None, None].float(), size=output.shape[-2:],
                                   mode="nearest")[0, 0].long().numpy()
            found = split_instances(output.cpu().numpy(), settings)
            unknown = np.where(labels < 0, _UNKNOWN, labels)
            totals += matched(unknown, found, ignore=frozenset({_UNKNOWN}))
        recall, precision = recall_precision(totals)
        return 2 * recall * precision / max(1e-9, recall + precision)


def head_targets(frame: TrainingFrame, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(maps (3, h, w), known (h, w)) of a frame's labels at the head's output ``size`` (nearest resampling)."""
    labels = F.interpolate(frame.labels[None, None].float(), size=size, mode="nearest")[0, 0].long().numpy()
    maps, known = instance_targets(labels)
    return torch.from_numpy(maps), torch.from_numpy(known)


def head_loss(output: torch.Tensor, maps: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Cross-entropy and Dice loss of the foreground where labels are known, and the squared error of the two
    distance maps inside the objects (:data:`DISTANCE_WEIGHT`)."""
    logits, truth = output[:, 0], maps[:, 0]
    weight = known.float()
    bce = (F.binary_cross_entropy_with_logits(logits, truth, reduction="none") * weight).sum() / weight.sum().clamp(
        min=1)
    probability = torch.sigmoid(logits) * weight
    dice = 1 - (2 * (probability * truth).sum() + 1) / (probability.sum() + (truth * weight).sum() + 1)
    inside = (truth > 0) & known
    if inside.any():
        squared = (output[:, 1:] - maps[:, 1:]) ** 2
        distances = squared[:, 0][inside].mean() + squared[:, 1][inside].mean()
    else:
        distances = logits.sum() * 0
    return bce + dice + DISTANCE_WEIGHT * distances


def calibrate_instances(predictor, images: list[AnnotatedImage], base: EverythingSettings,
                        cancel=None) -> tuple[EverythingSettings, tuple[float, float]]:
    """The instance thresholds that find ``images``' objects best (the highest F1 at IoU 0.5), each over
    :data:`INSTANCE_THRESHOLDS` in turn, through :func:`~napari_sam.core.workflows.everything.segment_everything`
    with the method ``instances``. Returns (the settings, their (recall, precision))."""
    return search_settings(base.replace(method="instances"), INSTANCE_THRESHOLDS,
                           lambda settings: everything_counts(predictor, images, settings), cancel)

__all__ = ["HeadTrainer", "calibrate_instances", "head_loss", "head_targets"]
