"""An OTLP/HTTP trace sink for benchmarks: takes `POST /v1/traces`, keeps nothing, answers at
once; what clawgate spends on tracing is measured beside it, not in it.

    python -m bench.otlp_sink --port 4318
"""

from __future__ import annotations

import argparse
from typing import Any

from bench.upstream_standin import serve

_HEADERS = [(b"content-type", b"application/x-protobuf")]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    status = 200 if scope["path"] == "/v1/traces" else 404
    await send({"type": "http.response.start", "status": status, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": b""})  # an empty ExportTraceServiceResponse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=4318)
    serve(app, parser.parse_args().port)


if __name__ == "__main__":
    main()
