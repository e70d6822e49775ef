//! `pg_catalog` and `information_schema`: PostgreSQL's system catalogs as
//! virtual tables, so that psql's `\l`, `\dt`, `\d t`, `\di`, `\dn`, `\du`,
//! pgbench's probes and drivers' introspection work unchanged.
//!
//! ```text
//!  SELECT … FROM pg_catalog.pg_class c JOIN pg_catalog.pg_index i …
//!        │
//!        ├─ PlanCtx::load sees a system relation (or a catalog function)
//!        │  and reads every table descriptor once: a Snapshot
//!        ├─ the planner turns each system relation into a Values node of
//!        │  rows generated from the snapshot (VTable::rows)
//!        ├─ catalog functions (pg_get_indexdef, ::regclass, …) become
//!        │  lookups in maps built from the same snapshot (Expr::Lookup)
//!        └─ joins, filters, subqueries, ORDER BY run as on any table
//! ```
//!
//! The rows are those of the transaction's snapshot of the descriptors, so
//! they agree with what the same transaction's statements see.
//!
//! # Object ids
//! PostgreSQL's catalogs join on oids. Concord derives them from
//! descriptor ids, so they are stable for the life of an object:
//!
//! | object | oid |
//! |---|---|
//! | table | its descriptor id (100 and up) |
//! | index (the primary key's too) | 1,000,000,000 + 1,000 × table id + index id |
//! | constraint | 2,000,000,000 + 1,000 × table id + n (0: primary key, index id: unique, 500 + i: the i-th CHECK) |
//! | column default | 3,000,000,000 + 1,000 × table id + column number |
//! | namespaces | pg_catalog 11, public 2200, information_schema 13000 (PostgreSQL's first two) |
//! | roles | root 10, pg_database_owner 6171 |
//! | database | 1 |
//! | types, access methods, collations | PostgreSQL's own |
//!
//! Oid columns are `bigint` here (PostgreSQL's `oid` is an unsigned 32-bit
//! type); array columns (`oid[]`, `text[]`, `aclitem[]`, `int2vector`) are
//! text in PostgreSQL's array syntax (`{a,b}`), and the array functions
//! psql uses (`= ANY`, `array_to_string`, `array_upper`, subscripts,
//! `ARRAY(subquery)`) read and write that syntax.
//!
//! # Not done
//! - The system relations themselves are not rows of `pg_class`, nor are
//!   their columns rows of `pg_attribute`.
//! - One database and one role; privileges, comments (`pg_description`),
//!   policies, publications, inheritance, partitions, statistics objects,
//!   triggers, rules, sequences and views are empty catalogs.
//! - `pg_get_expr` returns the stored SQL text of a default or CHECK
//!   expression (written back from its syntax tree), not a deparsed node
//!   tree; a string literal gets PostgreSQL's `::type` suffix.
//! - Unique constraints created by `UNIQUE` in CREATE TABLE are recognised
//!   by their generated name (`t_col_key`); a `CREATE UNIQUE INDEX` is a
//!   unique index without a constraint, as in PostgreSQL.

use std::collections::HashMap;
use std::sync::Arc;

use crate::catalog::{Index, Table, DEFAULT_DATABASE};
use crate::types::{DataType, Value};

/// The catalog as one transaction sees it: every table descriptor.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub tables: Vec<Table>,
}

pub const PG_CATALOG_NAMESPACE: i64 = 11;
pub const PUBLIC_NAMESPACE: i64 = 2200;
pub const INFORMATION_SCHEMA_NAMESPACE: i64 = 13000;
pub const ROOT_ROLE: i64 = 10;
pub const DATABASE_OWNER_ROLE: i64 = 6171;
pub const DATABASE_OID: i64 = 1;
const HEAP_AM: i64 = 2;
const BTREE_AM: i64 = 403;
const DEFAULT_COLLATION: i64 = 100;
const UTF8_ENCODING: i64 = 6;

pub fn table_oid(t: &Table) -> i64 {
    t.id as i64
}

pub fn index_oid(t: &Table, index_id: u32) -> i64 {
    1_000_000_000 + 1_000 * t.id as i64 + index_id as i64
}

fn constraint_oid(t: &Table, n: i64) -> i64 {
    2_000_000_000 + 1_000 * t.id as i64 + n
}

fn attrdef_oid(t: &Table, attnum: i64) -> i64 {
    3_000_000_000 + 1_000 * t.id as i64 + attnum
}

/// PostgreSQL's oid and type modifier of a column type.
pub fn type_oid(ty: &DataType) -> (i64, i64) {
    match ty {
        DataType::Bool => (16, -1),
        DataType::Int2 => (21, -1),
        DataType::Int4 => (23, -1),
        DataType::Int8 => (20, -1),
        DataType::Float4 => (700, -1),
        DataType::Float8 => (701, -1),
        DataType::Text => (25, -1),
        DataType::Varchar(n) => (1043, n.map_or(-1, |n| n as i64 + 4)),
        DataType::Char(n) => (1042, n.map_or(-1, |n| n as i64 + 4)),
        DataType::Date => (1082, -1),
        DataType::Timestamp => (1114, -1),
        DataType::TimestampTz => (1184, -1),
        DataType::Interval => (1186, -1),
        // PostgreSQL's numeric typmod: ((precision << 16) | scale) + 4.
        DataType::Numeric(m) => (1700, m.map_or(-1, |(p, s)| ((p << 16 | s) + 4) as i64)),
        DataType::Bytea => (17, -1),
        DataType::Uuid => (2950, -1),
        DataType::Unknown => (705, -1),
    }
}

/// The types `pg_type` lists: (oid, name, length, category, collation,
/// array type oid).
const TYPES: &[(i64, &str, i64, &str, i64, i64)] = &[
    (16, "bool", 1, "B", 0, 1000),
    (17, "bytea", -1, "U", 0, 1001),
    (18, "char", 1, "Z", 0, 1002),
    (19, "name", 64, "S", 950, 1003),
    (20, "int8", 8, "N", 0, 1016),
    (21, "int2", 2, "N", 0, 1005),
    (22, "int2vector", -1, "A", 0, 1006),
    (23, "int4", 4, "N", 0, 1007),
    (25, "text", -1, "S", DEFAULT_COLLATION, 1009),
    (26, "oid", 4, "N", 0, 1028),
    (700, "float4", 4, "N", 0, 1021),
    (701, "float8", 8, "N", 0, 1022),
    (705, "unknown", -2, "X", 0, 0),
    (1042, "bpchar", -1, "S", DEFAULT_COLLATION, 1014),
    (1043, "varchar", -1, "S", DEFAULT_COLLATION, 1015),
    (1082, "date", 4, "D", 0, 1182),
    (1114, "timestamp", 8, "D", 0, 1115),
    (1184, "timestamptz", 8, "D", 0, 1185),
    (1186, "interval", 16, "T", 0, 1187),
    (1700, "numeric", -1, "N", 0, 1231),
    (2950, "uuid", 16, "U", 0, 2951),
    (2205, "regclass", 4, "N", 0, 2210),
    (2206, "regtype", 4, "N", 0, 2211),
    (4089, "regnamespace", 4, "N", 0, 4090),
];

