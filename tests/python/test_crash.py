"""Python clients and faults, as the C++ crash tests: a SIGKILLed subscriber process is reaped,
a publisher keeps going while the coordinator restarts, Ctrl-C interrupts a blocking read."""

import signal
import time

import shmcast
from conftest import popen_python, remove_segments, stop, wait_until

SUBSCRIBER = """
import sys, shmcast
p = shmcast.Redis(sys.argv[1]).pubsub()
p.subscribe(sys.argv[2])
p.psubscribe(sys.argv[2] + ":*")
print("ready", flush=True)
for m in p.listen():
    pass
"""


def test_sigkilled_subscriber_is_reaped(daemon, channel):
    r = shmcast.Redis(daemon.bus)
    numpat_before = r.pubsub_numpat()
    child = popen_python(SUBSCRIBER, daemon.bus, channel, stdout=-1, text=True)
    assert child.stdout.readline() == "ready\n"
    assert r.pubsub_numsub(channel) == [(channel.encode(), 1)]
    assert r.pubsub_numpat() == numpat_before + 1
    assert r.publish(channel, "before") == 1
    assert stop(child, signal.SIGKILL) == -signal.SIGKILL
    assert wait_until(lambda: r.pubsub_numsub(channel) == [(channel.encode(), 0)])
    assert r.pubsub_numpat() == numpat_before
    assert r.publish(channel, "after") == 0


PUBLISHER = """
import sys, time, shmcast
r = shmcast.Redis(sys.argv[1])
print("ready", flush=True)
sent = delivered = 0
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    delivered += r.publish("ticks", str(sent))
    sent += 1
    time.sleep(0.0002)
print(sent, delivered, flush=True)
"""


def test_publisher_keeps_going_while_the_coordinator_restarts(private_daemon):
    d = private_daemon()
    r = shmcast.Redis(d.bus)
    p = r.pubsub(ignore_subscribe_messages=True)
    p.subscribe("ticks")
    publisher = popen_python(PUBLISHER, d.bus, "2.0", stdout=-1, text=True)
    assert publisher.stdout.readline() == "ready\n"
    received = []

    def read_for(seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            m = p.get_message(timeout=0.05)
            if m is not None:
                received.append(int(m["data"]))

    read_for(0.5)
    before_restart = len(received)
    assert d.terminate() == 0
    read_for(0.2)  # no coordinator: messages still flow publisher to subscriber
    during = len(received) - before_restart
    d.start()
    read_for(0.5)
    sent, delivered = map(int, publisher.stdout.readline().split())
    assert publisher.wait(10) == 0
    read_for(0.2)
    assert before_restart > 0 and during > 0
    assert received == list(range(sent))  # every message, in order, none lost
    assert delivered == sent
    # The new coordinator adopted the bus: new subscriptions work.
    q = r.pubsub()
    q.subscribe("after")
    assert r.publish("after", "x") == 1
    q.close()
    p.close()


def test_coordinator_gone_error(private_daemon):
    d = private_daemon()
    r = shmcast.Redis(d.bus, request_timeout=0.2)
    p = r.pubsub()
    p.subscribe("held")  # keeps the bus in use, so the stopped coordinator leaves it
    d.terminate()
    try:
        q = r.pubsub()
        q.subscribe("x")
        raised = None
    except shmcast.Error as e:
        raised = e
    assert isinstance(raised, (shmcast.CoordinatorGoneError, shmcast.NoCoordinatorError))
    assert "shmcastd" in str(raised)
    p.close()
    remove_segments(d.bus)


INTERRUPTED = """
import sys, shmcast
p = shmcast.Redis(sys.argv[1]).pubsub()
p.subscribe("quiet")
p.get_message()
print("waiting", flush=True)
try:
    if sys.argv[2] == "get_message":
        p.get_message(timeout=None)
    else:
        for m in p.listen():
            pass
except KeyboardInterrupt:
    print("interrupted", flush=True)
"""


def test_ctrl_c_interrupts_a_blocking_read(daemon):
    for call in ["get_message", "listen"]:
        child = popen_python(INTERRUPTED, daemon.bus, call, stdout=-1, text=True)
        assert child.stdout.readline() == "waiting\n"
        time.sleep(0.2)
        start = time.monotonic()
        child.send_signal(signal.SIGINT)
        assert child.wait(5) == 0
        assert time.monotonic() - start < 1
        assert child.stdout.read() == "interrupted\n"

