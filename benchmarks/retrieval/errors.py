"""The benchmark's one error type: bad data files or bad command-line input, reported as one line.

Kept apart from `service.errors` because those map to HTTP/gRPC status codes for clients; a benchmark
has no client, only an operator who needs to know which file, which line and what is wrong.
"""

from __future__ import annotations


class BenchmarkError(Exception):
    """A benchmark cannot run as asked; the message names the file (and line) or the option at fault."""
