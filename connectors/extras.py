"""Optional dependencies, each named by the pip extra that installs it, so that a missing one ends
in one line saying what to install (the daemon's own install carries none of them)."""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingExtra(ImportError):
    """A feature whose library is not installed; the message names the extra that brings it."""


def import_extra(module: str, extra: str, feature: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name is None or module.split(".")[0] != err.name.split(".")[0]:
            raise  # the library is there but something it needs is not: not ours to explain
        raise MissingExtra(f"{feature} needs {err.name}, which is not installed: "
                           f"pip install 'hle-stream[{extra}]' (or, in a clone, pip install -e '.[{extra}]')") from None
