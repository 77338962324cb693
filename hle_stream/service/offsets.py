"""Where a partition resumes when the consumer group hands it to this daemon.

The daemon's checkpoint records, per partition, the next offset its model has not learned: the
model's lineage (kept for a partition while another member holds it, never committed then).
The group's committed offset records what the group has finished, and the checkpointer keeps
a record of what this lineage committed itself. They part ways in three cases the rule settles:

- the checkpoint is ahead (the daemon learned past its last commit, then lost the partition
  for a while, or crashed between checkpoint and commit): resume at the checkpoint, or those
  events are learned twice;
- the group is ahead at this lineage's own commit (its newest checkpoint was lost, e.g. corrupt,
  and an older one restored): resume at the checkpoint, so the restored model learns those
  events again;
- the group is ahead at another member's commit (it held the partition meanwhile): resume at
  the group's offset, or that member's work is answered twice and the group's offset moves
  back; the events in between are in the other member's model, not in this one, and a warning
  says so.

A partition the checkpoint does not cover starts at the group's offset, or at the earliest.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def resume_offsets(checkpointed: dict[int, int], committed: dict[int, int | None],
                   own_commits: dict[int, int]) -> dict[int, int]:
    """For each partition in ``committed`` (the ones just assigned, with the group's offset or
    ``None``): where to start; left out when neither the checkpoint nor the group has an offset.
    ``own_commits``: the offsets this lineage committed last."""
    start = {}
    for partition, group in committed.items():
        own = checkpointed.get(partition)
        if own is None:
            if group is not None:
                start[partition] = group
            continue
        if group is not None and group > own and group != own_commits.get(partition):
            log.warning("partition %d: another member of the group committed offset %d, past this model's %d; "
                        "events %d..%d are in its model, not in this one", partition, group, own, own, group - 1)
            start[partition] = group
        else:
            start[partition] = own
    return start
