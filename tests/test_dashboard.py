"""The dashboard in a real browser: Debian's chromium, headless, through Selenium (no
browser download). Log in with a token, watch capture lag move while a workload runs,
start a dry-run restore from the form and read its report, see a failed drill turn the
health panel red; screenshots of every page at desktop and phone width."""

from __future__ import annotations

import shutil
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from journal import sample
from tests.support.capture import Background
from tests.support.served import Served, served

pytestmark = pytest.mark.integration

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import WebDriverException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
SIZES = {"desktop": (1280, 800), "phone": (390, 844)}


@pytest.fixture(scope="module")
def server(pg18_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with served(pg18_server, tmp_path_factory.mktemp("dash")) as s:
        yield s


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.fail("chromium and chromium-driver are needed: apt-get install chromium "
                    "chromium-driver (.ci/run does this)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,800", "--hide-scrollbars"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


def wait_for(predicate: Callable[[], object], timeout: float = 30, what: str = "") -> object:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
            if value:
                return value
        except WebDriverException:
            pass
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and the pixels of an 8-bit RGB(A) PNG, unfiltered (no imaging
    library needed)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height, channels = 8, b"", 0, 0, 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and color in (2, 6), (depth, color)
            channels = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw, stride = zlib.decompress(idat), width * channels
    rows: list[bytearray] = []
    prev = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        for x in range(stride):
            a = line[x - channels] if x >= channels else 0
            b, c = prev[x], prev[x - channels] if x >= channels else 0
            if kind == 1:
                line[x] = (line[x] + a) & 0xFF
            elif kind == 2:
                line[x] = (line[x] + b) & 0xFF
            elif kind == 3:
                line[x] = (line[x] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[x] = (line[x] + pred) & 0xFF
        rows.append(line)
        prev = line
    pixels = [bytes(row[x:x + 3]) for row in rows[::4] for x in range(0, stride, channels * 4)]
    return width, height, pixels


def screenshot(driver: object, shots: Path, page: str) -> None:
    """Both widths (the viewport set exactly); each PNG written as an artifact and checked
    to show something: many colours, and more than the background."""
    for size, (width, height) in SIZES.items():
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": 1,
            "mobile": size == "phone"})
        time.sleep(0.4)
        data = driver.get_screenshot_as_png()
        (shots / f"{page}-{size}.png").write_bytes(data)
        w, h, pixels = png_pixels(data)
        assert (w, h) == (width, height)
        background = max(set(pixels), key=pixels.count)
        other = sum(1 for p in pixels if p != background) / len(pixels)
        assert len(set(pixels)) > 20 and other > 0.05, \
            f"{page} at {size} looks blank ({len(set(pixels))} colours, {other:.1%})"
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def log_in(driver: object, server: Served, role: str = "operator") -> None:
    driver.delete_all_cookies()
    driver.get(server.base + "/login")
    driver.find_element(By.ID, "token").send_keys(server.tokens[role])
    driver.find_element(By.ID, "login").click()
    wait_for(lambda: driver.find_elements(By.ID, "capture-panel"), what="the overview")


def test_a_wrong_token_is_refused_and_a_right_one_logs_in(browser, server, shots) -> None:
    browser.get(server.base + "/")
    assert browser.current_url.endswith("/login")
    screenshot(browser, shots, "login")
    browser.find_element(By.ID, "token").send_keys("ejt_wrong")
    browser.find_element(By.ID, "login").click()
    # The refusal arrives as a new page: wait for it rather than read the old one.
    wait_for(lambda: browser.find_elements(By.ID, "login-error"), what="the login refusal")
    assert "unknown or revoked" in browser.find_element(By.ID, "login-error").text
    log_in(browser, server)
    assert "test-operator (operator)" in browser.page_source
    assert server.tokens["operator"] not in browser.page_source
    assert all(server.tokens["operator"] not in c["value"] for c in browser.get_cookies())


def test_capture_lag_updates_while_a_workload_runs(browser, server, shots) -> None:
    log_in(browser, server)
    capture = Background(server.cfg)
    stop = threading.Event()

    def work() -> None:
        while not stop.is_set():
            sample.workload(server.source_url, 40, seed=int(time.time()))

    worker = threading.Thread(target=work, daemon=True)
    try:
        capture.wait_streaming()
        worker.start()
        seen = set()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(seen) < 3:
            seen.add((browser.find_element(By.ID, "lag-bytes").text,
                      browser.find_element(By.ID, "confirmed-lsn").text))
            time.sleep(0.5)
        assert len(seen) >= 3, f"the capture panel did not move: {seen}"
        assert browser.find_element(By.ID, "slot-state").text == "active"
        points = browser.find_element(By.CSS_SELECTOR, "#lag-chart polyline")
        assert len(points.get_attribute("points").split()) >= 3
        screenshot(browser, shots, "overview")
    finally:
        stop.set()
        worker.join(timeout=60)
        capture.stop.set()
        capture.join()


def test_a_dry_run_restore_from_the_form_shows_its_report(browser, server, shots) -> None:
    log_in(browser, server)
    browser.get(server.base + "/restore")
    assert browser.find_element(By.ID, "dry_run").is_selected()
    assert not browser.find_element(By.ID, "confirm_database").is_displayed()
    screenshot(browser, shots, "restore")
    browser.find_element(By.ID, "target").send_keys(server.source_url)
    browser.find_element(By.ID, "start-restore").click()
    wait_for(lambda: "/jobs/r" in browser.current_url, what="the job page")
    wait_for(lambda: browser.find_element(By.ID, "job-status").text == "succeeded",
             timeout=120, what="the dry run to finish")
    report = browser.find_element(By.ID, "report").text
    assert "public.document" in report and "(dry run)" in browser.page_source
    screenshot(browser, shots, "job")


def test_a_real_restore_from_the_form_needs_the_database_typed_again(browser, server) -> None:
    log_in(browser, server, "admin")
    browser.get(server.base + "/restore")
    browser.find_element(By.ID, "target").send_keys(server.source_url)
    browser.find_element(By.ID, "dry_run").click()
    assert browser.find_element(By.ID, "confirm_database").is_displayed()
    browser.find_element(By.ID, "confirm_database").send_keys("not-the-name")
    browser.find_element(By.ID, "start-restore").click()
    error = wait_for(lambda: browser.find_elements(By.ID, "restore-error"), what="the error")
    assert "type the target's database name" in error[0].text
    assert server.job_count() == 1  # the dry run before; nothing started now


def test_a_failed_drill_turns_the_health_panel_red(browser, server, shots) -> None:
    log_in(browser, server)
    panel = browser.find_element(By.ID, "health-panel")
    assert "failed" not in panel.get_attribute("class").split(), panel.text
    # a drill against a scratch server that is not there: it fails, and is recorded so
    drill = server.cli("drill", "--scratch", "postgresql://nobody@127.0.0.1:9/postgres",
                       check=False)
    assert drill.returncode != 0
    wait_for(lambda: "failed" in browser.find_element(By.ID, "health-panel")
             .get_attribute("class").split(), timeout=30, what="the health panel to fail")
    assert "restore drill" in browser.find_element(By.ID, "health-panel").text.lower() or \
        "drill" in browser.find_element(By.ID, "health-panel").text.lower()
    screenshot(browser, shots, "overview-failed-drill")
