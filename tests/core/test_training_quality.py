"""What fine-tuning achieves: the bundled tiny-cells fine-tuned on at most 10 synthetic 512 x 512 images of a look it
does badly on, measured on held-out images of that look it never saw, against the base in the same run.

The look: nuclei as dark objects on a bright background (the synthetic nuclei scenes with their contrast inverted),
as absorption stains and brightfield show them; the bundled model was trained on fluorescence only. Training
images use seeds below ``HELD_OUT``, the measured ones seeds above it (the training scripts never draw those).
"""

import pytest
import torch

from napari_sam import Predictor
from napari_sam.core.settings import TrainingSettings
from napari_sam.core.workflows.training import AnnotatedImage, finetune
from napari_sam.core.workflows.training.validation import measure
from napari_sam.testing.held_out import HELD_OUT
from napari_sam.testing.synthetic_microscopy import synthetic_scene

pytestmark = pytest.mark.slow


def dark_nuclei(seed: int) -> AnnotatedImage:
    image, labels, _ = synthetic_scene((512, 512), "nuclei", seed=seed)
    return AnnotatedImage((image.max() - image).astype(image.dtype), labels, name=f"dark nuclei {seed}")


#: Images to learn from (a fifth of them held out for validation), and the training: decoder-only, by epochs (the
#: same steps on any machine).
IMAGES = 6
SETTINGS = TrainingSettings(encoder="none", epochs=2, learning_rate=2e-3)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(the base's figures, the fine-tuned model's figures, the training result), on two held-out images."""
    base = Predictor.from_pretrained("tiny-cells", device="cpu", dtype=torch.float32)
    result = finetune(base, [dark_nuclei(3000 + i) for i in range(IMAGES)], tmp_path_factory.mktemp("tuned") / "m",
                      SETTINGS)
    tuned = Predictor.from_pretrained(result.out, device="cpu")
    held_out = [dark_nuclei(HELD_OUT + 400 + i) for i in range(2)]
    # segment everything with SAM's grid, which the decoder drives (the instance head is the base's, unchanged), with
    # the thresholds the base recommends and those calibrated for the new decoder
    before = measure(base, held_out, base.recommended.everything.replace(method="grid"))
    return before, measure(tuned, held_out, tuned.recommended.everything.replace(method="grid")), result


def test_decoder_only_fine_tuning_beats_the_base_on_held_out_images(trained):
    base, tuned, result = trained
    print("base", base.to_dict(), "tuned", tuned.to_dict(), result.steps, round(result.seconds))
    assert tuned.click >= base.click + 0.05 and tuned.box >= base.box + 0.03, (base, tuned)
    assert tuned.recall >= base.recall + 0.1 and tuned.f1 > base.f1, (base, tuned)
    assert result.after.score > result.before.score  # on the validation image too
