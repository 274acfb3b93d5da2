"""Shared fixtures: tiny SAM checkpoints with seeded random weights, saved and reloaded like real ones."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from napari_sam.core.random_weights import random_sam, tiny_sam_config  # noqa: E402


def save_tiny_checkpoint(folder, image_size: int, seed: int = 1):
    """Write a tiny randomised SAM checkpoint with its preprocessor config (safetensors) into ``folder``."""
    from transformers import SamProcessor
    from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil

    model = random_sam(tiny_sam_config(image_size), seed=seed)
    model.save_pretrained(folder)
    processor = SamProcessor(image_processor=SamImageProcessorPil(
        size={"longest_edge": image_size}, pad_size={"height": image_size, "width": image_size}))
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    """{image_size: folder} for tiny checkpoints of input size 64 and 256."""
    return {size: save_tiny_checkpoint(tmp_path_factory.mktemp(f"tiny-sam-{size}"), size) for size in (64, 256)}


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_checkpoints):
    """The 64-pixel tiny checkpoint's folder."""
    return tiny_checkpoints[64]


def blob_image(shape, seed: int = 0, n_blobs: int = 12) -> np.ndarray:
    """Smooth float image in [0, 1] of ``shape`` (H, W): Gaussian blobs of varied size over a gradient."""
    rng = np.random.default_rng(seed)
    height, width = shape
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    image = 0.2 * rows / height + 0.1 * cols / width
    for _ in range(n_blobs):
        r, c = rng.uniform(0, height), rng.uniform(0, width)
        sigma = rng.uniform(0.04, 0.15) * min(height, width)
        image += rng.uniform(0.3, 1.0) * np.exp(-((rows - r) ** 2 + (cols - c) ** 2) / (2 * sigma**2))
    image += rng.normal(0, 0.01, shape)
    image -= image.min()
    return (image / image.max()).astype(np.float32)
