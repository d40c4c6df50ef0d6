"""shmcast: Redis-style Pub/Sub between processes on one Linux host, over shared memory.

The calls and replies of redis-py 4.x's Pub/Sub; change the line that connects::

    import shmcast
    r = shmcast.Redis(bus="app")      # a shmcastd must serve the bus
    p = r.pubsub()
    p.subscribe("alerts")
    r.publish("alerts", "hello")      # -> 1
    p.get_message(timeout=1.0)
    # {'type': 'subscribe', 'pattern': None, 'channel': b'alerts', 'data': 1}

Large payloads go without a copy: a loan is shared memory written once and read in place by
every subscriber, as a memoryview::

    loan = r.loan(len(frame))         # PoolFullError if the pool has no room
    loan.data[:] = frame              # a writable memoryview
    r.publish("frames", loan)         # -> deliveries; the loan is spent
    q = r.pubsub(zero_copy=True)      # data: a read-only memoryview, held until released

shmcast.asyncio has the same calls as coroutines, as redis.asyncio.
"""

from .client import Bus, PubSub, PubSubWorkerThread, Redis
from .exceptions import (
    BadSegmentError,
    ChannelTooLongError,
    CoordinatorGoneError,
    CoordinatorRunningError,
    Error,
    InvalidBusNameError,
    InvalidSettingError,
    NoCoordinatorError,
    PatternTooLongError,
    PayloadTooLargeError,
    PermissionDeniedError,
    PoolFullError,
    PubSubError,
    RegistryFullError,
    SystemFailureError,
    TooManyClientsError,
    TooManyHoldsError,
    TooManySubscriptionsError,
    VersionMismatchError,
)
from ._shmcast import Loan, SharedBytes, default_bus_name

__all__ = [
    "BadSegmentError",
    "Bus",
    "ChannelTooLongError",
    "CoordinatorGoneError",
    "CoordinatorRunningError",
    "Error",
    "InvalidBusNameError",
    "InvalidSettingError",
    "Loan",
    "NoCoordinatorError",
    "PatternTooLongError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "PoolFullError",
    "PubSub",
    "PubSubError",
    "PubSubWorkerThread",
    "Redis",
    "RegistryFullError",
    "SharedBytes",
    "SystemFailureError",
    "TooManyClientsError",
    "TooManyHoldsError",
    "TooManySubscriptionsError",
    "VersionMismatchError",
    "default_bus_name",
]
