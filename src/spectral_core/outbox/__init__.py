"""The generation-stamped transactional outbox."""

from .claim import Claimer
from .consumer import Consumer, ConsumerConfig
from .handlers import Handler, HandlerRegistry, RegisteredHandler
from .process import BatchProcessor, RetryPolicy
from .publish import Publisher, publish, publish_async, publish_many, publish_many_async
from .reaper import Reaper
from .records import Event, EventIn, Status, channel_for
from .status import GenerationStatus, drain, generation_status, purge_done, redrive_dead

__all__ = [
    "BatchProcessor",
    "Claimer",
    "Consumer",
    "ConsumerConfig",
    "Event",
    "EventIn",
    "GenerationStatus",
    "Handler",
    "HandlerRegistry",
    "Publisher",
    "Reaper",
    "RegisteredHandler",
    "RetryPolicy",
    "Status",
    "channel_for",
    "drain",
    "generation_status",
    "publish",
    "publish_async",
    "publish_many",
    "publish_many_async",
    "purge_done",
    "redrive_dead",
]
