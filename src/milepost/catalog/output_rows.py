"""Checking output and connection fields, storing their settings, and turning rows into records.

Output settings hold partners' credentials, so settings are stored encrypted (Fernet) with the key
of the data directory (`secret.key`, created 0600 on first use) or `MILEPOST_SECRET_KEY`; those of
connections too, through the same seam. They are written and read only through `_encode_settings`
and `_decode_settings`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from milepost.catalog import journey_rows as jr
from milepost.catalog import rows
from milepost.catalog.output_records import HASHINGS, OUTPUT_TYPES, ConnectionRecord, OutputRecord
from milepost.catalog.tables import AudienceRow, ConnectionRow, JourneyRow, MilestoneRow, OutputRow
from milepost.errors import InvalidRequest, NotFound
from milepost.model.batch import DEVICE_ID_TYPES, USER_IDENTITY_TYPES

log = logging.getLogger(__name__)

MAX_SETTINGS_CHARS = 65_536
IDENTITY_TYPES = frozenset(USER_IDENTITY_TYPES | set(DEVICE_ID_TYPES))
_IDENTITY_ALIASES = {"customerid": "customer_id"}
SECRET_KEY_ENV = "MILEPOST_SECRET_KEY"
KEY_FILE = "secret.key"
_ENCRYPTED = "fernet:"

# Output types beyond the built-ins, added when plugins are loaded (see outputs.registry).
_extra_types: set[str] = set()


def allow_output_types(names: Iterable[str]) -> None:
    """Accept these output types too (the registry calls this with every type it loaded)."""
    _extra_types.update(n for n in names if n not in OUTPUT_TYPES)


# settings at rest


class _Keys:
    """The process's keys: the first encrypts, any decrypts (so a process that served two data
    directories can still read both)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.files: dict[Path, Fernet] = {}
        self.order: list[Fernet] = []
        self.ephemeral: Fernet | None = None

    def cipher(self) -> MultiFernet:
        with self.lock:
            keys = list(self.order)
            env = os.environ.get(SECRET_KEY_ENV, "").strip()
            if env:
                keys.insert(0, Fernet(_as_fernet_key(env)))
            if not keys:
                if self.ephemeral is None:
                    log.warning(
                        "no secret key configured (%s or a data directory's %s): output settings are "
                        "encrypted with a key that lasts only as long as this process",
                        SECRET_KEY_ENV,
                        KEY_FILE,
                    )
                    self.ephemeral = Fernet(Fernet.generate_key())
                keys.append(self.ephemeral)
            elif self.ephemeral is not None:
                keys.append(self.ephemeral)
            return MultiFernet(keys)


_keys = _Keys()


def _as_fernet_key(text: str) -> bytes:
    """A Fernet key as given, or one derived from any other text (a passphrase)."""
    raw = text.encode("utf-8")
    try:
        if len(base64.urlsafe_b64decode(raw)) == 32:
            return raw
    except ValueError:
        pass
    return base64.urlsafe_b64encode(hashlib.sha256(raw).digest())


def use_key_file(data_dir: Path) -> Path:
    """Encrypt with the key in `data_dir/secret.key`, creating it (readable by its owner only)."""
    path = (data_dir / KEY_FILE).resolve()
    with _keys.lock:
        if path not in _keys.files:
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                key = path.read_bytes().strip()
            else:
                key = Fernet.generate_key()
                with os.fdopen(fd, "wb") as fh:
                    fh.write(key + b"\n")
                    fh.flush()
                    os.fsync(fh.fileno())
            _keys.files[path] = Fernet(key)
        fernet = _keys.files[path]
        _keys.order = [fernet, *(f for f in _keys.order if f is not fernet)]
    return path


def _encode_settings(settings: dict[str, Any]) -> str:
    """The stored form of checked settings: encrypted."""
    text = json.dumps(settings, ensure_ascii=False, separators=(",", ":"))
    return _ENCRYPTED + _keys.cipher().encrypt(text.encode("utf-8")).decode("ascii")


def _decode_settings(stored: str) -> dict[str, Any]:
    """The settings `_encode_settings` stored (plain JSON from before encryption reads as it is)."""
    if stored.startswith(_ENCRYPTED):
        try:
            stored = _keys.cipher().decrypt(stored[len(_ENCRYPTED) :].encode("ascii")).decode("utf-8")
        except InvalidToken:
            # Not a 500 on every listing: the output reads as unconfigured and its deliveries fault.
            log.error(
                "cannot decrypt an output's settings: the secret key is not the one they were stored with"
            )
            return {}
    settings: dict[str, Any] = json.loads(stored)
    return settings


def set_settings(row: OutputRow | ConnectionRow, settings: dict[str, Any]) -> None:
    """Store checked settings (see `clean_settings`) on an output or connection row."""
    row.settings = _encode_settings(settings)


# checking fields


def clean_settings(value: object, what: str) -> dict[str, Any]:
    """A copy of settings that are a JSON object, as it will read back, or InvalidRequest."""
    if not isinstance(value, dict):
        raise InvalidRequest(f"{what} settings must be a JSON object (got {type(value).__name__})")
    if not all(isinstance(key, str) for key in value):
        raise InvalidRequest(f"{what} settings must have text keys")
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise InvalidRequest(f"{what} settings must hold only JSON values ({error})") from error
    if len(text) > MAX_SETTINGS_CHARS:
        raise InvalidRequest(
            f"{what} settings can be at most {MAX_SETTINGS_CHARS} characters of JSON (got {len(text)})"
        )
    copy: dict[str, Any] = json.loads(text)
    return copy


