"""Loans from Python: a writable memoryview published without a copy, read in place as a
read-only memoryview that holds the bytes until it is released; pool and hold limits."""

import asyncio
import io
import json
import signal
import subprocess
import threading

import pytest

import shmcast
from conftest import BIN_DIR, popen_python, stop, wait_until

MIB = 1 << 20


def stat(bus):
    """shm-stat's JSON snapshot of the bus."""
    out = subprocess.run([str(BIN_DIR / "shm-stat"), "--json", "--bus", bus], check=True,
                         capture_output=True, text=True, timeout=30)
    return json.loads(out.stdout)


def pool_use(bus):
    """(chunks in use, bytes in use) over every pool of the bus."""
    pools = stat(bus)["pools"]
    return (sum(p["chunks_in_use"] for p in pools), sum(p["bytes_in_use"] for p in pools))


def holds(bus):
    return sum(c["holds"] for c in stat(bus)["clients"])


def frame(size, seed):
    """`size` bytes no two seeds share, with distinct first and last bytes."""
    return bytes((i * 7 + seed) % 251 for i in range(251)) * (size // 251) + bytes(size % 251)


def subscribed(r, channel, **options):
    p = r.pubsub(**options)
    p.subscribe(channel)
    assert p.get_message(timeout=5)["type"] == "subscribe"
    return p


def publish_loan(r, channel, payload):
    loan = r.loan(len(payload))
    loan.data[:] = payload
    return r.publish(channel, loan)


def test_a_loan_reaches_two_subscribers_in_place(private_daemon):
    d = private_daemon()
    r = shmcast.Redis(d.bus)
    by_pubsub = subscribed(r, "frames", zero_copy=True)
    by_call = subscribed(r, "frames")
    payload = frame(MIB, 1)

    loan = r.loan(MIB)
    assert len(loan) == MIB and not loan.spent
    view = loan.data
    assert (view.readonly, view.nbytes, view.format) == (False, MIB, "B")
    assert loan.data is view
    view[:] = payload
    assert r.publish("frames", loan) == 2

    first = by_pubsub.get_message(timeout=5)
    second = by_call.get_message(timeout=5, zero_copy=True)
    for m in (first, second):
        assert (m["type"], m["channel"], m["pattern"]) == ("message", b"frames", None)
        data = m["data"]
        assert isinstance(data, memoryview)
        assert (data.readonly, data.nbytes) == (True, MIB)
        assert isinstance(data.obj, shmcast.SharedBytes) and data.obj.loaned
        assert data == payload
    # One chunk, held by both subscribers.
    assert pool_use(d.bus) == (1, MIB)
    assert holds(d.bus) == 2

    with first["data"] as data:
        assert data[0] == payload[0] and data[-1] == payload[-1]
    assert holds(d.bus) == 1
    second["data"].release()
    assert holds(d.bus) == 0
    assert wait_until(lambda: pool_use(d.bus) == (0, 0))
    r.close()


def test_a_received_view_is_read_only(private_daemon):
    d = private_daemon()
    r = shmcast.Redis(d.bus)
    p = subscribed(r, "c", zero_copy=True)
    assert publish_loan(r, "c", b"published") == 1
    data = p.get_message(timeout=5)["data"]
    with pytest.raises(TypeError):
        data[0] = 0
    with pytest.raises(TypeError):
        data[:2] = b"xx"
    # Nothing can get a writable buffer from it either.
    assert memoryview(data.obj).readonly
    with pytest.raises(TypeError):
        io.BytesIO(b"xx").readinto(data)
    assert data == b"published"


def test_plain_get_message_copies_a_loaned_message(private_daemon):
    d = private_daemon()
    r = shmcast.Redis(d.bus)
    p = subscribed(r, "c")
    payload = frame(MIB, 2)
    assert publish_loan(r, "c", payload) == 1
    m = p.get_message(timeout=5)
    assert type(m["data"]) is bytes and m["data"] == payload
    assert holds(d.bus) == 0
    assert wait_until(lambda: pool_use(d.bus) == (0, 0))


def test_zero_copy_of_a_copied_message_is_a_view_of_a_copy(private_daemon):
    d = private_daemon()
    r = shmcast.Redis(d.bus, decode_responses=True)
    p = subscribed(r, "c", zero_copy=True)
    assert r.publish("c", "small") == 1
    m = p.get_message(timeout=5)
    assert m["channel"] == "c"
    assert isinstance(m["data"], memoryview) and m["data"].readonly
    assert m["data"] == b"small" and not m["data"].obj.loaned
    assert holds(d.bus) == 0


def test_a_spent_loan_raises(private_daemon):
    d = private_daemon()
    r = shmcast.Redis(d.bus)
    p = subscribed(r, "c")
    loan = r.loan(16)
    view = loan.data
    view[:] = b"0123456789abcdef"
    owner = view.obj
    assert r.publish("c", loan) == 1
    assert loan.spent
    with pytest.raises(ValueError, match="released memoryview"):
        view[0] = 1
    with pytest.raises(ValueError, match="take a new one with loan"):
        loan.data
    with pytest.raises(ValueError, match="take a new one with loan"):
        len(loan)
    with pytest.raises(ValueError, match="take a new one with loan"):
        r.publish("c", loan)
    with pytest.raises(ValueError, match="take a new one with loan"):
        memoryview(owner)
    loan.release()
    assert p.get_message(timeout=5)["data"] == b"0123456789abcdef"
    assert p.get_message(timeout=0.2) is None


def test_publish_refuses_while_a_slice_of_the_loan_lives(private_daemon):
    d = private_daemon()
    r = shmcast.Redis(d.bus)
    p = subscribed(r, "c")
    loan = r.loan(8)
    part = loan.data[4:]
    loan.data[:] = b"abcdefgh"
    with pytest.raises(BufferError, match="still in use"):
        r.publish("c", loan)
    assert not loan.spent and part == b"efgh"
    del part
    assert r.publish("c", loan) == 1
    assert p.get_message(timeout=5)["data"] == b"abcdefgh"


def test_shrink_publishes_the_first_bytes(private_daemon):
    d = private_daemon()
    r = shmcast.Redis(d.bus)
    p = subscribed(r, "c")
    loan = r.loan(1000)
    loan.data[:5] = b"hello"
    with pytest.raises(ValueError, match="cannot grow"):
        loan.shrink(1001)
    loan.shrink(5)
    assert len(loan) == 5 and loan.data == b"hello"
    assert r.publish("c", loan) == 1
    assert p.get_message(timeout=5)["data"] == b"hello"


def test_a_loan_given_back_unpublished_frees_its_bytes(private_daemon):
    d = private_daemon()
    r = shmcast.Redis(d.bus)
    loan = r.loan(MIB)
    assert pool_use(d.bus)[1] == MIB
    loan.release()
    assert loan.spent and wait_until(lambda: pool_use(d.bus) == (0, 0))
    with r.loan(MIB) as loan:
        loan.data[0] = 1
        assert pool_use(d.bus)[1] == MIB
    assert loan.spent and wait_until(lambda: pool_use(d.bus) == (0, 0))
    dropped = r.loan(MIB)
    del dropped
    assert wait_until(lambda: pool_use(d.bus) == (0, 0))


def test_pool_full(private_daemon):
    d = private_daemon("--pool-bytes", str(MIB))
    r = shmcast.Redis(d.bus)
    first = r.loan(MIB * 3 // 4)
    with pytest.raises(shmcast.PoolFullError, match="--pool-bytes") as e:
        r.loan(MIB // 2)
    assert e.value.code == "pool_full"
    with pytest.raises(shmcast.PayloadTooLargeError, match="--pool-bytes"):
        r.loan(2 * MIB)
    # A loan that waits gets the room another thread gives back.
    giver = threading.Timer(0.1, first.release)
    giver.start()
    second = r.loan(MIB // 2, wait=30.0)
    giver.join()
    assert len(second) == MIB // 2 and first.spent
    with pytest.raises(ValueError, match="seconds"):
        r.loan(1, wait=-1.0)


def test_held_messages_keep_the_pool_until_released(private_daemon):
    d = private_daemon("--pool-bytes", str(MIB))
    r = shmcast.Redis(d.bus)
    p = subscribed(r, "c", zero_copy=True)
    assert publish_loan(r, "c", frame(MIB * 3 // 4, 3)) == 1
    held = p.get_message(timeout=5)["data"]
    with pytest.raises(shmcast.PoolFullError):
        r.loan(MIB // 2)
    held.release()
    assert len(r.loan(MIB // 2)) == MIB // 2


def test_too_many_holds(private_daemon):
    d = private_daemon("--max-holds", "2")
    r = shmcast.Redis(d.bus)
    p = subscribed(r, "c", zero_copy=True)
    payloads = [frame(1000, seed) for seed in range(4)]
    for payload in payloads:
        assert publish_loan(r, "c", payload) == 1

    kept = [p.get_message(timeout=5)["data"] for _ in range(2)]
    assert kept == payloads[:2] and holds(d.bus) == 2
    with pytest.raises(shmcast.TooManyHoldsError, match="--max-holds") as e:
        p.get_message(timeout=5)
    assert e.value.code == "too_many_holds"
    # The message is not lost: it comes next, copied.
    copied = p.get_message(timeout=5)["data"]
    assert copied == payloads[2] and copied.readonly and type(copied.obj) is bytes
    kept.pop(0).release()
    last = p.get_message(timeout=5)["data"]
    assert last == payloads[3] and last.obj.loaned
    assert holds(d.bus) == 2
    del kept, last
    assert holds(d.bus) == 0
    assert wait_until(lambda: pool_use(d.bus) == (0, 0))


def test_a_held_view_outlives_its_subscriber_and_connection(private_daemon):
    d = private_daemon()
    r = shmcast.Redis(d.bus)
    p = subscribed(r, "c", zero_copy=True)
    payload = frame(MIB, 4)
    assert publish_loan(r, "c", payload) == 1
    data = p.get_message(timeout=5)["data"][1:]
    p.close()
    r.close()
    assert data == payload[1:]
    assert pool_use(d.bus) == (1, MIB)
    del data
    assert wait_until(lambda: pool_use(d.bus) == (0, 0))


def test_a_view_released_in_another_thread(private_daemon):
    d = private_daemon()
    r = shmcast.Redis(d.bus)
    p = subscribed(r, "c", zero_copy=True)
    assert publish_loan(r, "c", b"x" * 4096) == 1
    data = p.get_message(timeout=5)["data"]
    worker = threading.Thread(target=lambda: (bytes(data), data.release()))
    worker.start()
    worker.join(10)
    assert not worker.is_alive()
    assert holds(d.bus) == 0
    assert wait_until(lambda: pool_use(d.bus) == (0, 0))


def test_listen_yields_views_when_zero_copy(private_daemon):
    d = private_daemon()
    r = shmcast.Redis(d.bus)
    p = r.pubsub(ignore_subscribe_messages=True, zero_copy=True)
    p.subscribe("c")
    assert publish_loan(r, "c", b"one") == 1
    m = next(p.listen())
    assert isinstance(m["data"], memoryview) and m["data"] == b"one"
    m["data"].release()
    assert holds(d.bus) == 0
    # A loan is one message among the copied ones, in publish order.
    assert r.publish("c", b"copied") == 1
    assert publish_loan(r, "c", b"loaned") == 1
    assert [bytes(p.get_message(timeout=5, zero_copy=z)["data"]) for z in (False, True)] == [
        b"copied", b"loaned"]


@pytest.mark.skipif(not hasattr(shmcast._shmcast.Subscriber, "fileno"),
                    reason="this build's shmcast has no Subscriber::fd()")
async def test_asyncio_loans_and_zero_copy_reads(private_daemon):
    import shmcast.asyncio

    d = private_daemon("--pool-bytes", str(MIB))
    async with shmcast.asyncio.Redis(d.bus) as r:
        p = r.pubsub(zero_copy=True)
        await p.subscribe("c")
        assert (await p.get_message(timeout=5))["type"] == "subscribe"
        payload = frame(MIB * 3 // 4, 5)
        loan = await r.loan(len(payload))
        loan.data[:] = payload
        assert await r.publish("c", loan) == 1
        held = (await p.get_message(timeout=5))["data"]
        assert held == payload and held.obj.loaned
        with pytest.raises(shmcast.PoolFullError):
            await r.loan(MIB // 2, wait=0.05)
        # The loan waits in the event loop while another task lets the held view go.
        asyncio.get_running_loop().call_later(0.1, held.release)
        assert len(await r.loan(MIB // 2, wait=30.0)) == MIB // 2
        assert holds(d.bus) == 0
        await p.close()


HOLDER = """
import sys, shmcast
p = shmcast.Redis(sys.argv[1]).pubsub(zero_copy=True)
p.subscribe("c")
print("ready", flush=True)
held = [p.get_message(timeout=5) for _ in range(3)]
assert [bytes(m["data"]) for m in held[1:]] == [b"one", b"two"], held
print("holding", flush=True)
sys.stdin.read()
"""


def test_holds_of_a_sigkilled_subscriber_are_released(private_daemon):
    d = private_daemon()
    r = shmcast.Redis(d.bus)
    child = popen_python(HOLDER, d.bus, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline() == "ready\n"
    assert publish_loan(r, "c", b"one") == 1
    assert publish_loan(r, "c", b"two") == 1
    assert child.stdout.readline() == "holding\n"
    assert holds(d.bus) == 2 and pool_use(d.bus)[0] == 2
    assert stop(child, signal.SIGKILL) == -signal.SIGKILL
    assert wait_until(lambda: pool_use(d.bus) == (0, 0))
    assert holds(d.bus) == 0
