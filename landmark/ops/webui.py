"""The local web UIs as short-lived processes, and a headless Chromium to look at them (browser checks, screenshots).

``evidently_ui(workspace, port)`` serves the monitoring workspace with ``evidently ui`` on 127.0.0.1 for the
duration of a ``with`` block (the process is stopped on exit, also on errors); ``free_port()`` picks a port for it.
``headless_chrome()`` opens Debian's Chromium through Selenium with the driver path given explicitly, so Selenium
Manager never tries to download one (no network here); ``undrawn_panels``, ``page_text`` and
``full_page_screenshot`` read what a page shows. Selenium is a ``dev`` dependency: it is imported only inside the
functions that drive the browser.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from landmark.platform.infra import HOST, InfraError, log_tail, port_is_free, terminate_process

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.remote.webelement import WebElement

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROME_ARGUMENTS: tuple[str, ...] = (
    "--headless=new",
    "--no-sandbox",  # root in containers has no user namespace for the sandbox
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
_QUIET_ENV = {"DO_NOT_TRACK": "1"}  # evidently ui: no telemetry


def free_port(low: int = 20000, high: int = 30000) -> int:
    """A port that is free on 127.0.0.1 now, drawn at random from [low, high).

    Raises:
        InfraError: none found after many tries.
    """
    rng = random.Random()
    for _ in range(500):
        port = rng.randrange(low, high)
        if port_is_free(port):
            return port
    raise InfraError(f"no free port on {HOST} in [{low}, {high})")


def http_get(url: str, timeout_s: float = 2.0) -> bytes | None:
    """The body of a 200 answer from ``url``, or None (refused, timeout, other status)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return bytes(response.read()) if response.status == 200 else None
    except (urllib.error.URLError, OSError, ValueError):
        return None


def http_get_json(url: str, timeout_s: float = 30.0) -> Any:
    """GET ``url`` and return the decoded JSON answer.

    Raises:
        urllib.error.URLError: the request failed (HTTPError for a non-2xx answer).
    """
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return json.loads(response.read())


def http_post_json(url: str, body: Any, timeout_s: float = 30.0) -> Any:
    """POST ``body`` as JSON and return the decoded JSON answer.

    Raises:
        urllib.error.URLError: the request failed (HTTPError for a non-2xx answer).
    """
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return json.loads(response.read())


def wait_until(
    ready: Callable[[], bool], timeout_s: float, process: subprocess.Popen[bytes], log: Path
) -> None:
    """Poll ``ready`` every 0.25 s until it is true.

    Raises:
        InfraError: ``process`` exited first, or ``timeout_s`` passed (the message ends with the log's tail).
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise InfraError(
                f"the process exited with status {process.returncode}; log {log}:\n{log_tail(log)}"
            )
        if ready():
            return
        time.sleep(0.25)
    raise InfraError(f"not ready within {timeout_s:.0f}s; log {log}:\n{log_tail(log)}")


def evidently_command() -> list[str]:
    """``evidently`` of this environment (next to its python), else the one on PATH."""
    local = Path(sys.executable).with_name("evidently")
    found = str(local) if local.is_file() else shutil.which("evidently")
    if found is None:
        raise InfraError("no `evidently` executable next to this python or on PATH")
    return [found]


@contextlib.contextmanager
def evidently_ui(workspace: str | Path, port: int, *, log: Path, timeout_s: float = 60.0) -> Iterator[str]:
    """Serve ``workspace`` with ``evidently ui`` on 127.0.0.1:``port`` inside the block; yields the base URL.

    The server reads the workspace when it starts (snapshots added later show up on its next reload). It is
    stopped (SIGTERM, SIGKILL after 10 s) when the block exits, whatever happens inside it.

    Raises:
        InfraError: the port is taken, or the UI did not answer ``/api/version`` within ``timeout_s``.
    """
    if not port_is_free(port):
        raise InfraError(f"port {port} on {HOST} is in use")
    url = f"http://{HOST}:{port}"
    args = ["ui", "--workspace", str(workspace), "--host", HOST, "--port", str(port)]
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [*evidently_command(), *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **_QUIET_ENV},
            start_new_session=True,
        )
    try:
        wait_until(lambda: http_get(f"{url}/api/version") is not None, timeout_s, process, log)
        yield url
    finally:
        terminate_process(process.pid, grace_s=10.0)


def chromium_available() -> str | None:
    """None when the browser checks can run, else why not (no Chromium, no driver, no Selenium)."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.is_file():
            return f"{path} not found (apt-get install -y chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install 'selenium>=4.20', the dev extra)"
    return None


