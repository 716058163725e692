"""Per-stage latency attribution: traceparent parsing, the stamps header, stage arithmetic, and the
gateway's report of a traced request (metrics and the ``trace_breakdown`` log line)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from chatbus.tracing import (
    STAGES,
    STAMPS_HEADER,
    TRACEPARENT_HEADER,
    Hop,
    IncompleteTrace,
    InvalidTraceparent,
    RequestTrace,
    TraceParent,
    breakdown,
    decode_stamps,
    encode_stamps,
    now_ms,
    out_of_order,
    with_trace,
)
from producers.gateway.backend import PromptCounter
from producers.gateway.protocol import ChatCompletionRequest
from producers.gateway.serving import ChatCompletionService
from schemas.events import ChatMessage
from tests.unit.fake_backend import ScriptedBackend

VALID = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


# --- traceparent ------------------------------------------------------------------------------
def test_a_traceparent_parses_and_formats_back_unchanged() -> None:
    parent = TraceParent.parse(VALID)
    assert parent.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert parent.span_id == "00f067aa0ba902b7"
    assert parent.flags == 1 and parent.sampled
    assert parent.format() == VALID == str(parent)
    assert TraceParent.parse(VALID.encode()) == parent
    assert not TraceParent.parse(VALID[:-2] + "00").sampled


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", "trace-id is all zeros"),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", "parent-id is all zeros"),
        ("00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", "expected"),  # 31 hex
        ("00-4bf92f3577b34da6a3ce929d0e0e47360-00f067aa0ba902b7-01", "expected"),  # 33 hex
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01", "expected"),  # 15 hex
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1", "expected"),  # 1 flag digit
        ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", "expected"),  # upper case
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902g7-01", "expected"),  # not hex
        ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "version ff"),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", "exactly four"),
        ("", "expected"),
        ("garbage", "expected"),
    ],
)
def test_a_malformed_traceparent_is_refused_saying_why(value: str, reason: str) -> None:
    with pytest.raises(InvalidTraceparent) as err:
        TraceParent.parse(value)
    assert reason in str(err.value)


def test_a_later_version_is_read_by_its_first_four_fields() -> None:
    parent = TraceParent.parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-whatever")
    assert parent.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert parent.format().startswith("00-")  # we speak version 00


def test_ids_are_validated_when_built_directly() -> None:
    with pytest.raises(InvalidTraceparent):
        TraceParent("0" * 32, "00f067aa0ba902b7")
    with pytest.raises(InvalidTraceparent):
        TraceParent("4bf92f3577b34da6a3ce929d0e0e4736", "short")


def test_a_child_keeps_the_trace_and_flags_with_a_new_span() -> None:
    parent = TraceParent.parse(VALID)
    child = parent.child()
    assert (child.trace_id, child.flags) == (parent.trace_id, parent.flags)
    assert child.span_id != parent.span_id
    assert TraceParent.parse(child.format()) == child
    roots = {TraceParent.new().trace_id for _ in range(50)}
    assert len(roots) == 50


# --- stamps -----------------------------------------------------------------------------------
def test_stamps_round_trip_and_malformed_entries_are_dropped() -> None:
    stamps = {
        "received": 1_732_430_000_123.412,
        "published": 1_732_430_000_131.9,
        "from_a_newer_hop": 5.0,
    }
    assert decode_stamps(encode_stamps(stamps)) == stamps
    assert decode_stamps(
        b"received=1.5,junk,=3,published=x,worker_in=-1,first_token=nan,admitted=2"
    ) == {"received": 1.5, "admitted": 2.0}
    assert decode_stamps(None) == {} and decode_stamps(b"") == {}


def test_out_of_order_names_the_hops_whose_clocks_disagree() -> None:
    assert out_of_order({"received": 1, "published": 2, "worker_in": 3}) == []
    assert out_of_order({"received": 1, "published": 5, "worker_in": 3}) == [
        (Hop.PUBLISHED, Hop.WORKER_IN)
    ]


# --- stage arithmetic -------------------------------------------------------------------------
FULL = {
    "received": 1000.0,
    "published": 1004.0,
    "moderation_in": 1006.5,
    "moderation_out": 1030.5,
    "worker_in": 1033.0,
    "admitted": 1041.0,
    "first_token": 1101.0,
    "chunk_published": 1101.75,
    "client_in": 1104.25,
    "delivered": 1105.0,
}


def test_stages_follow_their_definitions_and_sum_to_the_time_to_first_token() -> None:
    b = breakdown(FULL)
    assert b.gateway_ms == 4.0
    assert b.bus_ms == 2.5 + 2.5 + 2.5  # requests → moderation, approved → worker, tokens
    assert b.moderation_ms == 24.0
    assert b.queue_ms == 8.0
    assert b.prefill_ms == 60.0
    assert b.delivery_ms == 0.75 + 0.75
    assert b.moderated
    assert b.total_ms == 105.0 == pytest.approx(sum(b.stages().values()))
    assert list(b.stages()) == list(STAGES)
    assert [s.value for s in STAGES] == [
        "gateway",
        "bus",
        "moderation",
        "queue",
        "prefill",
        "delivery",
    ]
    fields = b.log_fields()
    assert fields["moderation_ms"] == 24.0 and fields["ttft_ms"] == 105.0


def test_without_moderation_in_front_its_stage_is_zero_and_the_sum_still_holds() -> None:
    stamps = {k: v for k, v in FULL.items() if not k.startswith("moderation")}
    b = breakdown(stamps)
    assert b.moderation_ms == 0.0 and not b.moderated
    assert b.bus_ms == (1033.0 - 1004.0) + 2.5
    assert sum(b.stages().values()) == pytest.approx(b.total_ms) == 105.0


def test_clock_skew_moves_time_between_stages_but_never_changes_the_total() -> None:
    skewed = dict(FULL)
    for hop in ("worker_in", "admitted", "first_token", "chunk_published"):  # worker 10 ms late
        skewed[hop] -= 10
    b = breakdown(skewed)
    assert b.total_ms == 105.0 == pytest.approx(sum(b.stages().values()))
    assert b.bus_ms == 7.5  # -10 on the way in, +10 on the way back
    assert out_of_order(skewed) == [(Hop.MODERATION_OUT, Hop.WORKER_IN)]


@pytest.mark.parametrize(
    ("drop", "missing"),
    [
        (("first_token",), ["first_token"]),
        (("delivered", "client_in"), ["client_in", "delivered"]),
        (("moderation_out",), ["moderation_out"]),  # half a moderation hop is not "no moderation"
    ],
)
def test_a_trace_missing_stamps_has_no_breakdown(drop: tuple[str, ...], missing: list[str]) -> None:
    stamps = {k: v for k, v in FULL.items() if k not in drop}
    with pytest.raises(IncompleteTrace) as err:
        breakdown(stamps)
    assert err.value.missing == missing
    assert RequestTrace(TraceParent.new(), stamps).breakdown() is None


# --- traces across hops -----------------------------------------------------------------------
def test_a_gateway_continues_a_valid_caller_trace_and_replaces_an_invalid_one() -> None:
    continued = RequestTrace.begin(VALID, received_ms=1000.0)
    assert continued.trace_id == TraceParent.parse(VALID).trace_id
    assert continued.upstream == TraceParent.parse(VALID)
    assert continued.parent.span_id != continued.upstream.span_id
    assert continued.stamps == {"received": 1000.0}
    fresh = RequestTrace.begin("00-" + "0" * 32 + "-00f067aa0ba902b7-01")
    assert fresh.trace_id != "0" * 32 and fresh.upstream is None
    assert Hop.RECEIVED in fresh.stamps


def test_each_hop_is_a_child_span_carrying_the_stamps_so_far() -> None:
    gateway = RequestTrace.begin(received_ms=1000.0)
    gateway.stamp(Hop.PUBLISHED, 1004.0)
    on_the_wire = [("content-type", b"application/json"), *gateway.headers()]

    moderation = RequestTrace.next_hop(on_the_wire)
    moderation.stamp(Hop.MODERATION_IN, 1006.5)
    assert moderation.trace_id == gateway.trace_id
    assert moderation.upstream == gateway.parent
    assert moderation.parent.span_id != gateway.parent.span_id
    assert moderation.stamps == {"received": 1000.0, "published": 1004.0, "moderation_in": 1006.5}
    assert gateway.stamps == {"received": 1000.0, "published": 1004.0}  # a copy, not shared

    forwarded = with_trace(on_the_wire, moderation)
    assert [k for k, _ in forwarded] == ["content-type", TRACEPARENT_HEADER, STAMPS_HEADER]
    carried = RequestTrace.from_headers(forwarded)
    assert carried is not None and carried.parent == moderation.parent
    assert carried.stamps == moderation.stamps
    assert RequestTrace.from_headers({"traceparent": moderation.parent.format().encode()})


def test_a_message_without_a_trace_starts_one() -> None:
    assert RequestTrace.from_headers([("content-type", b"application/json")]) is None
    assert RequestTrace.from_headers(None) is None
    started = RequestTrace.next_hop(None)
    assert started.stamps == {} and started.upstream is None


def test_absorbing_a_reply_keeps_our_own_stamps() -> None:
    client = RequestTrace.begin(received_ms=1000.0)
    client.stamp(Hop.PUBLISHED, 1004.0)
    worker = RequestTrace.next_hop(client.headers())
    worker.stamps["received"] = 999.0  # a copy that went wrong must not win over ours
    worker.stamp(Hop.WORKER_IN, 1010.0)
    span = client.absorb(worker.headers())
    assert span == worker.parent
    assert client.stamps == {"received": 1000.0, "published": 1004.0, "worker_in": 1010.0}


# --- the gateway's report ---------------------------------------------------------------------
class TracedBackend(ScriptedBackend):
    """Plays every hop after the gateway: stamps them on the trace it is given."""

    def __init__(self) -> None:
        super().__init__([{"text": "Hi", "token_ids": [1], "finish_reason": "stop"}])
        self.traces: dict[str, RequestTrace] = {}

    def accepted(self, request_id: str, trace: RequestTrace | None) -> None:
        assert trace is not None
        self.traces[request_id] = trace
        base = trace.stamps["received"]
        for hop, at in [
            (Hop.PUBLISHED, 4.0),
            (Hop.MODERATION_IN, 6.5),
            (Hop.MODERATION_OUT, 30.5),
            (Hop.WORKER_IN, 33.0),
            (Hop.ADMITTED, 41.0),
            (Hop.FIRST_TOKEN, 101.0),
            (Hop.CHUNK_PUBLISHED, 101.75),
            (Hop.CLIENT_IN, 104.25),
        ]:
            trace.stamp(hop, base + at)

    def trace(self, request_id: str) -> RequestTrace | None:
        return self.traces.get(request_id)


class OneTokenEach(PromptCounter):
    async def count(self, messages: Sequence[ChatMessage]) -> int:
        return len(messages)


def stage_counts() -> dict[str, float]:
    return {
        stage.value: REGISTRY.get_sample_value(
            "chatbus_stage_latency_seconds_count", {"stage": stage.value}
        )
        or 0.0
        for stage in STAGES
    }


async def test_a_streamed_traced_request_is_measured_and_logged_at_its_first_byte() -> None:
    svc = ChatCompletionService(
        TracedBackend(), OneTokenEach(), models=["m"], default_max_tokens=8, max_messages=4
    )
    request = ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    )
    before = stage_counts()
    trace = RequestTrace.begin(VALID, received_ms=now_ms() - 200)  # the hops took ~0.1 s
    answer = await svc.submit(svc.validate(request), user_id="u", prompt_tokens=1, trace=trace)
    with capture_logs() as logs:
        events = [e async for e in svc.stream(answer)]
    assert events[-1].endswith("data: [DONE]\n\n")
    assert svc.trace(answer.request_id) is trace
    assert [hop for hop, _ in trace.ordered()] == list(Hop)
    assert out_of_order(trace.stamps) == []
    assert stage_counts() == {k: v + 1 for k, v in before.items()}
    (line,) = [e for e in logs if e["event"] == "trace_breakdown"]
    assert line["trace_id"] == TraceParent.parse(VALID).trace_id
    assert line["request_id"] == answer.request_id and line["stream"] is True
    assert (line["gateway_ms"], line["moderation_ms"], line["queue_ms"], line["prefill_ms"]) == (
        4.0,
        24.0,
        8.0,
        60.0,
    )
    assert line["ttft_ms"] == pytest.approx(sum(line[f"{s}_ms"] for s in STAGES), abs=0.05)
    assert line["ttft_ms"] >= 104.25  # delivered is the real first byte, after client_in
