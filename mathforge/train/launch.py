"""`mathforge train --nproc N`: the same command under torch.distributed's launcher, N processes here.

torchrun sets RANK/WORLD_SIZE/MASTER_* for each child; accelerate's PartialState then joins the
process group (gloo on CPU, nccl on GPUs), the Trainer shards every global batch across ranks, and
only rank 0 writes. `--standalone` picks a free rendezvous port, so parallel runs do not collide.
The equivalent accelerate line: `accelerate launch --cpu --num_processes N -m mathforge.cli train ...`.

torchrun starts every rank in a session of its own, so a SIGKILL of the job (the launcher) would
leave the ranks training and writing on their own, racing the rerun that resumes the run. Each rank
therefore asks the kernel to kill it when its launcher dies (`die_with_launcher`).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from pathlib import Path

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def launch_command(recipe: Path, out: Path, overrides: list[str], nproc: int, *, prepare_only: bool = False,
                   as_json: bool = False) -> list[str]:
    """The torchrun command line that runs `mathforge train` in `nproc` processes."""
    flags = (["--prepare-only"] if prepare_only else []) + (["--json"] if as_json else [])
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "mathforge.cli", "train", str(recipe), "--out", str(out), *flags, *overrides]


def launch(recipe: Path, out: Path, overrides: list[str], nproc: int, *, prepare_only: bool = False,
           as_json: bool = False) -> None:
    """Become the N-process job: this process turns into torchrun (same pid), so killing it kills the job."""
    command = launch_command(recipe, out, overrides, nproc, prepare_only=prepare_only, as_json=as_json)
    sys.stdout.flush()
    os.execv(command[0], command)


def die_with_launcher() -> None:
    """Under a launcher (LOCAL_RANK set), get SIGKILLed when it dies; a no-op elsewhere."""
    if "LOCAL_RANK" in os.environ:
        die_with_parent()


def die_with_parent() -> None:
    """Get SIGKILLed when the parent process dies (a no-op off Linux): a worker never outlives its driver."""
    if not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGKILL)
