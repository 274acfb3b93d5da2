"""Reading prompts from napari Points and Shapes layers, in the image's data pixels of the shown plane.

Points carry a boolean ``positive`` feature (missing means positive). Rectangles are boxes; polygons and
ellipses (a freehand lasso is a polygon) are a mask prompt plus their bounding box. Paths and lines are scribbles:
points spread along them (:func:`scribble_points`), positive or negative as the shape's ``positive`` feature says
(missing means positive), which join the clicks. Strokes painted with a Labels brush are scribbles too
(:func:`read_brush_scribbles`): label 1 marks the object, label 2 the background. Prompts that lie on another slice
of an nD image than the shown plane are ignored.

The prompts of a plane are then grouped into objects (:func:`group_objects`): each box (rectangle, or a
polygon/ellipse with its mask) is one object. With one box, every point refines it; with several, a point refines
the first box that contains it. Points outside every box form one more object.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..core.decoding import ObjectPrompt
from ..core.objects import MaskObject
from .labels_grid import labels_on_plane
from .transforms import to_target_data

#: How far (in data pixels of a non-displayed axis) a prompt may lie from the shown plane.
SLICE_TOLERANCE = 0.5


@dataclass
class DrawnPrompts:
    """Prompts for one 2D plane, in (row, col) data pixels of the image.

    Attributes:
        points: (n, 2) float, positions; labels: (n,) int, 1 positive, 0 negative.
        boxes: (m, 4) float (row_min, col_min, row_max, col_max), one object each.
        masks: one entry per box: the shape's mask cropped to its box (a ``MaskObject``) for polygons and ellipses,
            None for rectangles.
    """

    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    masks: list = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return len(self.points) == 0 and len(self.boxes) == 0


def _on_plane(positions: np.ndarray, plane_index: tuple[int, ...]) -> np.ndarray:
    """Which (n, D) image-data positions lie on the plane at ``plane_index`` of the leading axes."""
    if not plane_index:
        return np.ones(len(positions), dtype=bool)
    leading = positions[:, : len(plane_index)]
    return (np.abs(leading - np.asarray(plane_index)) <= SLICE_TOLERANCE).all(axis=1)


def positive_flags(points_layer) -> np.ndarray:
    """(n,) bool: the ``positive`` feature of each point (True where the layer has no such feature)."""
    features = points_layer.features
    if "positive" not in features:
        return np.ones(len(points_layer.data), dtype=bool)
    return np.asarray(features["positive"], dtype=bool)


def read_points(points_layer, image_layer, plane_index, world_point=None) -> tuple[np.ndarray, np.ndarray]:
    """(points (n, 2) (row, col), labels (n,)) of the points on the shown plane, in image data pixels."""
    if points_layer is None or len(points_layer.data) == 0:
        return np.zeros((0, 2)), np.zeros(0, dtype=np.int64)
    positions = to_target_data(points_layer, image_layer, points_layer.data, world_point)
    keep = _on_plane(positions, plane_index)
    labels = positive_flags(points_layer).astype(np.int64)
    return positions[keep][:, -2:], labels[keep]


def _region(corners: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray] | None:
    """(low, high) pixel bounds (end-exclusive) of the (k, 2) corners' box within an image of ``shape``."""
    low = np.clip(np.floor(corners.min(axis=0)).astype(int), 0, None)
    high = np.minimum(np.ceil(corners.max(axis=0)).astype(int) + 1, shape)
    return None if (high <= low).any() else (low, high)


def _cropped(low, high, inside: np.ndarray | None) -> MaskObject:
    if inside is None:  # nothing of the shape inside the image: one empty pixel
        return MaskObject(slice(0, 1), slice(0, 1), np.zeros((1, 1), dtype=bool))
    return MaskObject(slice(int(low[0]), int(high[0])), slice(int(low[1]), int(high[1])), inside)


def _polygon_mask(vertices: np.ndarray, shape: tuple[int, int]) -> MaskObject:
    """The pixel centres inside the polygon of (k, 2) (row, col) vertices (even-odd rule), cropped to its box
    within an image of ``shape``."""
    region = _region(vertices, shape)
    if region is None:
        return _cropped(None, None, None)
    low, high = region
    rows, cols = np.mgrid[low[0]: high[0], low[1]: high[1]]
    inside = np.zeros(rows.shape, dtype=bool)
    start = vertices
    end = np.roll(vertices, -1, axis=0)
    for (r0, c0), (r1, c1) in zip(start, end):
        crosses = (r0 > rows) != (r1 > rows)
        with np.errstate(divide="ignore", invalid="ignore"):
            at = c0 + (rows - r0) * (c1 - c0) / (r1 - r0)
        inside ^= crosses & (cols < at)
    return _cropped(low, high, inside)


