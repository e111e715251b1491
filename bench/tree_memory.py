"""Wall time and peak memory of a command's whole process tree (children, their children, ...).

    python bench/tree_memory.py --out runs/paper_mini.memory.json -- \
        python -m mathforge.cli run recipes/paper_mini.yaml --out runs/paper_mini

Samples every 0.5 s: the summed RSS of the tree (pages shared between processes, such as torch's
libraries in every training worker, counted once per process: an upper bound) and the summed PSS
(each shared page divided among the processes that map it: what the tree really holds). Prints and
writes both peaks and the wall time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import threading
import time
from pathlib import Path

import psutil


def sample(proc: psutil.Popen, peak: dict[str, int]) -> None:
    while proc.poll() is None:
        rss = pss = 0
        for p in [proc, *proc.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                info = p.memory_full_info()
                rss, pss = rss + info.rss, pss + info.pss
        peak["rss"], peak["pss"] = max(peak["rss"], rss), max(peak["pss"], pss)
        time.sleep(0.5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="write the figures here as JSON")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command")
    args = ap.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        ap.error("no command given (put it after --)")
    start = time.monotonic()
    proc = psutil.Popen(command)
    peak = {"rss": 0, "pss": 0}
    thread = threading.Thread(target=sample, args=(proc, peak), daemon=True)
    thread.start()
    code = proc.wait()
    thread.join()
    result = {"command": command, "exit": code, "seconds": round(time.monotonic() - start, 1),
              "peak_tree_rss_gib": round(peak["rss"] / 2**30, 3), "peak_tree_pss_gib": round(peak["pss"] / 2**30, 3)}
    print(json.dumps(result), file=sys.stderr)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
    sys.exit(code)


if __name__ == "__main__":
    main()
