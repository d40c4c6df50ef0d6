"""Every call of shmcast.Redis and shmcast.PubSub: values, order, counts and errors."""

import threading
import time

import pytest

import shmcast
from conftest import popen_python, unique_bus, wait_until


@pytest.fixture
def r(daemon):
    with shmcast.Redis(bus=daemon.bus) as client:
        yield client


def drain(p, timeout=0.5):
    """Every frame get_message returns until none comes for `timeout` seconds (it returns None
    also for frames that handlers or ignore_subscribe_messages take)."""
    out = []
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        m = p.get_message(timeout=0.02)
        if m is not None:
            out.append(m)
            end = time.monotonic() + timeout
    return out


def published(p):
    """The data of every message and pmessage until none comes for 0.2 s."""
    return [m["data"] for m in drain(p) if m["type"] in ("message", "pmessage")]


def test_bus_is_redis_and_names_its_bus(r, daemon):
    assert shmcast.Bus is shmcast.Redis
    assert r.bus == daemon.bus
    assert r.coordinator_alive()
    assert repr(r) == f"Redis<bus={daemon.bus}>"


def test_bus_none_means_shmcast_bus_variable(daemon, monkeypatch):
    monkeypatch.setenv("SHMCAST_BUS", daemon.bus)
    assert shmcast.default_bus_name() == daemon.bus
    assert shmcast.Redis().bus == daemon.bus
    monkeypatch.delenv("SHMCAST_BUS")
    assert shmcast.default_bus_name() == "default"


def test_publish_counts_deliveries(r, channel):
    assert r.publish(channel + "none", "nobody listens") == 0
    p = r.pubsub()
    p.subscribe(channel + "a")
    p.psubscribe(channel + "*")
    q = r.pubsub()
    q.subscribe(channel + "a")
    assert r.publish(channel + "a", "two channel subscribers and one pattern") == 3
    assert r.publish(channel + "b", "the pattern alone") == 1
    p.close()
    q.close()


def test_publish_encodes_payloads_as_redis_py(r, channel):
    p = r.pubsub()
    p.subscribe(channel)
    for payload in ["text é", b"\x00\xffbytes", bytearray(b"ba"), memoryview(b"mv"), 7, -2.5]:
        assert r.publish(channel, payload) == 1
    assert r.publish(channel.encode(), b"bytes channel") == 1
    assert published(p) == [
        "text é".encode(), b"\x00\xffbytes", b"ba", b"mv", b"7", b"-2.5", b"bytes channel"]
    p.close()


@pytest.mark.parametrize("bad", [None, True, object(), ["list"]])
def test_publish_refuses_what_redis_py_refuses(r, bad):
    with pytest.raises(TypeError, match="Convert to a bytes, string, int or float first"):
        r.publish("c", bad)
    with pytest.raises(TypeError):
        r.publish(bad, "payload")


def test_limits_raise_their_error_class(r):
    with pytest.raises(shmcast.PayloadTooLargeError, match="max-payload") as e:
        r.publish("c", b"x" * (64 * 1024 + 1))
    assert isinstance(e.value, shmcast.Error) and e.value.code == "payload_too_large"
    with pytest.raises(shmcast.ChannelTooLongError, match="max-channel"):
        r.publish("c" * 257, "x")
    p = r.pubsub()
    with pytest.raises(shmcast.ChannelTooLongError):
        p.subscribe("c" * 257)
    with pytest.raises(shmcast.PatternTooLongError):
        p.psubscribe("p" * 257)
    p.close()


def test_too_many_subscriptions(private_daemon):
    d = private_daemon("--max-subscriptions", "2")
    p = shmcast.Redis(d.bus).pubsub()
    p.subscribe("a", "b")
    with pytest.raises(shmcast.TooManySubscriptionsError, match="max-subscriptions"):
        p.subscribe("c")
    p.close()


def test_too_many_clients(private_daemon):
    d = private_daemon("--max-clients", "3")
    clients = []
    with pytest.raises(shmcast.TooManyClientsError, match="max-clients"):
        for _ in range(4):
            clients.append(shmcast.Redis(d.bus, request_timeout=0.5))
    assert 1 <= len(clients) <= 3
    clients.pop().close()
    assert shmcast.Redis(d.bus).publish("c", "x") == 0  # a freed slot serves the next client


def test_connect_errors():
    with pytest.raises(shmcast.InvalidBusNameError, match="invalid bus name") as e:
        shmcast.Redis(bus="no spaces")
    assert e.value.code == "invalid_bus_name"
    start = time.monotonic()
    with pytest.raises(shmcast.NoCoordinatorError, match="start shmcastd"):
        shmcast.Redis(bus=unique_bus("nobody"), request_timeout=0.1)
    assert time.monotonic() - start < 3
    with pytest.raises(TypeError):
        shmcast.Redis(bus=5)
    with pytest.raises(ValueError):
        shmcast.Redis(bus=unique_bus("x"), request_timeout=-1)


