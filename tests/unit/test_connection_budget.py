"""The connection budget (ADR 0035): what each process opens follows from Settings, and the
fleet formula adds them up per URL."""

from __future__ import annotations

import pytest

from spectral_core import Settings
from spectral_core.db.budget import check_budget, connection_needs, fleet_connections
from spectral_core.errors import ConfigError

URL = "postgresql://u@localhost/db"


def test_needs_per_role_and_the_fleet_formula() -> None:
    """An API process opens pool + registry; a worker pool + heartbeat + LISTEN +
    checkpointer pool; K API and M workers add up per URL (the session URL carries only
    the workers' LISTEN connections; a separate agent URL takes the checkpointer pools)."""
    s = Settings(database_url=URL, database_pool_max=10, agent_concurrency=4)
    api, w = connection_needs(s, "api"), connection_needs(s, "workers")
    assert (api.main, api.session, api.total) == (11, 0, 11)
    assert (w.pool, w.heartbeat, w.listen, w.checkpointer) == (10, 1, 1, 5)
    assert (w.main, w.session, w.total) == (16, 1, 17)
    f = fleet_connections(s, api=3, workers=2)
    assert (f["main_url"], f["session_url"], f["agent_url"], f["total"]) == (65, 2, 0, 67)
    assert f["formula"].startswith("3 x 11 + 2 x 16 = 65 on SPECTRAL_DATABASE_URL")

    apart = s.replace(agent_database_url="postgresql://u@other/db")
    f = fleet_connections(apart, api=3, workers=2)
    assert (f["main_url"], f["agent_url"], f["total"]) == (55, 10, 67)
    # a pool minimum above the maximum is what the pool opens
    assert connection_needs(s.replace(database_pool_min=12), "api").pool == 12


def test_budget_unset_is_unchecked_and_a_budget_is_enforced() -> None:
    """No budget: any settings pass.  A budget below the process's needs is a ConfigError
    naming the count, its parts and the setting; exactly the needs passes."""
    s = Settings(database_url=URL, database_pool_max=50)
    assert check_budget(s, "workers").total == 57
    with pytest.raises(
        ConfigError, match=r"needs 51 database connections \(pool 50 \+ registry 1\)"
    ):
        check_budget(s.replace(database_max_connections=50), "api")
    assert check_budget(s.replace(database_max_connections=51), "api").total == 51


def test_budget_setting_from_the_environment() -> None:
    """SPECTRAL_DATABASE_MAX_CONNECTIONS maps to database_max_connections; 0 is refused."""
    env = {"SPECTRAL_DATABASE_URL": URL, "SPECTRAL_DATABASE_MAX_CONNECTIONS": "40"}
    assert Settings.from_env(env).database_max_connections == 40
    with pytest.raises(ConfigError):
        Settings.from_env({**env, "SPECTRAL_DATABASE_MAX_CONNECTIONS": "0"})
