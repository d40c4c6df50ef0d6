from typing import Any, AsyncIterator, Awaitable, Callable, Optional, Union

from . import Loan, Message, Name, Payload
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
    async def publish(self, channel: Name, message: Union[Payload, Loan]) -> int: ...
    async def loan(self, nbytes: int, wait: Optional[float] = 0.0) -> Loan: ...
    async def pubsub_channels(self, pattern: Name = "*") -> list[Any]: ...
    async def pubsub_numsub(self, *args: Name) -> list[tuple[Any, int]]: ...
    async def pubsub_numpat(self) -> int: ...
    async def execute_command(self, *args: Payload) -> Any: ...
    def pubsub(
        self, *, ignore_subscribe_messages: bool = False, zero_copy: bool = False
    ) -> PubSub: ...

Bus = Redis

class PubSub(_SyncPubSub):
    def __init__(
        self, redis: _SyncRedis, ignore_subscribe_messages: bool = False, zero_copy: bool = False
    ) -> None: ...
    async def __aenter__(self) -> PubSub: ...  # type: ignore[override]
    async def __aexit__(self, *exc_info: object) -> None: ...
    async def reset(self) -> None: ...  # type: ignore[override]
    async def close(self) -> None: ...  # type: ignore[override]
    async def subscribe(  # type: ignore[override]
        self, *args: Name, **kwargs: AsyncHandler
    ) -> None: ...
    async def psubscribe(  # type: ignore[override]
        self, *args: Name, **kwargs: AsyncHandler
    ) -> None: ...
    async def unsubscribe(self, *args: Name) -> None: ...  # type: ignore[override]
    async def punsubscribe(self, *args: Name) -> None: ...  # type: ignore[override]
    async def get_message(  # type: ignore[override]
        self,
        ignore_subscribe_messages: bool = False,
        timeout: Optional[float] = 0.0,
        zero_copy: Optional[bool] = None,
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
