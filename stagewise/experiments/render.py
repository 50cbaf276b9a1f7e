"""Render ladder items into text exactly as the toolkit does (prompt messages, target format).

Pretraining must teach the very format the probe sends and the verifier reads, so both strings come
from `curate.prompts` (`build_messages`, `format_target`) and the tiny model's chat template.
"""

from __future__ import annotations

from functools import lru_cache

from stagewise.curate.models import build_char_tokenizer
from stagewise.curate.prompts import build_messages, format_target


@lru_cache(maxsize=1)
def _tokenizer():
    # The experiment's model is built with this tokenizer, so its chat template is the one the probe uses.

    return build_char_tokenizer()


def messages_for(problem, prompt_template: str | None) -> list[dict]:
    return build_messages(problem, prompt_template=prompt_template)


def render_prompt(problem, prompt_template: str | None) -> str:
    """The chat-templated prompt, ending with the assistant tag (what generation continues from)."""
    return _tokenizer().apply_chat_template(messages_for(problem, prompt_template), tokenize=False,
                                            add_generation_prompt=True)


def render_target(problem, prompt_template: str | None) -> str:
    """The worked solution formatted the way the prompt asks for the answer (the SFT target)."""
    return format_target(problem.solution, problem.answer, problem, prompt_template)
