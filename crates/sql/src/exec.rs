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

use crate::catalog::{self, Index, Table};
use crate::encoding::{encode_key_value, index_prefix, prefix_end};
use crate::error::{Error, Result};
use crate::expr::{binary_values, BinOp, Expr, Func, Subquery, SubqueryKind};
use crate::plan::{
    AggCall, AggFunc, JoinKind, Node, OnConflict, PkLookup, Plan, Returning, ScanSpans, SetOpKind,
    SortKey,
};
use crate::types::Value;

/// A row.
pub type Row = Vec<Value>;

/// What a DML statement did.
pub struct DmlResult {
    pub count: u64,
    pub returning: Option<Vec<Row>>,
}

/// Per-statement execution state: results of subqueries that do not depend
/// on the enclosing row (run once), and, while a correlated subquery runs,
/// the scans it read (a correlated subquery runs once per outer row, and
/// its scans usually do not depend on that row).
#[derive(Default)]
pub struct ExecContext {
    subqueries: HashMap<usize, Vec<Row>>,
    scans: HashMap<String, Vec<Row>>,
    /// How many subqueries are running (scans are cached inside them).
    nesting: u32,
}

/// Runs a query node.
pub async fn execute_node(node: &Node, txn: &mut Txn) -> Result<Vec<Row>> {
    exec(node, txn, &mut ExecContext::default()).await
}

/// Evaluates expressions against rows, running the subqueries in them.
struct Evaluator<'e> {
    exprs: &'e [Expr],
    with_subqueries: bool,
}

impl<'e> Evaluator<'e> {
    fn new(exprs: &'e [Expr]) -> Self {
        Evaluator {
            exprs,
            with_subqueries: exprs.iter().any(Expr::needs_executor),
        }
    }

    /// The value of expression `i` for `row`.
    async fn eval(
        &self,
        i: usize,
        row: &[Value],
        txn: &mut Txn,
        ctx: &mut ExecContext,
    ) -> Result<Value> {
        let e = &self.exprs[i];
        if !self.with_subqueries || !e.needs_executor() {
            return e.eval(row);
        }
        resolve_subqueries(e, row, txn, ctx).await?.eval(row)
    }

    async fn eval_all(&self, row: &[Value], txn: &mut Txn, ctx: &mut ExecContext) -> Result<Row> {
        let mut out = Vec::with_capacity(self.exprs.len());
        for i in 0..self.exprs.len() {
            out.push(self.eval(i, row, txn, ctx).await?);
        }
        Ok(out)
    }
}

/// The expression with each of its subqueries replaced by its result for
/// `row`: a literal, or an IN list.
async fn resolve_subqueries(
    e: &Expr,
    row: &[Value],
    txn: &mut Txn,
    ctx: &mut ExecContext,
) -> Result<Expr> {
    let mut found: Vec<Subquery> = Vec::new();
    e.walk_depth(0, &mut |x, d| {
        if let (Expr::Subquery(sq), 0) = (x, d) {
            found.push(sq.as_ref().clone());
        }
    });
    let mut results: HashMap<usize, Vec<Row>> = HashMap::new();
    for sq in &found {
        let rows = subquery_rows(sq, row, txn, ctx).await?;
        results.insert(sq.id, rows);
    }
    let mut out = e.clone();
    let mut err = None;
    out.walk_depth_mut(0, &mut |x, d| {
        if d != 0 {
            return;
        }
        let Expr::Subquery(sq) = x else { return };
        let rows = results.get(&sq.id).map(Vec::as_slice).unwrap_or(&[]);
        let replacement = match &sq.kind {
            SubqueryKind::Scalar => match rows {
                [] => Expr::Literal(Value::Null),
                [r] => Expr::Literal(r.first().cloned().unwrap_or(Value::Null)),
                _ => {
                    err = Some(Error::CardinalityViolation);
                    Expr::Literal(Value::Null)
                }
            },
            SubqueryKind::Exists => Expr::Literal(Value::Bool(!rows.is_empty())),
            SubqueryKind::Array => {
                let items: Vec<Option<String>> = rows
                    .iter()
                    .map(|r| r.first().and_then(Value::to_text))
                    .collect();
                Expr::Literal(Value::Text(crate::pg_catalog::format_array(&items)))
            }
            SubqueryKind::In { expr, negated } => Expr::InList {
                expr: expr.clone(),
                list: rows
                    .iter()
                    .map(|r| Expr::Literal(r.first().cloned().unwrap_or(Value::Null)))
                    .collect(),
                negated: *negated,
            },
        };
        *x = replacement;
    });
    if let Some(e) = err {
        return Err(e);
    }
    // pg_sleep: wait here, where the statement can be cut short.
    let mut sleeps = Vec::new();
    out.walk(&mut |x| {
        if let Expr::Func(Func::PgSleep, args) = x {
            sleeps.push(args.first().cloned());
        }
    });
    for arg in sleeps.into_iter().flatten() {
        let secs = match arg.eval(row)? {
            Value::Int(i) => i as f64,
            Value::Float(f) => f,
            Value::Numeric(d) => crate::numeric::to_f64(&d),
            Value::Text(t) => t
                .trim()
                .parse()
                .map_err(|_| Error::InvalidTextRepresentation {
                    ty: "double precision".into(),
                    value: t.clone(),
                })?,
            _ => 0.0,
        };
        if secs > 0.0 && secs.is_finite() {
            tokio::time::sleep(std::time::Duration::from_secs_f64(secs.min(86_400.0))).await;
        }
    }
    Ok(out)
}

