"""Where a partition resumes when the consumer group hands it to this daemon.

The daemon's checkpoint records, per partition, the next offset its model has not learned: the
model's lineage (kept for a partition while another member holds it, never committed then).
The group's committed offset records what the group has finished; the daemon signs its commits
with its model's id. The two part ways in three cases the rule below settles:

- the checkpoint is ahead (the daemon learned past its last commit, then lost the partition
  for a while, or crashed between checkpoint and commit): resume at the checkpoint, or those
  events are learned twice;
- the group is ahead by this model's own commit (its newest checkpoint was lost, e.g. corrupt,
  and an older one restored): resume at the checkpoint, so the restored model learns those
  events again;
- the group is ahead by another member's commit (it held the partition meanwhile): resume at
  the group's offset, or that member's work is answered twice and the group's offset moves
  back; the events in between are in the other member's model, not in this one, and a warning
  says so.

A partition the checkpoint does not cover starts at the group's offset, or at the earliest.
"""

from __future__ import annotations

import logging

from connectors.ports import Committed

log = logging.getLogger(__name__)


def resume_offsets(checkpointed: dict[int, int], committed: dict[int, Committed | None],
                   model_id: str) -> dict[int, int]:
    """For each partition in ``committed`` (the ones just assigned, with the group's offset or
    ``None``): where to start; left out when neither the checkpoint nor the group has an offset."""
    start = {}
    for partition, group in committed.items():
        own = checkpointed.get(partition)
        if own is None:
            if group is not None:
                start[partition] = group.offset
            continue
        if group is not None and group.offset > own and group.by != model_id:
            log.warning("partition %d: another member of the group committed offset %d, past this model's %d; "
                        "events %d..%d are in its model, not in this one", partition, group.offset, own, own,
                        group.offset - 1)
            start[partition] = group.offset
        else:
            start[partition] = own
    return start
