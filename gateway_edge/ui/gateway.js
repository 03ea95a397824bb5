// The gateway's HTTP API as the page calls it: a bearer token where the gateway wants one
// (behind a single sign-on proxy it does not), errors said in words, SSE streams read frame by
// frame.

export const gateway = { token: "" };

export async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (gateway.token) headers.Authorization = `Bearer ${gateway.token}`;
  let response;
  try {
    response = await fetch(path, { ...options, headers });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new Error(`The gateway cannot be reached (${error.message}).`);
  }
  if (!response.ok) throw new Error(await describe(response));
  return response;
}

async function describe(response) {
  if (response.status === 401 && gateway.token) return "The gateway refused the token (401). Check it and connect again.";
  try {
    const body = await response.json();
    if (body.error && body.error.message) return `${body.error.message} (${response.status})`;
  } catch (_) { /* not JSON */ }
  return `The gateway answered ${response.status}.`;
}

export async function readStream(response, onChunk) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      if (!frame.startsWith("data: ")) continue; // keep-alive comments
      const data = frame.slice(6);
      if (data === "[DONE]") return;
      onChunk(JSON.parse(data));
    }
  }
}
