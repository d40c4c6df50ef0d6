"""shmcast's exceptions: one base class, Error, and one subclass per error code of the C++
library (shmcast::Errc), each carrying the library's one-line message that says what to do.
Argument mistakes raise TypeError or ValueError instead, as Python code expects."""

from . import _shmcast


class Error(Exception):
    """Base class of every error the bus reports. ``code`` names the C++ Errc."""

    code = "system"


class InvalidBusNameError(Error):
    """Bus names are 1 to 64 characters of [A-Za-z0-9_.-]."""

    code = "invalid_bus_name"


class NoCoordinatorError(Error):
    """No coordinator ran within the request timeout: start shmcastd for the bus."""

    code = "no_coordinator"


class CoordinatorRunningError(Error):
    """Another live coordinator owns the bus."""

    code = "coordinator_running"


class CoordinatorGoneError(Error):
    """The coordinator died or did not answer within the request timeout."""

    code = "coordinator_gone"


class VersionMismatchError(Error):
    """The bus was made by a shmcast of another layout version."""

    code = "version_mismatch"


class PermissionDeniedError(Error):
    """The bus's segments are not readable and writable by this user."""

    code = "permission_denied"


class BadSegmentError(Error):
    """A segment of the bus's name is not a valid shmcast segment."""

    code = "bad_segment"


class PayloadTooLargeError(Error):
    """A message over the bus's max_payload limit."""

    code = "payload_too_large"


class ChannelTooLongError(Error):
    """A channel name over the bus's max_channel limit."""

    code = "channel_too_long"


class PatternTooLongError(Error):
    """A pattern over the bus's max_pattern limit."""

    code = "pattern_too_long"


class TooManySubscriptionsError(Error):
    """More channels and patterns than one client may hold (max_subscriptions)."""

    code = "too_many_subscriptions"


class TooManyClientsError(Error):
    """The bus's client table (max_clients) is full."""

    code = "too_many_clients"


class RegistryFullError(Error):
    """The bus's channel, pattern or subscription table is full."""

    code = "registry_full"


class SystemFailureError(Error):
    """Any other system error (named so as not to hide Python's built-in SystemError)."""

    code = "system"


class InvalidSettingError(Error):
    """shmcastd: a flag, variable or configuration line holds no valid value."""

    code = "invalid_setting"


class PoolFullError(Error):
    """The connection's payload pool (pool_bytes) has no room for a loan now."""

    code = "pool_full"


class TooManyHoldsError(Error):
    """The connection keeps max_holds loaned payloads already."""

    code = "too_many_holds"


class PubSubError(Error):
    """A PubSub used in a way redis-py refuses too (run_in_thread without handlers)."""

    code = "pubsub"


ERRORS = {
    cls.code: cls
    for cls in (
        InvalidBusNameError,
        NoCoordinatorError,
        CoordinatorRunningError,
        CoordinatorGoneError,
        VersionMismatchError,
        PermissionDeniedError,
        BadSegmentError,
        PayloadTooLargeError,
        ChannelTooLongError,
        PatternTooLongError,
        TooManySubscriptionsError,
        TooManyClientsError,
        RegistryFullError,
        SystemFailureError,
        InvalidSettingError,
        PoolFullError,
        TooManyHoldsError,
    )
}

_shmcast.set_error_classes(Error, ERRORS)
