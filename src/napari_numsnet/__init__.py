"""napari-numsnet: few-shot segmentation of 3D medical image stacks.

NUMSnet (UNet++ whose nested features travel from slice to slice along the stack),
DRSegUNet, the baselines they are compared with, k-means pseudo-labels and a
correct-and-retrain loop, as a library, a command line and a napari plugin.
"""

__version__ = "0.1.0"
