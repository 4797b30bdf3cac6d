"""The thread policy: the choice from cores and load, the user's override, the revisit."""

from __future__ import annotations

import pytest
import torch

from napari_numsnet.engine import threads
from napari_numsnet.engine.device import describe_device
from napari_numsnet.engine.threads import CpuSample, ThreadChoice, choose_threads
from napari_numsnet.errors import NumsnetError


class FakeLoad:
    """Stands in for ``/proc/stat`` and the process clock: others keep ``busy`` cores."""

    def __init__(self, monkeypatch, busy: float, own: float = 0.0) -> None:
        self.busy, self.own, self.wall, self.machine = busy, own, 100.0, 5000.0
        self.own_total = 0.0
        monkeypatch.setattr(threads, "read_sample", self.sample)
        monkeypatch.setattr(threads.time, "sleep", self.advance)
        monkeypatch.setattr(threads, "usable_cores", lambda: 4)

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.machine += (self.busy + self.own) * seconds
        self.own_total += self.own * seconds

    def sample(self) -> CpuSample:
        return CpuSample(self.wall, self.own_total, self.machine)


@pytest.mark.parametrize(
    ("cores", "busy", "reserve", "expected"),
    [
        (2, 0.0, 0, 2),
        (2, 1.0, 0, 1),
        (2, 0.7, 0, 1),  # a process sharing a core with ours shows as 2/3 of a core
        (2, 0.3, 0, 2),  # a browser tab's 0.3 core does not cost a thread
        (2, 2.0, 0, 1),  # never fewer than one
        (2, 0.0, 1, 1),  # napari: a core left to the viewer
        (2, 1.0, 1, 1),
        (8, 2.6, 1, 4),
        (1, 0.0, 1, 1),
    ],
)
def test_choice_from_cores_load_and_reserve(cores, busy, reserve, expected):
    choice = choose_threads(None, reserve=reserve, busy=busy, cores=cores)
    assert choice.threads == expected
    assert not choice.fixed
    assert choice.busy == min(cores, round(busy + 1e-9))


def test_override_wins_over_the_load():
    choice = choose_threads(3, reserve=1, busy=1.0, cores=2)
    assert choice.threads == 3 and choice.fixed
    assert choose_threads(0, busy=1.0, cores=2).threads == 1  # 0 means automatic


@pytest.mark.parametrize("bad", [-1, 1.5, "2", True])
def test_bad_override_is_refused(bad):
    with pytest.raises(NumsnetError, match="number of threads"):
        choose_threads(bad)


def test_describe_says_why():
    assert ThreadChoice(1, 2, busy=1).describe() == "1 thread (2 cores, 1 busy)"
    assert ThreadChoice(2, 2).describe() == "2 threads (2 cores)"
    assert ThreadChoice(1, 2, reserve=1).describe() == "1 thread (2 cores, 1 left to the viewer)"
    assert ThreadChoice(4, 2, requested=4).describe() == "4 threads (set by the user; 2 cores)"


def test_busy_between_subtracts_our_own_cpu_time():
    before = CpuSample(wall=10.0, own=1.0, machine_busy=100.0)
    after = CpuSample(wall=12.0, own=4.0, machine_busy=105.0)  # we used 3 of the 5 s
    assert threads.busy_between(before, after) == pytest.approx(1.0)
    assert threads.busy_between(after, after) >= 0.0


def test_apply_sets_torch_and_the_device_line(monkeypatch):
    FakeLoad(monkeypatch, busy=1.0)
    choice = threads.apply_threads()
    assert (choice.threads, choice.cores, choice.busy) == (3, 4, 1)
    assert torch.get_num_threads() == 3
    assert threads.current() == choice
    line = describe_device("cpu")
    assert line.startswith("CPU, 3 threads (4 cores, 1 busy)")
    threads.apply_threads(2)
    assert torch.get_num_threads() == 2
    assert "2 threads (set by the user; 4 cores)" in describe_device("cpu")


def test_napari_reserve(monkeypatch):
    FakeLoad(monkeypatch, busy=0.0)
    assert threads.apply_threads(reserve=1).threads == 3


def test_revisit_follows_the_load(monkeypatch):
    load = FakeLoad(monkeypatch, busy=0.0, own=2.0)
    assert threads.apply_threads().threads == 4
    load.advance(0.5)
    assert threads.revisit() is None  # too short a span to judge: keep measuring
    load.busy = 2.0
    load.advance(5.0)
    changed = threads.revisit()
    assert changed is not None and changed.threads == 2 and changed.busy == 2
    assert torch.get_num_threads() == 2
    load.advance(5.0)
    assert threads.revisit() is None  # same load, same count
    load.busy = 0.0
    load.advance(5.0)
    assert threads.revisit().threads == 4


def test_revisit_leaves_a_fixed_count_and_no_policy_alone(monkeypatch):
    load = FakeLoad(monkeypatch, busy=0.0)
    torch.set_num_threads(1)
    assert threads.revisit() is None and threads.current() is None
    assert torch.get_num_threads() == 1
    threads.apply_threads(1)
    load.busy = 0.0
    load.advance(10.0)
    assert threads.revisit() is None
    assert torch.get_num_threads() == 1


def test_current_is_none_once_someone_else_changed_torch():
    threads.apply_threads(1)
    assert threads.current() is not None
    torch.set_num_threads(2)
    assert threads.current() is None
    assert describe_device("cpu").startswith("CPU, 2 threads")


def test_real_measurement_is_a_number_of_cores():
    busy = threads.measure_busy(0.05)
    assert 0.0 <= busy <= threads.usable_cores() + 0.5


def test_workers_share_the_choice(monkeypatch):
    FakeLoad(monkeypatch, busy=1.0)
    assert threads.worker_threads(2) == 1  # nothing applied: 4 cores, 1 busy -> 3 // 2
    threads.apply_threads(4)
    assert threads.worker_threads(2) == 2
    assert threads.worker_threads(8) == 1


def test_ranks_share_the_free_cores(monkeypatch):
    assert choose_threads(None, busy=1.0, cores=8, share=2).threads == 3
    assert choose_threads(None, busy=0.0, cores=2, share=4).threads == 1
    load = FakeLoad(monkeypatch, busy=0.0)
    assert threads.apply_threads(share=2).threads == 2
    load.busy = 3.0  # the other rank's load (and more): not a reason to change
    load.advance(10.0)
    assert threads.revisit() is None


def test_training_revisits_between_epochs(monkeypatch, tiny_config, fast_training, square_stack):
    from napari_numsnet.engine import trainer
    from napari_numsnet.models import create_model

    calls = []

    def revisit():
        calls.append(1)
        threads._current = ThreadChoice(1, 2, busy=1)
        torch.set_num_threads(1)
        return threads._current

    monkeypatch.setattr(threads, "revisit", revisit)
    model = create_model(tiny_config())
    config = fast_training.replace(epochs=2)
    result = trainer.fit(model, [square_stack()], config, val_stacks=[square_stack(seed=1)])
    assert len(calls) == result.record["epochs_done"] >= 2
    assert result.record["device"].startswith("CPU, 1 thread (2 cores, 1 busy)")
