"""What a user can fix ends as one line on stderr and a documented exit code, not a traceback
(``hle-stream --debug …`` shows the traceback).

Exit codes: 0 done; 1 a bug in hle-stream (traceback); 2 a mistake in the command, its files or
its settings, or a start refused (bad checkpoint, port in use); 3 the daemon stopped without its
final checkpoint; 4 a dependency is unreachable (no Kafka broker answers, a dataset cannot be
downloaded).
"""

from __future__ import annotations

from connectors.extras import MissingExtra
from connectors.kafka_io import BrokerUnreachable
from hle_stream.eval.datasets import DatasetFormatError, DatasetUnavailable
from hle_stream.eval.datasets.sources import FetchError

EXIT_USAGE = 2
EXIT_UNREACHABLE = 4


class UserError(Exception):
    """A mistake the message explains, with the exit code to leave with."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def one_line(err: BaseException) -> tuple[str, int] | None:
    """The line and exit code for an error a user can fix; ``None`` for anything else (a bug)."""
    if isinstance(err, UserError):
        return str(err), err.exit_code
    if isinstance(err, (BrokerUnreachable, FetchError)):
        return str(err), EXIT_UNREACHABLE
    if isinstance(err, (DatasetUnavailable, DatasetFormatError, MissingExtra)):
        return str(err), EXIT_USAGE
    if isinstance(err, FileNotFoundError) and err.filename:
        return f"file not found: {err.filename}", EXIT_USAGE
    return None
