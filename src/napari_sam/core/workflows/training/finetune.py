"""Fine-tuning a checkpoint on the user's own annotations: :func:`finetune`, which ``napari-sam train`` and the
*Train* dock call.

1. The annotated images are split (images, or objects when there is one) and seen in the frames the model sees
   them in at inference. With the encoder frozen (the default), each frame is embedded once, through the
   predictor's cache and store.
2. The base is measured on the validation images through the public API.
3. Training steps (:func:`~napari_sam.core.workflows.training.recipe.interactive_loss`) run until the time or the
   epochs are spent, with a quick validation score on fixed prompts every few steps; the best state is kept, and
   training stops early once the score has not improved ``patience`` times.
4. The best state is measured again, segment everything's thresholds are calibrated on the validation images, and
   the checkpoint folder is written (:mod:`~napari_sam.core.workflows.training.trained_checkpoint`) unless the model
   is worse than the base.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from ...embeddings import EmbeddingCache
from ...errors import SegmentationCancelled
from ...model import fast_bfloat16
from ...predictor import Predictor
from ...settings import TrainingSettings
from .adapters import add_lora, lora_parameters, merge_lora
from .examples import AnnotatedImage, Split, TrainingFrame, split, training_frames
from .instance_training import HeadTrainer, calibrate_instances
from .recipe import interactive_loss, optimizer_step, warmup_cosine
from .trained_checkpoint import check_out, write_checkpoint
from .validation import Figures, calibrate, measure, quick_score, validation_prompts

#: Frames (images or tiles) per training step.
FRAMES_PER_STEP = 4


class WorseThanBase(ValueError):
    """The trained model is worse than its base on the validation images; the message gives both figures."""


@dataclass(frozen=True)
class TrainingProgress:
    """What a running :func:`finetune` reports.

    Attributes:
        phase: ``"embedding"``, ``"measuring the base"``, ``"training"``, ``"measuring"``, ``"calibrating"`` or
            ``"saving"``.
        step: training steps done; steps: the planned number (None when training by time).
        loss: the latest steps' mean loss (None outside training); validation: the latest quick validation score
            (mean IoU of fixed validation clicks and boxes; None before the first), best: the best one so far.
        elapsed: seconds since training started; done/total: images embedded in the first phase.
    """

    phase: str
    step: int = 0
    steps: int | None = None
    loss: float | None = None
    validation: float | None = None
    best: float | None = None
    elapsed: float = 0.0
    done: int = 0
    total: int = 0


@dataclass
class TrainingResult:
    """What :func:`finetune` did: the folder written (None when refused), the figures of the base and of the trained
    model on the validation images, the history of the quick validation score (step, score) and of the loss, and
    how it ended (``"time"``, ``"epochs"``, ``"early stop"`` or ``"cancelled"``)."""

    out: Path | None
    before: Figures
    after: Figures
    split: dict
    steps: int
    best_step: int
    seconds: float
    stopped: str
    losses: list[float] = field(default_factory=list)
    validations: list[tuple[int, float]] = field(default_factory=list)
    predictor: Predictor | None = None


def trainable_family(predictor: Predictor) -> None:
    """Raise a ValueError naming the family when its checkpoints cannot be fine-tuned here."""
    if predictor.family.concept:
        raise ValueError(f"{predictor.checkpoint} is a {predictor.family.label} checkpoint: it segments concepts, "
                         "and napari-sam fine-tunes prompt models only (SAM, SAM-HQ, SAM2.1, EdgeTAM, the SAM3 "
                         "tracker).")


def finetune(base: str | os.PathLike | Predictor, annotated: list[AnnotatedImage], out: str | os.PathLike,
             settings: TrainingSettings | None = None, *, validation: list[AnnotatedImage] | None = None,
             device="auto", store=None, overwrite: bool = False, allow_worse: bool = False,
             progress: Callable[[TrainingProgress], None] | None = None,
             cancel: Callable[[], bool] | None = None) -> TrainingResult:
    """Fine-tune ``base`` (a checkpoint name, hub id or folder, or a loaded :class:`Predictor`, which is not
    changed) on ``annotated`` images and write the new checkpoint to the folder ``out``.

    Args:
        annotated: the images with their labels (see :func:`annotated_planes`); ``validation``: images to
            validate on instead of a share of ``annotated`` (``settings.val_fraction``).
        settings: what is trained and for how long (:class:`~napari_sam.core.settings.TrainingSettings`).
        device: where to train (``"auto"``: the GPU when there is one; bfloat16 autocast where it is fast).
        store: an embedding store for the frozen encoder's embeddings (so that images embedded before, in napari or a
            batch run, are not encoded again).
        overwrite: replace an existing ``out`` folder (never the base's). ``allow_worse``: save a model that is
            worse than the base on validation, instead of raising :class:`WorseThanBase`.
        progress: called with a :class:`TrainingProgress` as it goes; ``cancel``: checked between steps: True ends
            training there, and the best state so far is measured and saved (before the first step: raises
            :class:`~napari_sam.core.errors.SegmentationCancelled`, and nothing is saved).

    Raises:
        ValueError: bad input (no objects, one object, an output folder that exists, a family that cannot be
            trained), each named; :class:`WorseThanBase`.
    """
    settings = settings or TrainingSettings()
    out = Path(out)
    report = progress or (lambda _: None)
    stopping = cancel or (lambda: False)
    base_name = base.checkpoint if isinstance(base, Predictor) else os.fspath(base)
    check_out(out, base_name, overwrite)
    parts = split(annotated, settings.val_fraction, settings.seed) if validation is None else Split(
        [a for a in annotated if a.ids], [v for v in validation if v.ids], "given")
    if not parts.training or not parts.validation:
        raise ValueError("Training needs objects to learn from and objects to validate on: "
                         f"{parts.summary()}.")
    torch.manual_seed(settings.seed)
    original = base if isinstance(base, Predictor) else Predictor.from_pretrained(base, device=device,
                                                                                   dtype=torch.float32, store=store)
    trainable_family(original)
    encoder = settings.encoder != "none"
    # the model trained is a copy: the base's predictor (and its cache) stay as they were
    model = copy.deepcopy(original.model).float()
    predictor = _measuring(original, model, encoder)
    report(TrainingProgress("embedding", total=len(parts.training) + len(parts.validation)))
    # a head reads both, and learns from the frames of background too
    needs = {"pixels": encoder or settings.instances, "features": not encoder, "empty": settings.instances}
    frames = training_frames(predictor, parts.training, **needs,
                             progress=lambda d, t: report(TrainingProgress("embedding", done=d, total=t)))
    checks = training_frames(predictor, parts.validation, **needs)
    if not frames or not checks:
        raise ValueError("No frame of the images holds an object to learn from or to validate on.")
    if stopping():
        raise SegmentationCancelled()
    report(TrainingProgress("measuring the base"))
    # a predictor of its own: the caller's (a viewer's session) keeps its current image
    before = measure(_measuring(original, original.model, False), parts.validation,
                     original.recommended.everything, settings.seed)
    if stopping():
        raise SegmentationCancelled()

    if settings.instances:
        return _finetune_head(original, predictor, frames, checks, parts, before, out, settings, overwrite,
                              allow_worse, report, stopping)

    trainer = Trainer(model, predictor, frames, settings)
    model = trainer.model  # with LoRA adapters, the wrapped model
    prompts = validation_prompts(checks, settings.seed)
    run = _train(trainer, model, lambda: trainer.score(checks, prompts), settings, report, stopping)
    if settings.encoder == "lora":
        merge_lora(model)
    for parameter in model.parameters():
        parameter.requires_grad = False
    model.eval()

    report(TrainingProgress("measuring", run.steps, elapsed=run.seconds))
    trained_predictor = _measuring(original, model, encoder)  # a new one: decoders keep derived weights
    report(TrainingProgress("calibrating", run.steps, elapsed=run.seconds))
    # the grid's thresholds are calibrated for the new decoder whatever the method (the user may switch to the grid)
    everything, _ = calibrate(trained_predictor, parts.validation,
                              original.recommended.everything.replace(method="grid"))
    if trained_predictor.has_head:  # the base's head, on the base's embeddings: its method stays
        everything = everything.replace(method=original.recommended.everything.method)
    after = measure(trained_predictor, parts.validation, everything, settings.seed)
    result = TrainingResult(None, before, after, parts.summary(), *run, trained_predictor)
    if after.score < before.score and not allow_worse:
        raise _worse(base_name, before, after)
    report(TrainingProgress("saving", run.steps, elapsed=run.seconds))
    write_checkpoint(model, original, out, everything, result, settings, overwrite)
    result.out = out
    trained_predictor.checkpoint = os.fspath(out)
    return result


def _worse(base_name: str, before: Figures, after: Figures) -> WorseThanBase:
    return WorseThanBase(
        f"The trained model is worse than {base_name} on the validation objects (click {after.click:.3f} vs "
        f"{before.click:.3f}, box {after.box:.3f} vs {before.box:.3f}, segment everything recall/precision "
        f"{after.recall:.2f}/{after.precision:.2f} vs {before.recall:.2f}/{before.precision:.2f}); nothing was "
        "saved. Annotate more objects, train longer, or save it anyway (--allow-worse, or *save even if worse* in "
        "the Train dock).")


def _finetune_head(original: Predictor, predictor: Predictor, frames: list[TrainingFrame],
                   checks: list[TrainingFrame], parts: Split, before: Figures, out: Path, settings: TrainingSettings,
                   overwrite: bool, allow_worse: bool, report, stopping) -> TrainingResult:
    """:func:`finetune` with ``settings.instances``: an instance head trained on the frozen encoder's embeddings
    (from the base's own head when it has one), segment everything's instance thresholds calibrated on the
    validation images, and the checkpoint written with the base's weights unchanged and the head beside them.
    Clicks and boxes do not change (the decoder is the base's); segment everything is measured with the head."""
    start_from = copy.deepcopy(original.instance_head()) if original.has_head else None
    trainer = HeadTrainer(predictor, frames, settings, head=start_from)
    run = _train(trainer, trainer.head, lambda: trainer.score(checks), settings, report, stopping)
    head = trainer.head.eval()
    for parameter in head.parameters():
        parameter.requires_grad = False
    report(TrainingProgress("calibrating", run.steps, elapsed=run.seconds))
    predictor.use_head(head)
    everything, (recall, precision) = calibrate_instances(predictor, parts.validation,
                                                          original.recommended.everything)
    after = dataclasses.replace(before, recall=recall, precision=precision, everything=everything)
    result = TrainingResult(None, before, after, parts.summary(), *run, predictor)
    if after.score < before.score and not allow_worse:
        raise _worse(original.checkpoint, before, after)
    report(TrainingProgress("saving", run.steps, elapsed=run.seconds))
    head.spec = dataclasses.replace(head.spec, trained={
        "base": original.checkpoint, **parts.summary(), "steps": run.steps, "seconds": round(run.seconds, 1)})
    write_checkpoint(predictor.model, original, out, everything, result, settings, overwrite, head=head)
    result.out = out
    predictor.checkpoint = os.fspath(out)
    return result


class Trainer:
    """The training steps of :func:`finetune` on prepared frames (also what ``benchmarks/finetune.py`` times).

    ``model`` (a copy being trained, float32) gets LoRA adapters with ``settings.encoder == "lora"`` (then
    :attr:`model` is the wrapped one); what is trained follows ``settings.encoder``. ``schedule`` is set by the
    caller (it depends on how long training runs); without one the learning rate stays constant.
    """

    def __init__(self, model, predictor: Predictor, frames: list[TrainingFrame], settings: TrainingSettings):
        self.settings, self.frames, self.predictor = settings, frames, predictor
        self.encoder = settings.encoder != "none"
        if settings.encoder == "lora":
            model = add_lora(model, settings.lora_rank, settings.seed)
            if not lora_parameters(model):
                raise ValueError("No LoRA adapter was added to the image encoder.")
        for name, parameter in model.named_parameters():
            parameter.requires_grad = (settings.encoder == "full" or not name.startswith("vision_encoder.")
                                       or "lora_" in name)
        self.model = model
        self.trained = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.trained, lr=settings.learning_rate, weight_decay=0.01)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: 1.0)
        self.per_frame = max(1, settings.objects_per_step // min(FRAMES_PER_STEP, len(frames)))
        objects = sum(int(len(torch.unique(f.labels[f.labels > 0]))) for f in frames)
        self.steps_per_epoch = max(1, round(objects / (self.per_frame * min(FRAMES_PER_STEP, len(frames)))))
        self.rng = np.random.default_rng(settings.seed)
        self.bfloat16 = fast_bfloat16(predictor.device)

    def _features(self, frame: TrainingFrame, grad: bool):
        if not self.encoder:
            return frame.features
        pixels = frame.pixels.to(self.predictor.device)  # type: ignore[union-attr]
        return self.predictor.family.embed(self.model, pixels, grad=grad)

    def step(self) -> float:
        """One step on up to :data:`FRAMES_PER_STEP` frames drawn at random; returns its loss."""
        self.model.train()
        chosen = self.rng.choice(len(self.frames), size=min(FRAMES_PER_STEP, len(self.frames)), replace=False)
        with _autocast(self.predictor.device, self.bfloat16):
            features = [self._features(self.frames[i], grad=True) for i in chosen]
            loss, _ = interactive_loss(self.model, self.predictor.family, features,
                                       [self.frames[i].labels for i in chosen], self.rng, self.per_frame,
                                       self.predictor.geometry.mask_size)
        optimizer_step(self.trained, self.optimizer, self.schedule, loss.float())
        return float(loss.detach())

    def score(self, checks: list[TrainingFrame], prompts) -> float:
        """The quick validation score (see :func:`quick_score`) on the validation frames ``checks``."""
        self.model.eval()
        with torch.no_grad(), _autocast(self.predictor.device, self.bfloat16):
            features = [self._features(frame, grad=False) for frame in checks]
            return quick_score(self.model, self.predictor.family, features, prompts)


class _Run(NamedTuple):
    """How a training loop went, in :class:`TrainingResult`'s order."""

    steps: int
    best_step: int
    seconds: float
    stopped: str
    losses: list[float]
    validations: list[tuple[int, float]]


def _train(trainer, module: torch.nn.Module, score: Callable[[], float], settings: TrainingSettings,
           report: Callable[[TrainingProgress], None], stopping: Callable[[], bool]) -> _Run:
    """``trainer``'s steps (a :class:`Trainer` or a head's) until the time or the epochs are spent, validating with
    ``score`` every few steps, early stopping after ``settings.patience`` validations without improvement; the best
    state of ``module``'s trained parameters is put back (``settings.keep_best``).

    Raises:
        SegmentationCancelled: ``stopping()`` before the first step (nothing learnt).
    """
    planned = settings.epochs * trainer.steps_per_epoch if settings.epochs else None
    trainer.schedule = warmup_cosine(trainer.optimizer, planned or _steps_in(settings.minutes))
    evaluate_every = max(5, min(25, trainer.steps_per_epoch))
    best_value, best_step = score(), 0
    best_state = _state(module)
    losses, history, stale, step, stopped = [], [(0, best_value)], 0, 0, "time"
    start = time.monotonic()
    while True:
        if planned is not None and step >= planned:
            stopped = "epochs"
            break
        if planned is None and time.monotonic() - start >= settings.minutes * 60:
            break
        if stopping():
            if step == 0:  # nothing learnt: nothing to save
                raise SegmentationCancelled()
            stopped = "cancelled"
            break
        losses.append(trainer.step())
        step += 1
        latest = None
        if step % evaluate_every == 0:
            latest = score()
            history.append((step, latest))
            if latest > best_value + 1e-4:
                best_value, best_step, best_state, stale = latest, step, _state(module), 0
            else:
                stale += 1
        report(TrainingProgress("training", step, planned, float(np.mean(losses[-evaluate_every:])), latest,
                                best_value, time.monotonic() - start))
        if stale >= settings.patience:
            stopped = "early stop"
            break
    seconds = time.monotonic() - start
    if settings.keep_best:
        _restore(module, best_state)
    else:
        best_step = step
    return _Run(step, best_step, seconds, stopped, losses, history)


def _steps_in(minutes: float) -> int:
    """The schedule's length when training by time: long enough that the rate decays over the time given (a step
    takes at least ~0.05 s); early stopping and the clock end it."""
    return max(100, int(minutes * 60 / 0.05))


def _autocast(device: torch.device, bfloat16: bool):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bfloat16 and device.type == "cuda")


def _state(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def _restore(model, state: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name in state:
                parameter.copy_(state[name])


def _measuring(original: Predictor, model, encoder: bool) -> Predictor:
    """A predictor of ``model`` (a copy of ``original``'s, trained or being trained) with ``original``'s settings.
    With the encoder frozen it shares ``original``'s embeddings (its cache and store, under its name); a trained
    encoder gives other embeddings, so it gets a cache of its own and no store."""
    recommended = original.recommended
    if encoder:  # the base's instance head reads the base's embeddings: not this encoder's
        recommended = dataclasses.replace(recommended, instances=None,
                                          everything=recommended.everything.replace(method="grid"))
    predictor = Predictor(model, original.geometry, original.device,
                          checkpoint=original.checkpoint if not encoder else f"{original.checkpoint} (trained encoder)",
                          recommended=recommended, tiling=original.tiling,
                          cache=original.cache if not encoder else EmbeddingCache(),
                          store=original.store if not encoder else None)
    if not encoder and original.has_head:
        predictor.use_head(original.instance_head())
    return predictor


__all__ = ["Trainer", "TrainingProgress", "TrainingResult", "WorseThanBase", "finetune"]
