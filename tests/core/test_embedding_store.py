"""The embedding store on disk: round trips, verification, atomic and concurrent writes, the size cap, bad roots,
and the weights fingerprint.

Writers in other processes are forked, and GNU OpenMP does not survive a fork: a forked child that runs a parallel
torch kernel can hang. So the children (and the helpers they use) only make tensors from numpy arrays and compare
bytes in numpy, which is all the store itself does.
"""

import json
import multiprocessing
import os
import signal
import threading
import time

import numpy as np
import pytest
import torch

from napari_sam.core.embeddings import EntrySignature, weights_fingerprint
from napari_sam.core.embeddings.store import STALE_AFTER_S, TEMP_FOLDER, EmbeddingStore
from napari_sam.core.embeddings.store_entry import ATTRIBUTE
from napari_sam.testing.random_weights import random_sam, tiny_sam_config

FORK = "fork" in multiprocessing.get_all_start_methods()


def signature(content="pixels-0", **changes):
    fields = dict(model="tiny#0123", dtype="float32", preprocessing="1|64", frame=(0, 0, 48, 64, 1.0, 64),
                  contrast=(0.0, 255.0), rgb=False, content=content)
    return EntrySignature(**{**fields, **changes})


def arrays(seed=0, size=8):
    """A float32 embedding and a bfloat16 feature map (random bit patterns, NaNs included)."""
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 1 << 16, (1, 8, 2 * size, 2 * size), dtype=np.uint16).view(np.int16)
    return {"image_embeddings": torch.from_numpy(rng.standard_normal((1, 32, size, size), dtype=np.float32)),
            "high_res.0": torch.from_numpy(bits).view(torch.bfloat16)}


def as_bytes(tensor):
    return tensor.contiguous().reshape(-1).view(torch.uint8).numpy()


def same(a, b):
    """Bit-identical dicts of tensors."""
    return a is not None and set(a) == set(b) and all(
        a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and np.array_equal(as_bytes(a[k]), as_bytes(b[k]))
        for k in b)


def run_children(target, args_of, count=2, timeout=60):
    """Fork ``count`` processes running ``target(*args_of(i))``; fail (and kill them) if one fails or hangs."""
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=target, args=args_of(i)) for i in range(count)]
    for worker in workers:
        worker.start()
    try:
        for worker in workers:
            worker.join(timeout)
            assert worker.exitcode == 0, f"a child process failed or hung (exit code {worker.exitcode})"
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.kill()


def entry_folder(store, sig):
    key = sig.key()
    return store.root / key[:2] / key


def chunk(store, sig, name="image_embeddings"):
    (path,) = [p for p in (entry_folder(store, sig) / name).iterdir() if p.name.startswith("c")]
    return path


def test_round_trip_is_bit_identical(tmp_path):
    store = EmbeddingStore(tmp_path / "store")
    data = arrays()
    data["odd"] = torch.tensor([float("nan"), -0.0, float("inf"), 1e-40], dtype=torch.float32)
    data["flags"] = torch.tensor([[True, False]])
    assert store.get(signature()) is None and signature() not in store
    store.put(signature(), data)
    again = EmbeddingStore(tmp_path / "store").get(signature())  # another session reads it
    assert same(again, data) and again["high_res.0"].dtype == torch.bfloat16
    assert signature() in store and len(store) == 1 and store.nbytes > 4 * 32 * 8 * 8
    (folder,) = [p for p in (tmp_path / "store").iterdir() if p.name != TEMP_FOLDER]
    assert folder.name == signature().key()[:2]
    attributes = json.loads((entry_folder(store, signature()) / "zarr.json").read_text())["attributes"][ATTRIBUTE]
    assert attributes["signature"]["frame"] == [0, 0, 48, 64, 1.0, 64]
    assert attributes["arrays"]["high_res.0"]["stored_dtype"] == "uint16"


def test_signature_is_normalised_and_checked():
    assert signature(frame=(np.int64(0), 0, 48.0, 64, 1, 64), contrast=(np.float32(0), 255)) == signature()
    assert signature(frame=(0, 0, 48.0, 64, 1, 64)).key() == signature().key()
    for bad in (dict(frame=(0, 0, 48, 64, 1.0)), dict(frame=(0, 0, 48.5, 64, 1.0, 64)),
                dict(contrast=(0.0, float("nan"))), dict(model=""), dict(rgb="no")):
        with pytest.raises(ValueError, match="EntrySignature"):
            signature(**bad)


