"""Long runs on a worker thread with a napari progress bar, a Run and a Cancel button."""

from __future__ import annotations

import threading
from collections.abc import Callable

from napari.qt.threading import create_worker
from napari.utils import progress
from napari.utils.notifications import show_error
from qtpy.QtCore import QTimer

from ..core.errors import SegmentationCancelled


def plane_progress(report: Callable[[int, int], None], number: int, count: int) -> Callable[[int, int], None]:
    """A ``progress(done, total)`` for plane ``number`` of ``count`` that reports the whole run's progress."""
    return lambda done, total: report(number * total + done, count * total)


class CancellableTask:
    """Runs ``work(report, cancelled)`` on a worker, one run at a time, between a Run and a Cancel button.

    ``work`` calls ``report(done, total)`` from its thread (a QTimer moves the progress bar on the UI thread)
    and checks ``cancelled()`` between steps. Its return value goes to ``on_result`` on the UI thread. A
    cancelled run (:class:`SegmentationCancelled`) or a failure is reported through ``show_status`` and changes
    nothing else.
    """

    def __init__(self, description: str, run_button, cancel_button, start_worker: Callable,
                 show_status: Callable[[str], None]):
        self.description = description
        self.run_button, self.cancel_button = run_button, cancel_button
        self.start_worker, self.show_status = start_worker, show_status
        self.cancelled = threading.Event()
        self.closed = False  # set when the dock goes away: nothing is shown after that
        cancel_button.enabled = False
        cancel_button.changed.connect(self.cancelled.set)

    def close(self) -> None:
        """The dock goes away: a run in progress is cancelled at its next step, and nothing is shown after."""
        self.closed = True
        self.cancelled.set()

    def run(self, work: Callable, on_result: Callable, on_failure: Callable | None = None) -> None:
        """Run ``work(report, cancelled)``; its result goes to ``on_result``, and ``on_failure()`` is called after a
        cancelled or failed run (to clean up)."""
        self.cancelled.clear()
        bar = progress(total=0, desc=self.description)
        counts = [0, 0]

        def report(done: int, total: int) -> None:
            counts[:] = [done, total]

        def move_bar() -> None:
            if counts[1] and bar.total != counts[1]:
                bar.total = counts[1]
            bar.n = counts[0]
            bar.refresh()

        timer = QTimer()
        timer.timeout.connect(move_bar)
        timer.start(100)
        self.run_button.enabled, self.cancel_button.enabled = False, True

        def finished() -> None:
            timer.stop()
            bar.close()
            if not self.closed:
                self.run_button.enabled, self.cancel_button.enabled = True, False

        def returned(result) -> None:
            if not self.closed:
                on_result(result)
            elif on_failure is not None:
                on_failure()  # finished after its dock went away: nothing shows the result, so it is cleaned up

        def failed(error: Exception) -> None:
            if on_failure is not None:
                on_failure()
            if self.closed:
                return
            if isinstance(error, SegmentationCancelled):
                self.show_status(f"{self.description} cancelled: nothing was changed.")
            else:
                self.show_status(f"{self.description} failed.")
                show_error(f"{self.description} failed: {error}")

        self.start_worker(create_worker(work, report, self.cancelled.is_set, _start_thread=False,
                                        _connect={"returned": returned, "errored": failed, "finished": finished}),
                          self.cancelled)
