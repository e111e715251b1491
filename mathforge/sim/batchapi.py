"""The batch API of `mathforge teacher-sim`: `/v1/files` and `/v1/batches`, as OpenAI serves them.

Files: upload (multipart, purpose=batch), list, retrieve, `/content` download. Batches: create,
retrieve, cancel, list (newest first, `after` / `limit` paging, metadata kept). A batch's lines are
answered by POSTing each to the simulator's own completion endpoint, so whichever world answers
online requests answers batches, and the simulator's log has one line per request answered, online
or in a batch; a batch creation is logged too (`"status": "batch_created"`). A batch completes no
earlier than `delay_s` after its creation. Faults, each decided by a hash (a retry is a new draw):

- `fail_rate`: a share of lines go to the error file (HTTP 500) without being answered;
- `expire_rate` (per batch) and `expire_first` (the first N batches created): the batch expires
  after answering only the first `expire_share` of its lines, with those in its output file;
- `lose_first`: the first N batches created are lost: created, then never run and unknown
  (HTTP 404) to retrieve and list, as a provider that dropped them (logged `"batch_lost"`);
- `poll_status`: every retrieve of a batch answers this HTTP status (an outage of polling only).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
from dataclasses import dataclass
from typing import IO, Any

from aiohttp import ClientSession, web


@dataclass(frozen=True)
class BatchSimConfig:
    """How the simulated batch API behaves; each field is a `mathforge teacher-sim --batch-*` flag."""

    delay_s: float = 0.0
    fail_rate: float = 0.0
    expire_rate: float = 0.0
    expire_first: int = 0
    expire_share: float = 0.5
    lose_first: int = 0
    poll_status: int = 0
    concurrency: int = 256  # lines answered at once within the simulator
    seed: int = 0


class BatchAPI:
    """Files and batches in memory, served on the simulator's aiohttp app (`install`)."""

    def __init__(self, cfg: BatchSimConfig = BatchSimConfig(), log: IO[str] | None = None):
        self.cfg = cfg
        self.log = log
        self.files: dict[str, dict[str, Any]] = {}
        self.contents: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.created = 0
        self._tasks: set[asyncio.Task] = set()

    def install(self, app: web.Application) -> web.Application:
        app.router.add_post("/v1/files", self.upload)
        app.router.add_get("/v1/files", self.list_files)
        app.router.add_get("/v1/files/{id}", self.file)
        app.router.add_get("/v1/files/{id}/content", self.content)
        app.router.add_post("/v1/batches", self.create)
        app.router.add_get("/v1/batches", self.list_batches)
        app.router.add_get("/v1/batches/{id}", self.batch)
        app.router.add_post("/v1/batches/{id}/cancel", self.cancel)
        return app

    # -- files ----------------------------------------------------------------------------------

    async def upload(self, request: web.Request) -> web.Response:
        # Streamed part by part: batch files reach 200 MB, past aiohttp's 1 MB limit on a read body.
        fields: dict[str, Any] = {}
        async for part in await request.multipart():
            chunks = []
            while chunk := await part.read_chunk():
                chunks.append(chunk)
            fields[part.name] = (b"".join(chunks), part.filename)
        if "file" not in fields:
            return _error(400, "a multipart field 'file' is required")
        purpose = fields.get("purpose", (b"batch", None))[0].decode()
        return web.json_response(self._store(fields["file"][0], fields["file"][1] or "upload.jsonl", purpose))

    def _store(self, data: bytes, filename: str, purpose: str) -> dict[str, Any]:
        fid = f"file-{hashlib.sha256(data).hexdigest()[:12]}-{len(self.files)}"
        self.files[fid] = {"id": fid, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                           "filename": filename, "purpose": purpose, "status": "processed"}
        self.contents[fid] = data
        return self.files[fid]

    async def list_files(self, request: web.Request) -> web.Response:
        purpose = request.query.get("purpose")
        data = [f for f in self.files.values() if purpose in (None, f["purpose"])]
        return web.json_response({"object": "list", "data": data[::-1], "has_more": False})

    async def file(self, request: web.Request) -> web.Response:
        f = self.files.get(request.match_info["id"])
        return web.json_response(f) if f else _error(404, "no such file")

    async def content(self, request: web.Request) -> web.Response:
        data = self.contents.get(request.match_info["id"])
        return web.Response(body=data, content_type="application/jsonl") if data is not None else _error(404, "no such file")

    # -- batches --------------------------------------------------------------------------------

    async def create(self, request: web.Request) -> web.Response:
        body = await request.json()
        data = self.contents.get(body.get("input_file_id", ""))
        if data is None:
            return _error(400, f"no such input file: {body.get('input_file_id')}")
        try:
            lines = [json.loads(x) for x in data.decode().splitlines() if x.strip()]
        except json.JSONDecodeError as e:
            return _error(400, f"the input file is not JSONL: {e}")
        self.created += 1
        bid = f"batch_{hashlib.sha256(data + str(self.created).encode()).hexdigest()[:16]}"
        expire = self.created <= self.cfg.expire_first or random.Random(f"{self.cfg.seed}/{bid}").random() < self.cfg.expire_rate
        batch = {"id": bid, "object": "batch", "endpoint": body.get("endpoint"), "errors": None,
                 "input_file_id": body["input_file_id"], "completion_window": body.get("completion_window", "24h"),
                 "status": "in_progress", "output_file_id": None, "error_file_id": None,
                 "created_at": int(time.time()), "metadata": body.get("metadata") or {},
                 "request_counts": {"total": len(lines), "completed": 0, "failed": 0}}
        self._log({"status": "batch_created", "batch": bid, "requests": len(lines),
                   "hash": batch["metadata"].get("content_hash"), "expires": expire})
        if self.created <= self.cfg.lose_first:
            self._log({"status": "batch_lost", "batch": bid})
            return web.json_response(batch)
        self.batches[bid] = batch
        task = asyncio.get_running_loop().create_task(self._process(batch, lines, f"http://{request.host}", expire))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return web.json_response(batch)

    async def list_batches(self, request: web.Request) -> web.Response:
        ordered = list(self.batches.values())[::-1]
        after = request.query.get("after")
        if after:
            ids = [b["id"] for b in ordered]
            ordered = ordered[ids.index(after) + 1:] if after in ids else []
        limit = int(request.query.get("limit", "20"))
        page = ordered[:limit]
        return web.json_response({"object": "list", "data": page, "has_more": len(ordered) > limit,
                                  "first_id": page[0]["id"] if page else None,
                                  "last_id": page[-1]["id"] if page else None})

    async def batch(self, request: web.Request) -> web.Response:
        if self.cfg.poll_status:
            return _error(self.cfg.poll_status, "simulated polling failure")
        b = self.batches.get(request.match_info["id"])
        return web.json_response(b) if b else _error(404, "no such batch")

    async def cancel(self, request: web.Request) -> web.Response:
        b = self.batches.get(request.match_info["id"])
        if b is None:
            return _error(404, "no such batch")
        if b["status"] == "in_progress":
            b["status"] = "cancelling"
        return web.json_response(b)

    async def _process(self, batch: dict[str, Any], lines: list[dict[str, Any]], origin: str, expire: bool) -> None:
        """Answer the lines (all, or the first share of an expiring batch), then publish the files."""
        start = time.monotonic()
        todo = lines[: int(len(lines) * self.cfg.expire_share)] if expire else lines
        outputs: list[str] = []
        errors: list[str] = []
        gate = asyncio.Semaphore(self.cfg.concurrency)
        async with ClientSession() as session:

            async def one(line: dict[str, Any]) -> None:
                async with gate:
                    if batch["status"] == "cancelling":
                        return
                    row = await self._answer(session, origin, batch["id"], line)
                    (outputs if row["response"]["status_code"] == 200 else errors).append(json.dumps(row))

            await asyncio.gather(*(one(x) for x in todo))
        await asyncio.sleep(max(0.0, self.cfg.delay_s - (time.monotonic() - start)))
        batch["request_counts"].update(completed=len(outputs), failed=len(errors))
        if outputs:
            batch["output_file_id"] = self._store("".join(x + "\n" for x in outputs).encode(), "output.jsonl",
                                                  "batch_output")["id"]
        if errors:
            batch["error_file_id"] = self._store("".join(x + "\n" for x in errors).encode(), "errors.jsonl",
                                                 "batch_output")["id"]
        batch["status"] = "cancelled" if batch["status"] == "cancelling" else "expired" if expire else "completed"
        self._log({"status": "batch_" + batch["status"], "batch": batch["id"], "answered": len(outputs),
                   "failed": len(errors)})

    async def _answer(self, session: ClientSession, origin: str, bid: str, line: dict[str, Any]) -> dict[str, Any]:
        cid = line.get("custom_id")
        row = {"id": f"batch_req_{hashlib.sha256(f'{bid}/{cid}'.encode()).hexdigest()[:16]}", "custom_id": cid,
               "error": None}
        if random.Random(f"{self.cfg.seed}/{bid}/{cid}").random() < self.cfg.fail_rate:
            return {**row, "response": {"status_code": 500, "body": {"error": {"message": "simulated line failure"}}}}
        headers = {k: str(v) for k, v in (line.get("headers") or {}).items()}
        try:
            async with session.post(origin + str(line.get("url")), json=line.get("body"), headers=headers) as resp:
                body = await resp.json(content_type=None)
                status = resp.status
        except Exception as e:  # noqa: BLE001 - a fault of the online path (drop, bad body) fails the line
            body, status = {"error": {"message": f"{type(e).__name__}: {e}"}}, 500
        return {**row, "response": {"status_code": status, "request_id": row["id"], "body": body}}

    def _log(self, row: dict[str, Any]) -> None:
        if self.log is not None:
            self.log.write(json.dumps({"t": round(time.time(), 4), **row}) + "\n")


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": {"message": message, "type": "invalid_request_error"}}, status=status)
