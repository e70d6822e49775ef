//! The catalog: table descriptors kept in system tables of the KV store.
//!
//! ```text
//! system table 1 (namespace):   (database id, name) → table id
//! system table 2 (descriptors): table id            → TableDescriptor (protobuf)
//! system table 3 (sequences):   name                → next value
//! ```
//!
//! The catalog is read and written inside the statement's transaction, so DDL
//! is transactional: a `CREATE TABLE` in a transaction that rolls back leaves
//! nothing behind, and a statement sees the schema as of its read timestamp.
//! Table ids are allocated from a sequence and never reused, so data of a
//! dropped table can never be read through a new table.
//!
//! # Not done yet
//! - Descriptor caching with leases (every statement reads its tables'
//!   descriptors from KV).
//! - Reclaiming the data of dropped tables (it becomes unreachable at once;
//!   the space is not freed yet).
//! - Databases and schemas other than `defaultdb` / `public`.

use std::collections::HashMap;

use concord_kv::Txn;
use concord_proto::catalog::{CheckConstraint, ColumnDescriptor, IndexDescriptor, TableDescriptor};
use prost::Message;

use crate::encoding::{self, decode_key_values, encode_key_value, index_prefix, prefix_end};
use crate::error::{Error, Result};
use crate::types::{DataType, Value};

/// The only database for now.
pub const DEFAULT_DATABASE_ID: u32 = 1;
/// Its name.
pub const DEFAULT_DATABASE: &str = "defaultdb";
const NAMESPACE_TABLE: u32 = 1;
const DESCRIPTOR_TABLE: u32 = 2;
const SEQUENCE_TABLE: u32 = 3;
/// The first id given to a user table.
pub const FIRST_USER_TABLE_ID: u64 = 100;
/// The id of every table's primary index.
pub const PRIMARY_INDEX_ID: u32 = 1;

/// A column as the planner sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Column {
    pub id: u32,
    pub name: String,
    pub ty: DataType,
    pub nullable: bool,
    pub default: Option<String>,
    /// Left out of `SELECT *` and of INSERT without a column list (the
    /// row id of a table created without a primary key).
    pub hidden: bool,
}

/// A secondary index.
///
/// ```text
/// key   = 0x88 ++ table ++ index id ++ indexed columns (DESC: bytes inverted)
///         ++ the primary key columns            (non-unique, or a NULL in them)
/// value = the primary key columns, encoded as in the row's key
/// ```
///
/// A unique index leaves the primary key out of the key when no indexed
/// column is NULL, so two rows with the same values collide on one key;
/// rows with a NULL never collide (NULLs are distinct, as in PostgreSQL).
#[derive(Clone, Debug, PartialEq)]
pub struct Index {
    pub id: u32,
    pub name: String,
    /// Positions (in the table's `columns`) of the indexed columns.
    pub columns: Vec<usize>,
    pub descending: Vec<bool>,
    pub unique: bool,
}

/// One row's entry in a secondary index.
pub struct IndexEntry {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// Whether no other row may have the same key.
    pub unique: bool,
}

/// A table as the planner sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    pub id: u32,
    pub name: String,
    pub columns: Vec<Column>,
    /// Positions (in `columns`) of the primary key columns, in key order.
    pub pk: Vec<usize>,
    /// The id of the primary index (1 until `ALTER TABLE … ADD PRIMARY
    /// KEY` replaces a hidden row id key with a new index).
    pub primary_id: u32,
    pub indexes: Vec<Index>,
    pub next_index_id: u32,
    /// Above every column id the table has had: ids are never reused, as a
    /// dropped column's values may still sit in stored rows.
    pub next_column_id: u32,
    /// CHECK constraints: (name, SQL text of the expression).
    pub checks: Vec<(String, String)>,
    /// `WITH (fillfactor = n)`, kept for display (storage is an LSM tree).
    pub fillfactor: u32,
    pub version: u64,
    /// A view: the SQL of its query, planned in place of a scan wherever
    /// the view is named. A view has no rows, keys or indexes.
    pub view: Option<String>,
}

