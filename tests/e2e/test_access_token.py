"""A studio bound beyond localhost needs SAESTUDIO_API_TOKEN; the web page asks for it
(issue 4/5): without it the page says so and shows no data; with a wrong one it still
says so; with the right one the runs load and live updates arrive over the WebSocket
(which carries the token in its query)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import SHOTS, serve
from playwright.sync_api import expect

pytestmark = [pytest.mark.e2e]

TOKEN = "s3cret-token-for-the-browser-test"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    # API only: the demo's jobs stay queued, which is all the page needs to show
    args = ("--host", "0.0.0.0", "--no-worker")
    with serve(tmp_path_factory.mktemp("guarded"), args, {"SAESTUDIO_API_TOKEN": TOKEN}) as base:
        yield base


def _set_token(page: Any, value: str, shot: str | None = None) -> None:
    page.get_by_role("button", name="Access token").click()
    field = page.get_by_label("SAESTUDIO_API_TOKEN", exact=False)
    field.fill(value)
    if shot:
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"{shot}-1280.png"))
    with page.expect_navigation():  # saving reloads the page with the token in place
        page.get_by_role("button", name="Save token").click()


def test_page_asks_for_the_token_and_works_with_it(guarded: str, browser: Any) -> None:
    assert httpx.get(guarded + "/api/v1/trainings").status_code == 401
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(guarded)
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("needs an access token", timeout=15_000)
    expect(alert).to_contain_text("key button")
    expect(page.get_by_text("Loading…")).to_have_count(0)  # failed, not still loading
    expect(page.get_by_role("button", name="Start the demo")).to_have_count(0)

    _set_token(page, "wrong-token", shot="access-token")
    expect(page.get_by_role("alert")).to_contain_text("token was refused", timeout=15_000)

    _set_token(page, TOKEN)
    expect(page.get_by_role("alert")).to_have_count(0, timeout=15_000)
    expect(page.get_by_role("button", name="Start the demo")).to_be_visible(timeout=15_000)

    # a training queued behind the page's back appears through the live event stream
    headers = {"Authorization": f"Bearer {TOKEN}"}
    r = httpx.post(guarded + "/api/v1/demo", headers=headers, timeout=30)
    assert r.status_code in (200, 201), r.text
    name = r.json()["training"]["name"]
    expect(page.get_by_role("article", name=f"Training {name}")).to_be_visible(timeout=15_000)
    page.close()
