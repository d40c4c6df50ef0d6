#!/usr/bin/python3
"""Fan-out: one publisher, several subscriber processes, every message delivered to each.

    python3 fanout.py --bus NAME      (a shmcastd must serve NAME)

Each subscriber process counts what it got and reports it through its exit status.
"""

import argparse
import multiprocessing
import sys

import shmcast

CHANNEL = "ticks"
SUBSCRIBERS = 4
MESSAGES = 1000


def subscriber(bus, ready):
    p = shmcast.Redis(bus=bus).pubsub()
    p.subscribe(CHANNEL)
    ready.release()
    expected = 0
    while expected < MESSAGES:
        m = p.get_message(timeout=5.0)  # the subscribe confirmation first, then messages
        if m is None:
            break
        if m["type"] == "message":
            if int(m["data"]) != expected:
                break
            expected += 1
    sys.exit(0 if expected == MESSAGES else 1)


def main():
    parser = argparse.ArgumentParser(description="fan-out to several processes")
    parser.add_argument("--bus", default=None, help="bus name ($SHMCAST_BUS, else 'default')")
    bus = parser.parse_args().bus
    ready = multiprocessing.Semaphore(0)
    children = [multiprocessing.Process(target=subscriber, args=(bus, ready))
                for _ in range(SUBSCRIBERS)]
    for c in children:
        c.start()
    for _ in children:
        ready.acquire()
    r = shmcast.Redis(bus=bus)
    deliveries = sum(r.publish(CHANNEL, str(n)) for n in range(MESSAGES))
    print(f"published {MESSAGES} messages, {deliveries} deliveries")
    for c in children:
        c.join()
    complete = sum(c.exitcode == 0 for c in children)
    print(f"{complete} of {SUBSCRIBERS} subscribers got all {MESSAGES} messages in order")
    if complete != SUBSCRIBERS or deliveries != SUBSCRIBERS * MESSAGES:
        sys.exit("fanout: a subscriber missed messages")


if __name__ == "__main__":
    main()
