"""The decode thread of the llama.cpp engine: many sequences decoded together through llama.cpp's
batch API (``llama_batch`` + ``llama_decode``), one KV cache shared by every sequence.

Each step builds one batch: the last sampled token of every generating sequence (one logit row
each) and, in the room left under ``step_tokens``, the next chunk of prompt of sequences still
being prefilled (a logit row only for a prompt's last token). Every running stream waits for the
step to end: a smaller ``step_tokens`` shortens the stall that new or resumed prompts put on the
running streams, and makes those prompts wait longer for their first token (each step also pays
for every decode; ``python -m benchmarks.engine_step`` measures both). One
``llama_decode`` runs it (ctypes releases the GIL, so the asyncio loop keeps running), then each
row is sampled here with the request's own settings: argmax for greedy, else temperature and
top-p with the request's own seeded generator. A seed reproduces a request run the same way
(alone, say); it cannot promise the same tokens in any batch, because llama.cpp's CPU kernels
are not batch-invariant: a prompt prefilled beside others takes another matmul path (measured
here: logits moved by up to 0.75), so a near-tie can break the other way.

A request is admitted only when its prompt plus ``max_new_tokens`` fits in the cells of the cache
not reserved by the others; until then it waits, in order. A *resumed* stream (taken over from a
worker that died or handed it over: ``GenerationRequest.resumed``) goes ahead of fresh requests,
in the line and in each step's prefill: its client is mid-answer and sees every second of its
prefill as a stall, a fresh request's client only a later first token.

**Prefix reuse.** A sequence that ends (finished, cancelled, handed over to another worker) is
*parked*: its cells stay in the cache under its sequence id, with the tokens they hold. A new
request whose prompt starts with the same tokens (at least :data:`MIN_REUSE`) takes that sequence
over and prefills only the rest: a stream resumed on the worker that handed it over (a rebalance
gives its partition back) costs one step instead of its whole prompt and answer again, and a
conversation's next turn skips the turns before it. Parked sequences give way, least recently
parked first, whenever a request needs their sequence id or their cells.

**Shared prefixes.** When a *running* sequence shares more of a new prompt than any parked one
(the same system prompt, the same instructions, the same conversation so far), the new sequence
gets those cells too: in the unified cache ``llama_memory_seq_cp`` tags the cells with a second
sequence id, no copy and no compute, and the new sequence prefills only what differs. Its
reservation still counts the shared cells (they outlive whichever sequence ends first).

Everything here runs on the loop's own thread except :meth:`submit`, :meth:`cancel`,
:meth:`set_threads` and :meth:`stop`, which only touch a lock-free queue.
"""

from __future__ import annotations

import ctypes
import queue
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from inference_consumers.engine.base import EngineFinishReason, GenerationRequest

__all__ = ["BatchLoop", "LoopOutput", "sample_token"]

IDLE_WAIT_S = 0.05
MIN_REUSE = 8  # shared leading tokens worth taking a parked sequence over for
MIN_PREFILL_PER_STEP = 32  # prompt tokens a step takes even when decodes fill its budget


@dataclass(frozen=True, slots=True)
class LoopOutput:
    """New tokens of one request from one step; ``finish_reason`` set on its last output."""

    request_id: str
    token_ids: list[int]
    finish_reason: EngineFinishReason | None = None
    error: str | None = None


@dataclass(eq=False, slots=True)
class _Sequence:
    request: GenerationRequest
    seq_id: int
    prompt: list[int]
    rng: np.random.Generator
    prefilled: int = 0  # prompt tokens already in the cache
    generated: int = 0
    last_token: int = -1
    reserved: int = 0
    answer: list[int] = field(default_factory=list)  # the tokens sampled so far

    @property
    def cached(self) -> list[int]:
        """The tokens whose cells are in the cache: the prompt prefilled so far, then every
        sampled token but the last (it goes into the cache on the next step)."""
        return self.prompt[: self.prefilled] + self.answer[:-1]

    @property
    def position(self) -> int:
        return self.prefilled + self.generated


# The top-p nucleus is looked for first among the tokens at least this likely relative to the
# most likely one: every token outside that set is less likely than every token in it, so when
# the set reaches top_p the nucleus lies inside it (exactly), with no sort of the vocabulary.
NUCLEUS_RELATIVE_FLOOR = 1e-4


