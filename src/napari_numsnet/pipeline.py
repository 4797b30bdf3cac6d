"""The annotate-train-predict loop, written out in order.

    volume on disk -> read (array + geometry) -> preprocess -> choose slices to annotate
      -> train (progress events, stop flag) -> predict the stack in order
      -> correct -> retrain -> export (same geometry as the input)

The command line, the napari widgets, the benchmarks and the tests all call these
functions; none of them imports napari or Qt.

This module gathers them in one namespace; each lives in :mod:`napari_numsnet.workflows`
(``stacks``, ``training``, ``prediction``, ``loop``, ``predict_files``, ``sample``).
"""

from __future__ import annotations

from napari_numsnet.workflows.loop import LoopResult, annotate_train_predict
from napari_numsnet.workflows.predict_files import (
    is_stack,
    make_predictor,
    output_name,
    predict_files,
    prediction_targets,
    stack_files,
    write_probabilities,
)
from napari_numsnet.workflows.prediction import evaluate, predict
from napari_numsnet.workflows.sample import Sample, load_sample, sample_dir
from napari_numsnet.workflows.stacks import (
    CT_WINDOW,
    AnnotatedStack,
    build_training_data,
    default_preprocess,
    model_for_preset,
    plan_slices,
)
from napari_numsnet.workflows.training import train

__all__ = [
    "CT_WINDOW",
    "AnnotatedStack",
    "LoopResult",
    "Sample",
    "annotate_train_predict",
    "build_training_data",
    "default_preprocess",
    "evaluate",
    "is_stack",
    "load_sample",
    "make_predictor",
    "model_for_preset",
    "output_name",
    "plan_slices",
    "predict",
    "predict_files",
    "prediction_targets",
    "sample_dir",
    "stack_files",
    "train",
    "write_probabilities",
]
