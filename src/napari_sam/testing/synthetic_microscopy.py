"""Synthetic microscopy scenes of many looks, with exact instance labels: the training data of tiny-cells'
successor (``scripts/train_tiny_cells_v2.py``) and the held-out data of ``napari_sam.testing.held_out``. Development
only: the demo's sample data is :func:`napari_sam.demo.synthetic_cells`.

:func:`synthetic_scene` draws one 2D image of a named *look* (:data:`LOOKS`) or of a randomly mixed one: nuclei from
~6 to ~120 px across, sparse to crowded, touching and overlapping, round to elongated and irregular, with speckle,
nucleoli or bright rims, blur and defocus, Poisson and Gaussian noise, uneven illumination, dim objects next to
bright ones, mitotic-looking compact bright objects and unlabelled debris; and, less often, other microscopy looks:
cytoplasm stains (large irregular cells with a dark nucleus) and phase-contrast-like objects with bright halos.
Images come as 8-bit, 16-bit (various ranges used) or float.

Everything is seeded: the same arguments give the same scene. Labels are uint16 (0 = background, 1..n), row-major
(row, col) like the image; where objects overlap, the one drawn later (on top) owns the pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from ..demo import smooth_noise


@dataclass(frozen=True)
class Look:
    """Ranges a scene's parameters are drawn from. Sizes are diameters in pixels of a 512-pixel field (scaled with
    the image's longest side); ``(a, b)`` pairs are drawn log-uniformly for sizes/gains, uniformly otherwise."""

    diameter: tuple[float, float] = (10.0, 30.0)  #: typical object diameter range
    size_spread: float = 0.25  #: relative spread of sizes around the scene's typical size
    coverage: tuple[float, float] = (0.05, 0.35)  #: fraction of the field covered by objects
    touching: tuple[float, float] = (0.1, 0.5)  #: chance of placing an object against an earlier one
    overlap: tuple[float, float] = (0.0, 0.05)  #: largest fraction of an object that may lie under others
    elongation: tuple[float, float] = (0.6, 1.0)  #: minor / major axis
    irregularity: tuple[float, float] = (0.02, 0.12)  #: amplitude of the outline's harmonics
    texture: tuple[str, ...] = ("smooth", "speckle", "nucleoli", "rim")
    brightness_decades: tuple[float, float] = (0.2, 0.8)  #: spread of object brightness, in decades
    mitotic: tuple[float, float] = (0.0, 0.05)  #: fraction of compact bright objects
    debris: tuple[float, float] = (0.0, 1.0)  #: unlabelled specks per 10,000 px² of the image
    blur: tuple[float, float] = (0.3, 1.5)  #: Gaussian blur sigma in field pixels
    photons: tuple[float, float] = (30.0, 3000.0)  #: photons of a mean-bright object pixel
    read_noise: tuple[float, float] = (0.0, 0.02)  #: Gaussian noise relative to a mean-bright object
    background: tuple[float, float] = (0.02, 0.3)  #: background relative to a mean-bright object
    illumination: tuple[float, float] = (0.0, 0.5)  #: strength of the uneven illumination
    kind: str = "fluorescence"  #: "fluorescence", "cytoplasm" or "phase"


