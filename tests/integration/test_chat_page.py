"""The chat page (issue 22) in a real browser: Playwright driving Debian's Chromium against a
real edge and worker. Elements are found by their accessible names, as screen readers do."""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, Route, expect

from devkit.processes import TOKEN, Stack, echo_config, start_stack, wait_until

SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "chat-page.png"
PRICES = {"input": 300, "output": 900}  # USD per million tokens


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp_path = tmp_path_factory.mktemp("chat-page")
    config = echo_config(tmp_path)
    config["models"]["providers"]["slowecho"]["delayMs"] = 400
    config["models"]["providers"]["echo"]["models"] = [{"id": "echo-1", "cost": PRICES}]
    running = start_stack(tmp_path, config)
    yield running
    running.stop()


@pytest.fixture
def page(browser: Browser, stack: Stack) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1100, "height": 700})
    opened = context.new_page()
    opened.goto(f"{stack.base_url}/")
    yield opened
    context.close()


def connect(page: Page, token: str = TOKEN) -> None:
    page.get_by_role("textbox", name="Gateway token").fill(token)
    page.get_by_role("button", name="Connect").click()


def say(page: Page, text: str) -> None:
    box = page.get_by_role("textbox", name="Message")
    box.fill(text)
    box.press("Enter")


def conversation(page: Page) -> object:
    return page.get_by_role("log", name="Conversation")


def test_the_page_is_served_with_a_strict_policy_and_cached_assets(stack: Stack) -> None:
    page = httpx.get(f"{stack.base_url}/")
    assert page.status_code == 200
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "connect-src 'self'" in policy
    assert "<script>" not in page.text  # no inline scripts
    (script,) = re.findall(r'src="(/ui/app\.[0-9a-f]{12}\.js)"', page.text)
    asset = httpx.get(f"{stack.base_url}{script}")
    assert asset.status_code == 200
    assert "immutable" in asset.headers["cache-control"]
    assert httpx.get(f"{stack.base_url}/ui/app.js").status_code == 404
    # The page's modules import each other by their hashed names, served the same way.
    imported = re.findall(r'from "\./([a-z_]+\.[0-9a-f]{12}\.js)"', asset.text)
    assert {name.split(".")[0] for name in imported} == {"gateway", "markdown", "transcript"}
    for name in imported:
        module = httpx.get(f"{stack.base_url}/ui/{name}")
        assert module.status_code == 200 and "javascript" in module.headers["content-type"]


def test_connect_and_a_streamed_reply_shows_before_it_finishes(page: Page) -> None:
    connect(page)
    agent = page.get_by_role("combobox", name="Agent")
    expect(agent).to_be_enabled()
    agent.select_option("slow")
    say(page, "one two three four")
    reply = page.get_by_role("article", name="assistant")
    expect(reply).to_contain_text("slow one")  # the first words, while it still runs
    assert "four" not in reply.inner_text()
    expect(page.get_by_role("button", name="Stop")).to_be_enabled()
    expect(reply).to_contain_text("slow one two three four", timeout=10_000)
    expect(page.get_by_role("button", name="Stop")).to_be_disabled()


def test_a_conversation_is_listed_after_a_reload_with_its_messages(page: Page) -> None:
    connect(page)
    say(page, "remember **this** `code`")
    reply = page.get_by_role("article", name="assistant")
    expect(reply).to_contain_text("echo: remember this code")
    expect(reply.locator("strong")).to_have_text("this")  # markdown, rendered as elements
    page.reload()  # the token is kept in the browser
    conversations = page.get_by_role("list", name="Conversations")
    entry = conversations.get_by_role("button", name="remember **this** `code`")
    expect(entry).to_be_visible()
    entry.click()
    expect(page.get_by_role("article", name="user")).to_contain_text("remember")
    expect(page.get_by_role("article", name="assistant")).to_contain_text("echo: remember")
    if not SCREENSHOT.exists():  # the README's picture: taken once, then kept in git
        page.screenshot(path=str(SCREENSHOT))


