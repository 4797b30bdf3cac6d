"""k-means pseudo-labels and the self-learning loop of the DRSegUNet thesis."""

from ..data.hounsfield import looks_like_hounsfield
from .cleanup import clean_labels, line_element
from .kmeans import assign_clusters, cluster_intensities, kmeans_pseudolabels
from .lungmask import body_mask, find_lungs, lung_mask
from .records import KMeansConfig, PseudoLabelResult
from .selflearn import (
    LevelResult,
    SelfLearningConfig,
    SelfLearningResult,
    freeze_first_layers,
    self_learning,
)

__all__ = [
    "KMeansConfig",
    "LevelResult",
    "PseudoLabelResult",
    "SelfLearningConfig",
    "SelfLearningResult",
    "assign_clusters",
    "body_mask",
    "clean_labels",
    "cluster_intensities",
    "find_lungs",
    "freeze_first_layers",
    "kmeans_pseudolabels",
    "line_element",
    "looks_like_hounsfield",
    "lung_mask",
    "self_learning",
]
