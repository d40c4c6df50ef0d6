#!/usr/bin/python3
"""A chat room: every member subscribes to the room's channel and posts JSON messages to it, so
each member sees every message, their own included, in the order each member sent them.

    python3 chat.py --bus NAME      (a shmcastd must serve NAME)
"""

import argparse
import json
import sys

import shmcast


def main():
    parser = argparse.ArgumentParser(description="a chat room")
    parser.add_argument("--bus", default=None, help="bus name ($SHMCAST_BUS, else 'default')")
    r = shmcast.Redis(bus=parser.parse_args().bus)
    channel = "chat:room:lobby"

    members = {}
    for name in ("alice", "bob"):
        members[name] = r.pubsub()
        members[name].subscribe(channel)

    lines = [("alice", "hi bob"), ("bob", 'hello "alice"\nhow are you?'), ("alice", "fine \\o/")]
    for user, text in lines:
        delivered = r.publish(channel, json.dumps({"room": "lobby", "user": user, "text": text}))
        print(f"{user} posts, {delivered} members receive it")

    for name, member in members.items():
        seen = []
        while len(seen) < len(lines):
            m = member.get_message(timeout=1.0)  # the subscribe confirmation, then the posts
            if m is None:
                sys.exit(f"chat: {name} is missing messages")
            if m["type"] == "message":
                post = json.loads(m["data"])
                seen.append((post["user"], post["text"]))
        print(f"{name} saw: {seen}")
        if seen != lines:
            sys.exit(f"chat: {name} did not see the conversation as it was sent")
        member.close()
    print("chat: every member saw every message, in order")


if __name__ == "__main__":
    main()
