"""shmcast.asyncio: the same calls as coroutines, waiting on the subscriber's descriptor."""

import asyncio
import time

import pytest

import shmcast
import shmcast.asyncio
from shmcast import _shmcast

pytestmark = pytest.mark.skipif(not hasattr(_shmcast.Subscriber, "fileno"),
                                reason="this build's shmcast has no Subscriber::fd()")


async def test_publish_and_inspect(daemon, channel):
    async with shmcast.asyncio.Redis(daemon.bus) as r:
        assert shmcast.asyncio.Bus is shmcast.asyncio.Redis and r.bus == daemon.bus
        assert await r.publish(channel, "nobody") == 0
        p = r.pubsub()
        await p.subscribe(channel)
        await p.psubscribe(channel + "*")
        assert await r.publish(channel, "x") == 2
        assert await r.pubsub_channels(channel + "*") == [channel.encode()]
        assert await r.pubsub_numsub(channel) == [(channel.encode(), 1)]
        assert await r.pubsub_numpat() >= 1
        assert await r.execute_command("PUBSUB", "NUMSUB", channel) == [channel.encode(), 1]
        await p.close()


async def test_get_message_waits_on_the_event_loop(daemon, channel):
    r = shmcast.asyncio.Redis(daemon.bus)
    p = r.pubsub()
    await p.subscribe(channel)
    assert await p.get_message() == {"type": "subscribe", "pattern": None,
                                     "channel": channel.encode(), "data": 1}
    assert await p.get_message() is None
    start = time.monotonic()
    assert await p.get_message(timeout=0.2) is None
    assert time.monotonic() - start >= 0.19

    ticks = 0

    async def ticker():
        # Runs while get_message waits: the wait blocks no thread of the loop.
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    async def publish_later():
        await asyncio.sleep(0.2)
        return await r.publish(channel, "late")

    tick = asyncio.create_task(ticker())
    later = asyncio.create_task(publish_later())
    message = await p.get_message(timeout=None)
    tick.cancel()
    assert message == {"type": "message", "pattern": None, "channel": channel.encode(),
                       "data": b"late"}
    assert await later == 1 and ticks >= 10
    await p.close()


async def test_listen_handlers_and_decode(daemon, channel):
    r = shmcast.asyncio.Redis(daemon.bus, decode_responses=True)
    seen = []

    async def coroutine_handler(m):
        await asyncio.sleep(0)
        seen.append(("async", m["data"]))

    p = r.pubsub()
    await p.subscribe(channel, **{channel + ":a": coroutine_handler,
                                  channel + ":s": lambda m: seen.append(("sync", m["data"]))})
    for name, data in [(":a", "1"), (":s", "2"), ("", "3")]:
        await r.publish(channel + name, data)
    got = []
    async for m in p.listen():
        got.append(m)
        if m["type"] == "message":
            await p.unsubscribe()
    assert got[:3] == [
        {"type": "subscribe", "pattern": None, "channel": channel, "data": 1},
        {"type": "subscribe", "pattern": None, "channel": channel + ":a", "data": 2},
        {"type": "subscribe", "pattern": None, "channel": channel + ":s", "data": 3},
    ]
    assert got[3] == {"type": "message", "pattern": None, "channel": channel, "data": "3"}
    assert [m["type"] for m in got[4:]] == ["unsubscribe"] * 3
    assert [m["data"] for m in got[4:]] == [2, 1, 0]
    assert sorted(m["channel"] for m in got[4:]) == [channel, channel + ":a", channel + ":s"]
    assert seen == [("async", "1"), ("sync", "2")]
    assert not p.subscribed


async def test_run_calls_handlers_until_cancelled(daemon, channel):
    r = shmcast.asyncio.Redis(daemon.bus)
    p = r.pubsub()
    await p.subscribe(channel + ":none")
    with pytest.raises(shmcast.PubSubError, match="has no handler registered"):
        await p.run()
    await p.reset()
    seen = []
    done = asyncio.Event()

    async def handler(m):
        seen.append(m["data"])
        if len(seen) == 2:
            done.set()

    await p.psubscribe(**{channel + ":*": handler})
    task = asyncio.create_task(p.run(poll_timeout=0.05))
    await r.publish(channel + ":1", "a")
    await r.publish(channel + ":2", "b")
    await asyncio.wait_for(done.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == [b"a", b"b"]
    with pytest.raises(TypeError, match="await pubsub.run"):
        p.run_in_thread()
    await p.close()


async def test_many_messages_in_order(daemon, channel):
    r = shmcast.asyncio.Redis(daemon.bus)
    p = r.pubsub(ignore_subscribe_messages=True)
    await p.subscribe(channel)

    async def publisher():
        for i in range(2000):
            await r.publish(channel, str(i))
            if i % 100 == 0:
                await asyncio.sleep(0)

    task = asyncio.create_task(publisher())
    got = []
    while len(got) < 2000:
        m = await p.get_message(timeout=2)
        if m is not None:
            got.append(int(m["data"]))
        elif task.done():
            break
    await task
    assert got == list(range(2000))
    await p.close()


async def test_errors(daemon):
    with pytest.raises(shmcast.NoCoordinatorError):
        shmcast.asyncio.Redis("py-asyncio-nobody-here", request_timeout=0.05)
    r = shmcast.asyncio.Redis(daemon.bus)
    with pytest.raises(shmcast.PayloadTooLargeError):
        await r.publish("c", b"x" * 100000)
    with pytest.raises(TypeError):
        await r.publish("c", None)


async def test_close_wakes_a_task_waiting_in_get_message(daemon, channel):
    r = shmcast.asyncio.Redis(daemon.bus)
    p = r.pubsub()
    await p.subscribe(channel)
    assert (await p.get_message())["type"] == "subscribe"
    waiting = asyncio.ensure_future(p.get_message(timeout=None))
    await asyncio.sleep(0.1)
    await p.close()
    assert await asyncio.wait_for(waiting, 5) is None
    # The next subscriber may get the closed one's descriptor number: the loop still watches it.
    q = r.pubsub()
    await q.subscribe(channel)
    assert (await q.get_message())["type"] == "subscribe"
    reading = asyncio.ensure_future(q.get_message(timeout=5))
    await asyncio.sleep(0.1)
    assert await r.publish(channel, "x") == 1
    assert (await reading)["data"] == b"x"
    await q.close()
    await r.close()