/// The rows of a subquery for the enclosing row `row`.
async fn subquery_rows(
    sq: &Subquery,
    row: &[Value],
    txn: &mut Txn,
    ctx: &mut ExecContext,
) -> Result<Vec<Row>> {
    if !sq.correlated {
        if let Some(rows) = ctx.subqueries.get(&sq.id) {
            return Ok(rows.clone());
        }
    }
    let mut node = sq.node.clone();
    if sq.correlated {
        // Instantiate: references to this row become its values.
        let mut missing = false;
        node.walk_exprs_mut(1, &mut |x, d| {
            if let Expr::Outer { depth, index } = x {
                if *depth == d {
                    match row.get(*index) {
                        Some(v) => *x = Expr::Literal(v.clone()),
                        None => missing = true,
                    }
                }
            }
        });
        if missing {
            return Err(Error::Internal(
                "a correlated subquery refers past its enclosing row".into(),
            ));
        }
    }
    ctx.nesting += 1;
    let rows = Box::pin(exec(&node, txn, ctx)).await;
    ctx.nesting -= 1;
    let rows = rows?;
    if !sq.correlated {
        ctx.subqueries.insert(sq.id, rows.clone());
    }
    Ok(rows)
}

async fn exec(node: &Node, txn: &mut Txn, ctx: &mut ExecContext) -> Result<Vec<Row>> {
    Ok(match node {
        Node::Scan {
            table,
            spans,
            limit,
        } => {
            if ctx.nesting == 0 {
                scan(table, spans, *limit, txn).await?
            } else {
                let key = format!("{}/{spans:?}/{limit:?}", table.id);
                if let Some(rows) = ctx.scans.get(&key) {
                    rows.clone()
                } else {
                    let rows = scan(table, spans, *limit, txn).await?;
                    ctx.scans.insert(key, rows.clone());
                    rows
                }
            }
        }
        Node::Values { rows } => {
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                out.push(Evaluator::new(r).eval_all(&[], txn, ctx).await?);
            }
            out
        }
        Node::Series { args } => {
            let vals = Evaluator::new(args).eval_all(&[], txn, ctx).await?;
            generate_series(&vals)?
                .into_iter()
                .map(|v| vec![v])
                .collect()
        }
        Node::Filter { input, predicate } => {
            let rows = Box::pin(exec(input, txn, ctx)).await?;
            let preds = std::slice::from_ref(predicate);
            let ev = Evaluator::new(preds);
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                if ev.eval(0, &r, txn, ctx).await?.is_true() {
                    out.push(r);
                }
            }
            out
        }
        Node::Project { input, exprs } => {
            let rows = Box::pin(exec(input, txn, ctx)).await?;
            let ev = Evaluator::new(exprs);
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                out.push(ev.eval_all(r, txn, ctx).await?);
            }
            out
        }
        Node::Aggregate {
            input,
            group_by,
            aggs,
        } => {
            let rows = Box::pin(exec(input, txn, ctx)).await?;
            aggregate(rows, group_by, aggs)?
        }
        Node::Distinct { input } => {
            let rows = Box::pin(exec(input, txn, ctx)).await?;
            let mut seen = HashSet::new();
            rows.into_iter()
                .filter(|r| seen.insert(r.clone()))
                .collect()
        }
        Node::Sort { input, keys } => {
            let mut rows = Box::pin(exec(input, txn, ctx)).await?;
            sort_rows(&mut rows, keys);
            rows
        }
        Node::Limit {
            input,
            limit,
            offset,
        } => {
            let rows = Box::pin(exec(input, txn, ctx)).await?;
            let it = rows
                .into_iter()
                .skip(usize::try_from(*offset).unwrap_or(usize::MAX));
            match limit {
                Some(l) => it.take(usize::try_from(*l).unwrap_or(usize::MAX)).collect(),
                None => it.collect(),
            }
        }
        Node::Trim { input, width } => {
            let mut rows = Box::pin(exec(input, txn, ctx)).await?;
            for r in &mut rows {
                r.truncate(*width);
            }
            rows
        }
        Node::Join {
            left,
            right,
            kind,
            equi,
            residual,
            left_width,
            right_width,
        } => {
            let l = Box::pin(exec(left, txn, ctx)).await?;
            let lookup = PkLookup::of(right, *kind, equi).filter(|_| l.len() <= LOOKUP_MAX_ROWS);
            let r = match lookup {
                Some(lookup) => {
                    let points = lookup_points(&lookup, &l)?;
                    let right = with_spans(right, ScanSpans::Points(points));
                    Box::pin(exec(&right, txn, ctx)).await?
                }
                None => Box::pin(exec(right, txn, ctx)).await?,
            };
            join(
                l,
                r,
                *kind,
                equi,
                residual.as_ref(),
                (*left_width, *right_width),
                txn,
                ctx,
            )
            .await?
        }
        Node::SetOp {
            left,
            right,
            op,
            all,
        } => {
            let l = Box::pin(exec(left, txn, ctx)).await?;
            let r = Box::pin(exec(right, txn, ctx)).await?;
            set_op(l, r, *op, *all)
        }
    })
}

/// A left input of at most this many rows reads a right side keyed by
/// its primary key row by row (see [`PkLookup`]); a bigger one scans it.
const LOOKUP_MAX_ROWS: usize = 10_000;

