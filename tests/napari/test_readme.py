"""The README's "In Python" example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).parents[2] / "README.md"


def python_block() -> str:
    text = README.read_text()
    match = re.search(r"## In Python\n+```python\n(.*?)```", text, flags=re.S)
    assert match, "the README has no 'In Python' block"
    return match.group(1)


@pytest.mark.slow
def test_the_readme_python_block_runs(capsys):
    namespace: dict = {}
    exec(compile(python_block(), str(README), "exec"), namespace)
    prediction, sample = namespace["prediction"], namespace["sample"]
    assert prediction.labels.shape == sample.labels.shape
    assert set(np.unique(prediction.labels)) <= set(range(6))
    assert "best" in namespace["checkpoint"].record
    assert str(sample.labels.shape) in capsys.readouterr().out
