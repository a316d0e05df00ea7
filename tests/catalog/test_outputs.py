"""Outputs: types, account-wide unique names, settings kept as given, identities and hashing,
updates, and deletion refused while audiences are connected."""

from __future__ import annotations

import base64
import json

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect, text

from milepost.catalog import OUTPUT_TYPES, Catalog, OutputRecord
from milepost.catalog import output_rows as orow
from milepost.catalog.database import migration_config, open_engine
from milepost.clock import ManualClock
from milepost.errors import Conflict, InvalidRequest, NotFound

HOOK = {"url": "https://hooks.example.com/milepost", "secret": "s3cret", "batch_size": 100}


def audiences(catalog: Catalog, count: int) -> list[int]:
    """`count` audiences: the milestones m0, m1, … of journey "Churn"."""
    workspace = catalog.create_workspace("Main").id
    catalog.create_input(workspace, "web", "web")
    journey = catalog.create_journey("Churn", None).id
    criteria = {"type": "user_attribute", "attribute": "tier", "op": "equals"}
    return [
        catalog.add_milestone(
            journey, parent_id=None, name=f"m{i}", criteria={**criteria, "value": str(i)}
        ).audience_id
        for i in range(count)
    ]


def test_create_returns_the_output(catalog: Catalog, clock: ManualClock) -> None:
    created = catalog.create_output(" Webhook ", " Email platform ", HOOK)
    assert created == OutputRecord(
        id=created.id,
        type="webhook",
        name="Email platform",
        settings=HOOK,
        accepted_identities=None,
        hashing=None,
        created_at=clock.now_ms(),
        updated_at=clock.now_ms(),
    )
    assert catalog.get_output(created.id) == created
    assert catalog.get_output("EMAIL PLATFORM") == created
    assert catalog.get_output(f" {created.id} ") == created
    assert catalog.list_outputs() == [created]


def test_outputs_are_listed_in_creation_order(catalog: Catalog) -> None:
    made = [catalog.create_output(kind, f"{kind} output", {}) for kind in OUTPUT_TYPES]
    assert catalog.list_outputs() == made
    assert [o.type for o in made] == ["file", "webhook", "firehose", "braze"]


@pytest.mark.parametrize("kind", ["smtp", "", None, 3, "web hook"])
def test_unknown_types_are_refused_listing_the_types(catalog: Catalog, kind: object) -> None:
    with pytest.raises(InvalidRequest, match="output type must be one of file, webhook, firehose, braze"):
        catalog.create_output(kind, "x", {})  # type: ignore[arg-type]
    assert catalog.list_outputs() == []


def test_names_are_unique_in_any_case(catalog: Catalog) -> None:
    catalog.create_output("webhook", "Email", HOOK)
    with pytest.raises(Conflict, match="an output named 'EMAIL' already exists"):
        catalog.create_output("file", "EMAIL", {})
    for bad, message in [("", "cannot be empty"), ("a\tb", "control characters"), ("x" * 101, "at most 100")]:
        with pytest.raises(InvalidRequest, match=message):
            catalog.create_output("file", bad, {})
    assert [o.name for o in catalog.list_outputs()] == ["Email"]


def test_settings_are_kept_as_given(catalog: Catalog, catalog_url: str) -> None:
    settings = {"url": "https://x.example", "nested": {"list": [1, 2.5, None, True]}, "name": "Zoë ✓"}
    created = catalog.create_output("webhook", "Hook", settings)
    settings["url"] = "changed after the call"
    assert created.settings["url"] == "https://x.example"
    with Catalog(catalog_url) as reopened:
        assert reopened.get_output("hook").settings == {
            "url": "https://x.example",
            "nested": {"list": [1, 2.5, None, True]},
            "name": "Zoë ✓",
        }


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ([], r"output settings must be a JSON object \(got list\)"),
        (None, r"output settings must be a JSON object \(got NoneType\)"),
        ({1: "x"}, "output settings must have text keys"),
        ({"x": {1, 2}}, "output settings must hold only JSON values"),
        ({"x": float("nan")}, "output settings must hold only JSON values"),
        ({"x": "y" * 70_000}, "output settings can be at most 65536 characters"),
    ],
)
def test_settings_that_are_not_a_json_object_are_refused(
    catalog: Catalog, settings: object, message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message):
        catalog.create_output("file", "Files", settings)  # type: ignore[arg-type]
    assert catalog.list_outputs() == []


