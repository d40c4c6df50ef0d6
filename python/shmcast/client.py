"""Redis and PubSub with redis-py 4.x's calls and replies, over a shmcast bus."""

import threading
import time

from . import _shmcast
from .exceptions import PubSubError


def _list_or_args(first, rest):
    # As redis-py: subscribe("a", "b") and subscribe(["a", "b"]) mean the same.
    if isinstance(first, (str, bytes)):
        return [first, *rest]
    try:
        return [*first, *rest]
    except TypeError:
        return [first, *rest]


class _Codec:
    """Names to bytes and back, as redis-py's Encoder with the client's settings."""

    def __init__(self, encoding, errors, decode):
        self.encoding = encoding
        self.errors = errors
        self.decode_responses = decode

    def encode(self, value):
        if isinstance(value, bytes):
            return value
        if isinstance(value, str):
            return value.encode(self.encoding, self.errors)
        if isinstance(value, (bytearray, memoryview)):
            return bytes(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return repr(value).encode()
        raise TypeError(
            f"Invalid input of type: '{type(value).__name__}'. "
            "Convert to a bytes, string, int or float first."
        )

    def key(self, value):
        """The form a name takes in message dicts: bytes, or str with decode_responses."""
        raw = self.encode(value)
        return raw.decode(self.encoding, self.errors) if self.decode_responses else raw

    def text(self, value):
        return value.decode(self.encoding, self.errors) if isinstance(value, bytes) else value


class Redis(_shmcast.Bus):
    """A connection to one bus with redis-py's Pub/Sub calls.

    ``bus`` names the bus (None: $SHMCAST_BUS, else "default"); a coordinator (shmcastd) must
    serve it, and connecting waits up to ``request_timeout`` seconds for one (then
    NoCoordinatorError). ``decode_responses``, ``encoding`` and ``encoding_errors`` mean what
    they mean in redis-py. Safe to publish from several threads at once.
    """

    def __init__(
        self,
        bus=None,
        *,
        decode_responses=False,
        encoding="utf-8",
        encoding_errors="strict",
        request_timeout=5.0,
    ):
        super().__init__(bus, request_timeout, decode_responses, encoding, encoding_errors)
        self._codec = _Codec(encoding, encoding_errors, decode_responses)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_value, traceback):
        self.close()

    def __repr__(self):
        return f"{type(self).__name__}<bus={self.bus}>"

    def pubsub(self, *, ignore_subscribe_messages=False, zero_copy=False):
        """A PubSub: subscribe, then read frames with get_message(), listen() or
        run_in_thread(). With ``zero_copy``, every message's data is a read-only memoryview
        instead of bytes (see PubSub)."""
        return PubSub(self, ignore_subscribe_messages=ignore_subscribe_messages,
                      zero_copy=zero_copy)

    def pubsub_channels(self, pattern="*"):
        """PUBSUB CHANNELS: channels with at least one subscriber that match ``pattern``, in
        no particular order."""
        return self._channels(self._codec.encode(pattern))

    def pubsub_numsub(self, *args):
        """PUBSUB NUMSUB: [(channel, subscribers), ...] in argument order; pattern
        subscribers are not counted."""
        return self._numsub([self._codec.encode(a) for a in args])

    def pubsub_numpat(self):
        """PUBSUB NUMPAT: the number of distinct patterns with at least one subscriber."""
        return self._numpat()

    def execute_command(self, *args):
        """PUBLISH channel message, and PUBSUB CHANNELS / NUMSUB / NUMPAT, with the raw
        replies redis-py returns for them (NUMSUB flat: [channel, count, ...])."""
        words = []
        if args and isinstance(args[0], (str, bytes)):
            words = self._codec.text(args[0]).split()
        command = [*words, *args[1:]]
        name = self._codec.text(command[0]).upper() if command else ""
        if name == "PUBLISH" and len(command) == 3:
            return self.publish(command[1], command[2])
        if name == "PUBSUB" and len(command) >= 2:
            sub = self._codec.text(command[1]).upper()
            rest = command[2:]
            if sub == "CHANNELS" and len(rest) <= 1:
                return self.pubsub_channels(*rest)
            if sub == "NUMSUB":
                return [x for pair in self.pubsub_numsub(*rest) for x in pair]
            if sub == "NUMPAT" and not rest:
                return self.pubsub_numpat()
        raise ValueError(
            "shmcast runs PUBLISH channel message and PUBSUB CHANNELS [pattern] | "
            f"NUMSUB [channel ...] | NUMPAT only, not {args!r}"
        )


Bus = Redis


