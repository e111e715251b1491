"""Where the repository and the benchmark data live: the one rule every command and recipe uses.

The data folder holds `gsm8k/` and `math/` laid out like the shared data. It is, in order: the
`--data-dir` flag or a recipe's `data_dir` field; else `$MATHFORGE_DATA`; else `../shared/data`
next to the repository. A relative path is read from the working directory when it exists there,
else from the repository root, because recipes name `../shared/data/...` relative to the repo.
"""

from __future__ import annotations

import os
from pathlib import Path

from mathforge.io import DataError

REPO_ROOT = Path(__file__).resolve().parents[1]
ENV = "MATHFORGE_DATA"
HOW = f"set --data-dir (a recipe's data_dir) or ${ENV} to the folder holding gsm8k/ and math/"
DATA_DIR_HELP = f"folder with gsm8k/ and math/ (default: ${ENV}, else ../shared/data next to the repository)"


def repo_path(path: str | Path) -> Path:
    """`path` as given when it is absolute or exists from the working directory, else the same
    path under the repository root when that exists; when neither exists, as given (so an error
    names what the user wrote)."""
    given = Path(path)
    if given.is_absolute() or given.exists() or not (REPO_ROOT / given).exists():
        return given
    return (REPO_ROOT / given).resolve()


def data_dir(explicit: str | Path | None = None) -> Path:
    """The benchmark data folder: `explicit`, else `$MATHFORGE_DATA`, else `../shared/data` next
    to the repository. It is not checked here: `data_file` says what is missing."""
    if explicit:
        return repo_path(explicit)
    env = os.environ.get(ENV)
    if env:
        return Path(env)
    return REPO_ROOT.parent / "shared" / "data"


def data_file(relative: str, explicit: str | Path | None = None) -> Path:
    """A benchmark file under the data folder; a DataError naming the path tried, the flag, the
    recipe field and the environment variable when it is absent."""
    path = data_dir(explicit) / relative
    if not path.is_file():
        raise missing(path)
    return path


def missing(path: Path) -> DataError:
    """The error for a benchmark file or folder that is not where the rule says."""
    return DataError(f"{path}: benchmark data not found ({HOW})")
