from typing import Any, AsyncIterator, Awaitable, Callable, Optional, Union

from . import Message, Name, Payload
from . import PubSub as _SyncPubSub
from . import Redis as _SyncRedis

AsyncHandler = Callable[[Message], Union[Any, Awaitable[Any]]]

class Redis:
    def __init__(
        self,
        bus: Optional[str] = None,
        *,
        decode_responses: bool = False,
        encoding: str = "utf-8",
        encoding_errors: str = "strict",
        request_timeout: float = 5.0,
    ) -> None: ...
    @property
    def bus(self) -> str: ...
    async def __aenter__(self) -> Redis: ...
    async def __aexit__(self, *exc_info: object) -> None: ...
    async def close(self) -> None: ...
    async def publish(self, channel: Name, message: Payload) -> int: ...
    async def pubsub_channels(self, pattern: Name = "*") -> list[Any]: ...
    async def pubsub_numsub(self, *args: Name) -> list[tuple[Any, int]]: ...
    async def pubsub_numpat(self) -> int: ...
    async def execute_command(self, *args: Payload) -> Any: ...
    def pubsub(self, *, ignore_subscribe_messages: bool = False) -> PubSub: ...

Bus = Redis

class PubSub(_SyncPubSub):
    def __init__(self, redis: _SyncRedis, ignore_subscribe_messages: bool = False) -> None: ...
    async def __aenter__(self) -> PubSub: ...  # type: ignore[override]
    async def __aexit__(self, *exc_info: object) -> None: ...
    async def reset(self) -> None: ...  # type: ignore[override]
    async def close(self) -> None: ...  # type: ignore[override]
    async def subscribe(self, *args: Name, **kwargs: AsyncHandler) -> None: ...  # type: ignore[override]
    async def psubscribe(self, *args: Name, **kwargs: AsyncHandler) -> None: ...  # type: ignore[override]
    async def unsubscribe(self, *args: Name) -> None: ...  # type: ignore[override]
    async def punsubscribe(self, *args: Name) -> None: ...  # type: ignore[override]
    async def get_message(  # type: ignore[override]
        self, ignore_subscribe_messages: bool = False, timeout: Optional[float] = 0.0
    ) -> Optional[Message]: ...
    def listen(self) -> AsyncIterator[Message]: ...  # type: ignore[override]
    async def handle_message(  # type: ignore[override]
        self, message: Message, ignore_subscribe_messages: bool = False
    ) -> Optional[Message]: ...
    async def run(
        self,
        *,
        exception_handler: Optional[Callable[[BaseException, PubSub], Any]] = None,
        poll_timeout: float = 1.0,
    ) -> None: ...