def test_the_default_agent_is_preselected_not_the_first_in_alphabetical_order(
    page: Page, stack: Stack
) -> None:
    agents = [agent["id"] for agent in stack.config["agents"]["list"]]
    default = next(agent["id"] for agent in stack.config["agents"]["list"] if agent.get("default"))
    assert len(agents) == 3 and sorted(agents)[0] != default  # what the test tells apart
    connect(page)
    expect(page.get_by_role("combobox", name="Agent")).to_have_value(default)
    page.reload()  # connected again from the kept token: still the default
    expect(page.get_by_role("combobox", name="Agent")).to_have_value(default)


def test_model_text_cannot_inject_html(page: Page) -> None:
    connect(page)
    say(page, '<img src=x onerror="document.title=1"><b>bold</b>')
    reply = page.get_by_role("article", name="assistant")
    expect(reply).to_contain_text("<b>bold</b>")  # shown as text
    assert reply.locator("img, b").count() == 0
    assert page.title() == "clawgate"


def test_stop_cancels_a_slow_reply(page: Page, stack: Stack) -> None:
    connect(page)
    page.get_by_role("combobox", name="Agent").select_option("slow")
    say(page, "a b c d e f g h i j k l")
    expect(page.get_by_role("article", name="assistant")).to_contain_text("slow a")
    page.get_by_role("button", name="Stop").click()
    expect(page.get_by_role("article", name="assistant")).to_contain_text("stopped")
    wait_until(lambda: "turn cancelled" in stack.worker.log(), 10, "the worker cancelled it")


def test_a_wrong_token_shows_an_error_in_words(page: Page) -> None:
    connect(page, "not-the-token")
    expect(page.get_by_role("alert")).to_contain_text("refused the token")
    expect(page.get_by_role("textbox", name="Message")).to_be_disabled()


def test_delete_removes_the_conversation(page: Page) -> None:
    connect(page)
    say(page, "delete me soon")
    expect(page.get_by_role("article", name="assistant")).to_contain_text("echo: delete me")
    conversations = page.get_by_role("list", name="Conversations")
    expect(conversations.get_by_role("button", name="delete me soon")).to_be_visible()
    page.get_by_role("button", name="Delete conversation").click()
    expect(conversations.get_by_role("button", name="delete me soon")).to_have_count(0)
    expect(page.get_by_role("log", name="Conversation").locator("article")).to_have_count(0)


def test_new_chat_starts_empty_and_keyboard_shift_enter_is_a_new_line(page: Page) -> None:
    connect(page)
    say(page, "first chat")
    expect(page.get_by_role("article", name="assistant")).to_contain_text("echo: first chat")
    page.get_by_role("button", name="New chat").click()
    expect(page.get_by_role("log", name="Conversation").locator("article")).to_have_count(0)
    box = page.get_by_role("textbox", name="Message")
    box.fill("line one")
    box.press("Shift+Enter")
    box.type("line two")
    assert box.input_value() == "line one\nline two"
    box.press("Enter")
    expect(page.get_by_role("article", name="user")).to_contain_text("line two")


def test_the_link_clawgate_up_prints_connects_and_drops_the_token_from_the_url(
    browser: Browser, stack: Stack
) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{stack.base_url}/#token={TOKEN}")
    expect(page.get_by_role("textbox", name="Message")).to_be_enabled()
    assert "token" not in page.url
    context.close()


def test_tool_calls_and_results_are_folded_under_their_message(page: Page, stack: Stack) -> None:
    tool = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
    headers = {"Authorization": f"Bearer {TOKEN}", "x-openclaw-session-key": "page-tools-1"}
    url = f"{stack.base_url}/v1/chat/completions"
    asked = {"role": "user", "content": 'what time? call get_time {"zone": "UTC"}'}
    first = httpx.post(
        url, headers=headers, json={"model": "openclaw:main", "messages": [asked], "tools": [tool]}
    )
    (call,) = first.json()["choices"][0]["message"]["tool_calls"]
    result = {"role": "tool", "tool_call_id": call["id"], "content": "noon"}
    httpx.post(
        url, headers=headers, json={"model": "openclaw:main", "messages": [result], "tools": [tool]}
    )
    connect(page)
    page.get_by_role("combobox", name="Agent").select_option("main")
    page.get_by_role("list", name="Conversations").get_by_role("button", name="what time?").click()
    folded = page.get_by_role("log", name="Conversation").locator("details")
    expect(folded).to_have_count(2)
    expect(folded.nth(0).locator("summary")).to_have_text("tool call: get_time")
    expect(folded.nth(0)).not_to_have_attribute("open", "")
    folded.nth(1).locator("summary").click()
    expect(folded.nth(1)).to_contain_text("noon")
    expect(page.get_by_role("article", name="assistant").last).to_contain_text("said: noon")


