"""The HTTP intake benchmark's floor: the same ASGI server as ``broker api`` (uvicorn, with the same HTTP parser and
event loop), answering 202 after one INSERT of the request's body into PostgreSQL, in its own committed transaction.

Nothing is validated, authenticated, routed or audited: this is what durably recording a POST costs on this machine
with nothing of Casebridge in the way, so the broker's figures can be read against it.

    python bench/http_floor.py --port 8099 --database-url postgresql://postgres@127.0.0.1:5432/bench
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
import uvicorn

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

CONNECTIONS = 10  # the broker's own pool size (SQLAlchemy's default, 5 + 5 overflow)
ACCEPTED = b'{"accepted": true}'


class Floor:
    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.idle: asyncio.Queue[psycopg.AsyncConnection[Any]] = asyncio.Queue()

    async def open(self) -> None:
        for _ in range(CONNECTIONS):
            self.idle.put_nowait(await psycopg.AsyncConnection.connect(self.database_url, autocommit=True))
        connection = await self.idle.get()
        await connection.execute("CREATE TABLE IF NOT EXISTS floor_cases (id bigserial PRIMARY KEY, body jsonb)")
        self.idle.put_nowait(connection)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                if message["type"] == "lifespan.startup":
                    await self.open()
                    await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["method"] == "POST":
            connection = await self.idle.get()
            try:
                await connection.execute("INSERT INTO floor_cases (body) VALUES (%s)", (body.decode(),))
            finally:
                self.idle.put_nowait(connection)
            status, reply = 202, ACCEPTED
        else:
            status, reply = 200, b"{}"
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(reply)).encode())]})
        await send({"type": "http.response.body", "body": reply})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database-url", required=True)
    args = parser.parse_args()
    uvicorn.run(Floor(args.database_url), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
