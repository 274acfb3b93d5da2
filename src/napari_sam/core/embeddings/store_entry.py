"""One entry of the embedding store on disk: a zarr v3 group holding named arrays, with its signature and each
array's torch dtype and BLAKE2b checksum in its attributes (the layout is described in
:mod:`~napari_sam.core.embeddings.store`). Arrays keep their torch dtype: dtypes numpy lacks (bfloat16, float8) are
stored as their bit pattern in an unsigned integer of the same size, so round trips are bit-identical."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from .signature import STORE_FORMAT, EntrySignature

ATTRIBUTE = "napari_sam_embedding"  # the group attribute holding an entry's signature and checksums

_NATIVE = {torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.float16,
           torch.float32, torch.float64, torch.complex64, torch.complex128}
_SIGNED = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}

def _checksum(array: np.ndarray) -> str:
    """BLAKE2b (128 bits) of the array's little-endian C-order bytes."""
    array = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    return hashlib.blake2b(array.reshape(-1).view(np.uint8).data, digest_size=16).hexdigest()


def to_numpy(name: str, tensor) -> tuple[np.ndarray, str]:
    """(stored array, torch dtype name) of a tensor: numpy's own dtype, or the bit pattern as unsigned ints."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"Array {name!r} must be a torch.Tensor, got {type(tensor).__name__}.")
    tensor = tensor.detach().cpu().contiguous()
    dtype = str(tensor.dtype).removeprefix("torch.")
    if tensor.dtype in _NATIVE:
        return tensor.numpy(), dtype
    size = tensor.element_size()
    if tensor.is_complex() or tensor.is_quantized or size not in _SIGNED:
        raise ValueError(f"Array {name!r} has dtype {dtype}, which the embedding store cannot keep.")
    return tensor.view(_SIGNED[size]).numpy().view(f"u{size}"), dtype


def to_tensor(array: np.ndarray, dtype_name: str) -> torch.Tensor:
    """The tensor of a stored array (the inverse of :func:`to_numpy`); ValueError if they do not match."""
    dtype = getattr(torch, dtype_name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"{dtype_name} is not a torch dtype")
    empty = torch.empty(0, dtype=dtype)
    if array.dtype != (empty.numpy().dtype if dtype in _NATIVE else f"u{empty.element_size()}"):
        raise ValueError(f"{dtype_name} cannot be stored as {array.dtype}")
    if dtype in _NATIVE:
        return torch.from_numpy(array)
    return torch.from_numpy(array.view(f"i{array.itemsize}")).view(dtype)


def write_entry(folder: Path, key: str, signature: EntrySignature, arrays: dict[str, tuple[np.ndarray, str]]):
    """Write one entry (a zarr v3 group) into ``folder``, which must not exist."""
    import zarr
    from zarr.storage import LocalStore

    recorded = {name: {"dtype": dtype, "stored_dtype": array.dtype.name, "shape": list(array.shape),
                       "blake2b": _checksum(array)} for name, (array, dtype) in arrays.items()}
    attributes: dict[str, Any] = {ATTRIBUTE: {"format": STORE_FORMAT, "key": key, "signature": signature.to_dict(),
                              "arrays": recorded}}
    group = zarr.open_group(store=LocalStore(folder), mode="w-", zarr_format=3, attributes=attributes)
    for name, (array, _) in arrays.items():
        stored = group.create_array(name, shape=array.shape, dtype=array.dtype, fill_value=0, compressors=None,
                                    filters=None, chunks=tuple(max(1, s) for s in array.shape),
                                    chunk_key_encoding={"name": "default", "separator": "."})
        if array.size:
            stored[...] = array


class EntryInvalid(ValueError):
    """An entry that does not verify: another format or signature, missing or extra arrays, a failed checksum, or
    metadata that does not parse. Only such an entry may be removed; one that could not be read (an I/O error, an
    interpreter shutting down) may be fine."""


def read_entry(folder: Path, signature: EntrySignature) -> dict[str, torch.Tensor]:
    """The verified arrays of the entry in ``folder``.

    Raises:
        EntryInvalid: the entry is not exactly ``signature``'s, or is damaged (a file of it missing included).
        OSError, RuntimeError: it could not be read now (a read error, an interpreter shutting down): it may be fine.
    """
    try:
        return _verified(folder, signature)
    except (FileNotFoundError, NotADirectoryError) as error:
        raise EntryInvalid(f"{type(error).__name__}: {error}") from error
    except (OSError, RuntimeError):
        raise
    except Exception as error:  # noqa: BLE001 - whatever else is wrong with the entry's files
        raise EntryInvalid(f"{type(error).__name__}: {error}") from error


def _verified(folder: Path, signature: EntrySignature) -> dict[str, torch.Tensor]:
    import zarr
    from zarr.storage import LocalStore

    group = zarr.open_group(store=LocalStore(folder, read_only=True), mode="r", zarr_format=3)
    attributes: dict[str, Any] = cast(dict, group.attrs.asdict()[ATTRIBUTE])
    if attributes["format"] != STORE_FORMAT or attributes["key"] != signature.key():
        raise ValueError("another format or key")
    if EntrySignature.from_dict(attributes["signature"]) != signature:
        raise ValueError("the stored signature differs")
    recorded = attributes["arrays"]
    if not recorded or set(group.array_keys()) != set(recorded):
        raise ValueError("arrays are missing or extra")
    arrays = {}
    for name, info in recorded.items():
        stored = group[name]
        if not isinstance(stored, zarr.Array):
            raise ValueError(f"{name!r} is not an array")
        if list(stored.shape) != info["shape"] or stored.dtype != np.dtype(info["stored_dtype"]):
            raise ValueError(f"array {name!r} has another shape or dtype")
        data = np.asarray(stored[...])
        if data.shape != tuple(info["shape"]) or _checksum(data) != info["blake2b"]:
            raise ValueError(f"array {name!r} fails its checksum")
        arrays[name] = to_tensor(data, info["dtype"])
    return arrays


def stored_signature(path: Path) -> EntrySignature | None:
    """The signature in an entry's attributes, or None when they cannot be read."""
    try:
        with open(path / "zarr.json", encoding="utf-8") as file:
            return EntrySignature.from_dict(json.load(file)["attributes"][ATTRIBUTE]["signature"])
    except Exception:
        return None
