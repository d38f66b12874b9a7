"""GET /health: the application/health+json go/no-go document."""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from spectral_core.migrate import head

from .conftest import Api

pytestmark = pytest.mark.anyio


async def get_health(api: Api) -> httpx.Response:
    async with api.client() as client:
        return await client.get("/health")


async def test_health_document_shape(api_factory) -> None:  # type: ignore[no-untyped-def]
    """/health is health+json with status, version, releaseId (the generation) and one
    check per wired feature; LLM credentials appear as true/false, never the secret."""
    api = api_factory(llm_credential={"credit": "sk-very-secret", "fraud": ""})
    resp = await get_health(api)
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/health+json"
    assert resp.headers["cache-control"] == "no-store"
    doc = resp.json()
    assert doc["releaseId"] == str(api.settings.generation)
    assert doc["version"] == api.settings.running_version
    assert set(doc["checks"]) == {
        "database:reachable",
        "database:writable",
        "migrations:head",
        "outbox:writable",
        "workers:live",
        "fleet:live",
        "sandbox:self_test",
        "operator_keys:loaded",
        "llm_credential:credit",
        "llm_credential:fraud",
    }
    checks = {k: v[0] for k, v in doc["checks"].items()}
    assert checks["database:reachable"]["status"] == "pass"
    assert checks["migrations:head"]["observedValue"] == {"database": head(), "code": head()}
    assert checks["outbox:writable"]["status"] == "pass"
    assert checks["sandbox:self_test"]["status"] == "pass"
    # the answering process registered itself (ADR 0032)
    assert checks["fleet:live"] == {**checks["fleet:live"], "status": "pass", "observedValue": 1}
    assert checks["operator_keys:loaded"]["observedValue"] == 1
    assert checks["llm_credential:credit"]["observedValue"] is True
    assert checks["llm_credential:fraud"]["observedValue"] is False
    assert "sk-very-secret" not in resp.text
    # no live worker of this generation yet -> warn (still 200)
    assert checks["workers:live"]["status"] == "warn"
    assert doc["status"] == "warn"


async def test_health_passes_with_a_live_worker(api: Api) -> None:
    """With a live worker of this generation and operator keys, every check passes."""
    api.sql(
        "INSERT INTO core.workers (id, generation, state, host, pid, version) "
        "VALUES (%s, %s, 'running', 'h', 1, 'v')",
        (uuid.uuid4(), api.settings.generation),
    )
    time.sleep(api.settings.api_health_cache_s)
    doc = (await get_health(api)).json()
    assert doc["checks"]["workers:live"][0]["observedValue"] == 1
    assert doc["status"] == "pass"


async def test_health_fails_when_migrations_are_behind(api: Api) -> None:
    """A schema behind the code is a no-go: 503 with status fail."""
    api.sql("DELETE FROM core.schema_migrations WHERE number = %s", (head(),))
    time.sleep(api.settings.api_health_cache_s)
    resp = await get_health(api)
    assert resp.status_code == 503
    assert resp.json()["status"] == "fail"
    assert resp.json()["checks"]["migrations:head"][0]["status"] == "fail"


async def test_health_warns_without_operator_keys(api_factory) -> None:  # type: ignore[no-untyped-def]
    """No trusted operator key: nothing can run, reported as warn."""
    api = api_factory(operator_keys="")
    doc = (await get_health(api)).json()
    assert doc["checks"]["operator_keys:loaded"][0]["status"] == "warn"


