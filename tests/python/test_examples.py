"""Every program in examples/python/ runs against a coordinator and succeeds."""

import subprocess

import pytest

from conftest import PYTHON, SOURCE_DIR, python_env

EXAMPLES = SOURCE_DIR / "examples" / "python"


@pytest.mark.parametrize("name, last_line", [
    ("notifications", "notifications: every user got exactly their own notifications"),
    ("chat", "chat: every member saw every message, in order"),
    ("cache_invalidation", "cache_invalidation: every cache dropped exactly the stale keys"),
    ("leaderboard", "leaderboard: every update counted"),
    ("fanout", "4 of 4 subscribers got all 1000 messages in order"),
    ("patterns", "patterns: the console got every alert and nothing else"),
    ("large_frames", "large_frames: 2 of 2 subscribers read all 20 frames in place"),
])
def test_example_runs(daemon, name, last_line):
    done = subprocess.run([PYTHON, str(EXAMPLES / f"{name}.py"), "--bus", daemon.bus],
                          env=python_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == last_line
    assert done.stderr == ""


def test_every_example_is_tested():
    tested = {p.stem for p in EXAMPLES.glob("*.py")}
    assert tested == {"notifications", "chat", "cache_invalidation", "leaderboard", "fanout",
                      "patterns", "large_frames"}
