//! FROM and WHERE: the relations of a query, how they are joined, and where
//! each predicate is evaluated.
//!
//! ```text
//!  FROM a, b JOIN c ON …, d LEFT JOIN e USING (k)   WHERE …
//!       │  │         │     └──────────┬─────────┘
//!       ▼  ▼         ▼                ▼
//!  relations: [a] [b] [c]   [d ⟕ e] (outer joins stay a unit, in syntax order)
//!  predicates: WHERE and inner-join ON, split into conjuncts, each bound
//!              against all the relations' columns in FROM order
//!       │
//!       ├─ reads one relation  → a filter on it (and key spans if it scans a table)
//!       ├─ reads none          → a filter on the first relation joined
//!       └─ reads several       → a join predicate: hash keys (`x = y` with one
//!                                side on each input) or a residual filter
//!  order: start at the relation with the fewest estimated rows, then add
//!         the cheapest relation connected to those joined by a predicate;
//!         cross products only when nothing is connected (left-deep tree)
//!  finally: a projection restores FROM order, which `*` and the binder use
//! ```
//!
//! Row estimates are rules of thumb until statistics exist: a table scan
//! counts 1000 rows, a key lookup as many as its keys, and each pushed
//! predicate multiplies by a fixed selectivity. That is enough to keep a
//! 64-way chain of equi-joins (SQLite's select5) from building cross
//! products.

use sqlparser::ast::{self, JoinConstraint, JoinOperator, TableFactor, TableWithJoins};

use super::{
    expect_bool, ident_name, is_table_function, plan_query, plan_table_function, select_spans,
    system_relation, table_name, Binder, PlanCtx, Scope, ScopeColumn,
};
use crate::catalog::Table;
use crate::error::{Error, Result};
use crate::expr::{BinOp, Expr, Func};
use crate::plan::{JoinKind, Node, ScanSpans};
use crate::types::Value;

/// A relation of the FROM clause, planned.
struct Rel {
    node: Node,
    scope: Scope,
}

impl Rel {
    fn width(&self) -> usize {
        self.scope.columns.len()
    }
}

/// Plans FROM and WHERE of a SELECT: the node producing the filtered,
/// joined rows, their scope, and the table when the query reads exactly one
/// table (for sort elimination).
pub(super) fn plan_from(
    select: &ast::Select,
    cx: &PlanCtx,
    outer: &[&Scope],
) -> Result<(Node, Scope, Option<crate::catalog::Table>)> {
    let mut rels = Vec::new();
    let mut on_conds: Vec<&ast::Expr> = Vec::new();
    for twj in &select.from {
        if flattenable(twj) {
            rels.push(plan_factor(&twj.relation, cx, outer)?);
            for j in &twj.joins {
                rels.push(plan_factor(&j.relation, cx, outer)?);
                if let JoinOperator::Inner(JoinConstraint::On(e))
                | JoinOperator::Join(JoinConstraint::On(e)) = &j.join_operator
                {
                    on_conds.push(e);
                }
            }
        } else {
            rels.push(plan_join_tree(twj, cx, outer)?);
        }
    }
    if rels.is_empty() {
        let node = Node::Values { rows: vec![vec![]] };
        let where_only = Scope::default();
        return match &select.selection {
            None => Ok((node, where_only, None)),
            Some(w) => {
                let (pred, ty) = Binder::new(&where_only, outer, cx, "WHERE").bind(w)?;
                expect_bool(&ty, "WHERE")?;
                Ok((filter(node, vec![pred]), where_only, None))
            }
        };
    }
    let mut names: Vec<&str> = Vec::new();
    for r in &rels {
        if let Some(q) = r.scope.columns.first().and_then(|c| c.table.as_deref()) {
            if names.contains(&q) {
                return Err(Error::DuplicateAlias(q.to_string()));
            }
            names.push(q);
        }
    }
    // Every column of every relation, in FROM order.
    let mut scope = Scope::default();
    let mut offsets = Vec::with_capacity(rels.len());
    for r in &rels {
        offsets.push(scope.columns.len());
        scope.columns.extend(r.scope.columns.iter().cloned());
    }
    let mut conds = Vec::new();
    for e in on_conds {
        let (x, ty) = Binder::new(&scope, outer, cx, "JOIN/ON").bind(e)?;
        expect_bool(&ty, "JOIN/ON")?;
        conds.extend(x.conjuncts());
    }
    let mut where_pred = None;
    if let Some(w) = &select.selection {
        let (x, ty) = Binder::new(&scope, outer, cx, "WHERE").bind(w)?;
        expect_bool(&ty, "WHERE")?;
        where_pred = Some(x.clone());
        conds.extend(x.conjuncts());
    }
    if rels.len() == 1 {
        let rel = rels.pop().expect("one relation");
        let table = match &rel.node {
            Node::Scan { table, .. } => Some(table.clone()),
            _ => None,
        };
        // One relation: the predicate stays whole, as written.
        let preds = match (where_pred, conds.len()) {
            (Some(w), n) if n == w.clone().conjuncts().len() => vec![w],
            _ => conds,
        };
        return Ok((filter(rel.node, preds), rel.scope, table));
    }
    let node = join_relations(rels, &offsets, conds)?;
    Ok((node, scope, None))
}

