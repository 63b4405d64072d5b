"""The ``homing`` command line: tokens are minted, work, and can be revoked."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from homing.api.app import create_app
from homing.config import Settings
from homing.storage import open_storage


def homing(db: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOMING_")}
    env["HOMING_DATABASE_URL"] = f"sqlite:///{db}"
    return subprocess.run(
        [sys.executable, "-m", "homing", *args],
        input=stdin, capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip


async def test_token_create_then_revoke(tmp_path: Path) -> None:
    """A token from ``token create`` opens the API until ``token revoke`` (given the token on
    standard input) revokes it; revoking it again reports that nothing was live."""
    db = tmp_path / "cli.db"
    created = homing(db, "token", "create", "--org", "org_cli")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("hsk_") and token not in created.stderr

    storage = await open_storage(f"sqlite:///{db}")
    try:
        app = create_app(Settings(database_url=f"sqlite:///{db}"), storage)
        transport = httpx.ASGITransport(app=app)
        headers = {"authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://t", headers=headers
        ) as api:
            assert (await api.get("/api/v1/app")).status_code == 200
            revoked = homing(db, "token", "revoke", stdin=token + "\n")
            assert (revoked.returncode, revoked.stdout.strip()) == (0, "revoked")
            assert token not in revoked.stdout + revoked.stderr
            assert (await api.get("/api/v1/app")).status_code == 401
    finally:
        await storage.close()
    again = homing(db, "token", "revoke", stdin=token + "\n")
    assert again.returncode == 1


def test_bad_settings_are_a_clear_error(tmp_path: Path) -> None:
    """An invalid setting stops the command with exit code 2 and names the setting."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOMING_")}
    env.update(HOMING_DATABASE_URL=f"sqlite:///{tmp_path / 'x.db'}", HOMING_PORT="99999")
    result = subprocess.run(
        [sys.executable, "-m", "homing", "migrate"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "port" in result.stderr
