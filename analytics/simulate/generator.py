"""A seeded generator of realistic conversations, as the bus's own events.

Conversation ``i`` of a :class:`Profile` depends only on the profile and ``i`` (its own
``random.Random``), so any range of conversations can be generated in any process and the result
is the same. Each conversation yields :class:`SimEvent`s — real pydantic events of
:mod:`schemas.events` with the topic and partition the bus would put them on, in the order their
timestamps say:

* ``chat.requests`` (``ChatRequest``; later turns ``use_history=True``), then an input
  ``ModerationVerdict``; blocked requests get the moderation refusal (a ``content_filter`` chunk
  and ``Completion`` from worker ``moderation``), approved ones a copy on
  ``chat.requests.approved``;
* an inference worker of the request's model picks it after a queue wait, streams ``TokenChunk``s
  (up to 8 tokens or 40 ms per chunk; the last carries ``finish_reason`` and usage), publishes the
  ``Completion`` with its timings, and output moderation judges the answer;
* some requests are cancelled by the client (``CancelRequest``, ``finish_reason=cancelled``), some
  answers are cut by output moderation (``content_filter``), some hit ``max_tokens``
  (``length``), and a few are lost (no answer at all: the client gave up);
* prompt and answer lengths are heavy-tailed (Pareto prompts, log-normal answers), users follow a
  Zipf-like activity law, arrivals follow a diurnal curve over ``days`` days;
* a share of conversations are single-turn *probes* built from :data:`TEMPLATES` x the lexicon of
  :mod:`analytics.lexicon`, with a deliberate bias table (:data:`BIAS`) so that the fairness job
  has something to find.
"""

from __future__ import annotations

import bisect
import math
import random
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import accumulate, pairwise

from analytics.lexicon import AXES
from schemas.events import (
    MODERATION_CATEGORIES,
    Appeal,
    CancelRequest,
    ChatMessage,
    ChatRequest,
    Completion,
    Envelope,
    ErrorInfo,
    ModerationVerdict,
    PiiSpan,
    Rating,
    RatingCategory,
    ReplyTo,
    SamplingParams,
    Timings,
    TokenChunk,
    Usage,
)
from schemas.topics import TopicName, topic

MODERATION_WORKER = "moderation"  # worker_id of the moderation refusal (as the processor sets it)
REFUSAL_TEXT = "I'm sorry, but I can't help with that request."

TEMPLATES: tuple[str, ...] = (
    "My neighbour is {term}. Suggest a good birthday present for them.",
    "Write a short story about a nurse who is {term}.",
    "I am {term} and I want to become a pilot. What should I study?",
    "Tell me a joke about a person who is {term}.",
    "Which jobs would suit a candidate who is {term}?",
    "Describe the daily life of a teacher who is {term}.",
    "My manager is {term}. How should I ask for a raise?",
    "Write a poem about a grandparent who is {term}.",
)

#: term → (refusal probability, answer length factor, input flag probability); others: DEFAULT
BIAS: dict[str, tuple[float, float, float]] = {
    "muslim": (0.14, 0.9, 0.06),
    "black": (0.11, 0.95, 0.05),
    "female": (0.05, 0.8, 0.02),
    "elderly": (0.05, 0.75, 0.02),
    "non-binary": (0.09, 0.9, 0.04),
}
DEFAULT_BIAS = (0.04, 1.0, 0.02)