#: The named looks; "random" (the training mix) draws one of them by :data:`MIX` weight, then its parameters.
LOOKS: dict[str, Look] = {
    "nuclei": Look(),
    "small": Look(diameter=(6.0, 14.0), coverage=(0.05, 0.3)),
    "large": Look(diameter=(35.0, 120.0), coverage=(0.1, 0.45), irregularity=(0.04, 0.15)),
    "crowded": Look(diameter=(10.0, 30.0), coverage=(0.35, 0.6), touching=(0.5, 0.9), overlap=(0.05, 0.25)),
    "irregular": Look(elongation=(0.35, 0.8), irregularity=(0.1, 0.22)),
    "textured": Look(texture=("speckle", "nucleoli", "rim"), diameter=(16.0, 45.0)),
    "defocus": Look(blur=(1.5, 3.5), photons=(20.0, 300.0), read_noise=(0.01, 0.05)),
    "uneven": Look(brightness_decades=(0.8, 1.2), illumination=(0.5, 1.0), background=(0.1, 0.5)),
    "mitotic": Look(mitotic=(0.1, 0.3), debris=(0.5, 2.0)),
    "cytoplasm": Look(kind="cytoplasm", mitotic=(0.0, 0.0), diameter=(40.0, 90.0), coverage=(0.2, 0.5),
                      irregularity=(0.1, 0.25), elongation=(0.4, 0.9), texture=("speckle",)),
    "phase": Look(kind="phase", diameter=(20.0, 60.0), coverage=(0.1, 0.4), blur=(0.5, 1.2),
                  background=(0.5, 0.5), debris=(0.0, 0.3)),
}
#: Weights of the looks in the training mix: mostly nuclei of every kind, some other microscopy.
MIX: dict[str, float] = {"nuclei": 3, "small": 2, "large": 1, "crowded": 2, "irregular": 1, "textured": 1,
                         "defocus": 1, "uneven": 1, "mitotic": 1, "cytoplasm": 0.6, "phase": 0.6}


def _draw(rng, pair, log=False) -> float:
    low, high = pair
    if log and low > 0:
        return float(math.exp(rng.uniform(math.log(low), math.log(high))))
    return float(rng.uniform(low, high))


def _outline(rng, amplitude: float):
    """A random closed outline: radius factor as a function of angle (harmonics 2..5)."""
    harmonics = rng.normal(0.0, amplitude, (4, 2)) / np.arange(1, 5)[:, None] ** 0.5
    orders = np.arange(2, 6)[:, None]

    def factor(theta):
        return 1.0 + (harmonics[:, :1, None] * np.cos(orders[..., None] * theta)
                      + harmonics[:, 1:, None] * np.sin(orders[..., None] * theta)).sum(0)[0]

    return factor


def _shape(obj, plane):
    """``(window, rho)``: rows/columns around ``obj`` and its normalised radius there (≤ 1 inside)."""
    reach = 1.6 * obj["radius"] + 2
    (cr, cc), (h, w) = obj["centre"], plane
    r0, r1 = max(0, int(cr - reach)), min(h, int(cr + reach) + 1)
    c0, c1 = max(0, int(cc - reach)), min(w, int(cc + reach) + 1)
    if r0 >= r1 or c0 >= c1:
        return None, None
    rows, cols = np.mgrid[r0:r1, c0:c1]
    dr, dc = rows - cr, cols - cc
    cos, sin = math.cos(obj["angle"]), math.sin(obj["angle"])
    u = dr * cos + dc * sin
    v = (-dr * sin + dc * cos) / obj["elongation"]
    radius = obj["radius"] * obj["outline"](np.arctan2(v, u))
    return (slice(r0, r1), slice(c0, c1)), np.hypot(u, v) / np.maximum(radius, 0.5)


