"""Prompt templates: Jinja2 files in `prompts/`, each carrying a version string.

A template's identity is `name@version#hash` (hash of its source and of the partials it uses): it
goes into every record's lineage and into every request key, and the rendered text is what the
engine's cache hashes, so editing a prompt never reuses stale responses.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

PROMPT_DIR = Path(__file__).parent / "prompts"
_VERSION = re.compile(r"\{#-?\s*version:\s*(\S+)\s*-?#\}")
_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(PROMPT_DIR), undefined=jinja2.StrictUndefined, keep_trailing_newline=False,
    autoescape=False,  # noqa: S701 - plain-text prompts, not HTML
)


@dataclass(frozen=True)
class Prompt:
    text: str
    version: str  # name@version#hash


@cache
def template_id(name: str) -> str:
    """`name@version#hash8` of a template; raises if the file has no version string."""
    source = (PROMPT_DIR / f"{name}.j2").read_text(encoding="utf-8")
    m = _VERSION.search(source)
    if not m:
        raise ValueError(f"{PROMPT_DIR / name}.j2: missing '{{#- version: N -#}}' line")
    h = hashlib.sha256(source.encode())
    for partial in sorted(set(re.findall(r'\{%-?\s*(?:include|extends)\s+"([^"]+)"', source))):
        h.update(template_id(partial.removesuffix(".j2")).encode())
    return f"{name}@{m.group(1)}#{h.hexdigest()[:8]}"


def render(name: str, **variables: Any) -> Prompt:
    """Render template `name` (without `.j2`); missing variables are errors, not blanks."""
    text = _ENV.get_template(f"{name}.j2").render(**variables).strip()
    return Prompt(text, template_id(name))
