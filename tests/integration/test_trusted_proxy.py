"""Trusted-proxy auth, operator scopes and sessions owned by their caller (issue 32), behind a
real nginx (Debian's nginx-light) that signs people in with basic auth and reaches the edge
from 127.0.0.2. Direct clients on 127.0.0.1 are not the proxy."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import grpc
import httpx
import httpx2
import pytest
from openai import OpenAI
from playwright.sync_api import Browser, BrowserContext, Page, expect

from clawgate.agent.v1 import agent_service_pb2 as pb
from clawgate.agent.v1 import agent_service_pb2_grpc as pb_grpc
from devkit.processes import Process, Stack, echo_config, start_stack
from devkit.sso_proxy import NGINX, start_sso_proxy

PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw", "root": "root-pw", "mallory": "mallory-pw"}
DEFAULT_SCOPES = ["operator.read", "operator.write"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp_path = tmp_path_factory.mktemp("trusted-proxy")
    config = echo_config(tmp_path)
    config["models"]["providers"]["slowecho"]["delayMs"] = 300
    gateway = config["gateway"]
    gateway["trustedProxies"] = ["127.0.0.2"]
    gateway["auth"] = {
        "mode": "trusted-proxy",
        "trustedProxy": {
            "userHeader": "x-forwarded-user",
            "requiredHeaders": ["x-forwarded-proto"],
            "allowUsers": ["alice", "bob", "root"],
            "allowLoopback": True,
            "defaultScopes": DEFAULT_SCOPES,
        },
    }
    gateway["http"]["endpoints"]["responses"] = {"enabled": True}
    running = start_stack(tmp_path, config)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def proxy(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not NGINX.exists():
        if os.environ.get("CI"):
            pytest.fail("nginx is missing: .ci/run installs nginx-light (apt-get)")
        pytest.skip("no nginx here (apt-get install nginx-light)")
    process: Process
    process, base_url = start_sso_proxy(
        tmp_path_factory.mktemp("nginx"), stack.config["gateway"]["port"], PASSWORDS
    )
    yield base_url
    process.stop()


def signed_in(proxy: str, user: str, location: str = "") -> httpx.Client:
    return httpx.Client(base_url=f"{proxy}/{location}", auth=(user, PASSWORDS[user]), timeout=30)


def sdk(proxy: str, user: str) -> OpenAI:
    """The openai SDK as a user behind the proxy: its key is not needed, the sign-in is."""
    return OpenAI(
        base_url=f"{proxy}/v1",
        api_key="not-needed",
        # The SDK's own HTTP client (httpx2), signing in with basic auth as a browser would.
        http_client=httpx2.Client(auth=(user, PASSWORDS[user]), timeout=30),
    )


def chat(client: httpx.Client, text: str, **extra: Any) -> httpx.Response:
    body = {"model": "openclaw", "messages": [{"role": "user", "content": text}], **extra}
    return client.post("v1/chat/completions", json=body)


def error_of(response: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    return error


def test_chat_through_the_proxy_with_the_openai_sdk(proxy: str) -> None:
    answer = sdk(proxy, "alice").chat.completions.with_raw_response.create(
        model="openclaw", messages=[{"role": "user", "content": "hello"}], user="sdk-chat"
    )
    completion = answer.parse()
    assert completion.choices[0].message.content == "echo: hello [turns=0]"
    assert (
        answer.headers["x-openclaw-session-key"] == "agent:main:person:alice:openai-user:sdk-chat"
    )


def test_a_stream_through_the_proxy_arrives_word_by_word(proxy: str) -> None:
    stream = sdk(proxy, "alice").chat.completions.create(
        model="openclaw/slow",
        messages=[{"role": "user", "content": "one two three four"}],
        stream=True,
    )
    arrivals = []
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append((time.monotonic(), chunk.choices[0].delta.content))
    assert "".join(text for _, text in arrivals).strip() == "slow one two three four"
    # 300 ms between words upstream: nginx passed them on as they came, not at the end.
    assert len(arrivals) >= 4
    assert arrivals[-1][0] - arrivals[0][0] > 0.6


def test_the_same_user_from_two_people_is_two_sessions(proxy: str) -> None:
    with signed_in(proxy, "alice") as alice, signed_in(proxy, "bob") as bob:
        assert chat(alice, "a1", user="shared").json()["choices"][0]["message"]["content"] == (
            "echo: a1 [turns=0]"
        )
        second = chat(alice, "a2", user="shared")
        assert second.json()["choices"][0]["message"]["content"] == "echo: a2 [turns=2]"
        from_bob = chat(bob, "b1", user="shared")
        assert from_bob.json()["choices"][0]["message"]["content"] == "echo: b1 [turns=0]"
        assert (
            from_bob.headers["x-openclaw-session-key"] != second.headers["x-openclaw-session-key"]
        )


def test_the_sessions_api_shows_each_person_only_their_own(proxy: str) -> None:
    with signed_in(proxy, "alice") as alice, signed_in(proxy, "bob") as bob:
        key = chat(alice, "alice's secret plan", user="plans").headers["x-openclaw-session-key"]
        chat(bob, "bob's note", user="notes")
        mine = alice.get("v1/sessions", params={"limit": 100}).json()["data"]
        assert key in [entry["key"] for entry in mine]
        assert {entry["owner"] for entry in mine} == {"alice"}
        assert next(entry for entry in mine if entry["key"] == key)["user"] == "plans"
        theirs = bob.get("v1/sessions", params={"limit": 100}).json()["data"]
        assert key not in [entry["key"] for entry in theirs]
        assert {entry["owner"] for entry in theirs} == {"bob"}
        path = f"v1/sessions/{quote(key, safe='')}"
        refused = bob.get(path)
        assert refused.status_code == 404 and "secret" not in refused.text
        assert bob.delete(path).status_code == 404
        assert bob.post(f"{path}/compact").status_code == 404
        assert alice.get(path).json()["messages"][0]["content"] == "alice's secret plan"
    with signed_in(proxy, "root", "admin/") as admin:
        everyone = admin.get("v1/sessions", params={"limit": 100}).json()["data"]
        assert {"alice", "bob"} <= {entry["owner"] for entry in everyone}
        assert admin.get(path).status_code == 200


def test_usage_shows_each_person_their_own_and_an_admin_everyones(proxy: str) -> None:
    with signed_in(proxy, "alice") as alice, signed_in(proxy, "bob") as bob:
        chat(alice, "counted for alice")
        chat(bob, "counted for bob")
        mine = alice.get("v1/usage", params={"group_by": "identity"}).json()["data"]
        assert [row["identity"] for row in mine] == ["alice"] and mine[0]["requests"] >= 1
        theirs = bob.get("v1/usage", params={"group_by": "identity"}).json()["data"]
        assert [row["identity"] for row in theirs] == ["bob"]
    with signed_in(proxy, "root", "admin/") as admin:
        everyone = admin.get("v1/usage", params={"group_by": "identity"}).json()["data"]
        assert {"alice", "bob"} <= {row["identity"] for row in everyone}


def test_a_forged_scopes_header_is_overwritten_by_the_proxy(proxy: str) -> None:
    with signed_in(proxy, "bob") as bob:
        listed = bob.get(
            "v1/sessions", params={"limit": 100}, headers={"x-openclaw-scopes": "operator.admin"}
        )
        assert {entry["owner"] for entry in listed.json()["data"]} <= {"bob"}
        assert bob.get("whoami").json()["scopes"] == DEFAULT_SCOPES


def test_narrowed_scopes_read_but_do_not_write(proxy: str) -> None:
    with signed_in(proxy, "alice", "readonly/") as reader:
        refused = chat(reader, "hi")
        assert refused.status_code == 403
        assert error_of(refused)["message"] == "missing scope: operator.write"
        assert reader.get("v1/sessions").status_code == 200
        assert reader.delete("v1/sessions/anything").status_code == 403
        assert reader.get("whoami").json()["scopes"] == ["operator.read"]


def test_owner_level_controls_need_operator_admin(proxy: str) -> None:
    with signed_in(proxy, "alice") as alice:
        by_key = alice.post(
            "v1/chat/completions",
            json={"model": "openclaw", "messages": [{"role": "user", "content": "hi"}]},
            headers={"x-openclaw-session-key": "agent:main:person:bob:openai-user:notes"},
        )
        assert by_key.status_code == 403 and error_of(by_key)["type"] == "forbidden"
        assert "bob's note" not in by_key.text
        by_model = alice.post(
            "v1/chat/completions",
            json={"model": "openclaw", "messages": [{"role": "user", "content": "hi"}]},
            headers={"x-openclaw-model": "echo/echo-1"},
        )
        assert by_model.status_code == 403
        assert error_of(by_model)["message"] == "missing scope: operator.admin"
    with signed_in(proxy, "root", "admin/") as admin:
        allowed = admin.post(
            "v1/chat/completions",
            json={"model": "openclaw", "messages": [{"role": "user", "content": "hi"}]},
            headers={"x-openclaw-model": "echo/echo-1", "x-openclaw-session-key": "ops-1"},
        )
        assert allowed.status_code == 200, allowed.text


def test_previous_response_id_of_another_person_is_not_found(proxy: str) -> None:
    with signed_in(proxy, "alice") as alice, signed_in(proxy, "bob") as bob:
        first = alice.post("v1/responses", json={"model": "openclaw", "input": "remember 7"})
        assert first.status_code == 200, first.text
        follow = {"model": "openclaw", "input": "and?", "previous_response_id": first.json()["id"]}
        stolen = bob.post("v1/responses", json=follow)
        assert stolen.status_code == 404
        assert error_of(stolen)["param"] == "previous_response_id"
        assert alice.post("v1/responses", json=follow).status_code == 200


def test_a_direct_client_forging_the_user_header_is_refused(stack: Stack) -> None:
    forged = httpx.get(
        f"{stack.base_url}/v1/sessions",
        headers={"x-forwarded-user": "alice", "x-forwarded-proto": "https"},
    )
    assert forged.status_code == 401
    assert error_of(forged)["code"] == "trusted_proxy_untrusted_source"


def test_a_user_outside_allow_users_is_refused(proxy: str) -> None:
    with signed_in(proxy, "mallory") as mallory:
        refused = chat(mallory, "hi")
    assert refused.status_code == 403
    assert error_of(refused)["code"] == "trusted_proxy_user_not_allowed"


def test_through_the_proxy_without_a_user(proxy: str) -> None:
    for headers in ({}, {"x-forwarded-user": "alice"}):  # the proxy drops a forged one
        refused = httpx.get(f"{proxy}/anonymous/v1/models", headers=headers)
        assert refused.status_code == 401
        assert error_of(refused)["code"] == "trusted_proxy_user_missing"


def test_the_page_is_served_without_a_token(proxy: str) -> None:
    with signed_in(proxy, "alice") as alice:
        page = alice.get("")
        assert page.status_code == 200 and "<title>clawgate</title>" in page.text
        me = alice.get("whoami").json()
        assert me["needs_token"] is False and me["signed_in"] is True
        assert (me["identity"], me["default_agent"], me["admin"]) == ("alice", "main", False)


def test_workers_enforce_ownership_for_grpc_clients(proxy: str, stack: Stack) -> None:
    """A gRPC client that says it acts for bob reaches none of alice's sessions."""
    with signed_in(proxy, "alice") as alice:
        key = chat(alice, "for alice only", user="grpc").headers["x-openclaw-session-key"]
    bob = pb.Caller(identity="bob")
    with grpc.insecure_channel(stack.worker_address) as channel:
        agents = pb_grpc.AgentServiceStub(channel)
        read = agents.GetSession(pb.GetSessionRequest(session_key=key, caller=bob))
        assert list(read.messages) == []
        listed = agents.ListSessions(pb.ListSessionsRequest(limit=100, caller=bob))
        assert key not in [summary.session_key for summary in listed.sessions]
        turn = pb.RunTurnRequest(
            agent_id="main",
            session_key=key,
            input=pb.Message(role=pb.ROLE_USER, text="let me in"),
            caller=bob,
        )
        with pytest.raises(grpc.RpcError) as refused:
            list(agents.RunTurn(turn))
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "for alice only" not in str(refused.value.details())
        deleted = agents.DeleteSession(pb.DeleteSessionRequest(session_key=key, caller=bob))
        assert deleted.deleted is False
        owner_view = agents.GetSession(pb.GetSessionRequest(session_key=key))
        assert [m.text for m in owner_view.messages][:1] == ["for alice only"]


