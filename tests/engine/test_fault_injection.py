"""Kill points (a test facility): which point kills, when the setting is read, and what a typo does.

`os.kill` is replaced by a recorder here; the real SIGKILL at every point is exercised by
tests/reliability/test_interruption.py and tests/engine/test_atomic_checkpoints.py.
"""

import signal

import pytest

from segaccel.engine import fault_injection
from segaccel.engine.fault_injection import KILL_POINTS, kill_point


@pytest.fixture
def kills(monkeypatch):
    """The signals `kill_point` sends (recorded instead of sent); the setting is re-read per test."""
    sent = []
    monkeypatch.setattr(fault_injection.os, "kill", lambda pid, signum: sent.append(signum))
    fault_injection.kill_setting.cache_clear()
    yield sent
    fault_injection.kill_setting.cache_clear()


def test_kills_only_at_the_named_point_and_iteration(kills, monkeypatch):
    monkeypatch.setenv("SEGACCEL_TEST_KILL_AT", "renamed")
    monkeypatch.setenv("SEGACCEL_TEST_KILL_AT_ITER", "4")
    for point in KILL_POINTS:
        kill_point(point, 2)
    kill_point("pruned", 4)
    assert kills == []
    kill_point("renamed", 4)
    assert kills == [signal.SIGKILL]


def test_without_an_iteration_the_first_time_the_point_is_reached(kills, monkeypatch):
    monkeypatch.setenv("SEGACCEL_TEST_KILL_AT", "validation")
    kill_point("after_step", 1)
    kill_point("validation", 1)
    assert kills == [signal.SIGKILL]


def test_nothing_happens_without_the_setting(kills, monkeypatch):
    monkeypatch.delenv("SEGACCEL_TEST_KILL_AT", raising=False)
    monkeypatch.setenv("SEGACCEL_KILL_AT", "after_step")  # the old name is not the facility's
    for point in KILL_POINTS:
        kill_point(point, 1)
    assert kills == []


def test_the_setting_is_read_once(kills, monkeypatch):
    monkeypatch.setenv("SEGACCEL_TEST_KILL_AT", "pruned")
    kill_point("after_step", 3)  # the first point reached reads the setting
    monkeypatch.setenv("SEGACCEL_TEST_KILL_AT", "after_step")
    kill_point("after_step", 3)
    assert kills == []
    kill_point("pruned", 3)
    assert kills == [signal.SIGKILL]


def test_a_misspelt_point_or_iteration_is_an_error_naming_the_variable(kills, monkeypatch):
    monkeypatch.setenv("SEGACCEL_TEST_KILL_AT", "after_stpe")
    message = r"SEGACCEL_TEST_KILL_AT='after_stpe' is not a kill point; known points: after_step, validation"
    with pytest.raises(ValueError, match=message):
        kill_point("after_step", 1)
    fault_injection.kill_setting.cache_clear()
    monkeypatch.setenv("SEGACCEL_TEST_KILL_AT", "after_step")
    monkeypatch.setenv("SEGACCEL_TEST_KILL_AT_ITER", "three")
    with pytest.raises(ValueError, match=r"SEGACCEL_TEST_KILL_AT_ITER='three': expected an iteration number"):
        kill_point("after_step", 3)
    with pytest.raises(ValueError, match="unknown kill point 'after_stpe'"):
        kill_point("after_stpe", 3)  # a typo in the code's own point names
    assert kills == []
