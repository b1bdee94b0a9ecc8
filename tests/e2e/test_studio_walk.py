"""What a new user does in the web studio, in a real browser against a real server and
worker (issue 5 "Done means" 1–4): empty state → demo → extraction progress → a TopK
training through the form (bad values first) → live progress and loss chart → pause →
resume → checkpoints → stop & finalize → download → checkpoint export / delete (the
best asks first) → retry → compare → delete. Every
step asserts what is on the screen; controls are found by role and accessible name.
Screenshots of each main screen (1280×800 and 390×844) go to build/screenshots/."""

from __future__ import annotations

import json
import re
import time
import zipfile
from typing import Any

import httpx
import pytest
from conftest import SHOTS
from playwright.sync_api import expect

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

WAIT = 180_000  # ms: the demo extracts MiniLM activations and trains on 2 CPU cores


UNNAMED = """() => [...document.querySelectorAll('button, a[href], input, select, textarea')]
  .filter((el) => el.type !== 'hidden' && el.offsetParent !== null)
  .filter((el) => !(el.getAttribute('aria-label') || el.getAttribute('aria-labelledby')
    || (el.labels && el.labels.length) || (!['INPUT', 'SELECT', 'TEXTAREA'].includes(el.tagName)
    && el.textContent.trim())))
  .map((el) => el.outerHTML.slice(0, 120))"""


def shoot(page: Any, name: str) -> None:
    """The current screen at desktop size, then the same URL at phone size; and every
    visible control on it has an accessible name."""
    unnamed = page.evaluate(UNNAMED)
    assert unnamed == [], f"controls without an accessible name on {name}: {unnamed}"
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.evaluate("window.scrollTo(0, 0)")  # else the sticky header lands mid-page
    page.wait_for_timeout(700)  # progress bars animate to their value
    page.screenshot(path=str(SHOTS / f"{name}-1280.png"), full_page=True)
    phone = page.context.browser.new_page(viewport={"width": 390, "height": 844})
    phone.goto(page.url)
    phone.wait_for_timeout(1500)
    phone.screenshot(path=str(SHOTS / f"{name}-390.png"), full_page=True)
    phone.close()


def nav(page: Any, name: str) -> None:
    page.get_by_role("navigation", name="Main").get_by_role("link", name=name, exact=True).click()


def card(page: Any, name: str) -> Any:
    return page.get_by_role("article", name=f"Training {name}")


def hyper(page: Any, name: str) -> Any:
    """The run page's hyperparameter row for ``name``."""
    dt = page.locator("dt", has_text=re.compile(rf"^{re.escape(name)}$"))
    return page.get_by_test_id("hyperparameter").filter(has=dt)


def progress(locator: Any) -> int:
    return int(locator.get_attribute("aria-valuenow") or 0)


def wait_status(scope: Any, status: str, timeout: int = WAIT) -> None:
    scope.get_by_test_id("status").filter(has_text=re.compile(rf"^{status}")).first.wait_for(
        timeout=timeout
    )


def api(base: str, path: str) -> Any:
    return httpx.get(f"{base}/api/v1{path}", timeout=10).json()