def test_a_late_listing_of_the_previous_agent_does_not_replace_the_current_one(
    page: Page, stack: Stack
) -> None:
    """Switching agents right after connecting: the first agent's listing (main's: the page
    starts on the default agent), held back until beta's is shown, must not overwrite it when
    it finally answers."""
    for agent_id in ("main", "beta"):
        asked = {"role": "user", "content": f"{agent_id}'s chat"}
        body = {"model": f"openclaw:{agent_id}", "messages": [asked], "user": f"late-{agent_id}"}
        httpx.post(
            f"{stack.base_url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {TOKEN}"},
            json=body,
        )
    held: list[Route] = []

    def hold_main(route: Route) -> None:
        if "agent=main" in route.request.url:
            held.append(route)
        else:
            route.continue_()

    page.route("**/v1/sessions?*", hold_main)
    connect(page)
    agents = page.get_by_role("combobox", name="Agent")
    expect(agents).to_have_value("main")
    wait_until(lambda: bool(held), 10, "main's listing")
    agents.select_option("beta")
    conversations = page.get_by_role("list", name="Conversations")
    expect(conversations.get_by_role("button", name="beta's chat").first).to_be_visible()
    with page.expect_response(lambda response: "agent=main" in response.url):
        for route in held:
            route.continue_()
    page.wait_for_timeout(300)  # the late answer's handler has run
    expect(conversations.get_by_role("button", name="beta's chat").first).to_be_visible()
    expect(conversations.get_by_role("button", name="main's chat")).to_have_count(0)


def test_the_page_fits_a_phone_screen(browser: Browser, stack: Stack) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    page = context.new_page()
    page.goto(f"{stack.base_url}/#token={TOKEN}")
    say(page, "small screen")
    expect(page.get_by_role("article", name="assistant")).to_contain_text("echo: small screen")
    for name in ("Send", "Stop", "New chat", "Delete conversation"):
        box = page.get_by_role("button", name=name).bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390, name
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scroll
    context.close()


def test_a_compacted_conversation_shows_where_it_was_compacted(page: Page, stack: Stack) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}", "x-openclaw-session-key": "page-compacted-1"}
    for text in ("long ago: my cat is Biscuit", "then this", "and now this"):
        httpx.post(
            f"{stack.base_url}/v1/chat/completions",
            headers=headers,
            json={"model": "openclaw:main", "messages": [{"role": "user", "content": text}]},
        ).raise_for_status()
    compacted = httpx.post(
        f"{stack.base_url}/v1/sessions/page-compacted-1/compact", headers=headers, timeout=30
    )
    assert compacted.json()["compaction"]["covers"] == 4
    connect(page)
    page.get_by_role("combobox", name="Agent").select_option("main")
    listed = page.get_by_role("list", name="Conversations")
    listed.get_by_role("button", name="long ago: my cat is Biscuit").click()
    log = page.get_by_role("log", name="Conversation")
    expect(log.get_by_role("article", name="user")).to_have_count(3)  # every message is shown
    marker = log.get_by_role("separator", name="compacted")
    expect(marker).to_contain_text("the 4 messages above are summarised")
    marker.locator("summary").click()
    expect(marker).to_contain_text("Biscuit")  # the summary, folded under the marker
    # it stands between the second exchange and the third
    expect(log.locator("article + .compaction + article")).to_have_count(1)


