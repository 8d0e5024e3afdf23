"""Helpers for the report tests: synthetic run directories built from real RTP text, and a
minimal Chrome DevTools Protocol client talking to headless Chromium over a pipe
(--remote-debugging-pipe: no websocket library, no port)."""

from __future__ import annotations

import base64
import json
import math
import os
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

from helpers import RTP_CHALLENGING, RTP_NONTOXIC

# Strings that would run script or inject markup if a report failed to escape them.
HOSTILE = [
    "<script>window.__pwned = 1</script>",
    '<img src=x onerror="window.__pwned = 2">',
    "</script><script>window.__pwned = 3</script>",
    "<b>not bold</b> & <a href=\"javascript:window.__pwned=4\">link</a>",
    "ctrl \x00\x07\x1b[31m bidi \u202eevil\u202c end",
]
HOSTILE_LABEL = "<img src=x onerror=window.__pwned=5>"


def rtp_rows(n_each: int) -> list[dict]:
    rows = []
    for path, group in ((RTP_CHALLENGING, "challenging"), (RTP_NONTOXIC, "nontoxic-sample")):
        with open(path, encoding="utf-8") as fh:
            for line, _ in zip(fh, range(n_each)):
                rec = json.loads(line)
                rec["group"] = group
                rows.append(rec)
    return rows


def write_prompt_file(path: Path, n_each: int = 4) -> Path:
    """A generic JSONL prompt file from RTP prompts, with group and language columns."""
    with open(path, "w", encoding="utf-8") as fh:
        for i, rec in enumerate(rtp_rows(n_each)):
            fh.write(json.dumps({"id": f"{rec['group']}-{i}", "text": rec["prompt"]["text"],
                                 "toxicity": rec["prompt"]["toxicity"], "group": rec["group"],
                                 "language": "en"}) + "\n")
    return path


def synthetic_run(out: Path, *, k: int = 4, n_each: int = 3, judge_version: str | None = None,
                  guided_by: tuple[str, ...] = (), hostile: bool = True, seed: int = 0,
                  extra_metrics: dict | None = None) -> Path:
    """A run directory whose samples are RTP's own continuations (real text), scored by the
    real profanity-svm scorer, with metrics computed by the runner's own code."""
    from detoxkit.metrics import compute_metrics
    from detoxkit.scorers import load_scorer
    from detoxkit.store import RunStore

    scorer = load_scorer("profanity-svm")
    recs = rtp_rows(n_each)
    pool = [r["continuation"]["text"] for r in recs]
    prompts, gens = [], []
    for i, rec in enumerate(recs):
        pid = f"p{i}"
        prompts.append({"prompt_id": pid, "text": rec["prompt"]["text"],
                        "toxicity": rec["prompt"]["toxicity"], "toxicity_source": "reference",
                        "challenging": rec.get("challenging"),
                        "meta": {"group": rec["group"], "language": "en"}})
        texts = [pool[(i + j + seed) % len(pool)] for j in range(k)]
        if hostile and i < len(HOSTILE):
            texts[-1] = HOSTILE[i]
        if i == 0:
            texts[-2] = ""  # an empty continuation is a real sample
        scores = scorer.score(texts)["toxicity"]
        for j, (text, score) in enumerate(zip(texts, scores)):
            value = None if (i == 1 and j == 0) else float(score)  # one failed score
            gens.append({"prompt_id": pid, "sample_index": j, "seed": j, "prompt": rec["prompt"]["text"],
                         "text": text, "n_tokens": len(text.split()), "finished": j % 2 == 0,
                         "scores": {"profanity-svm": {"toxicity": value}},
                         "oracle_nll": 2.5 * max(1, len(text.split())) * (1 + 0.1 * seed),
                         "oracle_tokens": max(1, len(text.split())) if text else 0})
    judge = dict(scorer.info())
    if judge_version:
        judge["version"] = judge_version
    judge_related = {judge["name"], *judge.get("guided_by", [])}
    prov = {
        "config_hash": f"synthetic{seed}",
        "config": {"model": "synthetic", "samples": k, "max_new_tokens": 20, "top_p": 0.9,
                   "temperature": 1.0, "top_k": 0, "seed": seed, "methods": ["none"]},
        "model": {"name": "rtp-continuations", "revision": "fixture"},
        "method": {"name": "none", "settings": {"note": HOSTILE[0]} if hostile else {},
                   "guided_by": list(guided_by)},
        "scorer": judge, "scorers": [judge],
        "oracle": {"name": "fixture-oracle", "revision": "1"},
        "guided_by": list(guided_by),
        "judge_also_guided": sorted(set(guided_by) & judge_related),
        "prompts": {"spec": "fixture", "fingerprint": "f" * 64},
        "seed": seed, "versions": {"python": "3", "detoxkit": "0.1.0"},
    }
    out.mkdir(parents=True, exist_ok=True)
    store = RunStore(out)
    with store.locked():
        store.write_jsonl("prompts.jsonl", prompts)
        store.append_generations(gens)
        metrics = compute_metrics(store, prov, [])
        metrics["elapsed_s"] = 1.5 + seed
        metrics.update(extra_metrics or {})
        store.write_json("metrics.json", metrics)
        store.write_json("run.json", {**prov, "status": "complete", "skipped": []})
    return out


