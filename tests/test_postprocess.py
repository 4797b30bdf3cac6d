"""The largest connected component per class."""

from __future__ import annotations

import numpy as np

from napari_numsnet.engine.postprocess import keep_largest_component


def test_only_the_largest_component_of_each_chosen_class_stays():
    labels = np.zeros((4, 10, 10), np.uint8)
    labels[0:3, 1:5, 1:5] = 1  # class 1: an organ of 48 voxels
    labels[3, 8, 8] = 1  # and an island far from it
    labels[1, 6:8, 0:2] = 2  # class 2: two blobs, both kept when 2 is not chosen
    labels[1, 0:2, 7:9] = 2
    out = keep_largest_component(labels, [1])
    assert out[3, 8, 8] == 0 and (out[0:3, 1:5, 1:5] == 1).all()
    assert (out == 2).sum() == (labels == 2).sum()
    both = keep_largest_component(labels, [1, 2])
    assert (both == 2).sum() == 4  # the two blobs have 4 voxels each: one is kept
    assert labels[3, 8, 8] == 1 and out.dtype == labels.dtype  # the input is not changed


def test_diagonal_neighbours_are_one_component_and_background_is_no_candidate():
    labels = np.zeros((3, 3, 3), np.int64)
    labels[0, 0, 0] = labels[1, 1, 1] = labels[2, 2, 2] = 3
    assert np.array_equal(keep_largest_component(labels, [0, 3]), labels)