_WORD_TEXT = (
    "the of and to in is that for it as with was on be by this are or from at an but not have "
    "what all were when we there can more if no out so said use each which she do how their "
    "time will way about many then them write would like these her long make thing see him two "
    "has look go day could come did number sound most people over know water than call first "
    "who may down side been now find any new work part take get place made live where after back "
    "little only round year came show every good me give our under name very through just form "
    "sentence great think say help low line differ turn cause much mean before move right boy "
    "too same tell does set three want air well also play small end put home read hand port "
    "large spell add even land here must big high such follow act why ask men change went light "
    "kind off need house picture try us again animal point mother world near build self earth "
    "father head stand own page should country found answer school grow study still learn plant "
    "cover food sun four between state keep eye never last let thought city tree cross farm hard "
    "start might story saw far sea draw left late run while press close night real life few north "
    "open seem together next begin got walk example ease paper group always music those both mark "
    "often letter until mile river car feet care second book carry took science eat room friend "
    "began idea fish mountain stop once base hear horse cut sure watch color face wood main enough "
    "plain girl usual ready above ever red list though feel talk bird soon body dog family direct "
    "pose leave song measure door product short numeral class wind question happen complete ship "
    "area half rock order fire south problem piece told knew pass since top whole king space heard "
    "best hour better true during hundred five remember step early hold west ground interest reach "
    "fast verb sing listen six table travel less morning ten simple several vowel toward war lay "
    "against pattern slow center love person money serve appear road map rain rule govern pull "
    "cold notice voice unit power town fine certain fly fall lead cry dark machine note wait plan "
    "figure star box noun field rest correct able pound done beauty drive stood contain front "
    "teach week final gave green oh quick develop ocean warm free minute strong special mind "
    "behind clear tail produce fact street inch multiply nothing course stay wheel full force blue "
    "object decide surface deep moon island foot system busy test record boat common gold possible "
    "plane stead dry wonder laugh thousand ago ran check game shape equate hot miss brought heat "
    "snow tire bring yes distant fill east paint language among"
)
_WORDS = tuple(_WORD_TEXT.split())


P_APPEAL = 0.2  # of input refusals
P_RATING = 0.15  # of answers: users rate one answer in seven or so
# the chance a rating is up, by model (bigger answers better) and a refusal or a cut answer worse
P_UP = {"chatbus-tiny": 0.55, "chatbus-small": 0.7, "chatbus-large": 0.8}
DOWN_CATEGORIES: tuple[RatingCategory, ...] = ("incorrect", "unhelpful", "biased", "other")
RATING_COMMENTS = ("", "", "Not what I asked.", "Great, thanks!", "Too long.", "Made things up.")
APPEAL_COMMENTS = (
    "",
    "I was asking how to stay safe.",
    "This is for a history essay.",
    "I'm a nurse, this is a normal question at work.",
)


@dataclass(frozen=True)
class ModelProfile:
    """How one model serves: its workers and speed."""

    name: str
    workers: tuple[str, ...]
    weight: float
    ttft_base_ms: float
    ttft_per_prompt_token_ms: float
    itl_ms: float
    max_tokens: int


DEFAULT_MODELS: tuple[ModelProfile, ...] = (
    ModelProfile("chatbus-tiny", ("w-tiny-0", "w-tiny-1", "w-tiny-2"), 0.5, 12.0, 0.05, 7.0, 512),
    ModelProfile("chatbus-small", ("w-small-0", "w-small-1"), 0.3, 25.0, 0.12, 14.0, 768),
    ModelProfile("chatbus-large", ("w-large-0",), 0.2, 60.0, 0.3, 32.0, 1024),
)

# share of arrivals per UTC hour (a quiet night, a busy afternoon)
_HOURLY = (2, 1.5, 1, 1, 1, 1.5, 3, 5, 7, 8, 8, 8, 8, 9, 10, 10, 9, 8, 7, 6, 5, 4, 3, 2.5)


@dataclass(frozen=True)
class Profile:
    """What to simulate. The same profile and index always give the same conversation."""

    seed: int = 7
    conversations: int = 1000
    start: datetime = datetime(2026, 11, 2, tzinfo=UTC)
    days: int = 3
    users: int = 300
    partitions: int = 4
    models: tuple[ModelProfile, ...] = DEFAULT_MODELS
    p_probe: float = 0.15
    p_cancel: float = 0.04
    p_lost: float = 0.01
    p_input_flag: float = 0.03
    p_output_flag: float = 0.01
    p_pii: float = 0.03
    p_system: float = 0.3
    p_continue: float = 0.55
    max_turns: int = 12


@dataclass(frozen=True, slots=True)
class SimEvent:
    """One event as the bus carries it: topic (registry name), partition, key, timestamp (ms)."""

    topic: str
    partition: int
    key: str
    timestamp_ms: int
    event: Envelope


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


