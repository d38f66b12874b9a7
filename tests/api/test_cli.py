"""The operator CLI end to end: keygen, tenants and keys, put/pin/approve, decide, revoke."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest

from spectral_cli.main import main

from .conftest import MODULES, decide_body


@pytest.fixture
def cli(
    monkeypatch: pytest.MonkeyPatch, db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):  # type: ignore[no-untyped-def]
    for name in [n for n in __import__("os").environ if n.startswith("SPECTRAL_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("SPECTRAL_DATABASE_URL", db_url)
    monkeypatch.setenv("SPECTRAL_HOME_DIR", str(tmp_path / ".spectral"))

    def run(*argv: str, code: int = 0) -> str:
        capsys.readouterr()
        assert main(list(argv)) == code, capsys.readouterr()
        return capsys.readouterr().out

    return run


def test_cli_operator_workflow(cli, api_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """keygen -> put .wat -> pin -> approve (signed locally) -> tenant key -> decide over
    HTTP -> revoke -> refused; every verb exits 0, errors exit non-zero."""
    out = cli("modules", "keygen")
    public = re.search(r"SPECTRAL_OPERATOR_KEYS=(\S+)", out).group(1)  # type: ignore[union-attr]
    key_file = tmp_path / ".spectral" / "operator.key"
    assert key_file.stat().st_mode & 0o077 == 0
    cli("modules", "keygen", code=3)  # refuses to overwrite
    content_hash = cli("modules", "put", str(MODULES / "decision.wat")).strip()
    assert re.fullmatch(r"[0-9a-f]{64}", content_hash)
    cli("modules", "put", str(MODULES / "with_import.wat"), code=1)  # sandbox refuses it
    key = [
        "--org",
        "acme",
        "--domain",
        "credit",
        "--action",
        "approve",
        "--world-model-version",
        "v1",
    ]
    assert "pinned" in cli("modules", "pin", *key, content_hash)
    assert "already pinned" in cli("modules", "pin", *key, content_hash)
    out = cli("modules", "approve", *key, "--expires-in", "1h")
    approval_id = re.search(r"approval (\d+):", out).group(1)  # type: ignore[union-attr]
    assert content_hash in cli("modules", "list")
    assert "created" in cli("tenants", "create", "acme")
    out = cli("tenants", "keys", "create", "acme", "--label", "ci")
    token = re.search(r"token:\s+(\S+)", out).group(1)  # type: ignore[union-attr]
    key_id = re.search(r"key id:\s+(\S+)", out).group(1)  # type: ignore[union-attr]
    assert key_id in cli("tenants", "keys", "list", "acme")
    assert "acme" in cli("tenants", "list")
    cli("tenants", "keys", "create", "nobody", code=1)

    api = api_factory(operator_keys=public)
    headers = {"Authorization": f"Bearer {token}"}
    resp = httpx.post(f"{api.base_url}/api/decide", json=decide_body(), headers=headers)
    assert resp.status_code == 200, resp.text
    assert resp.json()["content_hash"] == content_hash

    assert "revoked" in cli("modules", "revoke", approval_id, "--reason", "test")
    time.sleep(api.settings.api_approval_ttl_s + 0.05)
    resp = httpx.post(f"{api.base_url}/api/decide", json=decide_body(), headers=headers)
    assert resp.status_code == 403
    assert "revoked" in cli("tenants", "keys", "revoke", key_id)
    time.sleep(api.settings.api_auth_ttl_s + 0.05)
    resp = httpx.post(f"{api.base_url}/api/decide", json=decide_body(), headers=headers)
    assert resp.status_code == 401
