//! Plans: what a statement will do, after binding and optimization.
//!
//! A [`Plan`] is one statement. Queries are trees of [`Node`]s that the
//! executor runs bottom-up; DML plans wrap a node that produces the rows to
//! insert, update or delete. `EXPLAIN` prints the tree with [`Plan::explain`].

use std::fmt::Write as _;
use std::ops::Bound;

use crate::catalog::{Column, Table};
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

/// One change of an `ALTER TABLE`.
#[derive(Clone, Debug)]
pub enum AlterOp {
    /// Replaces the hidden row id key with these columns (rewriting the
    /// rows and secondary indexes in the transaction).
    AddPrimaryKey {
        columns: Vec<String>,
    },
    /// The column's id is assigned when it is added.
    AddColumn {
        column: Column,
        if_not_exists: bool,
    },
    DropColumns {
        names: Vec<String>,
        if_exists: bool,
    },
}

/// A planned statement.
#[derive(Clone, Debug)]
pub enum Plan {
    CreateTable {
        table: Table,
        if_not_exists: bool,
    },
    /// `CREATE [OR REPLACE] VIEW`: `table` is the view's descriptor.
    CreateView {
        table: Table,
        or_replace: bool,
        if_not_exists: bool,
    },
    DropView {
        names: Vec<String>,
        if_exists: bool,
    },
    DropTable {
        names: Vec<String>,
        if_exists: bool,
    },
    CreateIndex {
        table: String,
        /// None: named after the table and columns, as PostgreSQL does.
        name: Option<String>,
        /// Column names, and whether each is descending.
        columns: Vec<(String, bool)>,
        unique: bool,
        if_not_exists: bool,
    },
    DropIndex {
        names: Vec<String>,
        if_exists: bool,
    },
    AlterTable {
        table: String,
        if_exists: bool,
        ops: Vec<AlterOp>,
    },
    /// Deletes every row (and index entry) in the transaction.
    Truncate {
        names: Vec<String>,
    },
    /// Statistics are not collected yet: checks the tables exist.
    Analyze {
        names: Vec<String>,
    },
    Insert {
        table: Table,
        /// For each column of the source rows, the table column it fills.
        columns: Vec<usize>,
        /// Evaluated DEFAULT of every table column (None: NULL).
        defaults: Vec<Option<Expr>>,
        source: Node,
        on_conflict: OnConflict,
        returning: Option<Returning>,
        /// CHECK constraints: name and predicate over the table's row.
        checks: Vec<(String, Expr)>,
    },
    Update {
        table: Table,
        source: Node,
        assignments: Vec<(usize, Expr)>,
        returning: Option<Returning>,
        checks: Vec<(String, Expr)>,
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

/// What an INSERT does with a row whose key is taken.
#[derive(Clone, Debug)]
pub enum OnConflict {
    /// Fail with 23505.
    Error,
    /// `ON CONFLICT DO NOTHING`: skip it, whichever key clashes.
    DoNothing,
    /// `ON CONFLICT (pk columns) DO NOTHING`: skip a primary key clash,
    /// fail on another unique index.
    DoNothingOnPrimaryKey,
    /// `ON CONFLICT (pk columns) DO UPDATE SET … [WHERE …]`: a row whose
    /// primary key is taken updates the row there instead. The expressions
    /// read the existing row followed by the proposed one (`excluded`).
    DoUpdate {
        assignments: Vec<(usize, Expr)>,
        selection: Option<Expr>,
    },
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
    /// Through a secondary index: one scan of the index entries whose
    /// columns start with `prefix` and whose next column lies within the
    /// bounds, then a batched get of the rows they point to.
    Index {
        index: u32,
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
    /// `string_agg(x, separator)`.
    StringAgg,
    /// `array_agg(x)` (an array in its text form).
    ArrayAgg,
}

/// One aggregate computed by an Aggregate node.
#[derive(Clone, Debug, PartialEq)]
pub struct AggCall {
    pub func: AggFunc,
    pub arg: Option<Expr>,
    pub distinct: bool,
    /// The type of the argument (for SUM's overflow rules).
    pub arg_type: DataType,
    /// `string_agg`'s separator (a constant).
    pub separator: Option<String>,
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
    /// `generate_series(start, stop [, step])` whose arguments are known
    /// only when it runs (they refer to an enclosing query's row); constant
    /// ones are planned as `Values`.
    Series {
        args: Vec<Expr>,
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
    /// Rows of `left` joined with rows of `right`: the output row is the
    /// left row followed by the right row. Rows pair when every `equi` key
    /// is equal (a hash join; no keys is a nested loop) and `residual`
    /// holds over the joined row.
    Join {
        left: Box<Node>,
        right: Box<Node>,
        kind: JoinKind,
        /// Key pairs: an expression over the left row, one over the right.
        equi: Vec<(Expr, Expr)>,
        residual: Option<Expr>,
        /// Widths of the left and right rows (for NULL padding).
        left_width: usize,
        right_width: usize,
    },
    /// UNION / INTERSECT / EXCEPT [ALL] of two inputs of the same width.
    SetOp {
        left: Box<Node>,
        right: Box<Node>,
        op: SetOpKind,
        all: bool,
    },
}

/// A join's right input that can be read by primary key: a scan of a whole
/// table (under filters) whose every key column the join equates with an
/// expression over the left row. The executor then reads only the rows the
/// left input names (one batched get) instead of the table (a lookup join
/// by the primary key); the hash join over them is unchanged.
pub struct PkLookup<'a> {
    pub table: &'a Table,
    /// Per primary key column, in key order: its expression over the left row.
    pub keys: Vec<&'a Expr>,
}

impl PkLookup<'_> {
    /// Whether `right` (a join input of `kind` on `equi`) can be read by
    /// primary key. Only inner and left joins: right and full joins keep
    /// the right rows nothing matched.
    pub fn of<'a>(
        right: &'a Node,
        kind: JoinKind,
        equi: &'a [(Expr, Expr)],
    ) -> Option<PkLookup<'a>> {
        if !matches!(kind, JoinKind::Inner | JoinKind::Left) {
            return None;
        }
        let mut node = right;
        while let Node::Filter { input, .. } = node {
            node = input;
        }
        let Node::Scan {
            table,
            spans: ScanSpans::Full,
            limit: None,
        } = node
        else {
            return None;
        };
        if table.pk.is_empty() {
            return None;
        }
        let keys = table
            .pk
            .iter()
            .map(|p| {
                equi.iter()
                    .find(|(_, r)| matches!(r, Expr::Column(c) if c == p))
                    .map(|(l, _)| l)
            })
            .collect::<Option<Vec<_>>>()?;
        Some(PkLookup { table, keys })
    }
}

