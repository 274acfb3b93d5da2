"""Linking the objects of consecutive planes into 3D objects: one nucleus is one id through a z-stack, however many
planes it spans.

Objects found plane by plane (segment everything on each plane) are matched between each plane and the next by
overlap: one partner each, chosen to maximise the total IoU (an optimal assignment), among the pairs whose shared
pixels are at least ``min_overlap`` of the smaller object (an object's tip, a few pixels on the last plane it
reaches, lies inside its next section but overlaps it little by IoU). A matched object takes its partner's id; an
unmatched one starts a new 3D object. An object that a plane misses is bridged over up to ``gap`` planes: an object
left unmatched is matched against the objects last seen up to ``gap`` planes back.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.optimize import linear_sum_assignment


def overlaps(previous: np.ndarray, current: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The object pairs of two labels planes that share pixels: ``(previous ids, current ids, IoUs, shared pixels
    over the smaller object's area)``."""
    both = (previous > 0) & (current > 0)
    if not both.any():
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0), np.zeros(0)
    pairs, shared = np.unique(np.stack([previous[both], current[both]]).astype(np.int64), axis=1,
                              return_counts=True)
    ids_a, areas_a = np.unique(previous[previous > 0], return_counts=True)
    ids_b, areas_b = np.unique(current[current > 0], return_counts=True)
    area_a = areas_a[np.searchsorted(ids_a, pairs[0])]
    area_b = areas_b[np.searchsorted(ids_b, pairs[1])]
    return pairs[0], pairs[1], shared / (area_a + area_b - shared), shared / np.minimum(area_a, area_b)


def matched(previous: np.ndarray, current: np.ndarray, min_overlap: float) -> dict[int, int]:
    """{current id: previous id}: each object of ``current`` matched with at most one of ``previous`` (and the other
    way round), maximising the total IoU over the pairs sharing at least ``min_overlap`` of the smaller object."""
    before, after, ious, overlap = overlaps(previous, current)
    keep = overlap >= min_overlap
    before, after, ious = before[keep], after[keep], ious[keep]
    if not len(ious):
        return {}
    rows, row_of = np.unique(before, return_inverse=True)
    cols, col_of = np.unique(after, return_inverse=True)
    cost = np.ones((len(rows), len(cols)))  # 1: not a pair
    cost[row_of, col_of] = -ious
    chosen_rows, chosen_cols = linear_sum_assignment(cost)
    return {int(cols[c]): int(rows[r]) for r, c in zip(chosen_rows, chosen_cols) if cost[r, c] < 1}


def link_planes(labels, min_overlap: float = 0.5, gap: int = 1, first_id: int = 1,
                progress: Callable[[int, int], None] | None = None) -> dict[int, int]:
    """Relabel ``labels`` ((n_planes, H, W) integer array-like, written in place one plane at a time, e.g. numpy or
    zarr) so that an object has one id through the planes.

    Each plane's ids must be its own (no id on two planes), as segment everything gives them plane by plane.

    Args:
        labels: the planes, relabelled in place.
        min_overlap: the least share of the smaller object that an object and its partner on a plane before
            have in common.
        gap: how many planes an object may be missing from and still be linked (0: none).
        first_id: the first new id; new ids count from it in order of first appearance.
        progress: ``progress(done, total)`` after each plane.

    Returns {old id: new id} of every object.

    Raises:
        ValueError: labels that are not a stack of planes, a ``min_overlap`` outside (0, 1], a negative ``gap``, or an
            id found on two planes.
    """
    if len(getattr(labels, "shape", ())) < 3:
        raise ValueError(f"labels must be a stack of planes (n_planes, H, W), got shape {np.shape(labels)}.")
    if not 0 < min_overlap <= 1:
        raise ValueError(f"min_overlap must be in (0, 1], got {min_overlap!r}.")
    if gap < 0:
        raise ValueError(f"gap must be 0 or more planes, got {gap!r}.")
    mapping: dict[int, int] = {}
    recent: list[np.ndarray] = []  # the relabelled planes of up to gap + 1 planes back, nearest last
    next_id = first_id
    total = labels.shape[0]
    for index in range(total):
        plane = np.asarray(labels[index])
        ids = [int(i) for i in np.unique(plane) if i > 0]
        repeated = [i for i in ids if i in mapping]
        if repeated:
            raise ValueError(f"Object ids {repeated[:5]} lie on plane {index} and on an earlier plane: each plane's "
                             "objects must have ids of their own before they are linked.")
        links: dict[int, int] = {}
        nearer: set[int] = set()  # objects on a nearer plane: only those missing since are bridged to
        for back in reversed(recent):  # the nearest plane first, then further back for those still unmatched
            taken = list(nearer | set(links.values()))  # one partner per earlier object
            seen = np.where(np.isin(back, taken), 0, back)
            left = np.where(np.isin(plane, list(links)), 0, plane)
            links.update(matched(seen, left, min_overlap))
            nearer |= {int(i) for i in np.unique(back) if i > 0}
        for object_id in ids:
            if object_id in links:
                mapping[object_id] = links[object_id]
            else:
                mapping[object_id], next_id = next_id, next_id + 1
        table = np.zeros(max(ids, default=0) + 1, dtype=np.uint32)
        for object_id in ids:
            table[object_id] = mapping[object_id]
        relabelled = table[plane]
        labels[index] = relabelled.astype(plane.dtype, copy=False)
        recent = (recent + [relabelled])[-(gap + 1):]
        if progress is not None:
            progress(index + 1, total)
    return mapping


class _Planes:
    """The planes of ``array`` along its axis ``len(prefix)``, the axes before it fixed at ``prefix``: read and
    written one plane at a time (numpy, zarr)."""

    def __init__(self, array, prefix: tuple[int, ...]):
        self.array, self.prefix = array, prefix
        self.shape = tuple(array.shape[len(prefix):])

    def __getitem__(self, index: int):
        return self.array[self.prefix + (index,)]

    def __setitem__(self, index: int, value) -> None:
        self.array[self.prefix + (index,)] = value


def link_stacks(labels, min_overlap: float = 0.5, gap: int = 1,
                progress: Callable[[int, int], None] | None = None) -> list[dict[int, int]]:
    """:func:`link_planes` along the last leading axis of ``labels`` (..., n_planes, H, W) (z of (t, z, y, x)), for
    each index of the axes before it (each time point a stack of its own), new ids never shared between stacks.
    Returns each stack's {old id: new id}."""
    if len(getattr(labels, "shape", ())) < 3:
        raise ValueError(f"labels must be a stack of planes (..., n_planes, H, W), got shape {np.shape(labels)}.")
    prefixes = list(np.ndindex(*labels.shape[:-3]))
    total = len(prefixes) * labels.shape[-3]
    mappings: list[dict[int, int]] = []
    next_id = 1
    for number, prefix in enumerate(prefixes):
        def report(done: int, _: int, offset: int = number * labels.shape[-3]) -> None:
            if progress is not None:
                progress(offset + done, total)

        mapping = link_planes(_Planes(labels, tuple(int(i) for i in prefix)), min_overlap, gap, next_id, report)
        next_id = max(mapping.values(), default=next_id - 1) + 1
        mappings.append(mapping)
    return mappings
