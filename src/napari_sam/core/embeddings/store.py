"""An on-disk store of image embeddings (zarr v3), kept across napari sessions and shared by batch tools.

Usage::

    store = EmbeddingStore()        # a per-user cache folder, at most DEFAULT_STORE_GB
    arrays = store.get(signature)   # an EntrySignature; {"image_embeddings": (1, 256, 64, 64) CPU tensor} or None
    if arrays is None:
        store.put(signature, {"image_embeddings": embedding})

Layout on disk (``<key>`` is :meth:`EntrySignature.key`, 32 hex digits)::

    <root>/<key[:2]>/<key>/            one entry: a zarr v3 group
        zarr.json                      group metadata; attributes["napari_sam_embedding"] = {"format": 1,
                                       "key": <key>, "signature": {field: value}, "arrays": {name: {"dtype":
                                       "bfloat16", "stored_dtype": "uint16", "shape": [...], "blake2b": <hex>}}}
        <name>/zarr.json               array metadata: shape, stored data type, one chunk, no compression
        <name>/c.0.0...                the array's bytes, little-endian, C order
    <root>/.napari-sam-tmp/            writes in progress (put-*) and entries being deleted (del-*)

Each array keeps its torch dtype: dtypes numpy lacks (bfloat16, float8) are stored as their bit pattern in an
unsigned integer of the same size, with the torch dtype in the attributes, so round trips are bit-identical.

A put writes the entry into a temporary folder inside the root and renames it into place; a get checks the
stored signature field by field and every array's presence, shape, dtype and BLAKE2b checksum. An entry's last
access is its folder's modification time, set on every get and put.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import re
import shutil
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import torch

from .signature import EntrySignature
from .store_entry import EntryInvalid, read_entry, stored_signature, to_numpy, write_entry

__all__ = ["DEFAULT_STORE_GB", "EmbeddingStore", "store_bytes"]

TEMP_FOLDER = ".napari-sam-tmp"  # inside the root: writes in progress and entries being deleted
STALE_AFTER_S = 3600.0  # a temporary folder older than this is a killed write's, and is removed
RESCAN_S = 30.0  # a put counts the whole store again at least this often (other processes write too)

#: The store's size cap unless the user sets another, in GB (of 2**30 bytes): the docks', ``napari-sam embed``'s
#: and batch runs' default.
DEFAULT_STORE_GB = 20.0


def store_bytes(gigabytes: float) -> int:
    """A size cap of ``gigabytes`` GB (of 2**30 bytes) in bytes.

    Raises:
        ValueError: not a finite number above 0 (inf, nan, 0 and negative caps are refused, naming the value).
    """
    if isinstance(gigabytes, (bool, np.bool_)) or not isinstance(gigabytes, (int, float, np.integer, np.floating)) \
            or not math.isfinite(gigabytes) or gigabytes <= 0:
        raise ValueError(f"The embedding store's size cap must be a finite number of GB above 0, got {gigabytes!r}.")
    return int(gigabytes * (1 << 30))


_SHARD = re.compile(r"[0-9a-f]{2}\Z")
_KEY = re.compile(r"[0-9a-f]{32}\Z")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}\Z")
log = logging.getLogger(__name__)


class EmbeddingStore:
    """Embeddings on disk, keyed by :class:`EntrySignature`, least recently used removed beyond ``max_bytes``.

    Safe across threads and processes: entries appear whole (renamed into place) or not at all, and a get returns
    only entries whose signature, arrays and checksums verify. Only folders named like entries (see the module's
    docstring) and the temporary folder are ever removed, so other files under ``root`` are left alone.

    Args:
        root: the store's folder (created if missing); None: ``platformdirs.user_cache_dir("napari-sam")``'s
            ``embeddings`` folder.
        max_bytes: bytes on disk the entries may take; the newest entry is kept even when it alone exceeds it.
            With several processes writing, the store may exceed it by what the others put within RESCAN_S.

    Raises:
        ValueError: ``max_bytes`` < 0, ``root`` is a file, or a part of its path is one.
        PermissionError: ``root`` cannot be created, listed or written (a probe file is written and removed).
    """

    def __init__(self, root: str | os.PathLike | None = None, max_bytes: int = store_bytes(DEFAULT_STORE_GB)):
        if isinstance(max_bytes, (bool, np.bool_)) or not isinstance(max_bytes, (int, np.integer)) or max_bytes < 0:
            raise ValueError(f"max_bytes of an embedding store must be a whole number >= 0, got {max_bytes!r}.")
        if root is None:
            import platformdirs

            root = Path(platformdirs.user_cache_dir("napari-sam")) / "embeddings"
        self.root = Path(root).expanduser().absolute()
        self.max_bytes = int(max_bytes)
        self._temp = self.root / TEMP_FOLDER
        self._lock = threading.Lock()  # guards _info and _stamp, held briefly
        self._housekeeping = threading.Lock()  # one eviction or clear at a time
        self._info: dict[str, tuple[int, int, str | None]] = {}  # entry path: (inode, bytes, model)
        self._stamp = 0
        self._estimate: tuple[float, int] | None = None  # (when the store was last counted, bytes since)
        if self.root.exists() and not self.root.is_dir():
            raise ValueError(f"The embedding store's folder {self.root} is a file; choose a folder (it is created "
                             "if missing).")
        existed, probe = self.root.is_dir(), self._temp / f"probe-{uuid.uuid4().hex}"
        try:  # a real write, so that a read-only folder or disk is found now rather than at the first put
            self._temp.mkdir(parents=True, exist_ok=True)
            os.listdir(self.root)
            probe.write_bytes(b"napari-sam")
            probe.unlink()
        except (FileExistsError, NotADirectoryError) as error:
            raise ValueError(f"The embedding store's folder {self.root} cannot be created: a part of its path is a "
                             f"file ({error}).") from error
        except OSError as error:
            raise PermissionError(f"The embedding store's folder {self.root} cannot be "
                                  f"{'written' if existed else 'created'} ({error.strerror or error}); choose a "
                                  "folder you can write to.") from error

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / key

    # --- reading and writing ------------------------------------------------------------------------------------

    def get(self, signature: EntrySignature) -> dict[str, torch.Tensor] | None:
        """The entry's arrays (CPU tensors in their stored dtypes and shapes, marked as just used), or None when
        there is none or it does not verify; an entry that does not verify is removed."""
        path = self._path(_checked(signature).key())
        try:
            inode = os.stat(path).st_ino
        except OSError:
            return None
        try:
            arrays = read_entry(path, signature)
        except EntryInvalid as error:  # anything wrong with an entry's contents means it is not trusted
            if self._discard(path, inode):
                log.warning("Removed an embedding store entry that did not verify (%s): %s", error, path)
            return None
        except (OSError, RuntimeError) as error:  # not read now (I/O, shutdown): the entry stays
            log.info("Could not read an embedding store entry (%s); it is kept: %s", error, path)
            return None
        self._touch(path)
        return arrays

    def put(self, signature: EntrySignature, arrays: dict[str, torch.Tensor]) -> None:
        """Store ``arrays`` (name: tensor of any shape, on any device) under ``signature``, atomically, then
        remove least recently used entries beyond ``max_bytes`` and temporary folders of killed writes.

        An existing entry that verifies and holds arrays of the same names, shapes and dtypes is kept (and marked
        as used); any other is replaced. Names are letters, digits, ``_``, ``.`` and ``-``, starting with a letter
        or digit.

        Raises:
            TypeError, ValueError: bad signature, names or arrays (nothing is written).
            OSError: the entry could not be written (a full disk); the store is left as it was.
        """
        key = _checked(signature).key()
        if not isinstance(arrays, dict) or not arrays:
            raise ValueError("put() needs a dict of one or more named tensors.")
        for name in (name for name in arrays if not isinstance(name, str) or not _NAME.match(name)):
            raise ValueError(f"Array name {name!r} must be letters, digits, '_', '.' or '-', starting with a letter "
                             "or digit.")
        prepared = {name: to_numpy(name, tensor) for name, tensor in arrays.items()}
        final = self._path(key)
        self._temp.mkdir(parents=True, exist_ok=True)
        temp = self._temp / f"put-{key}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        try:
            write_entry(temp, key, signature, prepared)
            self._place(temp, final, signature, {name: (tuple(t.shape), t.dtype) for name, t in arrays.items()})
        finally:
            shutil.rmtree(temp, ignore_errors=True)
        self._touch(final)
        self._evict(final)
        self._clean_temp()

    def _place(self, temp: Path, final: Path, signature: EntrySignature, shapes: dict) -> None:
        """Rename ``temp`` to ``final``; an entry already there is kept when it verifies and holds arrays of the
        same ``shapes`` ({name: (shape, dtype)}), else replaced."""
        for _ in range(3):
            try:
                final.parent.mkdir(exist_ok=True)
                os.rename(temp, final)  # atomic; fails when ``final`` is a non-empty folder
                return
            except OSError as error:
                if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise  # not another writer's entry in the way: the store cannot take it
                try:
                    inode = os.stat(final).st_ino
                except FileNotFoundError:
                    continue  # removed meanwhile: try again
            try:
                found = read_entry(final, signature)
                if {name: (tuple(t.shape), t.dtype) for name, t in found.items()} == shapes:
                    return  # another writer's good entry won; ours is discarded
            except EntryInvalid:
                pass  # a damaged entry: replaced by ours
            except (OSError, RuntimeError):
                return  # it could not be read (I/O, shutdown): left alone, ours is discarded
            self._discard(final, inode)
        log.info("Gave up placing an embedding store entry that other writers keep replacing: %s", final)

    def _discard(self, path: Path, inode: int | None = None) -> bool:
        """Remove an entry folder (only if it is still ``inode``): renamed away at once, then deleted."""
        trash = self._temp / f"del-{uuid.uuid4().hex}"
        try:
            if inode is not None and os.stat(path).st_ino != inode:
                return False
            os.rename(path, trash)
        except OSError:
            return False
        with self._lock:
            self._info.pop(str(path), None)
        shutil.rmtree(trash, ignore_errors=True)
        return True

    def _touch(self, path: Path) -> None:
        """Mark an entry as just used: its folder's modification time, strictly increasing in this process."""
        with self._lock:
            self._stamp = max(time.time_ns(), self._stamp + 1)
            stamp = self._stamp
        try:
            os.utime(path, ns=(stamp, stamp))
        except OSError:
            pass  # removed meanwhile

    # --- housekeeping -------------------------------------------------------------------------------------------

    def _entries(self) -> list[tuple[str, os.stat_result]]:
        """(path, stat) of every entry folder."""
        return [(path, stat) for shard, name, _ in _folders(self.root, _SHARD)
                for path, key, stat in _folders(shard, _KEY) if key.startswith(name)]

    def _describe(self, path: str, stat: os.stat_result) -> tuple[int, str | None]:
        """(bytes on disk, model fingerprint or None if unreadable) of an entry, cached per folder inode."""
        with self._lock:
            known = self._info.get(path)
        if known is not None and known[0] == stat.st_ino:
            return known[1], known[2]
        try:
            nbytes = sum(os.path.getsize(os.path.join(folder, f)) for folder, _, files in os.walk(path) for f in files)
        except OSError:
            nbytes = 0  # removed meanwhile
        stored = stored_signature(Path(path))
        model = None if stored is None else stored.model
        with self._lock:
            self._info[path] = (stat.st_ino, nbytes, model)
        return nbytes, model

    def _evict(self, keep: Path) -> None:
        """Remove least recently used entries (except the new entry ``keep``) until the store fits ``max_bytes``;
        counts every entry only when the bytes counted last plus those put since may not fit, or every RESCAN_S."""
        with self._housekeeping:
            try:
                added = self._describe(str(keep), os.stat(keep))[0]
            except OSError:
                added = 0
            if self._estimate is not None and time.monotonic() - self._estimate[0] < RESCAN_S and (
                    self._estimate[1] + added <= self.max_bytes):
                self._estimate = (self._estimate[0], self._estimate[1] + added)
                return
            entries = self._entries()
            with self._lock:
                self._info = {path: self._info[path] for path, _ in entries if path in self._info}
            sizes = {path: self._describe(path, stat)[0] for path, stat in entries}
            total = sum(sizes.values())
            for path, stat in sorted(entries, key=lambda item: item[1].st_mtime_ns):
                if total <= self.max_bytes:
                    break
                if path != str(keep):
                    self._discard(Path(path), stat.st_ino)
                    total -= sizes[path]
            self._estimate = (time.monotonic(), total)

    def _clean_temp(self) -> None:
        """Remove entries left half-deleted, and temporary folders older than :data:`STALE_AFTER_S` (killed
        writes)."""
        try:
            children = list(os.scandir(self._temp))
        except OSError:
            return
        now = time.time()
        for child in children:
            try:
                stale = now - child.stat(follow_symlinks=False).st_mtime > STALE_AFTER_S
                if child.name.startswith("del-") or (stale and child.name.startswith(("put-", "probe-"))):
                    shutil.rmtree(child.path) if child.is_dir(follow_symlinks=False) else os.unlink(child.path)
            except OSError:
                continue  # removed meanwhile

    def clear(self) -> None:
        """Remove every entry (and leftovers of killed writes; writes in progress are left to finish)."""
        with self._housekeeping:
            for path, stat in self._entries():
                self._discard(Path(path), stat.st_ino)
            self._estimate = None
        self._clean_temp()

    def __contains__(self, signature: EntrySignature) -> bool:
        """Whether an entry with this signature is stored (its attributes are read; its arrays are verified only
        by :meth:`get`)."""
        return stored_signature(self._path(_checked(signature).key())) == signature

    def __len__(self) -> int:
        """The number of entries (not verified)."""
        return len(self._entries())

    @property
    def nbytes(self) -> int:
        """Bytes on disk of the entries' files."""
        return sum(self._describe(path, stat)[0] for path, stat in self._entries())

    def summary(self) -> dict:
        """``{"root": str, "entries": int, "bytes": int, "max_bytes": int, "models": {fingerprint: {"entries": int,
        "bytes": int}}}``; an entry whose attributes cannot be read counts under the fingerprint None."""
        models: dict[str | None, dict[str, int]] = {}
        for nbytes, model in (self._describe(path, stat) for path, stat in self._entries()):
            counts = models.setdefault(model, {"entries": 0, "bytes": 0})
            counts["entries"], counts["bytes"] = counts["entries"] + 1, counts["bytes"] + nbytes
        return {"root": str(self.root), "entries": sum(c["entries"] for c in models.values()),
                "bytes": sum(c["bytes"] for c in models.values()), "max_bytes": self.max_bytes, "models": models}


def _folders(path, pattern: re.Pattern) -> list[tuple[str, str, os.stat_result]]:
    """(path, name, stat) of the folders in ``path`` whose names match ``pattern``; those removed meanwhile (or
    all, if ``path`` was) are left out."""
    found = []
    try:
        for child in os.scandir(path):
            try:
                if pattern.match(child.name) and child.is_dir(follow_symlinks=False):
                    found.append((child.path, child.name, child.stat(follow_symlinks=False)))
            except OSError:
                continue
    except OSError:
        pass
    return found


def _checked(signature) -> EntrySignature:
    if not isinstance(signature, EntrySignature):
        raise TypeError(f"Expected an EntrySignature, got {type(signature).__name__}.")
    return signature
