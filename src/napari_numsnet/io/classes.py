"""The class table: one name and colour per label value, saved as JSON beside the labels."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from napari_numsnet.errors import NumsnetError
from napari_numsnet.io.atomic import atomic_write_bytes

# Distinct colours for up to ten classes after the background (tab10-like).
DEFAULT_COLORS = (
    "#000000",
    "#e6194b",
    "#3cb44b",
    "#ffe119",
    "#4363d8",
    "#f58231",
    "#911eb4",
    "#46f0f0",
    "#f032e6",
    "#bcf60c",
    "#fabebe",
)


@dataclass(frozen=True)
class ClassTable:
    """Names and colours of the label values ``0..K-1`` (0 is the background).

    Attributes
    ----------
    names
        ``K`` names, background first.
    colors
        ``K`` colours as ``#rrggbb``.
    """

    names: tuple[str, ...]
    colors: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.names) < 2:
            raise NumsnetError(
                f"A class table needs the background and at least one class; got {self.names}.",
                "Add a class name.",
            )
        if len(self.colors) != len(self.names):
            raise NumsnetError(
                f"{len(self.names)} class names but {len(self.colors)} colours.",
                "Give one colour per class, the background first.",
            )
        if len(set(self.names)) != len(self.names):
            raise NumsnetError(
                f"Class names repeat: {self.names}.", "Give each class its own name."
            )

    @classmethod
    def from_names(cls, names: list[str] | tuple[str, ...]) -> ClassTable:
        """Table with default colours; ``names`` starts with the background."""
        colors = [DEFAULT_COLORS[i % len(DEFAULT_COLORS)] for i in range(len(names))]
        colors[0] = DEFAULT_COLORS[0]
        return cls(tuple(names), tuple(colors))

    @classmethod
    def default(cls, num_values: int) -> ClassTable:
        """``background, class 1, ..., class K-1``."""
        return cls.from_names(["background", *(f"class {v}" for v in range(1, num_values))])

    @property
    def num_values(self) -> int:
        return len(self.names)

    def color_dict(self) -> dict[int, str]:
        """``{label value: colour}``, the form napari's Labels layers take."""
        return dict(enumerate(self.colors))

    def to_json(self) -> str:
        rows = [
            {"value": v, "name": n, "color": c}
            for v, (n, c) in enumerate(zip(self.names, self.colors, strict=True))
        ]
        return json.dumps({"classes": rows}, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ClassTable:
        try:
            rows = sorted(json.loads(text)["classes"], key=lambda r: int(r["value"]))
            if [int(r["value"]) for r in rows] != list(range(len(rows))):
                raise ValueError("values must be 0, 1, 2, ... without gaps")
            return cls(tuple(str(r["name"]) for r in rows), tuple(str(r["color"]) for r in rows))
        except (KeyError, TypeError, ValueError) as exc:
            raise NumsnetError(
                f"The class table is not valid ({exc}).",
                'Write {"classes": [{"value": 0, "name": "background", "color": "#000000"}, '
                '{"value": 1, ...}]}.',
            ) from exc


def save_class_table(table: ClassTable, path: str | os.PathLike[str]) -> Path:
    """Write ``table`` as JSON, atomically."""
    path = Path(path)
    atomic_write_bytes(path, table.to_json().encode())
    return path


def load_class_table(path: str | os.PathLike[str]) -> ClassTable:
    """Read a class table written by :func:`save_class_table`."""
    path = Path(path)
    if not path.is_file():
        raise NumsnetError(f"No class table at {path}.", "Give the path of a *.json class table.")
    return ClassTable.from_json(path.read_text())
