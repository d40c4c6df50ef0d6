"""What the Python tests share: a private shmcastd per test module on a bus no other test or
user has, started from this build and stopped by its pid."""

import ctypes
import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import shmcast

HERE = Path(__file__).resolve().parent
SOURCE_DIR = HERE.parent.parent
BIN_DIR = Path(os.environ.get("SHMCAST_BIN_DIR", SOURCE_DIR / "build" / "bin"))
PYTHON = "/usr/bin/python3"
_counter = itertools.count(1)


def unique_bus(tag):
    """A bus name no other test has: "py<pid>-<n>-<tag>"."""
    return f"py{os.getpid()}-{next(_counter)}-{tag}"[:64]


def _die_with_parent():
    # The child gets SIGTERM if the test process dies first: no coordinator outlives a crash.
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(args, **kwargs):
    """Starts a process that dies with the test process."""
    return subprocess.Popen(args, preexec_fn=_die_with_parent, **kwargs)


def python_env():
    """The environment for a child python3 that imports this build's shmcast."""
    env = dict(os.environ)
    paths = [str(shmcast_root()), env.get("PYTHONPATH")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def shmcast_root():
    return Path(shmcast.__file__).resolve().parent.parent


def stop(proc, sig=signal.SIGTERM):
    """Stops a process by its pid and reaps it; returns its exit status."""
    if proc.poll() is None:
        os.kill(proc.pid, sig)
    return proc.wait(timeout=30)


def remove_segments(bus):
    # A killed coordinator leaves the bus's segments behind by design (a new one adopts them).
    for path in Path("/dev/shm").glob(f"shmcast.{bus}.*"):
        path.unlink(missing_ok=True)


def wait_until(condition, seconds=10.0):
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


class Daemon:
    """shmcastd on its own bus: running once the constructor returns."""

    def __init__(self, tag, *extra):
        self.bus = unique_bus(tag)
        self.extra = list(extra)
        self.log = Path(f"/tmp/shmcastd-{self.bus}.log")
        self.proc = None
        self.start()

    def start(self):
        with open(self.log, "ab") as log:
            self.proc = spawn([str(BIN_DIR / "shmcastd"), "--bus", self.bus, *self.extra],
                              stdout=log, stderr=subprocess.STDOUT)

        def accepts():
            try:
                shmcast.Redis(self.bus, request_timeout=0.05).close()
                return True
            except shmcast.Error:
                return False

        if not wait_until(accepts):
            stop(self.proc, signal.SIGKILL)
            raise RuntimeError(f"shmcastd did not start on bus {self.bus}: {self.log.read_text()}")

    @property
    def pid(self):
        return self.proc.pid

    def terminate(self):
        return stop(self.proc)

    def close(self):
        if self.proc is not None:
            stop(self.proc)
        remove_segments(self.bus)
        self.log.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def daemon(request):
    d = Daemon(Path(request.module.__file__).stem.removeprefix("test_"))
    yield d
    d.close()


@pytest.fixture
def private_daemon(request):
    """A factory of coordinators that live as long as the test: for counts over the whole bus."""
    started = []

    def make(*extra):
        d = Daemon(request.node.name.removeprefix("test_")[:20], *extra)
        started.append(d)
        return d

    yield make
    for d in started:
        d.close()


@pytest.fixture
def channel(request):
    """A channel prefix unique to the test, so tests sharing the module's bus stay apart."""
    return request.node.name.removeprefix("test_") + ":"


def run_python(code, *args, timeout=60, **kwargs):
    """Runs `code` with Debian's python3 and this build's shmcast; returns the CompletedProcess."""
    return subprocess.run([PYTHON, "-c", code, *args], env=python_env(), capture_output=True,
                          text=True, timeout=timeout, preexec_fn=_die_with_parent, **kwargs)


def popen_python(code, *args, **kwargs):
    return spawn([PYTHON, "-c", code, *args], env=python_env(), **kwargs)


sys.dont_write_bytecode = True
