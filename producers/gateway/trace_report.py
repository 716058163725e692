"""Report a finished trace: ``chatbus_stage_latency_seconds{stage}`` and one ``trace_breakdown``
log line per request (trace_id, request_id, each stage in ms, the time to first token)."""

from __future__ import annotations

from chatbus.logging import get_logger
from chatbus.tracing import RequestTrace, breakdown, out_of_order
from chatbus.tracing.breakdown import IncompleteTrace
from producers.gateway import metrics

log = get_logger(__name__)


def report_trace(trace: RequestTrace, *, request_id: str, stream: bool) -> None:
    """Observe and log the stages of ``trace``; a trace lacking stamps (a refusal, a worker that
    does not stamp) is logged at debug level and not measured."""
    try:
        stages = breakdown(trace.stamps)
    except IncompleteTrace as exc:
        log.debug(
            "trace_incomplete", request_id=request_id, trace_id=trace.trace_id, missing=exc.missing
        )
        return
    for stage, ms in stages.stages().items():
        metrics.STAGE_LATENCY.labels(stage.value).observe(max(ms, 0.0) / 1000)
    skewed = out_of_order(trace.stamps)
    log.info(
        "trace_breakdown",
        request_id=request_id,
        trace_id=trace.trace_id,
        stream=stream,
        **stages.log_fields(),
        **({"clock_skew": [f"{a}>{b}" for a, b in skewed]} if skewed else {}),
    )
