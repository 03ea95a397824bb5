"""Regenerates the gRPC stubs from protos/ into the `clawgate` package (needs grpcio-tools).

    python -m services.protogen

protos/ is the import root, so the proto package `clawgate.agent.v1` becomes the Python package
`clawgate.agent.v1`, the generated modules import each other with no rewriting, and the file
name a server reflects is `clawgate/agent/v1/agent_service.proto`, as other gRPC tools expect.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PROTO_ROOT = REPO_ROOT / "protos"


def proto_files() -> list[Path]:
    return sorted(PROTO_ROOT.rglob("*.proto"))


def generate(output_dir: Path) -> None:
    from grpc_tools import protoc

    include = Path(protoc.__file__).parent / "_proto"
    arguments = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={output_dir}",
        f"--pyi_out={output_dir}",
        f"--grpc_python_out={output_dir}",
        *(str(path.relative_to(PROTO_ROOT)) for path in proto_files()),
    ]
    if protoc.main(arguments) != 0:
        raise RuntimeError("protoc failed")


if __name__ == "__main__":
    generate(REPO_ROOT)
    sys.exit(0)
