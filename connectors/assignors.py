"""A Kafka partition assignor for a group with exactly one active member and hot standbys.

Online learning has one writer (one model, updated in stream order), so trainer candidates join
one consumer group with this assignor: every partition of every subscribed topic goes to one
member, the others get none and wait. When the active member dies or stalls past the session
timeout, the group rebalances and a standby gets everything. The assignment is computed by the
group's leader on the client and only relayed by the broker, so any Kafka-protocol broker
supports it.

Stickiness: each member sends, in its subscription's user data, the generation in which it last
held the partitions. The member with the newest such generation keeps them (a standby joining,
or a paused member coming back with an older claim, does not move the model); with no claim,
the smallest member id wins.
"""

from __future__ import annotations

import logging

from kafka.coordinator.assignors.abstract import (
    AbstractPartitionAssignor,
    ConsumerProtocolAssignment,
    ConsumerProtocolSubscription,
)

log = logging.getLogger(__name__)


class OneActiveMemberAssignor(AbstractPartitionAssignor):
    """One instance per consumer: it remembers the generation in which its consumer last held
    the partitions (``held_generation``; ``None`` while a standby)."""

    name = "hle-one-active"
    version = 0

    def __init__(self) -> None:
        self.held_generation: int | None = None

    def assign(self, cluster, members):
        topics = sorted({topic for member in members for topic in member.metadata.topics})
        partitions = [(topic, sorted(cluster.partitions_for_topic(topic) or ())) for topic in topics]
        active = min(members, key=lambda m: (-_claim(m.metadata.user_data), m.member_id)).member_id
        log.info("group assignment: every partition to %s, %d standby(s)", active, len(members) - 1)
        return {member.member_id: ConsumerProtocolAssignment(
                    self.version, [(t, p) for t, p in partitions if p] if member.member_id == active else [], b"")
                for member in members}

    def metadata(self, topics):
        claim = b"" if self.held_generation is None else str(self.held_generation).encode()
        return ConsumerProtocolSubscription(self.version, sorted(topics), claim)

    def on_assignment(self, assignment, generation):
        self.held_generation = generation if assignment.partitions() else None


def _claim(user_data: bytes | None) -> int:
    try:
        return int(user_data or b"-1")
    except ValueError:  # a member of another version: no claim
        return -1

