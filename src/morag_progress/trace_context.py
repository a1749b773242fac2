"""A job's place in a trace: the W3C trace context every job gets when it is created.

A job is a child of its creator's span (the ``traceparent`` header of ``POST /api/v1/jobs``,
or the span current in the creating process), or the root of a new trace. The job keeps it
(``Job.traceparent``), so whoever runs the job can start its own spans inside it
(:func:`attached`, ``ProgressReporter.traced()``, ``ProgressTask``) and they join the
creator's trace. Exporting a job's own span is ``tracing.py``'s.

Nothing here imports OpenTelemetry until it is used: the trace context is plain text, and a
process without ``opentelemetry-api`` simply starts no spans.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["TraceContext", "attached", "current_traceparent", "job_trace", "otel_span_context"]

logger = logging.getLogger("morag_progress.tracing")

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


@dataclass(frozen=True, slots=True)
class TraceContext:
    """A span's W3C trace context: trace id (32 hex digits), span id (16) and flags (2)."""

    trace_id: str
    span_id: str
    flags: str = "01"

    @classmethod
    def parse(cls, value: object) -> TraceContext | None:
        """The context of a ``traceparent`` header; None for anything that is not a valid one
        (as the W3C rules say: a receiver ignores it and starts a new trace)."""
        if not isinstance(value, str) or len(value) > 512:
            return None
        value = value.strip()
        match = _TRACEPARENT.match(value)
        if match is None:
            return None
        version, trace_id, span_id, flags = match.groups()
        rest = value[match.end() :]
        if version == "ff" or (version == "00" and rest) or (rest and not rest.startswith("-")):
            return None
        if trace_id == "0" * 32 or span_id == "0" * 16:
            return None
        # Only the sampled bit is defined; a later version's other bits are not ours to copy.
        return cls(trace_id, span_id, "01" if int(flags, 16) & 1 else "00")

    @classmethod
    def root(cls) -> TraceContext:
        """The first span of a new trace (sampled)."""
        import secrets

        return cls(secrets.token_hex(16), secrets.token_hex(8))

    def child(self) -> TraceContext:
        """A new span in this trace, with the same flags."""
        import secrets

        return TraceContext(self.trace_id, secrets.token_hex(8), self.flags)

    def __str__(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"


def job_trace(creator: str | None) -> tuple[str, str | None]:
    """A new job's trace context, as (its span's ``traceparent``, its creator's span id):
    a child of ``creator`` (a ``traceparent``) when that is valid, else a new trace."""
    parent = TraceContext.parse(creator)
    if parent is None:
        return str(TraceContext.root()), None
    return str(parent.child()), parent.span_id


def current_traceparent() -> str | None:
    """The ``traceparent`` of the span current in this process, if OpenTelemetry is in use
    (imported, with a valid span current); else None. Never raises: tracing must not fail the
    work it describes."""
    if "opentelemetry.trace" not in sys.modules:  # nobody traces here: do not import it
        return None
    try:
        from opentelemetry import trace

        context = trace.get_current_span().get_span_context()
        if not context.is_valid:
            return None
        flags = int(context.trace_flags)
        return f"00-{context.trace_id:032x}-{context.span_id:016x}-{flags:02x}"
    except Exception:  # a broken or half-configured OpenTelemetry
        logger.debug("no current span to carry", exc_info=True)
        return None


@contextlib.contextmanager
def attached(traceparent: str | None) -> Iterator[None]:
    """Run a block inside the span ``traceparent`` names (a job's): spans started in it are
    its children. Without OpenTelemetry, or without a valid context, it does nothing; it never
    raises into the block's work."""
    token = None
    parsed = TraceContext.parse(traceparent)
    if parsed is not None:
        try:
            from opentelemetry import context, trace

            span = trace.NonRecordingSpan(otel_span_context(parsed))
            token = context.attach(trace.set_span_in_context(span))
        except Exception:  # not installed, or broken: the work goes on untraced
            logger.debug("cannot enter the job's span", exc_info=True)
    try:
        yield
    finally:
        if token is not None:
            context.detach(token)


def otel_span_context(parsed: TraceContext) -> Any:
    from opentelemetry import trace

    return trace.SpanContext(
        int(parsed.trace_id, 16),
        int(parsed.span_id, 16),
        is_remote=True,
        trace_flags=trace.TraceFlags(int(parsed.flags, 16)),
    )