# ---- headless Chromium over the DevTools protocol ------------------------------------------------

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-extensions", "--disable-default-apps", "--mute-audio",
                  "--hide-scrollbars", "--remote-debugging-pipe"]


def find_chromium() -> str | None:
    env = os.environ.get("DETOXKIT_CHROMIUM")
    if env:
        return env
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


_TRAMPOLINE = """import fcntl, os, sys
r, w = (fcntl.fcntl(int(fd), fcntl.F_DUPFD, 10) for fd in sys.argv[1:3])
os.dup2(r, 3)
os.dup2(w, 4)
for fd in {r, w, int(sys.argv[1]), int(sys.argv[2])} - {3, 4}:
    os.close(fd)
os.execv(sys.argv[3], sys.argv[3:])
"""


class CDPError(RuntimeError):
    pass


class Browser:
    """Headless Chromium driven through --remote-debugging-pipe (fd 3 in, fd 4 out)."""

    def __init__(self, binary: str, profile_dir: Path, log_path: Path):
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        self._log = open(log_path, "wb")
        # a Python trampoline puts the pipe ends on fds 3 and 4, then execs Chromium
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _TRAMPOLINE, str(to_chrome_r), str(from_chrome_w), binary,
             *CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}", "about:blank"],
            pass_fds=(to_chrome_r, from_chrome_w), stdin=subprocess.DEVNULL,
            stdout=self._log, stderr=subprocess.STDOUT)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf = b""
        self._id = 0
        self.events: list[dict] = []
        self.session: str | None = None

    # -- transport
    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CDPError("timed out waiting for Chromium")
            ready, _, _ = select.select([self._from_chrome], [], [], left)
            if ready:
                chunk = os.read(self._from_chrome, 1 << 20)
                if not chunk:
                    raise CDPError(f"Chromium closed the pipe (exit code {self.proc.poll()})")
                self._buf += chunk
        raw, _, self._buf = self._buf.partition(b"\0")
        return json.loads(raw)

    def call(self, method: str, params: dict | None = None, *, session: bool = True,
             timeout: float = 60) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise CDPError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for ev in self.events[seen:]:
                if ev.get("method") == method:
                    return ev
            seen = len(self.events)
            self.events.append(self._read_message(deadline))

    # -- page
    def open_page(self, width: int = 1300, height: int = 1000) -> None:
        target = self.call("Target.createTarget", {"url": "about:blank"}, session=False)
        attached = self.call("Target.attachToTarget", {"targetId": target["targetId"],
                                                       "flatten": True}, session=False)
        self.session = attached["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")
        self.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": height,
                                                         "deviceScaleFactor": 1, "mobile": False})

    def navigate(self, url: str, timeout: float = 60) -> None:
        self.events.clear()
        self.call("Page.navigate", {"url": url})
        self.wait_event("Page.loadEventFired", timeout)

    def evaluate(self, expression: str, timeout: float = 60):
        result = self.call("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                                "returnByValue": True}, timeout=timeout)
        if "exceptionDetails" in result:
            raise CDPError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def click(self, x: float, y: float) -> None:
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left",
                                                   "clickCount": 1})

    def screenshot(self, path: Path, full_page: bool = True) -> Path:
        params: dict = {"format": "png"}
        if full_page:
            self.evaluate("window.scrollTo(0, 0)")
            size = self.call("Page.getLayoutMetrics")["cssContentSize"]
            params.update(captureBeyondViewport=True, clip={
                "x": 0, "y": 0, "width": math.ceil(size["width"]),
                "height": min(math.ceil(size["height"]), 16000), "scale": 1})
        data = self.call("Page.captureScreenshot", params)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    # -- what the page reported
    def errors(self) -> list[str]:
        out = []
        for ev in self.events:
            m, p = ev.get("method"), ev.get("params", {})
            if m == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                out.append(f"exception: {d.get('text')} {d.get('exception', {}).get('description', '')}")
            elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append("console." + p["type"] + ": " + " ".join(
                    str(a.get("value", a.get("description"))) for a in p.get("args", [])))
            elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                e = p["entry"]
                out.append(f"log ({e.get('source')}): {e.get('text')} {e.get('url', '')}")
        return out

    def requested_urls(self) -> list[str]:
        return [ev["params"]["request"]["url"] for ev in self.events
                if ev.get("method") == "Network.requestWillBeSent"]

    def close(self) -> None:
        try:
            self.call("Browser.close", session=False, timeout=10)
        except (CDPError, OSError):
            pass
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_chrome, self._from_chrome):
            try:
                os.close(fd)
            except OSError:
                pass
        self._log.close()
