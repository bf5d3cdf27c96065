"""What v2beta checks besides the fields: the per-caller rate limit (docs/reference/hosted_apis.md §B.4: more
than N calls in a window and the caller is timed out), the blocked-terms moderation and the English-only rule."""

from __future__ import annotations

import math
import re
import threading
import unicodedata

from limits import RateLimitItemPerSecond
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from .errors import LANGUAGE_MESSAGE, MODERATION_MESSAGE, V2Error


def _whole_seconds(seconds: float) -> int:
    return max(1, math.ceil(seconds))


class RateLimiter:
    """Upstream's rule: more than `limit` requests in `window` seconds and the caller is refused for `timeout`
    seconds, then starts afresh. Two moving windows of the `limits` library: the calls (`limit` per `window`)
    and the time-out (one per `timeout`, taken when a caller passes the limit). `limit` 0: no limit."""

    def __init__(self, limit: int, window: float, timeout: float):
        self.limit = int(limit)
        self._limiter = MovingWindowRateLimiter(MemoryStorage())  # forgets idle callers by itself
        self._calls = RateLimitItemPerSecond(max(1, self.limit), _whole_seconds(window), namespace="v2beta-calls")
        self._timed_out = RateLimitItemPerSecond(1, _whole_seconds(timeout), namespace="v2beta-timeout")
        self._lock = threading.Lock()  # one caller's check-then-hit is one step

    def allow(self, caller: str) -> bool:
        if self.limit <= 0:
            return True
        with self._lock:
            if not self._limiter.test(self._timed_out, caller):
                return False
            if self._limiter.hit(self._calls, caller):
                return True
            self._limiter.hit(self._timed_out, caller)
            self._limiter.clear(self._calls, caller)  # after the time-out the caller starts with a fresh window
            return False


class Moderation:
    """The prompt rules of `[stability_v2]`: blocked terms (403 content_moderation) and, when `english_only`,
    letters of non-Latin scripts (422 invalid_language), as upstream refuses them."""

    def __init__(self, blocked_terms: list[str], english_only: bool):
        self._blocked = [re.compile(rf"\b{re.escape(t.strip())}\b", re.IGNORECASE) for t in blocked_terms if t.strip()]
        self.english_only = english_only

    def check(self, prompt: str, negative_prompt: str) -> None:
        if any(p.search(prompt) for p in self._blocked):
            raise V2Error(403, "content_moderation", [MODERATION_MESSAGE])
        if self.english_only and _non_latin_letters(prompt + " " + negative_prompt):
            raise V2Error(422, "invalid_language", [LANGUAGE_MESSAGE])


def _non_latin_letters(text: str) -> bool:
    for ch in text:
        if ch.isalpha() and not unicodedata.name(ch, "").startswith("LATIN"):
            return True
    return False
