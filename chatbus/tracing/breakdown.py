"""One request's time to first token, split into stages.

With stamps ``received`` … ``delivered`` (see :class:`~chatbus.tracing.stamps.Hop`)::

    gateway    = published - received
    bus        = (moderation_in - published) + (worker_in - moderation_out)
                 + (client_in - chunk_published)
                 [no moderation: (worker_in - published) + (client_in - chunk_published)]
    moderation = moderation_out - moderation_in          [0 without moderation]
    queue      = admitted - worker_in
    prefill    = first_token - admitted
    delivery   = (chunk_published - first_token) + (delivered - client_in)

Every stamp but the first and last appears once with each sign, so the stages sum to
``delivered - received`` exactly: the time to first token as the gateway's client sees it. Stamps
come from different hosts' wall clocks; skew between two hosts moves time between the stages that
straddle them (a bus stage can even go negative) but never changes the total.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from chatbus.errors import ChatbusError
from chatbus.tracing.stamps import Hop


class Stage(StrEnum):
    GATEWAY = "gateway"
    BUS = "bus"
    MODERATION = "moderation"
    QUEUE = "queue"
    PREFILL = "prefill"
    DELIVERY = "delivery"


STAGES: tuple[Stage, ...] = tuple(Stage)

REQUIRED: tuple[Hop, ...] = (
    Hop.RECEIVED,
    Hop.PUBLISHED,
    Hop.WORKER_IN,
    Hop.ADMITTED,
    Hop.FIRST_TOKEN,
    Hop.CHUNK_PUBLISHED,
    Hop.CLIENT_IN,
    Hop.DELIVERED,
)


class IncompleteTrace(ChatbusError):
    """Stamps are missing (a refusal, an old producer, a hop without tracing)."""

    def __init__(self, missing: list[str]) -> None:
        super().__init__(f"the trace lacks the stamps {', '.join(missing)}")
        self.missing = missing


@dataclass(frozen=True, slots=True)
class Breakdown:
    """Milliseconds per stage; ``total_ms`` is ``delivered - received`` (their sum)."""

    gateway_ms: float
    bus_ms: float
    moderation_ms: float
    queue_ms: float
    prefill_ms: float
    delivery_ms: float
    total_ms: float
    moderated: bool  # moderation stamped the request (else its stage is 0)

    def stages(self) -> dict[Stage, float]:
        return {
            Stage.GATEWAY: self.gateway_ms,
            Stage.BUS: self.bus_ms,
            Stage.MODERATION: self.moderation_ms,
            Stage.QUEUE: self.queue_ms,
            Stage.PREFILL: self.prefill_ms,
            Stage.DELIVERY: self.delivery_ms,
        }

    def log_fields(self) -> dict[str, float | bool]:
        """``<stage>_ms`` and ``ttft_ms``, rounded to 0.01 ms, for one structured log line."""
        fields: dict[str, float | bool] = {
            f"{stage}_ms": round(ms, 2) for stage, ms in self.stages().items()
        }
        fields["ttft_ms"] = round(self.total_ms, 2)
        fields["moderated"] = self.moderated
        return fields


def breakdown(stamps: Mapping[str, float]) -> Breakdown:
    """The stages of a complete trace; raises :class:`IncompleteTrace` naming what is missing."""
    missing = [hop.value for hop in REQUIRED if hop not in stamps]
    moderated = Hop.MODERATION_IN in stamps or Hop.MODERATION_OUT in stamps
    if moderated:
        missing += [
            hop.value for hop in (Hop.MODERATION_IN, Hop.MODERATION_OUT) if hop not in stamps
        ]
    if missing:
        raise IncompleteTrace(missing)
    s = {hop: stamps[hop] for hop in Hop if hop in stamps}
    if moderated:
        bus_in = (s[Hop.MODERATION_IN] - s[Hop.PUBLISHED]) + (
            s[Hop.WORKER_IN] - s[Hop.MODERATION_OUT]
        )
        moderation = s[Hop.MODERATION_OUT] - s[Hop.MODERATION_IN]
    else:
        bus_in = s[Hop.WORKER_IN] - s[Hop.PUBLISHED]
        moderation = 0.0
    return Breakdown(
        gateway_ms=s[Hop.PUBLISHED] - s[Hop.RECEIVED],
        bus_ms=bus_in + (s[Hop.CLIENT_IN] - s[Hop.CHUNK_PUBLISHED]),
        moderation_ms=moderation,
        queue_ms=s[Hop.ADMITTED] - s[Hop.WORKER_IN],
        prefill_ms=s[Hop.FIRST_TOKEN] - s[Hop.ADMITTED],
        delivery_ms=(
            (s[Hop.CHUNK_PUBLISHED] - s[Hop.FIRST_TOKEN]) + (s[Hop.DELIVERED] - s[Hop.CLIENT_IN])
        ),
        total_ms=s[Hop.DELIVERED] - s[Hop.RECEIVED],
        moderated=moderated,
    )
