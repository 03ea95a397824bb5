// Markdown, safely: code fences, inline code, bold and line breaks; everything else is text.
// Model text only ever reaches the page as text nodes: this builds elements, it never parses HTML.

export function renderMarkdown(target, text) {
  target.replaceChildren();
  const blocks = text.split(/```/);
  blocks.forEach((block, index) => {
    if (index % 2 === 1) {
      const pre = document.createElement("pre");
      const code = document.createElement("code");
      code.textContent = block.replace(/^[^\n]*\n/, "");
      pre.append(code);
      target.append(pre);
    } else if (block) {
      for (const paragraph of block.split(/\n{2,}/)) {
        if (!paragraph.trim()) continue;
        const p = document.createElement("p");
        renderInline(p, paragraph);
        target.append(p);
      }
    }
  });
}

function renderInline(target, text) {
  const pattern = /`([^`]+)`|\*\*([^*]+)\*\*|\n/g;
  let last = 0;
  for (const match of text.matchAll(pattern)) {
    target.append(document.createTextNode(text.slice(last, match.index)));
    if (match[1] !== undefined) {
      const code = document.createElement("code");
      code.textContent = match[1];
      target.append(code);
    } else if (match[2] !== undefined) {
      const strong = document.createElement("strong");
      strong.textContent = match[2];
      target.append(strong);
    } else {
      target.append(document.createElement("br"));
    }
    last = match.index + match[0].length;
  }
  target.append(document.createTextNode(text.slice(last)));
}
