"""One model session per napari viewer, shared by every napari-sam dock of that viewer.

The session holds the loaded :class:`~napari_sam.core.predictor.Predictor` (and a SAM2-family video model once
one is used), loads checkpoints and embeds planes on worker threads, and tells its docks what happened through
psygnal signals. Docks find their viewer's session with :func:`session_for`; the session lives as long as its
viewer (the registry holds viewers weakly), so two viewers never share weights or state.
"""

from __future__ import annotations

import atexit
import concurrent.futures.thread  # noqa: F401 - its exit hook comes before this module's
import logging
import threading
import weakref

from napari.qt.threading import create_worker
from napari.utils import progress
from psygnal import Signal

from ..core.embeddings import DEFAULT_STORE_GB, EmbeddingStore, store_bytes
from ..core.model import load_video_model, resolve_device
from ..core.predictor import Predictor
from ..core.settings import TilingSettings

_log = logging.getLogger(__name__)

_SESSIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
#: At most this many tiles are embedded ahead of a prompt (around the view, and on the neighbouring planes).
MAX_TILES_AHEAD = 36
#: At the interpreter's exit, how long the sessions' workers may take to finish, in milliseconds.
EXIT_WAIT_MS = 120_000


def _finish_work_at_exit() -> None:
    """A script that ends with a viewer open: the sessions' workers (a model load, an embedding) finish while the
    interpreter still runs them, instead of failing in its shutdown and reporting to Qt objects that are gone (Qt
    then aborted the process). Embeddings stop at their next batch; a load finishes."""
    for session in list(_SESSIONS.values()):
        session.stop()
    from qtpy.QtCore import QThreadPool

    QThreadPool.globalInstance().waitForDone(EXIT_WAIT_MS)


# Before the thread pools stop taking work at exit (they register first, so they are told last), not after: a load
# on a worker uses transformers' pool.
getattr(threading, "_register_atexit", atexit.register)(_finish_work_at_exit)


def time_decoder(predictor: Predictor, plane, limits, rgb, frame) -> None:
    """Decode one point in the middle of ``frame`` (embedded) of ``plane`` a few times: the first pays the decoder's
    first-call costs before the first click; the quickest is its first timing (see
    :meth:`Predictor.decode_seconds`), taken while the viewer waits for nothing (a repaint meanwhile slows one)."""
    with predictor.locked():
        predictor.set_image(plane, contrast_limits=limits, rgb=rgb)
        middle = [[(frame.row0 + frame.row1 - 1) / 2, (frame.col0 + frame.col1 - 1) / 2]]
        try:
            for _ in range(4):
                predictor.predict(points=middle, frame=frame, grow=False)
        except (ValueError, RuntimeError) as error:  # no timing: prompts go to workers; the embedding stands
            _log.info("The decoder's first timing failed: %s", error)


def session_for(viewer) -> ModelSession:
    """The model session of ``viewer``, made on first use."""
    session = _SESSIONS.get(viewer)
    if session is None:
        session = _SESSIONS[viewer] = ModelSession()
    return session


