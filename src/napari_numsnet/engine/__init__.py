"""Training and prediction: losses, metrics, progress events, fit(), checkpoints, predict."""

from napari_numsnet.engine.checkpoint import (
    Checkpoint,
    check_compatible,
    load_checkpoint,
    save_checkpoint,
    transfer_model,
)
from napari_numsnet.engine.events import ProgressCallback, TrainEvent, TrainState
from napari_numsnet.engine.predict import (
    Prediction,
    predict_stack,
    predict_volume,
    probabilities_to_labels,
)
from napari_numsnet.engine.trainer import TrainResult, fit

__all__ = [
    "Checkpoint",
    "Prediction",
    "ProgressCallback",
    "TrainEvent",
    "TrainResult",
    "TrainState",
    "check_compatible",
    "fit",
    "load_checkpoint",
    "predict_stack",
    "predict_volume",
    "probabilities_to_labels",
    "save_checkpoint",
    "transfer_model",
]