/// Whether a FROM item is a chain of inner joins with ON conditions (or
/// none), whose relations can be reordered freely.
fn flattenable(twj: &TableWithJoins) -> bool {
    twj.joins.iter().all(|j| match &j.join_operator {
        JoinOperator::Inner(c) | JoinOperator::Join(c) | JoinOperator::CrossJoin(c) => {
            matches!(c, JoinConstraint::On(_) | JoinConstraint::None)
        }
        _ => false,
    })
}

/// Plans one FROM item: a table, a table function, a derived table or a
/// parenthesized join.
fn plan_factor(tf: &TableFactor, cx: &PlanCtx, outer: &[&Scope]) -> Result<Rel> {
    match tf {
        TableFactor::Table { .. } if is_table_function(tf) => {
            let (node, scope) = plan_table_function(tf, cx, outer)?;
            Ok(Rel { node, scope })
        }
        TableFactor::Table {
            name,
            alias,
            args: None,
            ..
        } => {
            if let [ast::ObjectNamePart::Identifier(id)] = name.0.as_slice() {
                if let Some((node, scope)) = cx.plan_cte(&ident_name(id))? {
                    return Ok(Rel {
                        node,
                        scope: match alias {
                            Some(_) => scope.aliased(alias.as_ref())?,
                            None => scope,
                        },
                    });
                }
            }
            if let Some((vt, qualified)) = system_relation(name) {
                if qualified || !cx.has_table(vt.name) {
                    return system_rel(vt, alias.as_ref(), cx);
                }
            }
            let table = cx.table(&table_name(name)?)?;
            if table.is_view() {
                return plan_view(&table, alias.as_ref(), cx);
            }
            let scope = Scope::of_table(&table, None).aliased(alias.as_ref())?;
            Ok(Rel {
                node: Node::Scan {
                    table,
                    spans: ScanSpans::Full,
                    limit: None,
                },
                scope,
            })
        }
        TableFactor::Derived {
            lateral,
            subquery,
            alias,
            ..
        } => {
            if *lateral {
                return Err(Error::FeatureNotSupported("LATERAL".into()));
            }
            let Some(alias) = alias else {
                return Err(Error::Syntax("subquery in FROM must have an alias".into()));
            };
            let (node, columns) = plan_query(subquery, cx, outer)?;
            let scope = Scope {
                columns: columns
                    .into_iter()
                    .map(|c| ScopeColumn::new(None, c.name, c.ty))
                    .collect(),
            }
            .aliased(Some(alias))?;
            Ok(Rel { node, scope })
        }
        TableFactor::NestedJoin {
            table_with_joins,
            alias,
        } => {
            let rel = plan_join_tree(table_with_joins, cx, outer)?;
            Ok(Rel {
                scope: rel.scope.aliased(alias.as_ref())?,
                node: rel.node,
            })
        }
        other => Err(Error::FeatureNotSupported(format!("FROM {other}"))),
    }
}

