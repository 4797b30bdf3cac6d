"""Fixtures for the napari plugin tests: a copy of the sample CT, the panel, tiny settings."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

if importlib.util.find_spec("napari") is None or importlib.util.find_spec("qtpy") is None:
    collect_ignore_glob = ["test_*.py"]  # the plugin tests need the [napari] extra

SAMPLE = Path(__file__).parents[2] / "src" / "napari_numsnet" / "sample_data"


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