def test_every_errc_has_its_class():
    from shmcast import _shmcast
    from shmcast.exceptions import ERRORS

    assert sorted(ERRORS) == sorted(_shmcast.errc_names)
    for cls in ERRORS.values():
        assert issubclass(cls, shmcast.Error)
        assert getattr(shmcast, cls.__name__) is cls
    assert issubclass(shmcast.PubSubError, shmcast.Error)


def test_confirmations_and_messages_as_redis_py_builds_them(r, channel):
    p = r.pubsub()
    assert p.subscribed is False
    assert p.subscribe([channel + "a", channel + "b"]) is None
    assert p.subscribed is True
    p.psubscribe(channel + "*")
    r.publish(channel + "a", "hello")
    assert drain(p) == [
        {"type": "subscribe", "pattern": None, "channel": (channel + "a").encode(), "data": 1},
        {"type": "subscribe", "pattern": None, "channel": (channel + "b").encode(), "data": 2},
        {"type": "psubscribe", "pattern": None, "channel": (channel + "*").encode(), "data": 3},
        {"type": "message", "pattern": None, "channel": (channel + "a").encode(), "data": b"hello"},
        {"type": "pmessage", "pattern": (channel + "*").encode(),
         "channel": (channel + "a").encode(), "data": b"hello"},
    ]
    p.unsubscribe(channel + "a")
    p.punsubscribe(channel + "*")
    assert drain(p) == [
        {"type": "unsubscribe", "pattern": None, "channel": (channel + "a").encode(), "data": 2},
        {"type": "punsubscribe", "pattern": None, "channel": (channel + "*").encode(), "data": 1},
    ]
    assert p.channels == {(channel + "b").encode(): None} and p.patterns == {}
    p.close()


def test_message_dict_keys_in_redis_py_order(r, channel):
    p = r.pubsub()
    p.subscribe(channel)
    assert list(p.get_message(timeout=1)) == ["type", "pattern", "channel", "data"]
    p.close()


def test_unsubscribe_of_nothing_is_a_nil_confirmation(r, channel):
    p = r.pubsub()
    p.psubscribe(channel + "*")
    p.unsubscribe()
    assert drain(p) == [
        {"type": "psubscribe", "pattern": None, "channel": (channel + "*").encode(), "data": 1},
        {"type": "unsubscribe", "pattern": None, "channel": None, "data": 1},
    ]
    assert p.subscribed
    p.punsubscribe()
    assert drain(p) == [
        {"type": "punsubscribe", "pattern": None, "channel": (channel + "*").encode(), "data": 0}]
    assert not p.subscribed
    p.close()


def test_ignore_subscribe_messages(r, channel):
    p = r.pubsub(ignore_subscribe_messages=True)
    p.subscribe(channel)
    r.publish(channel, "m")
    assert p.get_message(timeout=1) is None  # the confirmation, swallowed
    assert p.get_message(timeout=1)["data"] == b"m"
    q = r.pubsub()
    q.subscribe(channel)
    assert q.get_message(ignore_subscribe_messages=True, timeout=1) is None
    assert q.get_message(timeout=0) is None
    p.close()
    q.close()


def test_get_message_timeouts(r, channel):
    p = r.pubsub()
    assert p.get_message() is None  # not subscribed: no wait at all
    start = time.monotonic()
    assert p.get_message(timeout=0.3) is None
    assert time.monotonic() - start >= 0.3
    p.subscribe(channel)
    p.get_message()
    start = time.monotonic()
    assert p.get_message(timeout=0.3) is None
    assert time.monotonic() - start >= 0.3
    p.close()


def test_get_message_waits_with_the_gil_released(r, channel):
    p = r.pubsub(ignore_subscribe_messages=True)
    p.subscribe(channel)
    assert p.get_message() is None
    got = []
    reader = threading.Thread(target=lambda: got.append(p.get_message(timeout=3.0)))
    reader.start()
    time.sleep(0.2)
    # This thread runs Python again while the reader still waits: the wait does not hold the GIL.
    assert reader.is_alive()
    assert r.publish(channel, "wake up") == 1
    reader.join(5)
    assert got == [{"type": "message", "pattern": None, "channel": channel.encode(),
                    "data": b"wake up"}]
    p.close()


def test_get_message_without_timeout_waits_for_a_message(r, channel):
    p = r.pubsub(ignore_subscribe_messages=True)
    p.subscribe(channel)
    assert p.get_message() is None
    publisher = popen_python("import sys, time, shmcast\n"
                             "time.sleep(0.3)\n"
                             "shmcast.Redis(sys.argv[1]).publish(sys.argv[2], 'late')",
                             r.bus, channel)
    start = time.monotonic()
    assert p.get_message(timeout=None) == {"type": "message", "pattern": None,
                                           "channel": channel.encode(), "data": b"late"}
    assert time.monotonic() - start >= 0.2
    assert publisher.wait(10) == 0
    p.close()


