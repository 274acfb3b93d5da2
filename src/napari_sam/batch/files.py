"""The images of a batch run (files, folders, globs and stacks of files) and atomic writes of its outputs.

Nothing here reads pixels, except a stack of files, which reads one file per plane when indexed.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.image import IMAGE_SUFFIXES, ArrayView, file_axes, is_rgb, read_image


@dataclass(frozen=True)
class ImageInput:
    """One image of a run: a file (or zarr folder), or with ``stack`` the files of a folder as the planes of one
    stack. ``name`` names its outputs."""

    name: str
    paths: tuple[str, ...]
    stack: bool = False

    def signature(self) -> list:
        """Each path with its size and modification time: a re-run redoes an image whose files changed."""
        return [[path, *_stat(Path(path))] for path in self.paths]


def _stat(path: Path) -> tuple[int, int]:
    """(bytes, newest mtime in ns) of a file, or of a folder's top-level entries (a zarr store's metadata)."""
    if path.is_dir():
        entries = [path, *path.iterdir()]
        return sum(e.stat().st_size for e in entries), max(e.stat().st_mtime_ns for e in entries)
    info = path.stat()
    return info.st_size, info.st_mtime_ns


def is_image_path(path: Path) -> bool:
    """Whether ``path`` is an image this reads by its ending (a ``.zarr`` folder counts as one image)."""
    return path.suffix.lower() in IMAGE_SUFFIXES and (path.is_file() or path.suffix.lower() == ".zarr")


def output_name(path: Path) -> str:
    """The stem outputs are named after: ``cells.ome.tif`` -> ``cells``."""
    name = path.name
    for suffix in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return name[:-4] if name.lower().endswith(".ome") else name


def natural_key(path: Path) -> list:
    """Sort key that puts ``slice2`` before ``slice10``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def _images_in(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if is_image_path(p) and not p.name.startswith(".")), key=natural_key)


def find_inputs(specs: list[str], stack: bool = False) -> list[ImageInput]:
    """The images named by ``specs``: files, folders (their images, not recursing; zarr folders are images) and
    globs (``**`` recurses). With ``stack``, each folder is one stack of its images in natural order.

    Raises:
        ValueError: a path that does not exist, a folder or glob with no images, or two images whose outputs would
            have the same name.
    """
    if not specs:
        raise ValueError("No input given: name image files, folders or globs.")
    found: list[ImageInput] = []
    for spec in specs:
        path = Path(spec)
        if glob.has_magic(spec):
            matches = sorted((Path(p) for p in glob.glob(spec, recursive=True)), key=natural_key)
            images = [p for p in matches if is_image_path(p)]
            if not images:
                raise ValueError(f"{spec} matches no image ({', '.join(IMAGE_SUFFIXES)}).")
            found += [ImageInput(output_name(p), (str(p),)) for p in images]
        elif not path.exists():
            raise ValueError(f"{spec} does not exist.")
        elif path.is_dir() and path.suffix.lower() != ".zarr":
            images = _images_in(path)
            if not images:
                raise ValueError(f"The folder {spec} holds no image ({', '.join(IMAGE_SUFFIXES)}).")
            if stack:
                found.append(ImageInput(path.resolve().name, tuple(str(p) for p in images), stack=True))
            else:
                found += [ImageInput(output_name(p), (str(p),)) for p in images]
        elif is_image_path(path):
            found.append(ImageInput(output_name(path), (str(path),)))
        else:
            raise ValueError(f"{spec} is not an image this reads ({', '.join(IMAGE_SUFFIXES)}).")
    names: dict[str, ImageInput] = {}
    for item in found:
        other = names.setdefault(item.name, item)
        if other is not item:
            raise ValueError(f"{other.paths[0]} and {item.paths[0]} would both write outputs named {item.name!r}: "
                             "run them into different output folders.")
    return found


