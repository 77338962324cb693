"""Create the daemon's topics up front: Tansu (and many clusters) would otherwise auto-create
them with a default partition count on first use."""

from __future__ import annotations

from kafka import KafkaAdminClient
from kafka.errors import TopicAlreadyExistsError

from connectors.settings import KafkaSettings


def ensure_topics(settings: KafkaSettings, partitions: dict[str, int],
                  configs: dict[str, dict[str, str]] | None = None) -> list[str]:
    """Create each missing topic with its partition count (and its topic ``configs``, e.g.
    ``max.message.bytes``); returns the names created. A topic that exists is left as it is."""
    admin = KafkaAdminClient(**settings.client())
    try:
        existing = set(admin.list_topics())
        missing = {name: n for name, n in partitions.items() if name not in existing}
        for name, count in missing.items():
            spec = {"num_partitions": count, "replication_factor": 1}
            if configs and name in configs:
                spec["configs"] = configs[name]
            try:
                admin.create_topics({name: spec})
            except TopicAlreadyExistsError:  # created meanwhile by someone else: fine
                pass
        return sorted(missing)
    finally:
        admin.close()


NO_TOPIC_ID = "00000000-0000-0000-0000-000000000000"  # what a broker without topic ids answers


def topic_identity(settings: KafkaSettings, topic: str) -> dict[str, str | None]:
    """Where offsets of ``topic`` are valid: the cluster's id and the topic's id (a new one each
    time a topic of that name is made, on any broker). ``None`` for what the broker does not say."""
    admin = KafkaAdminClient(**settings.client())
    try:
        cluster_id = admin.describe_cluster().get("cluster_id")
        described = admin.describe_topics([topic])
        topic_id = str(described[0].get("topic_id")) if described else None
        return {"cluster_id": cluster_id, "topic_id": None if topic_id in (None, NO_TOPIC_ID) else topic_id}
    finally:
        admin.close()
