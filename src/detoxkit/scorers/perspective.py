"""Perspective API client (network; the API is being retired at the end of 2026).

- The key comes from the environment (``PERSPECTIVE_API_KEY``), is read at
  request time, sent in the ``X-Goog-Api-Key`` header (never in a URL), and
  never logged, stored in the cache, or recorded with scores.
- Requests run concurrently on asyncio (stdlib HTTP in worker threads), capped
  at ``qps`` requests per second across the whole process lifetime of the
  scorer (Perspective's default quota is 1 QPS) and ``concurrency`` in flight.
- 429, 5xx, timeouts, connection errors and malformed answers are retried with
  exponential backoff (``backoff`` * 2^attempt, jittered, at most
  ``max_backoff`` s; a Retry-After header is honoured up to that cap), up to
  ``max_retries`` times. Other 4xx answers are final. A text whose request
  finally fails scores NaN and is counted in ``stats["failed"]``.
- Successful answers go to a persistent sqlite cache keyed by the SHA-256 of
  (text, requested attributes, language, API version); the text itself is not
  stored.
- ``base_url`` (or ``PERSPECTIVE_API_URL``) points the client elsewhere, e.g. at
  a test server.

Perspective rejects empty comments, so an empty text scores NaN (failed).
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import logging
import math
import os
import random
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import DetoxkitError
from ..paths import cache_dir
from .base import Scorer

log = logging.getLogger(__name__)

DEFAULT_URL = "https://commentanalyzer.googleapis.com/v1alpha1"
API_VERSION = "v1alpha1"
KEY_ENV = "PERSPECTIVE_API_KEY"
URL_ENV = "PERSPECTIVE_API_URL"
# Production attributes, "toxicity" first (RTP files also carry sexually_explicit and flirtation).
DEFAULT_ATTRIBUTES = ("toxicity", "severe_toxicity", "identity_attack", "insult", "profanity", "threat")
KNOWN_ATTRIBUTES = DEFAULT_ATTRIBUTES + ("sexually_explicit", "flirtation")
# Languages Perspective's TOXICITY model supports.
LANGUAGES = ("ar", "zh", "cs", "nl", "en", "fr", "de", "hi", "hi-Latn", "id", "it", "ja", "ko", "pl",
             "pt", "ru", "es", "sv")


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.retry_after = retry_after


class _Final(Exception):
    pass


class ScoreCache:
    """sqlite cache: key (hash of text, attributes, language, API version) -> scores JSON."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        with self._connect() as db:
            db.execute("CREATE TABLE IF NOT EXISTS scores (key TEXT PRIMARY KEY, scores TEXT NOT NULL, "
                       "created REAL NOT NULL)")

    def _connect(self):
        return sqlite3.connect(self.path, timeout=30)

    @staticmethod
    def key(text: str, attributes, language: str | None, api_version: str) -> str:
        blob = json.dumps([text, sorted(attributes), language or "auto", api_version], ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def get_many(self, keys: list[str]) -> dict[str, dict]:
        out = {}
        with self._lock, self._connect() as db:
            for start in range(0, len(keys), 500):
                chunk = keys[start:start + 500]
                marks = ",".join("?" * len(chunk))
                for k, v in db.execute(f"SELECT key, scores FROM scores WHERE key IN ({marks})", chunk):
                    out[k] = json.loads(v)
        return out

    def put_many(self, items: dict[str, dict]) -> None:
        if not items:
            return
        now = time.time()
        with self._lock, self._connect() as db:
            db.executemany("INSERT OR REPLACE INTO scores VALUES (?, ?, ?)",
                           [(k, json.dumps(v), now) for k, v in items.items()])


class PerspectiveScorer(Scorer):
    name = "perspective"
    attributes = DEFAULT_ATTRIBUTES
    languages = LANGUAGES

    def __init__(self, device: str = "cpu", batch_size: int = 64, attributes=None, language: str | None = "en",
                 qps: float = 1.0, concurrency: int = 8, max_retries: int = 5, backoff: float = 1.0,
                 max_backoff: float = 32.0, timeout: float = 30.0, base_url: str | None = None,
                 cache: bool | str = True, cache_path: str | None = None, api_version: str = API_VERSION):
        super().__init__(device, batch_size)
        if attributes:
            attrs = [a.strip().lower() for a in attributes.split(",")] if isinstance(attributes, str) \
                else [str(a).lower() for a in attributes]
            unknown = [a for a in attrs if a not in KNOWN_ATTRIBUTES]
            if unknown:
                raise DetoxkitError(f"unknown Perspective attributes {unknown}; known: {', '.join(KNOWN_ATTRIBUTES)}")
            if "toxicity" in attrs:
                attrs.remove("toxicity")
            self.attributes = ("toxicity", *attrs)
        self.language = language or None
        self.qps = float(qps)
        if not self.qps > 0:
            raise DetoxkitError("qps must be > 0")
        self.concurrency = max(1, int(concurrency))
        self.max_retries = max(0, int(max_retries))
        self.backoff, self.max_backoff, self.timeout = float(backoff), float(max_backoff), float(timeout)
        self.base_url = (base_url or os.environ.get(URL_ENV) or DEFAULT_URL).rstrip("/")
        self.api_version = str(api_version)
        use_cache = cache not in (False, "false", "False", "0", "no")
        self.cache = ScoreCache(Path(cache_path) if cache_path else cache_dir("perspective") / "cache.sqlite") \
            if use_cache else None
        if not os.environ.get(KEY_ENV):
            raise DetoxkitError(f"the Perspective scorer needs an API key in ${KEY_ENV}")
        self.version = f"perspective-api {self.api_version} ({','.join(self.attributes)}; lang={self.language or 'auto'})"
        self.stats = {"requests": 0, "cache_hits": 0, "retries": 0, "failed": 0, "scored": 0}
        self._next_slot = 0.0  # monotonic time of the next allowed request (QPS cap across batches)
        self._slot_lock = threading.Lock()

    # -- public -----------------------------------------------------------------------------

    def _score_batch(self, texts):
        keys = [ScoreCache.key(t, self.attributes, self.language, self.api_version) for t in texts]
        cached = self.cache.get_many(keys) if self.cache else {}
        self.stats["cache_hits"] += sum(k in cached for k in keys)
        todo = [i for i, k in enumerate(keys) if k not in cached]
        fresh = self._run(self._fetch_all([texts[i] for i in todo])) if todo else []
        new_items = {}
        results = [cached.get(k) for k in keys]
        for i, scores in zip(todo, fresh):
            results[i] = scores
            if scores is not None:
                new_items[keys[i]] = scores
        if self.cache:
            self.cache.put_many(new_items)
        out = {a: [] for a in self.attributes}
        for scores in results:
            for a in self.attributes:
                out[a].append(math.nan if scores is None else float(scores[a]))
        return out

    def info(self) -> dict:
        out = super().info()
        out.update(base_url=self.base_url, qps=self.qps, language=self.language, stats=dict(self.stats))
        return out

    # -- async machinery ----------------------------------------------------------------------

    @staticmethod
    def _run(coro):
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(coro)
        # called from inside a running loop (a notebook): run in a helper thread
        box = {}
        thread = threading.Thread(target=lambda: box.setdefault("r", asyncio.run(coro)))
        thread.start()
        thread.join()
        return box["r"]

    async def _fetch_all(self, texts: list[str]) -> list[dict | None]:
        sem = asyncio.Semaphore(self.concurrency)
        return await asyncio.gather(*(self._fetch(t, sem) for t in texts))

    async def _slot(self) -> None:
        with self._slot_lock:
            now = time.monotonic()
            start = max(now, self._next_slot)
            self._next_slot = start + 1.0 / self.qps
        if start > now:
            await asyncio.sleep(start - now)

    async def _fetch(self, text: str, sem: asyncio.Semaphore) -> dict | None:
        for attempt in range(self.max_retries + 1):
            async with sem:
                await self._slot()
                self.stats["requests"] += 1
                try:
                    scores = await asyncio.to_thread(self._post, text)
                    self.stats["scored"] += 1
                    return scores
                except _Final as exc:
                    log.warning("perspective: request failed for good: %s", exc)
                    break
                except _Retryable as exc:
                    if attempt == self.max_retries:
                        log.warning("perspective: giving up after %d tries: %s", attempt + 1, exc)
                        break
                    delay = min(self.max_backoff, self.backoff * (2 ** attempt)) * (1 + 0.25 * random.random())
                    if exc.retry_after is not None:
                        delay = min(self.max_backoff, max(delay, exc.retry_after))
                    self.stats["retries"] += 1
                    log.info("perspective: %s; retry %d/%d in %.2f s", exc, attempt + 1, self.max_retries, delay)
            await asyncio.sleep(delay)
        self.stats["failed"] += 1
        return None

    def _post(self, text: str) -> dict:
        """One synchronous request; returns {attribute: score} or raises _Retryable/_Final."""
        key = os.environ.get(KEY_ENV)
        if not key:
            raise _Final(f"${KEY_ENV} is not set")
        payload = {"comment": {"text": text}, "doNotStore": True,
                   "requestedAttributes": {a.upper(): {} for a in self.attributes}}
        if self.language:
            payload["languages"] = [self.language]
        request = urllib.request.Request(
            f"{self.base_url}/comments:analyze", data=json.dumps(payload).encode("utf-8"), method="POST",
            headers={"Content-Type": "application/json", "X-Goog-Api-Key": key})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                body = resp.read()
        except urllib.error.HTTPError as exc:
            retry_after = _retry_after(exc.headers.get("Retry-After") if exc.headers else None)
            if exc.code == 429 or 500 <= exc.code < 600:
                raise _Retryable(f"HTTP {exc.code}", retry_after) from None
            raise _Final(f"HTTP {exc.code}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", exc)
            raise _Retryable(f"connection error ({type(reason).__name__})") from None
        try:
            data = json.loads(body)
            return {a: _check(float(data["attributeScores"][a.upper()]["summaryScore"]["value"]))
                    for a in self.attributes}
        except (ValueError, KeyError, TypeError) as exc:
            raise _Retryable(f"malformed answer ({type(exc).__name__})") from None


def _check(x: float) -> float:
    if not 0.0 <= x <= 1.0:
        raise ValueError("score outside [0, 1]")
    return x


def _retry_after(value) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