def check_output(output: str | Path, specs: list[str]) -> Path:
    """The output folder, refused when it lies inside an input folder or below a glob's fixed part (its labels would
    be read as images by the next run of the same command), inside a zarr input, or where a file is (it or a folder
    above it)."""
    output = Path(output).resolve()
    blocking = next((part for part in (output, *output.parents) if part.exists() and not part.is_dir()), None)
    if blocking is not None:
        raise ValueError(f"The output folder {output} cannot be made: {blocking} is a file. Choose a folder.")
    for spec in specs:
        base = Path(_glob_root(spec) if glob.has_magic(spec) else spec).resolve()
        is_folder = base.is_dir() and base.suffix.lower() != ".zarr"
        if is_folder and (output == base or base in output.parents):
            raise ValueError(f"The output folder {output} is inside the input folder {base}: its labels would be "
                             "read as images by the next run. Choose a folder outside it.")
        if base.suffix.lower() == ".zarr" and (output == base or base in output.parents):
            raise ValueError(f"The output folder {output} is inside the input {base}.")
    return output


def _glob_root(spec: str) -> str:
    """The folder part of a glob before its first wildcard."""
    parts = Path(spec).parts
    fixed = parts[: next(i for i, part in enumerate(parts) if glob.has_magic(part))]
    return str(Path(*fixed)) if fixed else "."


