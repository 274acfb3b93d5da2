"""The demo and napari-sam's sample data: synthetic fluorescence-microscopy cells with exact ground truth.

:func:`synthetic_cells` draws cells as irregular ellipses (2D) or ellipsoids (3D) of varied size, brightness and
texture, some touching, over an uneven background with shot and read noise, as 16-bit counts by default. Its images
are fixed by their seeds: the bundled tiny-cells was trained on them (its model card's recipe) and the tests' figures
are measured on them. The scenes of many looks that training and the held-out figures use
(:mod:`napari_sam.testing.synthetic_microscopy`) share its noise fields.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

#: The model the demo loads: bundled, so the demo needs no network.
DEMO_MODEL = "tiny-cells"

#: Typical cell radius range, in pixels, at the default scale.
CELL_RADIUS = (12.0, 28.0)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], cell: float) -> np.ndarray:
    """Zero-mean noise of unit std, smooth over about ``cell`` pixels (bicubic upsampling of a coarse grid)."""
    coarse = [max(2, math.ceil(n / cell) + 3) for n in shape[-2:]]
    grid = torch.from_numpy(rng.standard_normal((1, 1, *coarse)).astype(np.float32))
    big = [int(c * cell) for c in coarse]
    field = F.interpolate(grid, size=big, mode="bicubic", align_corners=False)[0, 0].numpy()
    offset = [int(rng.integers(0, b - n + 1)) for b, n in zip(big, shape[-2:])]
    field = field[offset[0]: offset[0] + shape[-2], offset[1]: offset[1] + shape[-1]]
    return (field - field.mean()) / (field.std() + 1e-6)


def _cell_radius_field(rng, radius: float, angle_count: int = 3):
    """A random irregular outline: radius as a function of angle (a few low harmonics)."""
    harmonics = rng.uniform(-0.08, 0.08, (angle_count, 2))
    phases = rng.uniform(0, 2 * np.pi, angle_count)

    def outline(theta):
        wobble = sum(h[0] * np.cos((k + 2) * theta + p) + h[1] * np.sin((k + 2) * theta)
                     for k, (h, p) in enumerate(zip(harmonics, phases)))
        return radius * (1.0 + wobble)

    return outline


def _window(cell, plane) -> tuple[slice, slice]:
    """The rows and columns that can hold ``cell``."""
    reach = 1.3 * cell["radius"] + 1
    bounds = []
    for centre, size in zip(cell["centre"], plane):
        start = min(size, max(0, int(centre - reach)))
        bounds.append(slice(start, max(start, min(size, int(centre + reach) + 1))))
    return tuple(bounds)


def _cell_mask(cell, plane, scale: float = 1.0) -> tuple[tuple[slice, slice], np.ndarray]:
    """``(window, inside)``: the pixels of ``plane`` inside ``cell`` (its outline shrunk by ``scale``, for
    ellipsoid cross-sections), as a window and a boolean mask over it."""
    window = _window(cell, plane)
    rows, cols = np.mgrid[window]
    dr, dc = rows - cell["centre"][0], cols - cell["centre"][1]
    cos, sin = math.cos(cell["angle"]), math.sin(cell["angle"])
    u = dr * cos + dc * sin
    v = (-dr * sin + dc * cos) / cell["elongation"]
    return window, np.hypot(u, v) <= cell["outline"](np.arctan2(v, u)) * scale


def _place_cells(rng, plane, n_cells, radius_range):
    """Cell geometry: a list of dicts with centre, radius, elongation, angle, outline, brightness, texture.

    About a third of the cells are placed against an earlier one, so that some cells touch; none overlaps
    another by more than 5% of its area.
    """
    cells, occupied = [], np.zeros(plane, dtype=bool)
    attempts = 0
    while len(cells) < n_cells and attempts < 40 * n_cells:
        attempts += 1
        radius = rng.uniform(*radius_range)
        if cells and rng.random() < 0.35:
            neighbour = cells[int(rng.integers(len(cells)))]
            direction = rng.uniform(0, 2 * np.pi)
            distance = 0.95 * (neighbour["radius"] + radius)
            centre = (neighbour["centre"][0] + distance * math.sin(direction),
                      neighbour["centre"][1] + distance * math.cos(direction))
        else:
            centre = (rng.uniform(0, plane[0]), rng.uniform(0, plane[1]))
        cell = {"centre": centre, "radius": radius, "elongation": rng.uniform(0.65, 1.0),
                "angle": rng.uniform(0, np.pi), "outline": _cell_radius_field(rng, radius),
                "brightness": rng.uniform(0.35, 1.0), "texture": rng.uniform(0.05, 0.25)}
        window, inside = _cell_mask(cell, plane)
        area = inside.sum()
        if area < 0.5 * np.pi * radius_range[0] ** 2:
            continue  # mostly outside the image
        if (inside & occupied[window]).sum() > 0.05 * area:
            continue  # may touch its neighbours, not overlap them
        occupied[window] |= inside
        cells.append(cell)
    return cells


def _render(rng, labels: np.ndarray, cells, dtype) -> np.ndarray:
    """Fluorescence image of ``labels`` (…, H, W): background, textured cells, blur, shot and read noise."""
    shape = labels.shape
    plane = shape[-2:]
    background = 0.12 + 0.06 * smooth_noise(rng, plane, max(plane) / 2) + 0.05 * np.linspace(0, 1, plane[1])[None]
    texture = smooth_noise(rng, plane, 4.0)
    brightness = np.array([0.0] + [c["brightness"] for c in cells], dtype=np.float32)
    roughness = np.array([0.0] + [c["texture"] for c in cells], dtype=np.float32)
    signal = background + brightness[labels] * (1.0 + roughness[labels] * texture)
    blurred = F.avg_pool2d(torch.from_numpy(signal.reshape(-1, 1, *plane)), 3, stride=1, padding=1,
                           count_include_pad=False).numpy().reshape(shape)
    counts = 4000.0 * np.clip(blurred, 0, None)
    noisy = rng.poisson(counts).astype(np.float32) + rng.normal(300.0, 40.0, shape).astype(np.float32)
    if np.issubdtype(np.dtype(dtype), np.integer):
        info = np.iinfo(dtype)
        scale = 1.0 if info.max >= 65535 else info.max / (noisy.max() + 1e-6)
        return np.clip(noisy * scale, 0, info.max).astype(dtype)
    return (noisy / 4000.0).astype(dtype)


def synthetic_cells(shape=(256, 256), n_cells: int | None = None, seed: int = 0, dtype=np.uint16, ndim: int = 2,
                    radius_range: tuple[float, float] = CELL_RADIUS, layers: int = 0):
    """Synthetic fluorescence cells and their instance labels.

    Args:
        shape: (H, W) for ``ndim=2``; (Z, H, W) for ``ndim=3`` (a 2-long shape gets 32 slices).
        n_cells: how many cells; None scales with the image area (about one per 3000 pixels of a plane).
        seed: random seed; the same arguments give the same images.
        dtype: image dtype. uint16 holds photon-like counts (background ~800, cells up to ~5000); other
            integer dtypes are scaled to their range; float dtypes hold counts / 4000.
        ndim: 2 for a plane of irregular ellipses, 3 for a z-stack of ellipsoids whose cross-sections change
            from slice to slice.
        radius_range: range of cell radii in pixels.
        layers: ``ndim=3`` only. 0: each cell spans 30–60% of the slices around a random centre, and cells never
            overlap in (row, col). n ≥ 1: densely packed, as nuclei in tissue: the stack is n bands of slices, each
            with its own ``n_cells`` cells placed over the whole plane; a cell spans its band (and a slice or two of
            the next), so where it ends, the cells of the next band that overlap it in (row, col) begin.

    Returns:
        ``(image, labels)``: the image of ``dtype`` and uint16 labels of the same shape, 0 = background and
        1..n one id per cell.
    """
    if ndim not in (2, 3):
        raise ValueError(f"ndim must be 2 or 3, got {ndim}.")
    shape = tuple(int(s) for s in shape)
    if ndim == 3 and len(shape) == 2:
        shape = (32, *shape)
    if len(shape) != ndim or min(shape) < 1:
        raise ValueError(f"shape {shape} does not fit ndim={ndim}.")
    rng = np.random.default_rng(seed)
    plane = shape[-2:]
    if n_cells is None:
        n_cells = max(1, round(plane[0] * plane[1] / 3000))
    if ndim == 3 and layers > 0:
        band, cells = shape[0] / layers, []
        for layer in range(layers):
            placed = _place_cells(rng, plane, n_cells, radius_range)
            for cell in placed:
                cell["z"] = (layer + 0.5 + rng.uniform(-0.1, 0.1)) * band
                cell["half"] = rng.uniform(0.5, 0.65) * band
            cells += placed
    else:
        cells = _place_cells(rng, plane, n_cells, radius_range)
    labels = np.zeros(shape, dtype=np.uint16)
    for index, cell in enumerate(cells, start=1):
        if ndim == 2:
            window, inside = _cell_mask(cell, plane)
            target = labels[window]
            target[inside & (target == 0)] = index
            continue
        depth = shape[0]
        if "z" in cell:
            centre_z, half_height = cell["z"], cell["half"]
        else:
            centre_z = rng.uniform(0.2 * depth, 0.8 * depth)
            half_height = rng.uniform(0.15, 0.3) * depth
        for z in range(depth):
            along = (z - centre_z) / half_height
            if abs(along) < 1:
                window, inside = _cell_mask(cell, plane, scale=math.sqrt(1 - along**2))
                target = labels[z][window]
                target[inside & (target == 0)] = index
    return _render(rng, labels, cells, dtype), labels


def synthetic_cells_sample():
    """napari sample data: a 2D synthetic-cells image (16-bit)."""
    image, _ = synthetic_cells((384, 512), seed=2024)
    return [(image, {"name": "synthetic cells"}, "image")]


def synthetic_stack_sample():
    """napari sample data: a 3D synthetic-cells z-stack (16-bit)."""
    image, _ = synthetic_cells((32, 256, 256), seed=2025, ndim=3)
    return [(image, {"name": "synthetic cells 3D"}, "image")]


def open_demo(viewer, model: str = DEMO_MODEL):
    """Put the demo into ``viewer``: the synthetic-cells sample and the docked widget, loading ``model``.

    Returns the widget."""
    viewer.open_sample("napari-sam", "synthetic-cells")
    _, widget = viewer.window.add_plugin_dock_widget("napari-sam", "Segment Anything")
    widget.model_picker.native.setCurrentText(model)
    widget.load_model()
    return widget


def run_demo(model: str = DEMO_MODEL) -> None:
    """Open napari on the synthetic-cells sample with the Segment Anything dock, loading ``model``, and run it."""
    import napari

    open_demo(napari.Viewer(title="napari-sam demo"), model)
    napari.run()
