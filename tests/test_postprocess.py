"""The largest connected component per class."""

from __future__ import annotations

import numpy as np

from napari_numsnet.engine.postprocess import choose_largest_component, keep_largest_component


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


def test_the_validation_slices_choose_the_classes_that_are_one_piece():
    reference = np.zeros((6, 12, 12), np.uint8)
    reference[1:5, 2:6, 2:6] = 1  # class 1: one organ
    reference[1:5, 8:11, 1:4] = 2  # class 2: a pair of organs (two pieces)
    reference[1:5, 8:11, 8:11] = 2
    predicted = reference.copy()
    predicted[2, 0, 11] = 1  # a stray island of class 1 on a scored slice
    predicted[2, 6:8, 5:7] = 0  # a dent in class 1, so that its Dice is not 1 anyway
    scored = np.zeros(6, bool)
    scored[[2, 3]] = True
    choice = choose_largest_component([predicted], [reference], [scored], num_values=4)
    assert choice.classes == (1,)  # the island goes; removing a kidney would cost Dice
    assert choice.dice_with[1] > choice.dice_without[1]
    assert choice.dice_with[2] < choice.dice_without[2]
    assert 3 not in choice.dice_without  # neither predicted nor present: no candidate
    unscored = np.zeros(6, bool)
    unscored[[0, 5]] = True  # the island's slice is not scored: nothing to gain
    again = choose_largest_component([predicted], [reference], [unscored], num_values=4)
    assert again.classes == ()


def test_an_island_off_the_scored_slices_still_counts_through_its_3d_component():
    reference = np.zeros((5, 8, 8), np.uint8)
    reference[0:5, 1:4, 1:4] = 1
    predicted = reference.copy()
    predicted[1:4, 6:8, 6:8] = 1  # a second piece spanning slices 1-3
    scored = np.array([False, False, True, False, False])
    choice = choose_largest_component([predicted], [reference], [scored], num_values=2)
    assert choice.classes == (1,)
    assert choice.dice_with[1] == 1.0
