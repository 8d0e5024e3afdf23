"""One resilient JSON-over-HTTP client for the API backends (httpx, async, pooled).

- Requests run concurrently, at most `concurrency` in flight and at most
  `requests_per_second` started per second (0: no cap), over one pooled connection set.
- 429, 5xx, timeouts, connection errors and malformed answers are retried with
  exponential backoff and jitter (`backoff` * 2^attempt, at most `max_backoff` s), honouring
  a Retry-After header up to that cap, up to `max_retries` times; other 4xx answers are final.
- A request that finally fails becomes a `Failure` with its reason, never an exception that
  loses the other answers. Reasons and logs never hold request headers (the API key).
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

from .errors import DetoxkitError

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Failure:
    reason: str


class _Retry(Exception):
    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.reason, self.retry_after = reason, retry_after


class _Final(Exception):
    pass


@dataclass
class RetryPolicy:
    concurrency: int = 8
    requests_per_second: float = 0.0  # 0: no cap
    timeout: float = 60.0  # seconds per request
    max_retries: int = 5
    backoff: float = 1.0
    max_backoff: float = 32.0

    def __post_init__(self):
        if self.concurrency < 1 or self.requests_per_second < 0 or self.timeout <= 0 or self.max_retries < 0:
            raise DetoxkitError("API settings: concurrency >= 1, requests per second >= 0, "
                                "timeout > 0 and retries >= 0")


@dataclass
class HTTPStats:
    requests: int = 0
    retries: int = 0
    failed: int = 0
    ok: int = 0
    seconds: float = 0.0  # wall time spent in post_many
    by_reason: dict[str, int] = field(default_factory=dict)


def run_sync(coro):
    """Run a coroutine to completion, also from inside a running loop (a notebook)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: box.setdefault("r", asyncio.run(coro)))
    thread.start()
    thread.join()
    return box["r"]


def retry_after_seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


class RetryingClient:
    def __init__(self, base_url: str, headers: Callable[[], dict[str, str]],
                 policy: RetryPolicy | None = None, name: str = "api"):
        self.base_url = base_url.rstrip("/")
        self.headers = headers  # called per request: a key rotated in the environment is picked up
        self.policy = policy or RetryPolicy()
        self.name = name
        self.stats = HTTPStats()
        self._next_slot = 0.0
        self._slot_lock = threading.Lock()

    def post_many(self, path: str, payloads: list[dict], parse: Callable[[dict], T]) -> list[T | Failure]:
        """POST each payload to `path`; each answer through `parse` (which raises KeyError,
        ValueError or TypeError on a malformed answer), in input order."""
        t0 = time.monotonic()
        try:
            return run_sync(self._post_all(path, payloads, parse))
        finally:
            self.stats.seconds += time.monotonic() - t0

    async def _post_all(self, path, payloads, parse):
        import httpx

        p = self.policy
        limits = httpx.Limits(max_connections=p.concurrency, max_keepalive_connections=p.concurrency)
        sem = asyncio.Semaphore(p.concurrency)
        async with httpx.AsyncClient(base_url=self.base_url, limits=limits,
                                     timeout=httpx.Timeout(p.timeout)) as client:
            return await asyncio.gather(*(self._post(client, path, x, parse, sem) for x in payloads))

    async def _slot(self) -> None:
        rate = self.policy.requests_per_second
        if not rate:
            return
        with self._slot_lock:
            now = time.monotonic()
            start = max(now, self._next_slot)
            self._next_slot = start + 1.0 / rate
        if start > now:
            await asyncio.sleep(start - now)

    async def _post(self, client, path: str, payload: dict, parse, sem) -> Any:
        p = self.policy
        reason = "no attempt"
        for attempt in range(p.max_retries + 1):
            async with sem:
                await self._slot()
                self.stats.requests += 1
                try:
                    result = await self._once(client, path, payload, parse)
                    self.stats.ok += 1
                    return result
                except _Final as exc:
                    reason = str(exc)
                    break
                except _Retry as exc:
                    reason = exc.reason
                    if attempt == p.max_retries:
                        break
                    delay = min(p.max_backoff, p.backoff * (2 ** attempt)) * (1 + 0.25 * random.random())
                    if exc.retry_after is not None:
                        delay = min(p.max_backoff, max(delay, exc.retry_after))
                    self.stats.retries += 1
                    log.info("%s: %s; retry %d/%d in %.2f s", self.name, reason, attempt + 1,
                             p.max_retries, delay)
            await asyncio.sleep(delay)
        self.stats.failed += 1
        self.stats.by_reason[reason] = self.stats.by_reason.get(reason, 0) + 1
        log.warning("%s: request failed: %s", self.name, reason)
        return Failure(reason)

    def _scrub(self, text: str) -> str:
        """A server may echo the key back in an error body: never pass it on."""
        for value in self.headers().values():
            for secret in {value, value.removeprefix("Bearer ")}:
                if len(secret) >= 8:
                    text = text.replace(secret, "***")
        return text

    async def _once(self, client, path: str, payload: dict, parse):
        import httpx

        try:
            resp = await client.post(path, json=payload, headers=self.headers())
        except httpx.TimeoutException:
            raise _Retry(f"timeout after {self.policy.timeout:g} s") from None
        except httpx.TransportError as exc:
            raise _Retry(f"connection error ({type(exc).__name__})") from None
        if resp.status_code == 429 or resp.status_code >= 500:
            raise _Retry(f"HTTP {resp.status_code}", retry_after_seconds(resp.headers.get("Retry-After")))
        if resp.status_code >= 400:
            raise _Final(self._scrub(f"HTTP {resp.status_code}: {resp.text[:200]}"))
        try:
            return parse(resp.json())
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise _Retry(f"malformed answer ({type(exc).__name__})") from None
