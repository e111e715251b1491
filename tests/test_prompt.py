"""The one prompt-template mechanism (`mathforge.prompt.Template`) behind synthesis, `generate`,
the judges and evaluation."""

import itertools
import os

import pytest

from mathforge import prompt
from mathforge.engine.generate import load_template as generate_template
from mathforge.io import DataError
from mathforge.quality.judge import load_template as judge_template
from mathforge.synth.templates import PROMPT_DIR, template_id

_CLOCK = itertools.count(1)


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    os.utime(path, ns=(0, next(_CLOCK) * 1_000_000_000))  # a new file version even within one clock tick


def test_version_covers_partials_and_declared_version(tmp_path):
    _write(tmp_path / "_base.j2", "Solve: {% block task %}{% endblock %}")
    _write(tmp_path / "child.j2", '{#- version: 3 -#}\n{% extends "_base.j2" %}{% block task %}{{ problem }}{% endblock %}')
    first = prompt.load_template("child", tmp_path)
    version = first.version
    assert version.startswith("child@3#") and first.render(problem="1+1") == "Solve: 1+1"
    _write(tmp_path / "_base.j2", "Solve carefully: {% block task %}{% endblock %}")
    second = prompt.load_template("child", tmp_path)  # the edited partial is read again
    assert second.version.startswith("child@3#") and second.version != version
    assert second.render(problem="1+1") == "Solve carefully: 1+1"


def test_rows_missing_variables_and_syntax_errors(tmp_path):
    _write(tmp_path / "t.j2", "{{ problem }} / {{ row['level'] }}\n")
    t = prompt.load_template(tmp_path / "t.j2")
    assert t.render({"problem": "p", "level": 3}) == "p / 3" and t.version.startswith("t@")
    with pytest.raises(Exception, match="problem"):
        t.render(level=3)  # StrictUndefined: never a silently empty prompt
    _write(tmp_path / "bad.j2", "{{ problem ")
    with pytest.raises(DataError, match=r"bad\.j2:1"):
        prompt.load_template(tmp_path / "bad.j2")
    with pytest.raises(FileNotFoundError, match="neither a file"):
        prompt.load_template("nope", tmp_path)


def test_every_caller_uses_the_one_mechanism():
    assert isinstance(generate_template("solve"), prompt.Template)
    template, version = judge_template("verifier_v1.j2")
    assert isinstance(template, prompt.Template) and version == template.version
    synth = prompt.load_template(PROMPT_DIR / "metamath_answer.j2")
    assert template_id("metamath_answer") == synth.version