def _shared_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens ``a`` and ``b`` have in common."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def sample_token(
    logits: np.ndarray, temperature: float, top_p: float, rng: np.random.Generator
) -> int:
    """Next token from one row of logits: argmax when ``temperature <= 0``, else temperature and
    nucleus (top-p) sampling.

    A full sort of a 49k vocabulary per token (2.7 ms) cost more than the model's step at 32
    streams; the nucleus is found among the tokens above :data:`NUCLEUS_RELATIVE_FLOOR` first.
    """
    if temperature <= 0 or top_p <= 0:
        return int(np.argmax(logits))
    scaled = np.asarray(logits, dtype=np.float32) / np.float32(temperature)
    weights = np.exp(scaled - scaled.max())
    total = float(weights.sum(dtype=np.float64))
    if top_p >= 1.0:
        return int(rng.choice(weights.shape[0], p=weights / total))
    candidates = np.flatnonzero(weights >= NUCLEUS_RELATIVE_FLOOR)
    if float(weights[candidates].sum(dtype=np.float64)) / total >= top_p:
        return _draw_nucleus(candidates, weights[candidates] / total, top_p, rng)
    return _draw_nucleus(np.arange(weights.shape[0]), weights / total, top_p, rng)


def _draw_nucleus(
    ids: np.ndarray, probs: np.ndarray, top_p: float, rng: np.random.Generator
) -> int:
    """Draw from the smallest most-likely set of ``ids`` whose probability reaches ``top_p``."""
    order = np.argsort(probs)[::-1]
    keep = int(np.searchsorted(np.cumsum(probs[order]), top_p)) + 1
    keep = min(keep, order.shape[0])
    kept_ids, kept = ids[order[:keep]], probs[order[:keep]].astype(np.float64)
    # Draw in token-id order, not probability order: then a near-tie that float noise flips
    # moves the draw's boundaries by that noise only.
    by_id = np.argsort(kept_ids)
    kept_ids, kept = kept_ids[by_id], kept[by_id]
    return int(kept_ids[rng.choice(keep, p=kept / kept.sum())])


