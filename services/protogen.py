"""Regenerates the gRPC stubs in services/grpc_gen from protos/ (needs grpcio-tools).

    python -m services.protogen

The proto root is mapped to `services/grpc_gen`, so the generated modules import each other as
`services.grpc_gen.clawgate.agent.v1…` with no rewriting.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PROTO_ROOT = REPO_ROOT / "protos"
IMPORT_ROOT = "services/grpc_gen"


def proto_files() -> list[Path]:
    return sorted(PROTO_ROOT.rglob("*.proto"))


def generate(output_dir: Path) -> None:
    from grpc_tools import protoc

    include = Path(protoc.__file__).parent / "_proto"
    arguments = [
        "protoc",
        f"-I{IMPORT_ROOT}={PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={output_dir}",
        f"--pyi_out={output_dir}",
        f"--grpc_python_out={output_dir}",
        *(f"{IMPORT_ROOT}/{path.relative_to(PROTO_ROOT)}" for path in proto_files()),
    ]
    if protoc.main(arguments) != 0:
        raise RuntimeError("protoc failed")


if __name__ == "__main__":
    generate(REPO_ROOT)
    sys.exit(0)
