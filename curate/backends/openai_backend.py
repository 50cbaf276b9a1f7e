"""The `openai` backend: any OpenAI-compatible chat server (vLLM serve, SGLang, TGI, `transformers serve`).

Requests run concurrently (at most `concurrency` in flight) on an asyncio loop in a helper thread, so
the probe can commit results while others are still being generated. A request asks for all of an
item's samples at once (`n`); a server that returns fewer choices than asked (e.g. `transformers
serve` ignores `n`) is remembered, and the missing samples are requested one at a time, each with its
own seed. Rate limits (429), server errors (5xx), timeouts and dropped connections are retried with
exponential backoff and jitter (honouring Retry-After); other client errors (400, 401, 404) stop the
run with the server's message, since retrying cannot fix them.

Determinism: with one sample per request, every sample carries the seed of its (item, sample index),
so a resumed run asks for exactly what an uninterrupted one would have (if the server honours
`seed`). With `n` > 1 the request carries the seed of its first sample index; set `use_n=False` to
trade throughput for per-sample seeds.
"""

from __future__ import annotations

import queue  # asyncio is imported where it is used: it is a noticeable share of `stagewise --help`
import random
import threading
from collections.abc import Iterator

from stagewise.curate.backends.base import Backend, GenerationRequest, GenerationResult
from stagewise.curate.errors import ConfigError, StagewiseError, require

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class BackendError(StagewiseError):
    """The server kept failing after all retries; the message names the URL and the last error."""


