#!/usr/bin/python3
"""Large frames without copies: a publisher writes 4 MiB frames straight into shared memory
(a loan) and two subscriber processes read them in place, as read-only memoryviews.

    python3 large_frames.py --bus NAME      (a shmcastd must serve NAME)

Each subscriber checks every frame's number and bytes and reports through its exit status.
"""

import argparse
import multiprocessing
import struct
import sys
import time

import shmcast

CHANNEL = "camera"
SUBSCRIBERS = 2
FRAMES = 20
FRAME_BYTES = 4 << 20
FRAME_PERIOD = 0.02  # a camera's pace: 50 frames a second
# What the camera "sees": the same picture each time, stamped with the frame number.
PICTURE = bytes(range(256)) * (FRAME_BYTES // 256)
AFTER_STAMP = memoryview(PICTURE)[8:]


def subscriber(bus, ready):
    p = shmcast.Redis(bus=bus).pubsub(zero_copy=True)
    p.subscribe(CHANNEL)
    ready.release()
    expected = 0
    while expected < FRAMES:
        m = p.get_message(timeout=5.0)  # the subscribe confirmation first, then frames
        if m is None:
            break
        if m["type"] != "message":
            continue
        # Releasing the view gives the frame's memory back to the publisher's pool.
        with m["data"] as frame:
            (number,) = struct.unpack_from("<Q", frame)
            if number != expected or not frame.obj.loaned or frame[8:] != AFTER_STAMP:
                break
        expected += 1
    sys.exit(0 if expected == FRAMES else 1)


def main():
    parser = argparse.ArgumentParser(description="4 MiB frames to two processes, zero copy")
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
    deliveries = 0
    start = time.monotonic()
    for n in range(FRAMES):
        # A subscriber more than max_unread_loan_bytes behind (32 MiB, 8 such frames, by
        # default) would miss frames, as one whose ring is full misses messages; a loan waits
        # while every chunk of the pool is still being read.
        time.sleep(max(0.0, start + n * FRAME_PERIOD - time.monotonic()))
        loan = r.loan(FRAME_BYTES, wait=10.0)
        frame = loan.data
        frame[:] = PICTURE
        struct.pack_into("<Q", frame, 0, n)
        deliveries += r.publish(CHANNEL, loan)
    print(f"published {FRAMES} frames of {FRAME_BYTES >> 20} MiB, {deliveries} deliveries")
    for c in children:
        c.join()
    complete = sum(c.exitcode == 0 for c in children)
    print(f"large_frames: {complete} of {SUBSCRIBERS} subscribers read all {FRAMES} frames in "
          "place")
    if complete != SUBSCRIBERS or deliveries != SUBSCRIBERS * FRAMES:
        sys.exit("large_frames: a subscriber missed or misread frames")


if __name__ == "__main__":
    main()
