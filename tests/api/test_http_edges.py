"""The HTTP tier at its edges (issue 16): operator route ids, rate quota on refusals,
content types, oversize heads, slow and idle clients, the connection cap."""

from __future__ import annotations

import pytest

from .conftest import KEY, Api
from .test_decide import problem

pytestmark = pytest.mark.anyio


async def test_approval_id_with_unicode_digits_is_404_and_revokes_nothing(api: Api) -> None:
    """An approval id is ASCII digits only: Arabic-Indic "١" (which int() reads as 1) and a
    superscript "²" (a digit to str.isdigit() that int() refuses) are 404s, and approval 1
    stays live."""
    _, aid = await api.module("decision", KEY)
    assert aid == 1
    async with api.client(await api.tenant("ops", operator=True)) as ops:
        for raw in ("\u0661", "\u00b2", "\uff11", "1\u0661"):
            problem(await ops.post(f"/api/modules/approvals/{raw}/revoke"), 404)
    assert api.sql("SELECT revoked_at FROM core.module_approvals WHERE id = 1") == [(None,)]
