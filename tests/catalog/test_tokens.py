"""API tokens: shown once, stored hashed, verified, scoped, revocable."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text

from milepost.catalog import ApiToken, Catalog
from milepost.clock import ManualClock
from milepost.errors import Conflict, InvalidRequest, NotFound


def test_create_and_verify(catalog: Catalog, clock: ManualClock) -> None:
    token, plaintext = catalog.create_token(" CI deploys ")
    assert token == ApiToken(
        id=token.id,
        name="CI deploys",
        scope="admin",
        created_at=clock.now_ms(),
        last_used_at=None,
        revoked_at=None,
    )
    assert plaintext.startswith("mp_")
    assert len(plaintext) > 40
    clock.advance(10)
    verified = catalog.verify_token(plaintext)
    assert verified is not None
    assert verified.id == token.id
    assert verified.last_used_at == clock.now_ms()
    assert catalog.list_tokens() == [verified]


@pytest.mark.parametrize("scope", ["admin", "editor", "viewer"])
def test_scopes(catalog: Catalog, scope: str) -> None:
    token, plaintext = catalog.create_token("t", scope)
    assert token.scope == scope
    verified = catalog.verify_token(plaintext)
    assert verified is not None
    assert verified.scope == scope


def test_unknown_scope_is_refused(catalog: Catalog) -> None:
    with pytest.raises(InvalidRequest, match="scope must be one of admin, editor, viewer"):
        catalog.create_token("t", "root")
    assert catalog.list_tokens() == []


def test_unknown_tokens_do_not_verify(catalog: Catalog) -> None:
    _, plaintext = catalog.create_token("t")
    assert catalog.verify_token(plaintext + "x") is None
    assert catalog.verify_token(plaintext[3:]) is None
    assert catalog.verify_token("mp_") is None
    assert catalog.verify_token("") is None


def test_last_use_is_recorded_at_most_once_a_minute(catalog: Catalog, clock: ManualClock) -> None:
    token, plaintext = catalog.create_token("t")
    first = clock.now_ms()
    assert _last_used(catalog, plaintext) == first
    clock.advance(59_999)
    assert _last_used(catalog, plaintext) == first
    assert catalog.list_tokens()[0].last_used_at == first
    clock.advance(1)
    assert _last_used(catalog, plaintext) == first + 60_000
    assert catalog.list_tokens()[0].last_used_at == first + 60_000
    assert token.last_used_at is None


def test_revoke(catalog: Catalog, clock: ManualClock) -> None:
    kept, kept_plaintext = catalog.create_token("kept")
    revoked, revoked_plaintext = catalog.create_token("revoked")
    clock.advance(1_000)
    catalog.revoke_token(revoked.id)
    assert catalog.verify_token(revoked_plaintext) is None
    assert catalog.verify_token(kept_plaintext) is not None
    listed = {token.name: token for token in catalog.list_tokens()}
    assert listed["revoked"].revoked_at == clock.now_ms()
    assert listed["kept"].revoked_at is None
    clock.advance(1_000)
    catalog.revoke_token(revoked.id)  # revoking again keeps the first revocation time
    assert catalog.list_tokens()[1].revoked_at == clock.now_ms() - 1_000
    assert kept.id != revoked.id


@pytest.mark.parametrize("token_id", [999, 2**40, 0])
def test_revoking_an_unknown_token_is_not_found(catalog: Catalog, token_id: int) -> None:
    with pytest.raises(NotFound, match=f"there is no token with id {token_id}"):
        catalog.revoke_token(token_id)


def test_active_token_names_are_unique(catalog: Catalog) -> None:
    first, _ = catalog.create_token("deploys")
    with pytest.raises(Conflict, match="an active token named 'Deploys' already exists"):
        catalog.create_token("Deploys")
    catalog.revoke_token(first.id)
    again, plaintext = catalog.create_token("Deploys")
    assert catalog.verify_token(plaintext) == catalog.list_tokens()[1]
    assert again.name == "Deploys"


def test_bad_token_names_are_refused(catalog: Catalog) -> None:
    with pytest.raises(InvalidRequest, match="a token name cannot be empty"):
        catalog.create_token("  ")


def test_only_a_hash_of_the_token_is_stored(catalog: Catalog, catalog_url: str) -> None:
    _, plaintext = catalog.create_token("t")
    engine = create_engine(catalog_url)
    try:
        with engine.connect() as connection:
            stored = connection.execute(text("SELECT * FROM api_tokens")).one()
    finally:
        engine.dispose()
    assert not any(isinstance(value, str) and plaintext[3:] in value for value in stored)


def _last_used(catalog: Catalog, plaintext: str) -> int | None:
    verified = catalog.verify_token(plaintext)
    assert verified is not None
    return verified.last_used_at
