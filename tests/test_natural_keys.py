"""Natural keys and remap decisions (pure)."""

from __future__ import annotations

import copy
import tomllib
from datetime import UTC, datetime

import pytest

from journal.catalog import Catalog, TableEntry
from journal.errors import ConfigError, RestoreRefused
from producers.source_catalog import detect_natural_key as capture_detect_natural_key
from restorer.generic_keys import (
    detect_generic_foreign_keys,
    parse_generic_foreign_keys,
    resolve_generic_foreign_keys,
    unpaired_object_columns,
)
from restorer.graph import TableGraph
from restorer.natural_keys import (
    config_line,
    detect_natural_key,
    infer_natural_key,
    inference_candidates,
    resolve_natural_keys,
)
from restorer.remap import Decision, KeyMap, RowRemapper, decide, refuse_unsafe


def col(name, pg_type="integer", oid=23, not_null=True, default=None, identity=""):
    return {"name": name, "pg_type": pg_type, "type_oid": oid, "not_null": not_null,
            "default": default, "identity": identity, "generated": ""}


def fk(name, cols, ref, ref_cols=("id",)):
    return {"name": name, "columns": list(cols), "ref_table": ref, "ref_columns": list(ref_cols),
            "deferrable": False}


SERIAL = "nextval('x_id_seq'::regclass)"
CATALOG = {"tables": {
    "public.django_content_type": {
        "schema": "public", "name": "django_content_type",
        "columns": [col("id", default=SERIAL), col("app_label", "character varying(100)", 1043),
                    col("model", "character varying(100)", 1043)],
        "primary_key": ["id"], "unique": [{"name": "u", "columns": ["app_label", "model"]}],
        "foreign_keys": []},
    "public.auth_permission": {
        "schema": "public", "name": "auth_permission",
        "columns": [col("id", identity="d"), col("content_type_id"),
                    col("codename", "character varying(100)", 1043)],
        "primary_key": ["id"],
        "unique": [{"name": "u", "columns": ["content_type_id", "codename"]}],
        "foreign_keys": [fk("p_ct", ["content_type_id"], "public.django_content_type")]},
    "public.auth_user": {
        "schema": "public", "name": "auth_user",
        "columns": [col("id", identity="a"), col("username", "character varying(150)", 1043),
                    col("email", "text", 25, not_null=False)],
        "primary_key": ["id"], "unique": [{"name": "u", "columns": ["username"]},
                                          {"name": "e", "columns": ["email"]}],
        "foreign_keys": []},
    "public.django_admin_log": {
        "schema": "public", "name": "django_admin_log",
        "columns": [col("id", identity="d"), col("content_type_id", not_null=False),
                    col("user_id"), col("object_id", "text", 25, not_null=False)],
        "primary_key": ["id"], "unique": [],
        "foreign_keys": [fk("l_ct", ["content_type_id"], "public.django_content_type"),
                         fk("l_user", ["user_id"], "public.auth_user")]},
    "public.django_session": {
        "schema": "public", "name": "django_session",
        "columns": [col("session_key", "character varying(40)", 1043)],
        "primary_key": ["session_key"], "unique": [], "foreign_keys": []},
    "public.audit": {
        "schema": "public", "name": "audit",
        "columns": [col("a"), col("b")], "primary_key": ["a", "b"], "unique": [],
        "foreign_keys": []},
    "public.note": {
        "schema": "public", "name": "note",
        "columns": [col("id"), col("text", "text", 25)], "primary_key": ["id"], "unique": [],
        "foreign_keys": []},
}}


TYPED = Catalog.parse(CATALOG)


def test_detected_key_is_a_not_null_unique_constraint_not_the_primary_key():
    keys = resolve_natural_keys(TYPED)
    assert keys["public.django_content_type"].columns == ("app_label", "model")
    assert keys["public.auth_permission"].columns == ("content_type_id", "codename")
    # email is unique but nullable: not a natural key
    assert keys["public.auth_user"].columns == ("username",)