def clean_type(value: object) -> str:
    found = value.strip().lower() if isinstance(value, str) else None
    if found not in OUTPUT_TYPES and found not in _extra_types:
        known = [*OUTPUT_TYPES, *sorted(_extra_types)]
        raise InvalidRequest(f"output type must be one of {', '.join(known)} (got {value!r})")
    return found


def clean_hashing(value: object) -> str | None:
    if value is None:
        return None
    found = value.strip().lower() if isinstance(value, str) else None
    if found not in HASHINGS:
        raise InvalidRequest(
            f"hashing must be one of {', '.join(HASHINGS)}, or null to send identities as they are "
            f"(got {value!r})"
        )
    return found


def clean_identities(value: object) -> tuple[str, ...] | None:
    """Identity types without repeats, in the order given; None for the output type's default."""
    if value is None:
        return None
    if not isinstance(value, list | tuple):
        raise InvalidRequest(
            "accepted_identities must be a list of identity types, or null for the output type's "
            f"default (got {value!r})"
        )
    found: list[str] = []
    for item in value:
        identity = item.strip().lower() if isinstance(item, str) else None
        identity = _IDENTITY_ALIASES.get(identity, identity) if identity is not None else None
        if identity not in IDENTITY_TYPES:
            raise InvalidRequest(
                f"accepted_identities: {item!r} is not an identity type; use user identities such as "
                "customer_id, email or mobile_number, or device ids such as ios_advertising_id"
            )
        if identity not in found:
            found.append(identity)
    if not found:
        raise InvalidRequest(
            "accepted_identities cannot be empty: the output would receive nobody; list the identity "
            "types the partner accepts, or use null for the output type's default"
        )
    return tuple(found)


def clean_choice(value: object, allowed: tuple[str, ...], what: str) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise InvalidRequest(f"{what} must be one of {', '.join(allowed)} (got {value!r})")
    return value


# finding rows


def find_audience(session: Session, audience_id: object) -> AudienceRow:
    row = session.get(AudienceRow, audience_id) if rows.valid_id(audience_id) else None
    if row is None:
        if isinstance(audience_id, int) and not isinstance(audience_id, bool):
            raise NotFound(f"there is no audience with id {audience_id}")
        raise InvalidRequest(f"an audience is referred to by its id (got {audience_id!r})")
    return row


def find_connection(session: Session, connection_id: object) -> ConnectionRow:
    row = session.get(ConnectionRow, connection_id) if rows.valid_id(connection_id) else None
    if row is None:
        if isinstance(connection_id, int) and not isinstance(connection_id, bool):
            raise NotFound(f"there is no connection with id {connection_id}")
        raise InvalidRequest(f"a connection is referred to by its id (got {connection_id!r})")
    return row


def audience_names(session: Session, audience_ids: list[int]) -> dict[int, str]:
    """The external name of each audience: the one set, or "journey name – milestone name"."""
    if not audience_ids:
        return {}
    query = (
        select(AudienceRow.id, AudienceRow.external_name, MilestoneRow.name, JourneyRow.name)
        .join(MilestoneRow, MilestoneRow.id == AudienceRow.milestone_id)
        .join(JourneyRow, JourneyRow.id == MilestoneRow.journey_id)
        .where(AudienceRow.id.in_(audience_ids))
    )
    return {
        audience_id: external or jr.default_external_name(journey, milestone)
        for audience_id, external, milestone, journey in session.execute(query).tuples()
    }


# records


def output_record(row: OutputRow) -> OutputRecord:
    identities = None if row.accepted_identities is None else tuple(json.loads(row.accepted_identities))
    return OutputRecord(
        id=row.id,
        type=row.type,
        name=row.name,
        settings=_decode_settings(row.settings),
        accepted_identities=identities,
        hashing=row.hashing,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def stored_identities(identities: tuple[str, ...] | None) -> str | None:
    return None if identities is None else json.dumps(list(identities))


def connection_records(session: Session, where: ColumnElement[bool] | None = None) -> list[ConnectionRecord]:
    """Records of the connections matching `where` (all when None), in id order."""
    query = select(ConnectionRow, OutputRow.name, OutputRow.type).join(
        OutputRow, OutputRow.id == ConnectionRow.output_id
    )
    if where is not None:
        query = query.where(where)
    return [
        ConnectionRecord(
            id=row.id,
            audience_id=row.audience_id,
            output_id=row.output_id,
            output_name=output_name,
            output_type=output_type,
            status=row.status,
            settings=_decode_settings(row.settings),
            on_deactivate=row.on_deactivate,
            health=row.health,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )
        for row, output_name, output_type in session.execute(query.order_by(ConnectionRow.id)).tuples()
    ]


def connection_record(session: Session, connection_id: int) -> ConnectionRecord:
    found = connection_records(session, ConnectionRow.id == connection_id)
    if not found:
        raise NotFound(f"there is no connection with id {connection_id}")
    return found[0]
