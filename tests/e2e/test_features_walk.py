"""The Features tab in a real browser against a real server and worker (issue 12 items
3–4): the demo run completes, the worker inspects it on its own, and the tab shows its
latents with examples; sort, search, the dead filter, a label that survives a reload,
and a prompt. Screenshots at 1280 and 390 wide; the time from the training's end to
examples on screen is printed (and must stay under a minute)."""

from __future__ import annotations

import re
import time
from datetime import datetime
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect
from test_studio_walk import shoot

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _get(base: str, path: str) -> Any:
    return httpx.get(f"{base}/api/v1{path}", timeout=10).json()


def eventually(check: Any, timeout: float = 15.0) -> None:
    """Retry ``check`` (an assertion) until it passes: the table refetches after a click."""
    end = time.monotonic() + timeout
    while True:
        try:
            check()
            return
        except AssertionError:
            if time.monotonic() > end:
                raise
            time.sleep(0.3)


def _finished_demo(base: str) -> tuple[int, float]:
    """Start the demo and wait for its training to complete: (id, finished_at epoch)."""
    started = httpx.post(f"{base}/api/v1/demo", timeout=30).json()
    run_id = int(started["training"]["id"])
    end = time.monotonic() + 900
    while time.monotonic() < end:
        run = _get(base, f"/trainings/{run_id}")
        if run["status"] == "completed":
            return run_id, datetime.fromisoformat(run["finished_at"]).timestamp()
        assert run["status"] not in ("failed", "cancelled"), run["error"]
        time.sleep(1)
    raise AssertionError("the demo training did not complete in 15 minutes")


def test_the_features_tab_of_a_finished_demo_run(studio: str, browser: Any) -> None:
    run_id, finished = _finished_demo(studio)
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{studio}/runs/{run_id}")
    page.get_by_role("tab", name="Features").click()
    expect(page).to_have_url(re.compile(r"tab=features"))
    page.get_by_test_id("example").first.wait_for(timeout=120_000)
    after = time.time() - finished
    ins = _get(studio, f"/trainings/{run_id}/inspection")["inspection"]
    took = (
        datetime.fromisoformat(ins["finished_at"]) - datetime.fromisoformat(ins["created_at"])
    ).total_seconds()
    print(
        f"features on screen {after:.1f} s after the training completed (inspection {took:.1f} s)"
    )
    assert after < 60, f"examples appeared {after:.0f} s after completion"
    walk(page, studio)
    assert errors == []


def walk(page: Any, studio: str) -> None:
    """Sort, search, filter, label and prompt on the open Features tab; screenshots."""

    rows = page.get_by_test_id("latent-row")
    expect(rows.first).to_be_visible()
    expect(page.get_by_test_id("latents-count")).to_contain_text("of ")
    # tokens of the top examples are tinted by the latent's activation
    tinted = page.get_by_test_id("example").first.locator("[data-testid=token][style]")
    assert tinted.count() >= 1

    # sort by max activation, descending: the first row has the largest max
    page.get_by_role("button", name="Max").click()
    expect(page.locator("th[aria-sort=descending]")).to_contain_text("Max")

    def sorted_by_max() -> None:
        maxes = [float(t) for t in rows.locator("td:nth-child(3)").all_inner_texts()[:10]]
        assert len(maxes) == 10 and maxes == sorted(maxes, reverse=True), maxes

    eventually(sorted_by_max)

    # search by a top token of the first latent: every row listed has it
    token = rows.first.locator("td").nth(4).inner_text().split(" · ")[0].strip()
    page.get_by_role("textbox", name="Search latents").fill(token)

    def all_have_token() -> None:
        texts = rows.locator("td:nth-child(5)").all_inner_texts()
        assert texts and all(token.lower() in t.lower() for t in texts), (token, texts)

    eventually(all_have_token)
    page.get_by_role("textbox", name="Search latents").fill("")

    # dead latents: none, or only ones with density 0
    page.get_by_role("combobox", name="Filter latents").select_option("dead")

    def only_dead() -> None:
        count = page.get_by_test_id("latents-count").inner_text()
        densities = rows.locator("td:nth-child(2)").all_inner_texts()
        assert count == "0 latents" or (densities and set(densities) == {"0"}), (count, densities)

    eventually(only_dead)
    page.get_by_role("combobox", name="Filter latents").select_option("alive")
    eventually(lambda: expect(rows.first.locator("td").nth(1)).not_to_have_text("0"))

    # label the selected latent; it shows in the table and survives a reload
    rows.nth(1).click()
    title = page.get_by_test_id("feature-title")
    latent = re.search(r"Latent (\d+)", title.inner_text())
    assert latent is not None
    page.get_by_role("textbox", name="Label").fill("docs punctuation")
    page.get_by_role("button", name="Save label").click()
    expect(title).to_contain_text("docs punctuation")
    expect(rows.filter(has_text="docs punctuation")).to_have_count(1)
    page.reload()
    page.get_by_role("combobox", name="Filter latents").select_option("labelled")
    expect(rows.filter(has_text="docs punctuation")).to_have_count(1)
    page.get_by_role("combobox", name="Filter latents").select_option("alive")

    # try a prompt: its tokens come back, latents listed, the first one tints them
    page.get_by_role("textbox", name="Prompt").fill(
        "Return the list of keyword arguments passed to the function."
    )
    page.get_by_role("button", name="Run").click()
    result = page.get_by_test_id("prompt-result")
    result.wait_for(timeout=60_000)
    assert page.get_by_test_id("prompt-latent").count() >= 5
    assert result.locator("[data-testid=token][style]").count() >= 1
    shoot(page, "features")
