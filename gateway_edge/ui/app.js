// The clawgate chat page: talks to the same API as any client (/whoami, /v1/models,
// /v1/sessions, streamed /v1/chat/completions, /v1/usage). An ES module, loaded as it is (no
// build step): gateway.js calls the API, transcript.js and markdown.js show the conversation.

import { api, gateway, readStream } from "./gateway.js";
import { renderMarkdown } from "./markdown.js";
import { addFolded, addMessage, showConversation } from "./transcript.js";

const TOKEN_KEY = "clawgate.token";
const $ = (id) => document.getElementById(id);
// session: the open conversation's key; user: the `user` value that continues it (the page
// names its conversations with `user`, which needs no admin scope behind a proxy).
const state = {
  agent: "", defaultAgent: "", session: null, user: null, running: null,
  identity: "operator", // whose usage the page shows: token and password callers are "operator"
};

function showError(text) {
  const box = $("error");
  box.textContent = text;
  box.hidden = !text;
}

let listings = 0; // the latest listing asked for: an older one answering late is dropped

async function loadConversations() {
  const list = $("conversations");
  const ticket = ++listings;
  const query = new URLSearchParams({ agent: state.agent, limit: "50", mine: "true" });
  // Calls made without `user` or a session key (curl, scripts) are listed only on request.
  if ($("one-off").checked) query.set("include", "one-off");
  const page = await (await api(`/v1/sessions?${query}`)).json();
  if (ticket !== listings) return; // the agent changed meanwhile: a newer list is on its way
  list.replaceChildren();
  for (const session of page.data) {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = session.title || session.key;
    button.title = session.key;
    button.setAttribute("aria-current", String(session.key === state.session));
    button.addEventListener("click", () => openConversation(session).catch((e) => showError(e.message)));
    item.append(button);
    list.append(item);
  }
}

function spendText(row) {
  if (!row) return "nothing yet";
  const tokens = (row.input_tokens + row.output_tokens).toLocaleString("en");
  return `${tokens} tokens, $${row.cost_usd.toFixed(4)}`;
}

// The person's tokens and cost this month (UTC), and the open conversation's.
async function showSpend() {
  const month = `${new Date().toISOString().slice(0, 7)}-01`;
  const usage = async (query) => (await api(`/v1/usage?${new URLSearchParams(query)}`)).json();
  const session = state.session;
  const [people, sessions] = await Promise.all([
    usage({ from: month, group_by: "identity" }),
    session ? usage({ from: "2000-01-01", group_by: "session" }) : null,
  ]);
  $("spend").textContent = `This month: ${spendText(people.data.find((row) => row.identity === state.identity))}`;
  if (session !== state.session) return; // another conversation opened meanwhile
  $("conversation-spend").textContent = session
    ? `This conversation: ${spendText(sessions.data.find((row) => row.session === session))}`
    : "";
}

async function openConversation(summary) {
  const key = summary.key;
  const session = await (await api(`/v1/sessions/${encodeURIComponent(key)}`)).json();
  state.session = key;
  state.user = summary.user;
  showConversation(session.messages, session.compactions);
  $("delete").disabled = false;
  await Promise.all([loadConversations(), showSpend()]);
}

function newChat() {
  state.session = null;
  state.user = null;
  $("log").replaceChildren();
  $("delete").disabled = true;
  loadConversations().catch((e) => showError(e.message));
  showSpend().catch((e) => showError(e.message));
}