impl Table {
    /// A table from its stored descriptor.
    pub fn from_descriptor(desc: &TableDescriptor) -> Result<Table> {
        let columns = desc
            .columns
            .iter()
            .map(|c| {
                Ok(Column {
                    id: c.id,
                    name: c.name.clone(),
                    ty: DataType::from_catalog(&c.type_name, c.type_width)?,
                    nullable: c.nullable,
                    default: (!c.default_expr.is_empty()).then(|| c.default_expr.clone()),
                    hidden: c.hidden,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let pk_ids = desc
            .primary_index
            .as_ref()
            .map(|i| i.column_ids.clone())
            .unwrap_or_default();
        let pk = pk_ids
            .iter()
            .map(|id| {
                columns.iter().position(|c| c.id == *id).ok_or_else(|| {
                    Error::Internal(format!(
                        "table {}: primary key column {id} missing",
                        desc.name
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let position = |id: &u32| {
            columns.iter().position(|c| c.id == *id).ok_or_else(|| {
                Error::Internal(format!("table {}: index column {id} missing", desc.name))
            })
        };
        let indexes = desc
            .indexes
            .iter()
            .map(|i| {
                Ok(Index {
                    id: i.id,
                    name: i.name.clone(),
                    columns: i.column_ids.iter().map(position).collect::<Result<_>>()?,
                    descending: (0..i.column_ids.len())
                        .map(|k| i.descending.get(k).copied().unwrap_or(false))
                        .collect(),
                    unique: i.unique,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Table {
            id: desc.id,
            name: desc.name.clone(),
            columns,
            pk,
            primary_id: desc
                .primary_index
                .as_ref()
                .map(|i| i.id)
                .unwrap_or(PRIMARY_INDEX_ID),
            indexes,
            next_index_id: desc.next_index_id.max(PRIMARY_INDEX_ID + 1),
            next_column_id: desc
                .next_column_id
                .max(desc.columns.iter().map(|c| c.id + 1).max().unwrap_or(1)),
            checks: desc
                .checks
                .iter()
                .map(|c| (c.name.clone(), c.expr.clone()))
                .collect(),
            fillfactor: desc.fillfactor,
            version: desc.version,
            view: (!desc.view_query.is_empty()).then(|| desc.view_query.clone()),
        })
    }

    /// The descriptor to store.
    pub fn to_descriptor(&self) -> TableDescriptor {
        TableDescriptor {
            id: self.id,
            name: self.name.clone(),
            database_id: DEFAULT_DATABASE_ID,
            columns: self
                .columns
                .iter()
                .map(|c| ColumnDescriptor {
                    id: c.id,
                    name: c.name.clone(),
                    type_name: c.ty.catalog_name().into(),
                    type_width: c.ty.catalog_width(),
                    nullable: c.nullable,
                    default_expr: c.default.clone().unwrap_or_default(),
                    hidden: c.hidden,
                })
                .collect(),
            primary_index: Some(IndexDescriptor {
                id: self.primary_id,
                name: format!("{}_pkey", self.name),
                unique: true,
                column_ids: self.pk.iter().map(|&i| self.columns[i].id).collect(),
                descending: vec![],
            }),
            indexes: self
                .indexes
                .iter()
                .map(|i| IndexDescriptor {
                    id: i.id,
                    name: i.name.clone(),
                    unique: i.unique,
                    column_ids: i.columns.iter().map(|&c| self.columns[c].id).collect(),
                    descending: i.descending.clone(),
                })
                .collect(),
            next_column_id: self.next_column_id,
            next_index_id: self.next_index_id,
            version: self.version,
            checks: self
                .checks
                .iter()
                .map(|(name, expr)| CheckConstraint {
                    name: name.clone(),
                    expr: expr.clone(),
                })
                .collect(),
            fillfactor: self.fillfactor,
            view_query: self.view.clone().unwrap_or_default(),
        }
    }

    /// Whether this is a view.
    pub fn is_view(&self) -> bool {
        self.view.is_some()
    }

    /// Fails unless this is a table, not a view, with PostgreSQL's
    /// "… is not a table" (42809).
    pub fn must_be_table(&self) -> Result<()> {
        if self.is_view() {
            return Err(Error::WrongObjectType(format!(
                "\"{}\" is not a table",
                self.name
            )));
        }
        Ok(())
    }

    /// Removes the column at position `i`, renumbering the positions the
    /// primary key and the indexes hold (the caller deals with those that
    /// held `i` itself).
    pub fn remove_column(&mut self, i: usize) {
        self.columns.remove(i);
        let shift = |c: usize| if c > i { c - 1 } else { c };
        self.pk = self
            .pk
            .iter()
            .filter(|&&c| c != i)
            .map(|&c| shift(c))
            .collect();
        for idx in &mut self.indexes {
            idx.columns = idx.columns.iter().map(|&c| shift(c)).collect();
        }
    }

    /// Position of a column by name.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// The key span of the primary index: `[start, end)`.
    pub fn span(&self) -> (Vec<u8>, Vec<u8>) {
        let start = index_prefix(self.id, self.primary_id);
        let end = prefix_end(&start);
        (start, end)
    }

    /// The primary key of a full row.
    pub fn row_key(&self, row: &[Value]) -> Result<Vec<u8>> {
        let vals: Vec<&Value> = self.pk.iter().map(|&i| &row[i]).collect();
        encoding::encode_index_key(self.id, self.primary_id, &vals)
    }

    /// The primary key from primary key values.
    pub fn key_from_pk_values(&self, pk: &[Value]) -> Result<Vec<u8>> {
        let mut k = index_prefix(self.id, self.primary_id);
        for v in pk {
            encode_key_value(&mut k, v)?;
        }
        Ok(k)
    }

    /// The stored value of a full row: its non-key columns.
    pub fn row_value(&self, row: &[Value]) -> Vec<u8> {
        encoding::encode_row_value(
            self.columns
                .iter()
                .enumerate()
                .filter(|(i, _)| !self.pk.contains(i))
                .map(|(i, c)| (c.id, &row[i])),
        )
    }

    /// A full row from its stored key and value.
    pub fn decode_row(&self, key: &[u8], value: &[u8]) -> Result<Vec<Value>> {
        let prefix_len = index_prefix(self.id, self.primary_id).len();
        if key.len() < prefix_len {
            return Err(Error::Internal(
                "row key shorter than its table prefix".into(),
            ));
        }
        let pk_types: Vec<DataType> = self
            .pk
            .iter()
            .map(|&i| self.columns[i].ty.clone())
            .collect();
        let pk_vals = decode_key_values(&key[prefix_len..], &pk_types)?;
        let mut row = vec![Value::Null; self.columns.len()];
        for (&i, v) in self.pk.iter().zip(pk_vals) {
            row[i] = v;
        }
        for (id, v) in encoding::decode_row_value(value)? {
            if let Some(i) = self.columns.iter().position(|c| c.id == id) {
                row[i] = v;
            }
        }
        Ok(row)
    }

    /// The encoded primary key columns of a row (its key without the
    /// index prefix): the value of its secondary index entries.
    fn pk_suffix(&self, row: &[Value]) -> Result<Vec<u8>> {
        let mut k = Vec::new();
        for &i in &self.pk {
            encode_key_value(&mut k, &row[i])?;
        }
        Ok(k)
    }

    /// The entry of a row in a secondary index: its key and value, and
    /// whether the key must be unique (a unique index, no NULL).
    pub fn index_entry(&self, index: &Index, row: &[Value]) -> Result<IndexEntry> {
        let mut key = index_prefix(self.id, index.id);
        let mut has_null = false;
        for (&c, &desc) in index.columns.iter().zip(&index.descending) {
            let start = key.len();
            encode_key_value(&mut key, &row[c])?;
            has_null |= row[c].is_null();
            if desc {
                for b in &mut key[start..] {
                    *b = !*b;
                }
            }
        }
        let pk = self.pk_suffix(row)?;
        let unique = index.unique && !has_null;
        if !unique {
            key.extend_from_slice(&pk);
        }
        Ok(IndexEntry {
            key,
            value: pk,
            unique,
        })
    }

    /// The primary key of a row from the value of one of its index entries.
    pub fn key_from_index_value(&self, value: &[u8]) -> Vec<u8> {
        let mut k = index_prefix(self.id, self.primary_id);
        k.extend_from_slice(value);
        k
    }

    /// The key span of a secondary index.
    pub fn index_span(&self, index_id: u32) -> (Vec<u8>, Vec<u8>) {
        let start = index_prefix(self.id, index_id);
        let end = prefix_end(&start);
        (start, end)
    }

    /// "Key (a, b)=(1, 2) already exists." for a unique index.
    pub fn describe_index_key(&self, index: &Index, row: &[Value]) -> String {
        let names: Vec<&str> = index
            .columns
            .iter()
            .map(|&i| self.columns[i].name.as_str())
            .collect();
        let vals: Vec<String> = index.columns.iter().map(|&i| row[i].to_string()).collect();
        format!(
            "Key ({})=({}) already exists.",
            names.join(", "),
            vals.join(", ")
        )
    }

    /// An index of the table by name.
    pub fn index(&self, name: &str) -> Option<&Index> {
        self.indexes.iter().find(|i| i.name == name)
    }

    /// The values of a row's primary key, for messages.
    pub fn describe_pk(&self, row: &[Value]) -> String {
        let names: Vec<&str> = self
            .pk
            .iter()
            .map(|&i| self.columns[i].name.as_str())
            .collect();
        let vals: Vec<String> = self.pk.iter().map(|&i| row[i].to_string()).collect();
        format!(
            "Key ({})=({}) already exists.",
            names.join(", "),
            vals.join(", ")
        )
    }
}

fn namespace_key(name: &str) -> Result<Vec<u8>> {
    let mut k = index_prefix(NAMESPACE_TABLE, PRIMARY_INDEX_ID);
    encode_key_value(&mut k, &Value::Int(i64::from(DEFAULT_DATABASE_ID)))?;
    encode_key_value(&mut k, &Value::Text(name.to_string()))?;
    Ok(k)
}

fn descriptor_key(id: u32) -> Result<Vec<u8>> {
    let mut k = index_prefix(DESCRIPTOR_TABLE, PRIMARY_INDEX_ID);
    encode_key_value(&mut k, &Value::Int(i64::from(id)))?;
    Ok(k)
}

fn sequence_key(name: &str) -> Result<Vec<u8>> {
    let mut k = index_prefix(SEQUENCE_TABLE, PRIMARY_INDEX_ID);
    encode_key_value(&mut k, &Value::Text(name.to_string()))?;
    Ok(k)
}

fn decode_descriptor(raw: &[u8]) -> Result<TableDescriptor> {
    TableDescriptor::decode(raw)
        .map_err(|e| Error::Internal(format!("corrupt table descriptor: {e}")))
}

/// Looks a table up by name.
pub async fn get_table(txn: &mut Txn, name: &str) -> Result<Option<Table>> {
    let Some(id) = txn.get(&namespace_key(name)?).await? else {
        return Ok(None);
    };
    let id = u32::from_be_bytes(
        id.as_slice()
            .try_into()
            .map_err(|_| Error::Internal(format!("corrupt namespace entry for {name}")))?,
    );
    let raw = txn
        .get(&descriptor_key(id)?)
        .await?
        .ok_or_else(|| Error::Internal(format!("table {name} has a name but no descriptor")))?;
    Ok(Some(Table::from_descriptor(&decode_descriptor(&raw)?)?))
}

/// Descriptors this process has read, per node (a node's `DistSender`):
/// name → (id, table, the timestamp they were read at).
///
/// A statement that finds every table it names here, read no more than
/// [`CACHE_MAX_AGE`] before its transaction's read timestamp, plans with
/// them without reading the catalog: the transaction *assumes* it read the
/// name and descriptor keys ([`Txn::assume_read`]), and before it commits
/// one refresh checks that nobody wrote them since the cache read them.
/// A schema change in between therefore fails the transaction with 40001
/// (and empties the cache, [`forget_cached_descriptors`]), exactly as if it
/// had read the old descriptor itself: serializability is kept, and a
/// pgbench transaction reads the catalog once instead of once per
/// statement. A transaction that wrote the catalog (DDL) never uses or
/// fills the cache.
static CACHE: std::sync::LazyLock<std::sync::Mutex<HashMap<usize, NodeCache>>> =
    std::sync::LazyLock::new(Default::default);

/// How stale a cached descriptor may be and still be used (a bound on the
/// window in which a schema change makes other nodes' transactions retry).
const CACHE_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(2);

struct NodeCache {
    /// The node the entries belong to. The cache is keyed by the sender's
    /// address; this weak reference keeps that allocation alive, so no
    /// other sender (another cluster's, in a test process) can ever be
    /// given the same address and find these entries.
    _owner: std::sync::Weak<concord_kv::DistSender>,
    tables: HashMap<String, (u32, Table, concord_hlc::Timestamp)>,
}

/// Empties the descriptor cache of every node in this process (after a
/// transaction found a cached descriptor changed).
pub fn forget_cached_descriptors() {
    CACHE.lock().unwrap_or_else(|p| p.into_inner()).clear();
}

/// Whether the transaction wrote the catalog (names or descriptors).
fn wrote_catalog(txn: &Txn) -> bool {
    txn.wrote_in(
        &index_prefix(NAMESPACE_TABLE, 0),
        &index_prefix(DESCRIPTOR_TABLE + 1, 0),
    )
}

/// The cached tables for `names`, if every one is cached and fresh enough
/// for this transaction; the transaction then assumes their keys read.
fn cached_tables(txn: &mut Txn, names: &[String]) -> Result<Option<Vec<Option<Table>>>> {
    // A historical read never commits, so it could not validate.
    if wrote_catalog(txn) || txn.is_historical() {
        return Ok(None);
    }
    let read_ts = txn.read_ts();
    let oldest = read_ts.wall.saturating_sub(CACHE_MAX_AGE.as_nanos() as u64);
    let found: Vec<(u32, Table, concord_hlc::Timestamp)> = {
        let cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
        let key = std::sync::Arc::as_ptr(txn.sender()) as usize;
        let Some(node) = cache.get(&key) else {
            return Ok(None);
        };
        let mut found = Vec::with_capacity(names.len());
        for name in names {
            match node.tables.get(name) {
                Some((id, t, since)) if *since <= read_ts && since.wall >= oldest => {
                    found.push((*id, t.clone(), *since))
                }
                _ => return Ok(None),
            }
        }
        found
    };
    let mut out = Vec::with_capacity(names.len());
    for (name, (id, table, since)) in names.iter().zip(found) {
        txn.assume_read(&namespace_key(name)?, since);
        txn.assume_read(&descriptor_key(id)?, since);
        out.push(Some(table));
    }
    Ok(Some(out))
}

/// Remembers tables the transaction read (unless it wrote the catalog).
fn cache_tables(txn: &Txn, found: &[(String, u32, Table)]) {
    if found.is_empty() || wrote_catalog(txn) {
        return;
    }
    let sender = txn.sender();
    let key = std::sync::Arc::as_ptr(sender) as usize;
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    let node = cache.entry(key).or_insert_with(|| NodeCache {
        _owner: std::sync::Arc::downgrade(sender),
        tables: HashMap::new(),
    });
    // Checked later from just below the read timestamp: the reading
    // transaction itself may go on to write the catalog *at* its read
    // timestamp (a DDL reads the descriptor first), and a refresh looks
    // for writes above its starting point only.
    let since = txn.read_ts().prev();
    for (name, id, table) in found {
        node.tables
            .insert(name.clone(), (*id, table.clone(), since));
    }
}

/// Looks several tables up by name: from the descriptor cache when it
/// holds them all (see [`CACHE`]), else in two batched reads (names, then
/// descriptors).
pub async fn get_tables(txn: &mut Txn, names: &[String]) -> Result<Vec<Option<Table>>> {
    if names.is_empty() {
        return Ok(vec![]);
    }
    if let Some(found) = cached_tables(txn, names)? {
        return Ok(found);
    }
    let keys = names
        .iter()
        .map(|n| namespace_key(n))
        .collect::<Result<Vec<_>>>()?;
    let ids = txn.get_many(&keys).await?;
    let mut desc_keys = Vec::new();
    let mut parsed = Vec::with_capacity(names.len());
    for (name, id) in names.iter().zip(&ids) {
        let id = match id {
            Some(raw) => Some(u32::from_be_bytes(raw.as_slice().try_into().map_err(
                |_| Error::Internal(format!("corrupt namespace entry for {name}")),
            )?)),
            None => None,
        };
        if let Some(id) = id {
            desc_keys.push(descriptor_key(id)?);
        }
        parsed.push(id);
    }
    let mut descs = txn.get_many(&desc_keys).await?.into_iter();
    let mut out = Vec::with_capacity(names.len());
    let mut learned = Vec::new();
    for (name, id) in names.iter().zip(parsed) {
        let Some(id) = id else {
            out.push(None);
            continue;
        };
        let raw = descs
            .next()
            .flatten()
            .ok_or_else(|| Error::Internal(format!("table {name} has a name but no descriptor")))?;
        let table = Table::from_descriptor(&decode_descriptor(&raw)?)?;
        learned.push((name.clone(), id, table.clone()));
        out.push(Some(table));
    }
    cache_tables(txn, &learned);
    Ok(out)
}

/// Looks a table up by name; an error if it does not exist.
pub async fn must_get_table(txn: &mut Txn, name: &str) -> Result<Table> {
    get_table(txn, name)
        .await?
        .ok_or_else(|| Error::UndefinedTable(name.to_string()))
}

/// Allocates the next value of a named sequence.
async fn next_sequence_value(txn: &mut Txn, name: &str, first: u64) -> Result<u64> {
    Ok(concord_kv::admin::increment(txn, &sequence_key(name)?, first).await?)
}

/// Creates a table; `table.id` is assigned here. Returns the stored table.
pub async fn create_table(txn: &mut Txn, mut table: Table) -> Result<Table> {
    let ns_key = namespace_key(&table.name)?;
    if txn.get(&ns_key).await?.is_some() {
        return Err(Error::DuplicateTable(table.name));
    }
    for idx in &table.indexes {
        if relation_exists(txn, &idx.name).await? {
            return Err(Error::DuplicateTable(idx.name.clone()));
        }
    }
    let id = next_sequence_value(txn, "descriptor_id", FIRST_USER_TABLE_ID).await?;
    table.id = u32::try_from(id).map_err(|_| Error::Internal("table ids exhausted".into()))?;
    table.version = 1;
    txn.put(ns_key, table.id.to_be_bytes().to_vec())?;
    txn.put(
        descriptor_key(table.id)?,
        table.to_descriptor().encode_to_vec(),
    )?;
    Ok(table)
}

/// Drops a table: its name and descriptor go; its rows become unreachable.
pub async fn drop_table(txn: &mut Txn, table: &Table) -> Result<()> {
    txn.delete(namespace_key(&table.name)?)?;
    txn.delete(descriptor_key(table.id)?)?;
    Ok(())
}

/// Stores a changed descriptor (a new version of it).
pub fn update_table(txn: &mut Txn, table: &mut Table) -> Result<()> {
    table.version += 1;
    txn.put(
        descriptor_key(table.id)?,
        table.to_descriptor().encode_to_vec(),
    )?;
    Ok(())
}

/// Whether a relation (a table or an index) of this name exists.
pub async fn relation_exists(txn: &mut Txn, name: &str) -> Result<bool> {
    if txn.get(&namespace_key(name)?).await?.is_some() {
        return Ok(true);
    }
    Ok(list_tables(txn)
        .await?
        .iter()
        .any(|t| t.index(name).is_some()))
}

/// The table that has an index of this name.
pub async fn table_of_index(txn: &mut Txn, name: &str) -> Result<Option<Table>> {
    Ok(list_tables(txn)
        .await?
        .into_iter()
        .find(|t| t.index(name).is_some()))
}

/// Every table, by name.
pub async fn list_tables(txn: &mut Txn) -> Result<Vec<Table>> {
    let start = index_prefix(DESCRIPTOR_TABLE, PRIMARY_INDEX_ID);
    let end = prefix_end(&start);
    let mut tables = Vec::new();
    for (_, raw) in txn.scan(&start, &end, 0).await? {
        tables.push(Table::from_descriptor(&decode_descriptor(&raw)?)?);
    }
    tables.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(tables)
}