class PubSub:
    """Subscriptions of one client, and the stream of its frames, as redis-py's PubSub.

    Another thread may subscribe, unsubscribe or close while one waits in get_message() or
    listen() (as with run_in_thread()); a close ends that wait with None. Frames are message
    dicts with the keys type, pattern, channel and data; a channel or pattern subscribed with a
    handler (``subscribe(**{name: handler})``) calls it instead. shmcast adds one type:
    {"type": "gap", "pattern": None, "channel": None, "data": n} where n messages were lost
    because this subscriber fell behind and its ring filled up.

    Zero copy (``zero_copy=True`` here or per get_message() call): a message's data is a
    read-only memoryview, whatever decode_responses says. For a message published from a loan
    (Redis.loan) it is the publisher's shared memory itself, not a copy, and it holds the bytes
    valid, taking one of the connection's holds (shmcastd --max-holds, 64 by default), until
    the view is released: ``with message["data"] as data: ...``, data.release(), or dropping
    every reference to it (views sliced from it hold it too). Holding many or long keeps their
    pool's memory from the publisher, whose loans then fail with PoolFullError. When every hold
    is taken, get_message() raises TooManyHoldsError, and the next call returns that message
    with its data copied. Other messages come as a memoryview over a copy.
    """

    PUBLISH_MESSAGE_TYPES = ("message", "pmessage")
    UNSUBSCRIBE_MESSAGE_TYPES = ("unsubscribe", "punsubscribe")

    def __init__(self, redis, ignore_subscribe_messages=False, zero_copy=False):
        self._redis = redis
        self._codec = redis._codec
        self.ignore_subscribe_messages = ignore_subscribe_messages
        self.zero_copy = zero_copy
        self._core = None
        self._subscribed = threading.Event()
        self.channels = {}
        self.patterns = {}
        self.pending_unsubscribe_channels = set()
        self.pending_unsubscribe_patterns = set()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_value, traceback):
        self.close()

    def __del__(self):
        try:
            PubSub.reset(self)
        except Exception:
            pass

    @property
    def subscribed(self):
        """True while the client holds a channel or pattern (until the confirmation of the
        last unsubscribe is read)."""
        return self._subscribed.is_set()

    def _client(self):
        if self._core is None:
            self._core = self._redis._subscriber()
        return self._core

    def reset(self):
        """Drops every subscription and the client; the PubSub can subscribe again."""
        core, self._core = self._core, None
        if core is not None:
            core.close()
        self.channels = {}
        self.patterns = {}
        self.pending_unsubscribe_channels = set()
        self.pending_unsubscribe_patterns = set()
        self._subscribed.clear()

    close = reset

    def _normalize_keys(self, names):
        return {self._codec.key(k): v for k, v in names.items()}

    def _held(self, pattern):
        # The names held and the names whose unsubscribe confirmation has not been read yet.
        if pattern:
            return self.patterns, self.pending_unsubscribe_patterns
        return self.channels, self.pending_unsubscribe_channels

    def _add(self, args, handlers, pattern):
        if args:
            args = _list_or_args(args[0], args[1:])
        new = dict.fromkeys(args)
        new.update(handlers)
        core = self._client()
        names = [self._codec.encode(n) for n in new]
        (core.psubscribe if pattern else core.subscribe)(names)
        new = self._normalize_keys(new)
        held, pending = self._held(pattern)
        held.update(new)
        self._subscribed.set()
        pending.difference_update(new)

    def subscribe(self, *args, **kwargs):
        """SUBSCRIBE channels; ``name=handler`` keyword arguments (or ``**{name: handler}``)
        call ``handler(message)`` for that channel's messages instead of returning them. In
        force when it returns: every publish that starts after it reaches this client. The
        confirmations come as frames, as in Redis."""
        self._add(args, kwargs, pattern=False)

    def psubscribe(self, *args, **kwargs):
        """PSUBSCRIBE glob patterns (``*``, ``?``, ``[...]``, as Redis); handlers as in
        subscribe()."""
        self._add(args, kwargs, pattern=True)

    def _remove(self, args, pattern):
        held, pending = self._held(pattern)
        if args:
            args = _list_or_args(args[0], args[1:])
            pending.update(self._normalize_keys(dict.fromkeys(args)))
        else:
            pending.update(held)
        core = self._client()
        encoded = [self._codec.encode(n) for n in args]
        (core.punsubscribe if pattern else core.unsubscribe)(encoded)

    def unsubscribe(self, *args):
        """UNSUBSCRIBE channels; none: every channel."""
        self._remove(args, pattern=False)

    def punsubscribe(self, *args):
        """PUNSUBSCRIBE patterns; none: every pattern."""
        self._remove(args, pattern=True)

    def get_message(self, ignore_subscribe_messages=False, timeout=0.0, zero_copy=None):
        """The next frame as a message dict, or None if none came within ``timeout`` seconds
        (None: wait for one), or if a handler took it. Without a subscription it waits for
        one (from another thread) up to ``timeout``, as redis-py. The GIL is released while it
        waits; Ctrl-C interrupts it. ``zero_copy``: data as a memoryview (see the class);
        None: the PubSub's setting."""
        if not self._subscribed.is_set():
            start = time.monotonic()
            if not self._subscribed.wait(timeout):
                return None
            if timeout is not None:
                timeout = max(0.0, timeout - (time.monotonic() - start))
        if zero_copy is None:
            zero_copy = self.zero_copy
        response = self._read(timeout, zero_copy)
        if response is None:
            return None
        return self.handle_message(response, ignore_subscribe_messages)

    def _read(self, timeout, zero_copy):
        # The next frame of the client this PubSub holds now, or None once it is closed: a
        # close() from another thread ends the wait, as it does in redis-py.
        core = self._core
        return None if core is None else core.next(timeout, zero_copy)

    def listen(self):
        """Yields every frame (handlers take theirs) while the client is subscribed."""
        while self._subscribed.is_set():
            response = self._read(None, self.zero_copy)
            if response is not None:
                response = self.handle_message(response)
            if response is not None:
                yield response

    def handle_message(self, message, ignore_subscribe_messages=False):
        """Calls the frame's handler, or returns the frame (None for confirmations when they
        are ignored); keeps the subscription state up to date as confirmations are read."""
        handler, message = self._route(message, ignore_subscribe_messages)
        if handler:
            handler(message)
            return None
        return message

    def _route(self, message, ignore_subscribe_messages):
        # (handler, None) for a message a handler takes, else (None, what to return).
        kind = message["type"]
        if kind in self.PUBLISH_MESSAGE_TYPES:
            if kind == "pmessage":
                handler = self.patterns.get(message["pattern"])
            else:
                handler = self.channels.get(message["channel"])
            return handler, message
        if kind == "gap":
            return None, message
        if kind in self.UNSUBSCRIBE_MESSAGE_TYPES:
            name = message["channel"]
            if kind == "punsubscribe":
                if name in self.pending_unsubscribe_patterns:
                    self.pending_unsubscribe_patterns.remove(name)
                    self.patterns.pop(name, None)
            elif name in self.pending_unsubscribe_channels:
                self.pending_unsubscribe_channels.remove(name)
                self.channels.pop(name, None)
            if not self.channels and not self.patterns:
                self._subscribed.clear()
        if ignore_subscribe_messages or self.ignore_subscribe_messages:
            return None, None
        return None, message

    def _check_handlers(self):
        for channel, handler in self.channels.items():
            if handler is None:
                raise PubSubError(f"Channel: '{channel}' has no handler registered")
        for pattern, handler in self.patterns.items():
            if handler is None:
                raise PubSubError(f"Pattern: '{pattern}' has no handler registered")

    def dropped(self):
        """Messages this client lost so far because its ring was full (0 before the first
        subscribe)."""
        return 0 if self._core is None else self._core.dropped()

    def run_in_thread(self, sleep_time=0.0, daemon=False, exception_handler=None):
        """Starts a thread that reads frames and calls their handlers until its stop(); every
        channel and pattern must have a handler (PubSubError otherwise), as in redis-py. The
        thread closes this PubSub when it stops."""
        self._check_handlers()
        thread = PubSubWorkerThread(self, sleep_time, daemon=daemon,
                                    exception_handler=exception_handler)
        thread.start()
        return thread


class PubSubWorkerThread(threading.Thread):
    """The thread of PubSub.run_in_thread(): stop() ends it within ``sleep_time`` seconds."""

    def __init__(self, pubsub, sleep_time, daemon=False, exception_handler=None):
        super().__init__(daemon=daemon)
        self.pubsub = pubsub
        self.sleep_time = sleep_time
        self.exception_handler = exception_handler
        self._running = threading.Event()

    def run(self):
        if self._running.is_set():
            return
        self._running.set()
        pubsub = self.pubsub
        while self._running.is_set():
            try:
                pubsub.get_message(ignore_subscribe_messages=True, timeout=self.sleep_time)
            except BaseException as e:
                if self.exception_handler is None:
                    raise
                self.exception_handler(e, pubsub, self)
        pubsub.close()

    def stop(self):
        self._running.clear()
