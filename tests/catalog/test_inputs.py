"""Inputs: platforms, account-wide unique names, keys and hashed secrets, rotation, disabling."""

from __future__ import annotations

import dataclasses
import re

import pytest
from sqlalchemy import create_engine, text

from milepost.catalog import Catalog, Input
from milepost.clock import ManualClock
from milepost.errors import Conflict, InvalidRequest, NotFound

KEY = re.compile(r"[0-9a-f]{32}")


@pytest.fixture
def europe(catalog: Catalog) -> int:
    return catalog.create_workspace("Europe").id


def test_create_returns_the_input_and_its_secret(catalog: Catalog, clock: ManualClock, europe: int) -> None:
    created, secret = catalog.create_input("europe", " Web shop ", "web")
    assert created == Input(
        id=created.id,
        workspace_id=europe,
        workspace_name="Europe",
        name="Web shop",
        platform="web",
        kind="platform",
        key=created.key,
        enabled=True,
        created_at=clock.now_ms(),
        secret_rotated_at=clock.now_ms(),
    )
    assert KEY.fullmatch(created.key)
    assert len(secret) >= 40
    assert catalog.get_input(created.id) == created
    assert catalog.get_input("WEB SHOP") == created
    assert catalog.get_input(str(created.id)) == created


@pytest.mark.parametrize("platform", ["ios", "android", "web", "server", "feed"])
def test_every_platform_is_accepted_and_feeds_are_their_own_kind(
    catalog: Catalog, europe: int, platform: str
) -> None:
    created, _ = catalog.create_input(europe, f"{platform} input", platform)
    assert created.platform == platform
    assert created.kind == ("feed" if platform == "feed" else "platform")


@pytest.mark.parametrize("platform", ["tv", "", "IOS-app", None])
def test_unknown_platforms_are_refused_with_the_allowed_list(
    catalog: Catalog, europe: int, platform: str
) -> None:
    with pytest.raises(InvalidRequest, match="platform must be one of ios, android, web, server, feed"):
        catalog.create_input(europe, "x", platform)
    assert catalog.list_inputs() == []


def test_keys_and_secrets_are_distinct(catalog: Catalog, europe: int) -> None:
    made = [catalog.create_input(europe, f"input {n}", "server") for n in range(5)]
    assert len({i.key for i, _ in made}) == 5
    assert len({s for _, s in made}) == 5


def test_names_are_unique_in_the_account(catalog: Catalog, europe: int) -> None:
    asia = catalog.create_workspace("Asia")
    catalog.create_input(europe, "web", "web")
    with pytest.raises(Conflict, match="an input named 'Web' already exists"):
        catalog.create_input(asia.id, "Web", "web")
    with pytest.raises(Conflict):
        catalog.create_input(europe, " WEB ", "ios")
    assert [i.name for i in catalog.list_inputs()] == ["web"]


def test_list_filters_by_workspace(catalog: Catalog, europe: int) -> None:
    asia = catalog.create_workspace("Asia")
    web, _ = catalog.create_input(europe, "web", "web")
    ios, _ = catalog.create_input(asia.id, "ios", "ios")
    feed, _ = catalog.create_input(europe, "feed", "feed")
    assert catalog.list_inputs() == [web, ios, feed]
    assert catalog.list_inputs("Europe") == [web, feed]
    assert catalog.list_inputs(asia.id) == [ios]
    assert catalog.list_inputs("Asia")[0].workspace_name == "Asia"


def test_lookup_by_key(catalog: Catalog, europe: int) -> None:
    created, _ = catalog.create_input(europe, "web", "web")
    assert catalog.input_by_key(created.key) == created
    assert catalog.input_by_key("0" * 32) is None
    assert catalog.input_by_key(created.key.upper()) is None
    assert catalog.input_by_key(created.key[:-1]) is None
    assert catalog.input_by_key("") is None


