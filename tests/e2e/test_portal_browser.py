"""The customer portal in a real browser: headless Chromium opens the link that
``app-portal-access`` returns from a real ``homing serve`` and shows the application.

Skipped (in CI too) when ``/usr/bin/chromium`` is not installed: the browser is an optional
tool of this one test, not a requirement of the project.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import HomingProcess, Receiver, logged_errors, start_homing, stop_homing

CHROMIUM = Path("/usr/bin/chromium")
BROWSER_TIMEOUT = 8.0
# virtual time runs only while nothing is loading, so the page's fetches finish inside it
VIRTUAL_TIME_MS = "5000"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason=f"{CHROMIUM} is not installed (apt-get install chromium); portal browser test "
        "NOT RUN",
    ),
]


@pytest.fixture
def homing(tmp_path: Path) -> Iterator[HomingProcess]:
    """A real ``homing serve`` on SQLite (the portal page does not depend on the backend)."""
    logs = tmp_path / "logs"
    logs.mkdir()
    server = start_homing("sqlite:///" + str(tmp_path / "portal.db"), logs)
    try:
        yield server
    finally:
        stop_homing(server)


def chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium with ``args``; fail the test if it fails or hangs."""
    command = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
        f"--virtual-time-budget={VIRTUAL_TIME_MS}", *args,
    ]  # fmt: skip
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=BROWSER_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"chromium did not finish within {BROWSER_TIMEOUT} s: {exc}", pytrace=False)
    if done.returncode != 0:
        pytest.fail(f"chromium exited {done.returncode}:\n{done.stderr[-3000:]}", pytrace=False)
    return done


def test_portal_link_shows_the_application_in_a_browser(
    homing: HomingProcess, receiver: Receiver, tmp_path: Path
) -> None:
    """The portal link renders the app's name, its endpoint URL and its message's event type
    (names shown as text, never as markup, and the token never on the page), and a screenshot
    of it is a real image."""
    tag = uuid.uuid4().hex[:10]
    name = f"Acme <b id=injected>Shop</b> {tag}"
    hook = f"{receiver.url}/portal-{tag}"
    event_type = f"invoice.paid{tag}"
    headers = {"authorization": f"Bearer {homing.token}"}
    with httpx.Client(base_url=homing.base_url, headers=headers, timeout=10.0) as client:
        app = client.post("/api/v1/app", json={"name": name, "uid": f"portal-{tag}"})
        assert app.status_code == 201, app.text
        app_id = app.json()["id"]
        ep = client.post(f"/api/v1/app/{app_id}/endpoint", json={"url": hook})
        assert ep.status_code == 201, ep.text
        msg = client.post(
            f"/api/v1/app/{app_id}/msg", json={"eventType": event_type, "payload": {"n": 1}}
        )
        assert msg.status_code == 202, msg.text
        access = client.post(f"/api/v1/auth/app-portal-access/{app_id}")
        assert access.status_code == 200, access.text
    url, token = access.json()["url"], access.json()["token"]
    assert url == f"{homing.base_url}/portal#app={app_id}&token={token}"

    profile = tmp_path / "chromium-profile"
    dom = chromium(profile, "--dump-dom", url).stdout
    assert "Webhooks for Acme &lt;b id=injected&gt;Shop&lt;/b&gt; " + tag in dom, dom
    assert 'id="injected"' not in dom
    assert hook in dom
    assert event_type in dom
    assert msg.json()["id"] in dom
    # the status line is emptied on success (it would say "Loading…" or an error otherwise)
    assert '<p id="status" class="muted"></p>' in dom
    assert token not in dom

    shot = tmp_path / "portal.png"
    chromium(profile, f"--screenshot={shot}", "--window-size=1200,800", url)
    assert shot.exists(), "chromium wrote no screenshot"
    png = shot.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(png) > 10_000, f"the screenshot is only {len(png)} bytes"
    assert not logged_errors(homing.stderr()), homing.stderr()
