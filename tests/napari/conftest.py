"""Fixtures for the napari plugin tests: a copy of the sample CT, the panel, tiny settings."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import pytest

SAMPLE = Path(__file__).parents[2] / "src" / "napari_numsnet" / "sample_data"

#: Why none of these tests can run here (napari or Qt missing), or ``None``.
NO_NAPARI = (
    "napari and Qt are not installed: pip install -e '.[testing]' (or bash scripts/test.sh)"
    if importlib.util.find_spec("napari") is None or importlib.util.find_spec("qtpy") is None
    else None
)
#: Why the tests that open a window cannot run here (no display), or ``None``.
NO_DISPLAY = (
    "no display: run the tests under xvfb-run -a (bash scripts/test.sh installs it)"
    if sys.platform.startswith("linux")
    and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    else None
)
#: Fixtures that open a Qt application or a viewer.
GUI_FIXTURES = {"qtbot", "qapp", "make_napari_viewer", "panel"}


class _Unavailable(pytest.Item):
    """Stands for a test module that cannot be imported here, and is skipped with why."""

    def __init__(self, *, reason: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.reason = reason

    def runtest(self) -> None:
        pytest.skip(self.reason)

    def reportinfo(self):
        return self.path, 0, self.name


class _UnavailableModule(pytest.File):
    def collect(self):
        item = _Unavailable.from_parent(self, name=self.path.stem, reason=NO_NAPARI)
        item.add_marker(pytest.mark.skip(reason=NO_NAPARI))
        yield item


def pytest_pycollect_makemodule(module_path: Path, parent):
    """Without napari the modules cannot even be imported: one skipped item each."""
    if NO_NAPARI and module_path.name.startswith("test_"):
        return _UnavailableModule.from_parent(parent, path=module_path)
    return None


def pytest_collection_modifyitems(config, items) -> None:
    """Without a display, the tests that open a window are skipped, with the reason."""
    if not NO_DISPLAY:
        return
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents and GUI_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.skip(reason=NO_DISPLAY))


@pytest.fixture(autouse=True)
def user_work_root(tmp_path, monkeypatch):
    """Work folders that cannot lie beside their image go here, not in the user's home."""
    root = tmp_path / "user-work"
    monkeypatch.setenv("NAPARI_NUMSNET_WORK_DIR", str(root))
    return root


@pytest.fixture
def ct_path(tmp_path) -> Path:
    """The sample CT copied into a writable folder (its work folder goes beside it)."""
    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(SAMPLE / "ct_sample.nii.gz", folder / "ct.nii.gz")
    return folder / "ct.nii.gz"


@pytest.fixture
def errors():
    """Texts of the error notifications shown during the test."""
    from napari.utils.notifications import NotificationSeverity, notification_manager

    shown: list[str] = []

    def collect(notification):
        if notification.severity == NotificationSeverity.ERROR:
            shown.append(str(notification.message))

    notification_manager.notification_ready.connect(collect)
    yield shown
    notification_manager.notification_ready.disconnect(collect)


@pytest.fixture
def panel(make_napari_viewer, ct_path, qtbot):
    """A viewer with the CT opened through the plugin's reader and the NUMSnet panel docked."""
    from napari_numsnet._napari.main_widget import NumsnetWidget

    viewer = make_napari_viewer()
    viewer.open(ct_path, plugin="napari-numsnet")
    widget = NumsnetWidget(viewer)
    viewer.window.add_dock_widget(widget, name="NUMSnet")
    yield viewer, widget
    widget.training.stop()
    for controller in (widget.training, widget.prediction, widget.pseudo):
        qtbot.waitUntil(lambda c=controller: not _busy(c), timeout=60_000)


def _busy(controller) -> bool:
    from napari_numsnet._napari.prediction import PredictController
    from napari_numsnet._napari.training import TrainController

    if isinstance(controller, TrainController | PredictController):  # plain threads
        return controller.busy
    worker = controller.worker
    return worker is not None and getattr(worker, "is_running", False)


@pytest.fixture
def tiny_model():
    """Set a panel to a NUMSnet of widths 4..8 on 32 x 32 slices, CPU: seconds per run."""
    from napari_numsnet.config import ModelConfig, PreprocessConfig, TrainConfig

    def apply(widget, epochs: int, batch_size: int = 2) -> None:
        settings = widget.training.settings
        settings.model = ModelConfig("numsnet", widths=(4, 8, 8, 8, 8))
        settings.training = TrainConfig(
            epochs=epochs, batch_size=batch_size, device="cpu", amp=False, augment=False
        )
        settings.preprocess = PreprocessConfig(size=32)

    return apply


@pytest.fixture
def tiny_slice_run():
    """Annotate two planned slices of the panel's CT with the sample's labels and set a
    DRSegUNet of widths 4..8 on 32 x 32 slices with ``training``: seconds per run."""
    from napari_numsnet import pipeline
    from napari_numsnet.config import PreprocessConfig

    def apply(widget, training) -> None:
        a = widget.annotation
        sample = pipeline.load_sample()
        a.new_labels_layer(sample.classes)
        for z in a.planned[:2]:
            a.labels.data[int(z)] = sample.labels[int(z)]
            a.mark(int(z))
        tab = widget.train_tab
        tab.model.setCurrentIndex(tab.model.findData("drsegunet"))
        settings = widget.training.settings
        settings.model = settings.model.replace(widths=(4, 8, 8, 8, 8))
        settings.preprocess = PreprocessConfig(size=32)
        settings.training = training
        tab._show_settings()

    return apply