/// `format_type(oid, typmod)`: a type's SQL name, as `\d` prints it.
pub fn format_type(oid: i64, typmod: Option<i64>) -> String {
    let width = typmod.filter(|m| *m >= 4).map(|m| m - 4);
    match (oid, width) {
        (16, _) => "boolean".into(),
        (18, _) => "\"char\"".into(),
        (20, _) => "bigint".into(),
        (21, _) => "smallint".into(),
        (23, _) => "integer".into(),
        (26, _) => "oid".into(),
        (700, _) => "real".into(),
        (701, _) => "double precision".into(),
        (1042, Some(n)) => format!("character({n})"),
        (1042, None) => "bpchar".into(),
        (1043, Some(n)) => format!("character varying({n})"),
        (1043, None) => "character varying".into(),
        (1114, _) => "timestamp without time zone".into(),
        (1184, _) => "timestamp with time zone".into(),
        (1700, Some(m)) => format!("numeric({},{})", (m >> 16) & 0xffff, m & 0xffff),
        _ => match TYPES.iter().find(|t| t.0 == oid) {
            Some(t) => t.1.to_string(),
            None => "???".into(),
        },
    }
}

/// A relation of `pg_catalog` or `information_schema`.
pub struct VTable {
    pub schema: &'static str,
    pub name: &'static str,
    pub columns: &'static [(&'static str, DataType)],
    rows: fn(&Snapshot) -> Vec<Vec<Value>>,
}

impl VTable {
    /// The relation's rows in this snapshot.
    pub fn rows(&self, snap: &Snapshot) -> Vec<Vec<Value>> {
        (self.rows)(snap)
    }
}

/// The system relation `parts` (`[schema.]name`) names, if any: a bare name
/// is searched in `pg_catalog` only, as PostgreSQL's search path does
/// before `public` (the caller lets a user table of that name win).
pub fn relation(schema: Option<&str>, name: &str) -> Option<&'static VTable> {
    let schema = schema.unwrap_or("pg_catalog");
    RELATIONS
        .iter()
        .find(|v| v.schema == schema && v.name == name)
}

/// Whether a schema name is one of the system schemas.
pub fn is_system_schema(schema: &str) -> bool {
    schema == "pg_catalog" || schema == "information_schema"
}

const O: DataType = DataType::Int8;
const T: DataType = DataType::Text;
const B: DataType = DataType::Bool;
const I2: DataType = DataType::Int2;
const I4: DataType = DataType::Int4;
const F4: DataType = DataType::Float4;
const TSTZ: DataType = DataType::TimestampTz;

fn o(v: i64) -> Value {
    Value::Int(v)
}
fn t(s: &str) -> Value {
    Value::Text(s.to_string())
}
fn b(v: bool) -> Value {
    Value::Bool(v)
}
const NULL: Value = Value::Null;

/// The visible columns of a table (the hidden row id is left out, as
/// PostgreSQL's system columns are), numbered from 1.
fn visible(table: &Table) -> impl Iterator<Item = (i64, &crate::catalog::Column)> {
    table
        .columns
        .iter()
        .filter(|c| !c.hidden)
        .enumerate()
        .map(|(i, c)| (i as i64 + 1, c))
}

/// The attribute number of the column at `pos` in `table.columns`.
fn attnum(table: &Table, pos: usize) -> i64 {
    table.columns[..pos].iter().filter(|c| !c.hidden).count() as i64 + 1
}

/// An index as the catalogs show it: the primary key's too.
struct IndexInfo {
    oid: i64,
    name: String,
    columns: Vec<usize>,
    descending: Vec<bool>,
    unique: bool,
    primary: bool,
    /// The constraint behind it: `p`, `u` or none.
    constraint: Option<(&'static str, i64)>,
}

fn indexes(table: &Table) -> Vec<IndexInfo> {
    let mut out = Vec::new();
    let hidden_pk = table.pk.iter().all(|&i| table.columns[i].hidden);
    if !hidden_pk {
        out.push(IndexInfo {
            oid: index_oid(table, table.primary_id),
            name: format!("{}_pkey", table.name),
            columns: table.pk.clone(),
            descending: vec![false; table.pk.len()],
            unique: true,
            primary: true,
            constraint: Some(("p", constraint_oid(table, 0))),
        });
    }
    for idx in &table.indexes {
        out.push(index_info(table, idx));
    }
    out
}

fn index_info(table: &Table, idx: &Index) -> IndexInfo {
    let cols: Vec<&str> = idx
        .columns
        .iter()
        .map(|&i| table.columns[i].name.as_str())
        .collect();
    let constraint_name = format!("{}_{}_key", table.name, cols.join("_"));
    IndexInfo {
        oid: index_oid(table, idx.id),
        name: idx.name.clone(),
        columns: idx.columns.clone(),
        descending: idx.descending.clone(),
        unique: idx.unique,
        primary: false,
        constraint: (idx.unique && idx.name == constraint_name)
            .then(|| ("u", constraint_oid(table, idx.id as i64))),
    }
}

fn quote_ident(s: &str) -> String {
    let plain = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        s.to_string()
    } else {
        format!("\"{}\"", s.replace('"', "\"\""))
    }
}

