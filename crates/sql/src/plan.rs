//! Plans: what a statement will do, after binding and optimization.
//!
//! A [`Plan`] is one statement. Queries are trees of [`Node`]s that the
//! executor runs bottom-up; DML plans wrap a node that produces the rows to
//! insert, update or delete. `EXPLAIN` prints the tree with [`Plan::explain`].

use std::fmt::Write as _;
use std::ops::Bound;

use crate::catalog::Table;
use crate::expr::Expr;
use crate::types::{DataType, Value};

/// A column of a result.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputColumn {
    pub name: String,
    pub ty: DataType,
}

/// RETURNING: expressions over the table's row, and their columns.
#[derive(Clone, Debug)]
pub struct Returning {
    pub exprs: Vec<Expr>,
    pub columns: Vec<OutputColumn>,
}

/// A planned statement.
#[derive(Clone, Debug)]
pub enum Plan {
    CreateTable {
        table: Table,
        if_not_exists: bool,
    },
    DropTable {
        names: Vec<String>,
        if_exists: bool,
    },
    Insert {
        table: Table,
        /// For each column of the source rows, the table column it fills.
        columns: Vec<usize>,
        /// Evaluated DEFAULT of every table column (None: NULL).
        defaults: Vec<Option<Expr>>,
        source: Node,
        on_conflict_do_nothing: bool,
        returning: Option<Returning>,
    },
    Update {
        table: Table,
        source: Node,
        assignments: Vec<(usize, Expr)>,
        returning: Option<Returning>,
    },
    Delete {
        table: Table,
        source: Node,
        returning: Option<Returning>,
    },
    Query {
        node: Node,
        columns: Vec<OutputColumn>,
    },
    Explain(Box<Plan>),
    Begin,
    Commit,
    Rollback,
    SetVariable {
        name: String,
        value: String,
    },
    ShowVariable {
        name: String,
    },
    ShowTables,
}

/// Which primary keys a scan reads.
#[derive(Clone, Debug, PartialEq)]
pub enum ScanSpans {
    /// Every row.
    Full,
    /// Point lookups: full primary key values, each one KV get.
    Points(Vec<Vec<Value>>),
    /// One KV range scan: rows whose key starts with `prefix` and whose next
    /// key column lies within the bounds.
    Range {
        prefix: Vec<Value>,
        lower: Bound<Value>,
        upper: Bound<Value>,
    },
}

/// An aggregate function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AggFunc {
    CountStar,
    Count,
    Sum,
    Min,
    Max,
    Avg,
}

/// One aggregate computed by an Aggregate node.
#[derive(Clone, Debug, PartialEq)]
pub struct AggCall {
    pub func: AggFunc,
    pub arg: Option<Expr>,
    pub distinct: bool,
    /// The type of the argument (for SUM's overflow rules).
    pub arg_type: DataType,
}

/// A sort key: an output column position.
#[derive(Clone, Debug, PartialEq)]
pub struct SortKey {
    pub column: usize,
    pub desc: bool,
    pub nulls_first: bool,
}

/// A node of a query plan.
#[derive(Clone, Debug)]
pub enum Node {
    /// Reads rows of a table (all its columns, in column order), in primary
    /// key order.
    Scan {
        table: Table,
        spans: ScanSpans,
        /// Stop after this many rows (pushed down from LIMIT).
        limit: Option<usize>,
    },
    /// Literal rows.
    Values {
        rows: Vec<Vec<Expr>>,
    },
    Filter {
        input: Box<Node>,
        predicate: Expr,
    },
    Project {
        input: Box<Node>,
        exprs: Vec<Expr>,
    },
    /// Output: the group-by values, then the aggregates.
    Aggregate {
        input: Box<Node>,
        group_by: Vec<Expr>,
        aggs: Vec<AggCall>,
    },
    Distinct {
        input: Box<Node>,
    },
    Sort {
        input: Box<Node>,
        keys: Vec<SortKey>,
    },
    Limit {
        input: Box<Node>,
        limit: Option<u64>,
        offset: u64,
    },
    /// Keeps the first `width` columns (drops sort-only columns).
    Trim {
        input: Box<Node>,
        width: usize,
    },
}

fn bound_str(b: &Bound<Value>, lower: bool) -> String {
    match (b, lower) {
        (Bound::Unbounded, true) => "(-∞".into(),
        (Bound::Unbounded, false) => "+∞)".into(),
        (Bound::Included(v), true) => format!("[{v}"),
        (Bound::Excluded(v), true) => format!("({v}"),
        (Bound::Included(v), false) => format!("{v}]"),
        (Bound::Excluded(v), false) => format!("{v})"),
    }
}

