"""The openai backend against a real OpenAI-compatible server: `transformers serve` with the tiny model,
on 127.0.0.1, started by the test. Retries are tested through a small fault-injecting proxy in front
of it that answers some requests 429/500 or drops the connection."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest
from stagewise.curate.backends import make_backend
from stagewise.curate.backends.base import GenerationRequest, SamplingParams, sample_seed
from stagewise.curate.errors import ConfigError

pytest.importorskip("openai")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    """`transformers serve` preloading the tiny model; yields its base URL and the served model name."""
    exe = os.path.join(os.path.dirname(sys.executable), "transformers")
    if not os.path.exists(exe):
        exe = shutil.which("transformers")
    if exe is None:
        pytest.skip("the `transformers` CLI is missing; pip install 'transformers[serving]'")
    port = _free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    proc = subprocess.Popen([exe, "serve", tiny_model_dir, "--host", "127.0.0.1", "--port", str(port),
                             "--device", "cpu", "--log-level", "warning"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"transformers serve exited: {proc.stderr.read().decode()[-2000:]}")
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail("transformers serve did not become healthy within 180 s")
            time.sleep(0.5)
        yield {"base_url": url + "/v1", "model": tiny_model_dir, "root": url}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class FaultProxy:
    """Forwards POSTs to the real server; the i-th request (0-based) gets `faults[i]` instead when set:
    an HTTP status code (429 carries Retry-After: 0) or "drop" (close the connection, no response)."""

    def __init__(self, upstream: str, faults):
        self.upstream = upstream
        self.faults = faults  # a dict {request index: fault} or a callable(index) -> fault | None
        self.count = 0
        self.injected: list = []
        self.seen: list = []  # (authorization header, JSON body) of every request, as the server got it
        self.lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                proxy.seen.append((self.headers.get("authorization"), json.loads(body or b"{}")))
                with proxy.lock:
                    i = proxy.count
                    proxy.count += 1
                fault = proxy.faults(i) if callable(proxy.faults) else proxy.faults.get(i)
                if fault is not None:
                    proxy.injected.append(fault)
                if fault == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fault is not None:
                    payload = b'{"error": {"message": "injected fault"}}'
                    self.send_response(int(fault))
                    if int(fault) == 429:
                        self.send_header("Retry-After", "0")
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                req = urllib.request.Request(proxy.upstream + self.path, data=body, method="POST",
                                             headers={"content-type": "application/json"})
                try:
                    with urllib.request.urlopen(req, timeout=120) as r:
                        status, data = r.status, r.read()
                except urllib.error.HTTPError as e:
                    status, data = e.code, e.read()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _requests(n_items=3, k=3, max_new_tokens=8):
    params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=max_new_tokens)
    return [GenerationRequest(f"p{i}", [{"role": "user", "content": f"What is {i} + {i}?"}], list(range(k)),
                              [sample_seed(0, f"p{i}", j) for j in range(k)], params) for i in range(n_items)]


def test_samples_every_index_from_a_server_that_ignores_n(server):
    backend = make_backend("openai", server["model"], base_url=server["base_url"], concurrency=4)
    results = backend.generate(_requests(3, 3, max_new_tokens=6))
    assert sorted((r.key, r.sample_idx) for r in results) == [(f"p{i}", j) for i in range(3) for j in range(3)]
    # transformers serve answers one choice whatever n is: the backend noticed and asked per sample.
    assert backend.n_supported is False
    assert all(0 < r.n_tokens <= 6 for r in results)
    assert all(r.finish_reason in ("stop", "length") for r in results)
    assert any(r.finish_reason == "length" for r in results)


def test_retries_429_500_and_dropped_connections(server):
    faults = {0: 429, 1: 500, 2: "drop", 5: 503}
    with FaultProxy(server["root"], faults) as proxy:
        backend = make_backend("openai", server["model"], base_url=proxy.base_url, concurrency=2,
                               backoff_s=0.05, max_retries=4, use_n=False)
        results = backend.generate(_requests(2, 3))
    assert sorted((r.key, r.sample_idx) for r in results) == [(f"p{i}", j) for i in range(2) for j in range(3)]
    assert proxy.injected == [429, 500, "drop", 503]
    assert backend.stats["retries"] == 4
    assert set(backend.stats["retry_reasons"]) == {"HTTP 429", "HTTP 500", "HTTP 503", "connection"}


def test_gives_up_after_max_retries_with_a_clear_error(server):
    from stagewise.curate.backends.openai_backend import BackendError

    with FaultProxy(server["root"], lambda i: 503) as proxy:
        backend = make_backend("openai", server["model"], base_url=proxy.base_url, backoff_s=0.01, max_retries=2)
        with pytest.raises(BackendError, match="failed after 3 attempts"):
            backend.generate(_requests(1, 1))
    assert proxy.count == 3


def test_client_errors_are_not_retried(server):
    with FaultProxy(server["root"], lambda i: 404) as proxy:
        backend = make_backend("openai", server["model"], base_url=proxy.base_url, backoff_s=0.01)
        with pytest.raises(ConfigError, match="HTTP 404"):
            backend.generate(_requests(1, 1))
    assert proxy.count == 1


def test_missing_base_url_names_the_flag(monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ConfigError, match="--base-url"):
        make_backend("openai", "m")


def test_probe_through_the_server_resumes(server, tmp_path):
    from stagewise.curate.schema import Problem

    import stagewise as sw

    problems = [Problem(prompt=f"What is {i} + 1?", answer=str(i + 1), task="gsm8k") for i in range(3)]
    store = str(tmp_path / "openai.duckdb")
    kw = {"model": server["model"], "store": store, "backend": "openai", "base_url": server["base_url"], "num_samples": 2,
              "max_new_tokens": 6, "progress": False}
    first = sw.probe(problems[:2], **kw)
    assert first.summary["samples_new"] == 4
    second = sw.probe(problems, **kw)
    assert second.run_id == first.run_id
    assert second.summary["samples_resumed"] == 4 and second.summary["samples_new"] == 2
    assert second.summary["samples"] == 6


def _stagewise(*args, env=None):
    exe = os.path.join(os.path.dirname(sys.executable), "stagewise")
    return subprocess.run([exe if os.path.exists(exe) else "stagewise", *args], capture_output=True, text=True,
                          timeout=300, env=env, check=False)


def test_extra_body_and_sampling_extras_reach_the_server_with_every_request(server):
    with FaultProxy(server["root"], {}) as proxy:
        backend = make_backend("openai", server["model"], base_url=proxy.base_url, use_n=False,
                               extra_body={"chat_template_kwargs": {"enable_thinking": False}},
                               stop=["\n\n"])
        results = backend.generate(_requests(2, 2, max_new_tokens=4))
    assert len(results) == 4
    assert len(proxy.seen) == 4
    for _, body in proxy.seen:
        assert body["chat_template_kwargs"] == {"enable_thinking": False}
        assert body["stop"] == ["\n\n"]


def test_cli_reads_openai_base_url_and_api_key_from_the_environment(server, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"question": f"What is {i} + 1?", "answer": str(i + 1)}) + "\n"
                            for i in range(2)))
    with FaultProxy(server["root"], {}) as proxy:
        env = dict(os.environ, OPENAI_BASE_URL=proxy.base_url, OPENAI_API_KEY="sk-from-env")
        out = _stagewise("probe", str(data), "--backend", "openai", "--model", server["model"], "-k", "2",
                         "--max-new-tokens", "4", "--store", str(tmp_path / "s.duckdb"), "--json",
                         "--backend-arg", "concurrency=2", "--backend-arg",
                         "extra_body.chat_template_kwargs.enable_thinking=false", env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["summary"]["samples"] == 4
    assert proxy.seen and all(auth == "Bearer sk-from-env" for auth, _ in proxy.seen)
    assert all(body["chat_template_kwargs"] == {"enable_thinking": False} for _, body in proxy.seen)


def test_cli_refuses_an_unknown_openai_backend_arg_naming_the_accepted_keys(server, tmp_path):
    out = _stagewise("probe", "gsm8k:test", "--limit", "1", "--backend", "openai", "--model", server["model"],
                     "--base-url", server["base_url"], "--store", str(tmp_path / "s.duckdb"),
                     "--backend-arg", "bogus=1")
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert "'bogus'" in out.stderr and "extra_body" in out.stderr and "concurrency" in out.stderr
    assert not (tmp_path / "s.duckdb").exists()