def test_table_without_unique_columns_has_no_natural_key():
    assert resolve_natural_keys(TYPED)["public.django_admin_log"] is None


def test_text_primary_key_is_its_own_natural_key():
    assert resolve_natural_keys(TYPED)["public.django_session"].columns == ("session_key",)


def test_configuration_overrides_detection():
    keys = resolve_natural_keys(TYPED, {"auth_user": ("email",)})
    assert keys["public.auth_user"].columns == ("email",)
    assert keys["public.auth_user"].origin == "config"


def test_configuration_naming_a_missing_column_is_an_error():
    with pytest.raises(ConfigError, match="auth_user"):
        resolve_natural_keys(TYPED, {"public.auth_user": ("login",)})


def test_text_and_uuid_columns_are_preferred():
    table = TableEntry.parse({
        "schema": "public", "name": "t", "primary_key": ["id"],
        "columns": [col("id"), col("n"), col("uuid", "uuid", 2950)],
        "unique": [{"name": "a", "columns": ["n"]}, {"name": "b", "columns": ["uuid"]}]})
    assert detect_natural_key(table) == ("uuid",)


@pytest.mark.parametrize(("matched", "taken", "policy", "expected"), [
    (True, False, "update", Decision.UPDATE),
    (True, True, "skip", Decision.SKIP),
    (True, False, "fail", Decision.REFUSE),
    (False, False, "fail", Decision.INSERT),
    (False, True, "update", Decision.INSERT_FRESH),
])
def test_decisions(matched, taken, policy, expected):
    assert decide(matched=matched, id_taken=taken, on_conflict=policy) is expected


def test_keymap_stores_only_differences_and_maps_the_rest_to_itself():
    km = KeyMap()
    km.set("t", (1,), (1,))
    km.set("t", (2,), (20,))
    assert km.target_of("t", (1,)) == (1,)
    assert km.target_of("t", (2,)) == (20,)
    assert km.target_of("t", (3,)) == (3,)
    assert km.remapped("t") == 1


def test_foreign_keys_and_generic_foreign_keys_are_remapped():
    graph = TableGraph(TYPED)
    km = KeyMap(tracked={"public.auth_user"})
    km.set("public.django_content_type", (7,), (3,))
    km.set("public.auth_user", (1,), (42,))
    remapper = RowRemapper(graph, km, resolve_generic_foreign_keys(TYPED))
    remapper.observe("public.django_content_type", {"id": 7, "app_label": "auth", "model": "user"})
    row = {"id": 1, "content_type_id": 7, "user_id": 1, "object_id": "1"}
    out = remapper.remap("public.django_admin_log", row)
    assert out == {"id": 1, "content_type_id": 3, "user_id": 42, "object_id": "42"}
    assert not remapper.pending


def test_generic_reference_to_an_object_not_restored_yet_is_pending_not_kept():
    km = KeyMap(tracked={"public.auth_user"})
    remapper = RowRemapper(TableGraph(TYPED), km,
                           resolve_generic_foreign_keys(TYPED))
    remapper.observe("public.django_content_type", {"id": 7, "app_label": "auth", "model": "user"})
    row = {"id": 5, "content_type_id": 7, "user_id": 1, "object_id": "9"}
    remapper.remap("public.django_admin_log", row)
    assert remapper.pending == {("public.django_admin_log", (5,), "object_id"):
                                (("public.auth_user", (9,)), "9")}
    km.set("public.auth_user", (9,), (90,))  # the user arrives later in the load
    assert remapper.remap("public.django_admin_log", row)["object_id"] == "90"
    assert not remapper.pending  # the latest remap wins over the pending one


