"""RoIAlign in torch against the reference kernel's rules, written out here pixel by pixel (torchvision's
``roi_align_kernel``: box scaled and, if aligned, shifted by half a pixel; unaligned boxes at least 1 x 1; an
adaptive ceil(side / bins) sampling grid; bilinear samples, zero beyond one pixel outside, clamped within it)."""

import math

import numpy as np
import pytest
import torch

from napari_sam.core.model.roi_align import roi_align


def bilinear(feature, y, x):
    channels, height, width = feature.shape
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return np.zeros(channels)
    y, x = max(y, 0.0), max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= height - 1:
        y_high = y_low = height - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_high = x_low = width - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    hy, hx = 1 - ly, 1 - lx
    return (hy * hx * feature[:, y_low, x_low] + hy * lx * feature[:, y_low, x_high]
            + ly * hx * feature[:, y_high, x_low] + ly * lx * feature[:, y_high, x_high])


def reference(feature, box, out, scale, ratio, aligned):
    offset = 0.5 if aligned else 0.0
    x1, y1, x2, y2 = (v * scale - offset for v in box)
    width, height = x2 - x1, y2 - y1
    if not aligned:
        width, height = max(width, 1.0), max(height, 1.0)
    bin_h, bin_w = height / out, width / out
    grid_h = ratio if ratio > 0 else math.ceil(height / out)
    grid_w = ratio if ratio > 0 else math.ceil(width / out)
    count = max(grid_h * grid_w, 1)
    result = np.zeros((feature.shape[0], out, out))
    for ph in range(out):
        for pw in range(out):
            total = np.zeros(feature.shape[0])
            for iy in range(grid_h):
                y = y1 + ph * bin_h + (iy + 0.5) * bin_h / grid_h
                for ix in range(grid_w):
                    x = x1 + pw * bin_w + (ix + 0.5) * bin_w / grid_w
                    total += bilinear(feature, y, x)
            result[:, ph, pw] = total / count
    return result


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("ratio", [-1, 2])
@pytest.mark.parametrize("scale", [1.0, 0.25])
def test_matches_the_reference_kernel(aligned, ratio, scale):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(2, 3, 9, 11))
    boxes = [np.array([[0.5, 1.0, 8.2, 7.5], [3.0, 3.0, 3.4, 3.2], [-2.0, -1.5, 4.0, 3.0]]) / scale,
             np.array([[6.0, 5.0, 12.5, 10.0]]) / scale]  # inside, tiny, partly outside; past the border
    ours = roi_align(torch.tensor(features, dtype=torch.float32), [torch.tensor(b, dtype=torch.float32) for b in boxes],
                     7, spatial_scale=scale, sampling_ratio=ratio, aligned=aligned)
    expected = np.stack([reference(features[b], box, 7, scale, ratio, aligned)
                         for b, per_image in enumerate(boxes) for box in per_image])
    assert ours.shape == (4, 3, 7, 7)
    np.testing.assert_allclose(ours.numpy(), expected, atol=1e-5)


def test_batch_index_form_and_no_boxes():
    features = torch.randn(2, 4, 6, 6)
    listed = roi_align(features, [torch.tensor([[1.0, 1.0, 4.0, 5.0]]), torch.tensor([[0.0, 2.0, 5.0, 5.0]])], (3, 2))
    indexed = roi_align(features, torch.tensor([[0, 1.0, 1.0, 4.0, 5.0], [1, 0.0, 2.0, 5.0, 5.0]]), (3, 2))
    assert listed.shape == (2, 4, 3, 2) and torch.equal(listed, indexed)
    assert roi_align(features, [torch.zeros((0, 4)), torch.zeros((0, 4))], 7).shape == (0, 4, 7, 7)