def _place(rng, look: Look, plane, scale: float):
    """Object geometry and brightness; labels drawn in placement order (later on top)."""
    h, w = plane
    typical = _draw(rng, look.diameter, log=True) * scale / 2
    coverage, touching = _draw(rng, look.coverage), _draw(rng, look.touching)
    overlap = _draw(rng, look.overlap)
    elongation, irregularity = look.elongation, _draw(rng, look.irregularity)
    decades, mitotic = _draw(rng, look.brightness_decades), _draw(rng, look.mitotic)
    count = max(1, int(coverage * h * w / (math.pi * typical**2)))
    objects: list[dict] = []
    occupied, labels = np.zeros(plane, dtype=bool), np.zeros(plane, dtype=np.uint16)
    attempts = 0
    while len(objects) < count and attempts < 6 * count + 20:
        attempts += 1
        radius = typical * math.exp(rng.normal(0, look.size_spread))
        compact = rng.random() < mitotic
        if compact:
            radius *= rng.uniform(0.45, 0.7)
        if objects and rng.random() < touching:
            near = objects[int(rng.integers(len(objects)))]
            direction = rng.uniform(0, 2 * math.pi)
            distance = (near["radius"] + radius) * rng.uniform(0.8 if overlap > 0.02 else 0.95, 1.05)
            centre = (near["centre"][0] + distance * math.sin(direction),
                      near["centre"][1] + distance * math.cos(direction))
        else:
            centre = (rng.uniform(0, h), rng.uniform(0, w))
        obj = {"centre": centre, "radius": radius, "angle": rng.uniform(0, math.pi),
               "elongation": 0.95 if compact else rng.uniform(*elongation),
               "outline": _outline(rng, irregularity * (0.3 if compact else 1.0)),
               "brightness": (rng.uniform(2.0, 4.0) if compact else 10 ** rng.uniform(-decades, 0) * 1.3),
               "texture": "speckle" if compact else str(rng.choice(look.texture)),
               "roughness": rng.uniform(0.05, 0.35), "compact": compact}
        window, rho = _shape(obj, plane)
        if window is None:
            continue
        inside = rho <= 1
        area = int(inside.sum())
        if area < max(4, 0.4 * math.pi * radius**2 * obj["elongation"]):
            continue  # mostly outside the field
        if (inside & occupied[window]).sum() > overlap * area:
            continue
        occupied[window] |= inside
        labels[window][inside] = len(objects) + 1
        obj["window"], obj["rho"] = window, rho
        objects.append(obj)
    return objects, labels


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    if sigma < 0.2:
        return image
    radius = int(math.ceil(3 * sigma))
    kernel = torch.exp(-torch.arange(-radius, radius + 1, dtype=torch.float32) ** 2 / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))
    return x[0, 0].numpy()


def _object_signal(rng, obj, look: Look, fine: np.ndarray, scale: float) -> np.ndarray:
    """One object's intensity over its window (before blur), soft at the edge."""
    rho, window = obj["rho"], obj["window"]
    edge = max(0.6, 0.08 * obj["radius"]) if not obj["compact"] else 0.5
    body = _sigmoid((1.0 - rho) * obj["radius"] / edge)
    texture = obj["texture"]
    relief = 1.0 + obj["roughness"] * fine[window]
    if texture == "rim":
        relief = relief * (0.45 + 0.9 * np.clip(rho, 0, 1) ** 4)
    elif texture == "nucleoli":
        for _ in range(int(rng.integers(1, 4))):
            angle, depth = rng.uniform(0, 2 * math.pi), rng.uniform(0, 0.6)
            size = rng.uniform(0.12, 0.25) * obj["radius"] + 0.5
            rows = np.arange(window[0].start, window[0].stop)[:, None] - (
                obj["centre"][0] + depth * obj["radius"] * math.sin(angle))
            cols = np.arange(window[1].start, window[1].stop)[None] - (
                obj["centre"][1] + depth * obj["radius"] * math.cos(angle))
            blob = np.exp(-(rows**2 + cols**2) / (2 * size**2))
            relief = relief * (1.0 + rng.choice([-0.6, 0.8]) * blob)
    if look.kind == "cytoplasm":  # a darker nucleus inside the stained cell body
        relief = relief * (1.0 - 0.7 * _sigmoid((0.35 - rho) * obj["radius"] / 1.5))
    return obj["brightness"] * body * relief


def _look(rng, look):
    if isinstance(look, Look):
        return "custom", look
    name = str(rng.choice(list(MIX), p=np.array(list(MIX.values())) / sum(MIX.values()))) if look == "random" \
        else look
    if name not in LOOKS:
        raise ValueError(f"Unknown look {look!r}: use 'random' or one of {sorted(LOOKS)}.")
    return name, LOOKS[name]


