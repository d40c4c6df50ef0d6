#!/usr/bin/python3
"""Per-user real-time notifications: each user has a channel, user:<id>:notifications, that
only that user's sessions subscribe to; the backend publishes to the one user concerned.

    python3 notifications.py --bus NAME      (a shmcastd must serve NAME)

The sessions of three users live in this one process to keep it short; in an application each
would be its own process (a web socket handler, a desktop client).
"""

import argparse
import sys

import shmcast


def main():
    parser = argparse.ArgumentParser(description="per-user notifications")
    parser.add_argument("--bus", default=None, help="bus name ($SHMCAST_BUS, else 'default')")
    r = shmcast.Redis(bus=parser.parse_args().bus, decode_responses=True)

    sessions = {}
    for user in (1, 2, 3):
        sessions[user] = r.pubsub()
        sessions[user].subscribe(f"user:{user}:notifications")

    # The backend: user 1 gets one notification, user 2 two, user 3 three. publish() returns
    # how many subscribers got it: 1, the user's own session.
    sent = {user: [f"notification {n} for user {user}" for n in range(1, user + 1)]
            for user in sessions}
    for user, texts in sent.items():
        for text in texts:
            if r.publish(f"user:{user}:notifications", text) != 1:
                sys.exit(f"notifications: no session received {text!r}")

    ok = True
    for user, session in sessions.items():
        # The first frame confirms the subscribe, as in Redis; the rest are notifications.
        got = []
        while (m := session.get_message(timeout=0.2)) is not None:
            if m["type"] == "message":
                got.append(m["data"])
        print(f"user {user} received {len(got)} notification(s)")
        for text in got:
            print(f"  {text}")
        ok = ok and got == sent[user]
        session.close()
    if not ok:
        sys.exit("notifications: a user did not get exactly their own notifications")
    print("notifications: every user got exactly their own notifications")


if __name__ == "__main__":
    main()
