"""The web chat page in headless Chromium, against a real gateway, bus and demo model.

Sign in with a key, pick the model, watch an answer stream into its bubble over the Responses
API's WebSocket, stop a long one mid-way (the worker frees the slot through the cancel on
``chat.control``), reload the page in the middle of an answer and watch it carry on, keep a
screenshot. Other tests force the SSE fallback and feed the page answers through Playwright's
request routing.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page, Route, WebSocket, expect

from chatbus.polling import eventually
from chatbus.settings import Settings
from inference_consumers.worker import InferenceWorker
from schemas.events import CancelRequest
from schemas.topics import TopicName
from tests.integration.gateway_fixtures import RunningGateway
from tests.integration.raw_kafka import read_events

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.model]

WAIT_MS = 120_000  # a cold demo model on two shared cores can be slow to its first token

# Records every length the last assistant bubble's text takes, as the page renders it.
RECORD_LENGTHS = """() => {
  window.__lengths = [];
  const messages = document.getElementById("messages");
  new MutationObserver(() => {
    const last = [...messages.querySelectorAll(".message.assistant .content")].at(-1);
    if (!last) return;
    const n = last.textContent.length;
    if (window.__lengths.at(-1) !== n) window.__lengths.push(n);
  }).observe(messages, {subtree: true, childList: true, characterData: true});
}"""

LAST_ANSWER_STREAMING = """() => {
  const last = [...document.querySelectorAll(".message.assistant")].at(-1);
  return last && last.dataset.state === "streaming"
    && last.querySelector(".content").textContent.length > 0;
}"""


async def sign_in(page: Page, gateway: RunningGateway, key: str) -> None:
    await page.goto(f"{gateway.url}/")
    await expect(page).to_have_url(re.compile(r"/ui/$"))
    await page.get_by_label("API key").fill(key)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_label("Message")).to_be_visible()


async def send(page: Page, text: str, *, max_tokens: int, temperature: float = 0) -> None:
    options = page.locator("details.options")
    if await options.get_attribute("open") is None:
        await options.locator("summary").click()
    await page.get_by_label("Max tokens").fill(str(max_tokens))
    await page.get_by_label("Temperature").fill(str(temperature))
    await page.get_by_label("Message").fill(text)
    await page.get_by_role("button", name="Send").click()


async def test_sign_in_stream_an_answer_and_stop_one(
    settings: Settings,
    worker: InferenceWorker,
    gateway: RunningGateway,
    key: str,
    page: Page,
    artifacts: Path,
) -> None:
    await page.goto(f"{gateway.url}/")
    await page.get_by_label("API key").fill("cb-not-a-real-key")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#login-error")).to_have_text("That key was not accepted.")

    sent: list[dict[str, Any]] = []  # the response.create messages the page sends

    def on_socket(socket: WebSocket) -> None:
        socket.on("framesent", lambda payload: sent.append(json.loads(payload)))

    page.on("websocket", on_socket)
    await sign_in(page, gateway, key)
    assert await page.evaluate("sessionStorage.getItem('chatbus.apiKey')") == key
    await expect(page.get_by_label("Model")).to_have_value(settings.model.name)
    # The history endpoints may not exist yet: then the list says so instead of failing.
    await expect(page.locator("#history-status")).to_have_attribute(
        "data-state", re.compile(r"^(unavailable|empty|ready)$")
    )

    # 1. An answer streams into its bubble, growing chunk by chunk, then ends.
    await page.evaluate(RECORD_LENGTHS)
    await send(page, "Hello there", max_tokens=48)
    first = page.locator(".message.assistant").nth(0)
    await expect(first).to_have_attribute("data-state", "done", timeout=WAIT_MS)
    await expect(first).to_have_attribute("data-transport", "websocket")
    lengths: list[int] = await page.evaluate("window.__lengths")
    final = len(await first.locator(".content").text_content() or "")
    assert final > 0 and lengths[-1] == final
    grown = [n for n in lengths if n > 0]
    assert len(grown) >= 2, f"the answer arrived in one piece, not streamed: {lengths}"
    assert grown == sorted(grown), f"the bubble's text shrank while streaming: {lengths}"
    await expect(page.get_by_role("button", name="Send")).to_be_visible()
    await expect(page.get_by_role("button", name="Stop")).to_be_hidden()
    await expect(page.locator(".message.user")).to_have_text(re.compile("Hello there"))

    # 2. A long answer, stopped mid-way: the bubble stops growing and the worker frees the slot.
    await send(page, "talk for a long time", max_tokens=1500, temperature=0.7)
    second = page.locator(".message.assistant").nth(1)
    await page.wait_for_function(LAST_ANSWER_STREAMING, timeout=WAIT_MS)
    assert worker.inflight == 1
    await page.get_by_role("button", name="Stop").click()
    await expect(second).to_have_attribute("data-state", "stopped")
    await expect(second.locator(".message-note")).to_have_text("Stopped.")
    stopped_at = len(await second.locator(".content").text_content() or "")
    assert stopped_at > 0

    async def slot_freed() -> bool:
        return worker.inflight == 0

    await eventually(slot_freed, timeout_s=30, what="the stopped request's worker slot to free")
    request_id = await second.get_attribute("data-request-id")
    cancels = await read_events(settings, TopicName.CONTROL, 1)
    assert isinstance(cancels[0], CancelRequest) and cancels[0].request_id == request_id
    assert len(await second.locator(".content").text_content() or "") == stopped_at
    await expect(second).to_have_attribute("data-state", "stopped")
    await expect(page.get_by_role("button", name="Send")).to_be_visible()

    # 3. With history on the gateway, the second message continued the first one's conversation.
    assert [body["type"] for body in sent] == ["response.create"] * 2
    assert sent[0]["input"] == [{"role": "user", "content": "Hello there"}]
    conversation = await first.get_attribute("data-conversation-id")
    assert conversation and "conversation" not in sent[0]
    assert sent[1]["conversation"] == conversation and sent[1]["input"] == "talk for a long time"
    if await page.locator("#history-status").get_attribute("data-state") != "unavailable":
        await expect(page.locator("#conversations button")).to_have_count(1)
        await expect(page.locator("#conversations button")).to_contain_text("Hello there")

    await page.screenshot(path=str(artifacts / "web_ui.png"), full_page=True)


async def test_reloading_the_page_mid_answer_shows_it_so_far_and_keeps_streaming(
    settings: Settings, worker: InferenceWorker, gateway: RunningGateway, key: str, page: Page
) -> None:
    await sign_in(page, gateway, key)
    await send(page, "tell me a long story", max_tokens=1000, temperature=0.7)
    await page.wait_for_function(LAST_ANSWER_STREAMING, timeout=WAIT_MS)
    answer = page.locator(".message.assistant").last
    before = await answer.locator(".content").text_content() or ""
    response_id = await answer.get_attribute("data-response-id")
    await page.reload()
    answer = page.locator(".message.assistant").last
    await expect(answer).to_have_attribute("data-resumed", "true", timeout=WAIT_MS)
    await expect(answer).to_have_attribute("data-response-id", response_id or "")
    await expect(page.locator(".message.user .content").last).to_have_text("tell me a long story")
    await expect(answer).to_have_attribute("data-state", "done", timeout=WAIT_MS)
    after = await answer.locator(".content").text_content() or ""
    assert after.startswith(before) and len(after) > len(before)  # the same answer, carried on
    assert await answer.get_attribute("data-finish") in ("length", "stop")  # never cancelled
    assert await page.evaluate("sessionStorage.getItem('chatbus.inflight')") is None


def over_sse(page: Page) -> Any:
    """Make the page use SSE from POST /v1/responses (what it falls back to without the
    WebSocket), so request routing can feed it answers."""
    return page.add_init_script("sessionStorage.setItem('chatbus.transport', 'sse')")


def response_sse(
    text: str | None,
    *,
    status: str = "completed",
    reason: str | None = None,
    error: dict[str, str] | None = None,
) -> str:
    """The Responses API's events of one answer, as the gateway streams them."""
    base = {
        "id": "resp_" + "0" * 31 + "1",
        "object": "response",
        "created_at": 0,
        "status": "in_progress",
        "model": "m",
        "output": [],
        "conversation": {"id": "conv-1"},
    }
    events: list[tuple[str, dict[str, Any]]] = [("response.created", {"response": base})]
    if text:
        events.append(("response.output_text.delta", {"delta": text}))
    final = {
        **base,
        "status": status,
        "incomplete_details": {"reason": reason} if reason else None,
        "error": error,
    }
    events.append((f"response.{status}", {"response": final}))
    numbered = [
        {"type": kind, "sequence_number": n, **data} for n, (kind, data) in enumerate(events)
    ]
    return "".join(f"id: {e['sequence_number']}\ndata: {json.dumps(e)}\n\n" for e in numbered)


