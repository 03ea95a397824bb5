"""An OpenAI-compatible stand-in that answers slowly, as agents do: every streamed answer is one
token every `--token-seconds` for `--tokens` tokens. Each token's text is the wall-clock time it
was sent (`1732800000.123456 `), so a client on the same machine sees how long the token took to
reach it through whatever stands between.

    python -m bench.slow_standin --port 18002 --tokens 60 --token-seconds 1
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from bench.upstream_standin import MODELS_BODY, _chunk, serve

_SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
_JSON_HEADERS = [(b"content-type", b"application/json")]


def make_app(tokens: int, token_seconds: float) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        more = True
        while more:
            more = (await receive()).get("more_body", False)
        if scope["method"] == "GET":
            await send({"type": "http.response.start", "status": 200, "headers": _JSON_HEADERS})
            await send({"type": "http.response.body", "body": MODELS_BODY})
            return
        await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
        body = {"type": "http.response.body", "body": b"", "more_body": True}
        loop = asyncio.get_running_loop()
        started = loop.time()
        for index in range(tokens):
            await asyncio.sleep(max(started + index * token_seconds - loop.time(), 0))
            body["body"] = _chunk({"content": f"{time.time():.6f} "})
            await send(body)
        await send({"type": "http.response.body", "body": _chunk({}, "stop") + b"data: [DONE]\n\n"})

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=18002)
    parser.add_argument("--tokens", type=int, default=60)
    parser.add_argument("--token-seconds", type=float, default=1.0)
    args = parser.parse_args()
    # Thousands of connections arrive at once and stay a minute.
    app = make_app(args.tokens, args.token_seconds)
    serve(app, args.port, backlog=16384, timeout_keep_alive=120)


if __name__ == "__main__":
    main()
