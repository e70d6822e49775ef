#!/usr/bin/env python3
"""psycopg 3 against a Concord cluster, as an application would use it.

    python3 test_psycopg.py URL [URL ...]

Each URL is one node's PostgreSQL address (crates/cli/tests/psycopg.rs
starts a 3-node cluster and passes its nodes' URLs). Every check prints
what it proved; the program exits non-zero if any check failed. All tables
are named psy_* and dropped first, so the program can also be pointed at a
real PostgreSQL for comparison:

    python3 test_psycopg.py 'postgresql://root@/defaultdb?host=/tmp&port=5499'

Checks: connection info and reported parameters; parameterised statements
(psycopg always uses the extended protocol) with text and binary
parameters; binary and text results of every type Concord supports,
round-tripped exactly; server-side prepared statements reused many times;
executemany (pipelined); COPY FROM STDIN / TO STDOUT in text and CSV;
transactions (commit, rollback, the failed state until ROLLBACK); errors and
their SQLSTATEs; and concurrent read-modify-write transfers on every node
with a retry loop on SerializationFailure (40001).
"""

import csv
import datetime as dt
import uuid
from decimal import Decimal
import io
import logging
import os
import random
import re
import struct
import sys
import tempfile
import threading
import time
import traceback

import psycopg
from psycopg import errors, pq

URLS = sys.argv[1:] or [u for u in os.environ.get("CONCORD_PG_URLS", "").split(",") if u]
if not URLS:
    sys.exit(__doc__)

UTC = dt.timezone.utc
IST = dt.timezone(dt.timedelta(hours=5, minutes=30))

CHECKS = []


def check(fn):
    CHECKS.append(fn)
    return fn


def ok(what):
    """Prints one thing a check proved."""
    print(f"    ok: {what}", flush=True)


def connect(url, **kwargs):
    """A connection, retried for a while (a node may still be starting)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return psycopg.connect(url, connect_timeout=5, **kwargs)
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def node(i):
    """The URL of node i (round robin when fewer URLs were given)."""
    return URLS[i % len(URLS)]


def recreate(conn, name, columns):
    """Drops and creates a table (autocommit connection)."""
    conn.execute(f"DROP TABLE IF EXISTS {name}")
    conn.execute(f"CREATE TABLE {name} ({columns})")


class expect_error:
    """`with expect_error(errors.X, "SQLSTATE"):` — the block must raise X
    with that SQLSTATE; the error is kept in `.error`."""

    def __init__(self, cls, sqlstate):
        self.cls, self.sqlstate, self.error = cls, sqlstate, None

    def __enter__(self):
        return self

    def __exit__(self, typ, value, tb):
        if value is None:
            raise AssertionError(f"expected {self.cls.__name__} ({self.sqlstate}), nothing raised")
        if not isinstance(value, self.cls):
            raise AssertionError(
                f"expected {self.cls.__name__} ({self.sqlstate}), got "
                f"{type(value).__name__} ({getattr(value, 'sqlstate', None)}): {value}"
            )
        assert value.sqlstate == self.sqlstate, (value.sqlstate, self.sqlstate)
        assert value.diag.sqlstate == self.sqlstate, value.diag.sqlstate
        assert value.diag.severity == "ERROR", value.diag.severity
        assert value.diag.message_primary, "an error has a message"
        self.error = value
        return True


def known_gap(what):
    """Prints a difference from PostgreSQL that Concord has today; the check
    accepts it and goes on (see the comment where it is called)."""
    print(f"    KNOWN GAP (Concord): {what}", flush=True)


class wire_trace:
    """Records the protocol messages libpq exchanges on `conn` (PQtrace), so
    a check can count the Parse and Bind messages psycopg really sent."""

    def __init__(self, conn):
        self.conn = conn

    def __enter__(self):
        self.file = tempfile.TemporaryFile(mode="w+")
        self.conn.pgconn.trace(self.file.fileno())
        self.conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
        return self

    def __exit__(self, *exc):
        self.conn.pgconn.untrace()  # flushes libpq's stream
        self.file.seek(0)
        self.lines = self.file.read().splitlines()
        self.file.close()
        return False

    def sent(self, message):
        """Frontend messages of one type, e.g. "Parse"."""
        return [l for l in self.lines if re.match(rf"^F\t\d+\t{message}\b", l)]


# ---------------------------------------------------------------------------


@check
def connection_info():
    """conn.info: server version, status, reported parameters"""
    with connect(node(0), autocommit=True) as conn:
        info = conn.info
        assert info.status == pq.ConnStatus.OK
        assert info.transaction_status == pq.TransactionStatus.IDLE
        assert info.server_version >= 100000, info.server_version
        ok(f"server_version {info.server_version} ({info.parameter_status('server_version')})")
        assert info.parameter_status("client_encoding") == "UTF8"
        assert info.encoding == "utf-8", info.encoding
        ok("client_encoding UTF8, Python codec utf-8")
        datestyle = info.parameter_status("DateStyle")
        assert datestyle.startswith("ISO"), datestyle
        ok(f"DateStyle {datestyle!r} (psycopg parses ISO dates in text results)")
        tz = info.parameter_status("TimeZone")
        assert tz, "TimeZone is reported"
        shown = conn.execute("SHOW TimeZone").fetchone()[0]
        assert shown == tz, (shown, tz)
        assert info.timezone.utcoffset(dt.datetime(2024, 1, 1)) is not None
        ok(f"TimeZone {tz!r}, the same as SHOW TimeZone; conn.info.timezone = {info.timezone}")
        assert info.parameter_status("integer_datetimes") == "on"
        assert info.parameter_status("standard_conforming_strings") == "on"
        ok("integer_datetimes and standard_conforming_strings on")
        conn.execute("SET application_name = 'psycopg-test'")
        assert info.parameter_status("application_name") == "psycopg-test"
        ok("SET application_name is reported back in ParameterStatus")
        assert conn.execute("SELECT %s::int4 + 1", (41,)).fetchone() == (42,)
        ok("a first parameterised query")


# Every type Concord supports today.
TYPES_COLUMNS = """
    id INT PRIMARY KEY, b BOOL, i2 SMALLINT, i4 INT, i8 BIGINT,
    f4 REAL, f8 DOUBLE PRECISION, t TEXT, vc VARCHAR(10), c CHAR(4),
    d DATE, ts TIMESTAMP, tstz TIMESTAMPTZ, iv INTERVAL,
    n NUMERIC(12,4), nu NUMERIC, by BYTEA, u UUID
