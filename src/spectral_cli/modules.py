"""``spectral modules``: operator key, upload, pin, approve (signed locally), revoke, list.

The private key never leaves this machine: ``approve`` signs with the local key file and
stores only the signature.  The server trusts the public keys in SPECTRAL_OPERATOR_KEYS.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Any

import msgspec

from spectral_core import Settings
from spectral_core.errors import ConfigError
from spectral_core.modules import (
    ModuleKey,
    add_approval,
    fetch_pinned,
    generate_operator_key,
    key_id_for,
    list_approvals,
    list_modules,
    load_private_key,
    pin_module,
    put_blob,
    revoke_approval,
    save_private_key,
    sign_approval,
)

from ._out import add_json_flag, emit, to_json
from .tenants import run_with_connection

_DURATION = re.compile(r"^(\d+)([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _default_key_path(settings: Settings) -> Path:
    return Path(settings.home_dir) / "operator.key"


def _add_key_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--org", required=True)
    p.add_argument("--domain", required=True)
    p.add_argument("--action", required=True)
    p.add_argument("--world-model-version", required=True, dest="world_model_version")


def _key(args: argparse.Namespace) -> ModuleKey:
    return ModuleKey(
        org=args.org,
        domain=args.domain,
        action=args.action,
        world_model_version=args.world_model_version,
    )


def parse_duration(text: str) -> int:
    """``90`` / ``90s`` / ``15m`` / ``12h`` / ``30d`` -> seconds.

    Raises:
        ConfigError: Not a duration.
    """
    m = _DURATION.match(text.strip())
    if not m or int(m.group(1)) <= 0:
        raise ConfigError(f"not a duration: {text!r} (e.g. 3600, 15m, 12h, 30d)")
    return int(m.group(1)) * _UNITS[m.group(2)]


def read_module(path: Path) -> bytes:
    """Module bytes from a ``.wasm`` binary or a ``.wat`` text file.

    Raises:
        ConfigError: Unreadable file or invalid text format.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    if path.suffix == ".wat" or not data.startswith(b"\0asm"):
        import wasmtime

        try:
            return bytes(wasmtime.wat2wasm(data.decode("utf-8")))
        except (wasmtime.WasmtimeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path} is neither a wasm binary nor valid WAT text") from exc
    return data


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("modules", help="decision modules: keygen, put, pin, approve, revoke, list")
    verbs = p.add_subparsers(dest="modules_verb", required=True, metavar="VERB")

    k = verbs.add_parser("keygen", help="create an operator key pair (private key stays here)")
    k.add_argument(
        "--out",
        type=Path,
        default=None,
        help="private key file (default: <SPECTRAL_HOME_DIR>/operator.key)",
    )
    k.add_argument("--force", action="store_true", help="overwrite an existing key file")
    add_json_flag(k)
    k.set_defaults(run=keygen_cmd, needs_settings=True)

    put = verbs.add_parser("put", help="upload a module (.wasm or .wat); prints its hash")
    put.add_argument("file", type=Path)
    put.add_argument(
        "--no-check", action="store_true", help="skip compiling it in the sandbox before upload"
    )
    add_json_flag(put)
    put.set_defaults(run=put_cmd)

    pin = verbs.add_parser("pin", help="pin a module key to a content hash (forever)")
    _add_key_args(pin)
    pin.add_argument("content_hash")
    add_json_flag(pin)
    pin.set_defaults(run=pin_cmd)

    ap = verbs.add_parser("approve", help="sign an approval locally and store it")
    _add_key_args(ap)
    ap.add_argument(
        "content_hash",
        nargs="?",
        default=None,
        help="default: the hash the key is pinned to (its bytes are verified)",
    )
    ap.add_argument(
        "--key",
        type=Path,
        default=None,
        dest="key_file",
        help="operator private key (default: <SPECTRAL_HOME_DIR>/operator.key)",
    )
    ap.add_argument("--expires-in", default="30d", help="e.g. 3600, 12h, 30d (default 30d)")
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="write the signed approval to this JSON file instead of storing it (to POST to "
        "/api/modules/approvals from elsewhere); needs CONTENT_HASH or database access",
    )
    add_json_flag(ap)
    ap.set_defaults(run=approve_cmd)

    rv = verbs.add_parser("revoke", help="revoke an approval (stops execution within 1 s)")
    rv.add_argument("approval_id", type=int)
    rv.add_argument("--reason", default=None)
    add_json_flag(rv)
    rv.set_defaults(run=revoke_cmd)

    ls = verbs.add_parser("list", help="pinned modules and approvals")
    ls.add_argument("--org", default=None)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(run=list_cmd)


def _key_doc(key: ModuleKey) -> dict[str, str]:
    return {
        "org": key.org,
        "domain": key.domain,
        "action": key.action,
        "world_model_version": key.world_model_version,
    }


