"""Prompts: the SFT prompt, one format shared by training and evaluation (the paper's rule,
§4.1.3), and `Template`, the one mechanism that renders and versions teacher and judge prompts.

The default is the MetaMath/Alpaca template the paper's SFT follows; every response ends with
the answer line of `mathforge.answers` ("\nThe answer is X"). `chat` uses the student's own chat
template instead.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path
from typing import Any, Literal

import jinja2

from mathforge.io import DataError

PromptStyle = Literal["alpaca", "chat", "plain"]

ALPACA = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{problem}\n\n### Response: Let's think step by step."
)


def format_prompt(problem: str, style: PromptStyle = "alpaca", tokenizer: Any = None) -> str:
    """The text a student sees before its response, for training and evaluation alike."""
    if style == "alpaca":
        return ALPACA.format(problem=problem.strip())
    if style == "plain":
        return f"Question: {problem.strip()}\nAnswer: Let's think step by step."
    if style == "chat":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError("prompt style 'chat' needs a tokenizer with a chat template")
        messages = [{"role": "user", "content": problem.strip()}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    raise ValueError(f"unknown prompt style '{style}' (alpaca, chat, plain)")


# ---------------------------------------------------------------- teacher, judge and generate templates

_VERSION = re.compile(r"\{#-?\s*version:\s*(\S+)\s*-?#\}")
_PARTIAL = re.compile(r'\{%-?\s*(?:include|extends|import|from)\s+"([^"]+)"')


@dataclass(frozen=True)
class Template:
    """A Jinja2 prompt template file: the one mechanism that renders and versions every prompt sent
    to a teacher or judge (synthesis, `generate`, the judges, decontamination, evaluation).

    `version` is `name@declared#hash8` (`name@hash8` when the file declares no `{# version: N #}`):
    the hash covers the source and every partial it includes or extends, so editing any of them
    changes the version, which goes into request keys and record lineage; responses cached for an
    older prompt are never reused.
    """

    path: Path
    source: str

    @property
    def name(self) -> str:
        return self.path.name.removesuffix(".j2")

    @property
    def version(self) -> str:  # not cached: a partial edited on disk changes it
        h = hashlib.sha256(self.source.encode())
        for partial in sorted(set(_PARTIAL.findall(self.source))):
            h.update(load_template(self.path.parent / partial).version.encode())
        declared = _VERSION.search(self.source)
        return f"{self.name}@{declared.group(1) + '#' if declared else ''}{h.hexdigest()[:8]}"

    @cached_property
    def compiled(self) -> jinja2.Template:
        # StrictUndefined: a missing variable is an error, never a silently empty prompt.
        env = jinja2.Environment(loader=jinja2.FileSystemLoader(self.path.parent), undefined=jinja2.StrictUndefined,
                                 autoescape=False)  # noqa: S701 - plain-text prompts, not HTML
        return env.from_string(self.source)

    def render(self, fields: dict[str, Any] | None = None, /, **variables: Any) -> str:
        """The prompt text, stripped; a row's `fields` are variables and the whole row is `row`."""
        if fields is not None:
            variables = {**fields, "row": fields, **variables}
        return self.compiled.render(**variables).strip()


@cache
def _load(path: Path, mtime_ns: int) -> Template:
    source = path.read_text(encoding="utf-8")
    try:
        jinja2.Environment().parse(source)
    except jinja2.TemplateSyntaxError as e:
        raise DataError(f"{path}:{e.lineno}: template syntax error: {e.message}") from e
    return Template(path, source)


def load_template(spec: str | Path, folder: Path | None = None) -> Template:
    """A template from a file path, or by name (with or without `.j2`) from `folder`; loaded once
    per file version (a file edited on disk is read again)."""
    path = Path(spec)
    if not path.exists() and folder is not None:
        path = folder / (path.name if path.name.endswith(".j2") else f"{path.name}.j2")
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in folder.glob("*.j2"))) if folder else ""
        raise FileNotFoundError(f"template '{spec}' is neither a file nor a shipped template ({known})")
    path = path.resolve()
    return _load(path, path.stat().st_mtime_ns)
