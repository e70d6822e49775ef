//! The executor: runs plans inside a KV transaction.
//!
//! Nodes are evaluated bottom-up and each produces its rows as a vector
//! (materialized). Scans turn [`ScanSpans`] into KV gets (point lookups,
//! batched into one request per range) or KV range scans, and decode rows
//! with the table's encoding. DML nodes buffer their writes in the
//! transaction; they reach the cluster when the transaction commits.
//!
//! # Not done yet
//! - Streaming execution: a query's intermediate results are held in memory,
//!   so very large results cost memory proportional to their size.
//! - Distributed execution (filters and partial aggregates on the ranges).

use std::collections::{HashMap, HashSet};
use std::ops::Bound;

use concord_kv::Txn;

use crate::catalog::Table;
use crate::encoding::{encode_key_value, prefix_end};
use crate::error::{Error, Result};
use crate::expr::{binary_values, BinOp, Expr};
use crate::plan::{AggCall, AggFunc, Node, Plan, Returning, ScanSpans, SortKey};
use crate::types::Value;

/// A row.
pub type Row = Vec<Value>;

/// What a DML statement did.
pub struct DmlResult {
    pub count: u64,
    pub returning: Option<Vec<Row>>,
}

/// Runs a query node.
pub async fn execute_node(node: &Node, txn: &mut Txn) -> Result<Vec<Row>> {
    Ok(match node {
        Node::Scan {
            table,
            spans,
            limit,
        } => scan(table, spans, *limit, txn).await?,
        Node::Values { rows } => rows
            .iter()
            .map(|r| r.iter().map(|e| e.eval(&[])).collect::<Result<Row>>())
            .collect::<Result<Vec<_>>>()?,
        Node::Filter { input, predicate } => {
            let rows = Box::pin(execute_node(input, txn)).await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                if predicate.eval(&r)?.is_true() {
                    out.push(r);
                }
            }
            out
        }
        Node::Project { input, exprs } => {
            let rows = Box::pin(execute_node(input, txn)).await?;
            rows.iter()
                .map(|r| exprs.iter().map(|e| e.eval(r)).collect::<Result<Row>>())
                .collect::<Result<Vec<_>>>()?
        }
        Node::Aggregate {
            input,
            group_by,
            aggs,
        } => {
            let rows = Box::pin(execute_node(input, txn)).await?;
            aggregate(rows, group_by, aggs)?
        }
        Node::Distinct { input } => {
            let rows = Box::pin(execute_node(input, txn)).await?;
            let mut seen = HashSet::new();
            rows.into_iter()
                .filter(|r| seen.insert(r.clone()))
                .collect()
        }
        Node::Sort { input, keys } => {
            let mut rows = Box::pin(execute_node(input, txn)).await?;
            sort_rows(&mut rows, keys);
            rows
        }
        Node::Limit {
            input,
            limit,
            offset,
        } => {
            let rows = Box::pin(execute_node(input, txn)).await?;
            let it = rows
                .into_iter()
                .skip(usize::try_from(*offset).unwrap_or(usize::MAX));
            match limit {
                Some(l) => it.take(usize::try_from(*l).unwrap_or(usize::MAX)).collect(),
                None => it.collect(),
            }
        }
        Node::Trim { input, width } => {
            let mut rows = Box::pin(execute_node(input, txn)).await?;
            for r in &mut rows {
                r.truncate(*width);
            }
            rows
        }
    })
}

/// Sorts rows by output-column keys.
pub fn sort_rows(rows: &mut [Row], keys: &[SortKey]) {
    rows.sort_by(|a, b| {
        for k in keys {
            let (x, y) = (&a[k.column], &b[k.column]);
            let ord = match (x.is_null(), y.is_null()) {
                (true, true) => std::cmp::Ordering::Equal,
                (true, false) => {
                    if k.nulls_first {
                        std::cmp::Ordering::Less
                    } else {
                        std::cmp::Ordering::Greater
                    }
                }
                (false, true) => {
                    if k.nulls_first {
                        std::cmp::Ordering::Greater
                    } else {
                        std::cmp::Ordering::Less
                    }
                }
                (false, false) => {
                    let o = x.sort_cmp(y);
                    if k.desc {
                        o.reverse()
                    } else {
                        o
                    }
                }
            };
            if ord != std::cmp::Ordering::Equal {
                return ord;
            }
        }
        std::cmp::Ordering::Equal
    });
}

/// The KV key range of a range scan.
fn range_keys(
    table: &Table,
    prefix: &[Value],
    lower: &Bound<Value>,
    upper: &Bound<Value>,
) -> Result<(Vec<u8>, Vec<u8>)> {
    let base = table.key_from_pk_values(prefix)?;
    let with = |v: &Value| -> Result<Vec<u8>> {
        let mut k = base.clone();
        encode_key_value(&mut k, v)?;
        Ok(k)
    };
    let start = match lower {
        Bound::Unbounded => base.clone(),
        Bound::Included(v) => with(v)?,
        Bound::Excluded(v) => prefix_end(&with(v)?),
    };
    let end = match upper {
        Bound::Unbounded => prefix_end(&base),
        Bound::Included(v) => prefix_end(&with(v)?),
        Bound::Excluded(v) => with(v)?,
    };
    Ok((start, end))
}

