"""The defects of the review that found the model contract missing, one test each."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_numsnet.config import ModelConfig, PreprocessConfig
from napari_numsnet.data.hounsfield import looks_like_hounsfield
from napari_numsnet.data.preprocess import Preprocessor
from napari_numsnet.engine.checkpoint import Checkpoint, transfer_model
from napari_numsnet.engine.losses import get_loss
from napari_numsnet.engine.output_loss import supervised_loss
from napari_numsnet.models import create_model
from napari_numsnet.models.blocks import SegmentationOutput
from napari_numsnet.pseudolabel import lungmask
from napari_numsnet.workflows import stacks as stacks_module

TINY = (4, 4, 8, 8, 8)


@pytest.mark.parametrize("name", ["unetsharp", "msdsunet"])
def test_transfer_reinitialises_the_declared_heads_and_keeps_the_rest(name):
    """Defect 1: UNet# and MSDS-UNet heads are not named ``head.``/``side_heads.``."""
    source = create_model(ModelConfig(name, num_classes=3, widths=TINY))
    checkpoint = Checkpoint.from_model(
        source, preprocess=PreprocessConfig(), class_names=list("abc")
    )
    model = transfer_model(checkpoint, 5)
    new = model.state_dict()
    heads = {k for k in new if model.is_head_parameter(k)}
    changed = {k for k in new if new[k].shape != checkpoint.state_dict[k].shape}
    assert changed and changed <= heads
    for key in new.keys() - heads:
        assert torch.equal(new[key], checkpoint.state_dict[key]), key
    assert model.config.num_classes == 5


def test_one_hounsfield_detector_for_preprocessing_and_pseudo_labels():
    """Defect 5: a CT cropped inside the body (-850 .. 400 HU) is HU for both."""
    ct = np.linspace(-850.0, 400.0, 4 * 16 * 16, dtype=np.float32).reshape(4, 16, 16)
    assert looks_like_hounsfield(ct)
    assert lungmask.looks_like_hounsfield is looks_like_hounsfield
    window = Preprocessor(PreprocessConfig()).config  # default config has no fixed window
    assert window.window is None

    assert stacks_module.looks_like_hounsfield is looks_like_hounsfield


def test_local_side_outputs_keep_an_annotated_slice_at_odd_depth():
    """Defect 6: the half-depth head must see the only annotated slice, z = 1."""
    labels = torch.zeros(1, 4, 8, 8, dtype=torch.long)
    labels[0, 1, 2:6, 2:6] = 1
    mask = torch.zeros(1, 4, 8, 8, dtype=torch.bool)
    mask[0, 1] = True
    full = torch.zeros(1, 2, 4, 8, 8, requires_grad=True)
    half = torch.zeros(1, 2, 2, 4, 4, requires_grad=True)
    output = SegmentationOutput(full, None, (full, half))
    loss = supervised_loss(get_loss("dice_ce"), output, labels, True, mask)
    loss.backward()
    assert half.grad is not None and half.grad.abs().sum() > 0
    # The class-1 square is in the half-size target, taken from slice 1.
    assert half.grad[0, 1, 0].abs().sum() > 0


def test_dotted_names_get_their_own_probability_and_label_files(tmp_path):
    """Defect 4: ``1.2.840.1`` and ``1.2.840.2`` both wrote ``1_probabilities.npy``."""
    from napari_numsnet import pipeline, workfolder
    from napari_numsnet.io import naming

    first, second = tmp_path / "1.2.840.1.nii.gz", tmp_path / "1.2.840.2.nii.gz"
    assert pipeline.output_name(first) == "1.2.840.1_labels.nii.gz"
    targets = [tmp_path / pipeline.output_name(p) for p in (first, second)]
    written = [pipeline.write_probabilities(t, np.zeros((2, 1, 2, 2))) for t in targets]
    assert [p.name for p in written] == [
        "1.2.840.1_labels_probabilities.npy",
        "1.2.840.2_labels_probabilities.npy",
    ]
    assert workfolder.image_stem is naming.image_stem
    assert naming.image_stem(first) == "1.2.840.1"


class _FixedPredictor:
    """A predictor with ``predict(image, config, probabilities)`` that labels everything 1."""

    def predict(self, image, config=None, probabilities=False):
        from napari_numsnet.engine.predict import Prediction

        labels = np.ones(image.shape, dtype=np.uint8)
        probs = np.stack([np.zeros(image.shape), np.ones(image.shape)]).astype(np.float32)
        return Prediction(labels, probs if probabilities else None)


def test_predict_returns_full_size_labels_for_predictors_too():
    """Defect 3: a cascade (any predictor) returned only the cut range."""
    from napari_numsnet import pipeline

    image = np.zeros((6, 8, 8), dtype=np.float32)
    part = pipeline.predict(_FixedPredictor(), image, slice_range=(2, 4), probabilities=True)
    assert part.labels.shape == image.shape
    assert part.labels[2:4].all() and not part.labels[:2].any() and not part.labels[4:].any()
    assert part.probabilities.shape == (2, *image.shape)
    assert not part.probabilities[:, :2].any() and part.probabilities[1, 2:4].all()


def test_cascade_probabilities_are_masked_to_the_region():
    """Smaller defect: labels were masked to stage 1's region, probabilities were not."""
    from napari_numsnet.workflows import cascade as cascade_module

    class Region(_FixedPredictor):
        def predict(self, image, config=None, probabilities=False):
            result = super().predict(image, config, probabilities)
            result.labels[:, :4] = 0
            return result

    inner = _FixedPredictor()
    inner.model_config = ModelConfig("unet", num_classes=2)
    result = cascade_module.Cascade(Region(), inner, (1,)).predict(
        np.zeros((2, 8, 8), dtype=np.float32), probabilities=True
    )
    assert not result.labels[:, :4].any()
    np.testing.assert_array_equal(result.probabilities[1, :, :4], 0)
    np.testing.assert_array_equal(result.probabilities[0, :, :4], 1)
    np.testing.assert_array_equal(result.probabilities[1, :, 4:], 1)
