"""One gateway's HTTP client: auth, retries with backoff, the overall deadline, size limits, redaction.

httpx does the HTTP (pooling, timeouts, multipart, redirects that drop Authorization across origins); this adds
only what docs/reference/hosted_apis.md D.4 asks on top: which failures are retried and how long to wait, one deadline over everything, every
failure as an `UpstreamError`, and the key kept out of logs, errors and bodies passed back.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from dataclasses import dataclass
from typing import Any

import httpx

from .config import GatewayConfig
from .errors import UpstreamError, UpstreamTimeout, UpstreamUnreachable, error_in_success

log = logging.getLogger(__name__)

REDACTED = "<redacted>"
# Retried whatever the method: the gateway says it did not do the work (or asks us to come back).
RETRY_STATUSES = frozenset({408, 429, 502, 503, 504})
# Methods safe to repeat after a read timeout or a 500; POSTs (billed generations) only with retry_post_on_500.
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
# D.4 item 5: Stability's rate limit times a caller out for 60 s and sends no Retry-After.
RATE_LIMIT_WAIT = {"rate_limit_exceeded": 60.0}
USER_AGENT = "sdgate-relay/0.1"


class Deadline:
    """The time one relayed request may take in all (attempts, backoff waits, ModelsLab polling)."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


@dataclass
class Answer:
    """A gateway's answer, read to the end (bounded by the gateway's max_response_mb)."""

    status_code: int
    headers: httpx.Headers
    content: bytes
    url: str
    elapsed: float
    attempts: int

    def json(self) -> Any:
        import json

        return json.loads(self.content)


