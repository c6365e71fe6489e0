"""Every column type, through the snapshot and the stream, restored into an empty database.

The oracle is PostgreSQL itself: each column's text form (``col::text``) read from the
source after the workload, compared with the restored copy's, value for value; the journal
is not asked. Then ``journal verify`` must say OK on the copy, and find a tampered value.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg import sql

from journal.compactor import Compactor, Policy
from journal.packages.store import open_store
from journal.transport import open_reader
from restorer.restore import RestoreOptions, restore
from restorer.verify import verify
from tests.support.capture import Background, capture_config, database_of
from tests.support.databases import scratch_database

pytestmark = pytest.mark.integration

SCHEMA = """
CREATE EXTENSION IF NOT EXISTS citext;
CREATE SCHEMA "Typen";
CREATE TYPE "Typen".mood AS ENUM ('sad', 'ok', 'gut');
CREATE DOMAIN "Typen".positive AS integer NOT NULL CHECK (VALUE > 0);
CREATE DOMAIN "Typen".short_text AS text COLLATE "C" DEFAULT 'x' CHECK (length(VALUE) < 20);
CREATE TYPE "Typen".point3 AS (x double precision, y double precision,
                               label "Typen".short_text);
CREATE TYPE "Typen".floatrange AS RANGE (subtype = float8, subtype_diff = float8mi);
CREATE DOMAIN "Typen".day_list AS date[];
CREATE TABLE public.matrix (
    id integer PRIMARY KEY,
    d date, ts timestamp, tz timestamptz, t time, tt timetz, iv interval,
    f4 real, f8 double precision, n numeric, n2 numeric(10,2), b boolean, by bytea,
    j jsonb, u uuid,
    ia integer[], ta text[], da date[], tsa timestamp[], tza timestamptz[], ti time[],
    fa real[], f8a double precision[], na numeric(6,2)[], nua numeric[],
    mood "Typen".mood, moods "Typen".mood[], pos "Typen".positive, st "Typen".short_text,
    p3 "Typen".point3, p3a "Typen".point3[], dl "Typen".day_list,
    ir int4range, tr tstzrange, nmr nummultirange, fr "Typen".floatrange,
    ci citext, cia citext[],
    g integer GENERATED ALWAYS AS (id * 2) STORED
);
-- a key of values the typed branch cannot always hold: ordered and matched all the same
CREATE TABLE public.by_day (day date, at timestamptz, note text, PRIMARY KEY (day, at));
INSERT INTO public.by_day VALUES ('infinity', '-infinity', 'a'), ('2020-01-01', 'infinity', 'b'),
    ('0044-03-15 BC', '2020-01-01 00:00:00+00', 'c'), ('2020-01-01', '2020-01-01 00:00:00+00', 'd');
