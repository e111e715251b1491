from dataclasses import dataclass, field

import pytest

from mathforge.config import ConfigError, config_to_dict, load_config, parse_overrides


@dataclass(frozen=True)
class Teacher:
    backend: str = "llama"
    temperature: float = 0.7
    max_tokens: int = 512


@dataclass(frozen=True)
class Recipe:
    name: str = "demo"
    seeds: tuple[str, ...] = ()
    teacher: Teacher = field(default_factory=Teacher)
    shares: dict[str, float] = field(default_factory=dict)
    budget: int | None = None


def test_yaml_plus_overrides(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("name: paper\nseeds: [a, b]\nteacher:\n  temperature: 0.5\nshares: {evol: 0.5, xwin: 0.2}\n")
    cfg = load_config(Recipe, path, ["teacher.max_tokens=2048", "budget=10", "teacher.temperature=2e-1"])
    assert cfg == Recipe(name="paper", seeds=("a", "b"), teacher=Teacher("llama", 0.2, 2048),
                         shares={"evol": 0.5, "xwin": 0.2}, budget=10)
    assert config_to_dict(cfg)["seeds"] == ["a", "b"]


def test_defaults_without_recipe():
    assert load_config(Recipe) == Recipe()


@pytest.mark.parametrize(
    "yaml_text,overrides,message",
    [
        ("nmae: x\n", [], r"r\.yaml: unknown key 'nmae'"),
        ("teacher:\n  temprature: 1\n", [], r"r\.yaml: unknown key 'teacher\.temprature'"),
        ("name: x\n", ["teacher.max_tokens=lots"], r"'teacher\.max_tokens' must be int"),
        ("seeds: a\n", [], r"'seeds' must be a list"),
        ("- 1\n", [], r"a recipe must be a mapping"),
        ("name: x\n", ["budget"], r"override 'budget' is not key=value"),
        ("", [], r"r\.yaml: empty recipe"),
        ("a: [1, 2\n", [], r"r\.yaml:2: invalid YAML \(expected ',' or '\]'"),
    ],
)
def test_errors_name_key_and_file(tmp_path, yaml_text, overrides, message):
    path = tmp_path / "r.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=message):
        load_config(Recipe, path, overrides)


def test_parse_overrides_nests():
    assert parse_overrides(["a.b.c=1", "a.d=x", "e=[1, 2]"]) == {"a": {"b": {"c": 1}, "d": "x"}, "e": [1, 2]}
