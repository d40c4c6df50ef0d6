"""A PubSub shared by threads: a close or a subscribe from one thread while another waits in
get_message. A crash kills the interpreter, so each case runs in a child python3."""

from conftest import run_python

CLOSE_WHILE_WAITING = """
import sys, threading, time, shmcast
bus, channel = sys.argv[1:]
r = shmcast.Redis(bus)
p = r.pubsub()
p.subscribe(channel)
assert p.get_message(timeout=1)["type"] == "subscribe"
got = []
reader = threading.Thread(target=lambda: got.append(p.get_message(timeout=None)))
reader.start()
time.sleep(0.2)
p.close()
reader.join(10)
end = time.monotonic() + 5
while r.pubsub_numsub(channel)[0][1] and time.monotonic() < end:
    time.sleep(0.01)
print(reader.is_alive(), got, r.pubsub_numsub(channel)[0][1])
"""


def test_close_ends_a_wait_in_another_thread(daemon, channel):
    done = run_python(CLOSE_WHILE_WAITING, daemon.bus, channel)
    assert (done.returncode, done.stdout, done.stderr) == (0, "False [None] 0\n", "")


STOP_THEN_CLOSE = """
import sys, time, shmcast
bus, channel = sys.argv[1:]
r = shmcast.Redis(bus)
p = r.pubsub()
seen = []
p.subscribe(**{channel: lambda m: seen.append(m["data"])})
t = p.run_in_thread(sleep_time=5.0)
r.publish(channel, "before")
time.sleep(0.2)
t.stop()
p.close()
t.join(10)
print(t.is_alive(), seen, p.subscribed, r.publish(channel, "after"))
"""


def test_run_in_thread_stop_then_close(daemon, channel):
    # redis-py's way to end a worker: the worker waits in get_message while the PubSub closes.
    done = run_python(STOP_THEN_CLOSE, daemon.bus, channel)
    assert (done.returncode, done.stdout, done.stderr) == (0, "False [b'before'] False 0\n", "")


SUBSCRIBE_WHILE_WAITING = """
import sys, threading, shmcast
bus, channel, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
p = shmcast.Redis(bus).pubsub()
p.subscribe(channel)
frames = [p.get_message(timeout=1)]
expected = 1 + 2 * rounds

def read():
    while len(frames) < expected:
        m = p.get_message(timeout=None)
        if m is not None:
            frames.append((m["type"], m["channel"].decode(), m["data"]))

reader = threading.Thread(target=read)
reader.start()
for i in range(rounds):
    p.subscribe(f"{channel}{i}")
    p.unsubscribe(f"{channel}{i}")
reader.join(30)
want = []
for i in range(rounds):
    want += [("subscribe", f"{channel}{i}", 2), ("unsubscribe", f"{channel}{i}", 1)]
print(reader.is_alive(), frames[1:] == want, len(frames))
p.close()
"""


def test_subscribe_while_another_thread_waits(daemon, channel):
    # A C++ Subscriber serves one thread at a time: the subscribes take turns with the reader,
    # and every confirmation arrives once, in order.
    rounds = 40
    done = run_python(SUBSCRIBE_WHILE_WAITING, daemon.bus, channel, str(rounds))
    assert (done.returncode, done.stdout, done.stderr) == (0, f"False True {1 + 2 * rounds}\n", "")
