"""How a problem is put to the model, and how a demonstration is written the same way.

The probe, `eval`, the exporters and the trainer all build messages here, so the prompt the trainer
sees is exactly the one the probe measured mastery with. Templates substitute the literal text
`{prompt}` (not str.format: questions and `\\boxed{}` are full of braces).
"""

from __future__ import annotations

import functools
import re

from stagewise.curate.errors import ConfigError
from stagewise.curate.verifiers import task_of

PLACEHOLDER = "{prompt}"

BOXED_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."

# reasoning-gym's own default instruction (reasoning_gym.utils.SYSTEM_PROMPTS["default"]), copied so the
# prompt does not change under us when reasoning-gym is upgraded.
RG_SYSTEM_PROMPT = (
    "Given a problem, your task is to answer the question by thinking step-by-step in a clear and specific "
    "manner.\nOnce you have thought about the reasoning process, provide the answer in the following format:\n"
    "<answer>answer here</answer>\nDo not explain your reasoning inside the answer tags, provide only the "
    "final answer. When an example is provided, you should strictly follow the format of the output/answer "
    "in that example.\n"
)

# Per task family: (system prompt or None, user template).
DEFAULT_TEMPLATES: dict[str, dict] = {
    "boxed": {"system_prompt": None, "prompt_template": "{prompt}\n" + BOXED_INSTRUCTION},
    "rg": {"system_prompt": RG_SYSTEM_PROMPT, "prompt_template": "{prompt}"},
}


def task_family(task: str) -> str:
    """"rg" for reasoning-gym tasks, "boxed" for gsm8k, math and everything else."""
    return "rg" if (task or "").startswith("rg:") else "boxed"


def _field(problem, name: str, default=None):
    if isinstance(problem, dict):
        return problem.get(name, default)
    return getattr(problem, name, default)


@functools.lru_cache(maxsize=1024)  # called once per exported row with a handful of distinct arguments
def resolve_prompting(task: str, system_prompt: str | None = None,
                      prompt_template: str | None = None) -> tuple[str | None, str]:
    """The (system prompt, template) used for a task: explicit values win over the family default.
    An empty system prompt ("") means none."""
    family = DEFAULT_TEMPLATES[task_family(task)]
    system = family["system_prompt"] if system_prompt is None else (system_prompt or None)
    template = family["prompt_template"] if prompt_template is None else prompt_template
    if PLACEHOLDER not in template:
        raise ConfigError(f"--prompt-template {template!r} has no {PLACEHOLDER} placeholder; "
                          f"add one where the question goes, e.g. '{PLACEHOLDER}\\n{BOXED_INSTRUCTION}'")
    return system, template


def build_messages(problem, *, system_prompt: str | None = None, prompt_template: str | None = None) -> list[dict]:
    """Chat messages for one problem (a Problem or a dict with prompt/task). A problem that carries its
    own `messages` (an exported row) is asked exactly that, whatever the prompting options."""
    own = _field(problem, "messages")
    if own:
        return [dict(m) for m in own]
    system, template = resolve_prompting(task_of(problem), system_prompt, prompt_template)
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": template.replace(PLACEHOLDER, _field(problem, "prompt", ""))})
    return messages


def prompting_record(tasks, system_prompt: str | None, prompt_template: str | None) -> dict:
    """What the run config records: the options as given and the resolved pair per task family present."""
    resolved = {}
    for task in sorted(set(tasks)):
        fam = task_family(task)
        if fam not in resolved:
            system, template = resolve_prompting(task, system_prompt, prompt_template)
            resolved[fam] = {"system_prompt": system, "prompt_template": template}
    return {"system_prompt": system_prompt, "prompt_template": prompt_template, "resolved": resolved}


def answer_format(task: str, *, system_prompt: str | None = None, prompt_template: str | None = None) -> str:
    """"tags" if the prompt asks for <answer></answer>, else "boxed"."""
    system, template = resolve_prompting(task, system_prompt, prompt_template)
    asked = (system or "") + template
    if "<answer>" in asked:
        return "tags"
    if "boxed" in asked:
        return "boxed"
    return "tags" if task_family(task) == "rg" else "boxed"


_GSM8K_CALC = re.compile(r"<<[^<>]*>>")
_GSM8K_FINAL = re.compile(r"\n?####\s*(.*)\s*$", re.DOTALL)


def format_target(solution: str | None, answer: str, problem, prompt_template: str | None = None, *,
                  system_prompt: str | None = None) -> str:
    """A demonstration written the way the prompt asked for the answer: the worked solution (if any),
    then the final answer in \\boxed{} or in <answer></answer> tags."""
    task = task_of(problem)
    fmt = answer_format(task, system_prompt=system_prompt, prompt_template=prompt_template)
    body = (solution or "").strip()
    # GSM8K solutions carry calculator annotations (<<48/2=24>>) and a "#### 72" line: drop both,
    # the answer is restated in the requested format below.
    body = _GSM8K_CALC.sub("", body)
    body = _GSM8K_FINAL.sub("", body).rstrip()
    answer = str(answer).strip()
    if fmt == "tags":
        if re.search(r"<answer>.*</answer>", body, re.DOTALL):
            return body
        tail = f"<answer>{answer}</answer>"
    else:
        if "\\boxed{" in body:
            return body
        tail = f"The final answer is \\boxed{{{answer}}}."
    return f"{body}\n{tail}" if body else tail
