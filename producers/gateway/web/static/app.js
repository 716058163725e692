// The chatbus web chat: plain JavaScript, no build step, no third-party code.
//
// It talks to the gateway like any OpenAI client, through the Responses API: answers stream as
// its events over the WebSocket (/v1/responses; the browser offers its key as a subprotocol),
// or over server-sent events from POST /v1/responses where the WebSocket cannot open (a proxy
// that drops it; sessionStorage "chatbus.transport" = "sse" forces it). Stop cancels the
// response on the bus (POST /v1/responses/{id}/cancel).
//
// Conversations: every response names its conversation; the next message continues it by
// sending `conversation` with only the new message (the worker prepends the stored context).
// Reloading the page in the middle of an answer shows the answer so far and keeps streaming it
// (GET /v1/responses/{id}?stream=true replays it from the bus, then follows it live).
"use strict";

(() => {
  const KEY_STORAGE = "chatbus.apiKey";
  const MODEL_STORAGE = "chatbus.model";
  const INFLIGHT_STORAGE = "chatbus.inflight";   // the answer streaming now (survives a reload)
  const TRANSPORT_STORAGE = "chatbus.transport";  // "sse": never try the WebSocket
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
    unloading: false,      // the page is going away (a reload): keep the answer in flight
  };

  window.addEventListener("pagehide", () => { state.unloading = true; });
  window.addEventListener("beforeunload", () => { state.unloading = true; });

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

  // The Responses API's events of one answer, over the WebSocket (one per page, opened on the
  // first message; a browser sends its key as a subprotocol) or, where that cannot open, over
  // SSE from POST /v1/responses. Both carry the same events.
  const transport = {
    socket: null,
    failed: sessionStorage.getItem(TRANSPORT_STORAGE) === "sse" || !("WebSocket" in window),
  };

  function openSocket() {
    if (transport.failed) return Promise.resolve(null);
    if (transport.socket && transport.socket.readyState === WebSocket.OPEN) {
      return Promise.resolve(transport.socket);
    }
    return new Promise((resolve) => {
      const scheme = location.protocol === "https:" ? "wss" : "ws";
      let ws;
      try {
        ws = new WebSocket(`${scheme}://${location.host}/v1/responses`,
          ["chatbus.v1", `bearer.${state.key}`]);
      } catch (_) {
        transport.failed = true;
        resolve(null);
        return;
      }
      const give = (socket) => { clearTimeout(timer); resolve(socket); };
      const timer = setTimeout(() => { transport.failed = true; ws.close(); give(null); }, 5000);
      ws.addEventListener("open", () => { transport.socket = ws; give(ws); });
      ws.addEventListener("error", () => { if (!transport.socket) transport.failed = true; give(null); });
      ws.addEventListener("close", () => { if (transport.socket === ws) transport.socket = null; });
    });
  }

  const TERMINAL = new Set(["response.completed", "response.incomplete", "response.failed"]);

  async function* socketEvents(ws, body, signal) {
    const queue = [];
    let wake = null;
    let closed = false;
    const onMessage = (message) => { queue.push(JSON.parse(message.data)); if (wake) wake(); };
    const onClose = () => { closed = true; if (wake) wake(); };
    ws.addEventListener("message", onMessage);
    ws.addEventListener("close", onClose);
    signal.addEventListener("abort", onClose);
    try {
      ws.send(JSON.stringify(Object.assign({ type: "response.create" }, body)));
      for (;;) {
        while (queue.length && !signal.aborted) {
          const event = queue.shift();
          if (event.type === "error") throw new ApiFailure(event.status || 400, event.error);
          yield event;
          if (TERMINAL.has(event.type)) return;
        }
        if (signal.aborted) throw new DOMException("stopped", "AbortError");
        if (closed) throw new Error("the connection to the gateway was lost");
        await new Promise((resolve) => { wake = resolve; });
        wake = null;
      }
    } finally {
      ws.removeEventListener("message", onMessage);
      ws.removeEventListener("close", onClose);
      signal.removeEventListener("abort", onClose);
    }
  }

  async function* httpEvents(url, init) {
    const response = await fetch(url, init);
    if (!response.ok) throw await failureOf(response);
    for await (const data of sseData(response.body)) {
      const event = JSON.parse(data);
      if (event.error && !event.type) throw new ApiFailure(200, event.error);
      yield event;
      if (TERMINAL.has(event.type)) return;
    }
  }

  async function createEvents(body, signal, bubble) {
    const ws = await openSocket();
    bubble.dataset.transport = ws ? "websocket" : "sse";
    if (ws) return socketEvents(ws, body, signal);
    return httpEvents("/v1/responses", {
      method: "POST",
      headers: headers({ "Content-Type": "application/json", Accept: "text/event-stream" }),
      body: JSON.stringify(Object.assign({ stream: true }, body)),
      signal,
    });
  }

  // An answer in flight, kept across a reload of the page so that it picks the stream up again.
  function remember(inflight) {
    if (inflight) sessionStorage.setItem(INFLIGHT_STORAGE, JSON.stringify(inflight));
    else sessionStorage.removeItem(INFLIGHT_STORAGE);
  }

  // Renders the events of one answer into ``bubble``; returns its text.
  async function render(bubble, events, question) {
    const content = bubble.querySelector(".content");
    let answer = "";
    for await (const event of events) {
      if (event.type === "response.created") {
        const response = event.response;
        bubble.dataset.responseId = response.id;
        bubble.dataset.requestId = `req-${response.id.replace(/^resp_/, "")}`;
        const conversation = response.conversation && response.conversation.id;
        if (conversation) {
          state.conversationId = conversation;
          bubble.dataset.conversationId = conversation;
        }
        remember({ responseId: response.id, conversationId: conversation, question });
      } else if (event.type === "response.output_text.delta") {
        answer += event.delta;
        content.textContent = answer;
        scrollToEnd();
      } else if (TERMINAL.has(event.type)) {
        const response = event.response;
        const reason = response.incomplete_details && response.incomplete_details.reason;
        if (event.type === "response.failed") {
          throw new ApiFailure(200, response.error || { message: "the answer failed" });
        }
        bubble.dataset.finish = response.status === "cancelled" ? "cancelled"
          : reason === "max_output_tokens" ? "length" : reason || "stop";
      }
    }
    return answer;
  }

  // A refusal the user thinks is wrong: POST /v1/appeals (stored with the turn, reviewed).
  function offerAppeal(bubble) {
    const id = bubble.dataset.responseId || bubble.dataset.requestId;
    if (!id || bubble.querySelector(".appeal")) return;
    const button = document.createElement("button");
    button.type = "button";
    button.className = "appeal";
    button.textContent = "This refusal is wrong";
    button.addEventListener("click", async () => {
      const comment = window.prompt("What were you asking for? (optional)") ?? "";
      button.disabled = true;
      try {
        const response = await fetch("/v1/appeals", {
          method: "POST",
          headers: headers({ "Content-Type": "application/json" }),
          body: JSON.stringify({ id, comment }),
        });
        const body = await response.json();
        button.textContent = response.ok ? "Appeal sent, thank you"
          : `Appeal not sent: ${(body.error && body.error.message) || response.status}`;
        if (!response.ok) button.disabled = false;
      } catch (error) {
        button.textContent = `Appeal not sent: ${error}`;
        button.disabled = false;
      }
    });
    bubble.append(button);
  }

  // ---- answer actions: rate (POST /v1/feedback), copy, regenerate -------------------------------

  const DOWN_REASONS = [
    ["", "Why? (optional)"], ["incorrect", "Not true"], ["unhelpful", "Not helpful"],
    ["harmful", "Harmful or unsafe"], ["biased", "Biased"], ["refused", "Refused wrongly"],
    ["other", "Something else"],
  ];

  async function sendRating(bubble, rating, category, comment) {
    const id = bubble.dataset.responseId || bubble.dataset.requestId;
    const status = bubble.querySelector(".rating-status");
    const body = JSON.stringify({ id, rating, category: category || null, comment: comment || "" });
    // An answer that just ended may not be in the history yet (404 answer_not_found): retry a
    // few seconds before saying so.
    const deadline = Date.now() + 10000;
    let response;
    for (let wait = 200; ; wait = Math.min(wait * 2, 2000)) {
      response = await fetch("/v1/feedback", {
        method: "POST", headers: headers({ "Content-Type": "application/json" }), body,
      });
      if (response.status !== 404 || Date.now() + wait > deadline) break;
      status.textContent = "Sending…";
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
    if (response.ok) {
      bubble.dataset.rating = rating;
      for (const button of bubble.querySelectorAll("button.rate")) {
        button.setAttribute("aria-pressed", String(button.dataset.rating === rating));
      }
      status.textContent = "Thanks for the feedback.";
      return true;
    }
    const failure = await failureOf(response);
    status.textContent = `Feedback not sent: ${failure.message}`;
    return false;
  }

  function askWhy(bubble) {
    if (bubble.querySelector(".rating-detail")) return;
    const form = document.createElement("form");
    form.className = "rating-detail";
    const reason = document.createElement("select");
    reason.name = "category";
    reason.setAttribute("aria-label", "What was wrong");
    for (const [value, label] of DOWN_REASONS) reason.add(new Option(label, value));
    const comment = document.createElement("input");
    comment.name = "comment";
    comment.maxLength = 2000;
    comment.placeholder = "Tell us more (optional)";
    comment.setAttribute("aria-label", "Comment");
    const send = document.createElement("button");
    send.type = "submit";
    send.textContent = "Send";
    form.append(reason, comment, send);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      send.disabled = true;
      if (await sendRating(bubble, "down", reason.value, comment.value.trim())) form.remove();
      else send.disabled = false;
    });
    bubble.querySelector(".answer-actions").after(form);
  }

  function actionButton(label, text, onClick) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "ghost action";
    button.setAttribute("aria-label", label);
    button.title = label;
    button.textContent = text;
    button.addEventListener("click", onClick);
    return button;
  }

  function offerActions(bubble, question, rated) {
    const id = bubble.dataset.responseId || bubble.dataset.requestId;
    if (!id || bubble.querySelector(".answer-actions")) return;
    const bar = document.createElement("div");
    bar.className = "answer-actions";
    for (const [rating, label, text] of [["up", "Good answer", "👍"], ["down", "Bad answer", "👎"]]) {
      const button = actionButton(label, text, async () => {
        button.disabled = true;
        try {
          if (await sendRating(bubble, rating) && rating === "down") askWhy(bubble);
        } catch (error) {
          bar.querySelector(".rating-status").textContent = `Feedback not sent: ${error}`;
        } finally {
          button.disabled = false;
        }
      });
      button.classList.add("rate");
      button.dataset.rating = rating;
      button.setAttribute("aria-pressed", String(rated === rating));
      bar.append(button);
    }
    bar.append(actionButton("Copy answer", "Copy", async () => {
      const text = bubble.querySelector(".content").textContent;
      const status = bar.querySelector(".rating-status");
      try {
        await navigator.clipboard.writeText(text);
        status.textContent = "Copied.";
      } catch (_) {
        status.textContent = "Copy is not allowed here: select the text instead.";
      }
    }));
    if (question) {
      bar.append(actionButton("Regenerate answer", "Regenerate", () => {
        if (!state.controller) regenerate(question);
      }));
    }
    const status = document.createElement("span");
    status.className = "rating-status";
    status.setAttribute("role", "status");
    bar.append(status);
    bubble.append(bar);
  }

  function showOutcome(bubble, question) {
    bubble.dataset.state = "done";
    if (bubble.dataset.finish !== "content_filter") offerActions(bubble, question, null);
    if (bubble.dataset.finish === "content_filter") {
      bubble.dataset.state = "moderated";
      addNote(bubble, "This answer was stopped by content moderation.", "moderation");
      offerAppeal(bubble);
    } else if (bubble.dataset.finish === "length") {
      addNote(bubble, "The answer reached the max tokens limit.", "info");
    } else if (bubble.dataset.finish === "cancelled") {
      bubble.dataset.state = "stopped";
      addNote(bubble, "Stopped.", "info");
    }
  }

  function showFailure(bubble, error) {
    if (error && error.name === "AbortError") {
      bubble.dataset.state = "stopped";
      addNote(bubble, "Stopped.", "info");
    } else if (error instanceof ApiFailure && error.moderation) {
      bubble.dataset.state = "moderated";
      addNote(bubble, `Blocked by content moderation: ${error.message}`, "moderation");
      offerAppeal(bubble);
    } else {
      bubble.dataset.state = "error";
      const message = error instanceof ApiFailure ? error.message : String(error);
      addNote(bubble, `Error: ${message}`, "error");
      if (error instanceof ApiFailure && error.status === 401) {
        showNotice("Your key was refused; sign in again.", "error");
      }
    }
  }

  async function streamInto(bubble, events, question) {
    const content = bubble.querySelector(".content");
    let answer = "";
    setStreaming(true);
    try {
      answer = await render(bubble, await events(), question);
      showOutcome(bubble, question);
    } catch (error) {
      answer = content.textContent;
      showFailure(bubble, error);
    } finally {
      if (!state.unloading) remember(null);  // a reload keeps it, to resume it
      bubble.removeAttribute("aria-busy");
      if (!answer) content.classList.add("blank");
      state.controller = null;
      setStreaming(false);
      el.prompt.focus();
      loadHistory();
    }
    return answer;
  }

  function answerBubble() {
    const bubble = addMessage("assistant", "", "streaming");
    bubble.setAttribute("aria-busy", "true");
    const controller = new AbortController();
    state.controller = controller;
    return { bubble, controller };
  }

  // Ask the last question again: a new answer below (with a stored conversation, a new turn).
  async function regenerate(question) {
    if (!state.conversationId && state.transcript.at(-1)?.role === "assistant") {
      state.transcript.pop();  // the answer being replaced
      state.transcript.pop();  // its question, sent again below
    }
    await sendMessage(question, { regenerated: true });
  }

  async function sendMessage(text, { regenerated = false } = {}) {
    showNotice("");
    state.transcript.push({ role: "user", content: text });
    if (!regenerated) addMessage("user", text);
    const { bubble, controller } = answerBubble();
    if (regenerated) bubble.dataset.regenerated = "true";
    if (state.conversationId) bubble.dataset.conversationId = state.conversationId;
    const request = {
      model: el.model.value,
      // with a stored conversation the gateway has the earlier turns; else send them all
      input: state.conversationId ? text : state.transcript.slice(),
      max_output_tokens: Math.max(1, Math.round(numberOr(el.maxTokens, 128))),
      temperature: numberOr(el.temperature, 0.2),
    };
    // A small model rambles once its long tail is sampled: keep the most likely 90% only.
    if (request.temperature > 0) request.top_p = 0.9;
    if (state.conversationId) request.conversation = state.conversationId;
    const answer = await streamInto(
      bubble, () => createEvents(request, controller.signal, bubble), text);
    if (answer) state.transcript.push({ role: "assistant", content: answer });
    else state.transcript.pop();  // nothing came back: do not resend a dangling question
  }

  // After a reload in the middle of an answer: the conversation so far, the question, and the
  // answer replayed from its first event and followed live (GET /v1/responses/{id}?stream=true).
  async function resumeInflight() {
    const raw = sessionStorage.getItem(INFLIGHT_STORAGE);
    if (!raw) return;
    let inflight;
    try {
      inflight = JSON.parse(raw);
    } catch (_) {
      remember(null);
      return;
    }
    let status;
    try {
      status = (await getJSON(`/v1/responses/${encodeURIComponent(inflight.responseId)}`)).status;
    } catch (_) {
      remember(null);  // gone (deleted, expired, another key): nothing to resume
      return;
    }
    if (inflight.conversationId) await openConversation(inflight.conversationId);
    if (state.controller) return;
    if (status !== "queued" && status !== "in_progress") {
      remember(null);  // it ended meanwhile: the conversation shows it
      return;
    }
    addMessage("user", inflight.question || "");
    const { bubble, controller } = answerBubble();
    bubble.dataset.resumed = "true";
    bubble.dataset.transport = "sse";
    const url = `/v1/responses/${encodeURIComponent(inflight.responseId)}?stream=true`;
    const init = { headers: headers({ Accept: "text/event-stream" }), signal: controller.signal };
    await streamInto(bubble, async () => httpEvents(url, init), inflight.question);
  }

  async function stop() {
    const controller = state.controller;
    if (!controller) return;
    const streaming = [...el.messages.querySelectorAll(".message.assistant")].at(-1);
    const id = streaming && streaming.dataset.responseId;
    controller.abort();
    remember(null);
    if (id) {  // stop the generation on the worker now, not after the resume grace period
      fetch(`/v1/responses/${encodeURIComponent(id)}/cancel`, {
        method: "POST", headers: headers(),
      }).catch(() => {});
    }
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
        answer.dataset.requestId = turn.request_id;
        if (!turn.answer) answer.querySelector(".content").classList.add("blank");
        else if (turn.finish_reason !== "content_filter") {
          offerActions(answer, null, turn.rating && turn.rating.rating);
        }
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
    resumeInflight();
  }

  function signOut() {
    stop();
    remember(null);
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