def test_the_page_behind_the_proxy_needs_no_token_and_shows_each_person_theirs(
    proxy: str, browser: Browser
) -> None:
    def signed_in_page(user: str) -> tuple[BrowserContext, Page]:
        context = browser.new_context(
            http_credentials={"username": user, "password": PASSWORDS[user]}
        )
        page = context.new_page()
        page.goto(f"{proxy}/")
        return context, page

    alice_context, alice = signed_in_page("alice")
    try:
        expect(alice.get_by_text("Signed in as alice")).to_be_visible()
        expect(alice.get_by_role("textbox", name="Gateway token")).to_be_hidden()
        expect(alice.get_by_role("combobox", name="Agent")).to_have_value("main")
        box = alice.get_by_role("textbox", name="Message")
        box.fill("a page secret")
        box.press("Enter")
        expect(alice.get_by_role("article", name="assistant")).to_contain_text(
            "echo: a page secret"
        )
        box.fill("and more")
        box.press("Enter")  # continues the same conversation, without an admin scope
        expect(alice.get_by_role("article", name="assistant").last).to_contain_text("[turns=2]")
        conversations = alice.get_by_role("list", name="Conversations")
        expect(conversations.get_by_role("button", name="a page secret")).to_be_visible()
    finally:
        alice_context.close()
    bob_context, bob = signed_in_page("bob")
    try:
        expect(bob.get_by_text("Signed in as bob")).to_be_visible()
        expect(bob.get_by_role("combobox", name="Agent")).to_be_enabled()
        bob.wait_for_load_state("networkidle")
        listed = bob.get_by_role("list", name="Conversations")
        expect(listed.get_by_role("button", name="a page secret")).to_have_count(0)
    finally:
        bob_context.close()
