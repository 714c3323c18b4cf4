"""The duty console in a real headless Chromium (Debian's, driven by Playwright) against the real
stack: broker, InfluxDB, worker and alert service.

An ammonia leak whose exhaust fan does not start (interlock failed: red) appears on the open
console without a reload, with names and the rule's texts; a click acknowledges it; the wall
shows it; a report sent through the public form becomes a task of the county bureau and appears
on the console live. Other roles, logged in on the same page, see and may do only what they should.
Screenshots of the console and the wall are saved under the test's tmp dir (docs/ holds a copy).
"""

from __future__ import annotations

import base64
import shutil
import time
import uuid
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from alerts.auth import issue_token
from alerts.store import TaskStore
from sensors.registry import load_registry
from sensors.simulator import PlantSimulator, Scenario

from .conftest import free_ports
from .pipeline_helpers import produce, spawn, stop, wait_until
from .scenario import isolated

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SITE, TRIGGER = "am-qd-mr01", "am-qd-mr01-mr-nh3-01"
ENTERPRISE = "91320681604192189N"  # 启东海韵水产冷冻食品有限公司, the site's enterprise
OTHER_ENTERPRISE = "913205828486022959"  # a hazchem enterprise in Zhangjiagang


def ammonia_leak(registry, start_ms: int) -> list[tuple[str, str, bytes]]:
    """NH3 in the machine room climbs past 150 ppm and the exhaust fan never starts."""
    scenario = Scenario("interlock", SITE, start_s=5, duration_s=70, sensor_id=TRIGGER, respond=False)
    sim = PlantSimulator(registry, seed=3, start_ms=start_ms, tick_s=1.0, scenarios=[scenario], sites=[SITE])
    return [m for _ in range(60) for m in sim.tick()]


async def log_in(browser: Browser, url: str, secret: str) -> Page:
    """A fresh browser context (its own sessionStorage) logged in to `url`."""
    context = await browser.new_context(viewport={"width": 1600, "height": 1000}, locale="zh-CN")
    page = await context.new_page()
    await page.goto(url)
    await page.fill("#login-form input[name=token]", secret)
    await page.click("#login-form button[type=submit]")
    await expect(page.locator("#live")).to_have_class("live on", timeout=15_000)
    return page


