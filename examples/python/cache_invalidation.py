#!/usr/bin/python3
"""Cache invalidation: several processes keep a local cache of the same data; when a value
changes, the writer broadcasts its key on one channel and every cache drops that key.

    python3 cache_invalidation.py --bus NAME      (a shmcastd must serve NAME)

Starts three cache processes (each a PubSub with a handler, run_in_thread), broadcasts two
invalidations and checks that every cache dropped exactly those keys.
"""

import argparse
import multiprocessing
import sys
import time

import shmcast

CHANNEL = "cache:invalidate"
STALE = ["product:3", "product:7"]


def cache_process(bus, ready, results):
    r = shmcast.Redis(bus=bus, decode_responses=True)
    cache = {f"product:{n}": f"price {n}" for n in range(10)}
    dropped = []

    def invalidate(message):
        cache.pop(message["data"], None)
        dropped.append(message["data"])

    p = r.pubsub()
    p.subscribe(**{CHANNEL: invalidate})
    worker = p.run_in_thread(sleep_time=0.05)
    ready.release()
    deadline = time.monotonic() + 5
    while len(dropped) < len(STALE) and time.monotonic() < deadline:
        time.sleep(0.01)
    worker.stop()
    worker.join()
    results.put((dropped, sorted(cache)))


def main():
    parser = argparse.ArgumentParser(description="cache invalidation")
    parser.add_argument("--bus", default=None, help="bus name ($SHMCAST_BUS, else 'default')")
    bus = parser.parse_args().bus

    ready = multiprocessing.Semaphore(0)
    results = multiprocessing.Queue()
    caches = [multiprocessing.Process(target=cache_process, args=(bus, ready, results))
              for _ in range(3)]
    for c in caches:
        c.start()
    for _ in caches:
        ready.acquire()
    r = shmcast.Redis(bus=bus)  # after the fork: each process makes its own connection
    for key in STALE:
        print(f"invalidate {key}: {r.publish(CHANNEL, key)} caches told")
    ok = True
    for n in range(len(caches)):
        dropped, kept = results.get(timeout=10)
        print(f"a cache dropped {dropped}, keeps {len(kept)} keys")
        ok = ok and dropped == STALE and not set(STALE) & set(kept)
    for c in caches:
        c.join()
    if not ok:
        sys.exit("cache_invalidation: a cache still holds a stale key")
    print("cache_invalidation: every cache dropped exactly the stale keys")


if __name__ == "__main__":
    main()
