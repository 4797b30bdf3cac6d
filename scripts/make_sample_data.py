"""Derive the shipped CT sample from ``../shared/data/ct_abdomen``.

The sample is TotalSegmentator's test CT ``example_ct_sm.nii.gz`` (122 x 101 x 30 voxels,
3 mm, HU) with its label volume ``example_seg.nii.gz`` (TotalSegmentator v2 class map)
merged into five classes. Run from the repository root::

    python scripts/make_sample_data.py
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np

SOURCE = Path("../shared/data/ct_abdomen")
TARGET = Path("src/napari_numsnet/sample_data")

# Sample class -> TotalSegmentator v2 label ids merged into it.
CLASSES: dict[str, list[int]] = {
    "liver": [5],
    "spleen": [1],
    "kidneys": [2, 3],
    "lungs": [10, 11, 12, 13, 14],
    "vertebrae": list(range(25, 51)),
}
COLORS = {
    "background": "#000000",
    "liver": "#c0504d",
    "spleen": "#9b59b6",
    "kidneys": "#f1c40f",
    "lungs": "#3498db",
    "vertebrae": "#ecf0f1",
}


def main() -> None:
    TARGET.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(SOURCE / "example_ct_sm.nii.gz", TARGET / "ct_sample.nii.gz")
    seg = nib.load(SOURCE / "example_seg.nii.gz")
    ids = np.asarray(seg.dataobj)
    labels = np.zeros(ids.shape, dtype=np.uint8)
    for value, (_, source_ids) in enumerate(CLASSES.items(), start=1):
        labels[np.isin(ids, source_ids)] = value
    out = nib.Nifti1Image(labels, seg.affine, seg.header)
    out.set_data_dtype(np.uint8)
    nib.save(out, TARGET / "ct_sample_labels.nii.gz")
    names = ["background", *CLASSES]
    table = {"classes": [{"value": i, "name": n, "color": COLORS[n]} for i, n in enumerate(names)]}
    (TARGET / "ct_sample_classes.json").write_text(json.dumps(table, indent=2) + "\n")
    shutil.copyfile(SOURCE / "LICENSE_repo_Apache-2.0.txt", TARGET / "LICENSE_Apache-2.0.txt")
    counts = {n: int((labels == i).sum()) for i, n in enumerate(names)}
    print(counts)


if __name__ == "__main__":
    main()