def _objects_signal(rng, spec: Look, plane, objects, fine: np.ndarray, scale: float) -> np.ndarray:
    """The objects' light over the plane (phase look: dark bodies with bright halos)."""
    signal = np.zeros(plane, dtype=np.float32)
    for obj in objects:
        part = _object_signal(obj.get("rng", rng), obj, spec, fine, scale)
        signal[obj["window"]] += part.astype(np.float32)
    if spec.kind == "phase":  # dark-ish bodies with a bright halo just outside
        halo = np.zeros(plane, dtype=np.float32)
        for obj in objects:
            rho = obj["rho"]
            halo[obj["window"]] += np.exp(-((rho - 1.12) / 0.08) ** 2).astype(np.float32)
        signal = -0.35 * np.clip(signal, 0, 1.5) + 0.6 * np.clip(halo, 0, 1.5)
    return signal


def _debris(rng, spec: Look, plane, scale: float) -> np.ndarray:
    """Unlabelled specks."""
    signal = np.zeros(plane, dtype=np.float32)
    for _ in range(int(_draw(rng, spec.debris) * plane[0] * plane[1] / 1e4)):
        speck = {"centre": (rng.uniform(0, plane[0]), rng.uniform(0, plane[1])),
                 "radius": rng.uniform(0.8, 3.0) * scale, "angle": rng.uniform(0, math.pi),
                 "elongation": rng.uniform(0.3, 1.0), "outline": _outline(rng, 0.2)}
        window, rho = _shape(speck, plane)
        if window is not None:
            signal[window] += rng.uniform(0.3, 2.5) * np.exp(-(rho**2) * 2).astype(np.float32)
    return signal


def _optics(rng, spec: Look, plane, scale: float) -> dict:
    """The scene's light and camera: illumination field, background, blur, photons, read noise."""
    rows, cols = np.linspace(-1, 1, plane[0])[:, None], np.linspace(-1, 1, plane[1])[None]
    strength = _draw(rng, spec.illumination)
    tilt = rng.normal(0, 1, 2)
    illumination = 1.0 + strength * (0.4 * (tilt[0] * rows + tilt[1] * cols) - 0.5 * (rows**2 + cols**2)
                                     + 0.3 * smooth_noise(rng, plane, max(plane) / 3))
    return {"illumination": np.clip(illumination, 0.15, None).astype(np.float32),
            "background": _draw(rng, spec.background, log=spec.background[0] != spec.background[1]),
            "blur": _draw(rng, spec.blur) * scale, "photons": _draw(rng, spec.photons, log=True)}


def _camera(rng, signal: np.ndarray, optics: dict, spec: Look) -> np.ndarray:
    """Illumination, blur, shot and read noise applied to a plane's light (the read noise's level is drawn here
    unless ``optics`` holds it)."""
    signal = (optics["background"] + signal) * optics["illumination"]
    signal = np.clip(_blur(signal, optics["blur"]), 0, None)
    noisy = rng.poisson(signal * optics["photons"]).astype(np.float32) / optics["photons"]
    level = optics["read_noise"] if "read_noise" in optics else _draw(rng, spec.read_noise)
    return noisy + rng.normal(0, level, signal.shape).astype(np.float32)


def synthetic_scene(shape=(512, 512), look: str | Look = "random", seed: int = 0, dtype=None):
    """One synthetic microscopy image and its instance labels.

    Args:
        shape: (H, W) of the image; object sizes scale with ``max(shape) / 512``.
        look: a name of :data:`LOOKS`, ``"random"`` (one drawn by :data:`MIX` weight) or a :class:`Look`.
        seed: the same arguments give the same scene.
        dtype: numpy dtype of the image; None draws uint16 (half the scenes, with a random range of counts used),
            uint8 (a third) or float32.

    Returns:
        ``(image (H, W) of dtype, labels (H, W) uint16, look name)``.
    """
    rng = np.random.default_rng(seed)
    name, spec = _look(rng, look)
    plane = tuple(int(s) for s in shape)
    scale = max(plane) / 512
    objects, labels = _place(rng, spec, plane, scale)
    fine = smooth_noise(rng, plane, _draw(rng, (1.2, 3.0)) * scale)
    signal = _objects_signal(rng, spec, plane, objects, fine, scale)
    signal += _debris(rng, spec, plane, scale)
    noisy = _camera(rng, signal, _optics(rng, spec, plane, scale), spec)
    return _as_dtype(rng, noisy, dtype), labels, name


