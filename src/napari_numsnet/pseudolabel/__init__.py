"""k-means pseudo-labels of the DRSegUNet thesis: lung mask, clusters, cleanup (pure: no training).

The self-learning loop is :mod:`napari_numsnet.workflows.selflearn`.
"""

from ..data.hounsfield import looks_like_hounsfield
from .cleanup import clean_labels, line_element
from .kmeans import assign_clusters, cluster_intensities, kmeans_pseudolabels
from .lungmask import body_mask, find_lungs, lung_mask
from .records import KMeansConfig, PseudoLabelResult

__all__ = [
    "KMeansConfig",
    "PseudoLabelResult",
    "assign_clusters",
    "body_mask",
    "clean_labels",
    "cluster_intensities",
    "find_lungs",
    "kmeans_pseudolabels",
    "line_element",
    "looks_like_hounsfield",
    "lung_mask",
]
