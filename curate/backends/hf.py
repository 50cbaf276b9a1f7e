"""The `hf` backend: transformers on CPU (the embedded default) or GPU, with its own scheduler.

Why not `model.generate`: a padded batch recomputes each prompt's prefill once per sample, and keeps
computing rows that already hit their end token until the longest row finishes. On two CPU cores
that wastes most of the time. This backend instead

- prefills each prompt once (alone, so its cache does not depend on which prompts share a batch)
  and copies that prompt cache into as many decode slots as it has samples;
- decodes a fixed number of slots (`batch_size` sequences) in lock step over one preallocated
  key/value buffer, and refills a slot as soon as its sequence ends, so no step is spent on a
  finished sequence while work is pending;
- samples each sequence's tokens from its own `torch.Generator`, seeded per (item, sample index),
  so a sample does not depend on the batch it ran in (batched float arithmetic may still flip a rare
  token; that is measured, not hidden).

Slots are aligned in time: a prompt of length L admitted at write position T occupies columns
[T-L, T) of its slot, with the columns before masked out. Positions are passed explicitly, so the
left padding does not shift rotary positions. When the buffer is full it is compacted by dropping
the columns no live sequence uses.
"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from stagewise.curate.backends.base import Backend, GenerationRequest, GenerationResult
from stagewise.curate.errors import ConfigError
from stagewise.curate.models import model_identity, resolve_model


@dataclass
class _Prompt:
    """A prefilled prompt: its cache per layer ([1, H, L, D]) and the logits after its last token."""

    request: GenerationRequest
    keys: list
    values: list
    logits: object  # [V]
    length: int
    pending: deque = field(default_factory=deque)  # (sample_idx, seed) not yet admitted


@dataclass
class _Row:
    request: GenerationRequest
    sample_idx: int
    generator: object
    tokens: list
    start: int  # first valid column in the slot


def sample_rows(logits, temperatures, top_ps, generators) -> list[int]:
    """One token per row of `logits` ([R, V]), each from its own generator.

    The rule (the tests' reference implements it independently): temperature 0 is argmax; otherwise
    softmax(logits / temperature), restricted to the smallest top-p nucleus, and the token is the
    first index whose cumulative probability exceeds u * total, with u ~ U[0, 1) drawn as one float64
    from the row's generator. One draw per token keeps a row's samples independent of its batch, and
    the batched cumulative sum is far cheaper than a multinomial call per row.
    """
    import torch

    rows = logits.shape[0]
    out: list[int] = [0] * rows
    sampled = [i for i in range(rows) if temperatures[i] > 0]
    for i in range(rows):
        if temperatures[i] <= 0:
            out[i] = int(torch.argmax(logits[i]))
    if not sampled:
        return out
    index = torch.tensor(sampled, device=logits.device)
    temps = torch.tensor([float(temperatures[i]) for i in sampled], device=logits.device)[:, None]
    probs = torch.softmax(logits.index_select(0, index).float() / temps, dim=-1)
    for j, i in enumerate(sampled):
        if top_ps[i] < 1.0:
            sorted_p, order = torch.sort(probs[j], descending=True)
            keep = torch.cumsum(sorted_p, dim=-1) - sorted_p < top_ps[i]
            filtered = torch.zeros_like(probs[j])
            filtered[order[keep]] = sorted_p[keep]
            probs[j] = filtered
    cdf = probs.double().cumsum(dim=-1)
    u = torch.stack([torch.rand((), generator=generators[i], dtype=torch.float64) for i in sampled])
    u = u.to(cdf.device) * cdf[:, -1]
    toks = torch.searchsorted(cdf, u[:, None], right=True).squeeze(1).clamp_(max=cdf.shape[1] - 1)
    for j, i in enumerate(sampled):
        out[i] = int(toks[j])
    return out


class _SlotState:
    """The shared key/value buffers, the validity mask and the write pointer."""

    def __init__(self):
        self.K: list = []
        self.V: list = []
        self.valid = None  # bool [rows, cap]
        self.T = 0


def _slot_cache(state: _SlotState, num_layers: int):
    """A transformers Cache whose layers write into the shared slot buffers at the write pointer."""
    from transformers.cache_utils import Cache, DynamicLayer

    class _SlotLayer(DynamicLayer):
        def __init__(self, idx: int):
            super().__init__()
            self.idx = idx
            self.is_initialized = True

        def update(self, key_states, value_states, *args, **kwargs):
            t = state.T
            k, v = state.K[self.idx], state.V[self.idx]
            k[:, :, t] = key_states[:, :, 0]
            v[:, :, t] = value_states[:, :, 0]
            return k[:, :, : t + 1], v[:, :, : t + 1]

        def get_seq_length(self) -> int:
            return state.T

        def get_mask_sizes(self, query_length: int):
            return state.T + query_length, 0

    return Cache(layers=[_SlotLayer(i) for i in range(num_layers)])


class HFBackend(Backend):
    """Sample with transformers; `batch_size` is the number of sequences decoded together."""

    name = "hf"

    def __init__(self, model: str, *, batch_size: int = 32, device: str | None = None,
                 dtype: str | None = None, trust_remote_code: bool = False, threads: int | None = None,
                 device_map=None, attn_implementation: str | None = None, revision: str | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1 (got {batch_size})")
        if threads:
            # Intra-op threads for this process. On a shared, oversubscribed CPU one thread per process
            # beats two: OpenMP's spin-waiting threads stall when the kernel deschedules one of them.
            torch.set_num_threads(int(threads))
        self.model_name = model
        self.path = resolve_model(model)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        # fp32 on CPU: bf16 matmuls are about 3x slower on these CPUs.
        if dtype is None or dtype == "auto" and self.device.type == "cpu":
            torch_dtype = torch.float32 if self.device.type == "cpu" else torch.bfloat16
        elif dtype == "auto":
            torch_dtype = "auto"
        else:
            torch_dtype = getattr(torch, str(dtype), None)
            if not isinstance(torch_dtype, torch.dtype):
                raise ConfigError(f"dtype {dtype!r} is not a torch dtype; use float32, bfloat16, float16 or auto")
        load_options = {"trust_remote_code": trust_remote_code}
        if revision is not None:
            load_options["revision"] = str(revision)
        if attn_implementation is not None:
            load_options["attn_implementation"] = str(attn_implementation)
        if device_map is not None:
            load_options["device_map"] = device_map
        self.batch_size = batch_size
        from transformers.utils import logging as hf_logging

        # transformers' "Loading weights" bar would interleave with the probe's own progress bar.
        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(
                self.path, trust_remote_code=trust_remote_code,
                **({"revision": load_options["revision"]} if revision is not None else {}))
            self.model = AutoModelForCausalLM.from_pretrained(self.path, dtype=torch_dtype, **load_options)
            if device_map is None:
                self.model = self.model.to(self.device)
            else:  # accelerate placed the layers; inputs go where the embeddings are
                self.device = self.model.get_input_embeddings().weight.device
        finally:
            if bars:
                hf_logging.enable_progress_bar()
        self.model.eval()
        self.dtype = self.model.dtype
        self.num_layers = self.model.config.get_text_config().num_hidden_layers
        # transformers renamed forward's `past_key_values` to `cache` (the old name warns on every call,
        # and goes away in 5.40); older releases only know the old one.
        params = inspect.signature(self.model.forward).parameters
        self._cache_kwarg = "cache" if "cache" in params else "past_key_values"
        stops = set()
        for src in (self.model.generation_config.eos_token_id, self.tokenizer.eos_token_id):
            if src is None:
                continue
            stops.update(src if isinstance(src, (list, tuple)) else [src])
        if not stops:
            raise ConfigError(f"model {model} defines no end token (eos_token_id); cannot tell when a sample ends")
        self.stop_ids = stops
        self.has_chat_template = bool(getattr(self.tokenizer, "chat_template", None))
        self._identity = None
        self.stats = {"prefill_tokens": 0, "prompts_prefilled": 0, "decode_steps": 0, "slot_steps": 0,
                      "live_slot_steps": 0, "compactions": 0, "grows": 0}

    # ------------------------------------------------------------------------------------ interface

    def identity(self) -> dict:
        if self._identity is None:
            ident = model_identity(self.path)
            ident.update({"name": self.model_name, "backend": self.name, "dtype": str(self.dtype).replace("torch.", ""),
                          "chat_template": self.has_chat_template})
            self._identity = ident
        return self._identity

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        return list(self.generate_stream(requests))

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        """Token ids of the chat-formatted prompt, ending with the assistant turn's opening."""
        if self.has_chat_template:
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:
            # A base model without a chat template: the turns as plain paragraphs.
            text = "\n\n".join(m["content"] for m in messages) + "\n\n"
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    # ------------------------------------------------------------------------------------ scheduler

    def generate_stream(self, requests: list[GenerationRequest]) -> Iterator[GenerationResult]:
        """Yield each sample as soon as it ends (order is by completion, not by request)."""
        import torch

        with torch.inference_mode():
            yield from self._run(requests)

    def _prefill(self, request: GenerationRequest) -> _Prompt:
        import torch
        from transformers import DynamicCache

        ids = self.prompt_ids(request.messages)
        if not ids:
            raise ConfigError(f"problem {request.key}: the prompt is empty after formatting")
        input_ids = torch.tensor([ids], device=self.device)
        cache = DynamicCache()
        out = self.model(input_ids=input_ids, use_cache=True, logits_to_keep=1, **{self._cache_kwarg: cache})
        self.stats["prefill_tokens"] += len(ids)
        self.stats["prompts_prefilled"] += 1
        layers = cache.layers  # filled in place by the forward pass
        prompt = _Prompt(request=request, keys=[layer.keys for layer in layers],
                         values=[layer.values for layer in layers], logits=out.logits[0, -1].float(),
                         length=len(ids))
        prompt.pending.extend(zip(request.sample_indices, request.seeds))
        return prompt

    def _run(self, requests: list[GenerationRequest]) -> Iterator[GenerationResult]:
        import torch

        todo = deque(r for r in requests if r.sample_indices)
        prompts: deque[_Prompt] = deque()
        state = _SlotState()
        cache = _slot_cache(state, self.num_layers)
        rows: list[_Row | None] = []
        next_tok = pos = None
        # No more slots than samples: a small request must not decode a mostly empty batch.
        capacity = max(1, min(self.batch_size, sum(len(r.sample_indices) for r in todo)))

        def finished(row: _Row, reason: str) -> GenerationResult:
            toks = row.tokens[:-1] if reason == "stop" else row.tokens
            text = self.tokenizer.decode(toks, skip_special_tokens=True)
            return GenerationResult(key=row.request.key, sample_idx=row.sample_idx, text=text,
                                    n_tokens=len(row.tokens), finish_reason=reason)

        def allocate(prompt: _Prompt):
            nonlocal next_tok, pos
            k0 = prompt.keys[0]
            need = prompt.length + max(r.params.max_new_tokens for r in [prompt.request]) + 1
            cap = max(2 * need, 64)
            state.K = [torch.zeros((capacity, k0.shape[1], cap, k0.shape[3]), dtype=k0.dtype, device=k0.device)
                       for _ in range(self.num_layers)]
            state.V = [torch.zeros_like(k) for k in state.K]
            state.valid = torch.zeros((capacity, cap), dtype=torch.bool, device=k0.device)
            state.T = 0
            rows.extend([None] * capacity)
            next_tok = torch.zeros(capacity, dtype=torch.long, device=k0.device)
            pos = torch.zeros(capacity, dtype=torch.long, device=k0.device)

        def make_room(min_pointer: int = 0):
            """Ensure column max(T, min_pointer) fits: drop columns no live row uses, else grow."""
            cap = state.valid.shape[1]
            if max(state.T, min_pointer) + 1 <= cap:
                return
            live = [r.start for r in rows if r is not None]
            shift = min(live) if live else state.T
            if shift > 0:
                self.stats["compactions"] += 1
                keep = state.T - shift
                for buf in state.K + state.V:
                    buf[:, :, :keep] = buf[:, :, shift:state.T].clone()
                state.valid[:, :keep] = state.valid[:, shift:state.T].clone()
                state.valid[:, keep:] = False
                for r in rows:
                    if r is not None:
                        r.start -= shift
                state.T = keep
            need = max(state.T, min_pointer) + 1
            if need > cap:
                self.stats["grows"] += 1
                grow = max(need, int(cap * 1.5)) - cap
                for i, buf in enumerate(state.K):
                    state.K[i] = torch.cat([buf, buf.new_zeros(buf.shape[:2] + (grow,) + buf.shape[3:])], dim=2)
                for i, buf in enumerate(state.V):
                    state.V[i] = torch.cat([buf, buf.new_zeros(buf.shape[:2] + (grow,) + buf.shape[3:])], dim=2)
                state.valid = torch.cat([state.valid, state.valid.new_zeros((state.valid.shape[0], grow))], dim=1)

        def admit(slot: int, prompt: _Prompt, sample_idx: int, seed: int) -> GenerationResult | None:
            """Start one sample in `slot`; returns its result at once if it ends on its first token."""
            params = prompt.request.params
            gen = torch.Generator(device="cpu")
            gen.manual_seed(seed)
            row = _Row(prompt.request, sample_idx, gen, [], 0)
            tok = sample_rows(prompt.logits[None], [params.temperature], [params.top_p], [gen])[0]
            row.tokens.append(tok)
            if tok in self.stop_ids:
                return finished(row, "stop")
            if params.max_new_tokens <= 1:
                return finished(row, "length")
            L = prompt.length
            make_room(L)
            if state.T < L:
                # Jump the write pointer forward; the skipped columns are masked out for live rows.
                state.valid[:, state.T:L] = False
                state.T = L
            t = state.T
            for i in range(self.num_layers):
                state.K[i][slot, :, t - L:t] = prompt.keys[i][0]
                state.V[i][slot, :, t - L:t] = prompt.values[i][0]
            state.valid[slot] = False
            state.valid[slot, t - L:t] = True
            row.start = t - L
            rows[slot] = row
            next_tok[slot] = tok
            pos[slot] = L
            return None

        def next_sample():
            while prompts and not prompts[0].pending:
                prompts.popleft()
            if not prompts:
                if not todo:
                    return None
                prompts.append(self._prefill(todo.popleft()))
            prompt = prompts[0]
            sample_idx, seed = prompt.pending.popleft()
            return prompt, sample_idx, seed

        while True:
            # Refill free slots from pending samples.
            for slot in range(len(rows) if rows else capacity):
                if rows and rows[slot] is not None:
                    continue
                while True:
                    nxt = next_sample()
                    if nxt is None:
                        break
                    if not rows:
                        allocate(nxt[0])
                    result = admit(slot, *nxt)
                    if result is None:
                        break
                    yield result
                if nxt is None:
                    break
            live = [i for i, r in enumerate(rows) if r is not None]
            if not live:
                return
            # Out of pending work: shrink the batch so the tail does not drag dead slots along.
            if not todo and not any(p.pending for p in prompts) and len(live) <= len(rows) // 2:
                idx = torch.tensor(live, device=next_tok.device)
                state.K = [b.index_select(0, idx) for b in state.K]
                state.V = [b.index_select(0, idx) for b in state.V]
                state.valid = state.valid.index_select(0, idx)
                next_tok, pos = next_tok.index_select(0, idx), pos.index_select(0, idx)
                rows[:] = [rows[i] for i in live]
                live = list(range(len(rows)))
            make_room()
            t = state.T
            state.valid[:, t] = True
            mask = state.valid[:, : t + 1][:, None, None, :]
            out = self.model(input_ids=next_tok[:, None], position_ids=pos[:, None], attention_mask=mask,
                             use_cache=True, **{self._cache_kwarg: cache})
            state.T = t + 1
            logits = out.logits[:, -1].float()
            self.stats["decode_steps"] += 1
            self.stats["slot_steps"] += len(rows)
            self.stats["live_slot_steps"] += len(live)
            live_params = [rows[i].request.params for i in live]
            toks = sample_rows(logits.index_select(0, torch.tensor(live, device=logits.device)),
                               [p.temperature for p in live_params], [p.top_p for p in live_params],
                               [rows[i].generator for i in live])
            for i, tok, params in zip(live, toks, live_params):
                row = rows[i]
                row.tokens.append(tok)
                next_tok[i] = tok
                pos[i] += 1
                if tok in self.stop_ids:
                    rows[i] = None
                    yield finished(row, "stop")
                elif len(row.tokens) >= params.max_new_tokens:
                    rows[i] = None
                    yield finished(row, "length")

    def close(self) -> None:
        self.model = None