/// The distinct primary keys of `lookup`'s table that the left rows name.
/// A row with a NULL key, or a key that does not convert to the column's
/// type, can match nothing: the hash join compares the same values.
fn lookup_points(lookup: &PkLookup<'_>, left: &[Row]) -> Result<Vec<Vec<Value>>> {
    let mut seen = std::collections::HashSet::new();
    let mut points = Vec::new();
    'rows: for row in left {
        let mut key = Vec::with_capacity(lookup.keys.len());
        for (e, &p) in lookup.keys.iter().zip(&lookup.table.pk) {
            let v = e.eval(row)?;
            if v.is_null() {
                continue 'rows;
            }
            match v.cast(&lookup.table.columns[p].ty) {
                Ok(v) => key.push(v),
                Err(_) => continue 'rows,
            }
        }
        if seen.insert(key.clone()) {
            points.push(key);
        }
    }
    Ok(points)
}

/// `node` (filters over a scan) scanning `spans` instead.
fn with_spans(node: &Node, spans: ScanSpans) -> Node {
    match node {
        Node::Filter { input, predicate } => Node::Filter {
            input: Box::new(with_spans(input, spans)),
            predicate: predicate.clone(),
        },
        Node::Scan { table, limit, .. } => Node::Scan {
            table: table.clone(),
            spans,
            limit: *limit,
        },
        other => other.clone(),
    }
}

/// Joins materialized inputs: a hash join on the equi keys (built on the
/// right input), or a nested loop when there are none.
#[allow(clippy::too_many_arguments)]
async fn join(
    left: Vec<Row>,
    right: Vec<Row>,
    kind: JoinKind,
    equi: &[(Expr, Expr)],
    residual: Option<&Expr>,
    (left_width, right_width): (usize, usize),
    txn: &mut Txn,
    ctx: &mut ExecContext,
) -> Result<Vec<Row>> {
    let residual = residual.map(std::slice::from_ref).unwrap_or(&[]);
    let residual = Evaluator::new(residual);
    let key = |exprs: &mut dyn Iterator<Item = &Expr>, row: &[Value]| -> Result<Option<Row>> {
        let mut k = Vec::new();
        for e in exprs {
            let v = e.eval(row)?;
            if v.is_null() {
                return Ok(None);
            }
            k.push(v);
        }
        Ok(Some(k))
    };
    let mut table: HashMap<Row, Vec<usize>> = HashMap::new();
    if !equi.is_empty() {
        for (j, r) in right.iter().enumerate() {
            if let Some(k) = key(&mut equi.iter().map(|(_, re)| re), r)? {
                table.entry(k).or_default().push(j);
            }
        }
    }
    let all_right: Vec<usize> = (0..right.len()).collect();
    let mut right_matched = vec![false; right.len()];
    let mut out = Vec::new();
    for l in &left {
        let candidates: &[usize] = if equi.is_empty() {
            &all_right
        } else {
            match key(&mut equi.iter().map(|(le, _)| le), l)? {
                Some(k) => table.get(&k).map(Vec::as_slice).unwrap_or(&[]),
                None => &[],
            }
        };
        let mut matched = false;
        for &j in candidates {
            let mut row = Vec::with_capacity(left_width + right_width);
            row.extend_from_slice(l);
            row.extend_from_slice(&right[j]);
            if !residual.exprs.is_empty() && !residual.eval(0, &row, txn, ctx).await?.is_true() {
                continue;
            }
            matched = true;
            right_matched[j] = true;
            out.push(row);
        }
        if !matched && matches!(kind, JoinKind::Left | JoinKind::Full) {
            let mut row = l.clone();
            row.resize(left_width + right_width, Value::Null);
            out.push(row);
        }
    }
    if matches!(kind, JoinKind::Right | JoinKind::Full) {
        for (j, r) in right.into_iter().enumerate() {
            if !right_matched[j] {
                let mut row = vec![Value::Null; left_width];
                row.extend(r);
                out.push(row);
            }
        }
    }
    Ok(out)
}

/// UNION / INTERSECT / EXCEPT, with or without ALL. Rows compare with NULLs
/// equal, as set operations do in SQL.
fn set_op(left: Vec<Row>, right: Vec<Row>, op: SetOpKind, all: bool) -> Vec<Row> {
    let counts = |rows: &[Row]| {
        let mut m: HashMap<Row, usize> = HashMap::new();
        for r in rows {
            *m.entry(r.clone()).or_default() += 1;
        }
        m
    };
    let mut seen = HashSet::new();
    match (op, all) {
        (SetOpKind::Union, true) => left.into_iter().chain(right).collect(),
        (SetOpKind::Union, false) => left
            .into_iter()
            .chain(right)
            .filter(|r| seen.insert(r.clone()))
            .collect(),
        (SetOpKind::Intersect, _) => {
            let mut c = counts(&right);
            left.into_iter()
                .filter(|r| match c.get_mut(r) {
                    Some(n) if *n > 0 => {
                        if all {
                            *n -= 1;
                            true
                        } else {
                            seen.insert(r.clone())
                        }
                    }
                    _ => false,
                })
                .collect()
        }
        (SetOpKind::Except, true) => {
            let mut c = counts(&right);
            left.into_iter()
                .filter(|r| match c.get_mut(r) {
                    Some(n) if *n > 0 => {
                        *n -= 1;
                        false
                    }
                    _ => true,
                })
                .collect()
        }
        (SetOpKind::Except, false) => {
            let c = counts(&right);
            left.into_iter()
                .filter(|r| !c.contains_key(r) && seen.insert(r.clone()))
                .collect()
        }
    }
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
        ScanSpans::Index {
            index,
            prefix,
            lower,
            upper,
        } => {
            let idx = table
                .indexes
                .iter()
                .find(|i| i.id == *index)
                .ok_or_else(|| Error::Internal(format!("index {index} of {} gone", table.name)))?;
            let (start, end) = index_range_keys(table, idx, prefix, lower, upper)?;
            if start >= end {
                return Ok(vec![]);
            }
            let entries = txn.scan(&start, &end, limit).await?;
            let keys: Vec<Vec<u8>> = entries
                .iter()
                .map(|(_, v)| table.key_from_index_value(v))
                .collect();
            let values = txn.get_many(&keys).await?;
            let mut rows = Vec::with_capacity(keys.len());
            for (k, v) in keys.iter().zip(values) {
                let v = v.ok_or_else(|| {
                    Error::Internal(format!(
                        "index {} of {} has an entry for a missing row",
                        idx.name, table.name
                    ))
                })?;
                rows.push(table.decode_row(k, &v)?);
            }
            Ok(rows)
        }
    }
}

