"""One redis-py program, two backends: run with `redis SOCKET` (a redis-server on a unix
socket) or `shmcast BUS`. Only connect() differs; test_two_backends.py requires the same output
from both. It does what the guide's examples do: notifications, a chat room, cache
invalidation, a leaderboard, fan-out and patterns, and covers every PubSub call."""

import asyncio
import json
import sys
import threading
import time

BACKEND, WHERE = sys.argv[1], sys.argv[2]

if BACKEND == "redis":
    import redis
    import redis.asyncio

    def connect(**options):
        return redis.Redis(unix_socket_path=WHERE, **options)

    def connect_async(**options):
        return redis.asyncio.Redis(unix_socket_path=WHERE, **options)

    PubSubError = redis.exceptions.PubSubError
else:
    import shmcast
    import shmcast.asyncio

    def connect(**options):
        return shmcast.Redis(bus=WHERE, **options)

    def connect_async(**options):
        return shmcast.asyncio.Redis(bus=WHERE, **options)

    PubSubError = shmcast.PubSubError


def show(label, value):
    print(f"{label}: {value!r}", flush=True)


def read(p, label, n, **options):
    """Shows the next n frames, then that no other comes."""
    for _ in range(n):
        show(label, p.get_message(timeout=2.0, **options))
    show(label + " then", p.get_message(timeout=0.05))


def settle(r):
    """Waits until the bus has no subscriber: Redis drops a closed connection's subscriptions
    a moment after the close, shmcast before close() returns."""
    deadline = time.monotonic() + 5
    while (r.pubsub_channels() or r.pubsub_numpat()) and time.monotonic() < deadline:
        time.sleep(0.001)


def inspection(r, label):
    show(label + " channels", sorted(r.pubsub_channels()))
    show(label + " numsub", r.pubsub_numsub("alerts", "notifications", "none"))
    show(label + " numpat", r.pubsub_numpat())
    show(label + " NUMSUB", r.execute_command("PUBSUB", "NUMSUB", "alerts", "notifications"))
    show(label + " NUMPAT", r.execute_command("PUBSUB", "NUMPAT"))
    show(label + " CHANNELS", sorted(r.execute_command("PUBSUB", "CHANNELS", "a*")))


def basics(r):
    show("publish nobody", r.publish("alerts", "New login detected"))
    p = r.pubsub()
    show("subscribed before", p.subscribed)
    show("subscribe", p.subscribe("alerts", "notifications"))
    show("subscribed after", p.subscribed)
    show("psubscribe", p.psubscribe("user:*:alerts"))
    read(p, "confirmations", 3)
    show("publish alerts", r.publish("alerts", "New login detected"))
    show("publish user alert", r.publish("user:7:alerts", b"disk \xff full"))
    show("publish number", r.publish("notifications", 42))
    show("publish float", r.publish("notifications", 2.5))
    read(p, "messages", 4)
    inspection(r, "with subscribers")
    show("unsubscribe one", p.unsubscribe("alerts"))
    show("punsubscribe one", p.punsubscribe("user:*:alerts"))
    read(p, "unsubscribed", 2)
    p.psubscribe("p*")
    p.unsubscribe("notifications")
    p.unsubscribe()  # nothing left but a pattern: the nil confirmation
    read(p, "nil", 3)
    show("still subscribed", p.subscribed)
    p.punsubscribe()
    read(p, "last", 1)
    show("subscribed at the end", p.subscribed)
    show("not subscribed", p.get_message(timeout=0.05))
    p.close()
    settle(r)
    inspection(r, "without subscribers")


def handlers_and_ignore(r):
    seen = []
    p = r.pubsub(ignore_subscribe_messages=True)
    p.subscribe("plain", **{"user:7:notifications": seen.append})
    p.psubscribe(**{"news.*": lambda m: seen.append(("pattern", m))})
    read(p, "ignored confirmations", 3)
    r.publish("user:7:notifications", "you have mail")
    r.publish("news.sport", "goal")
    r.publish("plain", "not handled")
    read(p, "handled", 3)
    show("handler saw", seen)
    try:
        p.run_in_thread()
    except PubSubError as e:
        show("run_in_thread refused", (type(e).__name__, str(e)))
    p.close()
    q = r.pubsub()
    q.subscribe("x")
    show("ignore per call", q.get_message(ignore_subscribe_messages=True, timeout=2.0))
    q.close()


