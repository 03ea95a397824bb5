from __future__ import annotations

import pytest

from gateway_edge.agent_resolution import resolve_agent
from gateway_edge.errors import ApiError

KNOWN = {"main", "beta", "a_b-9"}


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        (None, "main"),
        ("openclaw", "main"),
        ("OPENCLAW/DEFAULT", "main"),
        ("openclaw:beta", "beta"),
        ("openclaw/beta", "beta"),
        ("agent:a_b-9", "a_b-9"),
        ("Agent:BETA", "beta"),
    ],
)
def test_model_forms(model: str | None, expected: str) -> None:
    assert resolve_agent(model, None, KNOWN, "main") == expected


def test_header_wins_and_default_is_configurable() -> None:
    assert resolve_agent("openclaw:main", " Beta ", KNOWN, "main") == "beta"
    assert resolve_agent("openclaw", None, KNOWN, "beta") == "beta"
    assert resolve_agent("openclaw:main", "", KNOWN, "main") == "main"


@pytest.mark.parametrize(
    "model", ["gpt-4o", "openclaw:", "openclaw:-x", "agent:" + "a" * 65, "claw:main"]
)
def test_other_model_strings_are_400(model: str) -> None:
    with pytest.raises(ApiError) as caught:
        resolve_agent(model, None, KNOWN, "main")
    assert caught.value.status == 400 and caught.value.param == "model"


def test_unknown_agent_is_named() -> None:
    with pytest.raises(ApiError, match="'gamma'"):
        resolve_agent("agent:gamma", None, KNOWN, "main")
    with pytest.raises(ApiError, match="'gamma'"):
        resolve_agent(None, "gamma", KNOWN, "main")
