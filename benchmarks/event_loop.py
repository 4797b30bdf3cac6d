"""How long the viewer's event loop waits while the panel trains, with the live plot on.

A 10 ms ``QTimer`` runs in the viewer's main thread while the NUMSnet panel trains on the
planned slices of the sample CT (reference labels copied in, as an annotator would paint
them). The gap between two timer ticks is how long the event loop was busy elsewhere: a
gap of 100 ms is a visible stall of the brush or the slider. The same training is run
with the plot shown and with it hidden, to see what the plot costs in gaps and speed, in
``--pairs`` pairs whose order alternates (shown first, then hidden first, ...); the
summary line gives the median and range of the per-pair speed ratio shown / hidden. The
first second after Train (the run's set-up) and the seconds after the run has ended are
reported apart (``first_second_max_gap_ms``, ``after_run_max_gap_ms``).

Run under a display (``xvfb-run -a python3 benchmarks/event_loop.py``); one line per run
goes to ``benchmarks/results/event_loop.jsonl``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

AFTER_RUN_S = 2.0
"""Seconds the timer keeps running after the run has ended (its last redraw, the
collector's first full pass over the objects the run gave back)."""
RESULTS = Path(__file__).resolve().parent / "results" / "event_loop.jsonl"


def measure(seconds: float, plot_shown: bool, threads: int | None) -> dict[str, Any]:
    """Train for ``seconds`` in the panel and return the timer gaps and the speed."""
    import napari
    from qtpy.QtCore import QEventLoop, QTimer
    from qtpy.QtWidgets import QApplication

    from napari_numsnet import pipeline
    from napari_numsnet._napari.main_widget import NumsnetWidget
    from napari_numsnet.engine.events import TrainState

    viewer = napari.Viewer(show=True)
    viewer.open_sample("napari-numsnet", "ct_sample")
    widget = NumsnetWidget(viewer)
    viewer.window.add_dock_widget(widget, name="NUMSnet")
    widget.tabs.setCurrentIndex(1)
    widget.train_tab.plot.setVisible(plot_shown)
    a, t = widget.annotation, widget.training
    reference = pipeline.load_sample().labels
    a.new_labels_layer(pipeline.load_sample().classes)
    for z in a.planned:
        a.labels.data[z] = reference[z]
        a.mark(int(z))
    widget.train_tab.threads.setValue(threads or 0)  # 0: "auto", the thread policy
    t.settings.training = t.settings.training.replace(epochs=10_000, device="cpu")
    app = QApplication.instance()
    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    speeds: list[float] = []
    events: list[tuple[float, str]] = []

    def on_event(event: Any) -> None:
        events.append((time.perf_counter(), event.kind))
        if event.kind == "epoch" and event.slices_per_second:
            speeds.append(event.slices_per_second)

    t.progress.connect(on_event)
    shown = QEventLoop()  # the new window lays itself out and paints before Train is pressed
    QTimer.singleShot(1500, shown.quit)
    shown.exec()
    timer.start()
    widget.train_tab.train_button.click()  # as a user starts it
    began = time.perf_counter()
    loop = QEventLoop()  # the real event loop, as in napari.run()
    QTimer.singleShot(int(seconds * 1000), loop.quit)
    loop.exec()
    t.stop()
    while t.state is TrainState.TRAINING:
        app.processEvents()
        time.sleep(0.005)
    ended = time.perf_counter()
    settle = QEventLoop()  # what the end of the run costs is counted apart
    QTimer.singleShot(int(AFTER_RUN_S * 1000), settle.quit)
    settle.exec()
    timer.stop()
    redraws = widget.train_tab.plot.redraws
    viewer.close()
    # The first second holds the run's set-up (the model is built): counted apart.
    steady = [b - a for a, b in itertools.pairwise(ticks) if began + 1.0 < a < ended]
    after_run = [b - a for a, b in itertools.pairwise(ticks) if a >= ended]
    gaps_ms = [1000 * g for g in steady]
    first_second = [b - a for a, b in itertools.pairwise(ticks) if began <= a <= began + 1.0]
    # What the main thread handled just after each long gap (an event, or nothing).
    long_gaps = [
        (a, b) for a, b in itertools.pairwise(ticks) if began + 1.0 < a < ended and b - a > 0.1
    ]
    after = [next((k for when, k in events if a <= when <= b + 0.02), "-") for a, b in long_gaps]
    return {
        "plot_shown": plot_shown,
        "seconds": seconds,
        "ticks": len(ticks),
        "max_gap_ms": round(max(gaps_ms), 1) if gaps_ms else None,
        "p99_gap_ms": round(sorted(gaps_ms)[int(0.99 * (len(gaps_ms) - 1))], 1)
        if gaps_ms
        else None,
        "gaps_over_100ms": sum(g > 100 for g in gaps_ms),
        "first_second_max_gap_ms": round(1000 * max(first_second), 1) if first_second else None,
        "after_run_max_gap_ms": round(1000 * max(after_run), 1) if after_run else None,
        "median_gap_ms": round(statistics.median(gaps_ms), 1) if gaps_ms else None,
        "slices_per_second": round(statistics.mean(speeds), 2) if speeds else None,
        "plot_redraws": redraws,
        "events_at_long_gaps": after,
        "long_gaps_at_s_ms": [[round(a - began, 2), round(1000 * (b - a))] for a, b in long_gaps],
        "load_average_1min": round(os.getloadavg()[0], 2),
        "model": t.settings.model.name,
        "state": t.state.value,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="training time per run")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: the policy's)"
    )
    parser.add_argument("--pairs", type=int, default=3, help="shown/hidden pairs")
    parser.add_argument("--no-save", action="store_true", help="print only")
    args = parser.parse_args(argv)
    ratios = []
    for pair in range(args.pairs):
        order = (True, False) if pair % 2 == 0 else (False, True)
        rows = {shown: measure(args.seconds, shown, args.threads) for shown in order}
        for shown in order:
            rows[shown]["pair"] = pair
            print(json.dumps(rows[shown]), flush=True)
            if not args.no_save:
                RESULTS.parent.mkdir(parents=True, exist_ok=True)
                with RESULTS.open("a") as handle:
                    handle.write(json.dumps(rows[shown]) + "\n")
        shown_speed, hidden_speed = (rows[s]["slices_per_second"] for s in (True, False))
        if shown_speed and hidden_speed:
            ratios.append(shown_speed / hidden_speed)
    if ratios:
        print(
            f"training speed, plot shown / hidden: median {statistics.median(ratios):.2f} "
            f"(range {min(ratios):.2f}-{max(ratios):.2f}) over {len(ratios)} pairs"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
