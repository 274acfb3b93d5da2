"""The synthetic microscopy looks tiny-cells is trained and checked on."""

import numpy as np
import pytest

from napari_sam.testing.synthetic_microscopy import LOOKS, MIX, synthetic_scene, synthetic_stack


def diameters(labels: np.ndarray) -> np.ndarray:
    areas = np.bincount(labels.ravel())[1:]
    return 2 * np.sqrt(areas[areas > 0] / np.pi)


@pytest.mark.parametrize("look", sorted(LOOKS))
def test_every_look_is_reproducible_labelled_and_visible(look):
    image, labels, name = synthetic_scene((200, 260), look, seed=7, dtype=np.uint16)
    again, same_labels, _ = synthetic_scene((200, 260), look, seed=7, dtype=np.uint16)
    assert name == look and image.dtype == np.uint16 and labels.dtype == np.uint16
    assert image.shape == labels.shape == (200, 260)
    assert np.array_equal(image, again) and np.array_equal(labels, same_labels)
    assert not np.array_equal(image, synthetic_scene((200, 260), look, seed=8, dtype=np.uint16)[0])
    ids = np.unique(labels)[1:]
    assert len(ids) >= 2 and ids.max() <= 10_000
    inside, outside = image[labels > 0].astype(float).mean(), image[labels == 0].astype(float).mean()
    if LOOKS[look].kind == "phase":  # dark bodies on a grey field
        assert inside < outside
    else:
        assert inside > 1.2 * outside, (inside, outside)


def test_sizes_density_and_touching_follow_the_look():
    small = diameters(synthetic_scene((512, 512), "small", seed=0)[1])
    large = diameters(synthetic_scene((512, 512), "large", seed=0)[1])
    assert 5 <= np.median(small) <= 16 and 30 <= np.median(large) <= 85
    _, crowded, _ = synthetic_scene((512, 512), "crowded", seed=0)
    _, sparse, _ = synthetic_scene((512, 512), "large", seed=0)
    assert (crowded > 0).mean() > 0.3
    touching = (crowded[:, :-1] > 0) & (crowded[:, 1:] > 0) & (crowded[:, :-1] != crowded[:, 1:])
    assert touching.sum() > 100
    # the scene scales with the image: twice the side, twice the diameters
    twice = np.median(diameters(synthetic_scene((512, 512), "large", seed=3)[1]))
    once = np.median(diameters(synthetic_scene((256, 256), "large", seed=3)[1]))
    assert 1.5 < twice / once < 2.6


def test_random_mix_draws_looks_and_dtypes():
    scenes = [synthetic_scene((96, 96), "random", seed=s) for s in range(40)]
    assert {name for _, _, name in scenes} <= set(MIX) and len({name for _, _, name in scenes}) >= 6
    assert {image.dtype for image, _, _ in scenes} == {np.dtype(np.uint8), np.dtype(np.uint16),
                                                      np.dtype(np.float32)}
    sixteen = [image for image, _, _ in scenes if image.dtype == np.uint16]
    assert max(int(image.max()) for image in sixteen) > 4000  # more than 12 bits used in some
    assert min(int(image.max()) for image in sixteen) < 4096  # fewer in others


def test_stack_objects_grow_and_shrink_through_z():
    volume, labels, _ = synthetic_stack((16, 128, 128), "nuclei", seed=2, dtype=np.float32)
    assert volume.shape == labels.shape == (16, 128, 128) and volume.dtype == np.float32
    cell = int(np.bincount(labels.ravel())[1:].argmax()) + 1
    sections = [(labels[z] == cell).sum() for z in range(16)]
    assert 0 in sections and max(sections) > 3 * min(s for s in sections if s > 0)
    assert not np.array_equal(volume[0], volume[1])


def test_unknown_look_is_named():
    with pytest.raises(ValueError, match="'sparkly'"):
        synthetic_scene(look="sparkly")


def test_held_out_matching_counts_objects_and_segments():
    from napari_sam.testing.held_out import matched

    truth = np.zeros((20, 20), np.uint16)
    truth[2:8, 2:8], truth[10:18, 10:18], truth[0:2, 15:20] = 1, 2, 3
    found = np.zeros((20, 20), np.uint32)
    found[2:8, 2:7] = 5  # IoU 30/36 with object 1
    found[10:13, 10:18] = 6  # IoU 24/64 with object 2: below 0.5
    found[15:20, 0:5] = 7  # on nothing
    assert matched(truth, found) == (3, 1, 3, 1)
    assert matched(truth, found, threshold=0.3) == (3, 2, 3, 2)