async def test_moderation_shows_a_notice(
    settings: Settings,
    worker: InferenceWorker,
    gateway: RunningGateway,
    key: str,
    page: Page,
    artifacts: Path,
) -> None:
    """Answers the moderation stage would produce, fed to the page by request routing (a worker
    runs so that /v1/models lists the model it serves)."""
    refused = {
        "error": {
            "message": "the request was blocked by input moderation",
            "type": "invalid_request_error",
            "param": "input",
            "code": "content_policy_violation",
        }
    }
    failed = {"code": "server_error", "message": "The worker failed."}
    answers = iter(
        [
            (200, response_sse("I can't help", status="incomplete", reason="content_filter")),
            (200, response_sse(None, status="failed", error=failed)),
            (400, json.dumps(refused)),
        ]
    )

    async def moderated(route: Route) -> None:
        status, body = next(answers)
        await route.fulfill(
            status=status,
            body=body,
            content_type="text/event-stream" if status == 200 else "application/json",
        )

    await over_sse(page)
    await page.route("**/v1/responses", moderated)
    await sign_in(page, gateway, key)

    await send(page, "something the filter stops", max_tokens=8)
    first = page.locator(".message.assistant").nth(0)
    await expect(first).to_have_attribute("data-state", "moderated")
    await expect(first).to_have_attribute("data-transport", "sse")
    await expect(first.locator(".content")).to_have_text("I can't help")
    await expect(first.get_by_role("alert")).to_contain_text("content moderation")

    appealed: list[dict[str, Any]] = []

    async def appeal(route: Route) -> None:
        appealed.append(json.loads(route.request.post_data or "{}"))
        await route.fulfill(status=200, content_type="application/json", body="{}")

    await page.route("**/v1/appeals", appeal)
    page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept("about fireworks")))
    await first.get_by_role("button", name="This refusal is wrong").click()
    await expect(first.locator(".appeal")).to_have_text("Appeal sent, thank you")
    assert appealed and appealed[0]["comment"] == "about fireworks"
    assert appealed[0]["id"].startswith("resp_")

    await send(page, "something the worker fails on", max_tokens=8)
    second = page.locator(".message.assistant").nth(1)
    await expect(second).to_have_attribute("data-state", "error")
    await expect(second.get_by_role("alert")).to_contain_text("The worker failed.")

    await send(page, "something refused with a 400", max_tokens=8)
    third = page.locator(".message.assistant").nth(2)
    await expect(third).to_have_attribute("data-state", "moderated")
    await expect(third.get_by_role("alert")).to_contain_text("blocked by input moderation")
    await page.screenshot(path=str(artifacts / "web_ui_moderation.png"), full_page=True)