def test_handlers_take_their_messages(r, channel):
    seen = []
    p = r.pubsub()
    p.subscribe(channel + "plain", **{channel + "handled": seen.append})
    p.psubscribe(**{channel + "q*": seen.append})
    drain(p)
    r.publish(channel + "handled", "h")
    r.publish(channel + "plain", "x")
    r.publish(channel + "qx", "q")
    assert drain(p) == [
        {"type": "message", "pattern": None, "channel": (channel + "plain").encode(), "data": b"x"}]
    assert seen == [
        {"type": "message", "pattern": None, "channel": (channel + "handled").encode(),
         "data": b"h"},
        {"type": "pmessage", "pattern": (channel + "q*").encode(),
         "channel": (channel + "qx").encode(), "data": b"q"},
    ]
    p.close()


def test_listen_yields_until_the_last_unsubscribe(r, channel):
    p = r.pubsub()
    p.subscribe(channel)
    for n in range(3):
        r.publish(channel, str(n))
    got = []
    for m in p.listen():
        got.append((m["type"], m["data"]))
        if m["data"] == b"2":
            p.unsubscribe()
    assert got == [("subscribe", 1), ("message", b"0"), ("message", b"1"), ("message", b"2"),
                   ("unsubscribe", 0)]
    assert not p.subscribed
    p.close()


def test_run_in_thread(r, channel):
    p = r.pubsub()
    p.subscribe(channel + "nohandler")
    with pytest.raises(shmcast.PubSubError, match="has no handler registered"):
        p.run_in_thread()
    p.close()
    seen = []
    done = threading.Event()

    def handler(m):
        seen.append(m["data"])
        if len(seen) == 3:
            done.set()

    p = r.pubsub()
    p.subscribe(**{channel: handler})
    p.psubscribe(**{channel + ":*": handler})
    t = p.run_in_thread(sleep_time=0.01, daemon=True)
    assert isinstance(t, shmcast.PubSubWorkerThread) and t.daemon
    r.publish(channel, "a")
    r.publish(channel + ":x", "b")
    r.publish(channel, "c")
    assert done.wait(5)
    t.stop()
    t.join(5)
    assert not t.is_alive()
    assert seen == [b"a", b"b", b"c"]
    assert not p.subscribed  # the thread closed it
    assert r.pubsub_numsub(channel) == [(channel.encode(), 0)]


def test_run_in_thread_exception_handler(r, channel):
    caught = []

    def boom(m):
        raise RuntimeError(m["data"])

    p = r.pubsub()
    p.subscribe(**{channel: boom})
    t = p.run_in_thread(sleep_time=0.01,
                        exception_handler=lambda e, ps, th: (caught.append(str(e)), th.stop()))
    r.publish(channel, "x")
    t.join(5)
    assert caught == ["b'x'"]


def test_context_manager_and_close_drop_subscriptions(r, channel):
    with r.pubsub() as p:
        p.subscribe(channel)
        assert r.pubsub_numsub(channel) == [(channel.encode(), 1)]
    assert r.pubsub_numsub(channel) == [(channel.encode(), 0)]
    assert not p.subscribed and p.channels == {}
    p.subscribe(channel)  # a closed PubSub subscribes again, as redis-py's
    assert p.get_message(timeout=1)["data"] == 1
    p.close()
    p.close()


def test_redis_close_reconnects_on_next_call(daemon, channel):
    r = shmcast.Redis(daemon.bus)
    r.close()
    assert r.publish(channel, "x") == 0
    r.close()


def test_pubsub_inspection(private_daemon):
    r = shmcast.Redis(private_daemon().bus)
    assert r.pubsub_channels() == [] and r.pubsub_numpat() == 0
    p = r.pubsub()
    q = r.pubsub()
    p.subscribe("news", "news:sport")
    q.subscribe("news")
    p.psubscribe("user:*", "a?")
    q.psubscribe("user:*")
    assert sorted(r.pubsub_channels()) == [b"news", b"news:sport"]
    assert r.pubsub_channels("news:*") == [b"news:sport"]
    assert r.pubsub_channels(b"n*s") == [b"news"]
    assert r.pubsub_numsub("news", "news:sport", "none") == [
        (b"news", 2), (b"news:sport", 1), (b"none", 0)]
    assert r.pubsub_numsub() == []
    assert r.pubsub_numpat() == 2
    assert r.execute_command("PUBSUB", "NUMSUB", "news", "none") == [b"news", 2, b"none", 0]
    assert r.execute_command("PUBSUB NUMSUB", "news") == [b"news", 2]
    assert r.execute_command("pubsub", "numpat") == 2
    assert sorted(r.execute_command("PUBSUB", "CHANNELS")) == [b"news", b"news:sport"]
    assert r.execute_command("PUBSUB", "CHANNELS", "news:*") == [b"news:sport"]
    assert r.execute_command("PUBLISH", "news", "m") == 2
    with pytest.raises(ValueError, match="PUBLISH channel message"):
        r.execute_command("GET", "key")
    with pytest.raises(ValueError):
        r.execute_command("PUBSUB", "NUMPAT", "extra")
    p.close()
    q.close()
    assert wait_until(lambda: r.pubsub_channels() == [] and r.pubsub_numpat() == 0), (
        r.pubsub_channels(), r.pubsub_numpat())


