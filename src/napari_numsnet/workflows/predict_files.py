"""Predicting files: stacks of the inputs, output names, probabilities, the batch run."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_numsnet.config import (
    PredictConfig,
)
from napari_numsnet.engine.checkpoint import Checkpoint
from napari_numsnet.engine.predict import Prediction, predict_volume
from napari_numsnet.errors import NumsnetError
from napari_numsnet.io.atomic import atomic_path
from napari_numsnet.io.labels import write_labels
from napari_numsnet.io.naming import labels_name, probabilities_path
from napari_numsnet.io.volume import EXTENSIONS, read_volume
from napari_numsnet.workflows.prediction import with_checkpoint_defaults

#: Window applied to CT in Hounsfield units before min-max scaling (HU).


def stack_files(inputs: Sequence[str | Path]) -> list[Path]:
    """Every readable stack among ``inputs`` (files, or folders searched one level deep)."""
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files += sorted(
                p
                for p in item.iterdir()
                if p.is_file() and is_stack(p) and not p.name.startswith(".")
            )
        elif item.is_file():
            files.append(item)
        else:
            raise NumsnetError(f"{item} does not exist.", "Give existing files or folders.")
    if not files:
        raise NumsnetError(
            f"No image stack found in {', '.join(map(str, inputs))}.",
            f"Give files ending in {', '.join(EXTENSIONS)}.",
        )
    return files


def is_stack(path: Path) -> bool:
    """Whether ``path`` has the extension of a readable stack."""
    return any(path.name.lower().endswith(ext) for ext in EXTENSIONS)


def output_name(path: Path) -> str:
    """``name_labels.<ext>``: the file name of the label stack predicted from ``path``."""
    return labels_name(path)


def prediction_targets(
    inputs: Sequence[str | Path], output: str | Path
) -> list[tuple[Path, Path]]:
    """``(stack, label file)`` for every stack of ``inputs`` predicted into the folder
    ``output``.

    Outputs of an earlier run that lie among the inputs (an output folder that is also
    an input) are no new inputs.

    Raises
    ------
    NumsnetError
        No stack found, an input missing, or two inputs that would write the same
        output file (same file name in different folders).
    """
    output = Path(output)
    files = stack_files(inputs)
    targets = {(output / output_name(p)).resolve() for p in files}
    pairs: list[tuple[Path, Path]] = []
    seen: dict[str, Path] = {}
    for path in files:
        if path.resolve() in targets:
            continue
        name = output_name(path)
        if name in seen:
            raise NumsnetError(
                f"{seen[name]} and {path} would both be written to {output / name}.",
                "Rename one of them, or predict the folders into separate outputs.",
            )
        seen[name] = path
        pairs.append((path, output / name))
    return pairs


def make_predictor(
    checkpoint: Checkpoint | Any, config: PredictConfig, probabilities: bool = False
) -> Callable[[np.ndarray], Prediction]:
    """``image (Z, H, W) -> Prediction`` for many stacks: a checkpoint's model is built
    once; any other predictor (a :class:`~napari_numsnet.workflows.cascade.Cascade`) is called
    through its ``predict(image, config, probabilities)``."""
    if isinstance(checkpoint, Checkpoint):
        model = checkpoint.build_model()
        config = with_checkpoint_defaults(config, checkpoint)

        def run(image: np.ndarray) -> Prediction:
            return predict_volume(
                model, image, checkpoint.preprocess, config, return_probabilities=probabilities
            )

        return run
    return lambda image: checkpoint.predict(image, config, probabilities=probabilities)


def write_probabilities(labels_path: str | Path, probabilities: np.ndarray) -> Path:
    """Save ``(C, Z, H, W)`` probabilities atomically as ``<stem>_probabilities.npy``
    beside the label file ``labels_path``."""
    target = probabilities_path(labels_path)
    with atomic_path(target) as tmp:
        np.save(tmp, probabilities)
    return target


def predict_files(
    checkpoint: Checkpoint | Any,
    inputs: Sequence[str | Path],
    output: str | Path,
    config: PredictConfig = PredictConfig(),
    stack_axis: int | None = None,
    probabilities: bool = False,
    overwrite: bool = False,
) -> list[tuple[Path, Path]]:
    """Segment every stack of ``inputs``; write each label stack with its geometry.

    With one input file, ``output`` may be the output file; otherwise it is a folder
    receiving ``<name>_labels.<ext>`` (see :func:`prediction_targets`). Existing outputs
    are skipped unless ``overwrite`` (so an interrupted run can be restarted). Every file
    is written atomically. ``checkpoint`` may also be a predictor with
    ``predict(image, config, probabilities)``, such as a
    :class:`~napari_numsnet.workflows.cascade.Cascade`.
    """
    files = stack_files(inputs)
    output = Path(output)
    if len(files) == 1 and is_stack(output) and not output.is_dir():
        pairs = [(files[0], output)]
    else:
        output.mkdir(parents=True, exist_ok=True)
        pairs = prediction_targets(files, output)
    run = make_predictor(checkpoint, config, probabilities)
    for path, target in pairs:
        if target.exists() and not overwrite:
            continue
        volume = read_volume(path, stack_axis=stack_axis)
        result = run(volume.data)
        write_labels(target, result.labels, volume.meta)
        if probabilities and result.probabilities is not None:
            write_probabilities(target, result.probabilities)
    return pairs