async function send() {
  const box = $("message");
  const text = box.value.trim();
  if (!text || state.running) return;
  box.value = "";
  showError("");
  addMessage("user", text);
  const article = addMessage("assistant", "");
  const body = article.querySelector(".body");
  const controller = new AbortController();
  state.running = controller;
  setRunning(true);
  let reply = "";
  try {
    const headers = { "Content-Type": "application/json" };
    if (!state.session) state.user = newConversationName();
    else if (!state.user) headers["x-openclaw-session-key"] = state.session; // not named by the page
    const response = await api("/v1/chat/completions", {
      method: "POST",
      headers,
      signal: controller.signal,
      body: JSON.stringify({
        model: `openclaw/${state.agent}`,
        stream: true,
        user: state.user || undefined,
        messages: [{ role: "user", content: text }],
      }),
    });
    state.session = response.headers.get("x-openclaw-session-key") || state.session;
    await readStream(response, (chunk) => {
      if (chunk.error) throw new Error(chunk.error.message);
      const delta = (chunk.choices[0] || {}).delta || {};
      if (delta.content) {
        reply += delta.content;
        renderMarkdown(body, reply);
        article.scrollIntoView({ block: "end" });
      }
      for (const call of delta.tool_calls || []) {
        if (call.function && call.function.name) addFolded(article, `tool call: ${call.function.name}`, call.function.arguments || "");
      }
    });
    $("delete").disabled = false;
  } catch (error) {
    if (error.name === "AbortError") {
      addFolded(article, "stopped", "You stopped this reply; nothing of it was stored.");
    } else {
      showError(error.message);
    }
  } finally {
    state.running = null;
    setRunning(false);
    loadConversations().catch(() => {});
    showSpend().catch(() => {});
  }
}

function setRunning(running) {
  $("send").disabled = running;
  $("stop").disabled = !running;
}

async function deleteConversation() {
  if (!state.session) return;
  await api(`/v1/sessions/${encodeURIComponent(state.session)}`, { method: "DELETE" });
  newChat();
}

function newConversationName() {
  const bytes = crypto.getRandomValues(new Uint8Array(12)); // randomUUID needs https
  return `chat-${Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")}`;
}

// Whether the gateway wants a token, and once let in, who we are and the default agent.
async function signIn() {
  showError("");
  const me = await (await api("/whoami")).json();
  $("connect").hidden = !me.needs_token;
  if (!me.signed_in) return;
  $("who").textContent = me.identity ? `Signed in as ${me.identity}` : "";
  $("who").hidden = !me.identity;
  state.identity = me.identity || "operator";
  state.defaultAgent = me.default_agent || "";
  await connect();
}

async function connect() {
  const models = await (await api("/v1/models")).json();
  const agents = models.data
    .map((model) => model.id)
    .filter((id) => id.startsWith("openclaw/") && id !== "openclaw/default")
    .map((id) => id.slice("openclaw/".length));
  const select = $("agent");
  select.replaceChildren(...agents.map((id) => new Option(id, id)));
  const preferred = [state.agent, state.defaultAgent].find((id) => agents.includes(id));
  state.agent = preferred || agents[0] || "";
  select.value = state.agent;
  localStorage.setItem(TOKEN_KEY, gateway.token);
  for (const id of ["agent", "message", "send", "new-chat"]) $(id).disabled = false;
  newChat();
}

gateway.token = localStorage.getItem(TOKEN_KEY) || "";
document.addEventListener("DOMContentLoaded", () => {
  if (location.hash.startsWith("#token=")) { // from `clawgate up`: keep it, drop it from the URL
    gateway.token = decodeURIComponent(location.hash.slice("#token=".length));
    history.replaceState(null, "", location.pathname);
  }
  $("token").value = gateway.token;
  $("connect").addEventListener("submit", (event) => {
    event.preventDefault();
    gateway.token = $("token").value.trim();
    signIn().catch((error) => showError(error.message));
  });
  $("agent").addEventListener("change", () => {
    state.agent = $("agent").value;
    newChat();
  });
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });
  $("message").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      send();
    }
  });
  $("stop").addEventListener("click", () => state.running && state.running.abort());
  $("new-chat").addEventListener("click", newChat);
  $("one-off").addEventListener("change", () => loadConversations().catch((e) => showError(e.message)));
  $("delete").addEventListener("click", () => deleteConversation().catch((e) => showError(e.message)));
  signIn().catch((error) => showError(error.message));
});