def parse_retry_after(value: str | None) -> float | None:
    """A Retry-After header: seconds, or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class GatewayClient:
    def __init__(self, gateway: GatewayConfig, *, transport: httpx.AsyncBaseTransport | None = None):
        self.gateway = gateway
        self._http = httpx.AsyncClient(
            headers={"User-Agent": USER_AGENT, **gateway.headers},
            timeout=httpx.Timeout(gateway.read_timeout, connect=gateway.connect_timeout),
            limits=httpx.Limits(max_connections=gateway.max_concurrency * 2, max_keepalive_connections=gateway.max_concurrency * 2),
            follow_redirects=True,  # httpx drops Authorization when a redirect leaves the origin
            transport=transport,
        )
        # httpx sends `Accept: */*` unless told otherwise; a forwarded request without Accept must stay without
        # (Stability reads a missing Accept as its own default)
        del self._http.headers["Accept"]
        self.last: tuple[str, float] | None = None  # the last request's outcome, for the UI's gateway table

    async def aclose(self) -> None:
        await self._http.aclose()

    # ------------------------------------------------------------------------------------------ secrets

    def redact(self, text: str) -> str:
        key = self.gateway.key
        if key and text:
            text = text.replace(key, REDACTED)
            if ":" in key:  # basic "user:pass": the password alone too
                password = key.split(":", 1)[1]
                if len(password) >= 4:
                    text = text.replace(password, REDACTED)
        return text

    def redact_bytes(self, content: bytes) -> bytes:
        """For bodies passed back to callers: an upstream that echoes the key ("invalid key sk-...") must not
        hand it to our caller."""
        key = self.gateway.key
        if key and content and key.encode() in content:
            content = content.replace(key.encode(), REDACTED.encode())
        return content

    def _owns(self, url: str) -> bool:
        """Our key goes only to the gateway's own origin, never to a CDN URL an answer pointed at."""
        return url.startswith(self.gateway.origin + "/") or url == self.gateway.origin

    def _with_auth(self, url: str, headers: dict[str, str], json_body: Any, key_in_body: bool):
        gw, auth = self.gateway, None
        if isinstance(json_body, dict) and key_in_body:
            json_body = {k: v for k, v in json_body.items() if k != "key"}  # never the caller's key
            if gw.auth in ("body_key", "both") and self._owns(url):
                json_body["key"] = gw.key
        if not self._owns(url) or gw.auth in ("none", "body_key"):
            return headers, json_body, auth
        if gw.auth in ("bearer", "both"):
            headers["Authorization"] = f"Bearer {gw.key}"
        elif gw.auth == "raw":
            headers["Authorization"] = gw.key
        elif gw.auth == "basic":
            user, _, password = gw.key.partition(":")
            auth = httpx.BasicAuth(user, password)
        return headers, json_body, auth

    # ------------------------------------------------------------------------------------------ sending

    async def request(self, method: str, path_or_url: str, *, deadline: Deadline, json: Any = None,
                      data: Any = None, files: Any = None, content: bytes | None = None,
                      headers: dict[str, str] | None = None, params: Any = None,
                      key_in_body: bool = False) -> Answer:
        """Send with retries until a 2xx answer (returned) or a final failure (raised as UpstreamError).

        `path_or_url`: an upstream path (`/v1/generation/...`, joined to base_url + path_prefix) or an absolute
        URL (a ModelsLab fetch_result or output link). `key_in_body`: the JSON body has ModelsLab's `key` slot.
        """
        gw = self.gateway
        method = method.upper()
        url = path_or_url if path_or_url.startswith(("http://", "https://")) else gw.url(path_or_url)
        headers = {k: v for k, v in (headers or {}).items() if k.lower() != "authorization"}  # never the caller's
        headers, json, auth = self._with_auth(url, headers, json, key_in_body)
        repeatable = method in IDEMPOTENT or gw.retry_post_on_500
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            left = deadline.left()
            if left <= 0:
                raise UpstreamTimeout(gw.name, f"no answer within the deadline of {deadline.seconds:g} s")
            retry_after = None
            try:
                # the per-call timeouts are httpx's; wait_for keeps one attempt inside the overall deadline
                answer = await asyncio.wait_for(
                    self._send(method, url, json=json, data=data, files=files, content=content, headers=headers,
                               params=params, auth=auth, attempt=attempt, started=started),
                    timeout=left,
                )
            except asyncio.TimeoutError:
                error: UpstreamError = UpstreamTimeout(
                    gw.name, f"no answer within the deadline of {deadline.seconds:g} s", retryable=False)
            except (httpx.ConnectError, httpx.ConnectTimeout) as e:
                # nothing reached the gateway: always safe to try again
                error = UpstreamUnreachable(gw.name, f"cannot connect to {gw.origin} ({type(e).__name__}: "
                                            f"{self.redact(str(e)) or 'no detail'})", retryable=True)
            except httpx.TimeoutException as e:
                error = UpstreamTimeout(gw.name, f"no answer within {gw.read_timeout:g} s ({type(e).__name__})",
                                        retryable=repeatable)
            except httpx.TransportError as e:  # the connection broke mid-answer
                error = UpstreamUnreachable(gw.name, f"connection failed ({type(e).__name__}: "
                                            f"{self.redact(str(e)) or 'no detail'})", retryable=repeatable)
            else:
                status = answer.status_code
                failed_ok = error_in_success(answer.content) if 200 <= status < 300 else None
                if 200 <= status < 300 and failed_ok is None:
                    self.last = ("ok", time.time())
                    return answer
                if failed_ok is not None:
                    retryable = failed_ok.retry_after is not None
                    failed_ok.message = self.redact(failed_ok.message)
                else:
                    retryable = status in RETRY_STATUSES or (status == 500 and repeatable)
                headers_out = {k.lower(): self.redact(v) for k, v in answer.headers.items()}
                error = UpstreamError.from_response(gw.name, status, headers_out, self.redact_bytes(answer.content),
                                                    retryable=retryable, parsed=failed_ok)
                retry_after = parse_retry_after(answer.headers.get("retry-after"))
                if retry_after is None:
                    retry_after = error.retry_after
                if retry_after is None and error.provider_code in RATE_LIMIT_WAIT:
                    retry_after = RATE_LIMIT_WAIT[error.provider_code]
            if not error.retryable or attempt > gw.retries:
                if error.retryable and attempt > 1:
                    error.message += f" (after {attempt} attempts)"
                self.last = (error.message, time.time())
                raise error
            delay = retry_after if retry_after is not None else self._backoff(attempt)
            if delay >= deadline.left():
                error.message += f" (a retry in {delay:.1f} s would pass the deadline of {deadline.seconds:g} s)"
                self.last = (error.message, time.time())
                raise error
            log.warning("gateway %s: %s %s failed (%s); retry %d/%d in %.2f s", gw.name, method,
                        self._path(url), error.message, attempt, gw.retries, delay)
            await asyncio.sleep(delay)

    def _backoff(self, attempt: int) -> float:
        """Exponential, with jitter so that many clients retrying together spread out."""
        gw = self.gateway
        base = min(gw.max_backoff, gw.backoff * 2 ** (attempt - 1))
        return base * (0.5 + random.random() / 2)

    def _path(self, url: str) -> str:
        return self.redact(url.split("?", 1)[0])

    async def _send(self, method: str, url: str, *, attempt: int, started: float, **kw) -> Answer:
        limit = int(self.gateway.max_response_mb * 1024 * 1024)
        kw = {k: v for k, v in kw.items() if v is not None}
        async with self._http.stream(method, url, **kw) as response:
            declared = response.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > limit:
                raise UpstreamError(self.gateway.name, f"answer of {int(declared)} bytes is over the "
                                    f"{self.gateway.max_response_mb:g} MB limit")
            chunks, size = [], 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > limit:
                    raise UpstreamError(self.gateway.name, f"answer is over the {self.gateway.max_response_mb:g} MB limit")
                chunks.append(chunk)
        log.debug("gateway %s: %s %s -> %d (attempt %d)", self.gateway.name, method, self._path(url),
                  response.status_code, attempt)
        return Answer(response.status_code, response.headers, b"".join(chunks), str(response.url),
                      time.monotonic() - started, attempt)