async fn scan(
    table: &Table,
    spans: &ScanSpans,
    limit: Option<usize>,
    txn: &mut Txn,
) -> Result<Vec<Row>> {
    let limit = limit.unwrap_or(0);
    match spans {
        ScanSpans::Points(points) => {
            let keys = points
                .iter()
                .map(|p| table.key_from_pk_values(p))
                .collect::<Result<Vec<_>>>()?;
            let values = txn.get_many(&keys).await?;
            let mut rows = Vec::new();
            for (k, v) in keys.iter().zip(values) {
                if let Some(v) = v {
                    rows.push(table.decode_row(k, &v)?);
                }
            }
            Ok(rows)
        }
        ScanSpans::Full => {
            let (start, end) = table.span();
            decode_all(table, txn.scan(&start, &end, limit).await?)
        }
        ScanSpans::Range {
            prefix,
            lower,
            upper,
        } => {
            let (start, end) = range_keys(table, prefix, lower, upper)?;
            if start >= end && !end.is_empty() {
                return Ok(vec![]);
            }
            decode_all(table, txn.scan(&start, &end, limit).await?)
        }
    }
}

fn decode_all(table: &Table, kvs: Vec<(Vec<u8>, Vec<u8>)>) -> Result<Vec<Row>> {
    kvs.iter().map(|(k, v)| table.decode_row(k, v)).collect()
}

#[derive(Clone)]
enum AggState {
    Count(i64),
    Sum(Option<Value>),
    MinMax(Option<Value>),
    Avg(f64, i64),
}

fn new_state(a: &AggCall) -> AggState {
    match a.func {
        AggFunc::CountStar | AggFunc::Count => AggState::Count(0),
        AggFunc::Sum => AggState::Sum(None),
        AggFunc::Min | AggFunc::Max => AggState::MinMax(None),
        AggFunc::Avg => AggState::Avg(0.0, 0),
    }
}

fn update_state(state: &mut AggState, a: &AggCall, v: Value) -> Result<()> {
    if a.func != AggFunc::CountStar && v.is_null() {
        return Ok(());
    }
    match state {
        AggState::Count(n) => *n += 1,
        AggState::Sum(s) => {
            *s = Some(match s.take() {
                None => match v {
                    Value::Int(_) | Value::Float(_) => v,
                    other => {
                        return Err(Error::UndefinedFunction(format!(
                            "sum({})",
                            other.type_name()
                        )))
                    }
                },
                Some(acc) => binary_values(BinOp::Add, acc, v)?,
            })
        }
        AggState::MinMax(m) => {
            let replace = match m {
                None => true,
                Some(cur) => {
                    let ord = v.sort_cmp(cur);
                    if a.func == AggFunc::Min {
                        ord == std::cmp::Ordering::Less
                    } else {
                        ord == std::cmp::Ordering::Greater
                    }
                }
            };
            if replace {
                *m = Some(v);
            }
        }
        AggState::Avg(sum, n) => {
            match v {
                Value::Int(i) => *sum += i as f64,
                Value::Float(f) => *sum += f,
                other => {
                    return Err(Error::UndefinedFunction(format!(
                        "avg({})",
                        other.type_name()
                    )))
                }
            }
            *n += 1;
        }
    }
    Ok(())
}

fn finish_state(state: AggState, a: &AggCall) -> Value {
    match state {
        AggState::Count(n) => Value::Int(n),
        AggState::Sum(s) => match s {
            Some(Value::Int(i)) if a.arg_type.is_float() => Value::Float(i as f64),
            Some(v) => v,
            None => Value::Null,
        },
        AggState::MinMax(m) => m.unwrap_or(Value::Null),
        AggState::Avg(_, 0) => Value::Null,
        AggState::Avg(sum, n) => Value::Float(sum / n as f64),
    }
}

fn aggregate(rows: Vec<Row>, group_by: &[Expr], aggs: &[AggCall]) -> Result<Vec<Row>> {
    // Groups in first-seen order; DISTINCT aggregates keep the values seen.
    let mut index: HashMap<Row, usize> = HashMap::new();
    let mut groups: Vec<(Row, Vec<AggState>, Vec<HashSet<Value>>)> = Vec::new();
    for r in &rows {
        let key = group_by
            .iter()
            .map(|e| e.eval(r))
            .collect::<Result<Row>>()?;
        let gi = match index.get(&key) {
            Some(&i) => i,
            None => {
                groups.push((
                    key.clone(),
                    aggs.iter().map(new_state).collect(),
                    vec![HashSet::new(); aggs.len()],
                ));
                index.insert(key, groups.len() - 1);
                groups.len() - 1
            }
        };
        let (_, states, seen) = &mut groups[gi];
        for (j, a) in aggs.iter().enumerate() {
            let v = match &a.arg {
                Some(e) => e.eval(r)?,
                None => Value::Bool(true),
            };
            if a.distinct && !v.is_null() && !seen[j].insert(v.clone()) {
                continue;
            }
            update_state(&mut states[j], a, v)?;
        }
    }
    // Aggregates without GROUP BY produce one row even over no input.
    if groups.is_empty() && group_by.is_empty() {
        groups.push((vec![], aggs.iter().map(new_state).collect(), vec![]));
    }
    Ok(groups
        .into_iter()
        .map(|(mut key, states, _)| {
            key.extend(
                states
                    .into_iter()
                    .zip(aggs)
                    .map(|(s, a)| finish_state(s, a)),
            );
            key
        })
        .collect())
}