def test_a_new_user_walks_the_studio(studio: str, browser: Any) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))

    # ---- empty state → one-click demo ------------------------------------------------------
    page.goto(studio)
    page.get_by_role("heading", name="No training runs yet").wait_for()
    shoot(page, "runs-empty")
    page.get_by_role("button", name="Start the demo").click()
    demo = card(page, "demo topk")
    demo.wait_for()
    page.get_by_role("progressbar", name="Extraction demo").wait_for()  # live, from /ws/events
    # the card follows the run without a reload: expansion 4 × MiniLM's 384 becomes a
    # latent count once the worker has read the data
    expect(demo).to_contain_text("4× d_in latents")
    expect(demo).to_contain_text("1,536 latents", timeout=WAIT)

    # ---- the extraction, watched on the datasets page --------------------------------------
    nav(page, "Datasets")
    ds = page.get_by_role("article", name="Dataset demo")
    ds.wait_for()
    bar = ds.get_by_role("progressbar", name="Extraction progress of demo")
    wait_status(ds, "completed")
    assert progress(bar) == 100
    rows = int(ds.get_by_test_id("dataset-rows").inner_text().replace(",", ""))
    assert rows > 10_000  # MiniLM resid_post.3 rows over the packaged Python docs
    assert ds.get_by_text("resid_post.3").is_visible() and ds.get_by_text("width 384").is_visible()
    shoot(page, "datasets")

    # ---- the demo training goes live on the runs page --------------------------------------
    nav(page, "Runs")
    wait_status(card(page, "demo topk"), "(running|completed)")
    # expansion 4 × MiniLM's 384: the width is known once the job reads the data
    expect(card(page, "demo topk")).to_contain_text("1,536 latents")

    # ---- a TopK training through the form: invalid values first ----------------------------
    before = api(studio, "/trainings")["total"]
    nav(page, "New training")
    expect(page.get_by_role("textbox", name="Hook point")).to_have_value("resid_post.3")
    page.get_by_role("textbox", name="Run name").fill("form topk")
    page.get_by_role("textbox", name="Learning rate").fill("-1")
    page.get_by_role("textbox", name="Batch size").fill("12.5")
    page.get_by_role("button", name="Start training").click()
    expect(page.get_by_text("must be > 0")).to_be_visible()
    expect(page.get_by_text("must be a whole number")).to_be_visible()
    expect(page.get_by_role("alert")).to_contain_text("Fix the fields marked below")
    assert api(studio, "/trainings")["total"] == before  # nothing was sent

    # the client cannot know d_sae (expansion × the data's width): the server says
    page.get_by_role("textbox", name="Learning rate").fill("")
    page.get_by_role("textbox", name="Batch size").fill("256")
    page.get_by_role("textbox", name="Expansion factor").fill("4")
    page.get_by_role("textbox", name="k (active latents)").fill("5000")
    page.get_by_text("must be at most d_sae (1536), got 5000").wait_for()
    page.get_by_role("button", name="Start training").click()
    page.get_by_role("alert").get_by_text(re.compile(r"sae\.k: must be at most d_sae")).wait_for()
    assert api(studio, "/trainings")["total"] == before

    page.get_by_role("textbox", name="k (active latents)").fill("16")
    page.get_by_role("textbox", name="Steps").fill("4000")
    page.get_by_text("Advanced hyperparameters").click()
    page.get_by_role("textbox", name="Checkpoint every").fill("200")
    estimate = page.get_by_test_id("estimate")
    estimate.get_by_text("1,536").wait_for()  # latents, resolved by the server
    assert "MB" in estimate.inner_text()
    shoot(page, "new-training")
    page.get_by_role("button", name="Start training").click()

    # ---- live progress and loss chart -------------------------------------------------------
    page.wait_for_url(re.compile(r"/runs/\d+$"))
    form_id = int(page.url.rsplit("/", 1)[1])
    page.get_by_role("heading", name="form topk").wait_for()
    wait_status(page, "running")
    bar = page.get_by_role("progressbar", name="Training progress")
    loss_chart = page.get_by_role("figure", name="Loss chart")
    loss_chart.locator("path.recharts-curve").first.wait_for(timeout=60_000)
    first_len = len(loss_chart.locator("path.recharts-curve").first.get_attribute("d") or "")
    first_step = page.get_by_test_id("detail-steps").inner_text()
    page.wait_for_timeout(4000)
    assert page.get_by_test_id("detail-steps").inner_text() != first_step  # the step counter moves
    assert len(loss_chart.locator("path.recharts-curve").first.get_attribute("d") or "") > first_len
    assert progress(bar) > 0
    shoot(page, "run-detail")

    # ---- pause → resume -------------------------------------------------------------------
    page.get_by_role("button", name="Pause", exact=True).click()
    wait_status(page, "paused", 60_000)
    paused_at = api(studio, f"/trainings/{form_id}")["step"]
    assert 0 < paused_at < 4000
    rows_el = page.get_by_test_id("checkpoint-row")
    rows_el.first.wait_for()
    assert rows_el.filter(has_text=f"{paused_at:,}").count() == 1  # the pause checkpoint
    # the hyperparameter table: the values the run used (from that checkpoint) and why
    expect(hyper(page, "sae.d_sae")).to_contain_text("1536")
    expect(hyper(page, "sae.d_sae")).to_contain_text("derived")  # 4 × d_in
    expect(hyper(page, "lr")).to_contain_text("derived")  # TopK: scaled by d_sae
    expect(hyper(page, "batch_size")).to_contain_text("256")
    expect(hyper(page, "batch_size")).to_contain_text("set")
    expect(hyper(page, "adam_beta1")).to_contain_text("default")
    page.get_by_role("button", name="Resume", exact=True).click()
    wait_status(page, "running", 60_000)
    page.wait_for_function(
        f"() => Number(document.querySelector('[role=progressbar]').getAttribute('aria-valuenow')) > {progress(bar)}",
        timeout=60_000,
    )
    until = time.monotonic() + 30  # the row's step follows the job's 1 s heartbeat
    while api(studio, f"/trainings/{form_id}")["step"] <= paused_at:
        assert time.monotonic() < until, "the resumed run did not move past its pause"
        time.sleep(0.5)

    # ---- stop & finalize → download the SAE ------------------------------------------------
    page.get_by_role("button", name="Stop & finalize", exact=True).click()
    wait_status(page, "completed", 60_000)
    with page.expect_download() as dl:
        page.get_by_role("button", name="Download SAE", exact=True).click()
    names = zipfile.ZipFile(dl.value.path()).namelist()
    assert any(n.endswith("cfg.json") for n in names)
    assert any(n.endswith("sae_weights.safetensors") for n in names)
    # the Evaluation panel: the latest held-out evaluation, every core metric by name
    evaluation = page.get_by_role("table", name="Held-out evaluation")
    for label in ("Explained variance", "Cosine similarity", "Relative reconstruction bias"):
        expect(evaluation.get_by_role("row").filter(has_text=label)).to_have_count(1)
    evaluation.scroll_into_view_if_needed()
    page.locator("section").filter(has=evaluation).screenshot(
        path=str(SHOTS / "run-evaluation-1280.png")
    )

    # ---- checkpoint actions: export one, delete one; the best one asks first ---------------
    ckpts = api(studio, f"/trainings/{form_id}/checkpoints")
    best = next(c for c in ckpts if c["is_best"])
    other = next((c for c in ckpts if not c["is_best"]), None)
    page.get_by_role("button", name=f"Export step {best['step']}").click()
    expect(page.get_by_role("status")).to_contain_text(
        f"Exported step {best['step']} in SAELens format"
    )
    if other is not None:
        page.get_by_role("button", name=f"Delete step {other['step']}").click()
        expect(page.get_by_role("button", name=f"Delete step {other['step']}")).to_have_count(0)
    page.get_by_role("button", name=f"Delete step {best['step']}").click()
    dialog = page.get_by_role("dialog", name="Delete the best checkpoint")
    expect(dialog).to_contain_text("lowest held-out loss")
    dialog.get_by_role("button", name="Cancel").click()
    expect(page.get_by_role("button", name=f"Delete step {best['step']}")).to_be_visible()
    assert best["id"] in {c["id"] for c in api(studio, f"/trainings/{form_id}/checkpoints")}

    # ---- retry → a new run ------------------------------------------------------------------
    page.get_by_role("button", name="Retry", exact=True).click()
    page.wait_for_url(re.compile(rf"/runs/(?!{form_id}$)\d+$"))
    retry_id = int(page.url.rsplit("/", 1)[1])
    assert api(studio, f"/trainings/{retry_id}")["parent_id"] == form_id
    page.get_by_role("button", name="Stop", exact=True).wait_for()
    page.get_by_role("button", name="Stop", exact=True).click()
    wait_status(page, "cancelled", 60_000)

    # ---- compare the demo and the form run --------------------------------------------------
    wait_demo = time.monotonic() + WAIT / 1000
    while api(studio, "/trainings?status=completed")["total"] < 2:
        assert time.monotonic() < wait_demo, "the demo run never completed"
        time.sleep(1)
    nav(page, "Compare")
    page.get_by_role("checkbox", name=re.compile(r"^Compare demo topk")).check()
    page.get_by_role("checkbox", name=f"Compare form topk (#{form_id})").check()
    chart = page.get_by_role("figure", name="FVU over steps chart")
    chart.locator("path.recharts-curve").nth(1).wait_for()
    assert (
        chart.get_by_text("demo topk").is_visible() and chart.get_by_text("form topk").is_visible()
    )
    points = page.get_by_test_id("frontier-point")
    points.nth(1).wait_for()
    assert {points.nth(i).locator("td").first.inner_text() for i in range(points.count())} == {
        "demo topk",
        "form topk",
    }
    assert (
        page.get_by_role("figure", name="L0 versus FVU of finished SAEs")
        .locator(".recharts-scatter-symbol")
        .count()
        == 2
    )
    # the selected runs' evaluations side by side, a column each
    table = page.get_by_role("table", name="Evaluation of the selected runs")
    expect(table.get_by_test_id("eval-compare-run")).to_have_count(2)
    expect(table.get_by_test_id("eval-compare-run").first).to_contain_text("topk")
    ev_row = table.get_by_role("row").filter(has_text="Explained variance")
    expect(ev_row.get_by_role("cell")).to_have_count(3)  # the label and one value a run
    assert all(re.match(r"^-?\d", c) for c in ev_row.get_by_role("cell").all_inner_texts()[1:])
    shoot(page, "compare")

    # ---- delete the cancelled retry from the runs page ----------------------------------------
    nav(page, "Runs")
    retry_card = page.get_by_role("article").filter(has_text=f"#{retry_id}")
    retry_card.get_by_role("button", name=re.compile(r"^Delete ")).click()
    dialog = page.get_by_role("dialog", name="Delete runs")
    dialog.get_by_role("button", name="Delete").click()
    retry_card.wait_for(state="detached")
    assert httpx.get(f"{studio}/api/v1/trainings/{retry_id}").status_code == 404
    assert card(page, "demo topk").is_visible() and card(page, "form topk").is_visible()
    # both finished while this page was not shown: their buttons are a finished run's
    for name in ("demo topk", "form topk"):
        expect(card(page, name).get_by_role("button", name=f"Download SAE {name}")).to_be_visible()
        expect(card(page, name).get_by_role("button", name=f"Pause {name}")).to_have_count(0)
    shoot(page, "runs")
    assert errors == [], errors


