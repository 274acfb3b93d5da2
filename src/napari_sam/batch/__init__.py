"""Batch runs over whole datasets on dask.distributed: :func:`run_batch`, which the ``napari-sam segment`` and
``napari-sam embed`` commands (:mod:`napari_sam.cli.batch_runs`) call.

    from napari_sam.batch import RunConfig, run_batch
    config = RunConfig.load("settings.json")        # or RunConfig(); exported by the Segment everything dock
    summary = run_batch(["images/*.tif"], "results", config, workers=2)
    summary.failures                                  # [] when every image was done
"""

from .config import BatchSettings, RunConfig
from .runner import RunSummary, run_batch

__all__ = ["BatchSettings", "RunConfig", "RunSummary", "run_batch"]
