"""``spectral tenants``: create tenants, issue / list / revoke their API keys."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import msgspec
import psycopg

from spectral_core import Settings
from spectral_core.db import connect_kwargs, wrap_errors
from spectral_core.ratelimit import TenantLimits
from spectral_core.tenants import (
    create_api_key,
    create_tenant,
    list_api_keys,
    list_tenants,
    revoke_api_key,
    set_tenant_limits,
)

from ._db import resolve_url
from ._out import add_json_flag, emit, table, to_json

T = TypeVar("T")


def run_with_connection(
    settings: Settings, fn: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]
) -> T:
    """Run ``fn(conn)`` on one autocommit async connection to the CLI's database."""

    async def go() -> T:
        url = resolve_url(settings)
        kwargs = connect_kwargs()
        with wrap_errors():
            conn = await psycopg.AsyncConnection.connect(
                url, connect_timeout=max(1, int(settings.database_connect_timeout_s)), **kwargs
            )
        async with conn:
            return await fn(conn)

    return anyio.run(go, backend="asyncio")


def _limits(args: argparse.Namespace, settings: Settings) -> TenantLimits | None:
    if args.rate is None and args.burst is None and args.concurrency is None:
        return None
    return TenantLimits(
        rate=args.rate or settings.api_rate,
        burst=args.burst or settings.api_burst,
        concurrency=args.concurrency or settings.api_concurrency,
    )


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("tenants", help="tenants (orgs) and their API keys")
    verbs = p.add_subparsers(dest="tenants_verb", required=True, metavar="VERB")

    c = verbs.add_parser("create", help="create a tenant (idempotent)")
    c.add_argument("org", help="org name: a-z, 0-9 and '-', up to 63 characters")
    for name, typ in (("--rate", float), ("--burst", int), ("--concurrency", int)):
        c.add_argument(name, type=typ, default=None, help="per-tenant limit override")
    add_json_flag(c)
    c.set_defaults(run=create_cmd)

    lim = verbs.add_parser("limits", help="set (or clear with no flags) a tenant's limits")
    lim.add_argument("org")
    for name, typ in (("--rate", float), ("--burst", int), ("--concurrency", int)):
        lim.add_argument(name, type=typ, default=None)
    add_json_flag(lim)
    lim.set_defaults(run=limits_cmd)

    ls = verbs.add_parser("list", help="list tenants")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(run=list_cmd)

    keys = verbs.add_parser("keys", help="API keys: create, list, revoke")
    kverbs = keys.add_subparsers(dest="keys_verb", required=True, metavar="VERB")
    kc = kverbs.add_parser("create", help="issue a key for ORG (the token is shown once)")
    kc.add_argument("org")
    kc.add_argument(
        "--operator",
        action="store_true",
        help="an operator key: may also manage the module store (/api/modules) and use the "
        "operator console (/api/operator, /console/)",
    )
    kc.add_argument("--label", default=None)
    kc.add_argument("--json", action="store_true")
    kc.set_defaults(run=key_create_cmd)
    kl = kverbs.add_parser("list", help="list keys (never their tokens)")
    kl.add_argument("org", nargs="?", default=None)
    kl.add_argument("--json", action="store_true")
    kl.set_defaults(run=key_list_cmd)
    kr = kverbs.add_parser("revoke", help="revoke a key by id")
    kr.add_argument("key_id")
    add_json_flag(kr)
    kr.set_defaults(run=key_revoke_cmd)


def create_cmd(args: argparse.Namespace, settings: Settings) -> int:
    limits = _limits(args, settings)
    created = run_with_connection(settings, lambda c: create_tenant(c, args.org, limits=limits))
    emit(
        args,
        {"org": args.org, "created": created},
        f"tenant {args.org} {'created' if created else 'already exists'}",
    )
    return 0


def limits_cmd(args: argparse.Namespace, settings: Settings) -> int:
    limits = _limits(args, settings)
    run_with_connection(settings, lambda c: set_tenant_limits(c, args.org, limits))
    doc = {"org": args.org, "limits": None if limits is None else msgspec.to_builtins(limits)}
    if limits is None:
        text = f"tenant {args.org}: limits cleared (the settings' defaults apply)"
    else:
        text = f"tenant {args.org} limits:\n" + table(
            ["rate/s", "burst", "concurrency"], [[limits.rate, limits.burst, limits.concurrency]]
        )
    emit(args, doc, text)
    return 0


def list_cmd(args: argparse.Namespace, settings: Settings) -> int:
    tenants = run_with_connection(settings, list_tenants)
    if args.json:
        to_json(tenants)
        return 0
    print(f"{'org':<24} {'rate':>8} {'burst':>6} {'conc':>5} {'keys':>5}")
    for t in tenants:
        print(
            f"{t.org:<24} {t.rate or '-':>8} {t.burst or '-':>6} {t.concurrency or '-':>5} "
            f"{t.live_keys:>5}"
        )
    return 0


def key_create_cmd(args: argparse.Namespace, settings: Settings) -> int:
    info, token = run_with_connection(
        settings, lambda c: create_api_key(c, args.org, operator=args.operator, label=args.label)
    )
    if args.json:
        to_json({"id": info.id, "org": info.org, "operator": info.operator, "token": token})
        return 0
    print(f"key id:  {info.id}{' (operator)' if info.operator else ''}")
    print(f"token:   {token}")
    print("the token is shown only once; store it now", file=sys.stderr)
    return 0


def key_list_cmd(args: argparse.Namespace, settings: Settings) -> int:
    keys = run_with_connection(settings, lambda c: list_api_keys(c, args.org))
    if args.json:
        to_json(keys)
        return 0
    print(f"{'id':<22} {'org':<20} {'role':<9} {'state':<8} label")
    for k in keys:
        state = "revoked" if k.revoked_at else "live"
        print(
            f"{k.id:<22} {k.org:<20} {'operator' if k.operator else 'tenant':<9} "
            f"{state:<8} {k.label or ''}"
        )
    return 0


def key_revoke_cmd(args: argparse.Namespace, settings: Settings) -> int:
    revoked = run_with_connection(settings, lambda c: revoke_api_key(c, args.key_id))
    emit(
        args,
        {"key_id": args.key_id, "revoked": revoked},
        f"key {args.key_id} {'revoked' if revoked else 'was already revoked'}",
    )
    return 0