def keygen_cmd(args: argparse.Namespace, settings: Settings) -> int:
    path = args.out or _default_key_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    pem, public = generate_operator_key()
    save_private_key(path, pem, overwrite=args.force)
    import base64

    key_id = key_id_for(base64.b64decode(public))
    setting = f"{key_id}:{public}"
    emit(
        args,
        {"private_key_file": str(path), "key_id": key_id, "public_key": public, "setting": setting},
        f"private key: {path} (mode 0600; keep it on this machine)\n"
        f"key id:      {key_id}\n"
        f"public key:  {public}\n"
        f"add to the API's environment: SPECTRAL_OPERATOR_KEYS={setting}",
    )
    return 0


def put_cmd(args: argparse.Namespace, settings: Settings) -> int:
    data = read_module(args.file)
    if not args.no_check:
        from spectral_core.sandbox.wasm import WasmSandbox

        WasmSandbox().compile(data)  # raises SandboxError / ModuleTrap with the reason
    content_hash = run_with_connection(settings, lambda c: put_blob(c, data))
    emit(args, {"content_hash": content_hash, "size": len(data)}, content_hash)
    return 0


def pin_cmd(args: argparse.Namespace, settings: Settings) -> int:
    key = _key(args)
    created = run_with_connection(settings, lambda c: pin_module(c, key, args.content_hash))
    emit(
        args,
        {"key": _key_doc(key), "content_hash": args.content_hash, "created": created},
        f"{'pinned' if created else 'already pinned'}: {key.org}/{key.domain}/{key.action}/"
        f"{key.world_model_version} -> {args.content_hash}",
    )
    return 0


def approve_cmd(args: argparse.Namespace, settings: Settings) -> int:
    key = _key(args)
    private = load_private_key(args.key_file or _default_key_path(settings))
    expires_at = int(time.time()) + parse_duration(args.expires_in)

    if args.out is not None:
        return _approval_file(args, settings, key, private, expires_at)

    async def go(conn):  # type: ignore[no-untyped-def]
        content_hash = args.content_hash
        if content_hash is None:
            content_hash, _ = await fetch_pinned(conn, key)
        approval = sign_approval(private, content_hash, key, expires_at)
        return approval, await add_approval(conn, approval)

    approval, approval_id = run_with_connection(settings, go)
    expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires_at))
    emit(
        args,
        {
            "approval_id": approval_id,
            "key": _key_doc(key),
            "content_hash": approval.content_hash,
            "key_id": approval.key_id,
            "expires_at": expires,
        },
        f"approval {approval_id}: {approval.content_hash} for {key.org}/{key.domain}/"
        f"{key.action}/{key.world_model_version}, key {approval.key_id}, expires {expires}",
    )
    return 0


def _approval_file(
    args: argparse.Namespace, settings: Settings, key: ModuleKey, private: Any, expires_at: int
) -> int:
    """``approve --out FILE``: the signed approval document, for ``POST
    /api/modules/approvals`` by someone who has no database access."""
    content_hash = args.content_hash
    if content_hash is None:

        async def pinned(conn):  # type: ignore[no-untyped-def]
            return (await fetch_pinned(conn, key))[0]

        content_hash = run_with_connection(settings, pinned)
    approval = sign_approval(private, content_hash, key, expires_at)
    args.out.write_bytes(msgspec.json.encode(approval))
    emit(
        args,
        {"file": str(args.out), "content_hash": content_hash, "key_id": approval.key_id},
        f"approval for {content_hash} signed by {approval.key_id} written to {args.out}: "
        "POST it to /api/modules/approvals with an operator key",
    )
    return 0


def revoke_cmd(args: argparse.Namespace, settings: Settings) -> int:
    revoked = run_with_connection(
        settings, lambda c: revoke_approval(c, args.approval_id, args.reason)
    )
    emit(
        args,
        {"approval_id": args.approval_id, "revoked": revoked},
        f"approval {args.approval_id} {'revoked' if revoked else 'was already revoked'}",
    )
    return 0


def list_cmd(args: argparse.Namespace, settings: Settings) -> int:
    async def go(conn):  # type: ignore[no-untyped-def]
        return await list_modules(conn, args.org), await list_approvals(conn, args.org)

    modules, approvals = run_with_connection(settings, go)
    if args.json:
        to_json({"modules": modules, "approvals": approvals})
        return 0
    for m in modules:
        k = m.key
        print(
            f"{k.org}/{k.domain}/{k.action}/{k.world_model_version}  {m.content_hash}  "
            f"{m.size} B  live approvals: {m.live_approvals}"
        )
    if approvals:
        print(file=sys.stdout)
        print(f"{'id':>6} {'key_id':<16} {'expires':<20} {'state':<8} module")
    now = time.time()
    for a in approvals:
        state = "revoked" if a["revoked_at"] else "expired" if a["expires_at"] <= now else "live"
        print(
            f"{a['id']:>6} {a['key_id']:<16} "
            f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(a['expires_at'])):<20} "
            f"{state:<8} {a['org']}/{a['domain']}/{a['action']}/{a['world_model_version']} "
            f"{a['content_hash'][:16]}…"
        )
    return 0