@pytest.mark.parametrize("change", [dict(model="tiny#4567"), dict(dtype="bfloat16"), dict(preprocessing="2|64"),
                                    dict(frame=(0, 0, 48, 64, 0.5, 64)), dict(contrast=(0.0, 254.0)),
                                    dict(rgb=True), dict(content="pixels-1")])
def test_a_changed_field_misses(tmp_path, change):
    store = EmbeddingStore(tmp_path)
    store.put(signature(), arrays())
    assert store.get(signature(**change)) is None and signature(**change) not in store
    assert same(store.get(signature()), arrays())


def flip_a_byte(store, sig):
    path = chunk(store, sig)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def truncate(store, sig):
    path = chunk(store, sig)
    path.write_bytes(path.read_bytes()[:100])


def delete_chunk(store, sig):
    chunk(store, sig).unlink()


def delete_array(store, sig):
    for path in sorted((entry_folder(store, sig) / "high_res.0").iterdir()):
        path.unlink()
    (entry_folder(store, sig) / "high_res.0").rmdir()


def edit_attributes(store, sig, edit):
    path = entry_folder(store, sig) / "zarr.json"
    metadata = json.loads(path.read_text())
    edit(metadata["attributes"][ATTRIBUTE])
    path.write_text(json.dumps(metadata))


def edit_contrast(store, sig):
    edit_attributes(store, sig, lambda a: a["signature"].update(contrast=[0.0, 1.0]))


def edit_checksum(store, sig):
    edit_attributes(store, sig, lambda a: a["arrays"]["image_embeddings"].update(blake2b="0" * 32))


def edit_shape(store, sig):
    edit_attributes(store, sig, lambda a: a["arrays"]["image_embeddings"].update(shape=[1, 32, 8, 4]))


def drop_signature(store, sig):
    edit_attributes(store, sig, lambda a: a.pop("signature"))


def break_json(store, sig):
    (entry_folder(store, sig) / "zarr.json").write_text("{not json")


