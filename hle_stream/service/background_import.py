"""Loading a slow module in a thread while the daemon starts.

A daemon's first seconds are mostly spent waiting on the network (the broker, the group join);
a module that is only needed once events flow can be imported meanwhile. Python's import lock
makes a second importer wait for the first, so using the module early is still correct, just
not faster.
"""

from __future__ import annotations

import importlib
import threading
from types import ModuleType


class BackgroundImport:
    """Starts importing ``name`` at once in a daemon thread; ``module()`` waits for it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._thread = threading.Thread(target=self._load, name=f"import-{name}", daemon=True)
        self._thread.start()

    def _load(self) -> None:
        try:
            importlib.import_module(self.name)
        except Exception:  # noqa: BLE001 - ``module()`` imports again, and raises there
            pass

    def module(self) -> ModuleType:
        """The module; had the thread's import failed, this import fails in the open."""
        self._thread.join()
        return importlib.import_module(self.name)