"""

# id -> column -> SQL literal (cast by the column's type); the other columns are NULL
ROWS: dict[int, dict[str, str]] = {
    1: {"d": "infinity", "ts": "infinity", "tz": "-infinity", "t": "24:00:00",
        "f4": "NaN", "f8": "NaN", "n": "NaN", "n2": "NaN", "ia": "[0:2]={7,8,9}",
        "ta": "{{a,b},{c,d}}", "da": "{infinity,2020-01-01}", "tza": "{-infinity,infinity}",
        "tsa": "{infinity}", "ti": "{24:00:00,12:00:00}", "fa": "{NaN,-0,1e-45}",
        "f8a": "{NaN,-0,Infinity,-Infinity}", "na": "{1.5,NaN}", "nua": "{NaN,1e-30}",
        "pos": "1", "dl": "{-infinity}"},
    2: {"d": "0044-03-15 BC", "ts": "10000-01-01 00:00:00", "tz": "0001-01-01 00:00:00+00 BC",
        "t": "00:00:00", "f4": "1e-45", "f8": "-0", "n": "Infinity", "n2": "12.50",
        "ia": "{{1,2},{3,4}}", "ta": "[2:3]={x,y}", "da": "{0044-03-15 BC}",
        "fa": "{-0}", "f8a": "{}", "na": "[0:1]={1.5,2.5}", "pos": "2",
        "tsa": "{{2020-01-01 00:00:00},{2021-01-01 00:00:00}}"},
    3: {"d": "2024-02-29", "ts": "2024-01-01 10:00:00.123456",
        "tz": "2024-01-01 10:00:00.5+02", "t": "23:59:59.999999", "tt": "24:00:00+02",
        "iv": "1 year 2 mons -3 days 04:05:06.7", "f4": "3.4028235e+38", "f8": "-Infinity",
        "n": "-Infinity", "n2": "-0.01", "b": "true", "by": "\\x00ff",
        "j": '{"b": [1, 2.50], "a": null}', "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "ia": "{1,NULL,3}", "ta": '{"a b",NULL,"{","\\\\"}', "da": "{2020-01-01,NULL}",
        "tza": "{2024-01-01 10:00:00+00}", "fa": "{1.5,-Infinity}", "f8a": "{0.1}",
        "na": "{1.25}", "nua": "{}", "mood": "gut", "moods": "{sad,ok}", "pos": "5",
        "st": "hé", "p3": '(1,2,"lab el")', "p3a": '{"(1,2,a)","(NaN,-0,)"}',
        "dl": "{2020-01-01}", "ir": "[1,5)", "tr": "[2020-01-01 00:00:00+00,infinity)",
        "nmr": "{[1,2],[5,6)}", "fr": "[1.5,2.5)", "ci": "MiXeD", "cia": "{a,B}"},
    4: {"tz": "12000-06-01 00:00:00+00", "d": "20000-01-01", "ia": "[5:5]={1}",
        "ta": "{}", "na": "{}", "tt": "00:00:00-15:59", "pos": "4",
        "f8a": "{1e308,-1e-308,4.9e-324}"},
}
# (column, id, value): one small change each, which verify must find
TAMPERED = [("ta", 1, "{{a,b},{c,e}}"), ("f4", 2, "3e-45"), ("f8", 2, "0"),
            ("d", 1, "-infinity"), ("ia", 1, "[1:3]={7,8,9}"), ("fa", 1, "{NaN,0,1e-45}"),
            ("st", 3, "hè"), ("ci", 3, "mixed")]
STREAM_IDS = (3, 4)  # inserted while capture streams; 1 and 2 are in the snapshot


def _insert(conn: psycopg.Connection[Any], row_id: int, values: dict[str, str]) -> None:
    cols = ["id", *values]
    conn.execute(sql.SQL("INSERT INTO public.matrix ({}) VALUES ({})").format(
        sql.SQL(", ").join(sql.Identifier(c) for c in cols),
        sql.SQL(", ").join(sql.Placeholder() * len(cols))),
        [str(row_id), *values.values()], prepare=False)


def _columns(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = 'public.matrix'::regclass "
            "AND attnum > 0 AND NOT attisdropped ORDER BY attnum").fetchall()]


def text_of_every_value(url: str) -> list[tuple[Any, ...]]:
    """Each row's columns as PostgreSQL prints them (the oracle), in id order."""
    with psycopg.connect(url) as conn:
        conn.execute("SET TimeZone = 'UTC'; SET DateStyle = 'ISO, MDY'; "
                     "SET extra_float_digits = 3")
        cols = _columns(url)
        query = sql.SQL("SELECT {} FROM public.matrix m ORDER BY m.id").format(
            sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c)) for c in cols))
        return [tuple(zip(cols, r, strict=True)) for r in conn.execute(query).fetchall()]


def _by_day(url: str) -> list[tuple[str, ...]]:
    with psycopg.connect(url) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        return conn.execute("SELECT day::text, at::text, note FROM public.by_day "
                            "ORDER BY note").fetchall()


