"""The same redis-py program against a private redis-server and against shmcast: the output
must be identical, line for line (two_backends.py)."""

import difflib
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import HERE, PYTHON, python_env, spawn, stop, wait_until

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


@pytest.fixture(scope="module")
def redis_socket():
    folder = Path(tempfile.mkdtemp(prefix="shmcast-py-redis-"))
    socket = folder / "redis.sock"
    server = spawn([REDIS_SERVER, "--port", "0", "--unixsocket", str(socket), "--save", "",
                    "--appendonly", "no", "--dir", str(folder)],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert wait_until(socket.exists), "redis-server did not start"
    yield str(socket)
    stop(server)
    shutil.rmtree(folder, ignore_errors=True)


def run(*args):
    done = subprocess.run([PYTHON, str(HERE / "two_backends.py"), *args], env=python_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    return done.stdout.splitlines()


def test_redis_py_and_shmcast_print_the_same(redis_socket, daemon):
    expected = run("redis", redis_socket)
    got = run("shmcast", daemon.bus)
    assert expected[-1] == "end" and len(expected) > 100
    diff = "\n".join(difflib.unified_diff(expected, got, "redis-py", "shmcast", lineterm=""))
    assert got == expected, diff
