"""``insightgw admin rotate-master-key``: re-wrap the catalog's secrets under a new master key.

Offline only: the gateway must be stopped (its catalog lock is refused otherwise). The current
key is found exactly as the server finds it (``GATEWAY_MASTER_KEY``, ``GATEWAY_MASTER_KEY_FILE``
or ``<data-dir>/master.key``). The new key goes to ``--new-key-file`` if given, else it replaces
the key file the current key came from.

Replacing a key file: the old key is first copied to ``<file>.previous`` and the new one written
to ``<file>.next`` (both 0600, fsynced); the catalog transaction re-wraps every secret; just
before it commits, ``<file>.next`` is renamed over ``<file>``. If anything fails before the
commit, the old key is put back and nothing has changed. ``<file>.previous`` is removed once the
commit is done; if a crash leaves it behind, the next rotation refuses to start until the
operator has checked which key opens the catalog.

The rotation is recorded in the audit chain in the same transaction (``master_key.rotated``:
counts and key fingerprints, never key material; see :mod:`gateway.store.rotation`).

Example:
    insightgw admin rotate-master-key --data-dir ./var
    insightgw admin rotate-master-key --data-dir ./var --new-key-file /secure/master.key.2
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the rest is imported when the command runs: `insightgw --help` stays fast
    from gateway.config import Settings
    from gateway.store.db import Database


def _write_key(path: Path, key: bytes) -> None:
    """Write a base64 key to a new file (mode 0600, fsynced); refuse to overwrite."""
    from gateway.config import ConfigurationError

    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigurationError(f"{path} exists already; refusing to overwrite it") from None
    with os.fdopen(fd, "w") as fh:
        fh.write(base64.b64encode(key).decode() + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _key_file(settings: Settings) -> Path | None:
    """The file the current key comes from, or None when it comes from the environment."""
    if settings.master_key is not None:
        return None
    return settings.master_key_file or settings.data_dir / "master.key"


def _rotate_in_place(
    db: Database, old_key: bytes, new_key: bytes, key_file: Path
) -> dict[str, int]:
    from gateway.config import ConfigurationError
    from gateway.store import rotation
    from gateway.store.crypto import Keyring

    previous = key_file.with_name(key_file.name + ".previous")
    staged = key_file.with_name(key_file.name + ".next")
    for leftover in (previous, staged):
        if leftover.exists():
            raise ConfigurationError(
                f"{leftover} exists: an earlier rotation did not finish; check which key opens "
                "the catalog (insightgw audit verify), keep that one as "
                f"{key_file.name} and remove the others"
            )
    _write_key(previous, old_key)
    _write_key(staged, new_key)
    replaced = False

    def install() -> None:
        nonlocal replaced
        os.replace(staged, key_file)
        replaced = True
        _fsync_dir(key_file.parent)

    try:
        counts = rotation.rotate_master_key(db, Keyring(old_key), Keyring(new_key), install)
    except BaseException:
        if replaced:
            os.replace(previous, key_file)
            _fsync_dir(key_file.parent)
        staged.unlink(missing_ok=True)
        previous.unlink(missing_ok=True)
        raise
    previous.unlink()
    _fsync_dir(key_file.parent)
    return counts


def rotate_master_key(args: argparse.Namespace) -> int:
    """Run the command; expected failures raise ConfigurationError or CatalogUnavailable."""
    from gateway.config import ConfigurationError, Settings
    from gateway.store import rotation
    from gateway.store.crypto import DecryptionFailed, Keyring
    from gateway.store.db import Database

    settings = Settings(data_dir=args.data_dir, demo=False)
    old_key = settings.load_master_key()
    key_file = _key_file(settings)
    new_file: Path | None = args.new_key_file
    if key_file is None and new_file is None:
        raise ConfigurationError(
            "the current master key comes from GATEWAY_MASTER_KEY: pass --new-key-file and "
            "then put the new key in the environment"
        )
    if not settings.catalog_path.exists():
        raise ConfigurationError(f"no catalog at {settings.catalog_path}")
    new_key = os.urandom(32)
    db = Database(settings.catalog_path)  # CatalogUnavailable while a gateway runs
    try:
        if new_file is None:
            assert key_file is not None
            counts = _rotate_in_place(db, old_key, new_key, key_file)
        else:
            _write_key(new_file, new_key)
            try:
                counts = rotation.rotate_master_key(db, Keyring(old_key), Keyring(new_key))
            except BaseException:
                new_file.unlink(missing_ok=True)
                raise
    except DecryptionFailed:
        raise ConfigurationError(
            "the current master key does not open the catalog's secrets; nothing was changed"
        ) from None
    finally:
        db.close()
    print(
        f"re-wrapped {counts['data_keys']} data keys, {counts['token_secrets']} token secrets "
        f"and {counts['gateway_secrets']} gateway secrets; dataset files are unchanged"
    )
    print(
        f"master key {Keyring(old_key).key_id} -> {Keyring(new_key).key_id}; "
        f"{counts['audit_events']} audit events recorded (one per collaboration, one for the "
        "gateway)"
    )
    if new_file is None:
        print(f"the new master key is in {key_file}")
    elif key_file is None:
        print(
            f"the new master key is in {new_file}: set GATEWAY_MASTER_KEY to its content (or "
            f"GATEWAY_MASTER_KEY_FILE={new_file}) before starting the gateway; the old key "
            "no longer opens anything",
            file=sys.stderr,
        )
    else:
        print(
            f"the new master key is in {new_file}: set GATEWAY_MASTER_KEY_FILE={new_file} or "
            f"move it over {key_file} before starting the gateway; the key in {key_file} no "
            "longer opens anything",
            file=sys.stderr,
        )
    return 0


def add_rotate_parser(admin: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rotate = admin.add_parser(
        "rotate-master-key", help="re-wrap every secret under a new master key (offline)"
    )
    rotate.add_argument("--data-dir", dest="data_dir", type=Path, default=Path("var"))
    rotate.add_argument(
        "--new-key-file",
        dest="new_key_file",
        type=Path,
        default=None,
        help="write the new key here (0600, never overwritten) instead of replacing the key file",
    )
    rotate.set_defaults(run=rotate_master_key)