fn column_list(table: &Table, info: &IndexInfo) -> String {
    info.columns
        .iter()
        .zip(&info.descending)
        .map(|(&i, &desc)| {
            let name = quote_ident(&table.columns[i].name);
            if desc {
                format!("{name} DESC")
            } else {
                name
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `pg_get_indexdef`: `CREATE [UNIQUE] INDEX name ON public.t USING btree (cols)`.
fn index_def(table: &Table, info: &IndexInfo) -> String {
    format!(
        "CREATE {}INDEX {} ON public.{} USING btree ({})",
        if info.unique { "UNIQUE " } else { "" },
        quote_ident(&info.name),
        quote_ident(&table.name),
        column_list(table, info)
    )
}

/// A default expression as `pg_get_expr` prints it: a string literal gets
/// its type (`'x'::text`), as PostgreSQL stores it.
fn default_expr(default: &str, ty: &DataType) -> String {
    let d = default.trim();
    let is_string = d.len() >= 2
        && d.starts_with('\'')
        && d.ends_with('\'')
        && !d[1..d.len() - 1].replace("''", "").contains('\'');
    if is_string {
        let ty = match ty {
            DataType::Varchar(_) => "character varying".to_string(),
            DataType::Char(_) => "bpchar".to_string(),
            other => other.name(),
        };
        format!("{d}::{ty}")
    } else {
        d.to_string()
    }
}

/// What differs between a table's and an index's `pg_class` row.
struct ClassRow<'a> {
    oid: i64,
    name: &'a str,
    am: i64,
    /// `reltuples`: -1 for a table never analyzed, 0 for an index.
    tuples: f64,
    has_index: bool,
    /// `r` (table) or `i` (index).
    kind: &'static str,
    natts: usize,
    checks: usize,
    /// `d` (default) for tables, `n` (nothing) for indexes.
    replident: &'static str,
    options: Value,
}

fn class_row(c: ClassRow) -> Vec<Value> {
    vec![
        o(c.oid),
        t(c.name),
        o(PUBLIC_NAMESPACE),
        o(0),
        o(0),
        o(ROOT_ROLE),
        o(c.am),
        o(c.oid),
        o(0),
        Value::Int(0),
        Value::Float(c.tuples),
        Value::Int(0),
        o(0),
        b(c.has_index),
        b(false),
        t("p"),
        t(c.kind),
        Value::Int(c.natts as i64),
        Value::Int(c.checks as i64),
        b(false),
        b(false),
        b(false),
        b(false),
        b(false),
        b(true),
        t(c.replident),
        b(false),
        o(0),
        o(0),
        o(0),
        NULL,
        c.options,
        NULL,
    ]
}

/// Every relation of the snapshot: each table, then its indexes.
fn pg_class(snap: &Snapshot) -> Vec<Vec<Value>> {
    let mut rows = Vec::new();
    for table in &snap.tables {
        let idx = indexes(table);
        let reloptions = if table.fillfactor > 0 && table.fillfactor != 100 {
            t(&format!("{{fillfactor={}}}", table.fillfactor))
        } else {
            NULL
        };
        rows.push(class_row(ClassRow {
            oid: table_oid(table),
            name: &table.name,
            am: if table.is_view() { 0 } else { HEAP_AM },
            tuples: -1.0,
            has_index: !idx.is_empty(),
            kind: if table.is_view() { "v" } else { "r" },
            natts: visible(table).count(),
            checks: table.checks.len(),
            replident: "d",
            options: reloptions,
        }));
        for i in idx {
            rows.push(class_row(ClassRow {
                oid: i.oid,
                name: &i.name,
                am: BTREE_AM,
                tuples: 0.0,
                has_index: false,
                kind: "i",
                natts: i.columns.len(),
                checks: 0,
                replident: "n",
                options: NULL,
            }));
        }
    }
    rows
}

fn pg_index(snap: &Snapshot) -> Vec<Vec<Value>> {
    let mut rows = Vec::new();
    for table in &snap.tables {
        for i in indexes(table) {
            let keys: Vec<String> = i
                .columns
                .iter()
                .map(|&c| attnum(table, c).to_string())
                .collect();
            let options: Vec<&str> = i
                .descending
                .iter()
                .map(|&d| if d { "3" } else { "0" })
                .collect();
            rows.push(vec![
                o(i.oid),
                o(table_oid(table)),
                Value::Int(i.columns.len() as i64),
                Value::Int(i.columns.len() as i64),
                b(i.unique),
                b(false),
                b(i.primary),
                b(false),
                b(true),
                b(false),
                b(true),
                b(false),
                b(true),
                b(true),
                b(false),
                t(&keys.join(" ")),
                t(&vec!["0"; i.columns.len()].join(" ")),
                t(&vec!["0"; i.columns.len()].join(" ")),
                t(&options.join(" ")),
                NULL,
                NULL,
            ]);
        }
    }
    rows
}

fn type_len(oid: i64) -> i64 {
    TYPES.iter().find(|t| t.0 == oid).map_or(-1, |t| t.2)
}

fn attribute_row(
    relid: i64,
    name: &str,
    ty: &DataType,
    num: i64,
    not_null: bool,
    has_default: bool,
) -> Vec<Value> {
    let (typid, typmod) = type_oid(ty);
    let collation = if ty.is_string() { DEFAULT_COLLATION } else { 0 };
    let len = type_len(typid);
    vec![
        o(relid),
        t(name),
        o(typid),
        Value::Int(-1),
        Value::Int(len),
        Value::Int(num),
        Value::Int(0),
        Value::Int(-1),
        Value::Int(typmod),
        b(len > 0 && len <= 8),
        t(if len > 0 { "p" } else { "x" }),
        t(match len {
            1 => "c",
            2 => "s",
            4 => "i",
            8 => "d",
            _ => "i",
        }),
        b(not_null),
        b(has_default),
        b(false),
        t(""),
        t(""),
        b(false),
        b(true),
        Value::Int(0),
        o(collation),
        t(""),
        NULL,
        NULL,
        NULL,
        NULL,
    ]
}

fn pg_attribute(snap: &Snapshot) -> Vec<Vec<Value>> {
    let mut rows = Vec::new();
    for table in &snap.tables {
        for (num, c) in visible(table) {
            rows.push(attribute_row(
                table_oid(table),
                &c.name,
                &c.ty,
                num,
                !c.nullable,
                c.default.is_some(),
            ));
        }
        for i in indexes(table) {
            for (n, &c) in i.columns.iter().enumerate() {
                let col = &table.columns[c];
                rows.push(attribute_row(
                    i.oid,
                    &col.name,
                    &col.ty,
                    n as i64 + 1,
                    false,
                    false,
                ));
            }
        }
    }
    rows
}

fn pg_attrdef(snap: &Snapshot) -> Vec<Vec<Value>> {
    let mut rows = Vec::new();
    for table in &snap.tables {
        for (num, c) in visible(table) {
            if let Some(d) = &c.default {
                rows.push(vec![
                    o(attrdef_oid(table, num)),
                    o(table_oid(table)),
                    Value::Int(num),
                    t(&default_expr(d, &c.ty)),
                ]);
            }
        }
    }
    rows
}

/// A constraint as the catalogs show it.
struct Constraint<'a> {
    table: &'a Table,
    oid: i64,
    name: String,
    /// `p`, `u` or `c`.
    kind: &'static str,
    /// The index behind a primary key or unique constraint (0 for none).
    index: i64,
    /// Attribute numbers of the key columns.
    keys: Vec<i64>,
    definition: String,
}

/// Every constraint of every table.
fn constraints(snap: &Snapshot) -> Vec<Constraint<'_>> {
    let mut out = Vec::new();
    for table in &snap.tables {
        for i in indexes(table) {
            if let Some((kind, oid)) = i.constraint {
                let cols: Vec<String> = i
                    .columns
                    .iter()
                    .map(|&c| quote_ident(&table.columns[c].name))
                    .collect();
                let def = format!(
                    "{} ({})",
                    if kind == "p" { "PRIMARY KEY" } else { "UNIQUE" },
                    cols.join(", ")
                );
                let keys = i.columns.iter().map(|&c| attnum(table, c)).collect();
                out.push(Constraint {
                    table,
                    oid,
                    name: i.name.clone(),
                    kind,
                    index: i.oid,
                    keys,
                    definition: def,
                });
            }
        }
        for (n, (name, expr)) in table.checks.iter().enumerate() {
            out.push(Constraint {
                table,
                oid: constraint_oid(table, 500 + n as i64),
                name: name.clone(),
                kind: "c",
                index: 0,
                keys: vec![],
                definition: format!("CHECK ({expr})"),
            });
        }
    }
    out
}

fn pg_constraint(snap: &Snapshot) -> Vec<Vec<Value>> {
    constraints(snap)
        .into_iter()
        .map(|c| {
            let Constraint {
                table,
                oid,
                name,
                kind,
                index,
                keys,
                definition: def,
            } = c;
            let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
            let bin = if kind == "c" {
                t(def
                    .strip_prefix("CHECK (")
                    .and_then(|d| d.strip_suffix(')'))
                    .unwrap_or(&def))
            } else {
                NULL
            };
            vec![
                o(oid),
                t(&name),
                o(PUBLIC_NAMESPACE),
                t(kind),
                b(false),
                b(false),
                b(true),
                o(table_oid(table)),
                o(0),
                o(index),
                o(0),
                o(0),
                t(" "),
                t(" "),
                t(" "),
                b(true),
                Value::Int(0),
                b(false),
                if keys.is_empty() {
                    NULL
                } else {
                    t(&format!("{{{}}}", keys.join(",")))
                },
                NULL,
                bin,
            ]
        })
        .collect()
}

fn pg_type(_: &Snapshot) -> Vec<Vec<Value>> {
    TYPES
        .iter()
        .map(|&(oid, name, len, category, collation, array)| {
            vec![
                o(oid),
                t(name),
                o(PG_CATALOG_NAMESPACE),
                o(ROOT_ROLE),
                Value::Int(len),
                b(len > 0 && len <= 8),
                t("b"),
                t(category),
                b(matches!(
                    name,
                    "bool" | "text" | "float8" | "oid" | "timestamptz" | "interval"
                )),
                b(true),
                t(","),
                o(0),
                o(if name == "int2vector" { 21 } else { 0 }),
                o(array),
                t(&format!("{name}in")),
                t(&format!("{name}out")),
                t(&format!("{name}recv")),
                t(&format!("{name}send")),
                o(0),
                Value::Int(-1),
                Value::Int(0),
                o(collation),
                b(false),
                NULL,
            ]
        })
        .collect()
}

fn tables_and_indexes(snap: &Snapshot) -> Vec<Vec<Value>> {
    let mut rows = Vec::new();
    for table in &snap.tables {
        for i in indexes(table) {
            rows.push(vec![
                t("public"),
                t(&table.name),
                t(&i.name),
                NULL,
                t(&index_def(table, &i)),
            ]);
        }
    }
    rows
}

/// `information_schema.columns`' description of a type: data_type,
/// character_maximum_length, numeric_precision, numeric_scale, udt_name.
fn info_type(ty: &DataType) -> (String, Value, Value, Value, &'static str) {
    let name = match ty {
        DataType::Varchar(_) => "character varying".to_string(),
        DataType::Char(_) => "character".to_string(),
        other => other.name(),
    };
    let len = match ty {
        DataType::Varchar(Some(n)) | DataType::Char(Some(n)) => Value::Int(*n as i64),
        _ => NULL,
    };
    let (precision, scale) = match ty {
        DataType::Int2 => (Value::Int(16), Value::Int(0)),
        DataType::Int4 => (Value::Int(32), Value::Int(0)),
        DataType::Int8 => (Value::Int(64), Value::Int(0)),
        DataType::Float4 => (Value::Int(24), NULL),
        DataType::Float8 => (Value::Int(53), NULL),
        _ => (NULL, NULL),
    };
    (name, len, precision, scale, ty.catalog_name())
}

fn info_columns(snap: &Snapshot) -> Vec<Vec<Value>> {
    let mut rows = Vec::new();
    for table in &snap.tables {
        for (num, c) in visible(table) {
            let (data_type, len, precision, scale, udt) = info_type(&c.ty);
            rows.push(vec![
                t(DEFAULT_DATABASE),
                t("public"),
                t(&table.name),
                t(&c.name),
                Value::Int(num),
                c.default
                    .as_ref()
                    .map_or(NULL, |d| t(&default_expr(d, &c.ty))),
                t(if c.nullable { "YES" } else { "NO" }),
                t(&data_type),
                len,
                precision,
                scale,
                t(DEFAULT_DATABASE),
                t("pg_catalog"),
                t(udt),
                t("NO"),
                t("NEVER"),
                t("YES"),
            ]);
        }
    }
    rows
}

fn info_table_constraints(snap: &Snapshot) -> Vec<Vec<Value>> {
    constraints(snap)
        .into_iter()
        .map(|c| {
            vec![
                t(DEFAULT_DATABASE),
                t("public"),
                t(&c.name),
                t(DEFAULT_DATABASE),
                t("public"),
                t(&c.table.name),
                t(match c.kind {
                    "p" => "PRIMARY KEY",
                    "u" => "UNIQUE",
                    _ => "CHECK",
                }),
                t("NO"),
                t("NO"),
                t("YES"),
            ]
        })
        .collect()
}

fn info_key_column_usage(snap: &Snapshot) -> Vec<Vec<Value>> {
    let mut rows = Vec::new();
    for c in constraints(snap) {
        let names: Vec<&str> = visible(c.table).map(|(_, c)| c.name.as_str()).collect();
        for (pos, k) in c.keys.iter().enumerate() {
            // A key on the hidden row id has no visible column.
            let Some(column) = usize::try_from(*k - 1).ok().and_then(|i| names.get(i)) else {
                continue;
            };
            rows.push(vec![
                t(DEFAULT_DATABASE),
                t("public"),
                t(&c.name),
                t(DEFAULT_DATABASE),
                t("public"),
                t(&c.table.name),
                t(column),
                Value::Int(pos as i64 + 1),
                NULL,
            ]);
        }
    }
    rows
}

fn empty(_: &Snapshot) -> Vec<Vec<Value>> {
    Vec::new()
}

static RELATIONS: &[VTable] = &[
    VTable {
        schema: "pg_catalog",
        name: "pg_namespace",
        columns: &[("oid", O), ("nspname", T), ("nspowner", O), ("nspacl", T)],
        rows: |_| {
            vec![
                vec![o(PG_CATALOG_NAMESPACE), t("pg_catalog"), o(ROOT_ROLE), NULL],
                vec![
                    o(PUBLIC_NAMESPACE),
                    t("public"),
                    o(DATABASE_OWNER_ROLE),
                    NULL,
                ],
                vec![
                    o(INFORMATION_SCHEMA_NAMESPACE),
                    t("information_schema"),
                    o(ROOT_ROLE),
                    NULL,
                ],
            ]
        },
    },
    VTable {
        schema: "pg_catalog",
        name: "pg_database",
        columns: &[
            ("oid", O),
            ("datname", T),
            ("datdba", O),
            ("encoding", I4),
            ("datlocprovider", T),
            ("datistemplate", B),
            ("datallowconn", B),
            ("datconnlimit", I4),
            ("datcollate", T),
            ("datctype", T),
            ("daticulocale", T),
            ("datacl", T),
        ],
        rows: |_| {
            vec![vec![
                o(DATABASE_OID),
                t(DEFAULT_DATABASE),
                o(ROOT_ROLE),
                Value::Int(UTF8_ENCODING),
                t("c"),
                b(false),
                b(true),
                Value::Int(-1),
                t("C.UTF-8"),
                t("C.UTF-8"),
                NULL,
                NULL,
            ]]
        },
    },
    VTable {
        schema: "pg_catalog",
        name: "pg_roles",
        columns: ROLE_COLUMNS,
        rows: roles,
    },
    VTable {
        schema: "pg_catalog",
        name: "pg_authid",
        columns: ROLE_COLUMNS,
        rows: roles,
    },
    VTable {
        schema: "pg_catalog",
        name: "pg_user",
        columns: &[
            ("usename", T),
            ("usesysid", O),
            ("usecreatedb", B),
            ("usesuper", B),
            ("userepl", B),
            ("usebypassrls", B),
            ("passwd", T),
            ("valuntil", TSTZ),
            ("useconfig", T),
        ],
        rows: |_| {
            vec![vec![
                t("root"),
                o(ROOT_ROLE),
                b(true),
                b(true),
                b(true),
                b(true),
                t("********"),
                NULL,
                NULL,
            ]]
        },
    },
    VTable {
        schema: "pg_catalog",
        name: "pg_auth_members",
        columns: &[
            ("oid", O),
            ("roleid", O),
            ("member", O),
            ("grantor", O),
            ("admin_option", B),
        ],
        rows: empty,
    },
    VTable {
        schema: "pg_catalog",
        name: "pg_am",
        columns: &[("oid", O), ("amname", T), ("amhandler", T), ("amtype", T)],
        rows: |_| {
            vec![
                vec![o(HEAP_AM), t("heap"), t("heap_tableam_handler"), t("t")],
                vec![o(BTREE_AM), t("btree"), t("bthandler"), t("i")],
            ]
        },
    },
    VTable {
        schema: "pg_catalog",
        name: "pg_class",
        columns: &[
            ("oid", O),
            ("relname", T),
            ("relnamespace", O),
            ("reltype", O),
            ("reloftype", O),
            ("relowner", O),
            ("relam", O),
            ("relfilenode", O),
            ("reltablespace", O),
            ("relpages", I4),
            ("reltuples", F4),
            ("relallvisible", I4),
            ("reltoastrelid", O),
            ("relhasindex", B),
            ("relisshared", B),
            ("relpersistence", T),
            ("relkind", T),
            ("relnatts", I2),
            ("relchecks", I2),
            ("relhasrules", B),
            ("relhastriggers", B),
            ("relhassubclass", B),
            ("relrowsecurity", B),
            ("relforcerowsecurity", B),
            ("relispopulated", B),
            ("relreplident", T),
            ("relispartition", B),
            ("relrewrite", O),
            ("relfrozenxid", O),
            ("relminmxid", O),
            ("relacl", T),
            ("reloptions", T),
            ("relpartbound", T),
        ],
        rows: pg_class,
    },
    VTable {
        schema: "pg_catalog",
        name: "pg_index",
        columns: &[
            ("indexrelid", O),
            ("indrelid", O),
            ("indnatts", I2),
            ("indnkeyatts", I2),
            ("indisunique", B),
            ("indnullsnotdistinct", B),
            ("indisprimary", B),
            ("indisexclusion", B),
            ("indimmediate", B),
            ("indisclustered", B),
            ("indisvalid", B),
            ("indcheckxmin", B),
            ("indisready", B),
            ("indislive", B),
            ("indisreplident", B),
            ("indkey", T),
            ("indcollation", T),
            ("indclass", T),
            ("indoption", T),
            ("indexprs", T),
            ("indpred", T),
        ],
        rows: pg_index,
    },
    VTable {
        schema: "pg_catalog",
        name: "pg_attribute",
        columns: &[
            ("attrelid", O),
            ("attname", T),
            ("atttypid", O),
            ("attstattarget", I4),
            ("attlen", I2),
            ("attnum", I2),
            ("attndims", I4),
            ("attcacheoff", I4),
            ("atttypmod", I4),
            ("attbyval", B),
            ("attstorage", T),
            ("attalign", T),
            ("attnotnull", B),
            ("atthasdef", B),
            ("atthasmissing", B),
            ("attidentity", T),
            ("attgenerated", T),
            ("attisdropped", B),
            ("attislocal", B),
            ("attinhcount", I4),
            ("attcollation", O),
            ("attcompression", T),
            ("attacl", T),
            ("attoptions", T),
            ("attfdwoptions", T),
            ("attmissingval", T),
        ],
        rows: pg_attribute,
    },
    VTable {
        schema: "pg_catalog",
        name: "pg_attrdef",
        columns: &[("oid", O), ("adrelid", O), ("adnum", I2), ("adbin", T)],
        rows: pg_attrdef,
    },
    VTable {
        schema: "pg_catalog",
        name: "pg_constraint",
        columns: &[
            ("oid", O),
            ("conname", T),
            ("connamespace", O),
            ("contype", T),
            ("condeferrable", B),
            ("condeferred", B),
            ("convalidated", B),
            ("conrelid", O),
            ("contypid", O),
            ("conindid", O),
            ("conparentid", O),
            ("confrelid", O),
            ("confupdtype", T),
            ("confdeltype", T),
            ("confmatchtype", T),
            ("conislocal", B),
            ("coninhcount", I4),
            ("connoinherit", B),
            ("conkey", T),
            ("confkey", T),
            ("conbin", T),
        ],
        rows: pg_constraint,
    },
    VTable {
        schema: "pg_catalog",
        name: "pg_type",
        columns: &[
            ("oid", O),
            ("typname", T),
            ("typnamespace", O),
            ("typowner", O),
            ("typlen", I2),
            ("typbyval", B),
            ("typtype", T),
            ("typcategory", T),
            ("typispreferred", B),
            ("typisdefined", B),
            ("typdelim", T),
            ("typrelid", O),
            ("typelem", O),
            ("typarray", O),
            ("typinput", T),
            ("typoutput", T),
            ("typreceive", T),
            ("typsend", T),
            ("typbasetype", O),
            ("typtypmod", I4),
            ("typndims", I4),
            ("typcollation", O),
            ("typnotnull", B),
            ("typdefault", T),
        ],
        rows: pg_type,
    },
    VTable {
        schema: "pg_catalog",
        name: "pg_collation",
        columns: &[
            ("oid", O),
            ("collname", T),
            ("collnamespace", O),
            ("collowner", O),
            ("collprovider", T),
            ("collisdeterministic", B),
            ("collencoding", I4),
            ("collcollate", T),
            ("collctype", T),
        ],
        rows: |_| {
            [
                (DEFAULT_COLLATION, "default", "d"),
                (950, "C", "c"),
                (951, "POSIX", "c"),
            ]
            .iter()
            .map(|&(oid, name, provider)| {
                let locale = if provider == "d" { NULL } else { t(name) };
                vec![
                    o(oid),
                    t(name),
                    o(PG_CATALOG_NAMESPACE),
                    o(ROOT_ROLE),
                    t(provider),
                    b(true),
                    Value::Int(-1),
                    locale.clone(),
                    locale,
                ]
            })
            .collect()
        },
    },
    VTable {
        schema: "pg_catalog",
        name: "pg_description",
        columns: &[
            ("objoid", O),
            ("classoid", O),
            ("objsubid", I4),
            ("description", T),
        ],
        rows: empty,
    },
    VTable {
        schema: "pg_catalog",
        name: "pg_inherits",
        columns: &[
            ("inhrelid", O),
            ("inhparent", O),
            ("inhseqno", I4),
            ("inhdetachpending", B),
        ],
        rows: empty,
    },
    VTable {
        schema: "pg_catalog",
        name: "pg_partitioned_table",
        columns: &[
            ("partrelid", O),
            ("partstrat", T),
            ("partnatts", I2),
            ("partdefid", O),
            ("partattrs", T),
            ("partclass", T),
            ("partcollation", T),
            ("partexprs", T),
        ],
        rows: empty,
    },
    VTable {
        schema: "pg_catalog",
        name: "pg_policy",
        columns: &[
            ("oid", O),
            ("polname", T),
            ("polrelid", O),
            ("polcmd", T),
            ("polpermissive", B),
            ("polroles", T),
            ("polqual", T),
            ("polwithcheck", T),
        ],
        rows: empty,
    },
    VTable {
        schema: "pg_catalog",
        name: "pg_statistic_ext",
        columns: &[
            ("oid", O),
            ("stxrelid", O),
            ("stxname", T),
            ("stxnamespace", O),
            ("stxowner", O),
            ("stxstattarget", I4),
            ("stxkeys", T),
            ("stxkind", T),
        ],
        rows: empty,
    },
    VTable {
        schema: "pg_catalog",
        name: "pg_publication",
        columns: &[
            ("oid", O),
            ("pubname", T),
            ("pubowner", O),
            ("puballtables", B),
            ("pubinsert", B),
            ("pubupdate", B),
            ("pubdelete", B),
            ("pubtruncate", B),
            ("pubviaroot", B),
        ],
        rows: empty,
    },
    VTable {
        schema: "pg_catalog",
        name: "pg_publication_namespace",
        columns: &[("oid", O), ("pnpubid", O), ("pnnspid", O)],
        rows: empty,
    },
    VTable {
        schema: "pg_catalog",
        name: "pg_publication_rel",
        columns: &[
            ("oid", O),
            ("prpubid", O),
            ("prrelid", O),
            ("prqual", T),
            ("prattrs", T),
        ],
        rows: empty,
    },
    VTable {
        schema: "pg_catalog",
        name: "pg_trigger",
        columns: &[
            ("oid", O),
            ("tgrelid", O),
            ("tgname", T),
            ("tgenabled", T),
            ("tgisinternal", B),
        ],
        rows: empty,
    },
    VTable {
        schema: "pg_catalog",
        name: "pg_tables",
        columns: &[
            ("schemaname", T),
            ("tablename", T),
            ("tableowner", T),
            ("tablespace", T),
            ("hasindexes", B),
            ("hasrules", B),
            ("hastriggers", B),
            ("rowsecurity", B),
        ],
        rows: |snap| {
            snap.tables
                .iter()
                .map(|table| {
                    vec![
                        t("public"),
                        t(&table.name),
                        t("root"),
                        NULL,
                        b(!indexes(table).is_empty()),
                        b(false),
                        b(false),
                        b(false),
                    ]
                })
                .collect()
        },
    },
    VTable {
        schema: "pg_catalog",
        name: "pg_indexes",
        columns: &[
            ("schemaname", T),
            ("tablename", T),
            ("indexname", T),
            ("tablespace", T),
            ("indexdef", T),
        ],
        rows: tables_and_indexes,
    },
    VTable {
        schema: "pg_catalog",
        name: "pg_views",
        columns: &[
            ("schemaname", T),
            ("viewname", T),
            ("viewowner", T),
            ("definition", T),
        ],
        rows: empty,
    },
    VTable {
        schema: "information_schema",
        name: "schemata",
        columns: &[("catalog_name", T), ("schema_name", T), ("schema_owner", T)],
        rows: |_| {
            ["pg_catalog", "public", "information_schema"]
                .iter()
                .map(|s| vec![t(DEFAULT_DATABASE), t(s), t("root")])
                .collect()
        },
    },
    VTable {
        schema: "information_schema",
        name: "tables",
        columns: &[
            ("table_catalog", T),
            ("table_schema", T),
            ("table_name", T),
            ("table_type", T),
            ("is_insertable_into", T),
            ("is_typed", T),
        ],
        rows: |snap| {
            snap.tables
                .iter()
                .map(|table| {
                    vec![
                        t(DEFAULT_DATABASE),
                        t("public"),
                        t(&table.name),
                        t(if table.is_view() {
                            "VIEW"
                        } else {
                            "BASE TABLE"
                        }),
                        t(if table.is_view() { "NO" } else { "YES" }),
                        t("NO"),
                    ]
                })
                .collect()
        },
    },
    VTable {
        schema: "information_schema",
        name: "columns",
        columns: &[
            ("table_catalog", T),
            ("table_schema", T),
            ("table_name", T),
            ("column_name", T),
            ("ordinal_position", I4),
            ("column_default", T),
            ("is_nullable", T),
            ("data_type", T),
            ("character_maximum_length", I4),
            ("numeric_precision", I4),
            ("numeric_scale", I4),
            ("udt_catalog", T),
            ("udt_schema", T),
            ("udt_name", T),
            ("is_identity", T),
            ("is_generated", T),
            ("is_updatable", T),
        ],
        rows: info_columns,
    },
    VTable {
        schema: "information_schema",
        name: "table_constraints",
        columns: &[
            ("constraint_catalog", T),
            ("constraint_schema", T),
            ("constraint_name", T),
            ("table_catalog", T),
            ("table_schema", T),
            ("table_name", T),
            ("constraint_type", T),
            ("is_deferrable", T),
            ("initially_deferred", T),
            ("enforced", T),
        ],
        rows: info_table_constraints,
    },
    VTable {
        schema: "information_schema",
        name: "key_column_usage",
        columns: &[
            ("constraint_catalog", T),
            ("constraint_schema", T),
            ("constraint_name", T),
            ("table_catalog", T),
            ("table_schema", T),
            ("table_name", T),
            ("column_name", T),
            ("ordinal_position", I4),
            ("position_in_unique_constraint", I4),
        ],
        rows: info_key_column_usage,
    },
    VTable {
        schema: "information_schema",
        name: "views",
        columns: &[
            ("table_catalog", T),
            ("table_schema", T),
            ("table_name", T),
            ("view_definition", T),
        ],
        rows: empty,
    },
];

const ROLE_COLUMNS: &[(&str, DataType)] = &[
    ("oid", O),
    ("rolname", T),
    ("rolsuper", B),
    ("rolinherit", B),
    ("rolcreaterole", B),
    ("rolcreatedb", B),
    ("rolcanlogin", B),
    ("rolreplication", B),
    ("rolconnlimit", I4),
    ("rolpassword", T),
    ("rolvaliduntil", TSTZ),
    ("rolbypassrls", B),
    ("rolconfig", T),
];

fn roles(_: &Snapshot) -> Vec<Vec<Value>> {
    vec![vec![
        o(ROOT_ROLE),
        t("root"),
        b(true),
        b(true),
        b(true),
        b(true),
        b(true),
        b(true),
        Value::Int(-1),
        t("********"),
        NULL,
        b(true),
        NULL,
    ]]
}

/// What a catalog lookup returns for a key it does not know.
#[derive(Clone, Debug, PartialEq)]
pub enum Missing {
    Null,
    Value(Value),
    /// A text with `{}` replaced by the key.
    Format(&'static str),
    /// An undefined-object error naming the key.
    UndefinedTable,
}

/// A map from a key's text to a value, built from a snapshot when a
/// catalog function or a `reg*` cast is bound.
#[derive(Clone, Debug, PartialEq)]
pub struct Lookup {
    pub name: &'static str,
    pub map: Arc<HashMap<String, Value>>,
    pub missing: Missing,
}

impl Lookup {
    fn new(
        name: &'static str,
        entries: impl IntoIterator<Item = (String, Value)>,
        missing: Missing,
    ) -> Lookup {
        Lookup {
            name,
            map: Arc::new(entries.into_iter().collect()),
            missing,
        }
    }

    /// The value for `key` (NULL for NULL).
    pub fn get(&self, key: &Value) -> crate::Result<Value> {
        if key.is_null() {
            return Ok(Value::Null);
        }
        let k = key.to_text().unwrap_or_default();
        if let Some(v) = self.map.get(&k) {
            return Ok(v.clone());
        }
        Ok(match &self.missing {
            Missing::Null => Value::Null,
            Missing::Value(v) => v.clone(),
            Missing::Format(f) => Value::Text(f.replace("{}", &k)),
            Missing::UndefinedTable => return Err(crate::Error::UndefinedTable(k)),
        })
    }
}

/// Relation oids to names (`oid::regclass`).
pub fn regclass_out(snap: &Snapshot) -> Lookup {
    let mut entries = Vec::new();
    for table in &snap.tables {
        entries.push((table_oid(table).to_string(), t(&table.name)));
        for i in indexes(table) {
            entries.push((i.oid.to_string(), t(&i.name)));
        }
    }
    Lookup::new("regclass", entries, Missing::Format("{}"))
}

/// Relation names to oids (`'t'::regclass`).
pub fn regclass_in(snap: &Snapshot) -> Lookup {
    let mut entries = Vec::new();
    for table in &snap.tables {
        entries.push((table.name.clone(), o(table_oid(table))));
        entries.push((format!("public.{}", table.name), o(table_oid(table))));
        for i in indexes(table) {
            entries.push((i.name.clone(), o(i.oid)));
        }
    }
    Lookup::new("regclass", entries, Missing::UndefinedTable)
}

/// Namespace oids to names (`oid::regnamespace`).
pub fn regnamespace_out() -> Lookup {
    Lookup::new(
        "regnamespace",
        [
            (PG_CATALOG_NAMESPACE, "pg_catalog"),
            (PUBLIC_NAMESPACE, "public"),
            (INFORMATION_SCHEMA_NAMESPACE, "information_schema"),
        ]
        .map(|(k, v)| (k.to_string(), t(v))),
        Missing::Format("{}"),
    )
}

/// Type oids to names (`oid::regtype`).
pub fn regtype_out() -> Lookup {
    Lookup::new(
        "regtype",
        TYPES
            .iter()
            .map(|ty| (ty.0.to_string(), t(&format_type(ty.0, None)))),
        Missing::Format("{}"),
    )
}

/// `pg_get_userbyid(oid)`.
pub fn user_by_id() -> Lookup {
    Lookup::new(
        "pg_get_userbyid",
        [
            (ROOT_ROLE.to_string(), t("root")),
            (DATABASE_OWNER_ROLE.to_string(), t("pg_database_owner")),
        ],
        Missing::Format("unknown (OID={})"),
    )
}

/// `pg_encoding_to_char(int)`.
pub fn encoding_name() -> Lookup {
    Lookup::new(
        "pg_encoding_to_char",
        [(UTF8_ENCODING.to_string(), t("UTF8"))],
        Missing::Value(t("")),
    )
}

/// `pg_table_is_visible(oid)`: every relation is in `public`, which is on
/// the search path.
pub fn table_is_visible(snap: &Snapshot) -> Lookup {
    let mut entries = Vec::new();
    for table in &snap.tables {
        entries.push((table_oid(table).to_string(), b(true)));
        for i in indexes(table) {
            entries.push((i.oid.to_string(), b(true)));
        }
    }
    Lookup::new("pg_table_is_visible", entries, Missing::Value(b(false)))
}

/// `pg_get_indexdef(index oid)`.
pub fn index_defs(snap: &Snapshot) -> Lookup {
    let mut entries = Vec::new();
    for table in &snap.tables {
        for i in indexes(table) {
            entries.push((i.oid.to_string(), t(&index_def(table, &i))));
        }
    }
    Lookup::new("pg_get_indexdef", entries, Missing::Null)
}

/// `pg_get_constraintdef(constraint oid)`.
pub fn constraint_defs(snap: &Snapshot) -> Lookup {
    Lookup::new(
        "pg_get_constraintdef",
        constraints(snap)
            .into_iter()
            .map(|c| (c.oid.to_string(), t(&c.definition))),
        Missing::Null,
    )
}

/// Parses PostgreSQL's text form of a one-dimensional array (`{a,"b c",NULL}`).
/// `None` when the text is not an array.
pub fn parse_array(s: &str) -> Option<Vec<Option<String>>> {
    let inner = s.trim().strip_prefix('{')?.strip_suffix('}')?;
    let mut out = Vec::new();
    if inner.trim().is_empty() {
        return Some(out);
    }
    let mut chars = inner.chars().peekable();
    loop {
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        let mut item = String::new();
        let quoted = chars.peek() == Some(&'"');
        if quoted {
            chars.next();
            loop {
                match chars.next()? {
                    '\\' => item.push(chars.next()?),
                    '"' => break,
                    c => item.push(c),
                }
            }
            while chars.peek() == Some(&' ') {
                chars.next();
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                item.push(c);
                chars.next();
            }
            item = item.trim_end().to_string();
        }
        out.push((quoted || !item.eq_ignore_ascii_case("NULL")).then_some(item));
        match chars.next() {
            None => return Some(out),
            Some(',') => {}
            Some(_) => return None,
        }
    }
}

/// PostgreSQL's text form of a one-dimensional array.
pub fn format_array(items: &[Option<String>]) -> String {
    let parts: Vec<String> = items
        .iter()
        .map(|i| match i {
            None => "NULL".to_string(),
            Some(s) => {
                let needs_quotes = s.is_empty()
                    || s.eq_ignore_ascii_case("NULL")
                    || s.chars()
                        .any(|c| matches!(c, ',' | '{' | '}' | '"' | '\\' | ' ' | '\t' | '\n'));
                if needs_quotes {
                    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
                } else {
                    s.clone()
                }
            }
        })
        .collect();
    format!("{{{}}}", parts.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Snapshot {
        use crate::catalog::Column;
        let col = |id: u32, name: &str, ty: DataType, nullable: bool| Column {
            id,
            name: name.into(),
            ty,
            nullable,
            default: None,
            hidden: false,
        };
        let mut t1 = Table {
            id: 104,
            name: "accounts".into(),
            columns: vec![
                col(1, "aid", DataType::Int4, false),
                col(2, "filler", DataType::Char(Some(84)), true),
                col(3, "email", DataType::Text, true),
            ],
            pk: vec![0],
            primary_id: 1,
            indexes: vec![],
            next_index_id: 3,
            next_column_id: 4,
            checks: vec![("accounts_aid_check".into(), "aid > 0".into())],
            fillfactor: 100,
            version: 1,
            view: None,
        };
        t1.columns[2].default = Some("'x'".into());
        t1.indexes.push(Index {
            id: 2,
            name: "accounts_email_key".into(),
            columns: vec![2],
            descending: vec![false],
            unique: true,
        });
        Snapshot { tables: vec![t1] }
    }

    #[test]
    fn every_relation_has_rows_as_wide_as_its_columns() {
        let snap = sample();
        for v in RELATIONS {
            for row in v.rows(&snap) {
                assert_eq!(row.len(), v.columns.len(), "{}.{}", v.schema, v.name);
            }
        }
    }

    #[test]
    fn catalog_functions_print_what_postgresql_prints() {
        let snap = sample();
        let table = &snap.tables[0];
        let defs = index_defs(&snap);
        assert_eq!(
            defs.get(&o(index_oid(table, 1))).unwrap(),
            t("CREATE UNIQUE INDEX accounts_pkey ON public.accounts USING btree (aid)")
        );
        let cons = constraint_defs(&snap);
        assert_eq!(
            cons.get(&o(constraint_oid(table, 2))).unwrap(),
            t("UNIQUE (email)")
        );
        assert_eq!(
            cons.get(&o(constraint_oid(table, 500))).unwrap(),
            t("CHECK (aid > 0)")
        );
        assert_eq!(format_type(1042, Some(88)), "character(84)");
        assert_eq!(format_type(1114, Some(-1)), "timestamp without time zone");
        assert_eq!(default_expr("'x'", &DataType::Text), "'x'::text");
        assert_eq!(default_expr("7", &DataType::Int4), "7");
        assert_eq!(user_by_id().get(&o(42)).unwrap(), t("unknown (OID=42)"));
    }

    #[test]
    fn arrays_round_trip_through_their_text_form() {
        let items = vec![
            Some("a".to_string()),
            None,
            Some("b c".into()),
            Some("".into()),
        ];
        let s = format_array(&items);
        assert_eq!(s, r#"{a,NULL,"b c",""}"#);
        assert_eq!(parse_array(&s), Some(items));
        assert_eq!(parse_array("{}"), Some(vec![]));
        assert_eq!(
            parse_array("{1, 2}"),
            Some(vec![Some("1".into()), Some("2".into())])
        );
        assert_eq!(parse_array("nope"), None);
    }
}
