"""`mathforge train --nproc N`: the same command under torch.distributed's launcher, N processes here.

torchrun sets RANK/WORLD_SIZE/MASTER_* for each child; accelerate's PartialState then joins the
process group (gloo on CPU, nccl on GPUs), the Trainer shards every global batch across ranks, and
only rank 0 writes. `--standalone` picks a free rendezvous port, so parallel runs do not collide.
The equivalent accelerate line: `accelerate launch --cpu --num_processes N -m mathforge.cli train ...`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def launch_command(recipe: Path, out: Path, overrides: list[str], nproc: int, *, prepare_only: bool = False,
                   as_json: bool = False) -> list[str]:
    """The torchrun command line that runs `mathforge train` in `nproc` processes."""
    flags = (["--prepare-only"] if prepare_only else []) + (["--json"] if as_json else [])
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "mathforge.cli", "train", str(recipe), "--out", str(out), *flags, *overrides]


def launch(recipe: Path, out: Path, overrides: list[str], nproc: int, *, prepare_only: bool = False,
           as_json: bool = False) -> int:
    """Run the N-process job to completion; returns its exit code (non-zero when any rank failed)."""
    command = launch_command(recipe, out, overrides, nproc, prepare_only=prepare_only, as_json=as_json)
    return subprocess.run(command, check=False).returncode
