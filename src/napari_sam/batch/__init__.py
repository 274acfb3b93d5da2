"""Batch runs over whole datasets on dask.distributed: :func:`run_batch`, which the ``napari-sam segment`` and
``napari-sam embed`` commands (:mod:`napari_sam.cli.batch_runs`) call.

    from napari_sam.batch import RunConfig, run_batch
    config = RunConfig.load("settings.json")        # or RunConfig(); exported by the Segment everything dock
    summary = run_batch(["images/*.tif"], "results", config, workers=2)
    summary.failures                                  # [] when every image was done

An image series (:class:`Series`) is the same output folder annotated by hand, image by image; what a person
corrected there is never overwritten by a batch run. :func:`export_coco` and :func:`merged_table` export a series or
batch output folder whole.
"""

from .config import BatchSettings, RunConfig
from .export import export_coco, merged_table
from .output_lock import FolderInUse
from .runner import RunSummary, run_batch
from .series import STATUSES, Series, SeriesImage

__all__ = ["STATUSES", "BatchSettings", "FolderInUse", "RunConfig", "RunSummary", "Series", "SeriesImage",
           "export_coco", "merged_table", "run_batch"]