def _ellipse_mask(corners: np.ndarray, shape: tuple[int, int]) -> MaskObject:
    """The pixel centres inside the ellipse inscribed in the parallelogram of 4 (row, col) corners, cropped to its
    box within an image of ``shape``."""
    centre = corners.mean(axis=0)
    axes = np.stack([(corners[1] - corners[0]) / 2, (corners[3] - corners[0]) / 2], axis=1)  # columns u, v
    region = _region(corners, shape)
    if abs(np.linalg.det(axes)) < 1e-9 or region is None:
        return _cropped(None, None, None)
    low, high = region
    rows, cols = np.mgrid[low[0]: high[0], low[1]: high[1]]
    offsets = np.stack([rows - centre[0], cols - centre[1]], axis=-1)
    local = offsets @ np.linalg.inv(axes).T
    return _cropped(low, high, (local**2).sum(axis=-1) <= 1.0)


#: Shape types that are regions (a box, and a mask prompt for polygons and ellipses) and scribbles (points).
REGION_SHAPES, SCRIBBLE_SHAPES = ("rectangle", "polygon", "ellipse"), ("path", "line")
#: Points spread along a scribble: one per this many pixels of its length, at least 1 and at most
#: :data:`SCRIBBLE_POINTS`.
SCRIBBLE_SPACING, SCRIBBLE_POINTS = 12.0, 6


def _plane_shapes(shapes_layer, image_layer, plane_index, world_point=None, kinds=REGION_SHAPES):
    """(shape index, type, (n, 2) (row, col) vertices in image data pixels) of each shape of ``kinds`` on the shown
    plane (a region still being drawn, with no area, is left out)."""
    for number, (vertices, kind) in enumerate(zip(shapes_layer.data, shapes_layer.shape_type)):
        if kind not in kinds:
            continue
        positions = to_target_data(shapes_layer, image_layer, vertices, world_point)
        if not _on_plane(positions, plane_index).all():
            continue
        corners = positions[:, -2:]
        if kind in REGION_SHAPES and (corners.max(axis=0) <= corners.min(axis=0)).any():
            continue
        yield number, kind, corners