/// A view named in FROM: its stored query, planned in place, with the
/// view's column names. A view whose tables changed under it (`SELECT *`
/// of a table that gained columns) still yields the columns it was
/// created with.
fn plan_view(view: &Table, alias: Option<&ast::TableAlias>, cx: &PlanCtx) -> Result<Rel> {
    let sql = view.view.as_deref().expect("plan_view is called for views");
    let depth = cx.view_depth.get();
    if depth >= super::MAX_VIEW_DEPTH {
        return Err(Error::FeatureNotSupported(format!(
            "views nested more than {} deep (or a view that refers to itself): \"{}\"",
            super::MAX_VIEW_DEPTH,
            view.name
        )));
    }
    let q = super::parse_view_query(sql)?;
    cx.view_depth.set(depth + 1);
    // The view's query sees no CTE of the statement that names it.
    let ctes = cx.ctes.take();
    let planned = plan_query(&q, cx, &[]);
    *cx.ctes.borrow_mut() = ctes;
    cx.view_depth.set(depth);
    let (node, out) = planned?;
    if out.len() < view.columns.len() {
        return Err(Error::FeatureNotSupported(format!(
            "view \"{}\" no longer matches its tables; recreate it",
            view.name
        )));
    }
    let node = if out.len() > view.columns.len() {
        Node::Project {
            input: Box::new(node),
            exprs: (0..view.columns.len()).map(Expr::Column).collect(),
        }
    } else {
        node
    };
    let scope = Scope {
        columns: view
            .columns
            .iter()
            .zip(out)
            .map(|(c, o)| ScopeColumn::new(Some(view.name.clone()), c.name.clone(), o.ty))
            .collect(),
    }
    .aliased(alias)?;
    Ok(Rel { node, scope })
}

/// A relation of `pg_catalog` or `information_schema`: its rows, generated
/// from the statement's catalog snapshot.
fn system_rel(
    vt: &crate::pg_catalog::VTable,
    alias: Option<&ast::TableAlias>,
    cx: &PlanCtx,
) -> Result<Rel> {
    let rows = vt
        .rows(&cx.snapshot())
        .into_iter()
        .map(|r| r.into_iter().map(Expr::Literal).collect())
        .collect();
    let scope = Scope {
        columns: vt
            .columns
            .iter()
            .map(|(n, ty)| ScopeColumn::new(Some(vt.name.to_string()), n.to_string(), ty.clone()))
            .collect(),
    }
    .aliased(alias)?;
    Ok(Rel {
        node: Node::Values { rows },
        scope,
    })
}

/// Plans a FROM item with joins in the order written (used when it has
/// outer joins, USING or NATURAL).
fn plan_join_tree(twj: &TableWithJoins, cx: &PlanCtx, outer: &[&Scope]) -> Result<Rel> {
    let mut cur = plan_factor(&twj.relation, cx, outer)?;
    for j in &twj.joins {
        let right = plan_factor(&j.relation, cx, outer)?;
        let (kind, constraint) = match &j.join_operator {
            JoinOperator::Inner(c) | JoinOperator::Join(c) | JoinOperator::CrossJoin(c) => {
                (JoinKind::Inner, c)
            }
            JoinOperator::Left(c) | JoinOperator::LeftOuter(c) => (JoinKind::Left, c),
            JoinOperator::Right(c) | JoinOperator::RightOuter(c) => (JoinKind::Right, c),
            JoinOperator::FullOuter(c) => (JoinKind::Full, c),
            other => {
                return Err(Error::FeatureNotSupported(format!(
                    "join {}",
                    format!("{other:?}").split('(').next().unwrap_or("operator")
                )))
            }
        };
        cur = join_pair(cur, right, kind, constraint, cx, outer)?;
    }
    Ok(cur)
}