/// The KV key range of an index scan (the bounded column is ascending).
fn index_range_keys(
    table: &Table,
    index: &Index,
    prefix: &[Value],
    lower: &Bound<Value>,
    upper: &Bound<Value>,
) -> Result<(Vec<u8>, Vec<u8>)> {
    let mut base = index_prefix(table.id, index.id);
    for (v, &desc) in prefix.iter().zip(&index.descending) {
        let start = base.len();
        encode_key_value(&mut base, v)?;
        if desc {
            for b in &mut base[start..] {
                *b = !*b;
            }
        }
    }
    let with = |v: &Value| -> Result<Vec<u8>> {
        let mut k = base.clone();
        encode_key_value(&mut k, v)?;
        Ok(k)
    };
    // NULLs sort first in keys and never satisfy a bound.
    let after_nulls = {
        let mut k = base.clone();
        k.push(0x01);
        k
    };
    let start = match lower {
        Bound::Unbounded if upper == &Bound::Unbounded => base.clone(),
        Bound::Unbounded => after_nulls,
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

fn decode_all(table: &Table, kvs: Vec<(Vec<u8>, Vec<u8>)>) -> Result<Vec<Row>> {
    kvs.iter().map(|(k, v)| table.decode_row(k, v)).collect()
}

#[derive(Clone)]
enum AggState {
    Count(i64),
    Sum(Option<Value>),
    MinMax(Option<Value>),
    Avg(f64, i64),
    /// avg(numeric): exact sum and count.
    AvgNumeric(rust_decimal::Decimal, i64),
    List(Vec<Option<String>>),
}

fn new_state(a: &AggCall) -> AggState {
    match a.func {
        AggFunc::CountStar | AggFunc::Count => AggState::Count(0),
        AggFunc::Sum => AggState::Sum(None),
        AggFunc::Min | AggFunc::Max => AggState::MinMax(None),
        AggFunc::Avg if a.arg_type.is_decimal() => {
            AggState::AvgNumeric(rust_decimal::Decimal::ZERO, 0)
        }
        AggFunc::Avg => AggState::Avg(0.0, 0),
        AggFunc::StringAgg | AggFunc::ArrayAgg => AggState::List(Vec::new()),
    }
}

fn update_state(state: &mut AggState, a: &AggCall, v: Value) -> Result<()> {
    if let AggState::List(items) = state {
        // array_agg keeps NULLs; string_agg skips them.
        if a.func == AggFunc::ArrayAgg || !v.is_null() {
            items.push(v.to_text());
        }
        return Ok(());
    }
    if a.func != AggFunc::CountStar && v.is_null() {
        return Ok(());
    }
    match state {
        AggState::List(_) => unreachable!("handled above"),
        AggState::Count(n) => *n += 1,
        AggState::Sum(s) => {
            *s = Some(match s.take() {
                None => match v {
                    Value::Int(_) | Value::Float(_) | Value::Numeric(_) => v,
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
        AggState::AvgNumeric(sum, n) => {
            let d = match v {
                Value::Numeric(d) => d,
                Value::Int(i) => i.into(),
                other => {
                    return Err(Error::UndefinedFunction(format!(
                        "avg({})",
                        other.type_name()
                    )))
                }
            };
            *sum = sum.checked_add(d).ok_or_else(|| {
                Error::NumericValueOverflow("value overflows numeric format".into())
            })?;
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
        AggState::AvgNumeric(_, 0) => Value::Null,
        AggState::AvgNumeric(sum, n) => Value::Numeric(
            crate::numeric::avg(sum, n).expect("a sum divided by a positive count fits"),
        ),
        AggState::List(items) if items.is_empty() => Value::Null,
        AggState::List(items) if a.func == AggFunc::ArrayAgg => {
            Value::Text(crate::pg_catalog::format_array(&items))
        }
        AggState::List(items) => Value::Text(
            items
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(a.separator.as_deref().unwrap_or("")),
        ),
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

/// Fails if a CHECK constraint is false for the row (NULL passes).
fn check_row(table: &Table, checks: &[(String, Expr)], row: &[Value]) -> Result<()> {
    for (name, e) in checks {
        if e.eval(row)? == Value::Bool(false) {
            return Err(Error::CheckViolation {
                table: table.name.clone(),
                constraint: name.clone(),
            });
        }
    }
    Ok(())
}

/// `ALTER TABLE`: each change in turn, in the transaction (rows are
/// rewritten where the change needs it, so this is not online: writers of
/// the table wait for the transaction, and a concurrent transaction that
/// read the old descriptor fails to commit and retries).
pub async fn alter_table(
    txn: &mut Txn,
    table_name: &str,
    if_exists: bool,
    ops: &[crate::plan::AlterOp],
) -> Result<()> {
    use crate::plan::AlterOp;
    let Some(mut table) = catalog::get_table(txn, table_name).await? else {
        if if_exists {
            return Ok(());
        }
        return Err(Error::UndefinedTable(table_name.to_string()));
    };
    table.must_be_table()?;
    for op in ops {
        match op {
            AlterOp::AddPrimaryKey { columns } => add_primary_key(txn, &mut table, columns).await?,
            AlterOp::AddColumn {
                column,
                if_not_exists,
            } => {
                if table.column_index(&column.name).is_some() {
                    if *if_not_exists {
                        continue;
                    }
                    return Err(Error::ColumnExists {
                        column: column.name.clone(),
                        table: table.name.clone(),
                    });
                }
                add_column(txn, &mut table, column.clone()).await?
            }
            AlterOp::DropColumns { names, if_exists } => {
                for name in names {
                    let Some(i) = table
                        .column_index(name)
                        .filter(|&i| !table.columns[i].hidden)
                    else {
                        if *if_exists {
                            continue;
                        }
                        return Err(Error::UndefinedColumnOf {
                            column: name.clone(),
                            table: table.name.clone(),
                        });
                    };
                    drop_column(&mut table, i)?;
                }
            }
        }
    }
    catalog::update_table(txn, &mut table)
}

/// Every row of a table's primary index, decoded.
async fn all_rows(txn: &mut Txn, table: &Table) -> Result<Vec<(Vec<u8>, Row)>> {
    let (start, end) = table.span();
    txn.scan(&start, &end, 0)
        .await?
        .into_iter()
        .map(|(k, v)| {
            let row = table.decode_row(&k, &v)?;
            Ok((k, row))
        })
        .collect()
}

/// `ADD PRIMARY KEY (cols)` on a table keyed by its hidden row id: the
/// columns become NOT NULL, the rows move to a new primary index keyed by
/// them (duplicates fail with 23505), the secondary indexes are rebuilt
/// (their entries end with the primary key) and the row id column goes.
async fn add_primary_key(txn: &mut Txn, table: &mut Table, columns: &[String]) -> Result<()> {
    let rowid = match table.pk.as_slice() {
        [i] if table.columns[*i].hidden => *i,
        _ => {
            return Err(Error::InvalidTableDefinition(format!(
                "multiple primary keys for table \"{}\" are not allowed",
                table.name
            )))
        }
    };
    let old = table.clone();
    let mut new = table.clone();
    new.remove_column(rowid);
    let mut pk = Vec::with_capacity(columns.len());
    for name in columns {
        let i = new
            .column_index(name)
            .ok_or_else(|| Error::UndefinedColumn(name.clone()))?;
        if pk.contains(&i) {
            return Err(Error::DuplicateColumn(name.clone()));
        }
        new.columns[i].nullable = false;
        pk.push(i);
    }
    new.pk = pk;
    new.primary_id = new.next_index_id;
    new.next_index_id += 1;
    let constraint = format!("{}_pkey", new.name);
    // Each row as it was and without its row id.
    let rows: Vec<(Vec<u8>, Row, Row)> = all_rows(txn, &old)
        .await?
        .into_iter()
        .map(|(key, old_row)| {
            let mut row = old_row.clone();
            row.remove(rowid);
            (key, old_row, row)
        })
        .collect();
    // The columns become NOT NULL before the key is built, as in PostgreSQL.
    for (_, _, row) in &rows {
        if let Some(&i) = new.pk.iter().find(|&&i| row[i].is_null()) {
            return Err(Error::NotNullViolation {
                table: new.name.clone(),
                column: new.columns[i].name.clone(),
            });
        }
    }
    let mut seen = HashSet::new();
    for (old_key, old_row, row) in rows {
        let key = new.row_key(&row)?;
        if !seen.insert(key.clone()) {
            return Err(Error::UniqueViolation {
                constraint,
                detail: new
                    .describe_pk(&row)
                    .replace("already exists", "is duplicated"),
            });
        }
        txn.delete(old_key)?;
        txn.put(key, new.row_value(&row))?;
        for (old_idx, new_idx) in old.indexes.iter().zip(&new.indexes) {
            txn.delete(old.index_entry(old_idx, &old_row)?.key)?;
            let e = new.index_entry(new_idx, &row)?;
            txn.put(e.key, e.value)?;
        }
    }
    *table = new;
    Ok(())
}

/// `ADD COLUMN`: a nullable column without a default changes only the
/// descriptor (a missing value decodes as NULL); otherwise every row is
/// rewritten with its default (evaluated per row), and NOT NULL without
/// one fails on a non-empty table (23502).
async fn add_column(txn: &mut Txn, table: &mut Table, mut column: catalog::Column) -> Result<()> {
    column.id = table.next_column_id;
    table.next_column_id += 1;
    let default = column
        .default
        .as_deref()
        .map(crate::planner::bind_default)
        .transpose()?;
    let ty = column.ty.clone();
    let (nullable, name) = (column.nullable, column.name.clone());
    let old = table.clone();
    table.columns.push(column);
    if default.is_none() && nullable {
        return Ok(());
    }
    for (key, mut row) in all_rows(txn, &old).await? {
        let v = match &default {
            Some(e) => e.eval(&[])?.assign(&ty)?,
            None => Value::Null,
        };
        if v.is_null() && !nullable {
            return Err(Error::NotNullViolation {
                table: table.name.clone(),
                column: name,
            });
        }
        row.push(v);
        txn.put(key, table.row_value(&row))?;
    }
    Ok(())
}

/// `DROP COLUMN`: the column leaves the descriptor (its values stay in
/// stored rows, ignored, until they are rewritten), with the indexes and
/// CHECK constraints that use it, as in PostgreSQL. A primary key column
/// cannot be dropped.
fn drop_column(table: &mut Table, i: usize) -> Result<()> {
    let name = table.columns[i].name.clone();
    if table.pk.contains(&i) {
        return Err(Error::FeatureNotSupported(format!(
            "dropping primary key column \"{name}\""
        )));
    }
    if table.columns.iter().filter(|c| !c.hidden).count() == 1 {
        return Err(Error::FeatureNotSupported(
            "dropping the only column of a table".into(),
        ));
    }
    table.indexes.retain(|idx| !idx.columns.contains(&i));
    let checks = std::mem::take(&mut table.checks);
    table.remove_column(i);
    // A check that no longer binds referred to the dropped column.
    for (cname, expr) in checks {
        let probe = Table {
            checks: vec![(cname.clone(), expr.clone())],
            ..table.clone()
        };
        if crate::planner::bind_checks(&probe).is_ok() {
            table.checks.push((cname, expr));
        }
    }
    Ok(())
}

/// `TRUNCATE`: deletes every row and index entry of the table inside the
/// transaction, so it commits or rolls back with it and serializes with
/// concurrent writers like any other write.
pub async fn truncate(txn: &mut Txn, table: &Table) -> Result<()> {
    let mut spans = vec![table.span()];
    spans.extend(table.indexes.iter().map(|i| table.index_span(i.id)));
    for (start, end) in spans {
        for (k, _) in txn.scan(&start, &end, 0).await? {
            txn.delete(k)?;
        }
    }
    Ok(())
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
    let ctx = &mut ExecContext::default();
    match plan {
        Plan::Insert {
            table,
            columns,
            defaults,
            source,
            on_conflict,
            returning,
            checks,
        } => {
            let source_rows = exec(source, txn, ctx).await?;
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
                let row = prepare_row(table, row)?;
                check_row(table, checks, &row)?;
                rows.push(row);
            }
            let keys = rows
                .iter()
                .map(|r| table.row_key(r))
                .collect::<Result<Vec<_>>>()?;
            // A row id the statement did not supply is new by construction
            // (`rowid::unique_rowid`): there is no existing row to look for.
            let fresh_rowid = matches!(table.pk.as_slice(),
                [i] if table.columns[*i].hidden && !columns.contains(i));
            let existing = if fresh_rowid {
                vec![None; keys.len()]
            } else {
                txn.get_many(&keys).await?
            };
            let probes = unique_probes(table, rows.iter(), txn).await?;
            // Row by row, as PostgreSQL checks: a row claims its keys only
            // if it is written, so a row skipped by DO NOTHING blocks no
            // later row.
            let mut written = HashSet::new();
            let mut taken = HashSet::new();
            let mut inserted = Vec::with_capacity(rows.len());
            for (((row, key), old), probes) in rows.into_iter().zip(keys).zip(existing).zip(probes)
            {
                let pk_clash = old.is_some() || written.contains(&key);
                if let (
                    true,
                    OnConflict::DoUpdate {
                        assignments,
                        selection,
                    },
                ) = (pk_clash, on_conflict)
                {
                    if written.contains(&key) {
                        return Err(Error::UpsertSameRowTwice);
                    }
                    let old = old.expect("a primary key clash not written here is a stored row");
                    let existing = table.decode_row(&key, &old)?;
                    let updated = upsert_row(
                        table,
                        checks,
                        (assignments, selection.as_ref()),
                        &existing,
                        &row,
                        txn,
                        ctx,
                    )
                    .await?;
                    if let Some(new) = updated {
                        written.insert(key.clone());
                        txn.put(key, table.row_value(&new))?;
                        inserted.push(new);
                    }
                    continue;
                }
                let unique_clash = probes
                    .iter()
                    .find(|p| p.held_by_other || taken.contains(&p.key));
                if pk_clash || unique_clash.is_some() {
                    let skip = match on_conflict {
                        OnConflict::Error | OnConflict::DoUpdate { .. } => false,
                        OnConflict::DoNothing => true,
                        OnConflict::DoNothingOnPrimaryKey => unique_clash.is_none(),
                    };
                    if skip {
                        continue;
                    }
                    return Err(match unique_clash {
                        Some(p) if !pk_clash => Error::UniqueViolation {
                            constraint: p.index.name.clone(),
                            detail: table.describe_index_key(p.index, &row),
                        },
                        _ => Error::UniqueViolation {
                            constraint: format!("{}_pkey", table.name),
                            detail: table.describe_pk(&row),
                        },
                    });
                }
                written.insert(key.clone());
                taken.extend(probes.into_iter().map(|p| p.key));
                txn.put(key, table.row_value(&row))?;
                for idx in &table.indexes {
                    let e = table.index_entry(idx, &row)?;
                    txn.put(e.key, e.value)?;
                }
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
            checks,
        } => {
            let old_rows = rows_to_change(table, source, txn, ctx).await?;
            let mut new_rows = Vec::with_capacity(old_rows.len());
            let exprs: Vec<Expr> = assignments.iter().map(|(_, e)| e.clone()).collect();
            let ev = Evaluator::new(&exprs);
            for old in &old_rows {
                let mut new = old.clone();
                for (v, (col, _)) in ev
                    .eval_all(old, txn, ctx)
                    .await?
                    .into_iter()
                    .zip(assignments)
                {
                    new[*col] = v;
                }
                let new = prepare_row(table, new)?;
                check_row(table, checks, &new)?;
                new_rows.push(new);
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
            // Index entries that change: the same order, old ones out first.
            let mut changed_rows = Vec::new();
            let mut new_entries = Vec::new();
            for (old, new) in old_rows.iter().zip(&new_rows) {
                let changed = changed_index_entries(table, old, new)?;
                if !changed.is_empty() {
                    changed_rows.push(new);
                }
                for (old_key, after) in changed {
                    // Out first even when the key stays (the row's primary
                    // key moved): the unique check below must not see it
                    // as another row's.
                    txn.delete(old_key)?;
                    new_entries.push(after);
                }
            }
            if !changed_rows.is_empty() {
                let probes = unique_probes(table, changed_rows.iter().copied(), txn).await?;
                let mut taken = HashSet::new();
                for (row, probes) in changed_rows.iter().zip(probes) {
                    for p in probes {
                        if p.held_by_other || !taken.insert(p.key) {
                            return Err(Error::UniqueViolation {
                                constraint: p.index.name.clone(),
                                detail: table.describe_index_key(p.index, row),
                            });
                        }
                    }
                }
            }
            for new in &new_rows {
                txn.put(table.row_key(new)?, table.row_value(new))?;
            }
            for e in new_entries {
                txn.put(e.key, e.value)?;
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
            let rows = rows_to_change(table, source, txn, ctx).await?;
            for r in &rows {
                txn.delete(table.row_key(r)?)?;
                for idx in &table.indexes {
                    txn.delete(table.index_entry(idx, r)?.key)?;
                }
            }
            Ok(DmlResult {
                count: rows.len() as u64,
                returning: returning_rows(returning, &rows)?,
            })
        }
        _ => Err(Error::Internal("not a DML plan".into())),
    }
}

/// The rows an UPDATE or DELETE changes. When the transaction locks rows
/// it updates (a transaction block), they are locked too: rows found by
/// primary key before they are read, so that the read sees the newest
/// committed row and the statement waits for a holder rather than failing
/// at COMMIT; rows found by a scan right after they are read (the lock's
/// refresh fails, a retry error, if one of them changed in between).
async fn rows_to_change(
    table: &Table,
    source: &Node,
    txn: &mut Txn,
    ctx: &mut ExecContext,
) -> Result<Vec<Row>> {
    if !txn.locks_updates() {
        return exec(source, txn, ctx).await;
    }
    if let Some(keys) = point_keys(table, source)? {
        txn.lock_for_update(&keys).await?;
        return exec(source, txn, ctx).await;
    }
    let rows = exec(source, txn, ctx).await?;
    let keys = rows
        .iter()
        .map(|r| table.row_key(r))
        .collect::<Result<Vec<_>>>()?;
    txn.lock_for_update(&keys).await?;
    Ok(rows)
}

/// The primary keys a DML source reads when it is a point lookup of
/// `table` (possibly filtered further).
fn point_keys(table: &Table, node: &Node) -> Result<Option<Vec<Vec<u8>>>> {
    match node {
        Node::Filter { input, .. } => point_keys(table, input),
        Node::Scan {
            table: t,
            spans: ScanSpans::Points(points),
            ..
        } if t.id == table.id => points
            .iter()
            .map(|p| t.key_from_pk_values(p))
            .collect::<Result<Vec<_>>>()
            .map(Some),
        _ => Ok(None),
    }
}

/// One row's key in a unique index, and whether another row holds it
/// already (as the transaction sees it, own writes included).
struct UniqueProbe<'t> {
    index: &'t Index,
    key: Vec<u8>,
    held_by_other: bool,
}

/// The secondary index entries that differ between a row's `old` and `new`
/// versions: the old entry's key and the new entry, index by index.
fn changed_index_entries(
    table: &Table,
    old: &Row,
    new: &Row,
) -> Result<Vec<(Vec<u8>, crate::catalog::IndexEntry)>> {
    let mut changed = Vec::new();
    for idx in &table.indexes {
        let before = table.index_entry(idx, old)?;
        let after = table.index_entry(idx, new)?;
        if before.key != after.key || before.value != after.value {
            changed.push((before.key, after));
        }
    }
    Ok(changed)
}

/// ON CONFLICT DO UPDATE of one row: evaluates the SET list and WHERE over
/// the existing row followed by the proposed one, checks the new row, and
/// writes its changed index entries (the caller writes the row). `None` if
/// the WHERE leaves the row alone.
async fn upsert_row(
    table: &Table,
    checks: &[(String, Expr)],
    (assignments, selection): (&[(usize, Expr)], Option<&Expr>),
    existing: &Row,
    proposed: &Row,
    txn: &mut Txn,
    ctx: &mut ExecContext,
) -> Result<Option<Row>> {
    let mut both = existing.clone();
    both.extend(proposed.iter().cloned());
    if let Some(w) = selection {
        let keep = Evaluator::new(std::slice::from_ref(w))
            .eval_all(&both, txn, ctx)
            .await?;
        if !keep.first().is_some_and(Value::is_true) {
            return Ok(None);
        }
    }
    let exprs: Vec<Expr> = assignments.iter().map(|(_, e)| e.clone()).collect();
    let values = Evaluator::new(&exprs).eval_all(&both, txn, ctx).await?;
    let mut new = existing.clone();
    for (v, (col, _)) in values.into_iter().zip(assignments) {
        new[*col] = v;
    }
    let new = prepare_row(table, new)?;
    check_row(table, checks, &new)?;
    let changed = changed_index_entries(table, existing, &new)?;
    if changed.iter().any(|(_, e)| e.unique) {
        let probes = unique_probes(table, std::iter::once(&new), txn).await?;
        if let Some(p) = probes.into_iter().flatten().find(|p| p.held_by_other) {
            return Err(Error::UniqueViolation {
                constraint: p.index.name.clone(),
                detail: table.describe_index_key(p.index, &new),
            });
        }
    }
    for (old_key, entry) in changed {
        if old_key != entry.key {
            txn.delete(old_key)?;
        }
        txn.put(entry.key, entry.value)?;
    }
    Ok(Some(new))
}

/// For each row about to be written, its keys in the table's unique
/// indexes (none for a key with a NULL), probed in one batched read.
async fn unique_probes<'t, 'r>(
    table: &'t Table,
    rows: impl Iterator<Item = &'r Row>,
    txn: &mut Txn,
) -> Result<Vec<Vec<UniqueProbe<'t>>>> {
    let rows: Vec<&Row> = rows.collect();
    let mut out: Vec<Vec<UniqueProbe<'t>>> = (0..rows.len()).map(|_| Vec::new()).collect();
    if !table.indexes.iter().any(|i| i.unique) {
        return Ok(out);
    }
    let mut flat: Vec<(usize, &'t Index, Vec<u8>, Vec<u8>)> = Vec::new();
    for (r, row) in rows.iter().enumerate() {
        for idx in table.indexes.iter().filter(|i| i.unique) {
            let e = table.index_entry(idx, row)?;
            if e.unique {
                flat.push((r, idx, e.key, e.value));
            }
        }
    }
    let keys: Vec<Vec<u8>> = flat.iter().map(|(_, _, k, _)| k.clone()).collect();
    let existing = txn.get_many(&keys).await?;
    for ((r, index, key, value), old) in flat.into_iter().zip(existing) {
        // An entry that already points at this very row is no clash (an
        // UPDATE that leaves the indexed columns alone).
        out[r].push(UniqueProbe {
            index,
            key,
            held_by_other: old.is_some_and(|v| v != value),
        });
    }
    Ok(out)
}

/// `CREATE [UNIQUE] INDEX`: adds the index to the table's descriptor and
/// writes the entry of every row, all in the statement's transaction (a
/// writer that read the old descriptor conflicts with it and retries).
pub async fn create_index(
    txn: &mut Txn,
    table_name: &str,
    name: Option<String>,
    columns: &[(String, bool)],
    unique: bool,
    if_not_exists: bool,
) -> Result<()> {
    let mut table = catalog::must_get_table(txn, table_name).await?;
    table.must_be_table()?;
    let mut positions = Vec::with_capacity(columns.len());
    for (c, _) in columns {
        let i = table
            .column_index(c)
            .filter(|&i| !table.columns[i].hidden)
            .ok_or_else(|| Error::UndefinedColumn(c.clone()))?;
        positions.push(i);
    }
    let name = match name {
        Some(n) => {
            if catalog::relation_exists(txn, &n).await? {
                if if_not_exists {
                    return Ok(());
                }
                return Err(Error::DuplicateTable(n));
            }
            n
        }
        None => {
            let cols: Vec<&str> = columns.iter().map(|(c, _)| c.as_str()).collect();
            let base = format!("{}_{}_idx", table.name, cols.join("_"));
            let mut n = base.clone();
            let mut k = 0;
            while catalog::relation_exists(txn, &n).await? {
                k += 1;
                n = format!("{base}{k}");
            }
            n
        }
    };
    let index = Index {
        id: table.next_index_id,
        name: name.clone(),
        columns: positions,
        descending: columns.iter().map(|(_, d)| *d).collect(),
        unique,
    };
    table.next_index_id += 1;
    let (start, end) = table.span();
    let mut seen = HashSet::new();
    for (k, v) in txn.scan(&start, &end, 0).await? {
        let row = table.decode_row(&k, &v)?;
        let e = table.index_entry(&index, &row)?;
        if e.unique && !seen.insert(e.key.clone()) {
            return Err(Error::UniqueViolation {
                constraint: name,
                detail: table
                    .describe_index_key(&index, &row)
                    .replace("already exists", "is duplicated"),
            });
        }
        txn.put(e.key, e.value)?;
    }
    table.indexes.push(index);
    catalog::update_table(txn, &mut table)
}

/// Most rows `generate_series` may produce: its rows are held in memory.
const MAX_SERIES_ROWS: i128 = 10_000_000;

/// The values of `generate_series(start, stop [, step])`; none when an
/// argument is NULL, as in PostgreSQL.
pub(crate) fn generate_series(args: &[Value]) -> Result<Vec<Value>> {
    let mut ints = Vec::with_capacity(args.len());
    for v in args {
        match v {
            Value::Null => return Ok(vec![]),
            Value::Int(i) => ints.push(*i),
            v => {
                return Err(Error::UndefinedFunction(format!(
                    "generate_series({})",
                    v.type_name()
                )))
            }
        }
    }
    let (start, stop, step) = match ints.as_slice() {
        [a, b] => (*a, *b, 1),
        [a, b, c] => (*a, *b, *c),
        _ => {
            return Err(Error::UndefinedFunction(format!(
                "generate_series with {} arguments",
                ints.len()
            )))
        }
    };
    if step == 0 {
        return Err(Error::InvalidParameterValue(
            "step size cannot equal zero".into(),
        ));
    }
    let count = (i128::from(stop) - i128::from(start)) / i128::from(step) + 1;
    if count > MAX_SERIES_ROWS {
        return Err(Error::FeatureNotSupported(format!(
            "generate_series of more than {MAX_SERIES_ROWS} rows"
        )));
    }
    Ok((0..count.max(0) as i64)
        .map(|i| Value::Int(start + i * step))
        .collect())
}
