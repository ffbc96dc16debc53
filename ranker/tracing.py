"""OpenTelemetry spans for the Scorer and the service; off by default (``pip install 'fusion-ltr[tracing]'``).

:func:`enable` turns them on for the process (``fusion-ltr serve --tracing`` calls it): each request is a
server span whose parent is the caller's trace context (the W3C ``traceparent`` header), with a child span
per cascade stage (``fusion_ltr.stage``) and per extractor (``fusion_ltr.extractor``) within it. Spans go to
OpenTelemetry's global tracer provider, which the application configures, e.g. with
``opentelemetry-instrument --traces_exporter otlp fusion-ltr serve --run ... --tracing``.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

from retrieval.models import require

INSTALL = "pip install 'fusion-ltr[tracing]'"
_tracer = None


def enable(tracer_provider=None) -> None:
    """Spans from here on, to ``tracer_provider`` (default: OpenTelemetry's global one)."""
    global _tracer
    trace = require("opentelemetry.trace", INSTALL)
    _tracer = trace.get_tracer("fusion_ltr", tracer_provider=tracer_provider)


def disable() -> None:
    global _tracer
    _tracer = None


def enabled() -> bool:
    return _tracer is not None


def span(name: str, **attributes):
    """A child span of the current one while tracing is on; else nothing."""
    if _tracer is None:
        return nullcontext()
    return _tracer.start_as_current_span(name, attributes=attributes)


@contextmanager
def server_span(name: str, headers, **attributes):
    """A request's span, continuing the caller's trace (``headers`` carry its context) while tracing is on."""
    if _tracer is None:
        yield None
        return
    from opentelemetry import propagate
    from opentelemetry.trace import SpanKind

    with _tracer.start_as_current_span(name, context=propagate.extract(dict(headers)), kind=SpanKind.SERVER,
                                       attributes=attributes) as s:
        yield s
