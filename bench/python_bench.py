#!/usr/bin/python3
"""Python clients, shmcast against redis-py, with 64-byte payloads, in one run:

  publish   publishes/s from one Python process with no subscriber (redis-py unpipelined)
  receive   messages/s one Python subscriber process reads through get_message() while another
            Python process publishes flat out

and shmcast's two paths for 1 MiB payloads, on a bus with rings and max_payload big enough
for copies:

  copied    messages/s one subscriber reads (bytes, touching the first and last byte) while
            another process fills a 1 MiB buffer and publishes it, flat out
  loaned    the same with the publisher filling loans and the subscriber reading zero copy

Starts its own shmcastd (from --build/bin) and redis-server (on a unix socket), stops both by
pid. Run it from the source tree after a build, with nothing else running:

  flock /tmp/shmcast-cpu.lock /usr/bin/python3 bench/python_bench.py
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PAYLOAD = b"x" * 64

PUBLISHER = """
import sys, time
backend, where = sys.argv[1], sys.argv[2]
if backend == "redis":
    import redis
    r = redis.Redis(unix_socket_path=where)
else:
    import shmcast
    r = shmcast.Redis(bus=where)
payload = b"x" * 64
publish = r.publish
print("ready", flush=True)
while True:
    for _ in range(1000):
        publish("bench", payload)
"""


LARGE_PUBLISHER = """
import sys, time
import shmcast
bus, mode = sys.argv[1], sys.argv[2]
r = shmcast.Redis(bus=bus)
picture = bytes(range(256)) * 4096
print("ready", flush=True)
if mode == "loaned":
    while True:
        loan = r.loan(len(picture), wait=None)
        loan.data[:] = picture
        r.publish("large", loan)
else:
    buf = bytearray(len(picture))
    while True:
        buf[:] = picture
        r.publish("large", buf)
"""


def connect(backend, where):
    if backend == "redis":
        import redis

        return redis.Redis(unix_socket_path=where)
    import shmcast

    return shmcast.Redis(bus=where)


def publish_rate(backend, where, seconds):
    r = connect(backend, where)
    publish = r.publish
    sent = 0
    start = time.perf_counter()
    end = start + seconds
    while time.perf_counter() < end:
        for _ in range(1000):
            publish("nobody", PAYLOAD)
        sent += 1000
    return sent / (time.perf_counter() - start)


def rate_while_publishing(p, publisher, seconds, env, read):
    """Messages/s that read(p) counts, batch after batch, while a process running the Python
    code and arguments `publisher` publishes flat out to the subscribed PubSub p."""
    process = subprocess.Popen([sys.executable, "-c", *publisher], stdout=subprocess.PIPE,
                               text=True, env=env)
    try:
        assert process.stdout.readline() == "ready\n"
        while p.get_message(timeout=1.0) is None:  # the first message starts the clock
            pass
        received = 0
        start = time.perf_counter()
        end = start + seconds
        while True:
            received += read(p)
            if time.perf_counter() >= end:
                break
        return received / (time.perf_counter() - start)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
        p.close()


def receive_rate(backend, where, seconds, env):
    p = connect(backend, where).pubsub(ignore_subscribe_messages=True)
    p.subscribe("bench")
    p.get_message(timeout=1.0)

    def read(p):
        get_message = p.get_message
        received = 0
        for _ in range(1000):
            m = get_message(timeout=1.0)
            if m is not None and m["type"] == "message":
                received += 1
        return received

    return rate_while_publishing(p, [PUBLISHER, backend, where], seconds, env, read)


def large_rate(mode, bus, seconds, env):
    import shmcast

    p = shmcast.Redis(bus=bus).pubsub(ignore_subscribe_messages=True,
                                      zero_copy=mode == "loaned")
    p.subscribe("large")
    p.get_message(timeout=1.0)

    def read(p):
        m = p.get_message(timeout=1.0)
        if m is None or m["type"] != "message":
            return 0
        data = m["data"]
        data[0] + data[-1]
        del data, m  # a zero-copy view gives its chunk back once it is gone
        return 1

    return rate_while_publishing(p, [LARGE_PUBLISHER, bus, mode], seconds, env, read)


def start_and_wait(args, ready, what):
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not ready():
        if time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"python_bench: {what} did not start")
        time.sleep(0.01)
    return proc


def shmcast_ready(bus):
    import shmcast

    try:
        shmcast.Redis(bus=bus, request_timeout=0.05).close()
        return True
    except shmcast.Error:
        return False


def main():
    source = Path(__file__).resolve().parent.parent
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", default=str(source / "build"), help="the build folder")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each measurement")
    args = parser.parse_args()
    build = Path(args.build)
    sys.path.insert(0, str(build / "python"))
    env = dict(os.environ, PYTHONPATH=str(build / "python"))

    bus = f"pybench{os.getpid()}"
    folder = Path(tempfile.mkdtemp(prefix="shmcast-pybench-"))
    socket = str(folder / "redis.sock")
    daemon = start_and_wait([str(build / "bin" / "shmcastd"), "--bus", bus],
                            lambda: shmcast_ready(bus), "shmcastd")
    large_bus = f"pybench{os.getpid()}-large"
    large_daemon = start_and_wait(
        [str(build / "bin" / "shmcastd"), "--bus", large_bus, "--ring-bytes", str(8 << 20),
         "--max-payload", str(1 << 20)], lambda: shmcast_ready(large_bus), "shmcastd")
    redis_server = start_and_wait(
        [shutil.which("redis-server") or "/usr/bin/redis-server", "--port", "0", "--unixsocket",
         socket, "--save", "", "--appendonly", "no", "--dir", str(folder)],
        lambda: os.path.exists(socket), "redis-server")
    try:
        rows = []
        for name, measure in [("publish", lambda b, w: publish_rate(b, w, args.seconds)),
                              ("receive", lambda b, w: receive_rate(b, w, args.seconds, env))]:
            shm = measure("shmcast", bus)
            red = measure("redis", socket)
            rows.append((name, shm, red))
        print(f"{'64 B payload':<40} {'shmcast':>12} {'redis-py':>12} {'ratio':>8}")
        labels = {"publish": "publishes/s, no subscriber",
                  "receive": "messages/s received via get_message"}
        for name, shm, red in rows:
            print(f"{labels[name]:<40} {shm:>12,.0f} {red:>12,.0f} {shm / red:>7.1f}x")
        copied = large_rate("copied", large_bus, args.seconds, env)
        loaned = large_rate("loaned", large_bus, args.seconds, env)
        print(f"{'1 MiB payload, one subscriber':<40} {'copied':>12} {'loaned':>12} {'ratio':>8}")
        print(f"{'messages/s received via get_message':<40} {copied:>12,.0f} {loaned:>12,.0f} "
              f"{loaned / copied:>7.1f}x")
    finally:
        for proc in (daemon, large_daemon, redis_server):
            proc.send_signal(signal.SIGTERM)
            proc.wait()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
