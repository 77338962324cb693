"""The ids of recent events that carried features, to refuse a second record with the same id.

Producers retry, pipelines replay: the same event can arrive twice. Learning it twice would
weigh it double, and two predictions under one key would leave a reader guessing which is
current. So a record whose id is among the last ``capacity`` ids with features is a
``duplicate_id`` dead letter. Label-only records (a delayed or refined label for a known id)
carry no features and never reach this window.

The window is part of the checkpoint: a restart replays the events after the checkpoint
against the window as it was then, so a replayed event is not mistaken for a duplicate.

Examples
--------
>>> window = RecentIds(capacity=2)
>>> [window.admit(i) for i in ("a", "b", "a", "c", "a")]
[True, True, False, True, True]
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any


class RecentIds:
    """The last ``capacity`` admitted ids, oldest forgotten first (``capacity`` 0: no check)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def admit(self, event_id: str) -> bool:
        """False if ``event_id`` is in the window; otherwise remember it and return True."""
        if self.capacity == 0:
            return True
        if event_id in self._ids:
            return False
        self._ids[event_id] = None
        if len(self._ids) > self.capacity:
            self._ids.popitem(last=False)
        return True

    def __len__(self) -> int:
        return len(self._ids)

    def state_dict(self) -> dict[str, Any]:
        return {"capacity": self.capacity, "ids": list(self._ids)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the ids; the configured capacity wins (the oldest are dropped if it shrank)."""
        self._ids = OrderedDict.fromkeys(state["ids"][-self.capacity:] if self.capacity else [])