def test_one_off_calls_are_listed_only_when_asked_for(page: Page, stack: Stack) -> None:
    """Calls without `user` or a session key (curl, scripts) do not fill the list; the page's
    tick shows them, and a one-off key that was continued is a conversation."""
    url = f"{stack.base_url}/v1/chat/completions"
    headers = {"Authorization": f"Bearer {TOKEN}"}

    def call(text: str, **extra: object) -> httpx.Response:
        body = {"model": "openclaw:beta", "messages": [{"role": "user", "content": text}]}
        answer = httpx.post(url, json={**body, **extra}, headers=headers, timeout=30)
        assert answer.status_code == 200
        return answer

    for number in range(3):
        call(f"one-off {number}")
    call("a real conversation", user="page-user")
    connect(page)
    page.get_by_role("combobox", name="Agent").select_option("beta")
    conversations = page.get_by_role("list", name="Conversations")
    one_offs = conversations.get_by_role("button", name=re.compile(r"^one-off \d$"))
    expect(conversations.get_by_role("button", name="a real conversation")).to_be_visible()
    expect(one_offs).to_have_count(0)
    page.get_by_role("checkbox", name="Show one-off calls").check()
    expect(one_offs).to_have_count(3)
    expect(conversations.get_by_role("button", name="a real conversation")).to_be_visible()
    page.get_by_role("checkbox", name="Show one-off calls").uncheck()
    expect(one_offs).to_have_count(0)
    # The API says the same, and a one-off session is still readable by its key.
    listed = httpx.get(f"{stack.base_url}/v1/sessions?agent=beta", headers=headers).json()
    titles = [entry["title"] for entry in listed["data"]]
    assert "a real conversation" in titles and not any(t.startswith("one-off") for t in titles)
    with_one_offs = httpx.get(
        f"{stack.base_url}/v1/sessions?agent=beta&include=one-off", headers=headers
    ).json()
    titles = [entry["title"] for entry in with_one_offs["data"]]
    assert sum(title.startswith("one-off") for title in titles) == 3
    key = call("one more").headers["x-openclaw-session-key"]
    assert httpx.get(f"{stack.base_url}/v1/sessions/{key}", headers=headers).status_code == 200
    # Continued by its key, it is a conversation.
    httpx.post(
        url,
        json={"model": "openclaw:beta", "messages": [{"role": "user", "content": "again"}]},
        headers={**headers, "x-openclaw-session-key": key},
        timeout=30,
    )
    listed = httpx.get(f"{stack.base_url}/v1/sessions?agent=beta", headers=headers).json()
    assert {entry["key"] for entry in listed["data"]} >= {key}
    refused = httpx.get(f"{stack.base_url}/v1/sessions?include=everything", headers=headers)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "include"


def test_the_favicon_is_served(stack: Stack) -> None:
    icon = httpx.get(f"{stack.base_url}/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/svg+xml"
    assert icon.content.startswith(b"<svg")


def spend_text(row: dict[str, Any]) -> str:
    tokens = row["input_tokens"] + row["output_tokens"]
    return f"{tokens:,} tokens, ${row['cost_usd']:.4f}"


def test_the_page_shows_a_conversations_tokens_and_cost_and_the_months(
    page: Page, stack: Stack
) -> None:
    connect(page)
    say(page, "what does this cost")
    expect(page.get_by_role("article", name="assistant")).to_contain_text("echo: what does")
    say(page, "and this")
    expect(page.get_by_role("article", name="assistant").nth(1)).to_contain_text("echo: and")
    # The open conversation is the listed one marked current; its tooltip is its key.
    current = page.locator('#conversations button[aria-current="true"]')
    expect(current).to_have_count(1)
    session = current.get_attribute("title")
    headers = {"Authorization": f"Bearer {TOKEN}"}

    def usage(**params: str) -> list[dict[str, Any]]:
        answer = httpx.get(f"{stack.base_url}/v1/usage", params=params, headers=headers)
        rows: list[dict[str, Any]] = answer.json()["data"]
        return rows

    sessions = usage(**{"from": "2000-01-01", "group_by": "session"})
    (mine,) = [row for row in sessions if row["session"] == session]
    assert mine["requests"] == 2 and mine["cost_usd"] > 0
    expect(page.get_by_text("This conversation:")).to_have_text(
        f"This conversation: {spend_text(mine)}"
    )
    month = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-01")
    (operator,) = usage(**{"from": month, "group_by": "identity"})
    expect(page.get_by_text("This month:")).to_have_text(f"This month: {spend_text(operator)}")