class OpenAIBackend(Backend):
    """Sample from an OpenAI-compatible server at `base_url` (e.g. http://127.0.0.1:8000/v1)."""

    name = "openai"

    def __init__(self, model: str, *, base_url: str | None = None, api_key: str | None = None,
                 concurrency: int = 8, max_retries: int = 6, timeout_s: float = 600.0, backoff_s: float = 0.5,
                 use_n: bool = True, extra_body: dict | None = None, extra_headers: dict | None = None,
                 stop=None, presence_penalty: float | None = None, frequency_penalty: float | None = None):
        import os

        require("openai", "openai")
        # The environment variables the openai client itself reads, so a configured shell just works.
        base_url = base_url or os.environ.get("OPENAI_BASE_URL")
        if not base_url:
            raise ConfigError("--backend openai needs --base-url (or OPENAI_BASE_URL), e.g. http://127.0.0.1:8000/v1")
        for key, value in (("extra_body", extra_body), ("extra_headers", extra_headers)):
            if value is not None and not isinstance(value, dict):
                raise ConfigError(f"backend argument {key} must be a mapping, e.g. "
                                  "--backend-arg extra_body.chat_template_kwargs.enable_thinking=false "
                                  f"(got {value!r})")
        if concurrency < 1:
            raise ConfigError(f"concurrency must be at least 1 (got {concurrency})")
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self.concurrency = int(concurrency)
        self.max_retries = int(max_retries)
        self.timeout_s = float(timeout_s)
        self.backoff_s = float(backoff_s)
        self.use_n = bool(use_n)
        # Sent with every request: extra_body reaches the server's JSON body as is (vLLM/SGLang read e.g.
        # chat_template_kwargs, top_k, min_p there).
        self.request_options = {k: v for k, v in (("extra_body", extra_body), ("extra_headers", extra_headers),
                                                  ("stop", stop), ("presence_penalty", presence_penalty),
                                                  ("frequency_penalty", frequency_penalty)) if v is not None}
        self.n_supported: bool | None = None  # learned from the first multi-sample request
        self.stats = {"requests": 0, "retries": 0, "retry_reasons": {}}

    def identity(self) -> dict:
        return {"name": self.model, "model": self.model, "weights_sha256": None, "backend": self.name,
                "base_url": self.base_url}

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        return list(self.generate_stream(requests))

    def generate_stream(self, requests: list[GenerationRequest]) -> Iterator[GenerationResult]:
        """Yield samples as their requests complete; raises BackendError if a request finally fails."""
        out: queue.Queue = queue.Queue()
        done = object()

        def runner():
            import asyncio
            try:
                asyncio.run(self._run_all(requests, out.put))
            except BaseException as exc:  # noqa: BLE001 - handed to the consuming thread
                out.put(exc)
            out.put(done)

        thread = threading.Thread(target=runner, name="stagewise-openai", daemon=True)
        thread.start()
        while True:
            item = out.get()
            if item is done:
                break
            if isinstance(item, BaseException):
                thread.join()
                raise item
            yield item
        thread.join()

    # ------------------------------------------------------------------------------------ internals

    async def _run_all(self, requests, emit) -> None:
        import asyncio

        from openai import AsyncOpenAI

        client = AsyncOpenAI(base_url=self.base_url, api_key=self.api_key, max_retries=0, timeout=self.timeout_s)
        sem = asyncio.Semaphore(self.concurrency)
        try:
            tasks = [asyncio.create_task(self._one_request(client, sem, r, emit)) for r in requests
                     if r.sample_indices]
            try:
                await asyncio.gather(*tasks)
            except BaseException:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise
        finally:
            await client.close()

    async def _one_request(self, client, sem, req: GenerationRequest, emit) -> None:
        import asyncio
        todo = list(zip(req.sample_indices, req.seeds))
        if self.use_n and len(todo) > 1 and self.n_supported is not False:
            choices = await self._call(client, sem, req, n=len(todo), seed=todo[0][1])
            for (idx, _), choice in zip(todo, choices):
                emit(self._result(req, idx, choice))
            got = len(choices)
            if got < len(todo):
                self.n_supported = False  # this server ignores n: one request per sample from now on
            elif self.n_supported is None:
                self.n_supported = True
            todo = todo[got:]
        if todo:
            await asyncio.gather(*(self._single(client, sem, req, idx, seed, emit) for idx, seed in todo))

    async def _single(self, client, sem, req, idx, seed, emit) -> None:
        choices = await self._call(client, sem, req, n=1, seed=seed)
        if not choices:
            raise BackendError(f"{self.base_url} returned no choices for item {req.key!r} sample {idx}")
        emit(self._result(req, idx, choices[0]))

    def _result(self, req, idx, choice) -> GenerationResult:
        text, n_tokens, finish = choice
        return GenerationResult(key=req.key, sample_idx=idx, text=text, n_tokens=n_tokens, finish_reason=finish)

    async def _call(self, client, sem, req: GenerationRequest, *, n: int, seed: int) -> list[tuple]:
        import asyncio

        import openai

        params = req.params
        kwargs = {"model": self.model, "messages": req.messages, "temperature": params.temperature, "top_p": params.top_p,
                      "max_tokens": params.max_new_tokens, "seed": seed, **self.request_options}
        if n > 1:
            kwargs["n"] = n
        last = None
        for attempt in range(self.max_retries + 1):
            retry_after = None
            async with sem:
                self.stats["requests"] += 1
                try:
                    resp = await client.chat.completions.create(**kwargs)
                    return _choices(resp)
                except openai.APIStatusError as exc:
                    if exc.status_code not in RETRY_STATUS and exc.status_code < 500:
                        raise ConfigError(f"{self.base_url} refused the request for model {self.model!r} "
                                          f"(HTTP {exc.status_code}): {_short(exc)}; check --model and "
                                          "--base-url") from None
                    last, reason = exc, f"HTTP {exc.status_code}"
                    retry_after = _retry_after(exc)
                except openai.APITimeoutError as exc:
                    last, reason = exc, "timeout"
                except openai.APIConnectionError as exc:
                    last, reason = exc, "connection"
            if attempt == self.max_retries:
                break
            self.stats["retries"] += 1
            self.stats["retry_reasons"][reason] = self.stats["retry_reasons"].get(reason, 0) + 1
            delay = min(30.0, self.backoff_s * 2 ** attempt) * (0.5 + random.random() / 2)
            await asyncio.sleep(max(delay, retry_after or 0.0))
        raise BackendError(f"{self.base_url}: item {req.key!r} failed after {self.max_retries + 1} attempts "
                           f"(last error: {type(last).__name__}: {_short(last)}); samples stored so far are kept, "
                           "re-run the same command to resume")


def _choices(resp) -> list[tuple]:
    """(text, completion tokens, finish reason) per choice. With several choices the server reports
    only the total token count, shared out in proportion to each text's length."""
    choices = sorted(resp.choices or [], key=lambda c: c.index)
    texts = [(c.message.content or "") if c.message is not None else "" for c in choices]
    total = getattr(getattr(resp, "usage", None), "completion_tokens", None)
    if len(choices) == 1 and total is not None:
        counts = [int(total)]
    elif total is not None and sum(len(t) for t in texts) > 0:
        chars = sum(len(t) for t in texts)
        counts = [max(1, round(total * len(t) / chars)) for t in texts]
    else:
        counts = [len(t.split()) for t in texts]  # no usage reported: a word count is the best we have
    out = []
    for c, text, n_tok in zip(choices, texts, counts):
        finish = c.finish_reason or "stop"
        out.append((text, n_tok, "length" if finish == "length" else "stop"))
    return out


def _retry_after(exc) -> float | None:
    try:
        value = exc.response.headers.get("retry-after")
        return min(60.0, float(value)) if value is not None else None
    except (AttributeError, TypeError, ValueError):
        return None


def _short(exc) -> str:
    return str(exc).replace("\n", " ")[:300]