impl Node {
    fn explain_into(&self, out: &mut String, depth: usize) {
        let pad = "  ".repeat(depth);
        let arrow = if depth == 0 { "" } else { "└─ " };
        let line = match self {
            Node::Scan {
                table,
                spans,
                limit,
            } => {
                let how = match spans {
                    ScanSpans::Full => "full scan".to_string(),
                    ScanSpans::Points(p) => format!("point lookup of {} key(s)", p.len()),
                    ScanSpans::Range {
                        prefix,
                        lower,
                        upper,
                    } => {
                        let prefix: Vec<String> = prefix.iter().map(|v| v.to_string()).collect();
                        format!(
                            "range scan prefix ({}) {}, {}",
                            prefix.join(", "),
                            bound_str(lower, true),
                            bound_str(upper, false)
                        )
                    }
                };
                let limit = limit.map(|l| format!(" limit {l}")).unwrap_or_default();
                format!("scan {}: {how}{limit}", table.name)
            }
            Node::Values { rows } => format!("values: {} row(s)", rows.len()),
            Node::Filter { predicate, .. } => format!("filter: {predicate}"),
            Node::Project { exprs, .. } => {
                let e: Vec<String> = exprs.iter().map(|e| e.to_string()).collect();
                format!("project: {}", e.join(", "))
            }
            Node::Aggregate { group_by, aggs, .. } => {
                let g: Vec<String> = group_by.iter().map(|e| e.to_string()).collect();
                let a: Vec<String> = aggs
                    .iter()
                    .map(|a| match &a.arg {
                        Some(e) => format!(
                            "{:?}({}{e})",
                            a.func,
                            if a.distinct { "DISTINCT " } else { "" }
                        )
                        .to_lowercase(),
                        None => "count(*)".into(),
                    })
                    .collect();
                format!(
                    "aggregate: group by [{}] compute [{}]",
                    g.join(", "),
                    a.join(", ")
                )
            }
            Node::Distinct { .. } => "distinct".into(),
            Node::Sort { keys, .. } => {
                let k: Vec<String> = keys
                    .iter()
                    .map(|k| format!("#{}{}", k.column, if k.desc { " DESC" } else { "" }))
                    .collect();
                format!("sort: {}", k.join(", "))
            }
            Node::Limit { limit, offset, .. } => {
                format!(
                    "limit: {} offset {offset}",
                    limit.map(|l| l.to_string()).unwrap_or("ALL".into())
                )
            }
            Node::Trim { width, .. } => format!("trim to {width} column(s)"),
        };
        let _ = writeln!(out, "{pad}{arrow}{line}");
        match self {
            Node::Scan { .. } | Node::Values { .. } => {}
            Node::Filter { input, .. }
            | Node::Project { input, .. }
            | Node::Aggregate { input, .. }
            | Node::Distinct { input }
            | Node::Sort { input, .. }
            | Node::Limit { input, .. }
            | Node::Trim { input, .. } => input.explain_into(out, depth + 1),
        }
    }
}

impl Plan {
    /// The plan as indented text, one node per line.
    pub fn explain(&self) -> String {
        let mut out = String::new();
        match self {
            Plan::Query { node, .. } => node.explain_into(&mut out, 0),
            Plan::Insert {
                table,
                source,
                on_conflict_do_nothing,
                ..
            } => {
                let _ = writeln!(
                    out,
                    "insert into {}{}",
                    table.name,
                    if *on_conflict_do_nothing {
                        " (on conflict do nothing)"
                    } else {
                        ""
                    }
                );
                source.explain_into(&mut out, 1);
            }
            Plan::Update { table, source, .. } => {
                let _ = writeln!(out, "update {}", table.name);
                source.explain_into(&mut out, 1);
            }
            Plan::Delete { table, source, .. } => {
                let _ = writeln!(out, "delete from {}", table.name);
                source.explain_into(&mut out, 1);
            }
            Plan::Explain(p) => out = p.explain(),
            other => {
                let _ = writeln!(
                    out,
                    "{}",
                    format!("{other:?}")
                        .split([' ', '{', '('])
                        .next()
                        .unwrap_or("statement")
                        .to_lowercase()
                );
            }
        }
        out
    }
}
