"""Token ids to text, incrementally: partial UTF-8 held back, stop sequences cut the answer."""

from __future__ import annotations

from collections.abc import Callable, Sequence

Decode = Callable[[Sequence[int]], str]


class TextStream:
    """Turns a growing list of token ids into released text.

    Text is released only when it is final: a trailing replacement character (an incomplete
    UTF-8 sequence of a byte-level tokenizer) waits for the next token, and a tail that a stop
    sequence could still complete waits until it cannot. ``stopped`` turns true once a stop
    sequence appeared; the text before it is all that is ever released.
    """

    def __init__(self, decode: Decode, stop: Sequence[str] = ()) -> None:
        self._decode = decode
        self._stop = [s for s in stop if s]
        self._ids: list[int] = []
        self._text = ""  # decoded so far (complete characters only)
        self._released = 0  # characters of _text already handed out
        self.stopped = False

    @property
    def token_ids(self) -> list[int]:
        return self._ids

    @property
    def text(self) -> str:
        """Everything released so far."""
        return self._text[: self._released]

    def resume(self, token_ids: Sequence[int], released_text: str) -> None:
        """Continue a stream another worker began: ``released_text`` is what the client has."""
        self._ids = list(token_ids)
        self._text = released_text
        self._released = len(released_text)

    def push(self, token_ids: Sequence[int]) -> str:
        """Add tokens; returns the newly released text (possibly empty)."""
        if self.stopped or not token_ids:
            return ""
        self._ids.extend(token_ids)
        decoded = self._decode(self._ids)
        if decoded.endswith("\ufffd"):
            return ""  # an incomplete multi-byte character: wait for its remaining bytes
        self._text = decoded
        for stop in self._stop:
            at = self._text.find(stop, max(0, self._released - len(stop) + 1))
            if at != -1:
                self._text = self._text[:at]
                self.stopped = True
        limit = len(self._text) if self.stopped else len(self._text) - self._held_tail()
        return self._release(max(self._released, limit))

    def _held_tail(self) -> int:
        """Length of the longest tail of the text that a stop sequence could still complete."""
        longest = 0
        for stop in self._stop:
            for size in range(min(len(stop) - 1, len(self._text)), longest, -1):
                if self._text.endswith(stop[:size]):
                    longest = size
                    break
        return longest

    def finish(self) -> str:
        """The generation ended: release whatever is held back."""
        if not self.stopped:
            decoded = self._decode(self._ids)
            self._text = decoded.rstrip("\ufffd") if decoded.endswith("\ufffd") else decoded
        return self._release(len(self._text))

    def _release(self, limit: int) -> str:
        new = self._text[self._released : limit]
        self._released = max(self._released, limit)
        return new
