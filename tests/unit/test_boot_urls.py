"""The boot warning for multi-host URLs that may land on a standby (issue 23.2)."""

from __future__ import annotations

import pytest

from spectral_core import Settings
from spectral_core.boot import multi_host_urls_without_read_write


@pytest.mark.parametrize(
    ("url", "warned"),
    [
        ("postgresql://app:pw@db1:5432,db2:5432/app", True),
        ("postgresql://app@db1,db2/app?target_session_attrs=any", True),
        ("postgresql://app@db1,db2/app?target_session_attrs=read-write", False),
        ("postgresql://app@db1,db2/app?target_session_attrs=primary", False),
        ("host=db1,db2 port=5432,5433 dbname=app", True),
        ("postgresql://app@db1:5432/app", False),
    ],
)
def test_multi_host_url_without_read_write_is_named(url: str, warned: bool) -> None:
    """A URL naming several hosts without target_session_attrs=read-write (or primary) is
    reported by its setting's name; one host, or a writable-only URL, is not."""
    assert multi_host_urls_without_read_write(Settings(database_url=url)) == (
        ["database_url"] if warned else []
    )


def test_every_database_url_setting_is_checked() -> None:
    """The session and checkpointer URLs are checked like the main one."""
    many = "postgresql://app@db1,db2/app"
    settings = Settings(
        database_url="postgresql://app@db1/app",
        database_session_url=many,
        agent_database_url=many,
    )
    assert multi_host_urls_without_read_write(settings) == [
        "database_session_url",
        "agent_database_url",
    ]