"""
TYPE_OIDS = {
    "id": 23, "b": 16, "i2": 21, "i4": 23, "i8": 20, "f4": 700, "f8": 701,
    "t": 25, "vc": 1043, "c": 1042, "d": 1082, "ts": 1114, "tstz": 1184, "iv": 1186,
    "n": 1700, "nu": 1700, "by": 17, "u": 2950,
}  # fmt: skip
NCOLS = len(TYPE_OIDS)
TYPE_ROWS = [
    (1, True, -32768, 2147483647, -9223372036854775808, 3.140625, 0.1,
     "plain", "vc", "ab",
     dt.date(2024, 2, 29), dt.datetime(2024, 3, 1, 10, 20, 30, 123456),
     dt.datetime(2024, 3, 1, 10, 20, 30, 654321, tzinfo=UTC),
     dt.timedelta(days=3, hours=1, minutes=2, seconds=3, microseconds=456),
     Decimal("12345678.1234"), Decimal("3.14159265358979323846"), b"\x00\x01\xff",
     uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")),
    (2, False, 32767, -2147483648, 9223372036854775807, -0.5, -1e-300,
     "héllo ☃ tab\t nl\n quote' dq\" back\\ 𝄞", "ünïcödé", "xyzw",
     dt.date(1999, 12, 31), dt.datetime(1970, 1, 1),
     dt.datetime(2000, 1, 1, 5, 30, tzinfo=IST),
     dt.timedelta(days=-1, seconds=5),
     Decimal("-0.0001"), Decimal("-123456789012345678"), b"", uuid.UUID(int=1)),
    (3, True, 0, 0, 0, 0.0, 1.7976931348623157e308,
     "", "", "",
     dt.date(1, 1, 1), dt.datetime(9999, 12, 31, 23, 59, 59, 999999),
     dt.datetime(1901, 12, 13, 20, 45, 52, 1, tzinfo=UTC),
     dt.timedelta(0),
     Decimal("0"), Decimal("0.000"), bytes(range(256)), uuid.UUID(int=(1 << 128) - 1)),
    (4, False, 7, 7, -1, 1e-38, 1 / 3,
     "x" * 5000, "ten chars!", "a b",
     dt.date(9999, 12, 31), dt.datetime(1999, 12, 31, 23, 59, 59, 999999),
     dt.datetime(2038, 1, 19, 3, 14, 8, tzinfo=UTC),
     dt.timedelta(days=-400, microseconds=-1),
     Decimal("99999999.9999"), Decimal("1E+20"), b"'\\\"", uuid.UUID(int=0x1234 << 64)),
    (5,) + (None,) * (NCOLS - 1),
]  # fmt: skip


def expected_value(col, v):
    """What a value comes back as: CHAR(n) is blank-padded, a REAL is the
    nearest float4."""
    if v is None:
        return None
    if col == "c":
        return v.ljust(4)
    if col == "f4":
        return struct.unpack("f", float4(v))[0]
    if col == "n":
        return v.quantize(Decimal("0.0001"))
    return v


def float4(v):
    return struct.pack("f", v)


def compare_row(got, sent, how):
    for col, g, s in zip(TYPE_OIDS, got, sent):
        want = expected_value(col, s)
        if col == "f4" and "text" in how and isinstance(g, float) and isinstance(want, float):
            # A REAL prints as the shortest decimal that reads back as the
            # same float4 (1e-38), which Python reads as a float8: compare
            # the values as float4.
            if float4(g) != float4(want):
                raise AssertionError(f"{how}: column {col}: sent {s!r}, got {g!r}")
            continue
        # type() too: True == 1, and a date is not a datetime. A numeric
        # keeps its scale: 1.5 and 1.50 are equal Decimals, not equal text.
        if type(g) is not type(want) or g != want or (
            isinstance(want, Decimal) and str(g) != str(want) and col == "n"
        ):
            raise AssertionError(f"{how}: column {col}: sent {s!r}, got {g!r}")
        if isinstance(want, dt.datetime) and want.tzinfo is not None:
            assert g.tzinfo is not None, f"{how}: {col} lost its time zone"


@check
def types_round_trip():
    """every supported type, text and binary parameters, text and binary results"""
    with connect(node(0), autocommit=True) as conn:
        recreate(conn, "psy_types", TYPES_COLUMNS)
        cols = ", ".join(TYPE_OIDS)
        # %s lets psycopg choose each parameter's format, %b sends binary,
        # %t text.
        for mark, row in zip(["%s", "%b", "%t", "%b", "%s"], TYPE_ROWS):
            cur = conn.execute(
                f"INSERT INTO psy_types ({cols}) VALUES ({', '.join([mark] * NCOLS)})", row
            )
            assert cur.rowcount == 1
        ok(f"{len(TYPE_ROWS)} parameterised INSERTs of {NCOLS} columns (automatic, binary and "
           "text parameters; NULLs in the last)")  # fmt: skip

    # Read through another node, with binary and with text results.
    with connect(node(1), autocommit=True) as conn:
        for binary in (True, False):
            how = "binary" if binary else "text"
            cur = conn.cursor(binary=binary)
            for row in TYPE_ROWS:
                cur.execute(f"SELECT {cols} FROM psy_types WHERE id = %s", (row[0],))
                got = cur.fetchone()
                assert cur.fetchone() is None
                for i in range(NCOLS):
                    assert cur.pgresult.fformat(i) == (1 if binary else 0), (how, i)
                compare_row(got, row, f"{how} results, id {row[0]}")
            oids = {d.name: d.type_code for d in cur.description}
            assert oids == TYPE_OIDS, oids
            ok(f"{how} results: every value equal to what was sent, with its Python type "
               "(int, float, str, bool, date, naive and aware datetime, timedelta, Decimal, bytes,"
               " UUID), NULLs as None, CHAR(4) padded, NUMERIC(12,4) with 4 places, column type "
               "OIDs as PostgreSQL's")  # fmt: skip

        cur = conn.cursor(binary=True)
        cur.execute("SELECT id FROM psy_types WHERE d = %s AND ts = %s AND tstz = %s AND iv = %s",
                    TYPE_ROWS[1][10:14])  # fmt: skip
        assert cur.fetchall() == [(2,)]
        # The same instant written in another zone is equal.
        cur.execute("SELECT id FROM psy_types WHERE tstz = %s",
                    (dt.datetime(1999, 12, 31, 23, 59, tzinfo=UTC) + dt.timedelta(minutes=1),))  # fmt: skip
        assert cur.fetchall() == [(2,)]
        cur.execute("SELECT id FROM psy_types WHERE t = %s AND vc = %s AND b = %s AND i8 = %s",
                    ("plain", "vc", True, -(2**63)))  # fmt: skip
        assert cur.fetchall() == [(1,)]
        cur.execute("SELECT id FROM psy_types WHERE i4 > %s AND f8 < %s ORDER BY id LIMIT %s",
                    (-1, 1.0, 10))  # fmt: skip
        assert cur.fetchall() == [(1,), (4,)], cur.fetchall()
        ok("parameters in WHERE (date, timestamp, timestamptz in another zone, interval, text, "
           "bool, int8 minimum) and LIMIT")  # fmt: skip
        cur.execute("SELECT %s::int8 * 2, %s || '!', %s::date + 1, %s::interval * 2",
                    (21, "hi", dt.date(2024, 2, 28), dt.timedelta(hours=1)))  # fmt: skip
        assert cur.fetchone() == (42, "hi!", dt.date(2024, 2, 29), dt.timedelta(hours=2))
        ok("parameters in expressions, results in binary")
        cur.execute("SELECT id FROM psy_types WHERE n = %s AND u = %s AND by = %s",
                    TYPE_ROWS[0][14:15] + TYPE_ROWS[0][17:18] + TYPE_ROWS[0][16:17])  # fmt: skip
        assert cur.fetchall() == [(1,)]
        cur.execute("SELECT %s::numeric / 3, %s + 0.5, round(%s::numeric, 1)",
                    (Decimal("1"), Decimal("2.25"), Decimal("2.45")))  # fmt: skip
        assert cur.fetchone() == (Decimal("0.33333333333333333333"), Decimal("2.75"),
                                  Decimal("2.5"))  # fmt: skip
        ok("numeric, uuid and bytea parameters in WHERE; numeric arithmetic with PostgreSQL's "
           "scales in binary results")  # fmt: skip


@check
def prepared_statements():
    """cursor.execute(..., prepare=True): one Parse, many Binds"""
    with connect(node(1), autocommit=True) as conn:
        recreate(conn, "psy_kv", "k INT PRIMARY KEY, v TEXT, n BIGINT")
        cur = conn.cursor()
        ins = "INSERT INTO psy_kv (k, v, n) VALUES (%s, %s, %s)"
        sel = "SELECT v, n FROM psy_kv WHERE k = %s"
        with wire_trace(conn) as trace:
            for i in range(60):
                cur.execute(ins, (i, f"v{i}", i * i), prepare=True)
            for i in range(60):
                cur.execute(sel, (i,), prepare=True)
                assert cur.fetchone() == (f"v{i}", i * i)
        named = [l for l in trace.sent("Parse") if '"_pg3_' in l]
        assert len(trace.sent("Parse")) == 2 and len(named) == 2, trace.sent("Parse")
        assert len(trace.sent("Bind")) == 120, len(trace.sent("Bind"))
        ok("60 INSERTs and 60 SELECTs with prepare=True sent 2 Parse (named _pg3_*) and 120 Bind")

        # The same statements through a binary cursor reuse them too.
        bcur = conn.cursor(binary=True)
        with wire_trace(conn) as trace:
            for i in range(0, 60, 3):
                bcur.execute(sel, (i,), prepare=True)
                assert bcur.fetchone() == (f"v{i}", i * i)
        assert len(trace.sent("Bind")) == 20
        ok("a binary cursor binds the same prepared SELECT again (results in binary)")

        # prepare=False: an unnamed statement every time.
        with wire_trace(conn) as trace:
            for i in range(5):
                cur.execute(sel, (i,), prepare=False)
                assert cur.fetchone() == (f"v{i}", i * i)
        assert len(trace.sent("Parse")) == 5
        assert not [l for l in trace.sent("Parse") if '"_pg3_' in l]
        ok("prepare=False parses an unnamed statement each time")

        # Default: psycopg prepares a query on its prepare_threshold-th use.
        upd = "UPDATE psy_kv SET n = n + %s WHERE k = %s"
        with wire_trace(conn) as trace:
            for _ in range(20):
                cur.execute(upd, (1, 7))
        assert cur.rowcount == 1
        assert conn.execute("SELECT n FROM psy_kv WHERE k = 7").fetchone() == (49 + 20,)
        named = [l for l in trace.sent("Parse") if '"_pg3_' in l]
        assert len(named) == 1, trace.sent("Parse")
        assert len(trace.sent("Parse")) <= conn.prepare_threshold + 1
        ok(f"with the default prepare_threshold ({conn.prepare_threshold}) 20 UPDATEs "
           f"sent {len(trace.sent('Parse'))} Parse, the last one named; balance right")  # fmt: skip

        # rollback() after statements were prepared: psycopg sends ROLLBACK,
        # forgets its prepared statements and sends DEALLOCATE ALL.
        conn.autocommit = False
        cur.execute(sel, (1,), prepare=True)
        cur.execute("UPDATE psy_kv SET v = %s WHERE k = %s", ("gone", 1), prepare=True)
        with wire_trace(conn) as trace:
            conn.rollback()
        assert any("DEALLOCATE ALL" in l for l in trace.lines), trace.lines
        ok("rollback() after prepared statements: ROLLBACK, then DEALLOCATE ALL accepted")
        assert conn.info.transaction_status == pq.TransactionStatus.IDLE
        with wire_trace(conn) as trace:
            cur.execute(sel, (1,), prepare=True)
            assert cur.fetchone() == ("v1", 1)
        conn.commit()
        assert [l for l in trace.sent("Parse") if '"_pg3_' in l], trace.sent("Parse")
        ok("the UPDATE was rolled back; psycopg prepared the SELECT again (new name) and it runs")

        # More distinct statements than prepared_max: psycopg deallocates the
        # oldest by name (DEALLOCATE _pg3_n) after the statement that evicted
        # it.
        conn.autocommit = True
        conn.prepared_max = 2
        with wire_trace(conn) as trace:
            for i in range(3):
                cur.execute(f"SELECT n + {i} FROM psy_kv WHERE k = %s", (3,), prepare=True)
        assert any(re.search(r"DEALLOCATE _pg3_\d+", l) for l in trace.lines), trace.lines
        # The evicted name is gone from the server: deallocating it again fails.
        evicted = next(m.group(0) for l in trace.lines
                       if (m := re.search(r"DEALLOCATE _pg3_\d+", l)))  # fmt: skip
        try:
            conn.execute(evicted, prepare=False)
            raise AssertionError(f"{evicted} twice was accepted")
        except errors.InvalidSqlStatementName as e:
            assert e.sqlstate == "26000"
        ok(f"prepared_max = 2 with 3 statements: psycopg's {evicted} removed it "
           "(a second one fails with 26000)")  # fmt: skip
        assert conn.execute("SELECT n FROM psy_kv WHERE k = 3", prepare=False).fetchone() == (9,)
        ok("prepared_max = 2 with 3 statements: the connection stays usable")


@check
def executemany_pipelined():
    """executemany (psycopg pipelines it), with and without RETURNING"""
    with connect(node(2), autocommit=True) as conn:
        recreate(conn, "psy_many", "id INT PRIMARY KEY, name VARCHAR(20) NOT NULL, at TIMESTAMPTZ")
        cur = conn.cursor()
        base = dt.datetime(2024, 1, 1, tzinfo=UTC)
        rows = [(i, f"name{i}", base + dt.timedelta(seconds=i)) for i in range(200)]
        with wire_trace(conn) as trace:
            cur.executemany("INSERT INTO psy_many (id, name, at) VALUES (%s, %s, %s)", rows)
        assert cur.rowcount == 200, cur.rowcount
        assert len(trace.sent("Sync")) < 10, len(trace.sent("Sync"))
        ok(f"executemany of 200 rows: rowcount 200, {len(trace.sent('Bind'))} Bind and "
           f"{len(trace.sent('Sync'))} Sync (pipelined)")  # fmt: skip
        got = conn.execute("SELECT id, name, at FROM psy_many ORDER BY id").fetchall()
        assert got == rows
        ok("every row reads back")

        cur.executemany(
            "UPDATE psy_many SET name = %s WHERE id = %s RETURNING id, name",
            [(f"new{i}", i) for i in range(0, 200, 50)],
            returning=True,
        )
        results = []
        while True:
            results.extend(cur.fetchall())
            if not cur.nextset():
                break
        assert results == [(i, f"new{i}") for i in range(0, 200, 50)], results
        ok("executemany(..., returning=True): one result set per statement")

        # A failing row: executemany raises with the row's SQLSTATE, and the
        # statements after it are skipped up to the Sync.
        with expect_error(errors.UniqueViolation, "23505"):
            cur.executemany(
                "INSERT INTO psy_many (id, name) VALUES (%s, %s)",
                [(1000, "a"), (1001, "b"), (5, "dup"), (1002, "c")],
            )
        left = [r[0] for r in conn.execute("SELECT id FROM psy_many WHERE id >= 1000 ORDER BY id")]
        if left == []:
            ok("a duplicate in executemany raises UniqueViolation and the batch leaves no rows "
               "(one implicit transaction up to the Sync)")  # fmt: skip
        else:
            # KNOWN GAP: PostgreSQL runs the statements of a pipeline that
            # precede its Sync in one implicit transaction, so the failing
            # row undoes the rows before it; Concord commits each Execute on
            # its own and keeps them. Accepted until that is implemented.
            assert left == [1000, 1001], left
            known_gap(f"the rows before the failing one stay ({left}): each Execute of a "
                      "pipeline commits by itself, not the whole implicit transaction up to Sync")  # fmt: skip
            conn.execute("DELETE FROM psy_many WHERE id >= 1000")
        ok("the statement after the failing one was skipped (1002 not inserted)")

        # An explicit pipeline.
        with conn.pipeline():
            c1 = conn.execute("SELECT count(*) FROM psy_many")
            c2 = conn.execute("SELECT name FROM psy_many WHERE id = %s", (50,))
            conn.execute("DELETE FROM psy_many WHERE id >= %s", (100,))
        assert c1.fetchone() == (200,) and c2.fetchone() == ("new50",)
        assert conn.execute("SELECT count(*) FROM psy_many").fetchone() == (100,)
        ok("conn.pipeline(): three statements, results read after the pipeline")


COPY_TYPES = ["int4", "text", "float8", "date", "timestamptz", "bool", "varchar", "interval"]


@check
def copy_text_and_csv():
    """COPY FROM STDIN (write_row, raw CSV) and COPY TO STDOUT (rows(), raw CSV)"""
    with connect(node(0), autocommit=True) as conn:
        recreate(conn, "psy_copy", "id INT PRIMARY KEY, name TEXT, score DOUBLE PRECISION, "
                 "born DATE, seen TIMESTAMPTZ, flag BOOL, note VARCHAR(40), dur INTERVAL")  # fmt: skip
        rows = [(i, f"name {i}", i / 7, dt.date(2000, 1, 1) + dt.timedelta(days=i),
                 dt.datetime(2024, 5, 1, tzinfo=UTC) + dt.timedelta(seconds=i * 37, microseconds=i),
                 i % 3 == 0, None if i % 5 == 0 else f"n{i}", dt.timedelta(minutes=i))
                for i in range(1, 301)]  # fmt: skip
        rows += [
            (1001, "tab\there\nnewline \\backslash \\N not null", -0.0, dt.date(1, 1, 1),
             dt.datetime(2024, 5, 1, 12, tzinfo=IST), False, "ünïcödé ☃", dt.timedelta(days=-2, seconds=1)),
            (1002, "", 1e300, None, None, None, "", None),
            (1003, None, None, None, None, None, None, None),
        ]  # fmt: skip
        cur = conn.cursor()
        with cur.copy("COPY psy_copy (id, name, score, born, seen, flag, note, dur) FROM STDIN") as copy:
            for r in rows:
                copy.write_row(r)
        assert cur.rowcount == len(rows), cur.rowcount
        ok(f"COPY FROM STDIN with write_row: {len(rows)} rows (NULLs, tabs, newlines, "
           "backslashes, unicode), rowcount from the COPY tag")  # fmt: skip

        got = []
        with cur.copy("COPY psy_copy TO STDOUT") as copy:
            copy.set_types(COPY_TYPES)
            got.extend(copy.rows())
        assert sorted(got) == sorted(rows, key=lambda r: r[0]) or _diff(got, rows)
        ok("COPY TO STDOUT with rows() and set_types: every row back, values exact")

        got = []
        with cur.copy("COPY (SELECT id, name FROM psy_copy WHERE id > 1000 ORDER BY id) TO STDOUT") as copy:
            copy.set_types(["int4", "text"])
            got.extend(copy.rows())
        assert got == [(r[0], r[1]) for r in rows[-3:]], got
        ok("COPY (SELECT …) TO STDOUT")

        # CSV, written and read as raw data: quotes, commas, empty string vs NULL.
        recreate(conn, "psy_csv", "id INT PRIMARY KEY, a TEXT, b INT, c TIMESTAMP")
        data = (
            "id,a,b,c\n"
            '1,plain,10,2024-01-02 03:04:05\n'
            '2,"with, comma",,2024-01-02 03:04:05.5\n'
            '3,"quote "" inside",-3,\n'
            '4,"",4,1999-12-31 23:59:59.999999\n'
            '5,"multi\nline",5,2000-01-01 00:00:00\n'
        )  # fmt: skip
        with cur.copy("COPY psy_csv FROM STDIN WITH (FORMAT csv, HEADER true)") as copy:
            # Written in uneven pieces: lines split across CopyData messages.
            for i in range(0, len(data), 7):
                copy.write(data[i : i + 7])
        assert cur.rowcount == 5, cur.rowcount
        got = conn.execute("SELECT id, a, b, c FROM psy_csv ORDER BY id").fetchall()
        assert got == [
            (1, "plain", 10, dt.datetime(2024, 1, 2, 3, 4, 5)),
            (2, "with, comma", None, dt.datetime(2024, 1, 2, 3, 4, 5, 500000)),
            (3, 'quote " inside', -3, None),
            (4, "", 4, dt.datetime(1999, 12, 31, 23, 59, 59, 999999)),
            (5, "multi\nline", 5, dt.datetime(2000, 1, 1)),
        ], got
        ok("COPY FROM STDIN (FORMAT csv, HEADER) in 7-byte pieces: quoting, \"\" vs NULL, "
           "embedded newline")  # fmt: skip

        out = io.BytesIO()
        with cur.copy("COPY psy_csv TO STDOUT WITH (FORMAT csv, HEADER)") as copy:
            for chunk in copy:
                out.write(chunk)
        parsed = list(csv.reader(io.StringIO(out.getvalue().decode())))
        assert parsed[0] == ["id", "a", "b", "c"], parsed[0]
        assert sorted(parsed[1:]) == [
            ["1", "plain", "10", "2024-01-02 03:04:05"],
            ["2", "with, comma", "", "2024-01-02 03:04:05.5"],
            ["3", 'quote " inside', "-3", ""],
            ["4", "", "4", "1999-12-31 23:59:59.999999"],
            ["5", "multi\nline", "5", "2000-01-01 00:00:00"],
        ], parsed
        assert b'4,"",4' in out.getvalue(), out.getvalue()  # an empty string is quoted, NULL is not
        ok("COPY TO STDOUT (FORMAT csv, HEADER) read as raw data parses back with Python's csv")

        # A bad field fails the whole COPY; nothing is inserted and the
        # connection carries on.
        with expect_error(errors.InvalidTextRepresentation, "22P02"):
            with cur.copy("COPY psy_csv (id, b) FROM STDIN WITH (FORMAT csv)") as copy:
                copy.write_row((100, 1))
                copy.write("101,not a number\n")
        assert conn.execute("SELECT count(*) FROM psy_csv").fetchone() == (5,)
        ok("a bad field fails the COPY with InvalidTextRepresentation (22P02), nothing inserted")

        # COPY inside a transaction goes with it.
        with conn.transaction():
            with cur.copy("COPY psy_csv (id, a) FROM STDIN") as copy:
                copy.write_row((200, "in tx"))
            assert conn.execute("SELECT count(*) FROM psy_csv").fetchone() == (6,)
            raise psycopg.Rollback
        assert conn.execute("SELECT count(*) FROM psy_csv").fetchone() == (5,)
        ok("a COPY inside conn.transaction() is seen by it and undone by psycopg.Rollback")

        # Binary COPY is not implemented in Concord yet (0A000); PostgreSQL
        # accepts it. Either way the connection must stay usable.
        try:
            with cur.copy("COPY psy_csv (id, b) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(["int4", "int4"])
                copy.write_row((300, 3))
            ok("COPY FROM STDIN (FORMAT BINARY) accepted (PostgreSQL)")
            conn.execute("DELETE FROM psy_csv WHERE id = 300")
        except errors.FeatureNotSupported as e:
            assert e.sqlstate == "0A000"
            ok(f"COPY FROM STDIN (FORMAT BINARY) refused with 0A000: {e.diag.message_primary}")
        assert conn.execute("SELECT count(*) FROM psy_csv").fetchone() == (5,)


def _diff(got, rows):
    want = {r[0]: r for r in rows}
    for g in got:
        if want.get(g[0]) != g:
            raise AssertionError(f"COPY row differs: sent {want.get(g[0])!r}, got {g!r}")
    raise AssertionError(f"COPY rows differ: {len(got)} read, {len(rows)} written")


@check
def transactions():
    """conn.transaction() commits, rollback discards, failed state until ROLLBACK"""
    with connect(node(2), autocommit=True) as setup:
        recreate(setup, "psy_tx", "id INT PRIMARY KEY, v TEXT")
    with connect(node(2)) as conn, connect(node(0), autocommit=True) as other:
        assert not conn.autocommit
        # Non-autocommit: the first statement opens a transaction.
        conn.execute("INSERT INTO psy_tx VALUES (%s, %s)", (1, "one"))
        assert conn.info.transaction_status == pq.TransactionStatus.INTRANS
        assert other.execute("SELECT count(*) FROM psy_tx").fetchone() == (0,)
        conn.commit()
        assert conn.info.transaction_status == pq.TransactionStatus.IDLE
        assert other.execute("SELECT v FROM psy_tx WHERE id = 1").fetchone() == ("one",)
        ok("an implicit BEGIN: uncommitted rows invisible to another node, visible after commit()")

        conn.execute("INSERT INTO psy_tx VALUES (%s, %s)", (2, "two"))
        conn.execute("UPDATE psy_tx SET v = %s WHERE id = %s", ("changed", 1))
        assert conn.execute("SELECT count(*) FROM psy_tx").fetchone() == (2,)
        conn.rollback()
        assert conn.execute("SELECT id, v FROM psy_tx").fetchall() == [(1, "one")]
        conn.commit()
        ok("rollback() discards an INSERT and an UPDATE")

        conn.autocommit = True
        with conn.transaction():
            conn.execute("INSERT INTO psy_tx VALUES (%s, %s)", (3, "three"))
            assert conn.info.transaction_status == pq.TransactionStatus.INTRANS
        assert other.execute("SELECT v FROM psy_tx WHERE id = 3").fetchone() == ("three",)
        ok("with conn.transaction(): committed at the end of the block")

        with conn.transaction():
            conn.execute("DELETE FROM psy_tx")
            raise psycopg.Rollback
        assert conn.execute("SELECT count(*) FROM psy_tx").fetchone() == (2,)
        try:
            with conn.transaction():
                conn.execute("INSERT INTO psy_tx VALUES (%s, %s)", (4, "four"))
                raise KeyError("application error")
        except KeyError:
            pass
        assert conn.execute("SELECT count(*) FROM psy_tx").fetchone() == (2,)
        ok("psycopg.Rollback and an application exception roll the block back")

        # An error inside a transaction: every statement after it fails with
        # InFailedSqlTransaction until the rollback, which discards all.
        conn.autocommit = False
        conn.execute("INSERT INTO psy_tx VALUES (%s, %s)", (5, "five"))
        with expect_error(errors.DivisionByZero, "22012"):
            conn.execute("SELECT 1 / %s", (0,))
        assert conn.info.transaction_status == pq.TransactionStatus.INERROR
        for stmt, args in (("SELECT 1", None), ("SELECT v FROM psy_tx WHERE id = %s", (5,)),
                           ("INSERT INTO psy_tx VALUES (%s, %s)", (6, "six"))):  # fmt: skip
            with expect_error(errors.InFailedSqlTransaction, "25P02"):
                conn.execute(stmt, args)
        with expect_error(errors.InFailedSqlTransaction, "25P02"):
            conn.execute("SELECT %s::int4", (1,), prepare=True)
        conn.rollback()
        assert conn.info.transaction_status == pq.TransactionStatus.IDLE
        assert conn.execute("SELECT id FROM psy_tx ORDER BY id").fetchall() == [(1,), (3,)]
        conn.commit()
        ok("after 22012 the transaction is INERROR: plain, parameterised and prepared statements "
           "fail with InFailedSqlTransaction (25P02) until rollback(), which discards the INSERT")  # fmt: skip

        # An error at Parse (undefined table) aborts the block too, and
        # COMMIT of a failed transaction rolls back.
        conn.execute("INSERT INTO psy_tx VALUES (%s, %s)", (7, "seven"))
        with expect_error(errors.UndefinedTable, "42P01"):
            conn.execute("SELECT * FROM psy_no_such_table WHERE id = %s", (1,))
        with expect_error(errors.InFailedSqlTransaction, "25P02"):
            conn.execute("SELECT 1")
        conn.rollback()
        assert conn.execute("SELECT count(*) FROM psy_tx WHERE id = 7").fetchone() == (0,)
        conn.rollback()
        ok("an error at Parse (42P01) aborts the transaction as well")

        # with conn.transaction() around an error: the block rolls back and
        # the connection is usable right after.
        conn.autocommit = True
        with expect_error(errors.UniqueViolation, "23505"):
            with conn.transaction():
                conn.execute("INSERT INTO psy_tx VALUES (%s, %s)", (8, "eight"))
                conn.execute("INSERT INTO psy_tx VALUES (%s, %s)", (1, "dup"))
        assert conn.info.transaction_status == pq.TransactionStatus.IDLE
        assert conn.execute("SELECT count(*) FROM psy_tx").fetchone() == (2,)
        ok("a unique violation inside conn.transaction() rolls the whole block back")

        # Isolation level through psycopg (BEGIN ISOLATION LEVEL SERIALIZABLE).
        conn.isolation_level = psycopg.IsolationLevel.SERIALIZABLE
        with conn.transaction():
            level = conn.execute("SHOW transaction_isolation").fetchone()[0]
        assert level == "serializable", level
        ok("isolation_level SERIALIZABLE: BEGIN ISOLATION LEVEL SERIALIZABLE accepted")


@check
def errors_and_sqlstates():
    """errors carry their SQLSTATE; the connection carries on after each"""
    with connect(node(1), autocommit=True) as conn:
        recreate(conn, "psy_err", "id INT PRIMARY KEY, name VARCHAR(5) NOT NULL, small SMALLINT")
        conn.execute("INSERT INTO psy_err VALUES (%s, %s, %s)", (1, "a", 1))
        cases = [
            (errors.UniqueViolation, "23505", "INSERT INTO psy_err VALUES (%s, %s, %s)", (1, "b", 2)),
            (errors.UndefinedTable, "42P01", "SELECT * FROM psy_missing WHERE id = %s", (1,)),
            (errors.DivisionByZero, "22012", "SELECT id / %s FROM psy_err", (0,)),
            (errors.DivisionByZero, "22012", "SELECT 1 / 0", None),
            (errors.SyntaxError, "42601", "SELEC 1", None),
            (errors.SyntaxError, "42601", "SELECT * FROM psy_err WHERE id = %s AND", (1,)),
            (errors.UndefinedColumn, "42703", "SELECT nope FROM psy_err WHERE id = %s", (1,)),
            (errors.NotNullViolation, "23502", "INSERT INTO psy_err (id) VALUES (%s)", (2,)),
            (errors.StringDataRightTruncation, "22001",
             "INSERT INTO psy_err VALUES (%s, %s, %s)", (3, "toolong", 0)),
            (errors.NumericValueOutOfRange, "22003",
             "INSERT INTO psy_err VALUES (%s, %s, %s)", (4, "x", 40000)),
            (errors.InvalidTextRepresentation, "22P02", "SELECT %s::int4", ("abc",)),
        ]  # fmt: skip
        for cls, state, stmt, args in cases:
            with expect_error(cls, state) as e:
                conn.execute(stmt, args)
            assert errors.lookup(state) is cls
            assert conn.execute("SELECT count(*) FROM psy_err").fetchone() == (1,)
            ok(f"{state} {cls.__name__}: {stmt!r} -> {e.error.diag.message_primary!r}")
        # psycopg's error classes group SQLSTATE classes.
        with expect_error(errors.IntegrityError, "23505"):
            conn.execute("INSERT INTO psy_err VALUES (1, 'c', 3)")
        with expect_error(psycopg.ProgrammingError, "42P01"):
            conn.execute("SELECT 1 FROM psy_missing")
        ok("the DB-API classes: 23505 is an IntegrityError, 42P01 a ProgrammingError")


@check
def contention_with_retries():
    """concurrent read-modify-write transfers on every node, retried on 40001"""
    accounts, initial, workers, transfers = 10, 1000, 4, 25
    with connect(node(0), autocommit=True) as conn:
        recreate(conn, "psy_bank", "id INT PRIMARY KEY, balance BIGINT NOT NULL")
        recreate(conn, "psy_history", "tid TEXT PRIMARY KEY, src INT NOT NULL, dst INT NOT NULL, "
                 "amount BIGINT NOT NULL, attempt INT NOT NULL")  # fmt: skip
        conn.cursor().executemany("INSERT INTO psy_bank VALUES (%s, %s)",
                                  [(i, initial) for i in range(accounts)])  # fmt: skip

    # psycopg rolls back a block left by an exception (a 40001 before COMMIT)
    # and, having prepared statements, sends DEALLOCATE ALL; a failure there
    # would be logged by psycopg and ignored: none may happen.
    ignored = []

    class CountIgnored(logging.Handler):
        def emit(self, record):
            ignored.append(record.getMessage())

    psycopg_log = logging.getLogger("psycopg")
    handler = CountIgnored(logging.WARNING)
    psycopg_log.addHandler(handler)
    psycopg_log.propagate = False

    start = threading.Barrier(workers)
    retries = [0] * workers
    deadlocks = [0] * workers
    planned = {}
    failures = []

    def worker(w):
        rng = random.Random(w)
        try:
            with connect(node(w), autocommit=True) as conn:
                conn.isolation_level = psycopg.IsolationLevel.SERIALIZABLE
                cur = conn.cursor()
                start.wait()
                for n in range(transfers):
                    src, dst = rng.sample(range(accounts), 2)
                    amount = rng.randint(1, 100)
                    tid = f"w{w}-{n}"
                    planned[tid] = (src, dst, amount)
                    attempt = 0
                    while True:
                        attempt += 1
                        try:
                            with conn.transaction():
                                cur.execute("SELECT balance FROM psy_bank WHERE id = %s", (src,))
                                (from_balance,) = cur.fetchone()
                                cur.execute("SELECT balance FROM psy_bank WHERE id = %s", (dst,))
                                (to_balance,) = cur.fetchone()
                                cur.execute("UPDATE psy_bank SET balance = %s WHERE id = %s",
                                            (from_balance - amount, src))  # fmt: skip
                                cur.execute("UPDATE psy_bank SET balance = %s WHERE id = %s",
                                            (to_balance + amount, dst))  # fmt: skip
                                cur.execute("INSERT INTO psy_history VALUES (%s, %s, %s, %s, %s)",
                                            (tid, src, dst, amount, attempt))  # fmt: skip
                        except errors.SerializationFailure as e:
                            assert e.sqlstate == "40001"
                            assert conn.info.transaction_status == pq.TransactionStatus.IDLE
                            retries[w] += 1
                        except errors.DeadlockDetected:
                            # PostgreSQL's lock waits can end in 40P01;
                            # Concord's wound-wait ends conflicts in 40001.
                            deadlocks[w] += 1
                        else:
                            break
                        if attempt >= 200:
                            raise AssertionError(f"{tid}: still failing after {attempt} attempts")
                        time.sleep(rng.uniform(0, 0.005 * min(attempt, 10)))
        except BaseException as e:  # reported by the main thread
            failures.append((w, e, traceback.format_exc()))
            start.abort()

    began = time.monotonic()
    threads = [threading.Thread(target=worker, args=(w,)) for w in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    psycopg_log.removeHandler(handler)
    psycopg_log.propagate = True
    assert not any(t.is_alive() for t in threads), "a worker hung"
    assert not ignored, ignored
    for w, e, tb in failures:
        print(f"worker {w} failed:\n{tb}", flush=True)
    assert not failures, f"{len(failures)} workers failed"
    took = time.monotonic() - began
    ok(f"{workers} workers on {len(set(node(w) for w in range(workers)))} nodes ran "
       f"{workers * transfers} transfers in {took:.1f}s with {sum(retries)} retries on "
       f"SerializationFailure (per worker: {retries})"
       + (f" and {sum(deadlocks)} on DeadlockDetected" if sum(deadlocks) else ""))  # fmt: skip

    for i in range(len(URLS)):
        with connect(node(i), autocommit=True) as conn:
            balances = dict(conn.execute("SELECT id, balance FROM psy_bank").fetchall())
            history = conn.execute("SELECT tid, src, dst, amount FROM psy_history").fetchall()
            assert sum(balances.values()) == accounts * initial, balances
            assert len(history) == workers * transfers, len(history)
            assert {tid: (s, d, a) for tid, s, d, a in history} == planned
            want = {a: initial for a in range(accounts)}
            for _, src, dst, amount in history:
                want[src] -= amount
                want[dst] += amount
            assert balances == want, (balances, want)
    ok(f"on every node: total balance {accounts * initial} unchanged, {workers * transfers} "
       "history rows, each planned transfer exactly once, every balance = initial + history")  # fmt: skip


def main():
    print(f"psycopg {psycopg.__version__} (libpq {pq.version()}, {pq.__impl__} implementation), "
          f"nodes: {', '.join(URLS)}", flush=True)  # fmt: skip
    began = time.monotonic()
    failed = []
    for fn in CHECKS:
        print(f"{fn.__name__}: {fn.__doc__.strip()}", flush=True)
        t0 = time.monotonic()
        try:
            fn()
        except Exception:
            traceback.print_exc(file=sys.stdout)
            failed.append(fn.__name__)
            print(f"  FAILED {fn.__name__}", flush=True)
        else:
            print(f"  passed ({time.monotonic() - t0:.1f}s)", flush=True)
    took = time.monotonic() - began
    if failed:
        print(f"{len(failed)} of {len(CHECKS)} checks failed ({took:.1f}s): {', '.join(failed)}")
        sys.exit(1)
    print(f"all {len(CHECKS)} checks passed ({took:.1f}s)")


if __name__ == "__main__":
    main()