def test_templates_save_favourite_export_import_and_load(
    studio: str, browser: Any, tmp_path: Any
) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(f"{studio}/new")
    page.get_by_role("combobox", name="Architecture").select_option("jumprelu")
    # JumpReLU's own fields, with Gemma Scope's defaults as placeholders
    expect(page.get_by_role("textbox", name="Target L0")).to_be_visible()
    expect(page.get_by_role("textbox", name="k (active latents)")).to_have_count(0)
    page.get_by_text("Advanced hyperparameters").click()
    expect(page.get_by_role("textbox", name="Adam β1")).to_have_attribute(
        "placeholder", "default 0"
    )
    page.get_by_role("textbox", name="Target L0").fill("40")
    page.get_by_role("textbox", name="Template name").fill("jumprelu l0 40")
    page.get_by_role("button", name="Save", exact=True).click()
    page.get_by_text("Saved template “jumprelu l0 40”.").wait_for()

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Templates").click()
    page.get_by_role("button", name="Favourite jumprelu l0 40").click()
    page.get_by_role("button", name="Unfavourite jumprelu l0 40").wait_for()
    with page.expect_download() as dl:
        page.get_by_role("button", name="Export JSON").click()
    exported = dl.value.path().read_text()
    assert json.loads(exported)[0]["config"]["l0_target"] == 40

    # import the same file under a new name: created; the old name is skipped, not overwritten
    renamed = tmp_path / "templates.json"
    renamed.write_text(exported.replace("jumprelu l0 40", "imported copy"))
    page.get_by_label("Template file to import").set_input_files(str(renamed))
    page.get_by_text("Imported 1, skipped 0").wait_for()
    page.get_by_label("Template file to import").set_input_files(str(renamed))
    page.get_by_text("Imported 0, skipped 1").wait_for()

    page.get_by_role("button", name="Use imported copy").click()
    page.wait_for_url(re.compile(r"/new\?template=\d+"))
    expect(page.get_by_role("combobox", name="Architecture")).to_have_value("jumprelu")
    expect(page.get_by_role("textbox", name="Target L0")).to_have_value("40")
    page.close()
