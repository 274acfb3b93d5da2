"""Wall time and peak memory of one call, for the benchmark scripts (imported from their folder)."""

from __future__ import annotations

import os
import threading
import time

import torch

from napari_sam.core.memory import release_freed_memory

PAGE = os.sysconf("SC_PAGE_SIZE")


def resident_bytes() -> int:
    """This process's resident memory (Linux)."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * PAGE


def measured(device: torch.device | str, function, *args, **kwargs):
    """``(seconds, peak resident bytes above the start, peak GPU bytes or None, result)`` of one call.

    Freed memory is handed back to the system first; resident memory is sampled every 5 ms in a thread; on CUDA
    the device is synchronised around the call and its peak allocated memory is reported too."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    release_freed_memory()
    start_memory, peak, running = resident_bytes(), [0], [True]

    def sample():
        while running[0]:
            peak[0] = max(peak[0], resident_bytes())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    result = function(*args, **kwargs)
    if cuda:
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start
    running[0] = False
    sampler.join()
    gpu = torch.cuda.max_memory_allocated(device) if cuda else None
    return elapsed, max(peak[0], resident_bytes()) - start_memory, gpu, result