def listen(r):
    p = r.pubsub()
    p.subscribe("chat:room")
    p.get_message(timeout=2.0)
    for n, who in enumerate(["ann", "bob", "cid"]):
        r.publish("chat:room", json.dumps({"from": who, "text": f"hello {n}"}))
    for m in p.listen():
        show("listen", m)
        if m["type"] == "message":
            show("chat", json.loads(m["data"]))
            if json.loads(m["data"])["from"] == "cid":
                p.unsubscribe()
    show("listen ended, subscribed", p.subscribed)
    p.close()


def run_in_thread(r):
    got = []
    done = threading.Event()

    def handler(m):
        got.append(m)
        if len(got) == 3:
            done.set()

    p = r.pubsub()
    p.subscribe(**{"cache:invalidate": handler})
    p.psubscribe(**{"cache:*:flush": handler})
    thread = p.run_in_thread(sleep_time=0.01, daemon=True)
    # redis-py's subscribe returns before the server has run it.
    while r.pubsub_numsub("cache:invalidate")[0][1] != 1 or r.pubsub_numpat() != 1:
        time.sleep(0.001)
    show("publish", r.publish("cache:invalidate", "user:7"))
    show("publish", r.publish("cache:eu:flush", "all"))
    show("publish", r.publish("cache:invalidate", "user:8"))
    show("thread done", done.wait(5))
    thread.stop()
    thread.join(5)
    show("thread alive", thread.is_alive())
    show("thread got", got)


def fanout_and_leaderboard(r):
    readers = [r.pubsub(ignore_subscribe_messages=True) for _ in range(3)]
    for n, p in enumerate(readers):
        p.subscribe("leaderboard")
        p.psubscribe(f"reader:{n}:*")
        p.get_message(timeout=2.0)
        p.get_message(timeout=2.0)
    scores = {"ann": 0, "bob": 0}
    for who, points in [("ann", 10), ("bob", 7), ("ann", 5)]:
        scores[who] += points
        show("leaderboard publish", r.publish("leaderboard", json.dumps(scores)))
    show("one reader", r.publish("reader:1:direct", "only you"))
    for n, p in enumerate(readers):
        read(p, f"reader {n}", 4 if n == 1 else 3)
        p.close()


def decode(r):
    p = r.pubsub()
    p.subscribe("notifications", **{"handled": lambda m: show("decoded handler", m)})
    p.psubscribe("user:*:alerts")
    read(p, "decoded confirmations", 3)
    r.publish("notifications", "é and bytes")
    r.publish("user:1:alerts", b"raw")
    r.publish("handled", "h")
    read(p, "decoded", 3)
    show("decoded channels", sorted(r.pubsub_channels()))
    show("decoded numsub", r.pubsub_numsub("notifications"))
    show("decoded NUMSUB", r.execute_command("PUBSUB", "NUMSUB", "notifications"))
    p.close()


async def asyncio_part():
    r = connect_async()
    p = r.pubsub()
    seen = []

    async def coroutine_handler(m):
        seen.append(m)

    await p.subscribe("alerts", **{"handled": coroutine_handler})
    await p.psubscribe("user:*:alerts")
    for _ in range(3):
        show("async confirmation", await p.get_message(timeout=2.0))
    show("async publish", await r.publish("alerts", "a1"))
    show("async publish", await r.publish("user:3:alerts", "a2"))
    show("async publish", await r.publish("handled", "a3"))
    show("async numsub", await r.pubsub_numsub("alerts", "handled"))
    show("async numpat", await r.pubsub_numpat())
    for _ in range(3):
        show("async message", await p.get_message(timeout=2.0))
    show("async handler saw", seen)
    await p.unsubscribe()
    await p.punsubscribe()
    async for m in p.listen():
        show("async listen", m["type"])
    await p.close()

    done = asyncio.Event()
    got = []

    async def handler(m):
        got.append(m)
        done.set()

    q = r.pubsub()
    await q.subscribe(**{"events": handler})
    task = asyncio.create_task(q.run(poll_timeout=0.05))
    while (await r.pubsub_numsub("events"))[0][1] != 1:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    show("async run publish", await r.publish("events", "e1"))
    await asyncio.wait_for(done.wait(), 5)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        show("async run", "cancelled")
    show("async run got", got)
    await q.close()
    await r.close()


def main():
    r = connect()
    for part in [basics, handlers_and_ignore, listen, run_in_thread, fanout_and_leaderboard]:
        settle(r)
        part(r)
    settle(r)
    decode(connect(decode_responses=True))
    settle(r)
    asyncio.run(asyncio_part())
    print("end", flush=True)


main()