async def test_health_fails_when_database_is_gone(api: Api, pg_server, db_url) -> None:  # type: ignore[no-untyped-def]
    """Database unreachable: 503 fail, quickly (bounded by the probe timeout)."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    name = conninfo_to_dict(db_url)["dbname"]
    with psycopg.connect(pg_server.url, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
    try:
        time.sleep(api.settings.api_health_cache_s)
        t0 = time.monotonic()
        resp = await get_health(api)
        assert time.monotonic() - t0 < 3
        assert resp.status_code == 503
        assert resp.json()["checks"]["database:reachable"][0]["status"] == "fail"
    finally:
        with psycopg.connect(pg_server.url, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')


async def test_health_is_cheap_and_cached(api: Api) -> None:
    """Probing every few ms is fine: 200 probes answer fast and the checks (one DB round
    trip each time) run at most once per cache interval."""
    assert api.server.server is not None
    probe = api.server.server.config.app.state.services.health
    calls = 0
    original = probe.compute

    async def counting():  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        return await original()

    probe.compute = counting
    async with api.client() as client:
        t0 = time.monotonic()
        for _ in range(200):
            assert (await client.get("/health")).status_code == 200
        elapsed = time.monotonic() - t0
    assert elapsed < 5
    assert calls <= elapsed / api.settings.api_health_cache_s + 2


async def test_health_passes_on_the_first_probe_after_a_server_restart(  # type: ignore[no-untyped-def]
    api_factory, pg_server, db_url
) -> None:
    """After a restart (or a failover) the pool's idle connections are dead: the first
    probe once the server takes connections again passes, because a connection the server
    closed is caught at checkout (and every idle one verified), never handed to the probe."""
    import psycopg

    if pg_server.embedded is None:
        pytest.skip("needs the embedded server (cannot restart an external one)")
    api = api_factory(api_health_cache_s=0)
    assert (await get_health(api)).status_code == 200
    pg_server.embedded.restart(wait_down_s=0.5)
    deadline = time.monotonic() + 30
    while True:
        try:
            psycopg.connect(db_url, connect_timeout=1).close()
            break
        except psycopg.OperationalError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    resp = await get_health(api)
    assert resp.status_code == 200, resp.text
    assert resp.json()["checks"]["database:writable"][0]["status"] == "pass"


async def test_health_fails_on_a_read_only_session(api_factory, pg_server, db_url) -> None:  # type: ignore[no-untyped-def]
    """A database whose sessions are read-only (default_transaction_read_only, as on a
    standby) is a no-go: /health answers 503 while it lasts and passes again after."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    api = api_factory(api_health_cache_s=0)
    assert (await get_health(api)).status_code == 200
    name = conninfo_to_dict(db_url)["dbname"]
    with psycopg.connect(pg_server.url, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
    try:
        statuses = []
        for _ in range(5):
            statuses.append((await get_health(api)).status_code)
            time.sleep(0.2)
        assert statuses == [503] * 5
    finally:
        with psycopg.connect(pg_server.url, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
    deadline = time.monotonic() + 15
    while (await get_health(api)).status_code != 200:
        assert time.monotonic() < deadline, "health did not pass again"
        time.sleep(0.2)


def _documented_health() -> tuple[dict[str, Any], set[str]]:
    """The example document and the check names of the table in the /health reference."""
    doc = (Path(__file__).resolve().parents[2] / "docs/reference/http-api.md").read_text()
    section = doc.split("## `GET /health`", 1)[1].split("\n## ", 1)[0]
    example = json.loads(section.split("```json", 1)[1].split("```", 1)[0])
    table = set(re.findall(r"^\| `([a-z_]+:[a-z_<>]+)` \|", section, re.M))
    return example, table


async def test_health_reference_matches_the_response(api_factory) -> None:  # type: ignore[no-untyped-def]
    """docs/reference/http-api.md shows the document /health really sends: the example
    has the response's top-level fields (it used to show `serviceId` and `description`,
    which the response never had) and the response's checks with their fields, and the
    table lists every check."""
    example, table = _documented_health()
    api = api_factory(llm_credential={"credit": "x"})
    api.sql(
        "INSERT INTO core.workers (id, generation, state, host, pid, version) "
        "VALUES (%s, %s, 'running', 'h', 1, 'v')",
        (uuid.uuid4(), api.settings.generation),
    )
    doc = (await get_health(api)).json()
    assert set(example) == set(doc)
    assert set(example["checks"]) == set(doc["checks"])
    for name, entries in doc["checks"].items():
        assert set(example["checks"][name][0]) == set(entries[0]), name
    generic = {re.sub(r":credit$", ":<domain>", name) for name in doc["checks"]}
    assert table == generic