@pytest.mark.asyncio(loop_scope="session")
async def test_console_wall_and_report_in_chromium(stack, tmp_path: Path):
    assert Path(CHROMIUM).exists(), f"no {CHROMIUM}: `safewatch stack install` (make setup) installs Debian's chromium"
    settings = await isolated(
        stack,
        alerts_port=free_ports()["alerts_port"],
        alerts_db=tmp_path / "tasks.sqlite3",
        alerts_group=f"it-console-{uuid.uuid4().hex[:6]}",
        alerts_demo_inbox=True,  # departments' webhooks are the service's own inbox
        console_poll_s=0.3,
    )
    registry = load_registry(settings.registry)
    store = TaskStore(settings.alerts_db_path)
    secrets = {
        "duty": issue_token(store, "值班员 王", "duty_officer")[1],
        "inspector": issue_token(store, "监察员 李", "inspector")[1],
        "own": issue_token(store, "企业值班 赵", "enterprise", ENTERPRISE)[1],
        "other": issue_token(store, "他厂值班 钱", "enterprise", OTHER_ENTERPRISE)[1],
    }
    store.close()
    api = settings.alerts_api
    duty = {"Authorization": f"Bearer {secrets['duty']}"}
    alerts = spawn(settings, tmp_path / "alerts.log", "alerts", "serve")
    worker = None
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            wait_until(lambda: _up(f"{api}/health"), 30, f"the alert service (log: {tmp_path / 'alerts.log'})")
            page = await log_in(browser, f"{api}/", secrets["duty"])
            await expect(page.locator(".empty")).to_be_visible()
            await page.evaluate("window.__notReloaded = true")

            # The leak: the worker turns it into a red incident, the service into tasks, the page shows it.
            worker = spawn(settings, tmp_path / "worker.log", "worker")
            await produce(settings, ammonia_leak(registry, int(time.time() * 1000) - 70_000))
            red = page.locator("article.incident[data-severity=red]").first
            await expect(red).to_be_visible(timeout=120_000)
            assert await page.evaluate("window.__notReloaded === true"), "the page reloaded"
            await expect(page.locator("#alarm")).to_be_visible()
            text = await red.inner_text()
            names = ("启东海韵水产冷冻食品有限公司", "氨制冷机房", "江苏省 南通市 启东市", "涉氨制冷")
            for want in (*names, "氨气报警后事故排风机未启动"):
                assert want in text, f"{want!r} not on the card:\n{text}"
            assert "立即手动启动事故排风机" in text  # the rule's recommended action
            incident_id = await red.get_attribute("data-incident-id")

            # Acknowledge the county bureau's task by a click; the row changes through the live feed.
            task = httpx.get(
                f"{api}/tasks", params={"incident_id": incident_id, "department": "county-emergency"}, headers=duty
            ).json()[0]
            row = red.locator(f"tr.task[data-task-id='{task['task_id']}']")
            await row.locator("button[data-action=ack]").click()
            await expect(row).to_have_attribute("data-status", "acknowledged", timeout=15_000)
            acked = httpx.get(f"{api}/tasks/{task['task_id']}", headers=duty).json()["task"]
            assert acked["status"] == "acknowledged" and acked["acknowledged_by"] == "值班员 王"

            # Assign it by a click too (the page asks for the person), then back to it: in progress.
            page.once("dialog", lambda dialog: dialog.accept("工程师 李"))
            await row.locator("button[data-action=assign]").click()
            await expect(row).to_have_attribute("data-status", "in_progress", timeout=15_000)
            await expect(row).to_contain_text("工程师 李")

            # Detail: timeline, the hazards with their readings from InfluxDB as a chart, every task's trail.
            await red.locator("button.more").click()
            detail = page.locator("#detail")
            await expect(detail.locator("svg.chart").first).to_be_visible(timeout=15_000)
            assert "interlock_failed" in await detail.inner_text()
            await page.screenshot(path=str(tmp_path / "console.png"))
            await page.click("#lang")  # English on demand, Chinese by default
            await expect(row.locator("button[data-action=resolve]")).to_have_text("Resolve")
            await expect(page.locator("#counts")).to_contain_text("Open incidents")
            await page.click("#lang")

            # Another role on the same page: the inspector sees it, with no buttons; the enterprise
            # sees its own and may act only on its own enterprise's task; another enterprise sees nothing.
            inspector = await log_in(browser, f"{api}/", secrets["inspector"])
            await expect(inspector.locator(f"article[data-incident-id='{incident_id}']")).to_be_visible()
            assert await inspector.locator("button[data-action]").count() == 0
            own = await log_in(browser, f"{api}/", secrets["own"])
            own_card = own.locator(f"article[data-incident-id='{incident_id}']")
            await expect(own_card).to_be_visible()
            acting = await own_card.locator("button[data-action]").evaluate_all(
                "bs => [...new Set(bs.map(b => b.closest('tr').dataset.taskId))]"
            )
            enterprise_task = httpx.get(
                f"{api}/tasks", params={"incident_id": incident_id, "department": "enterprise-duty"}, headers=duty
            ).json()[0]
            assert acting == [enterprise_task["task_id"]]
            other = await log_in(browser, f"{api}/", secrets["other"])
            await expect(other.locator(".empty")).to_be_visible()
            assert await other.locator("article.incident").count() == 0

            # The wall: the red incident, counted under its city and sector.
            wall = await log_in(browser, f"{api}/wall", secrets["duty"])
            await expect(wall.locator(f"#severe li[data-incident-id='{incident_id}']")).to_be_visible()
            assert int(await wall.locator("b[data-count=red]").inner_text()) >= 1
            assert "南通市" in await wall.locator("#by-region").inner_text()
            assert "涉氨制冷" in await wall.locator("#by-sector").inner_text()

            # A public report through the form: a tracking number, a county task, live on the console and wall.
            public = await (await browser.new_context(locale="zh-CN")).new_page()
            await public.goto(f"{api}/report")
            await public.click("#report button[type=submit]")  # empty: every required field is named
            await expect(public.locator(".field-error[data-for=what]")).not_to_be_empty()
            await expect(public.locator(".field-error[data-for=address]")).not_to_be_empty()
            await public.fill("#report textarea[name=what]", "仓库后门堆放大量液化气钢瓶，无人看管，有明显气味")
            await public.select_option("#report select[name=enterprise_id]", OTHER_ENTERPRISE)
            await public.set_input_files("#report input[name=photos]", files=[_png()])
            await public.check("#report input[name=anonymous]")
            await public.click("#report button[type=submit]")
            tracking = await public.locator("#tracking").inner_text(timeout=15_000)
            report_card = page.locator(f"article[data-incident-id='INC-{tracking}']")
            await expect(report_card).to_be_visible(timeout=15_000)
            assert await report_card.get_attribute("data-kind") == "report"
            tasks = httpx.get(f"{api}/tasks", params={"incident_id": f"INC-{tracking}"}, headers=duty).json()
            assert [t["department"] for t in tasks] == ["county-emergency"]
            # The inspector reads it in the detail (photo included) and closes it as unfounded there.
            inspector_card = inspector.locator(f"article[data-incident-id='INC-{tracking}']")
            await expect(inspector_card).to_be_visible(timeout=15_000)
            await inspector_card.locator("button.more").click()
            panel = inspector.locator("#detail")
            await expect(panel).to_contain_text("液化气钢瓶")
            await expect(panel.locator("img[data-photo]")).to_have_js_property("naturalWidth", 2, timeout=10_000)
            inspector.once("dialog", lambda dialog: dialog.accept("现场核查无钢瓶"))
            await panel.locator("button[data-how=unfounded]").click()
            await expect(inspector_card).to_contain_text("险情已解除", timeout=15_000)  # its incident closed: all clear
            decided = httpx.get(f"{api}/v1/reports", headers=duty).json()[0]
            assert (decided["status"], decided["decided_by"]) == ("unfounded", "监察员 李")
            await public.click("#track button[type=submit]")
            await expect(public.locator("#track-result")).to_contain_text("经核查不属实 — 现场核查无钢瓶")
            await wall.bring_to_front()
            await expect(wall.locator("#events")).to_contain_text("举报", timeout=15_000)
            assert await page.evaluate("window.__notReloaded === true")
            await wall.screenshot(path=str(tmp_path / "wall.png"))
            await public.screenshot(path=str(tmp_path / "report.png"), full_page=True)

            # Open pages hold event streams: the service must still stop promptly, not be killed.
            started = time.monotonic()
            stop(alerts)
            assert alerts.returncode != -9 and time.monotonic() - started < 10, "open streams held the stop up"
        finally:
            await browser.close()
            if worker is not None:
                stop(worker)
            stop(alerts)
    print(f"screenshots: {tmp_path / 'console.png'} {tmp_path / 'wall.png'} {tmp_path / 'report.png'}")


def _up(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _png() -> dict:
    """A real 2×2 PNG, as a file chooser would give it."""
    data = base64.b64decode(
        "iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAFklEQVR4nGP8z8DAwMDAxMDAwMDAAAANHQEDasKb6QAAAABJRU5ErkJggg=="
    )
    return {"name": "cylinders.png", "mimeType": "image/png", "buffer": data}