def empty_entry(store, sig):
    for path in sorted(entry_folder(store, sig).rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()


@pytest.mark.parametrize("damage", [flip_a_byte, truncate, delete_chunk, delete_array, edit_contrast, edit_checksum,
                                    edit_shape, drop_signature, break_json, empty_entry])
def test_a_damaged_entry_is_never_trusted_and_is_recomputed(tmp_path, damage):
    store = EmbeddingStore(tmp_path)
    store.put(signature(), arrays())
    store.put(signature("other"), arrays(1))
    damage(store, signature())
    assert store.get(signature()) is None
    assert not entry_folder(store, signature()).exists()  # removed, so the caller's put goes through
    store.put(signature(), arrays())
    assert same(store.get(signature()), arrays())
    assert same(store.get(signature("other")), arrays(1))


@pytest.mark.parametrize("error", [RuntimeError("cannot schedule new futures after interpreter shutdown"),
                                   PermissionError(13, "Permission denied"), OSError(5, "Input/output error")])
def test_an_entry_that_cannot_be_read_now_is_kept(tmp_path, monkeypatch, error):
    """Only an entry that does not verify is removed: one that could not be read (once, at an interpreter's
    shutdown, a valid entry was removed as "did not verify") stays for the next read."""
    from napari_sam.core.embeddings import store as store_module

    store = EmbeddingStore(tmp_path)
    store.put(signature(), arrays())

    def unreadable(*args):
        raise error

    monkeypatch.setattr(store_module, "read_entry", unreadable)
    assert store.get(signature()) is None
    assert entry_folder(store, signature()).exists() and signature() in store
    monkeypatch.undo()
    assert same(store.get(signature()), arrays())


@pytest.mark.parametrize("damage", [flip_a_byte, edit_contrast, empty_entry])
def test_a_put_replaces_a_damaged_entry_it_finds(tmp_path, damage):
    store = EmbeddingStore(tmp_path)
    store.put(signature(), arrays())
    damage(store, signature())
    store.put(signature(), arrays())  # without a get first
    assert same(store.get(signature()), arrays())
    assert [p.name for p in (tmp_path / TEMP_FOLDER).iterdir()] == []


def test_an_existing_good_entry_is_kept_unless_its_arrays_differ(tmp_path):
    store = EmbeddingStore(tmp_path)
    store.put(signature(), arrays())
    inode = entry_folder(store, signature()).stat().st_ino
    store.put(signature(), arrays())
    assert entry_folder(store, signature()).stat().st_ino == inode and len(store) == 1
    more = {**arrays(), "high_res.1": torch.zeros(1, 8, 32, 32)}
    store.put(signature(), more)  # e.g. a later version keeps more feature maps under the same signature
    assert same(store.get(signature()), more) and len(store) == 1


def _put_forever(root, ready):
    store = EmbeddingStore(root)
    ready.set()
    store.put(signature("large"), {"image_embeddings": torch.from_numpy(np.zeros((64, 1024, 1024), np.float32))})


@pytest.mark.skipif(not FORK, reason="needs fork")
def test_a_write_killed_midway_leaves_a_usable_store(tmp_path):
    store = EmbeddingStore(tmp_path)
    store.put(signature(), arrays())
    context = multiprocessing.get_context("fork")
    ready = context.Event()
    child = context.Process(target=_put_forever, args=(tmp_path, ready))
    child.start()
    try:
        assert ready.wait(30)
        deadline = time.monotonic() + 30
        while not any(p.name.startswith("put-") for p in (tmp_path / TEMP_FOLDER).iterdir()):
            assert time.monotonic() < deadline
            time.sleep(0.002)
        time.sleep(0.05)  # into the 256 MiB write
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.join(10)
    left = [p for p in (tmp_path / TEMP_FOLDER).iterdir()]
    assert left and all(p.name.startswith("put-") for p in left)
    assert same(store.get(signature()), arrays())
    assert store.get(signature("large")) is None and len(store) == 1  # nothing half-written in place
    store.put(signature("next"), arrays(2))  # a recent temporary folder may belong to a live write: kept
    assert left[0].exists()
    old = time.time() - STALE_AFTER_S - 60
    os.utime(left[0], (old, old))
    store.put(signature("last"), arrays(3))  # an old one is removed
    assert list((tmp_path / TEMP_FOLDER).iterdir()) == []
    assert same(store.get(signature("next")), arrays(2)) and same(store.get(signature("last")), arrays(3))


def _put_many(root, barrier, results, worker):
    store = EmbeddingStore(root)
    barrier.wait(30)
    good = 0
    for i in range(12):
        store.put(signature(f"same-{i}"), arrays(i, size=32))
        good += same(store.get(signature(f"same-{i}")), arrays(i, size=32))
    results[worker] = good


@pytest.mark.skipif(not FORK, reason="needs fork")
def test_concurrent_puts_of_the_same_entries_from_two_processes(tmp_path):
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(2), context.Array("i", [-1, -1])
    run_children(_put_many, lambda i: (tmp_path, barrier, results, i))
    assert list(results) == [12, 12]  # each got a good entry after each of its puts
    store = EmbeddingStore(tmp_path)
    assert len(store) == 12 and all(same(store.get(signature(f"same-{i}")), arrays(i, size=32)) for i in range(12))
    assert list((tmp_path / TEMP_FOLDER).iterdir()) == []


def test_threads_share_a_store(tmp_path):
    store = EmbeddingStore(tmp_path)
    failures = []

    def work(seed):
        for i in range(8):
            store.put(signature(f"t-{(i + seed) % 3}"), arrays((i + seed) % 3))
            if not same(store.get(signature(f"t-{(i + seed) % 3}")), arrays((i + seed) % 3)):
                failures.append((seed, i))

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == [] and len(store) == 3
    assert list((tmp_path / TEMP_FOLDER).iterdir()) == []


def _put_and_read_under_a_cap(root, cap, barrier, results, worker):
    store = EmbeddingStore(root, max_bytes=cap)
    barrier.wait(30)
    rng, bad = np.random.default_rng(worker), 0
    for i in range(30):
        store.put(signature(f"cap-{worker}-{i}"), arrays(i))
        j, other = int(rng.integers(0, i + 1)), int(rng.integers(0, 2))
        got = store.get(signature(f"cap-{other}-{j}"))
        bad += got is not None and not same(got, arrays(j))
    results[worker] = bad


@pytest.mark.skipif(not FORK, reason="needs fork")
def test_reads_racing_evictions_in_another_process_are_verified_or_missing(tmp_path):
    probe = EmbeddingStore(tmp_path / "probe")
    probe.put(signature(), arrays())
    cap = 3 * probe.nbytes + probe.nbytes // 2  # three entries: nearly every put evicts
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(2), context.Array("i", [-1, -1])
    run_children(_put_and_read_under_a_cap, lambda i: (tmp_path / "store", cap, barrier, results, i))
    assert list(results) == [0, 0]
    store = EmbeddingStore(tmp_path / "store", max_bytes=cap)
    store.put(signature("last"), arrays())  # a store counted afresh: back under the cap
    assert 1 <= len(store) <= 3 and store.nbytes <= cap and list((tmp_path / "store" / TEMP_FOLDER).iterdir()) == []


def test_the_size_cap_evicts_the_least_recently_used(tmp_path):
    probe = EmbeddingStore(tmp_path / "probe")
    probe.put(signature(), arrays())
    size = probe.nbytes
    store = EmbeddingStore(tmp_path / "store", max_bytes=int(3.5 * size))
    for name in "abc":
        store.put(signature(name), arrays())
    assert len(store) == 3 and store.get(signature("a")) is not None  # a is now used more recently than b
    store.put(signature("d"), arrays())
    assert [name for name in "abcd" if signature(name) in store] == ["a", "c", "d"]
    for name in "efghij":
        store.put(signature(name), arrays())
        assert store.nbytes <= store.max_bytes and signature(name) in store
    assert [name for name in "abcdefghij" if signature(name) in store] == ["h", "i", "j"]
    tiny = EmbeddingStore(tmp_path / "store", max_bytes=0)
    tiny.put(signature("e"), arrays())  # the newest entry always stays
    assert len(tiny) == 1 and same(tiny.get(signature("e")), arrays())


def test_summary_and_clear(tmp_path):
    store = EmbeddingStore(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "ab").mkdir()  # looks like a shard, but holds nothing of the store's
    (tmp_path / "ab" / "photo").write_text("mine too")
    store.put(signature("a"), arrays())
    store.put(signature("b"), arrays())
    store.put(signature("c", model="other#89ab"), arrays())
    summary = store.summary()
    assert summary["entries"] == 3 and summary["bytes"] == store.nbytes
    assert {m: c["entries"] for m, c in summary["models"].items()} == {"tiny#0123": 2, "other#89ab": 1}
    store.clear()
    assert len(store) == 0 and store.nbytes == 0 and store.summary()["models"] == {}
    assert (tmp_path / "notes.txt").read_text() == "mine" and (tmp_path / "ab" / "photo").exists()


def test_bad_roots_and_arguments(tmp_path):
    file = tmp_path / "a-file"
    file.write_text("keep me")
    with pytest.raises(ValueError, match="a-file.* is a file"):
        EmbeddingStore(file)
    with pytest.raises(ValueError, match="a-file/store.* cannot be created"):
        EmbeddingStore(file / "store")
    assert file.read_text() == "keep me"
    with pytest.raises(ValueError, match="max_bytes"):
        EmbeddingStore(tmp_path, max_bytes=-1)
    store = EmbeddingStore(tmp_path)
    with pytest.raises(TypeError, match="EntrySignature"):
        store.get("key")
    with pytest.raises(ValueError, match="name"):
        store.put(signature(), {"../x": torch.zeros(2)})
    with pytest.raises(TypeError, match="torch.Tensor"):
        store.put(signature(), {"x": np.zeros(2)})
    assert len(store) == 0


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_an_unwritable_root_is_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        try:
            (locked / "probe").touch()
        except PermissionError:
            pass
        else:
            pytest.skip("file permissions do not bind this user (root); a file as root is tested instead")
        with pytest.raises(PermissionError, match="locked.* cannot be"):
            EmbeddingStore(locked)
        with pytest.raises(PermissionError, match="locked/store.* cannot be created"):
            EmbeddingStore(locked / "store")
    finally:
        locked.chmod(0o700)


def test_weights_fingerprint():
    one, same_seed, other = (random_sam(tiny_sam_config(64), seed=s) for s in (1, 1, 2))
    fingerprint = weights_fingerprint(one)
    assert len(fingerprint) == 32 and fingerprint == weights_fingerprint(same_seed) != weights_fingerprint(other)
    assert weights_fingerprint(one, values_per_tensor=16) != weights_fingerprint(other, values_per_tensor=16)
    with torch.no_grad():
        one.mask_decoder.iou_prediction_head.proj_out.bias[0] += 1e-3
    assert weights_fingerprint(one) != fingerprint
    assert weights_fingerprint(same_seed.to(torch.bfloat16)) != fingerprint


def test_an_entry_that_cannot_be_placed_raises_and_leaves_nothing(tmp_path, monkeypatch):
    """A rename refused for another reason than another writer's entry in the way (permissions, a full disk) is
    raised, not taken for a lost race: the caller learns that nothing was stored."""
    import errno

    from napari_sam.core.embeddings import store as embedding_store

    store = EmbeddingStore(tmp_path)

    def refused(source, target):
        raise OSError(errno.EACCES, "Permission denied", str(target))

    monkeypatch.setattr(embedding_store.os, "rename", refused)
    with pytest.raises(OSError, match="Permission denied"):
        store.put(signature(), arrays())
    monkeypatch.undo()
    assert store.get(signature()) is None and len(store) == 0
    assert list((tmp_path / TEMP_FOLDER).iterdir()) == []