def _plane_shape(path: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of an image file without decoding its pixels where the format allows it."""
    if Path(path).suffix.lower() in (".png", ".jpg", ".jpeg"):
        from PIL import Image

        try:
            with Image.open(path) as image:
                mode, (width, height) = image.mode, image.size
        except Exception as error:  # noqa: BLE001 - a corrupt file: one clear message
            raise ValueError(f"Could not read {path} as an image: {error}") from error
        channels = {"RGB": 3, "RGBA": 4}.get(mode)
        dtype = np.dtype(np.uint16 if mode.startswith("I;16") else np.int32 if mode == "I" else np.uint8)
        return ((height, width, channels) if channels else (height, width)), dtype
    data = read_image(path)
    return tuple(int(n) for n in data.shape), np.dtype(data.dtype)


class FileStack(ArrayView):
    """The files of a folder as the planes of one stack: shape (n, *plane), read one file per plane when indexed.

    Raises:
        ValueError: files of different shapes or dtypes (naming the first that differs), or an unreadable file.
    """

    def __init__(self, paths: tuple[str, ...]):
        self.paths = tuple(paths)
        first_shape, first_dtype = _plane_shape(self.paths[0])
        for path in self.paths[1:]:
            shape, dtype = _plane_shape(path)
            if shape != first_shape or dtype != first_dtype:
                raise ValueError(f"A stack's files must share one size: {Path(self.paths[0]).name} is {first_shape} "
                                 f"{first_dtype}, {Path(path).name} is {shape} {dtype}.")
        self.shape = (len(self.paths), *first_shape)
        self.dtype = first_dtype

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        first, rest = (key[0], key[1:]) if key else (slice(None), ())
        if isinstance(first, (int, np.integer)):
            return np.asarray(read_image(self.paths[int(first)])[rest])
        return np.stack([np.asarray(read_image(p)[rest]) for p in self.paths[first]])


class ChannelOf(ArrayView):
    """One channel of a multichannel image, read lazily: ``data`` without its axis ``axis`` (the channel axis), as an
    array-like whose ``view[key]`` reads only what ``key`` addresses."""

    def __init__(self, data, axis: int, channel: int):
        self.data, self.axis, self.channel = data, axis, channel
        self.shape = tuple(int(n) for i, n in enumerate(data.shape) if i != axis)
        self.dtype = np.dtype(data.dtype)

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        if any(part is Ellipsis for part in key):
            at = next(i for i, part in enumerate(key) if part is Ellipsis)
            key = key[:at] + (slice(None),) * (self.ndim - len(key) + 1) + key[at + 1:]
        key = key + (slice(None),) * (self.ndim - len(key))
        return np.asarray(self.data[key[: self.axis] + (self.channel,) + key[self.axis:]])


def _channel_axis(item: ImageInput, shape: tuple[int, ...]) -> tuple[int | None, str]:
    """(the index of the channel axis of the image of ``item``, or None; its axis letters, or "") from the file's
    metadata (a stack of files: its files' axes after the stack's). A trailing colour axis is not a channel axis."""
    axes = file_axes(item.paths[0]) or ""
    axes = "Z" + axes if item.stack and axes else axes
    if len(axes) != len(shape) or "C" not in axes:
        return None, axes
    axis = axes.index("C")
    return (None if axis == len(shape) - 1 and is_rgb(shape) else axis), axes


def _channel(item: ImageInput, shape: tuple[int, ...], channel: int) -> int | None:
    """The channel axis to take ``channel`` of (None: the image is used as it is).

    Raises:
        ValueError: an image with several channels and no channel chosen (``channel`` -1), a channel the image
            does not have, or a channel chosen for an image without a channel axis.
    """
    axis, axes = _channel_axis(item, shape)
    name = Path(item.paths[0]).name
    if axis is None:
        if channel >= 0:
            raise ValueError(f"{name} has no channel axis (shape {shape}{f', axes {axes}' if axes else ''}), but "
                             f"channel {channel} was chosen: leave the channel out (-1) for this image.")
        return None
    count = shape[axis]
    if channel < 0 and count > 1:
        raise ValueError(f"{name} has {count} channels (axes {axes}, shape {shape}): choose the channel to segment "
                         f"with --channel (the batch setting channel), 0 to {count - 1}.")
    if channel >= count:
        raise ValueError(f"{name} has {count} channels (axes {axes}): channel {channel} is not one of them "
                         f"(0 to {count - 1}).")
    return axis


def _shape(item: ImageInput) -> tuple[int, ...]:
    return FileStack(item.paths).shape if item.stack else _plane_shape(item.paths[0])[0]


def check_readable(item: ImageInput, channel: int = -1) -> tuple[int, ...]:
    """The shape of the image of ``item`` as it is segmented (``channel``: the channel taken of a multichannel
    file, -1 for none), read from the files' headers only.

    Raises:
        ValueError: an unreadable file, a stack of files whose sizes differ, or a channel choice that does not fit
            the image (see :func:`open_input`).
    """
    import logging

    quiet = logging.getLogger("tifffile")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # its warnings about a corrupt file: the ValueError says it
    try:
        shape = _shape(item)
    finally:
        quiet.setLevel(level)
    axis = _channel(item, shape, channel)
    return shape if axis is None else tuple(n for i, n in enumerate(shape) if i != axis)


def open_input(item: ImageInput, channel: int = -1):
    """The image of ``item`` as an array-like: a file's lazy array, or a :class:`FileStack`. A file whose metadata
    names a channel axis (OME-TIFF, ImageJ TIFF, OME-zarr) gives channel ``channel`` alone, as a :class:`ChannelOf`
    (a single channel is taken without being chosen).

    Raises:
        ValueError: as :func:`check_readable`.
    """
    data = FileStack(item.paths) if item.stack else read_image(item.paths[0])
    axis = _channel(item, tuple(int(n) for n in data.shape), channel)
    return data if axis is None else ChannelOf(data, axis, max(channel, 0))


# --- atomic writes --------------------------------------------------------------------------------------------------

def temporary_path(path: Path) -> Path:
    """A unique hidden name beside ``path`` to write into before renaming (same folder: the rename is atomic)."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.partial")


def write_atomically(path: Path, content: bytes) -> Path:
    """Write ``content`` to ``path``: a temporary file, flushed to disk, then renamed over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_path(path)
    try:
        with open(temporary, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def move_into_place(temporary: Path, path: Path) -> Path:
    """Rename a finished file or folder (zarr) to ``path``, replacing what is there; a folder being replaced is
    renamed away first and removed after, so ``path`` always holds a whole output."""
    if temporary.is_dir() and path.exists():
        old = temporary_path(path)
        os.replace(path, old)
        os.replace(temporary, path)
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)
    else:
        os.replace(temporary, path)
    return path


def remove_partial(folder: Path) -> int:
    """Remove what killed runs left half-written in ``folder`` (``.*.partial``); returns how many."""
    removed = 0
    for leftover in folder.glob(".*.partial"):
        shutil.rmtree(leftover, ignore_errors=True) if leftover.is_dir() else leftover.unlink(missing_ok=True)
        removed += 1
    return removed