def test_decode_responses(daemon, channel):
    r = shmcast.Redis(daemon.bus, decode_responses=True)
    seen = []
    p = r.pubsub()
    p.subscribe(channel + "a", **{channel + "h": seen.append})
    p.psubscribe(channel + "*")
    r.publish(channel + "a", "é")
    r.publish(channel + "h", b"h")
    assert drain(p) == [
        {"type": "subscribe", "pattern": None, "channel": channel + "a", "data": 1},
        {"type": "subscribe", "pattern": None, "channel": channel + "h", "data": 2},
        {"type": "psubscribe", "pattern": None, "channel": channel + "*", "data": 3},
        {"type": "message", "pattern": None, "channel": channel + "a", "data": "é"},
        {"type": "pmessage", "pattern": channel + "*", "channel": channel + "a", "data": "é"},
        {"type": "pmessage", "pattern": channel + "*", "channel": channel + "h", "data": "h"},
    ]
    assert seen == [{"type": "message", "pattern": None, "channel": channel + "h", "data": "h"}]
    assert sorted(r.pubsub_channels(channel + "*")) == [channel + "a", channel + "h"]
    assert r.pubsub_numsub(channel + "a") == [(channel + "a", 1)]
    r.publish(channel + "a", b"\xff")
    with pytest.raises(UnicodeDecodeError):
        p.get_message(timeout=1)
    p.close()


def test_encoding_and_errors(daemon, channel):
    r = shmcast.Redis(daemon.bus, decode_responses=True, encoding="latin-1")
    p = r.pubsub(ignore_subscribe_messages=True)
    p.subscribe(channel)
    r.publish(channel, "é")
    p.get_message(timeout=1)
    assert p.get_message(timeout=1)["data"] == "é"
    raw = shmcast.Redis(daemon.bus)
    raw.publish(channel, "é")
    assert p.get_message(timeout=1)["data"] == "Ã©"  # two UTF-8 bytes read as latin-1
    strict = shmcast.Redis(daemon.bus, encoding="ascii")
    with pytest.raises(UnicodeEncodeError):
        strict.publish(channel, "é")
    lenient = shmcast.Redis(daemon.bus, encoding="ascii", encoding_errors="replace")
    assert lenient.publish(channel, "é") == 1
    assert p.get_message(timeout=1)["data"] == "?"
    p.close()


def test_gap_counts_messages_a_full_ring_lost(private_daemon):
    r = shmcast.Redis(private_daemon("--ring-bytes", "4096", "--max-payload", "1024").bus)
    p = r.pubsub()
    p.subscribe("flood")
    delivered = sum(r.publish("flood", b"x" * 200) for _ in range(100))
    assert 0 < delivered < 100
    frames = drain(p)[1:]
    data = [m for m in frames if m["type"] == "message"]
    gaps = [m for m in frames if m["type"] == "gap"]
    assert len(data) == delivered
    assert gaps == [{"type": "gap", "pattern": None, "channel": None, "data": 100 - delivered}]
    assert frames[-1]["type"] == "gap"
    assert p.dropped() == 100 - delivered
    p.close()


def test_publish_from_several_threads(r, channel):
    p = r.pubsub()
    p.subscribe(channel)
    results = []

    def publisher(n):
        results.append(sum(r.publish(channel, f"{n}:{i}") for i in range(500)))

    threads = [threading.Thread(target=publisher, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [500] * 4
    got = [data.decode() for data in published(p)]
    assert len(got) == 2000
    for n in range(4):  # each thread's messages keep their order
        assert [g for g in got if g.startswith(f"{n}:")] == [f"{n}:{i}" for i in range(500)]
    p.close()


def test_docstrings_and_stubs():
    assert "PUBLISH" in shmcast.Redis.publish.__doc__
    assert "SUBSCRIBE" in shmcast.PubSub.subscribe.__doc__
    assert "gap" in shmcast.PubSub.__doc__
    from pathlib import Path

    package = Path(shmcast.__file__).parent
    for stub in ["__init__.pyi", "asyncio.pyi", "_shmcast.pyi", "py.typed"]:
        assert (package / stub).exists()