/// Joins two relations as written.
fn join_pair(
    left: Rel,
    right: Rel,
    kind: JoinKind,
    constraint: &JoinConstraint,
    cx: &PlanCtx,
    outer: &[&Scope],
) -> Result<Rel> {
    let (lw, rw) = (left.width(), right.width());
    let mut scope = Scope {
        columns: left
            .scope
            .columns
            .iter()
            .chain(&right.scope.columns)
            .cloned()
            .collect(),
    };
    let mut conds = Vec::new();
    // USING / NATURAL: (left column, right column) pairs, by position.
    let mut using: Vec<(usize, usize)> = Vec::new();
    let mut using_names: Vec<String> = Vec::new();
    match constraint {
        JoinConstraint::On(e) => {
            let (x, ty) = Binder::new(&scope, outer, cx, "JOIN/ON").bind(e)?;
            expect_bool(&ty, "JOIN/ON")?;
            conds = x.conjuncts();
        }
        JoinConstraint::Using(names) => {
            for n in names {
                let name =
                    n.0.last()
                        .and_then(|p| p.as_ident())
                        .map(ident_name)
                        .ok_or_else(|| Error::Syntax(format!("bad USING column {n}")))?;
                using_names.push(name);
            }
        }
        JoinConstraint::Natural => {
            for c in &left.scope.columns {
                if c.hidden || c.merged || using_names.contains(&c.name) {
                    continue;
                }
                if right
                    .scope
                    .columns
                    .iter()
                    .any(|r| !r.hidden && !r.merged && r.name == c.name)
                {
                    using_names.push(c.name.clone());
                }
            }
        }
        JoinConstraint::None => {}
        JoinConstraint::UsingAlias(..) => {
            return Err(Error::FeatureNotSupported("JOIN USING (…) AS alias".into()))
        }
    }
    for name in &using_names {
        let side = |s: &Scope, which: &str| -> Result<(usize, crate::types::DataType)> {
            s.resolve(None, name).map_err(|e| match e {
                Error::UndefinedColumn(_) => Error::UndefinedColumn(format!(
                    "{name}\" specified in USING clause does not exist in {which} table \""
                )),
                e => e,
            })
        };
        let (l, lt) = side(&left.scope, "left")?;
        let (r, rt) = side(&right.scope, "right")?;
        super::comparable(&lt, &rt, BinOp::Eq)?;
        conds.push(Expr::Binary(
            BinOp::Eq,
            Box::new(Expr::Column(l)),
            Box::new(Expr::Column(lw + r)),
        ));
        using.push((l, lw + r));
    }
    // Conditions on one side only go below the join where the join kind
    // allows: an outer join keeps the rows of its preserved side whatever
    // the condition says about them.
    let (push_left, push_right) = match kind {
        JoinKind::Inner => (true, true),
        JoinKind::Left => (false, true),
        JoinKind::Right => (true, false),
        JoinKind::Full => (false, false),
    };
    let mut left_preds = Vec::new();
    let mut right_preds = Vec::new();
    let mut rest = Vec::new();
    for c in conds {
        let refs = c.row_refs();
        if refs.is_empty() {
            rest.push(c);
        } else if push_left && refs.iter().all(|&i| i < lw) {
            left_preds.push(c);
        } else if push_right && refs.iter().all(|&i| i >= lw) {
            let mut c = c;
            c.visit_row_refs_mut(&mut |i| *i -= lw);
            right_preds.push(c);
        } else {
            rest.push(c);
        }
    }
    let (equi, residual) = split_join_conds(rest, lw);
    let mut node = Node::Join {
        left: Box::new(filter(left.node, left_preds)),
        right: Box::new(filter(right.node, right_preds)),
        kind,
        equi,
        residual,
        left_width: lw,
        right_width: rw,
    };
    if !using.is_empty() {
        // The merged columns come first; the joined tables' own copies
        // stay reachable by qualified name only.
        let mut exprs = Vec::with_capacity(using.len() + lw + rw);
        let mut merged = Vec::with_capacity(using.len());
        for (name, &(l, r)) in using_names.iter().zip(&using) {
            let e = match kind {
                JoinKind::Inner | JoinKind::Left => Expr::Column(l),
                JoinKind::Right => Expr::Column(r),
                JoinKind::Full => {
                    Expr::Func(Func::Coalesce, vec![Expr::Column(l), Expr::Column(r)])
                }
            };
            exprs.push(e);
            let ty = super::unify(&scope.columns[l].ty, &scope.columns[r].ty, "JOIN/USING")?;
            merged.push(ScopeColumn::new(None, name.clone(), ty));
            scope.columns[l].merged = true;
            scope.columns[r].merged = true;
        }
        exprs.extend((0..lw + rw).map(Expr::Column));
        node = Node::Project {
            input: Box::new(node),
            exprs,
        };
        merged.extend(scope.columns);
        scope.columns = merged;
    }
    Ok(Rel { node, scope })
}

