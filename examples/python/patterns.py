#!/usr/bin/python3
"""Hierarchical topics and patterns: channels named user:<id>:<topic>, and an alert console
that subscribes to the pattern user:*:alerts to get every user's alerts at once.

    python3 patterns.py --bus NAME      (a shmcastd must serve NAME)

Patterns are Redis's globs: * any bytes, ? one byte, [abc] a class. * matches ":" too, so
user:*:alerts also matches user:a:b:alerts: a pattern is not a path.
"""

import argparse
import sys

import shmcast


def main():
    parser = argparse.ArgumentParser(description="patterns")
    parser.add_argument("--bus", default=None, help="bus name ($SHMCAST_BUS, else 'default')")
    r = shmcast.Redis(bus=parser.parse_args().bus, decode_responses=True)
    console = r.pubsub()
    console.psubscribe("user:*:alerts")
    print(console.get_message(timeout=1.0))

    published = [("user:1:alerts", "disk almost full"), ("user:2:notifications", "not an alert"),
                 ("user:42:alerts", "new login"), ("user:a:b:alerts", "nested, still matches")]
    for channel, text in published:
        print(f"publish {channel}: {r.publish(channel, text)} receiver(s)")

    got = []
    while (m := console.get_message(timeout=0.2)) is not None:
        print(f"{m['type']} {m['pattern']} {m['channel']} {m['data']}")
        got.append(m["channel"])
    console.close()
    if got != ["user:1:alerts", "user:42:alerts", "user:a:b:alerts"]:
        sys.exit("patterns: the console did not get exactly the alerts")
    print("patterns: the console got every alert and nothing else")


if __name__ == "__main__":
    main()