/// The kinds of join.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinKind {
    Inner,
    Left,
    Right,
    Full,
}

/// The set operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetOpKind {
    Union,
    Intersect,
    Except,
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
                    ScanSpans::Full | ScanSpans::Index { .. } => "full scan".to_string(),
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
                let how = match spans {
                    ScanSpans::Index {
                        index,
                        prefix,
                        lower,
                        upper,
                    } => {
                        let name = table
                            .indexes
                            .iter()
                            .find(|i| i.id == *index)
                            .map(|i| i.name.as_str())
                            .unwrap_or("?");
                        let prefix: Vec<String> = prefix.iter().map(|v| v.to_string()).collect();
                        format!(
                            "index {name}: prefix ({}) {}, {}",
                            prefix.join(", "),
                            bound_str(lower, true),
                            bound_str(upper, false)
                        )
                    }
                    _ => how,
                };
                let limit = limit.map(|l| format!(" limit {l}")).unwrap_or_default();
                format!("scan {}: {how}{limit}", table.name)
            }
            Node::Values { rows } => format!("values: {} row(s)", rows.len()),
            Node::Series { .. } => "generate_series".to_string(),
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
            Node::Join {
                kind,
                equi,
                residual,
                right,
                ..
            } => {
                let how = if equi.is_empty() {
                    "nested loop"
                } else if PkLookup::of(right, *kind, equi).is_some() {
                    "hash join (right side read by primary key)"
                } else {
                    "hash join"
                };
                let keys: Vec<String> = equi.iter().map(|(l, r)| format!("{l} = {r}")).collect();
                let on = residual
                    .as_ref()
                    .map(|r| format!(" filter {r}"))
                    .unwrap_or_default();
                format!(
                    "{} {how}{}{on}",
                    format!("{kind:?}").to_lowercase(),
                    if keys.is_empty() {
                        String::new()
                    } else {
                        format!(" on {}", keys.join(" AND "))
                    }
                )
            }
            Node::SetOp { op, all, .. } => format!(
                "{}{}",
                format!("{op:?}").to_lowercase(),
                if *all { " all" } else { "" }
            ),
        };
        let _ = writeln!(out, "{pad}{arrow}{line}");
        match self {
            Node::Scan { .. } | Node::Values { .. } | Node::Series { .. } => {}
            Node::Filter { input, .. }
            | Node::Project { input, .. }
            | Node::Aggregate { input, .. }
            | Node::Distinct { input }
            | Node::Sort { input, .. }
            | Node::Limit { input, .. }
            | Node::Trim { input, .. } => input.explain_into(out, depth + 1),
            Node::Join { left, right, .. } | Node::SetOp { left, right, .. } => {
                left.explain_into(out, depth + 1);
                right.explain_into(out, depth + 1);
            }
        }
    }

    /// The node's inputs.
    fn children_mut(&mut self) -> Vec<&mut Node> {
        match self {
            Node::Scan { .. } | Node::Values { .. } | Node::Series { .. } => vec![],
            Node::Filter { input, .. }
            | Node::Project { input, .. }
            | Node::Aggregate { input, .. }
            | Node::Distinct { input }
            | Node::Sort { input, .. }
            | Node::Limit { input, .. }
            | Node::Trim { input, .. } => vec![input.as_mut()],
            Node::Join { left, right, .. } | Node::SetOp { left, right, .. } => {
                vec![left.as_mut(), right.as_mut()]
            }
        }
    }

    fn children(&self) -> Vec<&Node> {
        match self {
            Node::Scan { .. } | Node::Values { .. } | Node::Series { .. } => vec![],
            Node::Filter { input, .. }
            | Node::Project { input, .. }
            | Node::Aggregate { input, .. }
            | Node::Distinct { input }
            | Node::Sort { input, .. }
            | Node::Limit { input, .. }
            | Node::Trim { input, .. } => vec![input.as_ref()],
            Node::Join { left, right, .. } | Node::SetOp { left, right, .. } => {
                vec![left.as_ref(), right.as_ref()]
            }
        }
    }

    /// The expressions this node evaluates itself (not its inputs').
    fn own_exprs(&self) -> Vec<&Expr> {
        match self {
            Node::Values { rows } => rows.iter().flatten().collect(),
            Node::Series { args } => args.iter().collect(),
            Node::Filter { predicate, .. } => vec![predicate],
            Node::Project { exprs, .. } => exprs.iter().collect(),
            Node::Aggregate { group_by, aggs, .. } => group_by
                .iter()
                .chain(aggs.iter().filter_map(|a| a.arg.as_ref()))
                .collect(),
            Node::Join { equi, residual, .. } => equi
                .iter()
                .flat_map(|(l, r)| [l, r])
                .chain(residual.iter())
                .collect(),
            _ => vec![],
        }
    }

    fn own_exprs_mut(&mut self) -> Vec<&mut Expr> {
        match self {
            Node::Values { rows } => rows.iter_mut().flatten().collect(),
            Node::Series { args } => args.iter_mut().collect(),
            Node::Filter { predicate, .. } => vec![predicate],
            Node::Project { exprs, .. } => exprs.iter_mut().collect(),
            Node::Aggregate { group_by, aggs, .. } => group_by
                .iter_mut()
                .chain(aggs.iter_mut().filter_map(|a| a.arg.as_mut()))
                .collect(),
            Node::Join { equi, residual, .. } => equi
                .iter_mut()
                .flat_map(|(l, r)| [l, r])
                .chain(residual.iter_mut())
                .collect(),
            _ => vec![],
        }
    }

    /// Visits every expression of the plan (see [`Expr::walk_depth`]);
    /// `depth` is the subquery nesting of this plan.
    pub fn walk_exprs(&self, depth: u32, f: &mut dyn FnMut(&Expr, u32)) {
        for e in self.own_exprs() {
            e.walk_depth(depth, f);
        }
        for c in self.children() {
            c.walk_exprs(depth, f);
        }
    }

    /// Mutable [`Node::walk_exprs`].
    pub fn walk_exprs_mut(&mut self, depth: u32, f: &mut dyn FnMut(&mut Expr, u32)) {
        for e in self.own_exprs_mut() {
            e.walk_depth_mut(depth, f);
        }
        for c in self.children_mut() {
            c.walk_exprs_mut(depth, f);
        }
    }

    /// Whether the plan refers to the row of a query around it, `depth`
    /// being this plan's nesting below that query.
    pub fn refers_outside(&self, depth: u32) -> bool {
        let mut found = false;
        self.walk_exprs(depth, &mut |e, d| {
            if let Expr::Outer { depth: od, .. } = e {
                // An outer reference from nesting d reaches d levels up.
                found |= *od >= d;
            }
        });
        found
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
                on_conflict,
                ..
            } => {
                let _ = writeln!(
                    out,
                    "insert into {}{}",
                    table.name,
                    match on_conflict {
                        OnConflict::Error => "",
                        OnConflict::DoUpdate { .. } => " (on conflict do update)",
                        _ => " (on conflict do nothing)",
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
