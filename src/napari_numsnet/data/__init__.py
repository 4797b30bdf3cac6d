"""From stacks to training batches: preprocessing, slice choice, batches, augmentation."""

from napari_numsnet.data.augment import affine_matrices, random_affine, random_affine_patch
from napari_numsnet.data.dataset import (
    Batch,
    TrainingStack,
    count_batches,
    iter_batches,
    validate_pair,
)
from napari_numsnet.data.hounsfield import HU_AIR_BELOW, HU_TISSUE_ABOVE, looks_like_hounsfield
from napari_numsnet.data.preprocess import (
    PAD_MULTIPLE,
    Preprocessor,
    apply_window,
    clip_percentiles,
    minmax,
    resize_stack,
    zscore,
)
from napari_numsnet.data.slices import (
    STRATEGIES,
    SliceSplit,
    annotated_slices,
    n_train_slices,
    select_slices,
)

__all__ = [
    "HU_AIR_BELOW",
    "HU_TISSUE_ABOVE",
    "PAD_MULTIPLE",
    "STRATEGIES",
    "Batch",
    "Preprocessor",
    "SliceSplit",
    "TrainingStack",
    "affine_matrices",
    "annotated_slices",
    "apply_window",
    "clip_percentiles",
    "count_batches",
    "iter_batches",
    "looks_like_hounsfield",
    "minmax",
    "n_train_slices",
    "random_affine",
    "random_affine_patch",
    "resize_stack",
    "select_slices",
    "validate_pair",
    "zscore",
]
