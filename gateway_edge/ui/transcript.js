// A conversation on the page: its messages, the tool calls and results folded under them, and
// where it was compacted.

import { renderMarkdown } from "./markdown.js";

const $ = (id) => document.getElementById(id);

export function addMessage(role, text) {
  const article = document.createElement("article");
  article.setAttribute("aria-label", role);
  const body = document.createElement("div");
  body.className = "body";
  renderMarkdown(body, text || "");
  article.append(body);
  $("log").append(article);
  article.scrollIntoView({ block: "end" });
  return article;
}

export function addFolded(article, summary, text) {
  const details = document.createElement("details");
  const title = document.createElement("summary");
  title.textContent = summary;
  const pre = document.createElement("pre");
  pre.textContent = text;
  details.append(title, pre);
  article.append(details);
}

// Where the conversation was compacted: what the model sees after it is the summary and the
// messages below it (every message stays stored and shown).
function addCompactionMarker(compaction) {
  const marker = document.createElement("div");
  marker.className = "compaction";
  marker.setAttribute("role", "separator");
  marker.setAttribute("aria-label", "compacted");
  const details = document.createElement("details");
  const title = document.createElement("summary");
  title.textContent = `Compacted: the ${compaction.covers} messages above are summarised for the model`;
  const pre = document.createElement("pre");
  pre.textContent = compaction.summary;
  details.append(title, pre);
  marker.append(details);
  $("log").append(marker);
}

export function showConversation(messages, compactions = []) {
  $("log").replaceChildren();
  const markers = new Map(compactions.map((compaction) => [compaction.covers, compaction]));
  let assistant = null;
  for (const [index, message] of messages.entries()) {
    if (markers.has(index)) addCompactionMarker(markers.get(index));
    if (message.role === "tool") {
      addFolded(assistant || addMessage("assistant", ""), `tool result: ${message.name || message.tool_call_id}`, message.content);
      continue;
    }
    const article = addMessage(message.role, message.content);
    for (const call of message.tool_calls || []) {
      addFolded(article, `tool call: ${call.function.name}`, call.function.arguments);
    }
    assistant = message.role === "assistant" ? article : null;
  }
}