def test_generic_reference_into_a_table_outside_the_restore_is_counted():
    remapper = RowRemapper(TableGraph(TYPED), KeyMap(),
                           resolve_generic_foreign_keys(TYPED))
    remapper.observe("public.django_content_type", {"id": 8, "app_label": "x", "model": "gone"})
    remapper.remap("public.django_admin_log",
                   {"id": 1, "content_type_id": 8, "user_id": 1, "object_id": "3"})
    assert remapper.outside == {"public.django_admin_log.object_id": 1}


def test_deferred_foreign_key_loads_as_null():
    remapper = RowRemapper(TableGraph(TYPED), KeyMap())
    out = remapper.remap("public.auth_permission", {"id": 1, "content_type_id": 2,
                                                    "codename": "x"}, frozenset({"p_ct"}))
    assert out["content_type_id"] is None


def _activity_catalog() -> dict:
    cat = copy.deepcopy(CATALOG)
    cols = [col("id", identity="d")]
    fks = []
    for prefix in ("actor_", "target_", "action_object_"):
        cols += [col(f"{prefix}content_type_id", not_null=False),
                 col(f"{prefix}object_id", "character varying(255)", 1043, not_null=False)]
        fks.append(fk(f"{prefix}ct", [f"{prefix}content_type_id"],
                      "public.django_content_type"))
    cols.append(col("verb", "character varying(255)", 1043))
    cat["tables"]["public.actstream_action"] = {
        "schema": "public", "name": "actstream_action", "columns": cols,
        "primary_key": ["id"], "unique": [], "foreign_keys": fks}
    return cat


def test_every_generic_foreign_key_of_a_table_is_detected_and_pairs_never_mix():
    pairs, unpaired = detect_generic_foreign_keys(Catalog.parse(_activity_catalog()),
                                                  "public.actstream_action")
    assert [(g.content_type, g.object_id) for g in pairs] == [
        ("actor_content_type_id", "actor_object_id"),
        ("target_content_type_id", "target_object_id"),
        ("action_object_content_type_id", "action_object_object_id")]
    assert unpaired == []
    assert {g.origin for g in pairs} == {"detected"}


def test_configuration_overrides_or_disables_detection():
    cat = Catalog.parse(_activity_catalog())
    only = resolve_generic_foreign_keys(cat, {"actstream_action": [
        {"content_type": "actor_content_type_id", "object_id": "actor_object_id"}]})
    assert [g.object_id for g in only["public.actstream_action"]] == ["actor_object_id"]
    assert "public.actstream_action" not in resolve_generic_foreign_keys(
        cat, {"public.actstream_action": []})
    # the single-table form of earlier versions is still read
    one = parse_generic_foreign_keys({"django_admin_log": {"content_type": "content_type_id",
                                                           "object_id": "object_id"}})
    assert len(one["public.django_admin_log"]) == 1


def test_configuration_naming_a_missing_generic_column_is_an_error():
    with pytest.raises(ConfigError, match="actor_obj"):
        resolve_generic_foreign_keys(Catalog.parse(_activity_catalog()), {"actstream_action": [
            {"content_type": "actor_content_type_id", "object_id": "actor_obj"}]})


def test_unpaired_object_column_is_refused_with_an_entry_that_works_when_pasted():
    cat = copy.deepcopy(CATALOG)
    log = cat["tables"]["public.django_admin_log"]
    # a content-type column that does not follow the convention
    log["columns"][1]["name"] = "kind_id"
    log["foreign_keys"][0]["columns"] = ["kind_id"]
    generic = resolve_generic_foreign_keys(Catalog.parse(cat))
    assert "public.django_admin_log" not in generic
    with pytest.raises(RestoreRefused) as err:
        typed = Catalog.parse(cat)
        refuse_unsafe(TableGraph(typed), resolve_natural_keys(typed), generic, typed,
                      {"public.django_admin_log"})
    assert err.value.exit_code == 3
    text = str(err.value)
    entry = text[text.index("[generic_foreign_keys]"):]
    pasted = tomllib.loads(entry)["generic_foreign_keys"]
    fixed = resolve_generic_foreign_keys(Catalog.parse(cat), pasted)
    assert [(g.content_type, g.object_id) for g in fixed["public.django_admin_log"]] == [
        ("kind_id", "object_id")]
    assert unpaired_object_columns(Catalog.parse(cat), fixed, {"public.django_admin_log"}) == []