def test_secret_check(catalog: Catalog, europe: int) -> None:
    web, web_secret = catalog.create_input(europe, "web", "web")
    ios, ios_secret = catalog.create_input(europe, "ios", "ios")
    assert catalog.check_input_secret(web, web_secret)
    assert catalog.check_input_secret(ios, ios_secret)
    assert not catalog.check_input_secret(web, ios_secret)
    assert not catalog.check_input_secret(web, web_secret + "x")
    assert not catalog.check_input_secret(web, "")
    catalog.delete_input(web.id)
    assert not catalog.check_input_secret(web, web_secret)


def test_only_a_hash_of_the_secret_is_stored(catalog: Catalog, catalog_url: str, europe: int) -> None:
    created, secret = catalog.create_input(europe, "web", "web")
    engine = create_engine(catalog_url)
    try:
        with engine.connect() as connection:
            stored = connection.execute(text("SELECT * FROM inputs")).one()
    finally:
        engine.dispose()
    assert created.key in stored
    assert not any(isinstance(value, str) and secret in value for value in stored)


def test_rotation_replaces_the_secret_and_keeps_the_key(
    catalog: Catalog, clock: ManualClock, europe: int
) -> None:
    created, old = catalog.create_input(europe, "web", "web")
    clock.advance(60_000)
    rotated, new = catalog.rotate_input_secret("web")
    assert new != old
    assert rotated.key == created.key
    assert rotated.secret_rotated_at == created.created_at + 60_000
    assert rotated.created_at == created.created_at
    assert catalog.check_input_secret(rotated, new)
    assert not catalog.check_input_secret(rotated, old)
    assert catalog.input_by_key(created.key) == rotated


def test_disable_and_enable(catalog: Catalog, europe: int) -> None:
    created, secret = catalog.create_input(europe, "web", "web")
    disabled = catalog.set_input_enabled("web", False)
    assert disabled == dataclasses.replace(created, enabled=False)
    assert catalog.input_by_key(created.key) == disabled
    assert catalog.check_input_secret(disabled, secret)  # the caller decides what disabled means
    assert catalog.set_input_enabled(created.id, True).enabled
    with pytest.raises(InvalidRequest, match="enabled must be true or false"):
        catalog.set_input_enabled(created.id, "no")  # type: ignore[arg-type]


def test_rename(catalog: Catalog, europe: int) -> None:
    web, _ = catalog.create_input(europe, "web", "web")
    catalog.create_input(europe, "ios", "ios")
    renamed = catalog.rename_input("web", "Website")
    assert renamed == dataclasses.replace(web, name="Website")
    assert catalog.get_input("website") == renamed
    assert catalog.rename_input(web.id, "WEBSITE").name == "WEBSITE"
    with pytest.raises(Conflict, match="an input named 'IOS' already exists"):
        catalog.rename_input(web.id, "IOS")
    with pytest.raises(InvalidRequest, match="at most 100 characters"):
        catalog.rename_input(web.id, "w" * 101)
    assert catalog.get_input(web.id).name == "WEBSITE"


def test_delete(catalog: Catalog, europe: int) -> None:
    web, _ = catalog.create_input(europe, "web", "web")
    ios, _ = catalog.create_input(europe, "ios", "ios")
    catalog.delete_input("web")
    assert catalog.list_inputs() == [ios]
    assert catalog.input_by_key(web.key) is None
    with pytest.raises(NotFound):
        catalog.get_input(web.id)
    assert catalog.create_input(europe, "web", "web")[0].name == "web"


@pytest.mark.parametrize("ref", ["nothing", 404, "404", 2**40])
def test_unknown_inputs_are_not_found(catalog: Catalog, europe: int, ref: int | str) -> None:
    catalog.create_input(europe, "web", "web")
    with pytest.raises(NotFound, match="there is no input"):
        catalog.get_input(ref)
    for call in (
        lambda: catalog.set_input_enabled(ref, False),
        lambda: catalog.rename_input(ref, "x"),
        lambda: catalog.rotate_input_secret(ref),
        lambda: catalog.delete_input(ref),
    ):
        with pytest.raises(NotFound):
            call()
