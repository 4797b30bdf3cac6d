"""The labelled stacks of a benchmark: image/label pairs, the pool of patients, and the
slices a user would annotate in each stack.

Shared by ``accuracy_stacks.py`` (training and scoring) and ``loop.py`` (the correction
loop); any folder with ``imagesX/`` and ``labelsX/`` (same file names) works.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_numsnet import pipeline
from napari_numsnet.config import SamplingConfig
from napari_numsnet.io import read_labels, read_volume

#: Label names of ACDC (0 background, 1 RV, 2 myocardium, 3 LV).
ACDC_CLASSES = ("background", "right ventricle", "myocardium", "left ventricle")


def stack_pairs(folder: Path, split: str) -> list[tuple[Path, Path]]:
    """``(image, labels)`` files of ``folder/images<split>`` and ``folder/labels<split>``."""
    images = sorted((folder / f"images{split}").glob("*.nii*"))
    pairs = [(p, folder / f"labels{split}" / p.name) for p in images]
    missing = [str(lab) for _, lab in pairs if not lab.exists()]
    if not pairs or missing:
        raise SystemExit(f"no image/label pairs in {folder} split {split}: missing {missing[:3]}")
    return pairs


def patient_of(path: Path) -> str:
    """``patient003_frame01.nii.gz`` -> ``patient003`` (the file stem otherwise)."""
    return path.name.split("_")[0]


def load_pool(
    pairs: list[tuple[Path, Path]], patients: int | None
) -> list[pipeline.AnnotatedStack]:
    """The stacks of the first ``patients`` patients (sorted by name), all of them if None."""
    keep = sorted({patient_of(p) for p, _ in pairs})
    if patients is not None:
        keep = keep[:patients]
    stacks = []
    for image_path, label_path in pairs:
        if patient_of(image_path) not in keep:
            continue
        volume = read_volume(image_path)
        labels = read_labels(label_path, like=volume.meta)
        stacks.append(pipeline.AnnotatedStack(volume.data, labels, name=image_path.name))
    return stacks


def annotate(
    stacks: list[pipeline.AnnotatedStack],
    regime: str,
    fraction: float,
    seed: int,
    strategy: str = SamplingConfig().strategy,
    validation_every: int = 0,
) -> tuple[list[pipeline.AnnotatedStack], int]:
    """The stacks with the slices a user would annotate (``strategy`` at ``fraction``), or all.

    ``validation_every`` k > 0 also annotates the planner's validation slice of every k-th
    stack (held out for choosing the best weights, as the plugin does).
    """
    out, n = [], 0
    for index, stack in enumerate(stacks):
        z = len(stack.image)
        val: np.ndarray = np.zeros(0, np.int64)
        if regime == "all":
            chosen = np.arange(z)
        else:
            split = pipeline.plan_slices(z, SamplingConfig(strategy, fraction, seed=seed))
            chosen = np.asarray(split.train)
            if validation_every and index % validation_every == 0:
                val = np.asarray(split.val)
        n += len(chosen)
        annotated = np.union1d(chosen, val)
        out.append(pipeline.AnnotatedStack(stack.image, stack.labels, annotated, val, stack.name))
    return out, n
