#!/usr/bin/python3
"""A live leaderboard: game servers publish score updates as "player score"; the leaderboard
keeps each player's best score and shows the top 3.

    python3 leaderboard.py --bus NAME      (a shmcastd must serve NAME)

The game server is a thread of this process here (a Redis object publishes from any number of
threads); the leaderboard reads with listen() until the server says the game is over.
"""

import argparse
import sys
import threading

import shmcast

CHANNEL = "game:scores"
UPDATES = [("ann", 120), ("bob", 90), ("cid", 150), ("bob", 200), ("ann", 80), ("dee", 60)]


def main():
    parser = argparse.ArgumentParser(description="a live leaderboard")
    parser.add_argument("--bus", default=None, help="bus name ($SHMCAST_BUS, else 'default')")
    r = shmcast.Redis(bus=parser.parse_args().bus, decode_responses=True)
    board = r.pubsub(ignore_subscribe_messages=True)
    board.subscribe(CHANNEL, "game:over")

    def game_server():
        for player, score in UPDATES:
            r.publish(CHANNEL, f"{player} {score}")
        r.publish("game:over", "")

    server = threading.Thread(target=game_server)
    server.start()
    best = {}
    for m in board.listen():
        if m["channel"] == "game:over":
            board.unsubscribe()
            continue
        player, score = m["data"].split()
        best[player] = max(best.get(player, 0), int(score))
    server.join()
    top = sorted(best.items(), key=lambda item: -item[1])[:3]
    for rank, (player, score) in enumerate(top, 1):
        print(f"{rank}. {player} {score}")
    if top != [("bob", 200), ("cid", 150), ("ann", 120)]:
        sys.exit("leaderboard: the top 3 is wrong")
    print("leaderboard: every update counted")


if __name__ == "__main__":
    main()
