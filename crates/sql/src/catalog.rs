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

use concord_kv::Txn;
use concord_proto::catalog::{ColumnDescriptor, IndexDescriptor, TableDescriptor};
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
}

/// A table as the planner sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    pub id: u32,
    pub name: String,
    pub columns: Vec<Column>,
    /// Positions (in `columns`) of the primary key columns, in key order.
    pub pk: Vec<usize>,
    pub version: u64,
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
        Ok(Table {
            id: desc.id,
            name: desc.name.clone(),
            columns,
            pk,
            version: desc.version,
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
                })
                .collect(),
            primary_index: Some(IndexDescriptor {
                id: PRIMARY_INDEX_ID,
                name: format!("{}_pkey", self.name),
                unique: true,
                column_ids: self.pk.iter().map(|&i| self.columns[i].id).collect(),
            }),
            indexes: vec![],
            next_column_id: self.columns.iter().map(|c| c.id).max().unwrap_or(0) + 1,
            next_index_id: PRIMARY_INDEX_ID + 1,
            version: self.version,
        }
    }

    /// Position of a column by name.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// The key span of the primary index: `[start, end)`.
    pub fn span(&self) -> (Vec<u8>, Vec<u8>) {
        let start = index_prefix(self.id, PRIMARY_INDEX_ID);
        let end = prefix_end(&start);
        (start, end)
    }

    /// The primary key of a full row.
    pub fn row_key(&self, row: &[Value]) -> Result<Vec<u8>> {
        let vals: Vec<&Value> = self.pk.iter().map(|&i| &row[i]).collect();
        encoding::encode_index_key(self.id, PRIMARY_INDEX_ID, &vals)
    }

    /// The primary key from primary key values.
    pub fn key_from_pk_values(&self, pk: &[Value]) -> Result<Vec<u8>> {
        let mut k = index_prefix(self.id, PRIMARY_INDEX_ID);
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
        let prefix_len = index_prefix(self.id, PRIMARY_INDEX_ID).len();
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
