// The chatbus web chat: plain JavaScript, no build step, no third-party code.
//
// It talks to the gateway like any OpenAI client: the API key goes in `Authorization: Bearer`,
// answers stream as server-sent events from POST /v1/chat/completions, and Stop aborts the
// fetch (the gateway turns the disconnect into a cancel on the bus).
//
// Conversations: every chat answer names its conversation in `x-conversation-id`; the next
// message continues it by sending `conversation_id` with only the new message (the worker
// prepends the stored context). A gateway without history gets the whole transcript instead.
"use strict";

(() => {
  const KEY_STORAGE = "chatbus.apiKey";
  const MODEL_STORAGE = "chatbus.model";
  const HISTORY_MISSING = new Set([404, 405, 501]);

  const $ = (id) => document.getElementById(id);
  const el = {
    login: $("login"), loginForm: $("login-form"), apiKey: $("api-key"),
    loginButton: $("login-button"), loginError: $("login-error"),
    app: $("app"), model: $("model"), who: $("who"), logout: $("logout"),
    newChat: $("new-chat"), historyStatus: $("history-status"), conversations: $("conversations"),
    messages: $("messages"), empty: $("empty"), notice: $("notice"),
    composer: $("composer"), prompt: $("prompt"), send: $("send"), stop: $("stop"),
    maxTokens: $("max-tokens"), temperature: $("temperature"),
  };

  const state = {
    key: null,
    transcript: [],        // the conversation so far (OpenAI's shape), for a gateway without
                           // history, which needs all of it with every request
    controller: null,      // the AbortController of the answer streaming now
    conversationId: null,  // the gateway's conversation shown (x-conversation-id), if any
  };

  // ---- HTTP ------------------------------------------------------------------------------------

  class ApiFailure extends Error {
    constructor(status, error) {
      super((error && error.message) || `HTTP ${status}`);
      this.name = "ApiFailure";
      this.status = status;
      this.type = (error && error.type) || "";
      this.code = (error && error.code) || "";
      this.param = (error && error.param) || null;
    }
    get moderation() {
      return /content[_ ]?(policy|filter)|moderation|flagged|user_blocked/i
        .test(`${this.type} ${this.code}`);
    }
  }

  function headers(extra) {
    return Object.assign({ Authorization: `Bearer ${state.key}` }, extra || {});
  }

  async function failureOf(response) {
    let error = null;
    try {
      const body = await response.json();
      error = body && body.error ? body.error : null;
    } catch (_) { /* not JSON: keep the status alone */ }
    const failure = new ApiFailure(response.status, error);
    const retry = response.headers.get("retry-after");
    if (response.status === 429 && retry) failure.message += ` (retry in ${retry} s)`;
    return failure;
  }

  async function getJSON(path) {
    const response = await fetch(path, { headers: headers({ Accept: "application/json" }) });
    if (!response.ok) throw await failureOf(response);
    return response.json();
  }

  // The `data:` payloads of a server-sent event stream, as they arrive.
  async function* sseData(body) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let boundary;
        while ((boundary = buffer.search(/\r?\n\r?\n/)) !== -1) {
          const block = buffer.slice(0, boundary);
          buffer = buffer.slice(boundary).replace(/^\r?\n\r?\n/, "");
          const data = block.split(/\r?\n/)
            .filter((line) => line.startsWith("data:"))
            .map((line) => line.slice(5).replace(/^ /, ""));
          if (data.length) yield data.join("\n");
        }
      }
    } finally {
      reader.releaseLock();
    }
  }

  // ---- rendering -------------------------------------------------------------------------------

  function showNotice(text, kind) {
    el.notice.textContent = text;
    el.notice.dataset.kind = kind || "info";
    el.notice.hidden = !text;
  }

  function scrollToEnd() {
    el.messages.scrollTop = el.messages.scrollHeight;
  }

  function addMessage(role, text, status) {
    el.empty.hidden = true;
    const article = document.createElement("article");
    article.className = `message ${role}`;
    article.dataset.role = role;
    article.dataset.state = status || "done";
    const who = document.createElement("h3");
    who.className = "who";
    who.textContent = role === "user" ? "You" : role === "assistant" ? "Assistant" : role;
    const content = document.createElement("div");
    content.className = "content";
    content.textContent = text;
    article.append(who, content);
    el.messages.append(article);
    scrollToEnd();
    return article;
  }

  function addNote(article, text, kind) {
    const note = document.createElement("p");
    note.className = `message-note ${kind}`;
    note.dataset.kind = kind;
    if (kind === "moderation" || kind === "error") note.setAttribute("role", "alert");
    note.textContent = text;
    article.append(note);
    scrollToEnd();
  }

  function clearChat() {
    for (const node of [...el.messages.querySelectorAll(".message")]) node.remove();
    el.empty.hidden = false;
    state.transcript = [];
    state.conversationId = null;
    showNotice("");
    markActiveConversation();
  }

  function setStreaming(streaming) {
    el.send.hidden = streaming;
    el.stop.hidden = !streaming;
    el.send.disabled = streaming;
    el.prompt.setAttribute("aria-busy", String(streaming));
    if (streaming) el.stop.focus();
  }

  // ---- chat ------------------------------------------------------------------------------------

  function numberOr(input, fallback) {
    const value = Number(input.value);
    return input.value !== "" && Number.isFinite(value) ? value : fallback;
  }

  async function sendMessage(text) {
    showNotice("");
    state.transcript.push({ role: "user", content: text });
    addMessage("user", text);
    const bubble = addMessage("assistant", "", "streaming");
    bubble.setAttribute("aria-busy", "true");
    const content = bubble.querySelector(".content");
    const controller = new AbortController();
    state.controller = controller;
    if (state.conversationId) bubble.dataset.conversationId = state.conversationId;
    setStreaming(true);

    let answer = "";
    let finish = null;
    const request = {
      model: el.model.value,
      messages: state.conversationId ? [{ role: "user", content: text }] : state.transcript,
      stream: true,
      max_tokens: Math.max(1, Math.round(numberOr(el.maxTokens, 128))),
      temperature: numberOr(el.temperature, 0.2),
    };
    // A small model rambles once its long tail is sampled: keep the most likely 90% only.
    if (request.temperature > 0) request.top_p = 0.9;
    if (state.conversationId) request.conversation_id = state.conversationId;
    try {
      const response = await fetch("/v1/chat/completions", {
        method: "POST",
        headers: headers({ "Content-Type": "application/json", Accept: "text/event-stream" }),
        body: JSON.stringify(request),
        signal: controller.signal,
      });
      bubble.dataset.requestId = response.headers.get("x-request-id") || "";
      if (!response.ok) throw await failureOf(response);
      const conversation = response.headers.get("x-conversation-id");
      if (conversation) {
        state.conversationId = conversation;
        bubble.dataset.conversationId = conversation;
      }
      for await (const data of sseData(response.body)) {
        if (data === "[DONE]") break;
        const event = JSON.parse(data);
        if (event.error) throw new ApiFailure(200, event.error);
        const choice = event.choices && event.choices[0];
        if (!choice) continue;  // the usage chunk
        const delta = choice.delta && choice.delta.content;
        if (delta) {
          answer += delta;
          content.textContent = answer;
          scrollToEnd();
        }
        if (choice.finish_reason) finish = choice.finish_reason;
      }
      bubble.dataset.state = "done";
      bubble.dataset.finish = finish || "stop";
      if (finish === "content_filter") {
        bubble.dataset.state = "moderated";
        addNote(bubble, "This answer was stopped by content moderation.", "moderation");
      } else if (finish === "length") {
        addNote(bubble, "The answer reached the max tokens limit.", "info");
      }
    } catch (error) {
      if (error && error.name === "AbortError") {
        bubble.dataset.state = "stopped";
        addNote(bubble, "Stopped.", "info");
      } else if (error instanceof ApiFailure && error.moderation) {
        bubble.dataset.state = "moderated";
        addNote(bubble, `Blocked by content moderation: ${error.message}`, "moderation");
      } else {
        bubble.dataset.state = "error";
        const message = error instanceof ApiFailure ? error.message : String(error);
        addNote(bubble, `Error: ${message}`, "error");
        if (error instanceof ApiFailure && error.status === 401) {
          showNotice("Your key was refused; sign in again.", "error");
        }
      }
    } finally {
      bubble.removeAttribute("aria-busy");
      if (!answer) content.classList.add("blank");
      if (answer) state.transcript.push({ role: "assistant", content: answer });
      else state.transcript.pop();  // nothing came back: do not resend a dangling question
      state.controller = null;
      setStreaming(false);
      el.prompt.focus();
      loadHistory();
    }
  }

  function stop() {
    if (state.controller) state.controller.abort();
  }

  // ---- models and history -----------------------------------------------------------------------

  async function loadModels() {
    const body = await getJSON("/v1/models");
    const ids = (body.data || []).map((m) => m.id);
    el.model.replaceChildren(...ids.map((id) => new Option(id, id)));
    const saved = sessionStorage.getItem(MODEL_STORAGE);
    if (saved && ids.includes(saved)) el.model.value = saved;
    el.send.disabled = ids.length === 0;
    if (!ids.length) {
      showNotice("No model is being served right now: no inference worker is up. " +
                 "Start one (make run, or chatbus ops scale worker --replicas 1) and reload.",
                 "error");
    }
  }

  function listOf(body) {
    if (Array.isArray(body)) return body;
    return (body && (body.data || body.conversations || body.items)) || [];
  }

  function textOf(content) {
    if (typeof content === "string") return content;
    if (Array.isArray(content)) {
      return content.map((part) => (typeof part === "string" ? part : part.text || "")).join("");
    }
    return content == null ? "" : String(content);
  }

  function dateOf(item) {
    const raw = item.updated_at || item.created_at || item.created;
    if (raw == null) return "";
    const date = typeof raw === "number" ? new Date(raw * 1000) : new Date(raw);
    return Number.isNaN(date.getTime()) ? "" : date.toLocaleString();
  }

  function titleOf(item) {
    const first = (item.messages || []).find((m) => m.role === "user");
    return item.title || item.name || item.summary || (first && textOf(first.content)) ||
      item.id || item.conversation_id || "Untitled";
  }

  function setHistoryStatus(text, status) {
    el.historyStatus.textContent = text;
    el.historyStatus.dataset.state = status;
    el.historyStatus.hidden = !text;
  }

  function markActiveConversation() {
    for (const button of el.conversations.querySelectorAll("button")) {
      const active = button.dataset.id === state.conversationId;
      if (active) button.setAttribute("aria-current", "true");
      else button.removeAttribute("aria-current");
    }
  }

  async function loadHistory() {
    if (!state.key) return;
    let body;
    try {
      body = await getJSON("/v1/conversations");
    } catch (error) {
      el.conversations.replaceChildren();
      const missing = error instanceof ApiFailure && HISTORY_MISSING.has(error.status);
      setHistoryStatus(missing ? "History unavailable" : "History unavailable right now",
        "unavailable");
      return;
    }
    const items = listOf(body);
    el.conversations.replaceChildren(...items.map((item) => {
      const id = String(item.id || item.conversation_id || "");
      const li = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.className = "conversation";
      button.dataset.id = id;
      const title = document.createElement("span");
      title.className = "conversation-title";
      title.textContent = titleOf(item).slice(0, 80);
      const when = document.createElement("span");
      when.className = "conversation-date muted small";
      when.textContent = dateOf(item);
      button.append(title, when);
      button.addEventListener("click", () => openConversation(id));
      li.append(button);
      return li;
    }));
    setHistoryStatus(items.length ? "" : "No conversations yet", items.length ? "ready" : "empty");
    markActiveConversation();
  }

  async function openConversation(id) {
    if (state.controller) return;
    let body;
    try {
      body = await getJSON(`/v1/conversations/${encodeURIComponent(id)}`);
    } catch (error) {
      showNotice(`Could not open that conversation: ${error.message}`, "error");
      return;
    }
    clearChat();
    state.conversationId = id;
    const show = (role, text) => {
      const article = addMessage(role, text);
      state.transcript.push({ role, content: text });
      return article;
    };
    if (body && Array.isArray(body.turns)) {
      // A turn: the message(s) sent with one request, then the answer (if it has ended).
      for (const turn of body.turns) {
        for (const message of turn.messages || []) show(message.role, textOf(message.content));
        if (turn.answer == null && !turn.finish_reason) continue;
        const answer = show("assistant", turn.answer || "");
        if (!turn.answer) answer.querySelector(".content").classList.add("blank");
        if (turn.finish_reason === "content_filter") {
          answer.dataset.state = "moderated";
          addNote(answer, "This answer was stopped by content moderation.", "moderation");
        }
      }
    } else {
      for (const message of (body && body.messages) || []) {
        show(message.role || "assistant", textOf(message.content));
      }
    }
    markActiveConversation();
    el.prompt.focus();
  }

  // ---- sign in -----------------------------------------------------------------------------------

  async function signIn(key) {
    state.key = key;
    await loadModels();  // also checks the key: 401 for a bad one
    sessionStorage.setItem(KEY_STORAGE, key);
    el.who.textContent = `key …${key.slice(-4)}`;
    el.login.hidden = true;
    el.app.hidden = false;
    el.prompt.focus();
    loadHistory();
  }

  function signOut() {
    stop();
    sessionStorage.removeItem(KEY_STORAGE);
    state.key = null;
    clearChat();
    el.app.hidden = true;
    el.login.hidden = false;
    el.apiKey.value = "";
    el.apiKey.focus();
  }

  el.loginForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = el.apiKey.value.trim();
    el.loginError.textContent = "";
    if (!key) {
      el.loginError.textContent = "Enter an API key.";
      return;
    }
    el.loginButton.disabled = true;
    try {
      await signIn(key);
    } catch (error) {
      state.key = null;
      el.loginError.textContent = error instanceof ApiFailure && error.status === 401
        ? "That key was not accepted." : `Could not sign in: ${error.message}`;
      el.apiKey.focus();
    } finally {
      el.loginButton.disabled = false;
    }
  });

  el.composer.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = el.prompt.value.trim();
    if (!text || state.controller || !el.model.value) return;
    el.prompt.value = "";
    autosize();
    sendMessage(text);
  });

  el.prompt.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      el.composer.requestSubmit();
    }
  });

  function autosize() {
    el.prompt.style.height = "auto";
    el.prompt.style.height = `${Math.min(el.prompt.scrollHeight, 200)}px`;
  }

  el.prompt.addEventListener("input", autosize);
  el.stop.addEventListener("click", stop);
  el.logout.addEventListener("click", signOut);
  el.newChat.addEventListener("click", () => { if (!state.controller) clearChat(); });
  el.model.addEventListener("change", () => sessionStorage.setItem(MODEL_STORAGE, el.model.value));

  const saved = sessionStorage.getItem(KEY_STORAGE);
  if (saved) {
    signIn(saved).catch(() => {
      sessionStorage.removeItem(KEY_STORAGE);
      state.key = null;
    });
  } else {
    el.apiKey.focus();
  }
})();
