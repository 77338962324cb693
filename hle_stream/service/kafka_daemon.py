"""The daemon and the predictor replica wired to Kafka: the input topic through a group consumer,
answers through a publisher, and a broker probe for readiness."""

from __future__ import annotations

import threading
from typing import Callable

from connectors.kafka_io import KafkaSource, Publisher, broker_reachable, wait_for_broker
from connectors.ports import DeliveringSink, ResumeRule, Source
from connectors.settings import KafkaSettings
from connectors.topics import ensure_topics, topic_identity
from hle_stream.service.config import DaemonConfig, ReplicaConfig
from hle_stream.service.daemon import Daemon, ProgressReport


class BrokerProbe:
    """A TCP connection to a bootstrap server, tried once a second in a thread of its own."""

    def __init__(self, settings: KafkaSettings, period_s: float = 1.0) -> None:
        self.settings, self.period_s = settings, period_s
        self.reachable = False
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._probe, name="broker-probe", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._closing.set()

    def _probe(self) -> None:
        while True:
            self.reachable = broker_reachable(self.settings)
            if self._closing.wait(self.period_s):
                return


class KafkaDaemon(Daemon):
    """A ``Daemon`` whose source and sink are Kafka topics (created if missing)."""

    def __init__(self, settings: KafkaSettings, config: DaemonConfig, report: ProgressReport | None = None) -> None:
        self.settings = settings
        self.probe = BrokerProbe(settings)
        super().__init__(config, self._connect, report, reachable=lambda: self.probe.reachable)

    def _connect(self, resume: ResumeRule, on_dropped: Callable[[str, int, str], None]) -> tuple[Source, DeliveringSink]:
        cfg = self.config
        wait_for_broker(self.settings, self.settings.broker_wait_seconds)
        # an input topic it creates takes every record the daemon would (Apache Kafka's default is 1 MB)
        ensure_topics(self.settings, {cfg.input_topic: cfg.input_partitions, cfg.predictions_topic: 1,
                                      cfg.dead_letter_topic: 1},
                      configs={cfg.input_topic: {"max.message.bytes": str(cfg.processing.max_message_bytes)}})
        self.checkpointer.input_identity = topic_identity(self.settings, cfg.input_topic)
        source = KafkaSource(self.settings, cfg.group_id, cfg.input_topic, resume, one_active=cfg.role == "trainer")
        sink = Publisher(self.settings, cfg.predictions_topic, cfg.dead_letter_topic, cfg.max_output_bytes,
                         on_dropped=on_dropped, publish_predictions=cfg.publish_predictions)
        return source, sink

    def run(self) -> None:
        self.probe.start()
        try:
            super().run()
        finally:
            self.probe.stop()


def replica_connector(settings: KafkaSettings, config: ReplicaConfig) -> Callable[[], tuple[Source, DeliveringSink]]:
    """What a ``PredictorReplica`` connects with: its own group on the input topic (Kafka splits
    the partitions among the replicas) and a publisher of predictions (it writes no dead letters)."""

    def connect() -> tuple[Source, DeliveringSink]:
        wait_for_broker(settings, settings.broker_wait_seconds)
        ensure_topics(settings, {config.predictions_topic: 1})
        source = KafkaSource(settings, config.group_id, config.input_topic, resume=lambda committed: {})
        return source, Publisher(settings, config.predictions_topic, dead_letter_topic="")

    return connect
