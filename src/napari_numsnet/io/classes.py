"""The class table: one name and colour per label value, saved as JSON beside the labels."""

from __future__ import annotations

import colorsys
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from napari_numsnet.errors import NumsnetError
from napari_numsnet.io.atomic import atomic_write_bytes

# Saturated colours that stay visible on grey-level images (CT, MRI: dark to near-white
# grey), told apart from each other; the background comes first.
DEFAULT_COLORS = (
    "#000000",
    "#e6194b",
    "#3cb44b",
    "#ffe119",
    "#4363d8",
    "#f58231",
    "#b04ee0",
    "#42d4f4",
    "#f032e6",
    "#bfef45",
    "#2fb5a0",
    "#ff8fab",
    "#8c7bff",
    "#d2a000",
)
MIN_DISTANCE = 0.3
"""Colours closer than this in RGB (0..1 per channel) count as the same on screen."""


def _rgb(color: str) -> tuple[float, float, float]:
    text = color.lstrip("#")
    if len(text) == 3:
        text = "".join(c * 2 for c in text)
    try:
        return tuple(int(text[i : i + 2], 16) / 255 for i in (0, 2, 4))  # type: ignore[return-value]
    except ValueError as exc:
        raise NumsnetError(f"{color!r} is not a colour.", "Write colours as #rrggbb.") from exc


def visible_on_grey(color: str) -> bool:
    """Whether ``color`` stands out on grey levels: saturated (HSV saturation >= 0.35) and
    not dark (value >= 0.45). Near-white, grey and near-black colours do not."""
    _, saturation, value = colorsys.rgb_to_hsv(*_rgb(color))
    return saturation >= 0.35 and value >= 0.45


def color_distance(a: str, b: str) -> float:
    """Euclidean distance of two colours in RGB, each channel in 0..1 (0 to about 1.73)."""
    return sum((x - y) ** 2 for x, y in zip(_rgb(a), _rgb(b), strict=True)) ** 0.5


def _free_color(used: Iterable[str]) -> str:
    """The first palette colour far from every colour in ``used`` (else the farthest)."""
    used = list(used)
    candidates = DEFAULT_COLORS[1:]
    for color in candidates:
        if all(color_distance(color, u) >= MIN_DISTANCE for u in used):
            return color
    return max(candidates, key=lambda c: min(color_distance(c, u) for u in used))


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
    def from_names(
        cls, names: list[str] | tuple[str, ...], avoid: Iterable[str] = ()
    ) -> ClassTable:
        """Table with palette colours; ``names`` starts with the background.

        ``avoid``: colours already on screen (other layers); the classes get others.
        """
        colors = [DEFAULT_COLORS[0]]
        avoid = list(avoid)
        for _ in names[1:]:
            colors.append(_free_color(avoid + colors[1:]))
        return cls(tuple(names), tuple(colors))

    @classmethod
    def default(cls, num_values: int) -> ClassTable:
        """``background, class 1, ..., class K-1``."""
        return cls.from_names(["background", *(f"class {v}" for v in range(1, num_values))])

    @property
    def num_values(self) -> int:
        return len(self.names)

    def distinct_from(self, shown: Mapping[str, str] | None = None) -> ClassTable:
        """This table with colours that are visible on grey levels and differ from those
        of other classes on screen.

        Parameters
        ----------
        shown
            ``{class name: colour}`` of the layers shown with this one. A class of the
            same name takes the same colour; a colour that is not :func:`visible_on_grey`,
            or close to one of another class, is replaced by a free palette colour.
        """
        shown = dict(shown or {})
        colors = [self.colors[0]]
        for name, color in zip(self.names[1:], self.colors[1:], strict=True):
            others = [c for n, c in shown.items() if n != name] + colors[1:]
            if name in shown:
                color = shown[name]
            elif not visible_on_grey(color) or any(
                color_distance(color, c) < MIN_DISTANCE for c in others
            ):
                color = _free_color(others)
            colors.append(color)
        return replace(self, colors=tuple(colors))

    def with_class(self, name: str, color: str | None = None) -> ClassTable:
        """This table with one more class (value ``num_values``)."""
        color = color or _free_color(self.colors[1:])
        return ClassTable((*self.names, name), (*self.colors, color))

    def renamed(self, value: int, name: str) -> ClassTable:
        """This table with class ``value`` called ``name``."""
        names = list(self.names)
        names[value] = name.strip()
        if not names[value]:
            raise NumsnetError("A class name cannot be empty.", "Type a name.")
        return replace(self, names=tuple(names))

    def recolored(self, value: int, color: str) -> ClassTable:
        """This table with class ``value`` drawn in ``color`` (``#rrggbb``)."""
        _rgb(color)
        colors = list(self.colors)
        colors[value] = color.lower()
        return replace(self, colors=tuple(colors))

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