def test_accepted_identities_and_hashing(catalog: Catalog) -> None:
    created = catalog.create_output(
        "braze",
        "Braze",
        {"api_key": "k"},
        accepted_identities=[" Email", "customerid", "email", "ios_advertising_id"],
        hashing="SHA256",
    )
    assert created.accepted_identities == ("email", "customer_id", "ios_advertising_id")
    assert created.hashing == "sha256"
    assert catalog.get_output(created.id) == created
    for hashing in ("sha1", "md5"):
        assert catalog.create_output("file", f"f-{hashing}", {}, hashing=hashing).hashing == hashing


@pytest.mark.parametrize(
    ("identities", "message"),
    [
        (["email", "fax"], "accepted_identities: 'fax' is not an identity type"),
        ([None], "accepted_identities: None is not an identity type"),
        ([], "accepted_identities cannot be empty"),
        ("email", "accepted_identities must be a list of identity types"),
    ],
)
def test_bad_accepted_identities_are_refused(catalog: Catalog, identities: object, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        catalog.create_output("file", "Files", {}, accepted_identities=identities)  # type: ignore[arg-type]
    assert catalog.list_outputs() == []


@pytest.mark.parametrize("hashing", ["sha512", "", 256])
def test_unknown_hashing_is_refused(catalog: Catalog, hashing: object) -> None:
    with pytest.raises(InvalidRequest, match="hashing must be one of sha256, sha1, md5, or null"):
        catalog.create_output("file", "Files", {}, hashing=hashing)  # type: ignore[arg-type]
    assert catalog.list_outputs() == []


def test_update_renames_and_replaces_settings(catalog: Catalog, clock: ManualClock) -> None:
    created = catalog.create_output("webhook", "Hook", HOOK, hashing="md5")
    catalog.create_output("file", "Files", {"directory": "/tmp/out"})
    clock.advance(10)
    renamed = catalog.update_output("hook", name="Hook v2")
    assert (renamed.name, renamed.settings, renamed.updated_at) == ("Hook v2", HOOK, clock.now_ms())
    assert renamed.created_at == created.created_at
    assert catalog.update_output(created.id, name="HOOK V2").name == "HOOK V2"
    clock.advance(10)
    replaced = catalog.update_output(created.id, settings={"url": "https://new.example", "secret": "x"})
    assert replaced.settings == {"url": "https://new.example", "secret": "x"}
    assert (replaced.name, replaced.hashing, replaced.updated_at) == ("HOOK V2", "md5", clock.now_ms())
    clock.advance(10)
    assert catalog.update_output(created.id) == replaced
    assert catalog.get_output(created.id) == replaced


def test_update_refusals_change_nothing(catalog: Catalog) -> None:
    created = catalog.create_output("webhook", "Hook", HOOK)
    catalog.create_output("file", "Files", {})
    with pytest.raises(Conflict, match="an output named 'files' already exists"):
        catalog.update_output(created.id, name="files", settings={})
    with pytest.raises(InvalidRequest, match="output settings must be a JSON object"):
        catalog.update_output(created.id, name="Other", settings="x")  # type: ignore[arg-type]
    with pytest.raises(NotFound, match="there is no output with id 999"):
        catalog.update_output(999, name="x")
    assert catalog.get_output(created.id) == created


def test_unknown_outputs_are_not_found(catalog: Catalog) -> None:
    with pytest.raises(NotFound, match="there is no output with id 7"):
        catalog.get_output(7)
    with pytest.raises(NotFound, match="there is no output named 'Nope'"):
        catalog.get_output("Nope")
    with pytest.raises(InvalidRequest, match="an output is referred to by its id or name"):
        catalog.get_output(True)
    with pytest.raises(NotFound):
        catalog.delete_output("Nope")


def test_delete_output(catalog: Catalog) -> None:
    created = catalog.create_output("file", "Files", {})
    catalog.delete_output("files")
    assert catalog.list_outputs() == []
    with pytest.raises(NotFound):
        catalog.get_output(created.id)
    # The name is free again.
    assert catalog.create_output("file", "Files", {}).id != created.id


def test_an_output_with_connections_cannot_be_deleted(catalog: Catalog) -> None:
    first, second, third = audiences(catalog, 3)
    output = catalog.create_output("webhook", "Hook", HOOK)
    connection = catalog.create_connection(second, output.id)
    catalog.create_connection(first, output.id, status="inactive")
    catalog.create_connection(third, catalog.create_output("file", "Files", {}).id)
    with pytest.raises(
        Conflict,
        match=f"output 'Hook' still has 2 connections, to audiences {first} \\('Churn – m0'\\), "
        f"{second} \\('Churn – m1'\\); delete those connections first",
    ):
        catalog.delete_output(output.id)
    catalog.set_external_name(catalog.milestone_by_audience(first).id, "Lapsed buyers")
    catalog.delete_connection(connection.id)
    with pytest.raises(
        Conflict,
        match=f"output 'Hook' still has 1 connection, to audience {first} \\('Lapsed buyers'\\); "
        "delete that connection first",
    ):
        catalog.delete_output("hook")
    assert catalog.get_output(output.id) == output
    catalog.delete_connection(catalog.connections(first)[0].id)
    catalog.delete_output("hook")
    assert [o.name for o in catalog.list_outputs()] == ["Files"]


def test_settings_pass_through_one_encoding_seam(
    catalog: Catalog, catalog_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Output and connection settings are stored only through _encode_settings / _decode_settings,
    where encryption at rest will go."""

    def encode(settings: dict[str, object]) -> str:
        return "b64:" + base64.b64encode(json.dumps(settings).encode()).decode()

    def decode(stored: str) -> dict[str, object]:
        assert stored.startswith("b64:")
        loaded: dict[str, object] = json.loads(base64.b64decode(stored[4:]))
        return loaded

    monkeypatch.setattr(orow, "_encode_settings", encode)
    monkeypatch.setattr(orow, "_decode_settings", decode)
    [audience] = audiences(catalog, 1)
    output = catalog.create_output("webhook", "Hook", HOOK)
    connection = catalog.create_connection(audience, output.id, settings={"tag": "vip"})
    catalog.update_output(output.id, settings={"url": "https://b.example", "secret": "t"})
    catalog.update_connection(connection.id, settings={"tag": "gold"})
    engine = create_engine(catalog_url)
    try:
        with engine.connect() as db:
            stored = [
                db.execute(text(f"SELECT settings FROM {table}")).scalar_one()
                for table in ("outputs", "connections")
            ]
    finally:
        engine.dispose()
    assert all(value.startswith("b64:") for value in stored)
    assert "secret" not in stored[0]
    assert catalog.get_output(output.id).settings == {"url": "https://b.example", "secret": "t"}
    assert catalog.get_connection(connection.id).settings == {"tag": "gold"}


def test_upgrading_a_0002_catalog_adds_outputs_and_keeps_data(catalog_url: str) -> None:
    engine = open_engine(catalog_url)
    try:
        config = migration_config()
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "0002")
        with engine.begin() as connection:
            connection.execute(
                text("INSERT INTO workspaces (id, name, name_key, created_at) VALUES (1, 'Main', 'main', 5)")
            )
            assert "outputs" not in inspect(connection).get_table_names()
    finally:
        engine.dispose()
    with Catalog(catalog_url) as catalog:
        assert [w.name for w in catalog.list_workspaces()] == ["Main"]
        assert catalog.create_output("file", "Files", {}).id == 1


def test_downgrading_to_0002_removes_only_outputs_and_connections(catalog_url: str) -> None:
    with Catalog(catalog_url) as catalog:
        [audience] = audiences(catalog, 1)
        catalog.create_connection(audience, catalog.create_output("file", "Files", {}).id)
    engine = open_engine(catalog_url)
    try:
        config = migration_config()
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "0002")
        with engine.connect() as connection:
            tables = set(inspect(connection).get_table_names())
    finally:
        engine.dispose()
    assert not {"outputs", "connections"} & tables
    assert {"audiences", "milestones", "journeys"} <= tables
    with Catalog(catalog_url) as catalog:
        assert catalog.milestone_by_audience(audience).name == "m0"
        assert catalog.connections() == []