class BatchLoop:
    """Runs on its own thread until :meth:`stop`; hands each step's outputs to ``deliver``."""

    def __init__(
        self,
        llama: Any,
        ctx: Any,
        *,
        n_vocab: int,
        n_batch: int,
        step_tokens: int | None = None,
        share_prefixes: bool = True,
        n_ctx: int,
        max_batch: int,
        eos_token_ids: frozenset[int],
        deliver: Callable[[list[LoopOutput]], None],
    ) -> None:
        self._llama = llama  # the llama_cpp module (its low-level functions)
        self._ctx = ctx
        self._memory = llama.llama_get_memory(ctx)
        self._n_vocab = n_vocab
        self._n_batch = n_batch
        self._step_tokens = min(step_tokens or n_batch, n_batch)
        self._share_prefixes = share_prefixes
        self._n_ctx = n_ctx
        self._eos = eos_token_ids
        self._deliver = deliver
        self._inbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._waiting: deque[GenerationRequest] = deque()
        self._running: dict[str, _Sequence] = {}
        self._free_seq_ids = list(range(max_batch))
        self._reserved = 0
        self._parked: OrderedDict[int, list[int]] = OrderedDict()  # seq id -> tokens cached
        self._parked_cells = 0
        self.prompt_tokens_reused = 0  # prompt tokens found in the cache (prefix reuse)
        self.prompt_tokens_computed = 0  # prompt tokens prefilled
        self._batch = llama.llama_batch_init(n_batch, 0, 1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="llama-batch-loop", daemon=True)
        self.fatal_error: str | None = None

    # --- called from other threads ------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def submit(self, request: GenerationRequest) -> None:
        self._inbox.put(("add", request))

    def cancel(self, request_id: str) -> None:
        self._inbox.put(("cancel", request_id))

    def set_threads(self, threads: int) -> threading.Event:
        """Decode on ``threads`` threads from the next step (applied on the loop's thread);
        the event is set once they are."""
        applied = threading.Event()
        self._inbox.put(("threads", (threads, applied)))
        return applied

    def stop(self, timeout: float) -> None:
        self._stop.set()
        self._inbox.put(("wake", None))
        if self._thread.is_alive():
            self._thread.join(timeout)
        if not self._thread.is_alive():
            self._llama.llama_batch_free(self._batch)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # --- the loop's thread ----------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._read_inbox(block=not self._running and not self._waiting)
                self._admit()
                if self._running:
                    self._step()
        except Exception as exc:  # noqa: BLE001 - end every stream with the reason, then exit
            self.fatal_error = f"{type(exc).__name__}: {exc}"
            self._deliver(
                [
                    LoopOutput(rid, [], "error", self.fatal_error)
                    for rid in [*self._running, *(r.request_id for r in self._waiting)]
                ]
            )
            self._running.clear()
            self._waiting.clear()

    def _read_inbox(self, *, block: bool) -> None:
        while True:
            try:
                kind, item = (
                    self._inbox.get(timeout=IDLE_WAIT_S) if block else self._inbox.get_nowait()
                )
            except queue.Empty:
                return
            block = False
            if kind == "add":
                self._queue(item)
            elif kind == "cancel":
                self._cancel(item)
            elif kind == "threads":
                threads, applied = item
                self._llama.llama_set_n_threads(self._ctx, threads, threads)
                applied.set()

    def _queue(self, request: GenerationRequest) -> None:
        """Wait in line: a resumed stream after the other resumed ones, ahead of fresh requests."""
        if not request.resumed:
            self._waiting.append(request)
            return
        ahead = next((i for i, r in enumerate(self._waiting) if not r.resumed), len(self._waiting))
        self._waiting.insert(ahead, request)

    def _cancel(self, request_id: str) -> None:
        sequence = self._running.get(request_id)
        if sequence is not None:
            self._release(sequence)
            return  # the engine has ended the stream already
        self._waiting = deque(r for r in self._waiting if r.request_id != request_id)

    def _admit(self) -> None:
        while self._waiting and (self._free_seq_ids or self._parked):
            request = self._waiting[0]
            prompt = [int(t) for t in request.prompt_ids]
            need = len(prompt) + request.max_new_tokens
            if need > self._n_ctx:  # the engine checks this; a guard against a hang
                self._waiting.popleft()
                reason = f"{need} tokens do not fit the {self._n_ctx}-token cache"
                self._deliver([LoopOutput(request.request_id, [], "error", reason)])
                continue
            reuse, shared = self._best_parked(prompt)
            source, from_running = self._best_running(prompt) if self._share_prefixes else (None, 0)
            if source is not None and from_running > shared:
                reuse = None  # a running sequence has more of it: share its cells instead
            else:
                source = None
            wanted = need - (len(self._parked[reuse]) if reuse is not None else 0)
            while self._cells_left() < wanted and self._evict(reuse):
                pass
            if self._cells_left() < wanted:
                return  # waits until running sequences free their cells
            self._waiting.popleft()
            if reuse is not None:
                seq_id, keep = reuse, self._take_over(reuse, shared, len(prompt))
            else:
                if not self._free_seq_ids:
                    self._evict(None)
                seq_id, keep = self._free_seq_ids.pop(), 0
                self._llama.llama_memory_seq_rm(self._memory, seq_id, -1, -1)
                if source is not None:
                    keep = self._share(source, seq_id, from_running, len(prompt))
            self.prompt_tokens_reused += keep
            self.prompt_tokens_computed += len(prompt) - keep
            self._reserved += need
            self._running[request.request_id] = _Sequence(
                request,
                seq_id,
                prompt,
                np.random.default_rng(request.seed),
                prefilled=keep,
                reserved=need,
            )

    def _cells_left(self) -> int:
        return self._n_ctx - self._reserved - self._parked_cells

    def _best_parked(self, prompt: list[int]) -> tuple[int | None, int]:
        """The parked sequence sharing the longest prefix with ``prompt`` (at least
        :data:`MIN_REUSE` tokens), and how many tokens it shares."""
        best, best_shared = None, MIN_REUSE - 1
        for seq_id, tokens in self._parked.items():
            shared = _shared_prefix(tokens, prompt)
            if shared > best_shared:
                best, best_shared = seq_id, shared
        return best, (best_shared if best is not None else 0)

    def _best_running(self, prompt: list[int]) -> tuple[int | None, int]:
        """The running sequence whose cached tokens share the longest prefix with ``prompt``
        (at least :data:`MIN_REUSE` tokens): its sequence id, and how many tokens it shares."""
        best, best_shared = None, MIN_REUSE - 1
        for sequence in self._running.values():
            shared = _shared_prefix(sequence.cached, prompt)
            if shared > best_shared:
                best, best_shared = sequence.seq_id, shared
        return best, (best_shared if best is not None else 0)

    def _share(self, source: int, seq_id: int, shared: int, prompt_len: int) -> int:
        """Give ``seq_id`` the cells of ``source``'s first ``shared`` tokens (the unified cache
        tags them, nothing is computed). Returns the prompt tokens kept (at least one is left
        to compute, for its logits)."""
        keep = min(shared, prompt_len - 1)
        self._llama.llama_memory_seq_cp(self._memory, source, seq_id, 0, keep)
        return keep

    def _take_over(self, seq_id: int, shared: int, prompt_len: int) -> int:
        """Unpark ``seq_id`` for a prompt sharing its first ``shared`` tokens: its cells past
        them are dropped. Returns the prompt tokens kept (at least one is left to compute: the
        last prompt token's logits give the first new token)."""
        tokens = self._parked.pop(seq_id)
        self._parked_cells -= len(tokens)
        keep = min(shared, prompt_len - 1)
        if not self._llama.llama_memory_seq_rm(self._memory, seq_id, keep, -1):
            self._llama.llama_memory_seq_rm(self._memory, seq_id, -1, -1)  # cannot cut: all
            keep = 0
        return keep

    def _evict(self, spare: int | None) -> bool:
        """Free the least recently parked sequence other than ``spare``; False: none left."""
        for seq_id in self._parked:
            if seq_id != spare:
                tokens = self._parked.pop(seq_id)
                self._parked_cells -= len(tokens)
                self._llama.llama_memory_seq_rm(self._memory, seq_id, -1, -1)
                self._free_seq_ids.append(seq_id)
                return True
        return False

    def _release(self, sequence: _Sequence) -> None:
        """The sequence ends: its slot and reservation are freed, its cells parked for reuse."""
        self._running.pop(sequence.request.request_id, None)
        self._reserved -= sequence.reserved
        cached = sequence.cached
        if len(cached) < MIN_REUSE:
            self._llama.llama_memory_seq_rm(self._memory, sequence.seq_id, -1, -1)
            self._free_seq_ids.append(sequence.seq_id)
            return
        self._parked[sequence.seq_id] = cached
        self._parked_cells += len(cached)

    def _step(self) -> None:
        batch, llama = self._batch, self._llama
        rows: list[tuple[_Sequence, int]] = []  # sequences sampled this step, and their row
        n = 0

        def add(token: int, pos: int, seq_id: int, logits: bool) -> None:
            nonlocal n
            batch.token[n] = token
            batch.pos[n] = pos
            batch.n_seq_id[n] = 1
            batch.seq_id[n][0] = seq_id
            batch.logits[n] = logits
            n += 1

        decoding = [s for s in self._running.values() if s.prefilled == len(s.prompt)]
        for sequence in decoding:
            rows.append((sequence, n))
            add(sequence.last_token, sequence.position - 1, sequence.seq_id, True)
        budget = max(self._step_tokens, n + MIN_PREFILL_PER_STEP)  # prompts always progress
        # resumed streams' prompts first (their clients see a stall), then in order of arrival
        for sequence in sorted(self._running.values(), key=lambda s: not s.request.resumed):
            room = min(budget, self._n_batch) - n
            if room <= 0:
                break
            left = len(sequence.prompt) - sequence.prefilled
            if left <= 0:
                continue
            take = min(left, room)
            start = sequence.prefilled
            for offset in range(take):
                last = start + offset == len(sequence.prompt) - 1
                add(sequence.prompt[start + offset], start + offset, sequence.seq_id, last)
                if last:
                    rows.append((sequence, n - 1))
            sequence.prefilled += take
        batch.n_tokens = n
        status = llama.llama_decode(self._ctx, batch)
        if status != 0:
            raise RuntimeError(f"llama_decode returned {status} for a batch of {n} tokens")

        outputs: list[LoopOutput] = []
        for sequence, row in rows:
            pointer = llama.llama_get_logits_ith(self._ctx, row)
            logits = np.ctypeslib.as_array(
                ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float)), shape=(self._n_vocab,)
            )
            request = sequence.request
            token = sample_token(logits, request.temperature, request.top_p, sequence.rng)
            sequence.generated += 1
            sequence.last_token = token
            sequence.answer.append(token)
            reason: EngineFinishReason | None = None
            if token in self._eos:
                reason = "stop"
            elif sequence.generated >= request.max_new_tokens:
                reason = "length"
            outputs.append(LoopOutput(request.request_id, [token], reason))
            if reason is not None:
                self._release(sequence)
        if outputs:
            self._deliver(outputs)