/// Joins relations that may be reordered (inner joins), placing each
/// predicate as low as it can go. `offsets` are the relations' first
/// columns in FROM order, which the predicates are bound against.
fn join_relations(mut rels: Vec<Rel>, offsets: &[usize], conds: Vec<Expr>) -> Result<Node> {
    let n = rels.len();
    let widths: Vec<usize> = rels.iter().map(Rel::width).collect();
    let total: usize = widths.iter().sum();
    let rel_of: Vec<usize> = (0..n)
        .flat_map(|r| std::iter::repeat_n(r, widths[r]))
        .collect();
    let mut pushed: Vec<Vec<Expr>> = vec![Vec::new(); n];
    let mut constants = Vec::new();
    let mut joins: Vec<(Expr, Vec<usize>)> = Vec::new();
    for c in conds {
        let mut rs: Vec<usize> = c.row_refs().iter().map(|&g| rel_of[g]).collect();
        rs.sort_unstable();
        rs.dedup();
        match rs.as_slice() {
            [] => constants.push(c),
            [r] => {
                let r = *r;
                let mut c = c;
                c.visit_row_refs_mut(&mut |i| *i -= offsets[r]);
                pushed[r].push(c);
            }
            _ => joins.push((c, rs)),
        }
    }
    let mut est = Vec::with_capacity(n);
    for (r, preds) in pushed.into_iter().enumerate() {
        let node = std::mem::replace(&mut rels[r].node, Node::Values { rows: vec![] });
        let mut e = match &node {
            Node::Values { rows } => rows.len() as f64,
            _ => 1000.0,
        };
        for p in &preds {
            e *= selectivity(p);
        }
        let node = filter(node, preds);
        if let Node::Filter { input, .. } = &node {
            if let Node::Scan {
                spans: ScanSpans::Points(p),
                ..
            } = input.as_ref()
            {
                e = e.min(p.len() as f64);
            }
        }
        rels[r].node = node;
        est.push(e.max(1.0));
    }
    // Greedy order: the smallest relation first, then always the smallest
    // one a predicate connects to those already joined.
    let mut joined = vec![false; n];
    let cheapest = |cands: &mut dyn Iterator<Item = usize>| -> Option<usize> {
        cands.min_by(|&a, &b| est[a].total_cmp(&est[b]).then(a.cmp(&b)))
    };
    let first = cheapest(&mut (0..n)).expect("at least two relations");
    let mut order = vec![first];
    joined[first] = true;
    while order.len() < n {
        let connected = |r: usize| {
            joins
                .iter()
                .any(|(_, rs)| rs.contains(&r) && rs.iter().all(|&x| x == r || joined[x]))
        };
        let next = cheapest(&mut (0..n).filter(|&r| !joined[r] && connected(r)))
            .or_else(|| cheapest(&mut (0..n).filter(|&r| !joined[r])))
            .expect("a relation is left");
        order.push(next);
        joined[next] = true;
    }
    // Build the left-deep tree.
    let mut start = vec![0usize; n];
    let mut placed = vec![false; n];
    let mut used = vec![false; joins.len()];
    let mut take = |r: usize| std::mem::replace(&mut rels[r].node, Node::Values { rows: vec![] });
    let mut node = filter(take(first), constants);
    placed[first] = true;
    let mut width = widths[first];
    for &r in &order[1..] {
        start[r] = width;
        let mut conds = Vec::new();
        for (k, (c, rs)) in joins.iter().enumerate() {
            if !used[k] && rs.contains(&r) && rs.iter().all(|&x| x == r || placed[x]) {
                used[k] = true;
                let mut c = c.clone();
                c.visit_row_refs_mut(&mut |g| {
                    let rel = rel_of[*g];
                    *g = start[rel] + (*g - offsets[rel]);
                });
                conds.push(c);
            }
        }
        let (equi, residual) = split_join_conds(conds, width);
        node = Node::Join {
            left: Box::new(node),
            right: Box::new(take(r)),
            kind: JoinKind::Inner,
            equi,
            residual,
            left_width: width,
            right_width: widths[r],
        };
        placed[r] = true;
        width += widths[r];
    }
    if used.iter().any(|u| !u) {
        return Err(Error::Internal("a join predicate was not placed".into()));
    }
    if order.iter().enumerate().any(|(i, &r)| i != r) {
        node = Node::Project {
            input: Box::new(node),
            exprs: (0..total)
                .map(|g| {
                    let rel = rel_of[g];
                    Expr::Column(start[rel] + (g - offsets[rel]))
                })
                .collect(),
        };
    }
    Ok(node)
}