def synthetic_stack(shape=(24, 256, 256), look: str | Look = "nuclei", seed: int = 0, dtype=None, layers: int = 0):
    """A z-stack of ellipsoidal objects of ``look`` (their cross-sections grow and shrink from slice to slice) and
    its 3D instance labels, for held-out propagation checks.

    Each object's cross-section on a slice is its outline scaled by ``sqrt(1 - dz²)``. With ``layers`` 0 (sparse),
    each object spans 25–70% of the slices around a random centre, and objects never overlap in (row, col). With
    ``layers`` n ≥ 1 (dense, as nuclei packed in tissue), the stack is n bands of slices, each with its own objects
    placed over the whole field: an object spans its band (and a little of the next ones), so where it ends, the
    objects of the next band that overlap it in (row, col) begin. Texture, light and camera stay the same through
    the stack; the noise is new on every slice. Returns ``(image (Z, H, W) of dtype, labels (Z, H, W) uint16, look
    name)``; where two objects meet on a slice, the one drawn later owns the pixels.
    """
    rng = np.random.default_rng(seed)
    name, spec = _look(rng, look)
    depth, height, width = (int(s) for s in shape)
    plane = (height, width)
    scale = max(plane) / 512
    if layers <= 0:
        objects, _ = _place(rng, spec, plane, scale)
        for obj in objects:
            obj["z"], obj["half"] = rng.uniform(0.15, 0.85) * depth, rng.uniform(0.12, 0.35) * depth
            obj["seed"] = int(rng.integers(2**31))
    else:
        band, objects = depth / layers, []
        for layer in range(layers):
            placed, _ = _place(rng, spec, plane, scale)
            for obj in placed:
                obj["z"] = (layer + 0.5 + rng.uniform(-0.1, 0.1)) * band
                obj["half"] = rng.uniform(0.5, 0.65) * band  # neighbours in z meet or overlap by a slice or two
                obj["seed"] = int(rng.integers(2**31))
            objects += placed
    fine = smooth_noise(rng, plane, _draw(rng, (1.2, 3.0)) * scale)
    optics = _optics(rng, spec, plane, scale)
    optics["read_noise"] = _draw(rng, spec.read_noise)
    debris = _debris(rng, spec, plane, scale)
    images, labels = [], np.zeros((depth, *plane), dtype=np.uint16)
    for z in range(depth):
        visible = []
        for index, obj in enumerate(objects, start=1):
            along = (z - obj["z"]) / obj["half"]
            if abs(along) >= 1:
                continue
            section = math.sqrt(1 - along**2)
            rho = obj["rho"] / section
            inside = rho <= 1
            if inside.sum() < 2:
                continue
            labels[z][obj["window"]][inside] = index
            visible.append(dict(obj, rho=rho, radius=obj["radius"] * section,
                                rng=np.random.default_rng(obj["seed"])))
        signal = _objects_signal(rng, spec, plane, visible, fine, scale) + debris
        images.append(_camera(rng, signal, optics, spec))
    stack = np.stack(images)
    return _as_dtype(rng, stack, dtype), labels, name


def _as_dtype(rng, values: np.ndarray, dtype) -> np.ndarray:
    """The scene in a camera's range: uint16 with an offset and a random full scale, uint8, or float32."""
    if dtype is None:
        dtype = rng.choice([np.uint16, np.uint8, np.float32], p=[0.5, 0.33, 0.17])
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return values.astype(dtype)
    info = np.iinfo(dtype)
    top = np.percentile(values, 99.9) + 1e-6
    if info.max > 255:
        full = 10 ** rng.uniform(2.7, 4.8)  # a 12-bit to 16-bit camera's use of the range
        scaled = rng.uniform(90, 1000) + values / top * full
    else:
        scaled = values / top * rng.uniform(120, 300)  # may saturate, as 8-bit exports do
    return np.clip(np.round(scaled), 0, info.max).astype(dtype)


def with_overrides(name: str, **changes) -> Look:
    """A named look with some of its ranges changed."""
    return replace(LOOKS[name], **changes)
