"""gRPC status codes by number, as `TurnError.code` carries them on the wire."""

from __future__ import annotations

import grpc

STATUS_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}
