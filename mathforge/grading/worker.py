"""One symbolic-grading worker process (started by `pool.GradingPool`; not for direct use).

Run as `python -m mathforge.grading.worker IN_FD OUT_FD`: it reads (index, gold, response) jobs
from IN_FD and writes verdict tuples to OUT_FD until it gets None or its pipe closes.
"""

from __future__ import annotations

import sys
from multiprocessing.connection import Connection

from mathforge.grading.pool import READY
from mathforge.grading.symbolic import grade_unbounded


def serve(inbox: Connection, outbox: Connection) -> None:
    grade_unbounded("1", "The answer is 1")  # import and warm math-verify before saying ready
    outbox.send(READY)
    while True:
        try:
            job = inbox.recv()
        except EOFError:
            return
        if job is None:
            return
        idx, gold, response = job
        v = grade_unbounded(gold, response)
        outbox.send((idx, v.correct, v.extracted, v.reason, v.detail))


if __name__ == "__main__":
    serve(Connection(int(sys.argv[1]), writable=False), Connection(int(sys.argv[2]), readable=False))
