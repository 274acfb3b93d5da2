"""The live preview of prompt mode: every prompt change re-predicts; the newest result is drawn.

A prompt is decoded right away on the UI thread when that cannot keep the viewer waiting: the plane is an in-memory
array whose embeddings are in memory, nothing else is using the model, and a decode on it (as timed so far, for
masks and a content signature as large as the plane) takes at most :data:`QUICK_DECODE_SECONDS`. Anything else (an
encoder run, a lazy plane, a slow decoder) runs on a worker thread.
Each request carries a number; a result that a newer request superseded is dropped, and so is a result for an
image layer that was removed or replaced meanwhile, or one from a model that is no longer loaded. The preview is
drawn in a Labels layer of its own, in one colour that committed labels do not get: over the whole plane for
in-memory planes of up to 2048² pixels (redrawn in place, the quickest), else over only the predicted objects'
window, placed on the image's plane with an affine transform (a click on a 20k² image previews a tile, not a 20k²
array).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from napari.layers import Labels
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info

from ..bridge.layer_prompts import DrawnPrompts, group_objects, read_prompts
from ..bridge.slicing import current_index, full_resolution, plane_shape, plane_view
from ..bridge.transforms import window_to_world
from ..core.decoding import ObjectPrompt
from ..core.errors import EncoderNeeded
from ..core.objects import MaskObject
from ..core.workflows import predict_objects
from .prompt_layers import add_preview_layer, selection_kept

#: Seconds a model's decodes may take (see ``Predictor.decode_seconds``) to be run on the UI thread, sparing the
#: worker's round trip (60–100 ms on 2 CPU cores while the canvas repaints the new point): three frames at 60 Hz.
QUICK_DECODE_SECONDS = 0.05
#: Bytes of pixels hashed per second for an embedding's key (BLAKE2b; ~0.9 GB/s measured on 2 busy CPU cores).
HASH_BYTES_PER_SECOND = 0.9e9
#: In-memory planes of up to this many pixels are previewed whole (a new object's mask is drawn into the same array,
#: in place); larger or lazy ones in a layer that covers only the objects' window.
WHOLE_PLANE_PIXELS = 2048 * 2048


@dataclass(frozen=True)
class RefineTarget:
    """An existing object being refined: its id, the plane it is refined on, and its mask there (cropped to its
    box)."""

    object_id: int
    index: tuple[int, ...]
    mask: MaskObject

    @property
    def box(self) -> np.ndarray:
        return np.array(self.mask.box, dtype=float)


@dataclass
class Preview:
    """The masks shown for the prompts of one plane of one image layer.

    Attributes:
        image: the image layer they were predicted on; index: the plane's index along its leading axes.
        window: (row0, col0, row1, col1) of the plane that ``masks`` cover.
        masks: per object, (candidates, h, w) bool over the window, best-scoring first; scores: per object,
            (candidates,) predicted IoU, descending; logits: per object, (candidates, m, m) low-res logits.
        frames: per object, the frame its logits belong to.
        target: the object being refined, or None.
    """

    image: object
    index: tuple[int, ...]
    window: tuple[int, int, int, int]
    masks: list
    scores: list
    logits: list
    frames: list
    target: RefineTarget | None = None

    @property
    def offset(self) -> tuple[int, int]:
        return self.window[0], self.window[1]


def _in_window(results) -> tuple[tuple[int, int, int, int], list]:
    """The union window of the objects' frames, and each object's candidates placed in it."""
    window = (min(r.frame.row0 for r in results), min(r.frame.col0 for r in results),
              max(r.frame.row1 for r in results), max(r.frame.col1 for r in results))
    placed = []
    for result in results:
        if (result.frame.row0, result.frame.col0, result.frame.row1, result.frame.col1) == window:
            placed.append(result.masks)
            continue
        masks = np.zeros((len(result.masks), window[2] - window[0], window[3] - window[1]), dtype=bool)
        masks[:, result.frame.row0 - window[0]: result.frame.row1 - window[0],
              result.frame.col0 - window[1]: result.frame.col1 - window[1]] = result.masks
        placed.append(masks)
    return window, placed


class PreviewController:
    """Predicts the shown plane's prompts and draws the newest result.

    Args:
        viewer: the napari viewer.
        session: the viewer's model session (its predictor is used).
        layers: a function returning ``(image, points, shapes)`` layers (any may be None).
        start_worker: starts a napari worker and counts it as the dock's work.
        mask_prompt: a function saying whether an object being refined is prompted with its mask (besides its
            box).
    """

    def __init__(self, viewer, session, layers, start_worker, mask_prompt):
        self.viewer, self.session, self.layers, self.start_worker = viewer, session, layers, start_worker
        self.mask_prompt = mask_prompt
        self.layer = None  # the preview Labels layer
        self.preview: Preview | None = None
        self.candidate = 0  # which candidate (in score order) is shown for a single object
        self.request = 0  # increases with every prompt change
        self.shown_request = 0  # the request whose result is shown
        self.target: RefineTarget | None = None
        self._history = None  # (predictor, index, points, labels, (logits, frame)) of the last points-only result
        self.closed = False

    @property
    def settled(self) -> bool:
        """Whether the shown result answers the newest prompts."""
        return self.shown_request == self.request

    def objects(self, prompts: DrawnPrompts, target: RefineTarget | None) -> list[ObjectPrompt]:
        """The objects to predict: the refined object with every point as its correction, or the prompts' own
        objects."""
        if target is None:
            return group_objects(prompts)
        mask = target.mask if self.mask_prompt() else None
        return [ObjectPrompt(prompts.points, prompts.labels, target.box, mask)]

    def update(self, event=None) -> None:
        """Re-predict the shown plane's prompts on a worker; no prompts clear the preview."""
        image, points, shapes, brush = self.layers()
        predictor = self.session.predictor
        if self.closed or image is None or predictor is None:
            return
        index = current_index(image, self.viewer.dims.point)
        try:
            prompts = read_prompts(image, index, plane_shape(image), points, shapes, self.viewer.dims.point, brush)
        except ValueError as error:
            show_error(f"Could not read the prompts: {error}")
            return
        self.request += 1
        request = self.request
        target = self.target if self.target is not None and self.target.index == index else None
        if prompts.empty and target is None:
            self.draw(None, request)
            return
        if getattr(predictor, "concept", None) is not None:
            show_info("This SAM3 checkpoint finds every instance of a text or of exemplar boxes: use the Segment "
                      "concept (SAM3) dock. Points and boxes need a SAM, SAM-HQ, SAM2.1 or SAM3 tracker checkpoint.")
            self.draw(None, request)
            return
        objects = self.objects(prompts, target)
        mask_input = self._reusable_logits(predictor, index, prompts) if target is None else None
        limits, rgb = tuple(image.contrast_limits), image.rgb
        plane = plane_view(image, index)

        def predict():
            if request != self.request:
                return None  # superseded before it started
            with predictor.locked():  # no other worker may switch the image between these calls
                predictor.set_image(plane, contrast_limits=limits, rgb=rgb)
                return predictor, predict_objects(predictor, objects, mask_input)

        def predicted(result) -> None:
            if result is None or self.closed or request != self.request:
                return  # superseded by a newer prompt change
            used, results = result
            if used is not self.session.predictor or image not in self.viewer.layers or image is not self.layers()[0]:
                return  # the model or the image changed meanwhile
            self.candidate = 0
            self._history = None
            if target is None and len(prompts.boxes) == 0 and len(results) == 1:
                best = results[0]
                self._history = (used, index, prompts.points.copy(), prompts.labels.copy(),
                                 (best.logits[0], best.frame))
            window, masks = _in_window(results)
            self.draw(Preview(image, index, window, masks, [r.scores for r in results], [r.logits for r in results],
                              [r.frame for r in results], target), request)

        def failed(error: Exception) -> None:
            if self.closed:
                return
            show_error(f"Prediction failed: {error}")
            if request == self.request:
                self.draw(None, request)  # a failed prompt shows no mask

        if self._quick(predictor, plane):
            try:
                with predictor.from_memory():
                    result = predict()
            except EncoderNeeded:
                pass  # an embedding is missing or another worker has the model: the worker waits for it
            except Exception as error:  # noqa: BLE001 (shown to the user, as from the worker)
                failed(error)
                return
            else:
                predicted(result)
                return
        self.start_worker(create_worker(predict, _start_thread=False,
                                        _connect={"returned": predicted, "errored": failed}))

    @staticmethod
    def _quick(predictor, plane) -> bool:
        """Whether a prompt on ``plane`` may be decoded on the UI thread: an in-memory plane, whose content signature
        and decode (masks as large as the plane, at most) take at most :data:`QUICK_DECODE_SECONDS`."""
        if not isinstance(plane, np.ndarray):
            return False
        decode = predictor.decode_seconds(plane.shape[0] * plane.shape[1])
        return decode is not None and decode + plane.nbytes / HASH_BYTES_PER_SECOND <= QUICK_DECODE_SECONDS

    def _reusable_logits(self, predictor, index, prompts: DrawnPrompts):
        """The last (logits, frame), when the new prompt only adds points to the same points-only object of the
        same model."""
        if self._history is None or len(prompts.boxes):
            return None
        model, old_index, old_points, old_labels, logits = self._history
        n = len(old_points)
        if model is not predictor or old_index != index or len(prompts.points) <= n:
            return None
        same = np.allclose(prompts.points[:n], old_points) and np.array_equal(prompts.labels[:n], old_labels)
        return logits if same else None

    def forget_logits(self) -> None:
        """Reuse no earlier logits as the next mask input (a new model, or the prompts were cleared)."""
        self._history = None

    def shown_masks(self) -> np.ndarray:
        """(objects, h, w) bool: the masks the preview shows now, over ``preview.window``."""
        if self.preview is None or not self.preview.masks:
            return np.zeros((0, 0, 0), dtype=bool)
        masks = self.preview.masks
        chosen = [m[self.candidate % len(m)] if len(masks) == 1 else m[0] for m in masks]
        return np.stack(chosen)

    def next_candidate(self) -> None:
        """Show the next of the candidate masks (for a single object)."""
        if self.preview is not None and len(self.preview.masks) == 1:
            self.candidate += 1
            self.draw(self.preview, self.shown_request)

    def draw(self, preview: Preview | None, request: int) -> None:
        """Show ``preview`` (None: nothing) as the answer to ``request``."""
        self.preview, self.shown_request = preview, request
        if preview is None:
            if self.layer is not None and self.layer in self.viewer.layers:
                self._redraw(np.zeros_like(self.layer.data), self.layer.affine.affine_matrix)
            return
        row0, col0, row1, col1 = preview.window
        height, width = plane_shape(preview.image)
        if height * width <= WHOLE_PLANE_PIXELS and isinstance(full_resolution(preview.image), np.ndarray):
            # an in-memory plane is previewed whole: the next object's window is drawn in place
            plane, (row0, col0) = np.zeros((height, width), dtype=np.uint8), (0, 0)
            canvas = plane[preview.window[0]: row1, preview.window[1]: col1]
        else:
            plane = canvas = np.zeros((row1 - row0, col1 - col0), dtype=np.uint8)
        for value, mask in enumerate(self.shown_masks(), start=1):
            canvas[mask] = min(value, 255)
        data = plane.reshape((1,) * len(preview.index) + plane.shape)
        affine = window_to_world(preview.image, preview.index, (row0, col0))  # the window onto the image's plane
        if self.layer is None or self.layer not in self.viewer.layers:
            with selection_kept(self.viewer):
                self.layer = add_preview_layer(self.viewer, data, affine)
        else:
            self._redraw(data, affine)
        self._above_labels()

    def _redraw(self, data: np.ndarray, affine: np.ndarray) -> None:
        """Show ``data`` placed by ``affine`` in the preview layer: in place (a few milliseconds) when the window is
        the same; the layer holds its own array, never the user's."""
        layer = self.layer
        if layer.data.shape == data.shape and np.array_equal(layer.affine.affine_matrix, affine):
            layer.data[...] = data
            layer.refresh()
        else:
            layer.data = data
            layer.affine = affine

    def _above_labels(self) -> None:
        """Keep the preview above every Labels layer (a refined object's new outline shows over its old one) and,
        where it can be, below the prompt layers (the clicks stay in sight)."""
        layers = self.viewer.layers
        mine = layers.index(self.layer)
        prompt_layers = [layer for layer in self.layers()[1:] if layer is not None and layer in layers]
        labels_top = max((i for i, layer in enumerate(layers) if isinstance(layer, Labels) and layer is not self.layer
                          and layer not in prompt_layers), default=-1)  # a brush layer is a prompt layer
        prompts = [layers.index(layer) for layer in prompt_layers]
        lowest_prompt = min((i for i in prompts if i > labels_top), default=len(layers))
        if not labels_top < mine < lowest_prompt:
            layers.move(mine, lowest_prompt if lowest_prompt < len(layers) else labels_top + 1)

    def drop_layer(self) -> None:
        """Remove the preview layer (its image went away) and forget what it showed."""
        self.preview, self.target, self._history = None, None, None
        self.shown_request = self.request
        if self.layer is not None and self.layer in self.viewer.layers:
            self.viewer.layers.remove(self.layer)
        self.layer = None