async def test_the_conversation_list_opens_a_conversation(
    settings: Settings, worker: InferenceWorker, gateway: RunningGateway, key: str, page: Page
) -> None:
    """The list and the opened conversation, from answers shaped like the history endpoints'."""

    def summary(id: str, title: str) -> dict[str, object]:
        return {
            "id": id,
            "object": "conversation",
            "title": title,
            "created_at": 1767225600,
            "updated_at": 1767225660,
            "turn_count": 2,
        }

    listing = {
        "object": "list",
        "data": [summary("conv-1", "Trip to Lisbon"), summary("conv-2", "Untitled one")],
    }
    turn = {"created_at": 1767225600, "model": settings.model.name, "usage": None, "verdicts": {}}
    conversation = {
        **summary("conv-1", "Trip to Lisbon"),
        "turns": [
            {
                **turn,
                "request_id": "req-1",
                "answer": "Day one: Alfama.",
                "finish_reason": "stop",
                "messages": [{"role": "user", "content": "Plan a trip to Lisbon"}],
            },
            {
                **turn,
                "request_id": "req-2",
                "answer": "",
                "finish_reason": "content_filter",
                "messages": [{"role": "user", "content": "Something flagged"}],
            },
        ],
    }
    seen: list[str | None] = []

    async def history(route: Route) -> None:
        seen.append(await route.request.header_value("authorization"))
        body = conversation if route.request.url.endswith("/conv-1") else listing
        await route.fulfill(status=200, json=body)

    await over_sse(page)
    await page.route(re.compile(r"/v1/conversations(/[^/?]+)?$"), history)
    await sign_in(page, gateway, key)

    items = page.locator("#conversations button")
    await expect(items).to_have_count(2)
    await expect(items.nth(1)).to_contain_text("Untitled one")
    await expect(page.locator("#history-status")).to_have_attribute("data-state", "ready")
    await page.get_by_role("button", name=re.compile("Trip to Lisbon")).click()
    await expect(page.locator(".message.user .content")).to_have_text(
        ["Plan a trip to Lisbon", "Something flagged"]
    )
    answers = page.locator(".message.assistant")
    await expect(answers.nth(0).locator(".content")).to_have_text("Day one: Alfama.")
    await expect(answers.nth(1).get_by_role("alert")).to_contain_text("content moderation")
    await expect(items.nth(0)).to_have_attribute("aria-current", "true")
    assert seen and set(seen) == {f"Bearer {key}"}

    # The next message continues the opened conversation, sending only itself.
    sent: list[dict[str, Any]] = []

    async def answer(route: Route) -> None:
        sent.append(json.loads(route.request.post_data or "{}"))
        await route.fulfill(
            status=200,
            content_type="text/event-stream",
            headers={"x-conversation-id": "conv-1"},
            body=response_sse("Day two: Belém."),
        )

    await page.route("**/v1/responses", answer)
    await send(page, "And day two?", max_tokens=8)
    await expect(answers.nth(2)).to_have_attribute("data-state", "done")
    await expect(answers.nth(2).locator(".content")).to_have_text("Day two: Belém.")
    assert sent[0]["conversation"] == "conv-1" and sent[0]["stream"] is True
    assert sent[0]["input"] == "And day two?"