/// A rule-of-thumb fraction of rows a predicate keeps.
fn selectivity(p: &Expr) -> f64 {
    match p {
        Expr::Binary(BinOp::Eq, l, r)
            if matches!(
                (l.as_ref(), r.as_ref()),
                (Expr::Column(_), Expr::Literal(_)) | (Expr::Literal(_), Expr::Column(_))
            ) =>
        {
            0.05
        }
        Expr::InList {
            list,
            negated: false,
            ..
        } => (0.05 * list.len() as f64).min(1.0),
        Expr::Binary(op, _, _) if op.is_comparison() => 0.33,
        Expr::Binary(BinOp::Or, l, r) => (selectivity(l) + selectivity(r)).min(1.0),
        _ => 0.5,
    }
}

/// Splits a join's conditions (bound over left ++ right rows) into hash
/// keys and a residual filter.
fn split_join_conds(conds: Vec<Expr>, left_width: usize) -> (Vec<(Expr, Expr)>, Option<Expr>) {
    let mut equi = Vec::new();
    let mut residual = Vec::new();
    for c in conds {
        if let Expr::Binary(BinOp::Eq, a, b) = &c {
            if !c.has_subquery() {
                let (ra, rb) = (a.row_refs(), b.row_refs());
                let left_only = |r: &[usize]| !r.is_empty() && r.iter().all(|&i| i < left_width);
                let right_only = |r: &[usize]| !r.is_empty() && r.iter().all(|&i| i >= left_width);
                let pair = if left_only(&ra) && right_only(&rb) {
                    Some((a.as_ref().clone(), b.as_ref().clone()))
                } else if right_only(&ra) && left_only(&rb) {
                    Some((b.as_ref().clone(), a.as_ref().clone()))
                } else {
                    None
                };
                if let Some((l, mut r)) = pair {
                    r.visit_row_refs_mut(&mut |i| *i -= left_width);
                    equi.push((l, r));
                    continue;
                }
            }
        }
        residual.push(c);
    }
    (equi, and_all(residual))
}

fn and_all(preds: Vec<Expr>) -> Option<Expr> {
    preds
        .into_iter()
        .reduce(|a, b| Expr::Binary(BinOp::And, Box::new(a), Box::new(b)))
}

/// Filters a node by the conjunction of `preds`; a table scan right below
/// reads only the key spans they allow.
fn filter(node: Node, preds: Vec<Expr>) -> Node {
    let Some(pred) = and_all(preds) else {
        return node;
    };
    if pred == Expr::Literal(Value::Bool(true)) {
        return node;
    }
    let node = match node {
        Node::Scan {
            table,
            spans: ScanSpans::Full,
            limit,
        } => Node::Scan {
            spans: select_spans(&table, &pred),
            table,
            limit,
        },
        other => other,
    };
    Node::Filter {
        input: Box::new(node),
        predicate: pred,
    }
}
