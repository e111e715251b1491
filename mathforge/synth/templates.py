"""Synthesis prompt templates: Jinja2 files in `prompts/`, each carrying a version string, rendered
and versioned by `mathforge.prompt.Template` (the one mechanism for every prompt we send).

A template's identity is `name@version#hash` (hash of its source and of the partials it uses): it
goes into every record's lineage and into every request key, and the rendered text is what the
engine's cache hashes, so editing a prompt never reuses stale responses.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from mathforge.prompt import load_template

PROMPT_DIR = Path(__file__).parent / "prompts"


@dataclass(frozen=True)
class Prompt:
    text: str
    version: str  # name@version#hash


@cache
def template_id(name: str) -> str:
    """`name@version#hash8` of a template; raises if the file has no version string."""
    version = load_template(PROMPT_DIR / f"{name}.j2").version
    if "#" not in version:
        raise ValueError(f"{PROMPT_DIR / name}.j2: missing '{{#- version: N -#}}' line")
    return version


def render(name: str, **variables: Any) -> Prompt:
    """Render template `name` (without `.j2`); missing variables are errors, not blanks."""
    return Prompt(load_template(PROMPT_DIR / f"{name}.j2").render(**variables), template_id(name))
