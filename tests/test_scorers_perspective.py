"""The Perspective client against a fault-injecting HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from detoxkit.errors import DetoxkitError
from detoxkit.scorers.perspective import PerspectiveScorer

SECRET = "test-key-5ecr3t-do-not-leak"


class FaultServer:
    """Answers like Perspective's comments:analyze, misbehaving on demand by the comment text:

    "429xN ..." / "500xN ..." / "503xN ...": that status N times, then a good answer;
    "always500 ...": always 500;  "bad400 ...": 400 (final);  "malformedxN ...": N broken JSON bodies;
    "slowxN ...": N answers 0.6 s late;  "missing ...": valid JSON without TOXICITY.
    A good answer scores 0.9 for texts containing "bad" and 0.1 otherwise (every attribute)."""

    def __init__(self):
        self.hits = defaultdict(int)
        self.times: list[float] = []
        self.keys: list[str | None] = []
        self.bodies: list[dict] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                text = body["comment"]["text"]
                with server.lock:
                    server.hits[text] += 1
                    n = server.hits[text]
                    server.times.append(time.monotonic())
                    server.keys.append(self.headers.get("X-Goog-Api-Key"))
                    server.bodies.append(body)
                head = text.split(" ")[0]
                kind, _, times = head.partition("x")
                times = int(times) if times.isdigit() else 0
                if kind in ("429", "500", "503") and n <= times:
                    return self._send(int(kind), b'{"error": "injected"}', {"Retry-After": "0"})
                if head == "always500":
                    return self._send(500, b"oops")
                if head == "bad400":
                    return self._send(400, b'{"error": {"message": "bad request"}}')
                if kind == "malformed" and n <= times:
                    return self._send(200, b'{"attributeScores": {"TOXICITY": ')
                if kind == "slow" and n <= times:
                    time.sleep(0.6)
                value = 0.9 if "bad" in text else 0.1
                attrs = {} if head == "missing" else {
                    a: {"summaryScore": {"value": value, "type": "PROBABILITY"}} for a in body["requestedAttributes"]}
                self._send(200, json.dumps({"attributeScores": attrs, "languages": ["en"]}).encode())

            def _send(self, code, payload, headers=None):
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1alpha1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = FaultServer()
    yield s
    s.close()


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("PERSPECTIVE_API_KEY", SECRET)


def make(server, tmp_path, **kw):
    opts = dict(base_url=server.url, qps=200, backoff=0.01, max_backoff=0.05, timeout=5,
                cache_path=str(tmp_path / "cache.sqlite"))
    opts.update(kw)
    return PerspectiveScorer(**opts)


def test_retries_on_429_5xx_malformed_and_slow_answers(server, key, tmp_path):
    scorer = make(server, tmp_path, timeout=0.3)
    texts = ["fine text", "429x2 bad words", "500x1 nice", "503x3 bad", "malformedx2 ok", "slowx1 bad"]
    out = scorer.score(texts)
    np.testing.assert_allclose(out["toxicity"], [0.1, 0.9, 0.1, 0.9, 0.1, 0.9])
    assert scorer.attributes[0] == "toxicity" and set(out) == set(scorer.attributes)
    assert server.hits["429x2 bad words"] == 3 and server.hits["503x3 bad"] == 4
    assert server.hits["malformedx2 ok"] == 3 and server.hits["slowx1 bad"] >= 2
    assert scorer.stats["failed"] == 0 and scorer.stats["retries"] >= 2 + 1 + 3 + 2 + 1
    body = server.bodies[0]
    assert body["languages"] == ["en"] and body["doNotStore"] is True
    assert set(body["requestedAttributes"]) == {a.upper() for a in scorer.attributes}


def test_final_failures_are_nan_and_counted(server, key, tmp_path):
    scorer = make(server, tmp_path, max_retries=2, cache=False)
    out = scorer.score(["always500 x", "bad400 y", "missing z", "ok bad", ""])
    tox = out["toxicity"]
    assert math.isnan(tox[0]) and math.isnan(tox[1]) and math.isnan(tox[2])
    assert tox[3] == pytest.approx(0.9)
    assert server.hits["always500 x"] == 3  # 1 + max_retries
    assert server.hits["bad400 y"] == 1  # other 4xx: final at once
    assert scorer.stats["failed"] == 3
    assert tox[4] == pytest.approx(0.1)  # the empty text is sent and scored like any other here


def test_persistent_cache_keyed_by_text_attributes_language(server, key, tmp_path):
    texts = ["a bad one", "a good one", "429x1 bad again"]
    first = make(server, tmp_path).score(texts)
    before = sum(server.hits.values())
    again = make(server, tmp_path)  # a new client on the same cache file: no requests
    second = again.score(texts)
    assert sum(server.hits.values()) == before and again.stats["cache_hits"] == 3
    for a in first:
        np.testing.assert_array_equal(first[a], second[a])
    make(server, tmp_path, language="de").score(texts[:1])
    make(server, tmp_path, attributes="toxicity,threat").score(texts[:1])
    assert server.hits["a bad one"] == 3
    failed = make(server, tmp_path, max_retries=0)
    failed.score(["always500 q"])
    failed.score(["always500 q"])
    assert server.hits["always500 q"] == 2  # failures are not cached


def test_qps_cap_spaces_requests(server, key, tmp_path):
    scorer = make(server, tmp_path, qps=20, concurrency=8, cache=False)
    start = time.monotonic()
    scorer.score([f"text number {i}" for i in range(10)])
    elapsed = time.monotonic() - start
    assert elapsed >= 9 / 20 - 0.02
    assert_spaced(server.times, qps=20)
    # the cap holds across batches and calls, not just within one
    server.times.clear()
    scorer.batch_size = 2
    scorer.score([f"more text {i}" for i in range(6)])
    assert_spaced(server.times, qps=20)


def assert_spaced(times, qps, k=3, slack=0.03):
    """Any k+1 consecutive arrivals span at least k/qps (minus scheduling jitter at the two ends)."""
    t = np.sort(times)
    assert len(t) > k
    assert (t[k:] - t[:-k]).min() >= k / qps - slack


def test_key_is_sent_but_never_logged_or_stored(server, key, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    scorer = make(server, tmp_path, max_retries=1)
    scorer.score(["429x1 x", "always500 y", "bad400 z", "ok"])
    assert set(server.keys) == {SECRET}
    assert SECRET not in caplog.text
    assert SECRET not in json.dumps(scorer.info()) and SECRET not in scorer.version
    assert SECRET not in repr(vars(scorer))
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes()
    assert b"429x1 x" not in (tmp_path / "cache.sqlite").read_bytes()  # texts are stored hashed


def test_missing_key_is_a_clear_error(monkeypatch, tmp_path, server):
    monkeypatch.delenv("PERSPECTIVE_API_KEY", raising=False)
    with pytest.raises(DetoxkitError, match="PERSPECTIVE_API_KEY"):
        make(server, tmp_path)


def test_unreachable_server_is_nan_not_a_crash(key, tmp_path):
    scorer = PerspectiveScorer(base_url="http://127.0.0.1:9/v1alpha1", max_retries=1, backoff=0.01,
                               timeout=0.5, qps=100, cache=False)
    assert math.isnan(scorer.score(["hello"])["toxicity"][0])
    assert scorer.stats["failed"] == 1
