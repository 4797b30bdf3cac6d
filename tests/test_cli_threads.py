"""``--threads`` on the commands that compute: the thread policy, its override, torchrun."""

from __future__ import annotations

import pytest
import torch

from napari_numsnet import cli
from napari_numsnet.engine import threads


@pytest.mark.parametrize("command", ["demo", "train", "predict"])
def test_commands_take_threads(command):
    parser = cli.build_parser()
    action = next(a for a in parser._subparsers._group_actions[0].choices[command]._actions
                  if "--threads" in a.option_strings)  # fmt: skip
    assert action.default == 0 and action.type is int


def test_fixed_threads_are_applied_before_the_command(monkeypatch):
    seen = []
    monkeypatch.setattr(cli, "cmd_demo", lambda args: seen.append(torch.get_num_threads()) or 0)
    args = cli.build_parser().parse_args(["demo", "--threads", "1"])
    monkeypatch.setattr(cli, "build_parser", lambda: _Parsed(args))
    assert cli.main(["demo", "--threads", "1"]) == 0
    assert seen == [1] and threads.current().fixed


def test_automatic_threads_share_the_cores_between_local_ranks(monkeypatch):
    monkeypatch.setattr(threads, "measure_busy", lambda window=0.0: 0.0)
    monkeypatch.setattr(threads, "usable_cores", lambda: 4)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    cli._apply_threads(cli.build_parser().parse_args(["demo"]))
    assert torch.get_num_threads() == 2 and threads.current().share == 2
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    cli._apply_threads(cli.build_parser().parse_args(["demo"]))
    assert torch.get_num_threads() == 4


def test_bad_threads_is_refused(capsys):
    assert cli.main(["demo", "--threads", "-1"]) == 2
    assert "number of threads" in capsys.readouterr().err


def test_models_does_not_touch_threads(monkeypatch):
    monkeypatch.setattr(threads, "apply_threads", lambda *a, **k: pytest.fail("applied"))
    cli._apply_threads(cli.build_parser().parse_args(["models"]))


class _Parsed:
    """A parser that returns arguments parsed already (the command replaced)."""

    def __init__(self, args) -> None:
        self.args = args

    def parse_args(self, argv):
        return self.args
