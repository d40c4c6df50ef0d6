"""shmcast for asyncio, as redis.asyncio: the same calls as coroutines.

A PubSub waits on its subscriber's file descriptor with the event loop's add_reader: no
polling and no thread per subscriber.
"""

import asyncio as _asyncio
import inspect

from . import _shmcast, client
from .exceptions import PoolFullError

__all__ = ["Redis", "Bus", "PubSub"]


class Redis:
    """A connection to one bus; see shmcast.Redis. Publishing never blocks, so the
    coroutines here never wait either."""

    def __init__(self, bus=None, **options):
        # The options of shmcast.Redis: decode_responses, encoding, encoding_errors,
        # request_timeout.
        self._sync = client.Redis(bus, **options)

    @property
    def bus(self):
        return self._sync.bus

    async def __aenter__(self):
        return self

    async def __aexit__(self, exc_type, exc_value, traceback):
        await self.close()

    async def close(self):
        self._sync.close()

    async def publish(self, channel, message):
        """PUBLISH: see shmcast.Redis.publish (``message`` may be a Loan)."""
        return self._sync.publish(channel, message)

    async def loan(self, nbytes, wait=0.0):
        """A Loan: see shmcast.Redis.loan. While the pool has no room it sleeps in the event
        loop, up to ``wait`` seconds (None: no limit), then raises PoolFullError."""
        if wait is not None and not wait >= 0:
            raise ValueError("wait must be a number of seconds >= 0")
        loop = _asyncio.get_running_loop()
        deadline = None if wait is None else loop.time() + wait
        nap = 0.0005
        while True:
            try:
                return self._sync.loan(nbytes)
            except PoolFullError:
                if deadline is not None and loop.time() >= deadline:
                    raise
            # Chunks come back as subscribers let go of them, which wakes nobody: look again,
            # less often the longer it takes.
            left = nap if deadline is None else min(nap, max(0.0, deadline - loop.time()))
            await _asyncio.sleep(left)
            nap = min(nap * 2, 0.05)

    async def pubsub_channels(self, pattern="*"):
        return self._sync.pubsub_channels(pattern)

    async def pubsub_numsub(self, *args):
        return self._sync.pubsub_numsub(*args)

    async def pubsub_numpat(self):
        return self._sync.pubsub_numpat()

    async def execute_command(self, *args):
        return self._sync.execute_command(*args)

    def pubsub(self, *, ignore_subscribe_messages=False, zero_copy=False):
        """A PubSub whose calls are coroutines; ``zero_copy`` as in shmcast.Redis.pubsub."""
        return PubSub(self._sync, ignore_subscribe_messages=ignore_subscribe_messages,
                      zero_copy=zero_copy)


Bus = Redis


class PubSub(client.PubSub):
    """shmcast.PubSub with coroutines: await subscribe(), get_message(), run(); async for
    over listen(). Handlers may be coroutine functions. Read by one task at a time; a close() from
    another task ends its wait with None."""

    def __init__(self, redis, ignore_subscribe_messages=False, zero_copy=False):
        if not hasattr(_shmcast.Subscriber, "fileno"):
            raise RuntimeError(
                "this shmcast was built without Subscriber::fd(): rebuild it to use asyncio"
            )
        super().__init__(redis, ignore_subscribe_messages, zero_copy)
        self._waiting = None  # (loop, fd, future) while a task waits on the descriptor

    async def __aenter__(self):
        return self

    async def __aexit__(self, exc_type, exc_value, traceback):
        await self.reset()

    async def reset(self):
        # A task waiting on the descriptor is woken with None, and the descriptor leaves the
        # loop before it is closed: its number may come back with the next subscriber.
        self._stop_waiting()
        super().reset()

    def _stop_waiting(self):
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            loop, fd, ready = waiting
            loop.remove_reader(fd)
            if not ready.done():
                ready.set_result(None)

    close = reset

    async def subscribe(self, *args, **kwargs):
        self._add(args, kwargs, pattern=False)

    async def psubscribe(self, *args, **kwargs):
        self._add(args, kwargs, pattern=True)

    async def unsubscribe(self, *args):
        self._remove(args, pattern=False)

    async def punsubscribe(self, *args):
        self._remove(args, pattern=True)

    async def _next(self, timeout, zero_copy):
        # The descriptor turns readable when frames may be waiting and stays quiet once
        # next(0) has found nothing, so read until then before waiting on it.
        core = self._core
        if core is None:
            return None
        message = core.next(0, zero_copy)
        if message is not None or timeout == 0:
            return message
        loop = _asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        fd = core.fileno()
        while True:
            ready = loop.create_future()
            loop.add_reader(fd, lambda: ready.done() or ready.set_result(None))
            self._waiting = (loop, fd, ready)
            try:
                if deadline is None:
                    await ready
                else:
                    await _asyncio.wait_for(ready, max(0.0, deadline - loop.time()))
            except _asyncio.TimeoutError:
                return core.next(0, zero_copy)
            finally:
                if self._waiting is not None and self._waiting[2] is ready:
                    self._stop_waiting()
            message = core.next(0, zero_copy)
            if message is not None or self._core is not core:
                return message

    async def get_message(self, ignore_subscribe_messages=False, timeout=0.0, zero_copy=None):
        """The next frame as a message dict, or None after ``timeout`` seconds (None: wait for
        one) or when a handler took it. ``zero_copy`` as in shmcast.PubSub.get_message."""
        if zero_copy is None:
            zero_copy = self.zero_copy
        message = await self._next(timeout, zero_copy)
        if message is None:
            return None
        return await self.handle_message(message, ignore_subscribe_messages)

    async def listen(self):
        """Yields every frame (handlers take theirs) while the client is subscribed."""
        while self.subscribed:
            response = await self._next(None, self.zero_copy)
            if response is not None:
                response = await self.handle_message(response)
            if response is not None:
                yield response

    async def handle_message(self, message, ignore_subscribe_messages=False):
        handler, message = self._route(message, ignore_subscribe_messages)
        if handler:
            result = handler(message)
            if inspect.isawaitable(result):
                await result
            return None
        return message

    async def run(self, *, exception_handler=None, poll_timeout=1.0):
        """Calls the handlers of every frame until cancelled; every channel and pattern must
        have one (PubSubError otherwise), as redis.asyncio's run()."""
        self._check_handlers()
        while True:
            try:
                await self.get_message(ignore_subscribe_messages=True, timeout=poll_timeout)
            except _asyncio.CancelledError:
                raise
            except BaseException as e:
                if exception_handler is None:
                    raise
                result = exception_handler(e, self)
                if inspect.isawaitable(result):
                    await result

    def run_in_thread(self, sleep_time=0.0, daemon=False, exception_handler=None):
        raise TypeError("an asyncio PubSub runs its handlers with: await pubsub.run()")