def scribble_points(vertices: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(k, 2) (row, col) points spread evenly along the polyline of (n, 2) ``vertices``: one per
    :data:`SCRIBBLE_SPACING` pixels of its length inside an image of ``shape`` (1 to :data:`SCRIBBLE_POINTS`), each
    in the middle of its share of the line, so none sits on the stroke's ends.

    Raises:
        ValueError: a scribble with no length, or none of it inside the image.
    """
    vertices = np.asarray(vertices, dtype=np.float64).reshape(-1, 2)
    height, width = shape
    lengths = np.hypot(*np.diff(vertices, axis=0).T) if len(vertices) > 1 else np.zeros(0)
    if not lengths.sum() > 0:
        raise ValueError("a scribble has no length (a click in a path mode): drag to draw it, or use a point.")
    dense = np.concatenate([np.linspace(a, b, max(2, int(np.ceil(n)) + 1))[:-1]
                            for a, b, n in zip(vertices[:-1], vertices[1:], lengths)] + [vertices[-1:]])
    inside = dense[(dense[:, 0] >= -0.5) & (dense[:, 0] <= height - 0.5) & (dense[:, 1] >= -0.5)
                   & (dense[:, 1] <= width - 0.5)]
    if len(inside) < 2:
        raise ValueError(f"a scribble lies outside the {height}x{width} image: draw it over the object.")
    steps = np.hypot(*np.diff(inside, axis=0).T)
    along = np.concatenate([[0.0], np.cumsum(steps)])
    count = int(np.clip(round(along[-1] / SCRIBBLE_SPACING), 1, SCRIBBLE_POINTS))
    wanted = (np.arange(count) + 0.5) / count * along[-1]
    return np.stack([np.interp(wanted, along, inside[:, 0]), np.interp(wanted, along, inside[:, 1])], axis=1)


#: The labels a brush scribble is painted with: the object, and the background.
BRUSH_POSITIVE, BRUSH_NEGATIVE = 1, 2


def stroke_points(stroke: np.ndarray) -> np.ndarray:
    """(k, 2) (row, col) points spread along one painted brush stroke ((H, W) bool, one connected piece): one per
    :data:`SCRIBBLE_SPACING` pixels of its length (its area over its width; 1 to :data:`SCRIBBLE_POINTS`), each in
    the middle of its share of the stroke's centre line, as :func:`scribble_points` spreads them along a path.

    The centre line is the stroke's pixels at least half as deep as its deepest; the points are the centres of
    k-means on it (started from its farthest-apart pixels), each moved to the nearest centre-line pixel.
    """
    from scipy import ndimage

    depth = ndimage.distance_transform_edt(np.pad(stroke, 1))[1:-1, 1:-1]
    deepest = float(depth.max())
    if deepest == 0:
        raise ValueError("a brush stroke has no pixel.")
    length = np.count_nonzero(stroke) / (2.0 * deepest)
    count = int(np.clip(round(length / SCRIBBLE_SPACING), 1, SCRIBBLE_POINTS))
    ridge = np.argwhere(depth >= 0.5 * deepest).astype(np.float64)
    centres = [ridge[np.argmax(((ridge - ridge.mean(axis=0)) ** 2).sum(axis=1))]]
    for _ in range(1, min(count, len(ridge))):
        distance = np.min([((ridge - centre) ** 2).sum(axis=1) for centre in centres], axis=0)
        centres.append(ridge[np.argmax(distance)])
    spread = np.array(centres)
    for _ in range(25):
        nearest = np.argmin(((ridge[:, None] - spread[None]) ** 2).sum(axis=2), axis=1)
        moved = np.array([ridge[nearest == i].mean(axis=0) if (nearest == i).any() else spread[i]
                          for i in range(len(spread))])
        if np.allclose(moved, spread):
            break
        spread = moved
    return ridge[np.argmin(((ridge[:, None] - spread[None]) ** 2).sum(axis=2), axis=0)]


def read_brush_scribbles(brush_layer, image_layer, plane_index, plane_shape: tuple[int, int]
                         ) -> tuple[np.ndarray, np.ndarray]:
    """(points (n, 2) (row, col), labels (n,)) spread along the brush strokes of a Labels layer on the shown
    plane: each connected stroke of label :data:`BRUSH_POSITIVE` gives positive points, of :data:`BRUSH_NEGATIVE`
    negative ones (:func:`stroke_points`).

    Raises:
        ValueError: the plane holds other labels than those two.
    """
    from scipy import ndimage

    points, labels = [np.zeros((0, 2))], [np.zeros(0, dtype=np.int64)]
    if brush_layer is None:
        return points[0], labels[0]
    plane = labels_on_plane(brush_layer, image_layer, tuple(plane_index), plane_shape)
    others = sorted(int(v) for v in np.unique(plane) if v not in (0, BRUSH_POSITIVE, BRUSH_NEGATIVE))
    if others:
        raise ValueError(f"brush scribbles are painted with label {BRUSH_POSITIVE} (object) or {BRUSH_NEGATIVE} "
                         f"(background); {brush_layer.name!r} holds label(s) {others} on this plane.")
    for value, polarity in ((BRUSH_POSITIVE, 1), (BRUSH_NEGATIVE, 0)):
        pieces, _ = ndimage.label(plane == value, structure=np.ones((3, 3)))
        for number, window in enumerate(ndimage.find_objects(pieces), start=1):
            spread = stroke_points(pieces[window] == number) + [window[0].start, window[1].start]
            points.append(spread)
            labels.append(np.full(len(spread), polarity, dtype=np.int64))
    return np.concatenate(points), np.concatenate(labels)


def shape_flags(shapes_layer) -> np.ndarray:
    """(n,) bool: the ``positive`` feature of each shape (True where the layer has no such feature)."""
    features = shapes_layer.features
    flags = np.ones(len(shapes_layer.data), dtype=bool)
    if "positive" in features:
        given = features["positive"].to_numpy(dtype=bool)
        flags[: len(given)] = given[: len(flags)]
    return flags


def read_scribbles(shapes_layer, image_layer, plane_index, plane_shape: tuple[int, int],
                   world_point=None) -> tuple[np.ndarray, np.ndarray]:
    """(points (n, 2) (row, col), labels (n,)) spread along the scribbles (paths and lines) on the shown plane,
    labelled by each shape's ``positive`` feature; see :func:`scribble_points`, whose ValueError names a scribble
    that cannot be read."""
    points, labels = [np.zeros((0, 2))], [np.zeros(0, dtype=np.int64)]
    if shapes_layer is None:
        return points[0], labels[0]
    flags = shape_flags(shapes_layer)
    for number, _, vertices in _plane_shapes(shapes_layer, image_layer, plane_index, world_point, SCRIBBLE_SHAPES):
        try:
            spread = scribble_points(vertices, plane_shape)
        except ValueError as error:
            raise ValueError(f"shape {number}: {error}") from None
        points.append(spread)
        labels.append(np.full(len(spread), int(flags[number]), dtype=np.int64))
    return np.concatenate(points), np.concatenate(labels)


def read_shapes(shapes_layer, image_layer, plane_index, plane_shape: tuple[int, int],
                world_point=None) -> tuple[np.ndarray, list]:
    """(boxes (m, 4), masks) of the rectangles, polygons and ellipses on the shown plane, in image data pixels: a
    mask (cropped to its box, a :class:`~napari_sam.core.objects.MaskObject`) for each polygon and ellipse,
    None for each rectangle."""
    boxes, masks = [], []
    if shapes_layer is None:
        return np.zeros((0, 4)), masks
    for _, kind, corners in _plane_shapes(shapes_layer, image_layer, plane_index, world_point):
        (row_min, col_min), (row_max, col_max) = corners.min(axis=0), corners.max(axis=0)
        boxes.append([row_min, col_min, row_max, col_max])
        if kind == "rectangle":
            masks.append(None)
        elif kind == "ellipse":
            masks.append(_ellipse_mask(corners, plane_shape))
        else:
            masks.append(_polygon_mask(corners, plane_shape))
    return np.asarray(boxes, dtype=float).reshape(-1, 4), masks


def read_exemplars(shapes_layer, image_layer, plane_index, world_point=None) -> tuple[np.ndarray, np.ndarray]:
    """(boxes (k, 4) (row_min, col_min, row_max, col_max), labels (k,) 1/0) of the shapes on the shown plane, as
    SAM3 exemplars: a shape whose ``positive`` feature is False is a counter-example."""
    if shapes_layer is None:
        return np.zeros((0, 4)), np.zeros(0, dtype=np.int64)
    positive = shape_flags(shapes_layer)
    boxes, labels = [], []
    for number, _, corners in _plane_shapes(shapes_layer, image_layer, plane_index, world_point):
        boxes.append([*corners.min(axis=0), *corners.max(axis=0)])
        labels.append(int(positive[number]))
    return np.asarray(boxes, dtype=float).reshape(-1, 4), np.asarray(labels, dtype=np.int64)


def read_prompts(image_layer, plane_index, plane_shape, points_layer=None, shapes_layer=None,
                 world_point=None, brush_layer=None) -> DrawnPrompts:
    """All prompts of the shown plane from a Points, a Shapes and a brush (Labels) layer (any may be None): the
    clicks and the scribbles' points, the boxes and the masks of regions."""
    points, labels = read_points(points_layer, image_layer, plane_index, world_point)
    scribbled, scribble_labels = read_scribbles(shapes_layer, image_layer, plane_index, plane_shape, world_point)
    brushed, brush_labels = read_brush_scribbles(brush_layer, image_layer, plane_index, plane_shape)
    boxes, masks = read_shapes(shapes_layer, image_layer, plane_index, plane_shape, world_point)
    return DrawnPrompts(points=np.concatenate([points, scribbled, brushed]),
                        labels=np.concatenate([labels, scribble_labels, brush_labels]), boxes=boxes, masks=masks)


def group_objects(prompts: DrawnPrompts) -> list[ObjectPrompt]:
    """The objects described by a plane's prompts, boxes first, in drawing order."""
    owner = np.full(len(prompts.points), -1)
    if len(prompts.boxes) == 1:
        owner[:] = 0
    else:
        for index, (r0, c0, r1, c1) in enumerate(prompts.boxes):
            inside = (owner < 0) & (prompts.points[:, 0] >= r0) & (prompts.points[:, 0] <= r1) & (
                prompts.points[:, 1] >= c0) & (prompts.points[:, 1] <= c1)
            owner[inside] = index
    objects = [ObjectPrompt(prompts.points[owner == index], prompts.labels[owner == index], box, mask)
               for index, (box, mask) in enumerate(zip(prompts.boxes, prompts.masks))]
    loose = owner < 0
    if loose.any():
        objects.append(ObjectPrompt(prompts.points[loose], prompts.labels[loose]))
    return objects
