"""An OpenAI-compatible server on loopback that misbehaves on demand, for the API backend's tests.

It answers /v1/completions and /v1/chat/completions. A prompt (or the last chat turn) holding
a marker misbehaves for that many hits of the same (prompt, seed), then answers:
"429xN" (429 with Retry-After), "500xN", "hangxN" (answers after `hang_s`), "malformedxN"
(a body that is not JSON), "dropxN" (closes the connection without an answer), "always500"
(until `heal` is set), "bad400" (a 400 whose body echoes the Authorization header), and
"ignoren" (one choice whatever `n` asks). A good answer is a deterministic text built from
the request's seed, so that a sample's text tells which seed asked for it; with `upstream`
(a real server's URL), a good request is passed on to it instead, making this a fault proxy.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FaultAPIServer:
    def __init__(self, hang_s: float = 1.5, upstream: str | None = None, latency: float = 0.0):
        self.hang_s = hang_s
        self.upstream = upstream
        self.latency = latency  # every good answer this much later (a remote API's round trip)
        self.heal = False
        self.hits: dict[tuple, int] = defaultdict(int)
        self.bodies: list[dict] = []
        self.headers: list[dict] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.bodies.append(body)
                    server.headers.append(dict(self.headers))
                server.answer(self, body, self.path)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "FaultAPIServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    @staticmethod
    def prompt_of(body: dict) -> str:
        if "messages" in body:
            return body["messages"][-1]["content"]
        return body["prompt"]

    def answer(self, h: BaseHTTPRequestHandler, body: dict, path: str = "") -> None:
        prompt = self.prompt_of(body)
        key = (prompt, body.get("seed"))
        with self.lock:
            self.hits[key] += 1
            hit = self.hits[key]
        for fault in ("429", "500", "hang", "malformed", "drop"):
            m = re.search(fault + r"x(\d+)", prompt)
            if m and hit <= int(m.group(1)):
                return self.misbehave(h, fault)
        if "always500" in prompt and not self.heal:
            return self.misbehave(h, "500")
        if "bad400" in prompt:
            return self.send(h, 400, json.dumps({"error": f"bad request from {h.headers.get('Authorization')}"}))
        if self.upstream:
            return self.forward(h, body, path)
        if self.latency:
            time.sleep(self.latency)
        n = 1 if "ignoren" in prompt else int(body.get("n") or 1)
        seed = body.get("seed")
        chat = "messages" in body
        choices = []
        for i in range(n):
            text = f" reply {seed}-{i} to {len(prompt)} chars"
            choice = {"index": i, "finish_reason": "length"}
            choice.update({"message": {"role": "assistant", "content": text}} if chat else {"text": text})
            choices.append(choice)
        usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": n * int(body["max_tokens"])}
        self.send(h, 200, json.dumps({"object": "chat.completion" if chat else "text_completion",
                                      "choices": choices, "usage": usage}))

    def forward(self, h: BaseHTTPRequestHandler, body: dict, path: str) -> None:
        import urllib.error
        import urllib.request

        url = self.upstream.rstrip("/") + path.removeprefix("/v1")
        request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=120) as resp:
                self.send(h, resp.status, resp.read().decode("utf-8"))
        except urllib.error.HTTPError as exc:
            self.send(h, exc.code, exc.read().decode("utf-8", "replace"))

    def misbehave(self, h: BaseHTTPRequestHandler, fault: str) -> None:
        if fault == "429":
            return self.send(h, 429, '{"error": "slow down"}', {"Retry-After": "0.05"})
        if fault == "500":
            return self.send(h, 500, '{"error": "boom"}')
        if fault == "hang":
            time.sleep(self.hang_s)
            return self.send(h, 200, '{"choices": []}')
        if fault == "malformed":
            return self.send(h, 200, '{"choices": [')
        h.close_connection = True  # drop: no answer at all
        h.wfile.flush()
        h.connection.close()

    @staticmethod
    def send(h: BaseHTTPRequestHandler, status: int, text: str, headers: dict | None = None) -> None:
        data = text.encode("utf-8")
        try:
            h.send_response(status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                h.send_header(k, v)
            h.end_headers()
            h.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
