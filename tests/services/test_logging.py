from __future__ import annotations

import json
import logging

import pytest

from services.logging import configure_logging, fingerprint, request_id_var


def test_json_lines_carry_request_id_and_fields(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "edge", "json")
    token = request_id_var.set("req-1")
    try:
        logging.getLogger("clawgate.test").info(
            "hello %s", "there", extra={"fields": {"status": 200}}
        )
    finally:
        request_id_var.reset(token)
        configure_logging("warning")
    entry = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert entry["message"] == "hello there" and entry["request_id"] == "req-1"
    assert (entry["process"], entry["level"], entry["status"]) == ("edge", "info", 200)
    assert entry["time"].endswith("Z")


def test_text_lines_append_fields(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "worker", "text")
    try:
        logging.getLogger("clawgate.test").info("done", extra={"fields": {"agent": "main"}})
    finally:
        configure_logging("warning")
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.endswith("clawgate.test: done agent=main") and " worker [-] " in line


def test_fingerprint_hides_the_key() -> None:
    assert fingerprint("agent:main:openai-user:alice") == fingerprint(
        "agent:main:openai-user:alice"
    )
    assert "alice" not in fingerprint("agent:main:openai-user:alice")
    assert len(fingerprint("x")) == 12