def test_natural_key_is_inferred_from_a_uuid_column_whose_values_are_unique():
    table = TableEntry.parse({
        "schema": "public", "name": "t", "primary_key": ["id"], "unique": [],
        "columns": [col("id", default=SERIAL), col("uuid", "uuid", 2950),
                    col("slug", "character varying(50)", 1043),
                    col("created", "timestamp with time zone", 1184)]})
    assert inference_candidates(table) == ["uuid", "slug"]
    rows = [{"id": i, "uuid": f"u{i}", "slug": "same", "created": datetime(2026, 1, 1, tzinfo=UTC)}
            for i in range(3)]
    assert infer_natural_key(table, rows) == "uuid"
    rows[2]["uuid"] = "u0"  # a duplicate: the slug is no better, so nothing
    assert infer_natural_key(table, rows) is None
    rows[2]["uuid"], rows[1]["slug"], rows[2]["slug"] = None, "b", "c"
    assert infer_natural_key(table, rows) == "slug"
    assert infer_natural_key(table, []) is None


def test_suggestions_are_never_placeholders_timestamps_or_floats():
    cat = copy.deepcopy(CATALOG)
    cat["tables"]["public.note"]["columns"] += [
        col("expires_at", "timestamp with time zone", 1184), col("score", "double precision",
                                                                  701)]
    assert config_line("public.note", Catalog.parse(cat)) is None
    cat["tables"]["public.note"]["columns"].append(col("code", "text", 25))
    assert (config_line("public.note", Catalog.parse(cat))
            == '[natural_keys]\n"public.note" = ["code"]')


def test_empty_configured_natural_key_means_none():
    assert resolve_natural_keys(TYPED, {"auth_user": ()})["public.auth_user"] is None


def test_surrogate_table_without_natural_key_is_safe():
    graph = TableGraph(TYPED)
    refuse_unsafe(graph, resolve_natural_keys(TYPED), {}, TYPED, {"public.auth_user"})


def test_django_migrations_are_recognised_by_app_and_name():
    cat = copy.deepcopy(CATALOG)
    cat["tables"]["public.django_migrations"] = {
        "schema": "public", "name": "django_migrations",
        "columns": [col("id", identity="d"), col("app", "character varying(255)", 1043),
                    col("name", "character varying(255)", 1043),
                    col("applied", "timestamp with time zone", 1184)],
        "primary_key": ["id"], "unique": [], "foreign_keys": []}
    key = resolve_natural_keys(Catalog.parse(cat))["public.django_migrations"]
    assert (key.columns, key.origin) == (("app", "name"), "convention")


def test_capture_and_restore_detect_the_same_natural_key():
    # two text columns against one uuid: the DESIGN's rule takes the single uuid; the
    # restore's fallback for catalogs without a detected key used to count text columns
    entry = {
        "schema": "public", "name": "t", "primary_key": ["id"],
        "columns": [col("id"), col("a", "text", 25), col("b", "text", 25),
                    col("u", "uuid", 2950), col("n")],
        "unique": [{"name": "ab", "columns": ["a", "b"]}, {"name": "u", "columns": ["u"]},
                   {"name": "n", "columns": ["n"]}]}
    assert detect_natural_key(TableEntry.parse(entry)) == ("u",)
    assert capture_detect_natural_key(entry) == ["u"]
    entry["unique"] = entry["unique"][:1] + entry["unique"][2:]
    assert detect_natural_key(TableEntry.parse(entry)) == ("a", "b")
    assert capture_detect_natural_key(entry) == ["a", "b"]