/// Converts, defaults and checks a row about to be stored.
fn prepare_row(table: &Table, mut row: Row) -> Result<Row> {
    for (i, c) in table.columns.iter().enumerate() {
        row[i] = row[i].assign(&c.ty)?;
        if row[i].is_null() && !c.nullable {
            return Err(Error::NotNullViolation {
                table: table.name.clone(),
                column: c.name.clone(),
            });
        }
    }
    Ok(row)
}

fn returning_rows(ret: &Option<Returning>, rows: &[Row]) -> Result<Option<Vec<Row>>> {
    let Some(ret) = ret else { return Ok(None) };
    rows.iter()
        .map(|r| ret.exprs.iter().map(|e| e.eval(r)).collect::<Result<Row>>())
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// Runs an INSERT, UPDATE or DELETE plan.
pub async fn execute_dml(plan: &Plan, txn: &mut Txn) -> Result<DmlResult> {
    match plan {
        Plan::Insert {
            table,
            columns,
            defaults,
            source,
            on_conflict_do_nothing,
            returning,
        } => {
            let source_rows = execute_node(source, txn).await?;
            let mut rows = Vec::with_capacity(source_rows.len());
            for src in source_rows {
                let mut row: Row = defaults
                    .iter()
                    .map(|d| {
                        d.as_ref()
                            .map(|e| e.eval(&[]))
                            .transpose()
                            .map(|v| v.unwrap_or(Value::Null))
                    })
                    .collect::<Result<_>>()?;
                for (v, &col) in src.into_iter().zip(columns) {
                    row[col] = v;
                }
                rows.push(prepare_row(table, row)?);
            }
            let keys = rows
                .iter()
                .map(|r| table.row_key(r))
                .collect::<Result<Vec<_>>>()?;
            let existing = txn.get_many(&keys).await?;
            let mut written = HashSet::new();
            let mut inserted = Vec::new();
            for ((row, key), old) in rows.into_iter().zip(keys).zip(existing) {
                if old.is_some() || !written.insert(key.clone()) {
                    if *on_conflict_do_nothing {
                        continue;
                    }
                    return Err(Error::UniqueViolation {
                        constraint: format!("{}_pkey", table.name),
                        detail: table.describe_pk(&row),
                    });
                }
                txn.put(key, table.row_value(&row))?;
                inserted.push(row);
            }
            Ok(DmlResult {
                count: inserted.len() as u64,
                returning: returning_rows(returning, &inserted)?,
            })
        }
        Plan::Update {
            table,
            source,
            assignments,
            returning,
        } => {
            let old_rows = execute_node(source, txn).await?;
            let mut new_rows = Vec::with_capacity(old_rows.len());
            for old in &old_rows {
                let mut new = old.clone();
                for (col, e) in assignments {
                    new[*col] = e.eval(old)?;
                }
                new_rows.push(prepare_row(table, new)?);
            }
            // Rows whose primary key changes move: delete all the old keys
            // first, then check the new keys, so that `SET id = id + 1` works.
            let mut moved: Vec<(Vec<u8>, &Row)> = Vec::new();
            for (old, new) in old_rows.iter().zip(&new_rows) {
                let old_key = table.row_key(old)?;
                let new_key = table.row_key(new)?;
                if old_key != new_key {
                    txn.delete(old_key)?;
                    moved.push((new_key, new));
                }
            }
            if !moved.is_empty() {
                let keys: Vec<Vec<u8>> = moved.iter().map(|(k, _)| k.clone()).collect();
                let existing = txn.get_many(&keys).await?;
                let mut seen = HashSet::new();
                for ((k, row), e) in moved.iter().zip(existing) {
                    if e.is_some() || !seen.insert(k.clone()) {
                        return Err(Error::UniqueViolation {
                            constraint: format!("{}_pkey", table.name),
                            detail: table.describe_pk(row),
                        });
                    }
                }
            }
            for new in &new_rows {
                txn.put(table.row_key(new)?, table.row_value(new))?;
            }
            Ok(DmlResult {
                count: new_rows.len() as u64,
                returning: returning_rows(returning, &new_rows)?,
            })
        }
        Plan::Delete {
            table,
            source,
            returning,
        } => {
            let rows = execute_node(source, txn).await?;
            for r in &rows {
                txn.delete(table.row_key(r)?)?;
            }
            Ok(DmlResult {
                count: rows.len() as u64,
                returning: returning_rows(returning, &rows)?,
            })
        }
        _ => Err(Error::Internal("not a DML plan".into())),
    }
}