class ModelSession:
    """The model of one viewer and the work that runs on it.

    Signals:
        loading(str): a checkpoint started loading (its name).
        loaded(object): a :class:`Predictor` is ready (the new one).
        failed(str): loading failed (the message, already shown to the user).
        embedded(object, tuple, object): ``(image layer, plane index, encoder ran)`` for every finished embedding
            (None: the view holds too many tiles to embed ahead; each is embedded when a prompt needs it).

    Attributes:
        predictor: the loaded predictor, or None.
        series: the :class:`~napari_sam.batch.series.Series` open in the viewer's Image series dock, or None.
        name: the checkpoint it was loaded from ("" before any).
        cache_bytes: the embedding cache's budget, applied to every predictor the session loads.
    """

    loading = Signal(str)
    loaded = Signal(object)
    failed = Signal(str)
    embedded = Signal(object, tuple, object)

    def __init__(self):
        self.predictor: Predictor | None = None
        self.name = ""
        self.cache_bytes = 1 << 30
        self.tiling = TilingSettings()
        self.store_folder: str | None = ""  # None: no store; "": the per-user cache folder
        self.store_gb = DEFAULT_STORE_GB
        self.store = None
        try:  # embeddings are kept on disk by default, in the per-user cache folder
            self.set_store("", DEFAULT_STORE_GB)
        except (ValueError, PermissionError):
            pass  # a read-only home: memory only (the dock's store line says so)
        self._workers: set = set()
        self._cancels: dict = {}  # worker -> the event that cancels it
        self._requests: dict = {}  # caller -> the number of its newest embedding request
        self._load_request = 0  # the number of the newest load
        self._video: tuple | None = None  # (name, device, model, geometry) of the loaded video checkpoint
        self._video_lock = threading.Lock()
        self.series = None  # the image series open in the viewer (the Image series dock), for the Train dock

    def stop(self) -> None:
        """Stop the session's work at its next step: embeddings at their next batch, long runs (segment everything,
        propagation, refinement) as their Cancel does; a load runs to its end."""
        self._load_request += 1
        self._requests = {caller: -1 for caller in self._requests}
        for cancel in self._cancels.values():
            cancel.set()

    @property
    def busy(self) -> bool:
        """Whether a load, an embedding or another task of the session is running."""
        return bool(self._workers)

    def start(self, worker, cancel: threading.Event | None = None) -> None:
        """Start a napari worker, counted in :attr:`busy` until it finishes; ``cancel`` is set by :meth:`stop`."""
        self._workers.add(worker)
        if cancel is not None:
            self._cancels[worker] = cancel

        def finished() -> None:
            self._workers.discard(worker)
            self._cancels.pop(worker, None)

        worker.finished.connect(finished)
        worker.start()

    def set_tiling(self, settings: TilingSettings) -> None:
        """How the session's models see large images (from the next image they are given)."""
        self.tiling = settings
        if self.predictor is not None:
            self.predictor.tiling = settings

    def set_store(self, folder: str | None, gigabytes: float) -> None:
        """Keep embeddings in the store at ``folder`` ("": the per-user cache; None: none), capped at ``gigabytes``.

        Raises:
            ValueError, PermissionError: the folder cannot hold a store (the session keeps none).
        """
        self.store_folder, self.store_gb, self.store = folder, gigabytes, None
        if folder is not None:
            try:
                self.store = EmbeddingStore(folder or None, max_bytes=store_bytes(gigabytes))
            except (ValueError, PermissionError):
                self.store_folder = None
                raise
        if self.predictor is not None:
            self.predictor.store = self.store

    def set_cache_budget(self, megabytes: int) -> None:
        self.cache_bytes = int(megabytes) << 20
        if self.predictor is not None:
            self.predictor.cache.max_bytes = self.cache_bytes

    def load(self, name: str, device: str = "auto", precision: str = "auto") -> None:
        """Load ``name`` on a worker; :attr:`loaded` or :attr:`failed` tells the outcome. When loads overlap (two
        docks, or Load clicked twice), the newest request wins: an older one's result is dropped."""
        self._load_request += 1
        request = self._load_request
        self.loading.emit(name)
        bar = progress(total=0, desc=f"Loading {name}")

        def loaded(predictor: Predictor) -> None:
            if request != self._load_request:
                return  # a newer load was asked for meanwhile
            predictor.cache.max_bytes = self.cache_bytes
            predictor.tiling, predictor.store = self.tiling, self.store
            self.predictor, self.name = predictor, name
            self.loaded.emit(predictor)

        def failed(error: Exception) -> None:
            if request == self._load_request:
                self.failed.emit(str(error))

        self.start(create_worker(Predictor.from_pretrained, name, device=device, dtype=precision,
                                 _start_thread=False,
                                 _connect={"returned": loaded, "errored": failed, "finished": bar.close}))

    def embed(self, caller, layer, index: tuple[int, ...], view, on_error, region=None, prefetch=()) -> None:
        """Embed the plane ``view()`` of ``layer`` at ``index`` on a worker (on a large plane seen in tiles, the
        tiles over ``region``; none when more than :data:`MAX_TILES_AHEAD` would be needed: they are embedded when a
        prompt needs them), with a progress bar; then the planes of ``prefetch`` (``[(index, view), ...]``) in the
        background. Only the newest request of each ``caller`` reports :attr:`embedded`; ``on_error(error)`` is
        called for a failed request that is still the newest."""
        predictor = self.predictor
        if predictor is None:
            return
        request = self._requests[caller] = self._requests.get(caller, 0) + 1
        limits, rgb = tuple(layer.contrast_limits), layer.rgb
        bar = progress(total=0, desc="Embedding image")

        def work():
            plan = predictor.set_image(view(), contrast_limits=limits, rgb=rgb)  # the shown plane is current
            frames = predictor.frames(region, plan)
            if len(frames) > MAX_TILES_AHEAD:
                return None  # too many for now: a prompt embeds its own tile
            ran = False
            if self._requests.get(caller) == request:
                for done, total, computed in predictor.embedding_steps(frames, plan):
                    ran = computed > 0
                    yield done, total
                    if self._requests.get(caller) != request:
                        break  # a newer request took over
            if frames and predictor.decode_seconds() is None and predictor.concept is None:
                time_decoder(predictor, view(), limits, rgb, frames[0])
            return ran

        def step(counts) -> None:
            bar.total, bar.n = counts[1], counts[0]
            bar.refresh()

        def done(ran_encoder: bool) -> None:
            if self._requests.get(caller) == request:
                self.embedded.emit(layer, index, ran_encoder)
                self._prefetch(predictor, prefetch, limits, rgb, region,
                               stale=lambda: self._requests.get(caller) != request)

        def failed(error: Exception) -> None:
            if self._requests.get(caller) == request:
                on_error(error)

        self.start(create_worker(work, _start_thread=False,
                                 _connect={"yielded": step, "returned": done, "errored": failed,
                                           "finished": bar.close}))

    def _prefetch(self, predictor: Predictor, planes, limits, rgb, region, stale) -> None:
        """Embed ``planes`` (``[(index, view), ...]``) ahead on a worker, until ``stale()`` (a newer request of
        their caller, or :meth:`stop`) ends it at the next encoder batch."""
        if not planes:
            return

        def work():  # the planes' frames in encoder batches (on a GPU, several planes at once)
            predictor.prefetch([view() for _, view in planes], limits, rgb, region, max_frames=MAX_TILES_AHEAD,
                               cancel=stale)

        self.start(create_worker(work, _start_thread=False,
                                 _connect={"errored": lambda error: None}))  # a failed prefetch costs nothing

    def video_model(self, name: str, device):
        """(model, geometry) of the SAM2-family video checkpoint ``name`` on ``device``, loaded on first use.

        Call it from a worker thread: loading takes seconds."""
        device = resolve_device(device)
        with self._video_lock:
            if self._video is None or self._video[:2] != (name, device):
                model, geometry, _ = load_video_model(name, device=device)
                self._video = (name, device, model, geometry)
            return self._video[2:]

    @property
    def loaded_video_model(self):
        """The video model loaded so far, or None."""
        return None if self._video is None else self._video[2]