async def test_an_answer_can_be_rated_copied_and_regenerated(
    settings: Settings, worker: InferenceWorker, gateway: RunningGateway, key: str, page: Page
) -> None:
    """The actions under an answer: 👍/👎 post to /v1/feedback (👎 then asks why, and the
    reason replaces the first rating), Copy puts the answer on the clipboard, Regenerate asks
    the same question again; an opened conversation shows the stored rating."""
    await page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    answers = iter(["Paris.", "It is Paris."])
    asked: list[dict[str, Any]] = []

    async def answer(route: Route) -> None:
        asked.append(json.loads(route.request.post_data or "{}"))
        await route.fulfill(
            status=200, content_type="text/event-stream", body=response_sse(next(answers))
        )

    rated: list[dict[str, Any]] = []
    pending_404 = [True]  # the first rating meets an answer the history has not recorded yet

    async def feedback(route: Route) -> None:
        body = json.loads(route.request.post_data or "{}")
        if pending_404.pop() if pending_404 else False:
            error = {"message": "not recorded yet", "code": "answer_not_found", "param": "id"}
            await route.fulfill(status=404, json={"error": error})
            return
        rated.append(body)
        await route.fulfill(status=200, json={"object": "feedback", "status": "received"})

    # a stored conversation whose answer was rated (opened at the end)
    turn = {"created_at": 1767225600, "model": settings.model.name, "usage": None, "verdicts": {}}
    stored = {
        "id": "conv-9",
        "object": "conversation",
        "title": "Rated",
        "created_at": 1767225600,
        "updated_at": 1767225660,
        "turn_count": 1,
        "turns": [
            {
                **turn,
                "request_id": "req-9",
                "answer": "Yes.",
                "finish_reason": "stop",
                "messages": [{"role": "user", "content": "Is it?"}],
                "rating": {"rating": "down", "category": "unhelpful", "comment": ""},
            }
        ],
    }
    listing = {"object": "list", "data": [{k: v for k, v in stored.items() if k != "turns"}]}

    async def history(route: Route) -> None:
        await route.fulfill(
            status=200, json=stored if route.request.url.endswith("/conv-9") else listing
        )

    await page.route(re.compile(r"/v1/conversations(/[^/?]+)?$"), history)
    await over_sse(page)
    await page.route("**/v1/responses", answer)
    await page.route("**/v1/feedback", feedback)
    await sign_in(page, gateway, key)
    await send(page, "What is the capital of France?", max_tokens=8)
    first = page.locator(".message.assistant").nth(0)
    await expect(first).to_have_attribute("data-state", "done")

    up = first.get_by_role("button", name="Good answer")
    down = first.get_by_role("button", name="Bad answer")
    await up.click()
    await expect(up).to_have_attribute("aria-pressed", "true")
    await expect(first.get_by_role("status")).to_have_text("Thanks for the feedback.")
    assert rated[0] == {
        "id": "resp_" + "0" * 31 + "1",
        "rating": "up",
        "category": None,
        "comment": "",
    }

    await down.click()
    await expect(down).to_have_attribute("aria-pressed", "true")
    await expect(up).to_have_attribute("aria-pressed", "false")
    await first.get_by_label("What was wrong").select_option("incorrect")
    await first.get_by_label("Comment").fill("It is Lyon.")
    await first.get_by_role("button", name="Send").click()
    await expect(first.locator(".rating-detail")).to_have_count(0)
    assert [(r["rating"], r["category"], r["comment"]) for r in rated] == [
        ("up", None, ""),
        ("down", None, ""),
        ("down", "incorrect", "It is Lyon."),
    ]

    await first.get_by_role("button", name="Copy answer").click()
    await expect(first.get_by_role("status")).to_have_text("Copied.")
    assert await page.evaluate("navigator.clipboard.readText()") == "Paris."

    await first.get_by_role("button", name="Regenerate answer").click()
    second = page.locator(".message.assistant").nth(1)
    await expect(second).to_have_attribute("data-state", "done")
    await expect(second.locator(".content")).to_have_text("It is Paris.")
    await expect(page.locator(".message.user")).to_have_count(1)  # the question, once
    assert asked[1]["input"] == "What is the capital of France?"
    assert asked[1]["conversation"] == "conv-1"  # a new turn of the same conversation

    # an opened conversation shows the rating stored with the turn
    await page.get_by_role("button", name="New chat").click()
    await page.get_by_role("button", name=re.compile("Rated")).click()
    opened = page.locator(".message.assistant").nth(0)
    await expect(opened.locator(".content")).to_have_text("Yes.")
    await expect(opened.get_by_role("button", name="Bad answer")).to_have_attribute(
        "aria-pressed", "true"
    )
    await opened.get_by_role("button", name="Good answer").click()
    await expect(opened.get_by_role("button", name="Good answer")).to_have_attribute(
        "aria-pressed", "true"
    )
    assert rated[-1]["id"] == "req-9" and rated[-1]["rating"] == "up"
