"""Where a partition resumes when the consumer group hands it to this daemon.

The daemon's checkpoint records, per partition, the next offset its model has not learned: the
model's lineage. The group's committed offset records what the group as a whole has finished.
The two agree while one daemon holds everything (it commits right after each checkpoint), and
part ways in two cases the rule below settles:

- the checkpoint is ahead (the daemon learned past its last commit, then lost the partition,
  or crashed between checkpoint and commit): resume at the checkpoint, or those events are
  learned twice;
- the group is ahead (another member read and committed the partition meanwhile): resume at
  the group's offset, or the group's offset would move backwards and those events be answered
  twice; the events in between are in the other member's model, not in this one, and a warning
  says so.

A partition neither knows starts at the earliest offset (``auto_offset_reset``).
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def resume_offsets(checkpointed: dict[int, int], committed: dict[int, int | None]) -> dict[int, int]:
    """For each partition in ``committed`` (the ones just assigned, with the group's offset or
    ``None``): the later of the checkpoint's and the group's offset; left out when neither has one."""
    start = {}
    for partition, group_offset in committed.items():
        own = checkpointed.get(partition)
        if own is None and group_offset is None:
            continue
        if own is not None and group_offset is not None and group_offset > own:
            log.warning("partition %d: the group committed offset %d, past this model's %d; events %d..%d were "
                        "read by another member and are not in this model", partition, group_offset, own, own,
                        group_offset - 1)
        start[partition] = max(o for o in (own, group_offset) if o is not None)
    return start
