from __future__ import annotations

from pathlib import Path

from services.protogen import REPO_ROOT, generate


def test_committed_stubs_match_the_proto(tmp_path: Path) -> None:
    generate(tmp_path)
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert generated, "protoc generated nothing"
    for relative in generated:
        committed = REPO_ROOT / relative
        assert committed.exists(), f"{relative} is not committed: run python -m services.protogen"
        assert committed.read_bytes() == (tmp_path / relative).read_bytes(), (
            f"{relative} is stale: run python -m services.protogen"
        )
