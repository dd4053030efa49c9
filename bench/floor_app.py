"""The framework's floor: ``python -m bench.floor_app``, a bare QuartTrio app on
hypercorn's trio worker with jobsvc's route shape and nothing else.

``POST /results/enqueue`` reads the JSON body, answers 202 with a small JSON document
and a Location; no database, no validation, no auth. Issue 14 measures jobsvc's
enqueue against it in the same run: whatever jobsvc costs beyond this is ours.
"""

from __future__ import annotations

import json
import uuid

import hypercorn.config
import hypercorn.trio
import trio
from quart import Response, request
from quart_trio import QuartTrio


def create_app() -> QuartTrio:
    app = QuartTrio("floor")

    @app.post("/results/enqueue")
    async def enqueue() -> Response:
        doc = json.loads(await request.get_data(as_text=False))
        body = json.dumps({"jobId": doc["jobId"], "id": uuid.uuid4().int & 0xFFFF, "status": "Queued"})
        return Response(body, 202, {"Location": f"/results/{doc['jobId']}"}, content_type="application/json")

    return app


async def main() -> None:
    config = hypercorn.config.Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None

    async with trio.open_nursery() as nursery:
        binds = await nursery.start(hypercorn.trio.serve, create_app(), config)
        print(f"bench-floor: listening on {binds[0]}", flush=True)


if __name__ == "__main__":
    trio.run(main)