def headless_chrome(width: int = 1500, height: int = 1000) -> WebDriver:
    """Debian's Chromium, headless, through Selenium with Debian's chromedriver (nothing is downloaded).

    The caller quits it (``driver.quit()``).
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (*CHROME_ARGUMENTS, f"--window-size={width},{height}"):
        options.add_argument(argument)
    return webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))


# ---------------------------------------------------------------------------------------------------------------
# What the pages show (Selenium; the Evidently UI is React + MUI X charts)

MARKS = ".MuiMarkElement-root"  # a point drawn on a line chart
BARS = ".MuiBarElement-root"  # a bar of a bar chart (a zero bar is there, but 0 px high)


def panel_card(driver: WebDriver, title: str) -> WebElement:
    """The Evidently dashboard card whose heading is ``title``.

    Raises:
        selenium.common.exceptions.NoSuchElementException: no such card (yet).
    """
    from selenium.webdriver.common.by import By

    xpath = f"//div[contains(@class,'MuiCard-root')][.//h5[normalize-space()={_xpath_literal(title)}]]"
    return driver.find_element(By.XPATH, xpath)


def _xpath_literal(text: str) -> str:
    if "'" not in text:
        return f"'{text}'"
    return "concat(" + ', "\'", '.join(f"'{part}'" for part in text.split("'")) + ")"


def drawn(card: WebElement) -> bool:
    """True when a dashboard card shows a point of a line or a bar higher than 0 px."""
    from selenium.webdriver.common.by import By

    if card.find_elements(By.CSS_SELECTOR, MARKS):
        return True
    return any(bar.size["height"] > 0 for bar in card.find_elements(By.CSS_SELECTOR, BARS))


def undrawn_panels(driver: WebDriver, titles: Sequence[str]) -> list[str]:
    """The titles among ``titles`` whose card is missing or shows neither a point nor a bar."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    missing = []
    for title in titles:
        try:
            if not drawn(panel_card(driver, title)):
                missing.append(title)
        except (NoSuchElementException, StaleElementReferenceException):
            missing.append(title)
    return missing


def wait_for(
    driver: WebDriver, condition: Callable[[WebDriver], bool], timeout_s: float, message: str
) -> None:
    """Poll ``condition(driver)`` every 0.5 s until it is true.

    Raises:
        selenium.common.exceptions.TimeoutException: still false after ``timeout_s`` (with ``message``).
    """
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout_s, poll_frequency=0.5).until(condition, message)


def page_text(driver: WebDriver) -> str:
    """The visible text of the page's body."""
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.TAG_NAME, "body").text)


def full_page_screenshot(driver: WebDriver, path: Path, width: int = 1500, max_height: int = 4000) -> Path:
    """Resize the window to the page's full height (at most ``max_height``) and save a PNG screenshot."""
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.set_window_size(width, min(max(height, 600), max_height) + 140)  # + the window's own chrome
    path.parent.mkdir(parents=True, exist_ok=True)
    if not driver.save_screenshot(str(path)):
        raise InfraError(f"could not write the screenshot {path}")
    return path


# ---------------------------------------------------------------------------------------------------------------
# A flow run to look at

_PROBE_FLOW = """
import sys
from prefect import flow, task

@task
def count(n: int) -> int:
    return n

@flow(name=sys.argv[1], flow_run_name=sys.argv[2])
def probe(n: int = 3) -> int:
    return sum(count(i) for i in range(n))

assert probe() == 3
"""


def run_probe_flow(api: str, home: Path, flow_name: str, run_name: str, timeout_s: float = 180.0) -> None:
    """Run a tiny flow (three tasks) named ``flow_name`` with the flow run name ``run_name`` against the Prefect
    API ``api``, in a fresh Python process with its own ``PREFECT_HOME`` (so this process's settings are left
    alone).

    Raises:
        InfraError: the flow failed (the message carries the end of its output).
    """
    env = {**os.environ, "PREFECT_API_URL": api, "PREFECT_HOME": str(home), **_QUIET_ENV}
    done = subprocess.run(
        [sys.executable, "-c", _PROBE_FLOW, flow_name, run_name],
        env=env,
        capture_output=True,
        timeout=timeout_s,
        check=False,
    )
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).decode(errors="replace")[-2000:]
        raise InfraError(f"the probe flow exited with status {done.returncode}:\n{tail}")