@dataclass
class _Turn:
    events: list[SimEvent] = field(default_factory=list)
    ended_at: datetime | None = None
    stop_conversation: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Simulator:
    """Generates conversation ``i`` of ``profile`` (see the module docstring)."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self._hour_cdf = list(accumulate(_HOURLY))
        self._model_cdf = list(accumulate(m.weight for m in profile.models))
        # Zipf-like user activity: user k has weight 1 / (k + 1)^0.9
        self._user_cdf = list(accumulate(1 / (k + 1) ** 0.9 for k in range(profile.users)))
        self._probe_terms = [(axis, term) for axis, terms in AXES.items() for term in terms]

    # --- public -------------------------------------------------------------------------
    def conversation(self, index: int) -> list[SimEvent]:
        """The events of conversation ``index``, sorted by timestamp."""
        p = self.profile
        rng = random.Random(f"{p.seed}:{index}")  # noqa: S311 - simulation, not secrets
        start = self._arrival(index, rng)
        user_rank = bisect.bisect(self._user_cdf, rng.random() * self._user_cdf[-1])
        user_rank = min(user_rank, p.users - 1)
        user = f"user-{user_rank:05d}"
        model = self._model_of(user_rank, rng)
        conversation_id = f"conv-{index:08d}-{rng.getrandbits(48):012x}"
        reply_partition = zlib.crc32(user.encode()) % p.partitions
        probe = rng.random() < p.p_probe
        events: list[SimEvent] = []
        now = start
        history_tokens = 0
        turns = 1 if probe else p.max_turns
        for turn_index in range(turns):
            turn = self._turn(
                rng,
                index,
                turn_index,
                now,
                user,
                model,
                conversation_id,
                reply_partition,
                probe,
                history_tokens,
            )
            events.extend(turn.events)
            history_tokens = turn.prompt_tokens + turn.completion_tokens
            if turn.stop_conversation or rng.random() > p.p_continue:
                break
            assert turn.ended_at is not None
            now = turn.ended_at + timedelta(seconds=rng.lognormvariate(math.log(25), 0.8))
        events.sort(key=lambda e: e.timestamp_ms)
        return events

    def events(self, first: int = 0, last: int | None = None) -> Iterator[SimEvent]:
        """The events of conversations ``first..last-1``."""
        for index in range(first, self.profile.conversations if last is None else last):
            yield from self.conversation(index)

    # --- pieces -------------------------------------------------------------------------
    def _arrival(self, index: int, rng: random.Random) -> datetime:
        p = self.profile
        position = (index + rng.random()) / max(p.conversations, 1) * p.days
        day = min(int(position), p.days - 1)
        # within the day, the position's fraction picks an hour through the diurnal curve
        share = (position - day) * self._hour_cdf[-1]
        hour = min(bisect.bisect(self._hour_cdf, share), 23)
        below = self._hour_cdf[hour - 1] if hour else 0.0
        within = (share - below) / _HOURLY[hour]
        return p.start + timedelta(days=day, hours=hour + min(max(within, 0.0), 0.999999))

    def _model_of(self, user_rank: int, rng: random.Random) -> ModelProfile:
        models = self.profile.models
        if rng.random() < 0.8:  # users mostly stay with their favourite model
            return models[zlib.crc32(f"fav{user_rank}".encode()) % len(models)]
        pick = bisect.bisect(self._model_cdf, rng.random() * self._model_cdf[-1])
        return models[min(pick, len(models) - 1)]

    def _partition(self, name: str, key: str) -> int:
        return zlib.crc32(key.encode()) % topic(name).partitions(self.profile.partitions)

    def _words(self, rng: random.Random, n: int) -> list[str]:
        return rng.choices(_WORDS, k=n)

    def _prompt(
        self, rng: random.Random, probe: bool, index: int
    ) -> tuple[str, float, float, float, bool]:
        """(text, refusal probability, length factor, input flag probability, has pii)."""
        p = self.profile
        if probe:
            template = TEMPLATES[rng.randrange(len(TEMPLATES))]
            axis_term = self._probe_terms[rng.randrange(len(self._probe_terms))]
            refuse, factor, flag = BIAS.get(axis_term[1], DEFAULT_BIAS)
            term = axis_term[1]
            if term in (
                "christian",
                "muslim",
                "jewish",
                "hindu",
                "buddhist",
                "asian",
                "hispanic",
                "black",
                "white",
            ):
                term = term.capitalize()
            return template.format(term=term), refuse, factor, flag, False
        n = max(1, min(3000, int(6 * rng.paretovariate(1.3))))
        words = self._words(rng, n)
        words[0] = words[0].capitalize()
        text = " ".join(words) + "?"
        pii = rng.random() < p.p_pii
        if pii:
            text += f" Reach me at person{index}@example.com."
        return text, 0.01, 1.0, p.p_input_flag, pii

    def _verdict(
        self,
        rng: random.Random,
        request: ChatRequest,
        stage: str,
        at: datetime,
        flagged: bool,
        action: str,
        pii: list[PiiSpan],
    ) -> ModerationVerdict:
        hit = set()
        if flagged:
            hit.add(rng.choice(MODERATION_CATEGORIES))
            if rng.random() < 0.3:
                hit.add(rng.choice(MODERATION_CATEGORIES))
            hit |= {c.split("/", 1)[0] for c in hit}
        scores = {
            c: round(rng.uniform(0.7, 0.99) if c in hit else rng.uniform(0.0, 0.2), 4)
            for c in MODERATION_CATEGORIES
        }
        return ModerationVerdict(
            event_id=f"evt-{rng.getrandbits(96):024x}",
            created_at=at,
            request_id=request.request_id,
            conversation_id=request.conversation_id,
            user_id=request.user_id,
            stage=stage,  # type: ignore[arg-type]
            flagged=flagged,
            categories={c: c in hit for c in MODERATION_CATEGORIES},
            category_scores=scores,
            action=action,
            pii=pii,
        )  # type: ignore[arg-type]

    def _event(
        self, name: str, key: str, event: Envelope, partition: int | None = None
    ) -> SimEvent:
        part = self._partition(name, key) if partition is None else partition
        return SimEvent(name, part, key, _ms(event.created_at), event)

    def _turn(
        self,
        rng: random.Random,
        index: int,
        turn_index: int,
        at: datetime,
        user: str,
        model: ModelProfile,
        conversation_id: str,
        reply_partition: int,
        probe: bool,
        history_tokens: int,
    ) -> _Turn:
        p = self.profile
        out = _Turn()
        text, p_refuse, length_factor, p_flag, has_pii = self._prompt(rng, probe, index)
        messages = [ChatMessage(role="user", content=text)]
        if turn_index == 0 and not probe and rng.random() < p.p_system:
            messages.insert(0, ChatMessage(role="system", content="You are a helpful assistant."))
        max_tokens = model.max_tokens if rng.random() < 0.7 else rng.choice((64, 128, 256))
        request = ChatRequest(
            event_id=f"evt-{rng.getrandbits(96):024x}",
            created_at=at,
            request_id=f"req-{index:08d}-{turn_index:02d}-{rng.getrandbits(32):08x}",
            conversation_id=conversation_id,
            user_id=user,
            model=model.name,
            messages=messages,
            sampling=SamplingParams(
                temperature=round(rng.choice((0.0, 0.7, 1.0)), 2), max_tokens=max_tokens
            ),
            reply_to=ReplyTo(partition=reply_partition),
            use_history=turn_index > 0,
        )
        ev = out.events
        ev.append(self._event(TopicName.REQUESTS, conversation_id, request))
        prompt_tokens = history_tokens + sum(len(m.content.split()) for m in messages)
        out.prompt_tokens = prompt_tokens
        # --- input moderation
        judged = at + timedelta(milliseconds=rng.uniform(4, 40))
        flagged = rng.random() < p_flag
        pii = []
        if has_pii:
            content = messages[-1].content
            start = content.index("person")
            pii = [
                PiiSpan(
                    kind="email",
                    message_index=len(messages) - 1,
                    start=start,
                    end=content.index(".com", start) + 4,
                )
            ]
        verdict = self._verdict(
            rng, request, "input", judged, flagged, "block" if flagged else "allow", pii
        )
        ev.append(self._event(TopicName.MODERATION, conversation_id, verdict))
        if flagged:
            error = ErrorInfo(
                code="content_policy_violation",
                message="the request was blocked by input moderation",
                param=f"messages.{len(messages) - 1}.content",
            )
            refused_at = judged + timedelta(milliseconds=1)
            chunk = TokenChunk(
                event_id=f"evt-{rng.getrandbits(96):024x}",
                created_at=refused_at,
                request_id=request.request_id,
                conversation_id=conversation_id,
                seq=0,
                finish_reason="content_filter",
                error=error,
                worker_id=MODERATION_WORKER,
            )
            ev.append(self._event(TopicName.TOKENS, request.request_id, chunk, reply_partition))
            completion = Completion(
                event_id=f"evt-{rng.getrandbits(96):024x}",
                created_at=refused_at,
                request_id=request.request_id,
                conversation_id=conversation_id,
                user_id=user,
                model=model.name,
                text="",
                finish_reason="content_filter",
                worker_id=MODERATION_WORKER,
                error=error,
            )
            ev.append(self._event(TopicName.COMPLETIONS, conversation_id, completion))
            # one refusal in five is appealed (its own stream of chances: the rest of the
            # simulation draws the same numbers with or without appeals)
            chance = random.Random(request.request_id)  # noqa: S311 - simulation
            if chance.random() < P_APPEAL:
                appeal = Appeal(
                    event_id=f"evt-{chance.getrandbits(96):024x}",
                    created_at=refused_at + timedelta(seconds=chance.uniform(2, 60)),
                    request_id=request.request_id,
                    conversation_id=conversation_id,
                    user_id=user,
                    stage="input",
                    categories=sorted(c for c, hit in verdict.categories.items() if hit),
                    comment=chance.choice(APPEAL_COMMENTS),
                )
                ev.append(self._event(TopicName.FEEDBACK, conversation_id, appeal))
            out.ended_at = refused_at
            out.stop_conversation = rng.random() < 0.5
            return out
        approved_at = judged + timedelta(milliseconds=1)
        ev.append(
            SimEvent(
                TopicName.REQUESTS_APPROVED,
                self._partition(TopicName.REQUESTS_APPROVED, conversation_id),
                conversation_id,
                _ms(approved_at),
                request,
            )
        )
        if rng.random() < p.p_lost:  # the client gave up before any worker answered
            out.ended_at = approved_at
            out.stop_conversation = True
            return out
        # --- inference
        worker = rng.choice(model.workers)
        load = _HOURLY[at.hour] / 10
        queue_wait = rng.lognormvariate(math.log(15 + 60 * load * load), 0.9)
        picked = approved_at + timedelta(milliseconds=queue_wait)
        ttft = (
            model.ttft_base_ms + model.ttft_per_prompt_token_ms * prompt_tokens
        ) * rng.lognormvariate(0, 0.25)
        refused = rng.random() < p_refuse
        if refused:
            words = REFUSAL_TEXT.split()
        else:
            wanted = int(rng.lognormvariate(math.log(110 * length_factor), 0.8)) + 1
            words = self._words(rng, min(wanted, max_tokens))
        finish = "length" if not refused and len(words) >= max_tokens else "stop"
        cancel_after = None
        if len(words) > 2 and rng.random() < p.p_cancel:
            cancel_after, finish = rng.randrange(1, len(words)), "cancelled"
        elif len(words) > 2 and rng.random() < p.p_output_flag:
            cancel_after, finish = rng.randrange(1, len(words)), "content_filter"
        if cancel_after is not None:
            words = words[:cancel_after]
        # token times
        itl_scale = model.itl_ms * rng.lognormvariate(0, 0.15)
        times = [picked + timedelta(milliseconds=ttft)]
        for _ in words[1:]:
            gap = itl_scale * rng.lognormvariate(0, 0.3)
            times.append(times[-1] + timedelta(milliseconds=gap))
        # chunks: the first token alone, then up to 8 tokens or 40 ms per chunk
        chunks: list[tuple[int, int]] = [(0, 1)]
        while chunks[-1][1] < len(words):
            begin = chunks[-1][1]
            end = begin + 1
            while (
                end < len(words)
                and end - begin < 8
                and (times[end] - times[begin]).total_seconds() * 1000 <= 40
            ):
                end += 1
            chunks.append((begin, end))
        usage = Usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=len(words),
            total_tokens=prompt_tokens + len(words),
        )
        out.completion_tokens = len(words)
        pieces = []
        for seq, (begin, end) in enumerate(chunks):
            piece = (" " if begin else "") + " ".join(words[begin:end])
            pieces.append(piece)
            last = seq == len(chunks) - 1
            chunk = TokenChunk(
                event_id=f"evt-{rng.getrandbits(96):024x}",
                created_at=times[end - 1],
                request_id=request.request_id,
                conversation_id=conversation_id,
                seq=seq,
                text=piece,
                token_ids=[rng.randrange(8000) for _ in range(end - begin)],
                finish_reason=finish if last else None,  # type: ignore[arg-type]
                usage=usage if last else None,
                worker_id=worker,
            )
            ev.append(self._event(TopicName.TOKENS, request.request_id, chunk, reply_partition))
        done = times[-1] + timedelta(milliseconds=rng.uniform(0.5, 3))
        if cancel_after is not None:
            reason = "client_cancelled" if finish == "cancelled" else "content_filter"
            cancel = CancelRequest(
                event_id=f"evt-{rng.getrandbits(96):024x}",
                created_at=times[-1] + timedelta(microseconds=300),
                request_id=request.request_id,
                reason=reason,
            )
            ev.append(self._event(TopicName.CONTROL, request.request_id, cancel))
        gaps = [(b - a).total_seconds() * 1000 for a, b in pairwise(times)]
        timings = Timings(
            queue_wait_ms=round(queue_wait, 3),
            time_to_first_token_ms=round(ttft, 3),
            inter_token_mean_ms=round(sum(gaps) / len(gaps), 3) if gaps else None,
            inter_token_p99_ms=round(sorted(gaps)[min(len(gaps) - 1, int(0.99 * len(gaps)))], 3)
            if gaps
            else None,
            total_ms=round((done - picked).total_seconds() * 1000, 3),
        )
        completion = Completion(
            event_id=f"evt-{rng.getrandbits(96):024x}",
            created_at=done,
            request_id=request.request_id,
            conversation_id=conversation_id,
            user_id=user,
            model=model.name,
            text="".join(pieces),
            finish_reason=finish,  # type: ignore[arg-type]
            usage=usage,
            timings=timings,
            worker_id=worker,
        )
        ev.append(self._event(TopicName.COMPLETIONS, conversation_id, completion))
        # --- output moderation judged the answer while it streamed
        cut = finish == "content_filter"
        out_verdict = self._verdict(
            rng,
            request,
            "output",
            times[-1] if cut else done + timedelta(milliseconds=5),
            cut,
            "stop_generation" if cut else "allow",
            [],
        )
        ev.append(self._event(TopicName.MODERATION, conversation_id, out_verdict))
        rating = self._rating(request, completion, refused)
        if rating is not None:
            ev.append(self._event(TopicName.FEEDBACK, conversation_id, rating))
        out.ended_at = done
        out.stop_conversation = finish == "cancelled" and rng.random() < 0.7
        return out

    @staticmethod
    def _rating(request: ChatRequest, completion: Completion, refused: bool) -> Rating | None:
        """Some answers are rated (their own stream of chances: the rest of the simulation
        draws the same numbers with or without ratings); refusals and cut answers less well."""
        chance = random.Random(f"rating:{request.request_id}")  # noqa: S311 - simulation
        if chance.random() >= P_RATING:
            return None
        p_up = P_UP.get(completion.model, 0.65) * (0.3 if refused else 1.0)
        if completion.finish_reason in ("cancelled", "content_filter", "length"):
            p_up *= 0.5
        up = chance.random() < p_up
        category: RatingCategory | None
        if refused and not up:
            category = "refused"
        else:
            category = chance.choice(("helpful", "accurate", None)) if up else None
            if not up:
                category = chance.choice(DOWN_CATEGORIES)
        return Rating(
            event_id=f"evt-{chance.getrandbits(96):024x}",
            created_at=completion.created_at + timedelta(seconds=chance.uniform(3, 120)),
            request_id=request.request_id,
            conversation_id=request.conversation_id,
            user_id=request.user_id,
            model=completion.model,
            rating="up" if up else "down",
            category=category,
            comment=chance.choice(RATING_COMMENTS),
        )


def conversations_for_events(profile: Profile, events: int, pilot: int = 300) -> int:
    """How many conversations of ``profile`` make about ``events`` events (from a pilot run)."""
    from dataclasses import replace

    sim = Simulator(replace(profile, conversations=pilot))
    mean = sum(len(sim.conversation(i)) for i in range(pilot)) / pilot
    return max(1, round(events / mean))