def _workload(url: str) -> None:
    """Inserts, updates (whole rows and single columns) and a delete, through the stream."""
    with psycopg.connect(url, autocommit=True) as conn:
        for row_id in STREAM_IDS:
            _insert(conn, row_id, ROWS[row_id])
        # every snapshot row's values moved to a new row, then changed in place
        conn.execute("INSERT INTO public.matrix SELECT id + 10, d, ts, tz, t, tt, iv, f4, f8, "
                     "n, n2, b, by, j, u, ia, ta, da, tsa, tza, ti, fa, f8a, na, nua, mood, "
                     "moods, pos, st, p3, p3a, dl, ir, tr, nmr, fr, ci, cia "
                     "FROM public.matrix WHERE id IN (1, 2)")
        conn.execute("UPDATE public.matrix SET d = '-infinity', ia = '[-3:-2]={5,6}', "
                     "f4 = '-0', tza = '{{infinity},{-infinity}}', n2 = '0.10' WHERE id = 11")
        conn.execute("UPDATE public.matrix SET (d, ts, tz, t, ia, ta, da, fa, n, n2) = "
                     "(SELECT d, ts, tz, t, ia, ta, da, fa, n, n2 FROM public.matrix "
                     "WHERE id = 1) WHERE id = 3")
        conn.execute("UPDATE public.matrix SET ts = '294276-12-31 23:59:59' WHERE id = 2")
        conn.execute("UPDATE public.matrix SET tz = 'infinity' WHERE id = 12")
        conn.execute("DELETE FROM public.matrix WHERE id = 4")
        _insert(conn, 5, ROWS[1])
        conn.execute("DELETE FROM public.matrix WHERE id = 5")
        conn.execute("INSERT INTO public.by_day VALUES ('-infinity', 'infinity', 'e'), "
                     "('20000-01-01', '2020-01-01 00:00:00+00', 'f')")
        conn.execute("UPDATE public.by_day SET note = 'a2' WHERE day = 'infinity'")
        conn.execute("UPDATE public.by_day SET day = '1999-12-31' WHERE note = 'd'")
        conn.execute("DELETE FROM public.by_day WHERE note = 'c'")


@pytest.mark.parametrize("server", ["pg18", "pg15"])
def test_every_type_through_snapshot_and_stream_restores_value_for_value(
        server, pg18_server, pg15_server, tmp_path):
    server_url = pg18_server if server == "pg18" else pg15_server
    with scratch_database(server_url, "types") as source, \
            scratch_database(server_url, "typesdst") as target:
        with psycopg.connect(source, autocommit=True) as conn:
            conn.execute(SCHEMA)
            for row_id in (1, 2):
                _insert(conn, row_id, ROWS[row_id])
        cfg = capture_config(source, tmp_path, packages_url=f"file://{tmp_path}/packages")
        capture = Background(cfg, idle=2.0)
        capture.wait_streaming()
        _workload(source)
        capture.join()
        reader = open_reader(cfg.journal_location(), database_of(source))
        store = open_store(cfg.packages_url)
        Compactor(reader, store, Policy.from_config(cfg)).run(once=True)
        reader.close()
        assert [m.kind for m in store.list()][:1] == ["full"]
        assert any(m.kind == "segment" for m in store.list())

        restore(RestoreOptions(target_url=target, store=store))

        expected = text_of_every_value(source)
        assert [r[0][1] for r in expected] == ["1", "2", "3", "11", "12"]
        actual = text_of_every_value(target)
        for want, have in zip(expected, actual, strict=True):
            assert have == want
        assert len(actual) == len(expected)

        assert _by_day(target) == _by_day(source)
        report = verify(target, store=store)
        assert report.ok, report.summary()

        for column, row_id, tampered in TAMPERED:
            with psycopg.connect(target, autocommit=True) as conn:
                update = sql.SQL("UPDATE public.matrix SET {} = %s WHERE id = %s").format(
                    sql.Identifier(column))
                original = conn.execute(sql.SQL("SELECT {}::text FROM public.matrix "
                                                "WHERE id = %s").format(sql.Identifier(column)),
                                        (row_id,)).fetchone()[0]
                conn.execute(update, (tampered, row_id), prepare=False)
                report = verify(target, store=store)
                conn.execute(update, (original, row_id), prepare=False)
            diff = report.tables["public.matrix"]
            assert (report.ok, diff.missing, diff.extra) == (False, 1, 1), (column, tampered)
        assert verify(target, store=store).ok


def test_a_missing_extension_is_refused_naming_it(pg18_server):
    from journal.catalog import Catalog
    from journal.errors import RestoreError
    from restorer.schema import create_types

    catalog = {"tables": {}, "types": [], "extensions": [
        {"name": "no_such_extension_here", "schema": "public", "version": "1.0"}]}
    with scratch_database(pg18_server, "ext") as url, psycopg.connect(url) as conn:
        with pytest.raises(RestoreError, match="no_such_extension_here"):
            create_types(conn, Catalog.parse(catalog))
