"""The daemon's Kafka ends: a group consumer that can start from checkpointed offsets, and a
publisher for predictions and dead letters."""

from __future__ import annotations

import base64
import json
import logging
from typing import Any, Callable

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, OffsetAndMetadata, TopicPartition

from connectors.settings import KafkaSettings

log = logging.getLogger(__name__)


class _SeekToCheckpoint(ConsumerRebalanceListener):
    """On assignment, start each partition at the offset the checkpoint covers (if any)."""

    def __init__(self, consumer: KafkaConsumer, start_offsets: Callable[[], dict[int, int]]) -> None:
        self.consumer = consumer
        self.start_offsets = start_offsets

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        offsets = self.start_offsets()
        for tp in assigned:
            if tp.partition in offsets:
                self.consumer.seek(tp, offsets[tp.partition])
                log.info("partition %s resumes at checkpointed offset %d", tp.partition, offsets[tp.partition])

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        pass


def open_consumer(settings: KafkaSettings, group_id: str, topic: str,
                  start_offsets: Callable[[], dict[int, int]]) -> KafkaConsumer:
    consumer = KafkaConsumer(**settings.consumer(group_id))
    consumer.subscribe([topic], listener=_SeekToCheckpoint(consumer, start_offsets))
    return consumer


def commit_offsets(consumer: KafkaConsumer, topic: str, offsets: dict[int, int]) -> None:
    """Commit ``offsets`` (partition -> next offset to read) for the consumer's group."""
    if offsets:
        consumer.commit({TopicPartition(topic, p): OffsetAndMetadata(o, "", -1) for p, o in offsets.items()})


class Publisher:
    """Predictions and dead letters, as JSON values."""

    def __init__(self, settings: KafkaSettings, predictions_topic: str, dead_letter_topic: str) -> None:
        self.producer = KafkaProducer(**settings.client(), linger_ms=5)
        self.predictions_topic = predictions_topic
        self.dead_letter_topic = dead_letter_topic

    def prediction(self, document: dict[str, Any]) -> None:
        # keyed by event id: a repeated prediction lands in the same partition as the first
        self.producer.send(self.predictions_topic, json.dumps(document).encode(), key=str(document["id"]).encode())

    def dead_letter(self, raw: bytes, reason: str, detail: str, topic: str, partition: int, offset: int) -> None:
        self.producer.send(self.dead_letter_topic, json.dumps({
            "reason": reason, "detail": detail, "topic": topic, "partition": partition, "offset": offset,
            "value_b64": base64.b64encode(raw or b"").decode("ascii"),
        }).encode())

    def flush(self) -> None:
        self.producer.flush()

    def close(self) -> None:
        self.producer.close()
