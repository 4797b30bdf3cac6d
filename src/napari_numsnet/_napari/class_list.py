"""The class list of the Annotate tab: name, colour and voxel count of each class.

Clicking a class selects the brush with it on the annotation layer; names are edited in
place; the colour button recolours the selected class; the table loads from and saves to
the JSON the command line reads.
"""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtGui import QColor
from qtpy.QtWidgets import (
    QAbstractItemView,
    QColorDialog,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_numsnet.io.classes import load_class_table, save_class_table

from .annotation import AnnotationController
from .errors import reported

COLUMNS = ("", "Class", "Voxels")


class ClassList(QWidget):
    """Lays out the class table of the annotations; every action calls the controller."""

    def __init__(self, controller: AnnotationController, parent=None) -> None:
        super().__init__(parent)
        self.controller = controller
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().setVisible(False)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.ResizeToContents)
        self.table.setToolTip("Click a class to paint it; double-click its name to rename it.")
        self.table.setMaximumHeight(170)
        self.buttons: dict[str, QPushButton] = {}
        row = QHBoxLayout()
        for text, tip, slot in (
            ("Add", "Add a class with a free colour.", self.add),
            ("Colour…", "Recolour the selected class.", self.recolor),
            ("Load…", "Load a class table (JSON).", self.load),
            ("Save…", "Save the class table as JSON (for the command line).", self.save),
        ):
            button = QPushButton(text)
            button.setToolTip(tip)
            button.clicked.connect(lambda *_, f=slot: f())
            row.addWidget(button)
            self.buttons[text] = button
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.table)
        layout.addLayout(row)
        self._filling = False
        self.table.itemSelectionChanged.connect(self._on_select)
        self.table.itemChanged.connect(self._on_item)
        controller.changed.connect(self.refresh)
        self.refresh()

    # --- display -------------------------------------------------------------------

    def refresh(self, *args: Any) -> None:
        """Fill the rows from the controller's class table and voxel counts."""
        c = self.controller
        classes, counts = c.classes, c.class_counts()
        selected = self.selected_value()
        self._filling = True
        self.table.setRowCount(classes.num_values - 1)
        for row, value in enumerate(range(1, classes.num_values)):
            swatch = QTableWidgetItem("")
            # A decoration, not the cell's background: it stays visible when selected.
            swatch.setData(Qt.ItemDataRole.DecorationRole, QColor(classes.colors[value]))
            swatch.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
            swatch.setToolTip(f"{classes.colors[value]}, label value {value}")
            name = QTableWidgetItem(classes.names[value])
            name.setToolTip(f"Label value {value}; double-click to rename.")
            count = QTableWidgetItem(f"{int(counts[value]):,}")
            count.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
            count.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            for column, item in enumerate((swatch, name, count)):
                self.table.setItem(row, column, item)
        if selected is not None and selected < classes.num_values:
            self.table.selectRow(selected - 1)
        self._filling = False
        self.buttons["Colour…"].setEnabled(self.selected_value() is not None)

    def selected_value(self) -> int | None:
        """The label value of the selected row, or ``None``."""
        rows = self.table.selectionModel().selectedRows()
        return rows[0].row() + 1 if rows else None

    # --- actions -------------------------------------------------------------------

    def select(self, value: int) -> None:
        """Select class ``value`` (and its brush, when there is an annotation layer)."""
        self.table.selectRow(value - 1)

    @reported
    def _on_select(self) -> None:
        value = self.selected_value()
        self.buttons["Colour…"].setEnabled(value is not None)
        if value is not None and not self._filling and self.controller.labels is not None:
            self.controller.paint_class(value)

    @reported
    def _on_item(self, item: QTableWidgetItem) -> None:
        if self._filling or item.column() != 1:
            return
        value = item.row() + 1
        if item.text().strip() != self.controller.classes.names[value]:
            self.controller.rename_class(value, item.text())

    @reported
    def add(self, name: str | None = None) -> int:
        value = self.controller.add_class(name)
        self.select(value)
        return value

    @reported
    def recolor(self, color: str | None = None) -> None:
        value = self.selected_value()
        if value is None:
            return
        if color is None:
            chosen = QColorDialog.getColor(QColor(self.controller.classes.colors[value]), self)
            if not chosen.isValid():
                return
            color = chosen.name()
        self.controller.recolor_class(value, color)

    @reported
    def load(self, path: str | None = None) -> None:
        if path is None:
            path, _ = QFileDialog.getOpenFileName(self, "Class table", "", "JSON (*.json)")
        if path:
            self.controller.load_classes(load_class_table(path))

    @reported
    def save(self, path: str | None = None) -> None:
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Class table", "classes.json", "*.json")
        if path:
            save_class_table(self.controller.classes, path)
