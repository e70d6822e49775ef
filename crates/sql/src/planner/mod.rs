//! The planner: binds a parsed statement against the catalog and builds a
//! [`Plan`].
//!
//! Binding resolves names (tables through the catalog, columns through a
//! [`Scope`]), infers and checks types, and turns `sqlparser` expressions into
//! [`Expr`]s. Then a small rule-based optimizer runs:
//! - *Key selection*: conjuncts of the WHERE clause that constrain primary key
//!   columns with constants become [`ScanSpans`]: an equality on every key
//!   column is a point lookup (a KV get), an equality prefix plus bounds on
//!   the next column is one KV range scan. The filter is still applied on
//!   top, so key selection never changes results, only how many rows are read.
//! - *Limit pushdown*: `LIMIT n` over an unfiltered, unsorted scan stops the
//!   scan after n rows.
//! - *Sort elimination*: `ORDER BY` the primary key (ascending) is satisfied by
//!   scan order.
//!
//! Queries are planned in this order: FROM and WHERE (joins and predicate
//! placement, in [`from`]) → GROUP BY/aggregates → HAVING → SELECT list
//! (plus hidden ORDER BY columns) → DISTINCT → ORDER BY → LIMIT/OFFSET →
//! trim hidden columns. Set operations plan each operand so and combine
//! them; ORDER BY and LIMIT then apply to the whole.
//!
//! The descriptors of every table a statement names are read first
//! ([`PlanCtx::load`], two batched KV reads), so binding itself does no I/O.
//!
//! *Subqueries* are planned recursively with the scopes of the queries
//! around them: a name that does not resolve in its own FROM clause
//! resolves outward, as an [`Expr::Outer`] reference. The executor
//! substitutes those references with the enclosing row's values and runs
//! the subquery per row (correlated) or once (uncorrelated).
//!
//! # Not done yet
//! CTEs, LATERAL, ANY/ALL, secondary indexes, statistics and cost-based
//! join ordering (the row estimates are rules of thumb), decorrelation
//! (a correlated subquery runs once per outer row; its table scans are
//! cached for the statement).

mod from;
pub mod params;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ops::{Bound, ControlFlow};

use sqlparser::ast::{self, visit_relations, SetExpr, Statement, TableFactor};

use concord_kv::Txn;

use crate::catalog::{self, Column, Table};
use crate::error::{Error, Result};
use crate::expr::{BinOp, Expr, Func, Subquery, SubqueryKind};
use crate::plan::{
    AggCall, AggFunc, AlterOp, Node, OnConflict, OutputColumn, Plan, Returning, ScanSpans,
    SetOpKind, SortKey,
};
use crate::types::{parse_text, DataType, Value};

/// A column visible to expressions.
#[derive(Clone, Debug)]
struct ScopeColumn {
    table: Option<String>,
    name: String,
    ty: DataType,
    /// Not visible at all (the row id of a table without a primary key,
    /// which PostgreSQL does not have either); kept for row positions.
    hidden: bool,
    /// Merged into a `USING` column: left out of `*` and of unqualified
    /// name resolution, reachable as `t.col`.
    merged: bool,
}

impl ScopeColumn {
    fn new(table: Option<String>, name: String, ty: DataType) -> Self {
        ScopeColumn {
            table,
            name,
            ty,
            hidden: false,
            merged: false,
        }
    }
}

/// The columns an expression can refer to, in input-row order.
#[derive(Clone, Debug, Default)]
struct Scope {
    columns: Vec<ScopeColumn>,
}

impl Scope {
    fn of_table(table: &Table, alias: Option<&str>) -> Scope {
        let qualifier = alias.unwrap_or(&table.name).to_string();
        Scope {
            columns: table
                .columns
                .iter()
                .map(|c| ScopeColumn {
                    hidden: c.hidden,
                    ..ScopeColumn::new(Some(qualifier.clone()), c.name.clone(), c.ty.clone())
                })
                .collect(),
        }
    }

    /// The scope of a relation's output columns under an alias, with
    /// `AS t(a, b)` column renames applied.
    fn aliased(&self, alias: Option<&ast::TableAlias>) -> Result<Scope> {
        let Some(alias) = alias else {
            return Ok(self.clone());
        };
        let q = ident_name(&alias.name);
        if alias.columns.len() > self.columns.iter().filter(|c| !c.hidden).count() {
            return Err(Error::InvalidColumnReference(format!(
                "table \"{q}\" has {} columns available but {} columns specified",
                self.columns.len(),
                alias.columns.len()
            )));
        }
        let mut renames = alias.columns.iter();
        Ok(Scope {
            columns: self
                .columns
                .iter()
                .map(|c| {
                    let name = if c.hidden {
                        c.name.clone()
                    } else {
                        renames
                            .next()
                            .map(|r| ident_name(&r.name))
                            .unwrap_or_else(|| c.name.clone())
                    };
                    ScopeColumn {
                        table: Some(q.clone()),
                        name,
                        ..c.clone()
                    }
                })
                .collect(),
        })
    }

    fn resolve(&self, qualifier: Option<&str>, name: &str) -> Result<(usize, DataType)> {
        let mut found = None;
        for (i, c) in self.columns.iter().enumerate() {
            let visible = !c.hidden
                && match qualifier {
                    None => !c.merged,
                    Some(q) => c.table.as_deref() == Some(q),
                };
            if c.name == name && visible {
                if found.is_some() {
                    return Err(Error::AmbiguousColumn(name.to_string()));
                }
                found = Some((i, c.ty.clone()));
            }
        }
        found.ok_or_else(|| match qualifier {
            Some(q) if !self.columns.iter().any(|c| c.table.as_deref() == Some(q)) => {
                Error::MissingFromEntry(q.to_string())
            }
            Some(q) => Error::UndefinedQualifiedColumn(format!("{q}.{name}")),
            None => Error::UndefinedColumn(name.to_string()),
        })
    }
}

/// Normalizes an identifier as PostgreSQL does: unquoted names fold to lower case.
pub fn ident_name(id: &ast::Ident) -> String {
    if id.quote_style.is_some() {
        id.value.clone()
    } else {
        id.value.to_lowercase()
    }
}

/// The table name of an object name (`t`, `public.t`, `defaultdb.public.t`).
pub fn table_name(name: &ast::ObjectName) -> Result<String> {
    let parts: Vec<String> = name
        .0
        .iter()
        .map(|p| match p {
            ast::ObjectNamePart::Identifier(id) => Ok(ident_name(id)),
            other => Err(Error::FeatureNotSupported(format!("object name {other}"))),
        })
        .collect::<Result<_>>()?;
    match parts.as_slice() {
        [t] => Ok(t.clone()),
        [s, t] if s == "public" => Ok(t.clone()),
        [d, s, t] if d == catalog::DEFAULT_DATABASE && s == "public" => Ok(t.clone()),
        _ => Err(Error::FeatureNotSupported(format!(
            "schemas and databases other than {}.public (in {name})",
            catalog::DEFAULT_DATABASE
        ))),
    }
}

fn aggregate_func(name: &str) -> Option<AggFunc> {
    Some(match name {
        "count" => AggFunc::Count,
        "sum" => AggFunc::Sum,
        "min" => AggFunc::Min,
        "max" => AggFunc::Max,
        "avg" => AggFunc::Avg,
        "string_agg" => AggFunc::StringAgg,
        "array_agg" => AggFunc::ArrayAgg,
        _ => return None,
    })
}

fn function_name(f: &ast::Function) -> String {
    f.name
        .0
        .last()
        .and_then(|p| p.as_ident())
        .map(ident_name)
        .unwrap_or_default()
}

/// Aggregation state while binding the SELECT list, HAVING and ORDER BY of
/// an aggregating query.
struct AggContext {
    groups: Vec<(Expr, DataType)>,
    aggs: Vec<(AggCall, DataType)>,
}

struct Binder<'a> {
    scope: &'a Scope,
    /// The scopes of the queries around this one, nearest first: names not
    /// found in `scope` resolve there, as [`Expr::Outer`] references.
    outer: &'a [&'a Scope],
    /// The statement's tables, for subqueries (None where subqueries are
    /// not allowed: DEFAULT, LIMIT, …).
    cx: Option<&'a PlanCtx>,
    agg: Option<&'a mut AggContext>,
    /// Where this expression is, for error messages about aggregates.
    clause: &'static str,
}

impl<'a> Binder<'a> {
    fn plain(scope: &'a Scope, clause: &'static str) -> Self {
        Binder {
            scope,
            outer: &[],
            cx: None,
            agg: None,
            clause,
        }
    }

    /// A binder for a query's own expressions, with subqueries allowed.
    fn new(
        scope: &'a Scope,
        outer: &'a [&'a Scope],
        cx: &'a PlanCtx,
        clause: &'static str,
    ) -> Self {
        Binder {
            scope,
            outer,
            cx: Some(cx),
            agg: None,
            clause,
        }
    }

    /// The same binder without aggregation.
    fn sub(&self, clause: &'static str) -> Binder<'_> {
        Binder {
            scope: self.scope,
            outer: self.outer,
            cx: self.cx,
            agg: None,
            clause,
        }
    }

    /// Resolves a column name here or, failing that, in an enclosing query.
    fn column(&self, qualifier: Option<&str>, name: &str) -> Result<(Expr, DataType)> {
        match self.scope.resolve(qualifier, name) {
            Ok((i, ty)) => Ok((Expr::Column(i), ty)),
            Err(
                e @ (Error::UndefinedColumn(_)
                | Error::UndefinedQualifiedColumn(_)
                | Error::MissingFromEntry(_)),
            ) => {
                for (d, s) in self.outer.iter().enumerate() {
                    match s.resolve(qualifier, name) {
                        Ok((index, ty)) => {
                            return Ok((
                                Expr::Outer {
                                    depth: d as u32 + 1,
                                    index,
                                },
                                ty,
                            ))
                        }
                        Err(
                            Error::UndefinedColumn(_)
                            | Error::UndefinedQualifiedColumn(_)
                            | Error::MissingFromEntry(_),
                        ) => {}
                        Err(other) => return Err(other),
                    }
                }
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Plans a subquery of this expression: its scope chain is this
    /// query's scope and the ones around it.
    fn subquery(&self, q: &ast::Query, kind: SubqueryKind) -> Result<(Expr, Vec<OutputColumn>)> {
        let Some(cx) = self.cx else {
            return Err(Error::FeatureNotSupported(format!(
                "subqueries in {}",
                self.clause
            )));
        };
        let mut outer: Vec<&Scope> = Vec::with_capacity(self.outer.len() + 1);
        outer.push(self.scope);
        outer.extend_from_slice(self.outer);
        let (node, columns) = plan_query(q, cx, &outer)?;
        let correlated = node.refers_outside(1);
        if correlated && self.agg.is_some() {
            return Err(Error::FeatureNotSupported(
                "correlated subqueries in an aggregating query's SELECT list, HAVING or ORDER BY"
                    .into(),
            ));
        }
        Ok((
            Expr::Subquery(Box::new(Subquery {
                id: cx.subquery_id(),
                kind,
                node,
                correlated,
            })),
            columns,
        ))
    }

    fn bind(&mut self, e: &ast::Expr) -> Result<(Expr, DataType)> {
        if self.agg.is_some() {
            // An aggregate call: computed by the Aggregate node.
            if let ast::Expr::Function(f) = e {
                if let Some(func) = aggregate_func(&function_name(f)) {
                    return self.bind_aggregate(func, f);
                }
            }
            // An expression that is a GROUP BY expression.
            if let Ok((bound, _)) = self.sub(self.clause).bind(e) {
                let agg = self.agg.as_deref().expect("checked above");
                if let Some(i) = agg.groups.iter().position(|(g, _)| *g == bound) {
                    return Ok((Expr::Column(i), agg.groups[i].1.clone()));
                }
                if !bound.reads_columns() && !bound.has_subquery() {
                    return self.sub(self.clause).bind(e);
                }
            }
            if let ast::Expr::Identifier(_) | ast::Expr::CompoundIdentifier(_) = e {
                return Err(Error::Grouping(format!(
                    "column \"{e}\" must appear in the GROUP BY clause or be used in an aggregate function"
                )));
            }
        }
        self.bind_inner(e)
    }

    fn bind_aggregate(&mut self, func: AggFunc, f: &ast::Function) -> Result<(Expr, DataType)> {
        let ast::FunctionArguments::List(list) = &f.args else {
            return Err(Error::Syntax(format!(
                "{} requires arguments",
                function_name(f)
            )));
        };
        let distinct = matches!(
            list.duplicate_treatment,
            Some(ast::DuplicateTreatment::Distinct)
        );
        let mut separator = None;
        let (func, arg, arg_type) = match list.args.as_slice() {
            [ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Wildcard)]
                if func == AggFunc::Count =>
            {
                (AggFunc::CountStar, None, DataType::Int8)
            }
            [ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(a))]
                if func != AggFunc::StringAgg =>
            {
                let mut inner = self.sub("aggregate function calls");
                let (arg, ty) = inner.bind_inner_no_agg(a)?;
                (func, Some(arg), ty)
            }
            [ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(a)), ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(sep))]
                if func == AggFunc::StringAgg =>
            {
                let mut inner = self.sub("aggregate function calls");
                let (arg, ty) = inner.bind_inner_no_agg(a)?;
                match inner.bind_inner_no_agg(sep)?.0 {
                    Expr::Literal(Value::Text(s)) => separator = Some(s),
                    Expr::Literal(Value::Null) => separator = None,
                    _ => {
                        return Err(Error::FeatureNotSupported(
                            "string_agg with a separator that is not a constant".into(),
                        ))
                    }
                }
                if !ty.is_string() && ty != DataType::Unknown {
                    return Err(Error::UndefinedFunction(format!("string_agg({ty}, text)")));
                }
                (func, Some(arg), ty)
            }
            _ => {
                return Err(Error::UndefinedFunction(format!(
                    "{}(...) with these arguments",
                    function_name(f)
                )))
            }
        };
        let result_type = match func {
            AggFunc::CountStar | AggFunc::Count => DataType::Int8,
            AggFunc::Sum if arg_type.is_integer() => DataType::Int8,
            AggFunc::Sum | AggFunc::Avg if arg_type.is_decimal() => DataType::Numeric(None),
            AggFunc::Sum | AggFunc::Avg
                if arg_type.is_numeric() || arg_type == DataType::Unknown =>
            {
                DataType::Float8
            }
            AggFunc::Sum | AggFunc::Avg => {
                return Err(Error::UndefinedFunction(format!(
                    "{}({})",
                    format!("{func:?}").to_lowercase(),
                    arg_type
                )))
            }
            AggFunc::Min | AggFunc::Max => arg_type.clone(),
            AggFunc::StringAgg | AggFunc::ArrayAgg => DataType::Text,
        };
        let agg = self
            .agg
            .as_deref_mut()
            .expect("aggregates are bound in aggregate mode");
        let call = AggCall {
            func,
            arg,
            distinct,
            arg_type,
            separator,
        };
        let idx = match agg.aggs.iter().position(|(c, _)| *c == call) {
            Some(i) => i,
            None => {
                agg.aggs.push((call, result_type.clone()));
                agg.aggs.len() - 1
            }
        };
        Ok((Expr::Column(agg.groups.len() + idx), result_type))
    }

    /// Binds an expression in which aggregates are not allowed.
    fn bind_inner_no_agg(&mut self, e: &ast::Expr) -> Result<(Expr, DataType)> {
        self.bind_inner(e)
    }

    fn bind_inner(&mut self, e: &ast::Expr) -> Result<(Expr, DataType)> {
        use ast::Expr as A;
        Ok(match e {
            A::Identifier(id) => self.column(None, &ident_name(id))?,
            A::CompoundIdentifier(parts) => {
                let names: Vec<String> = parts.iter().map(ident_name).collect();
                let (q, n) = match names.as_slice() {
                    [t, c] => (t.as_str(), c.as_str()),
                    [_, t, c] | [_, _, t, c] => (t.as_str(), c.as_str()),
                    _ => return Err(Error::Syntax(format!("improper qualified name {e}"))),
                };
                self.column(Some(q), n)?
            }
            A::Value(v) => bind_literal(&v.value)?,
            A::Nested(inner) => self.bind(inner)?,
            A::UnaryOp {
                op: ast::UnaryOperator::Minus,
                expr,
            } if matches!(expr.as_ref(), A::Value(v) if matches!(v.value, ast::Value::Number(..))) =>
            {
                // Negative literals parse as one number, so that the most
                // negative bigint is representable.
                let A::Value(v) = expr.as_ref() else {
                    unreachable!("matched above")
                };
                let ast::Value::Number(n, long) = &v.value else {
                    unreachable!("matched above")
                };
                bind_literal(&ast::Value::Number(format!("-{n}"), *long))?
            }
            A::UnaryOp { op, expr } => {
                let (x, ty) = self.bind(expr)?;
                match op {
                    ast::UnaryOperator::Not => {
                        expect_bool(&ty, "NOT")?;
                        (Expr::Not(Box::new(x)), DataType::Bool)
                    }
                    ast::UnaryOperator::Minus => {
                        if !ty.is_numeric() && ty != DataType::Unknown && ty != DataType::Interval {
                            return Err(Error::UndefinedOperator(format!("- {ty}")));
                        }
                        // Fold negative literals so that i64::MIN parses.
                        if let Expr::Literal(Value::Int(i)) = &x {
                            return Ok((Expr::Literal(Value::Int(-i)), ty));
                        }
                        if let Expr::Literal(Value::Float(f)) = &x {
                            return Ok((Expr::Literal(Value::Float(-f)), ty));
                        }
                        (fold(Expr::Neg(Box::new(x)))?, ty)
                    }
                    ast::UnaryOperator::Plus => (x, ty),
                    other => {
                        return Err(Error::FeatureNotSupported(format!(
                            "unary operator {other}"
                        )))
                    }
                }
            }
            A::BinaryOp { left, op, right } => {
                let op = match op {
                    ast::BinaryOperator::And => BinOp::And,
                    ast::BinaryOperator::Or => BinOp::Or,
                    ast::BinaryOperator::Eq => BinOp::Eq,
                    ast::BinaryOperator::NotEq => BinOp::NotEq,
                    ast::BinaryOperator::Lt => BinOp::Lt,
                    ast::BinaryOperator::LtEq => BinOp::LtEq,
                    ast::BinaryOperator::Gt => BinOp::Gt,
                    ast::BinaryOperator::GtEq => BinOp::GtEq,
                    ast::BinaryOperator::Plus => BinOp::Add,
                    ast::BinaryOperator::Minus => BinOp::Sub,
                    ast::BinaryOperator::Multiply => BinOp::Mul,
                    ast::BinaryOperator::Divide => BinOp::Div,
                    ast::BinaryOperator::Modulo => BinOp::Mod,
                    ast::BinaryOperator::StringConcat => BinOp::Concat,
                    other => {
                        if let Some((negated, insensitive)) = regex_operator(other) {
                            let (l, lt) = self.bind(left)?;
                            let (r, rt) = self.bind(right)?;
                            for t in [&lt, &rt] {
                                if !t.is_string() && *t != DataType::Unknown {
                                    return Err(Error::UndefinedOperator(format!(
                                        "{lt} {other} {rt}"
                                    )));
                                }
                            }
                            let f = Func::RegexMatch {
                                negated,
                                insensitive,
                            };
                            return Ok((fold(Expr::Func(f, vec![l, r]))?, DataType::Bool));
                        }
                        return Err(Error::FeatureNotSupported(format!("operator {other}")));
                    }
                };
                let l = self.bind(left)?;
                let r = self.bind(right)?;
                bind_binary(op, l, r)?
            }
            A::IsNull(x) => (
                Expr::IsNull(Box::new(self.bind(x)?.0), false),
                DataType::Bool,
            ),
            A::IsNotNull(x) => (
                Expr::IsNull(Box::new(self.bind(x)?.0), true),
                DataType::Bool,
            ),
            A::IsTrue(x) | A::IsNotTrue(x) | A::IsFalse(x) | A::IsNotFalse(x) => {
                let (b, ty) = self.bind(x)?;
                expect_bool(&ty, "IS TRUE")?;
                // x IS TRUE ⇔ coalesce(x = true, false); IS NOT TRUE negates it.
                let truth = matches!(e, A::IsTrue(_) | A::IsNotTrue(_));
                let positive = Expr::Func(
                    Func::Coalesce,
                    vec![
                        Expr::Binary(
                            BinOp::Eq,
                            Box::new(b),
                            Box::new(Expr::Literal(Value::Bool(truth))),
                        ),
                        Expr::Literal(Value::Bool(false)),
                    ],
                );
                if matches!(e, A::IsNotTrue(_) | A::IsNotFalse(_)) {
                    (Expr::Not(Box::new(positive)), DataType::Bool)
                } else {
                    (positive, DataType::Bool)
                }
            }
            A::Between {
                expr,
                negated,
                low,
                high,
            } => {
                let x = self.bind(expr)?;
                let lo = self.bind(low)?;
                let hi = self.bind(high)?;
                let (ge, _) = bind_binary(BinOp::GtEq, x.clone(), lo)?;
                let (le, _) = bind_binary(BinOp::LtEq, x, hi)?;
                let both = Expr::Binary(BinOp::And, Box::new(ge), Box::new(le));
                if *negated {
                    (Expr::Not(Box::new(both)), DataType::Bool)
                } else {
                    (both, DataType::Bool)
                }
            }
            A::Like {
                negated,
                expr,
                pattern,
                escape_char,
                any,
                ..
            }
            | A::ILike {
                negated,
                expr,
                pattern,
                escape_char,
                any,
                ..
            } => {
                if escape_char.is_some() || *any {
                    return Err(Error::FeatureNotSupported(
                        "LIKE ... ESCAPE / LIKE ANY".into(),
                    ));
                }
                let (x, xt) = self.bind(expr)?;
                let (p, pt) = self.bind(pattern)?;
                for t in [&xt, &pt] {
                    if !t.is_string() && *t != DataType::Unknown {
                        return Err(Error::UndefinedOperator(format!("{xt} ~~ {pt}")));
                    }
                }
                (
                    Expr::Like {
                        expr: Box::new(x),
                        pattern: Box::new(p),
                        negated: *negated,
                        case_insensitive: matches!(e, A::ILike { .. }),
                    },
                    DataType::Bool,
                )
            }
            A::In {
                expr,
                target: ast::InTarget::Subquery(q),
                negated,
                ..
            } => {
                let (x, xt) = self.bind(expr)?;
                let (sq, cols) = self.subquery(
                    q,
                    SubqueryKind::In {
                        expr: Box::new(x),
                        negated: *negated,
                    },
                )?;
                let [col] = cols.as_slice() else {
                    return Err(Error::Syntax("subquery has too many columns".into()));
                };
                comparable(&xt, &col.ty, BinOp::Eq)?;
                (sq, DataType::Bool)
            }
            A::In {
                expr,
                target,
                negated,
                ..
            } => {
                let ast::InTarget::List(list) = target else {
                    return Err(Error::FeatureNotSupported(format!("IN {target}")));
                };
                let (x, xt) = self.bind(expr)?;
                let mut items = Vec::with_capacity(list.len());
                for item in list {
                    let (it, itt) = self.bind(item)?;
                    let (_, coerced) = coerce_pair((x.clone(), xt.clone()), (it, itt))?;
                    items.push(coerced.0);
                }
                (
                    Expr::InList {
                        expr: Box::new(x),
                        list: items,
                        negated: *negated,
                    },
                    DataType::Bool,
                )
            }
            A::Cast {
                expr, data_type, ..
            } => {
                let (x, xt) = self.bind(expr)?;
                if let Some(reg) = reg_type(data_type) {
                    return self.bind_reg_cast(&reg, x, xt);
                }
                let ty = bind_type(data_type)?;
                let cast = Expr::Cast(Box::new(x), ty.clone());
                if cast.is_constant() {
                    (Expr::Literal(cast.eval(&[])?), ty)
                } else {
                    (cast, ty)
                }
            }
            A::Case {
                operand,
                conditions,
                else_result,
                ..
            } => {
                let operand = operand.as_ref().map(|o| self.bind(o)).transpose()?;
                let mut whens = Vec::new();
                let mut result_ty = DataType::Unknown;
                for w in conditions {
                    let (c, ct) = self.bind(&w.condition)?;
                    if operand.is_none() {
                        expect_bool(&ct, "CASE/WHEN")?;
                    }
                    let (r, rt) = self.bind(&w.result)?;
                    result_ty = unify(&result_ty, &rt, "CASE")?;
                    whens.push((c, r));
                }
                let else_ = match else_result {
                    Some(e) => {
                        let (x, t) = self.bind(e)?;
                        result_ty = unify(&result_ty, &t, "CASE")?;
                        Some(Box::new(x))
                    }
                    None => None,
                };
                (
                    Expr::Case {
                        operand: operand.map(|(o, _)| Box::new(o)),
                        whens,
                        else_,
                    },
                    result_ty,
                )
            }
            A::Function(f) => self.bind_function(f)?,
            A::Ceil {
                expr,
                field: ast::CeilFloorKind::DateTimeField(ast::DateTimeField::NoDateTime),
            }
            | A::Floor {
                expr,
                field: ast::CeilFloorKind::DateTimeField(ast::DateTimeField::NoDateTime),
            } => {
                let (x, t) = self.bind(expr)?;
                let ceil = matches!(e, A::Ceil { .. });
                if !t.is_numeric() && t != DataType::Unknown {
                    let name = if ceil { "ceil" } else { "floor" };
                    return Err(Error::UndefinedFunction(format!("{name}({t})")));
                }
                let ty = if t.is_decimal() {
                    DataType::Numeric(None)
                } else {
                    DataType::Float8
                };
                let func = if ceil { Func::Ceil } else { Func::Floor };
                (fold(Expr::Func(func, vec![x]))?, ty)
            }
            A::TypedString(ts) => {
                let ty = bind_type(&ts.data_type)?;
                let s = match &ts.value.value {
                    ast::Value::SingleQuotedString(s) => s.clone(),
                    other => other.to_string(),
                };
                (Expr::Literal(parse_text(&s, &ty)?), ty)
            }
            A::Interval(iv) => {
                if iv.leading_field.is_some() || iv.last_field.is_some() {
                    return Err(Error::FeatureNotSupported(
                        "interval field qualifiers (INTERVAL '1' DAY)".into(),
                    ));
                }
                let (x, t) = self.bind(&iv.value)?;
                match x {
                    Expr::Literal(Value::Text(s)) => (
                        Expr::Literal(Value::Interval(crate::datetime::parse_interval(&s)?)),
                        DataType::Interval,
                    ),
                    x if t == DataType::Interval => (x, t),
                    x => (
                        Expr::Cast(Box::new(x), DataType::Interval),
                        DataType::Interval,
                    ),
                }
            }
            A::Extract { field, expr, .. } => {
                let (x, _) = datetime_arg("extract(unknown", self.bind(expr)?)?;
                let field = Expr::Literal(Value::Text(field.to_string()));
                (
                    fold(Expr::Func(Func::DatePart, vec![field, x]))?,
                    DataType::Float8,
                )
            }
            A::Subquery(q) => {
                let (sq, cols) = self.subquery(q, SubqueryKind::Scalar)?;
                let [col] = cols.as_slice() else {
                    return Err(Error::Syntax("subquery must return only one column".into()));
                };
                (sq, col.ty.clone())
            }
            A::Collate { expr, .. } => self.bind(expr)?,
            A::AnyOp {
                left,
                compare_op: ast::BinaryOperator::Eq,
                right,
                ..
            } => {
                let (l, lt) = self.bind(left)?;
                if let A::Subquery(q) = right.as_ref() {
                    let (sq, cols) = self.subquery(
                        q,
                        SubqueryKind::In {
                            expr: Box::new(l),
                            negated: false,
                        },
                    )?;
                    let [col] = cols.as_slice() else {
                        return Err(Error::Syntax("subquery has too many columns".into()));
                    };
                    comparable(&lt, &col.ty, BinOp::Eq)?;
                    return Ok((sq, DataType::Bool));
                }
                let (r, rt) = self.bind(right)?;
                expect_array(&rt, "ANY")?;
                (fold(Expr::Func(Func::AnyEq, vec![l, r]))?, DataType::Bool)
            }
            A::CompoundFieldAccess { root, access_chain } => {
                let [ast::AccessExpr::Subscript(ast::Subscript::Index { index })] =
                    access_chain.as_slice()
                else {
                    return Err(Error::FeatureNotSupported(format!("expression {e}")));
                };
                let (arr, at) = self.bind(root)?;
                expect_array(&at, "a subscript")?;
                let (i, it) = self.bind(index)?;
                if !it.is_integer() && it != DataType::Unknown {
                    return Err(Error::DatatypeMismatch(format!(
                        "array subscript must have type integer, not {it}"
                    )));
                }
                // Arrays are text, so their elements have no type of
                // their own: like an untyped literal, they take the type
                // of what they are compared with.
                (
                    fold(Expr::Func(Func::ArraySubscript, vec![arr, i]))?,
                    DataType::Unknown,
                )
            }
            A::Exists { subquery, negated } => {
                let (sq, _) = self.subquery(subquery, SubqueryKind::Exists)?;
                if *negated {
                    (Expr::Not(Box::new(sq)), DataType::Bool)
                } else {
                    (sq, DataType::Bool)
                }
            }
            other => return Err(Error::FeatureNotSupported(format!("expression {other}"))),
        })
    }

    /// `x::regclass`, `x::regtype`, `x::regnamespace`: an oid's name (a
    /// relation name's oid for `'t'::regclass`), from the catalog snapshot.
    fn bind_reg_cast(&mut self, reg: &str, x: Expr, xt: DataType) -> Result<(Expr, DataType)> {
        use crate::pg_catalog as pgc;
        let snap = self.cx.map(|c| c.snapshot()).unwrap_or_default();
        let from_name = xt.is_string() || xt == DataType::Unknown;
        let (lookup, ty) = match (reg, from_name) {
            ("regclass", true) => (pgc::regclass_in(&snap), DataType::Int8),
            ("regclass", false) => (pgc::regclass_out(&snap), DataType::Text),
            ("regtype", false) => (pgc::regtype_out(), DataType::Text),
            ("regnamespace", false) => (pgc::regnamespace_out(), DataType::Text),
            _ => return Err(Error::FeatureNotSupported(format!("casting {xt} to {reg}"))),
        };
        Ok((fold(Expr::Catalog(lookup, Box::new(x)))?, ty))
    }

    /// The functions of PostgreSQL's system catalogs that psql and drivers
    /// call (see [`crate::pg_catalog`]), or `None` for another name.
    fn bind_catalog_function(
        &mut self,
        name: &str,
        bound: &[(Expr, DataType)],
    ) -> Result<Option<(Expr, DataType)>> {
        use crate::pg_catalog as pgc;
        let snap = || self.cx.map(|c| c.snapshot()).unwrap_or_default();
        let arg = |i: usize| -> Result<Expr> {
            bound.get(i).map(|(e, _)| e.clone()).ok_or_else(|| {
                Error::UndefinedFunction(format!("{name} with {} argument(s)", bound.len()))
            })
        };
        let lookup = |l: pgc::Lookup| -> Result<Expr> { fold(Expr::Catalog(l, Box::new(arg(0)?))) };
        let text = DataType::Text;
        Ok(Some(match name {
            "pg_get_userbyid" => (lookup(pgc::user_by_id())?, text),
            "pg_encoding_to_char" => (lookup(pgc::encoding_name())?, text),
            "pg_table_is_visible" => (lookup(pgc::table_is_visible(&snap()))?, DataType::Bool),
            "pg_get_indexdef" => (lookup(pgc::index_defs(&snap()))?, text),
            "pg_get_constraintdef" => (lookup(pgc::constraint_defs(&snap()))?, text),
            // Expressions are stored as their SQL text already.
            "pg_get_expr" => (arg(0)?, text),
            "format_type" => (
                fold(Expr::Func(Func::FormatType, vec![arg(0)?, arg(1)?]))?,
                text,
            ),
            "pg_relation_is_publishable" => (Expr::Literal(Value::Bool(false)), DataType::Bool),
            "pg_get_statisticsobjdef_columns"
            | "obj_description"
            | "col_description"
            | "shobj_description"
            | "pg_get_viewdef" => (Expr::Literal(Value::Null), text),
            "array_to_string" => (
                fold(Expr::Func(Func::ArrayToString, vec![arg(0)?, arg(1)?]))?,
                text,
            ),
            "array_upper" | "array_length" => (
                fold(Expr::Func(Func::ArrayUpper, vec![arg(0)?, arg(1)?]))?,
                DataType::Int4,
            ),
            "array_position" => (
                fold(Expr::Func(Func::ArrayPosition, vec![arg(0)?, arg(1)?]))?,
                DataType::Int4,
            ),
            "current_schemas" => {
                let implicit = !matches!(arg(0)?, Expr::Literal(Value::Bool(false)));
                let schemas = if implicit {
                    "{pg_catalog,public}"
                } else {
                    "{public}"
                };
                (Expr::Literal(Value::Text(schemas.into())), text)
            }
            "current_schema" => (Expr::Literal(Value::Text("public".into())), text),
            "current_user" | "session_user" | "user" => {
                (Expr::Literal(Value::Text("root".into())), text)
            }
            "pg_backend_pid" => (
                Expr::Literal(Value::Int(std::process::id() as i64)),
                DataType::Int4,
            ),
            _ => return Ok(None),
        }))
    }

    fn bind_function(&mut self, f: &ast::Function) -> Result<(Expr, DataType)> {
        let name = function_name(f);
        if name == "array" {
            if let ast::FunctionArguments::Subquery(q) = &f.args {
                let (sq, cols) = self.subquery(q, SubqueryKind::Array)?;
                if cols.len() != 1 {
                    return Err(Error::Syntax("subquery must return only one column".into()));
                }
                return Ok((sq, DataType::Text));
            }
        }
        if aggregate_func(&name).is_some() {
            return Err(Error::Grouping(format!(
                "aggregate functions are not allowed in {}",
                self.clause
            )));
        }
        let args: Vec<&ast::Expr> = match &f.args {
            ast::FunctionArguments::None => vec![],
            ast::FunctionArguments::List(list) => list
                .args
                .iter()
                .map(|a| match a {
                    ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(e)) => Ok(e),
                    other => Err(Error::FeatureNotSupported(format!(
                        "function argument {other}"
                    ))),
                })
                .collect::<Result<_>>()?,
            ast::FunctionArguments::Subquery(_) => {
                return Err(Error::FeatureNotSupported("subqueries".into()))
            }
        };
        let bound = args
            .iter()
            .map(|a| self.bind(a))
            .collect::<Result<Vec<_>>>()?;
        if let Some(bound) = self.bind_catalog_function(&name, &bound)? {
            return Ok(bound);
        }
        let arity = |n: usize| -> Result<()> {
            if bound.len() == n {
                Ok(())
            } else {
                Err(Error::UndefinedFunction(format!(
                    "{name} with {} argument(s)",
                    bound.len()
                )))
            }
        };
        let string_arg = |i: usize| -> Result<()> {
            let t = &bound[i].1;
            if t.is_string() || *t == DataType::Unknown {
                Ok(())
            } else {
                Err(Error::UndefinedFunction(format!("{name}({t})")))
            }
        };
        let (func, ty) = match name.as_str() {
            "abs" => {
                arity(1)?;
                if !bound[0].1.is_numeric() && bound[0].1 != DataType::Unknown {
                    return Err(Error::UndefinedFunction(format!("abs({})", bound[0].1)));
                }
                let ty = match &bound[0].1 {
                    DataType::Numeric(_) => DataType::Numeric(None),
                    t => t.clone(),
                };
                (Func::Abs, ty)
            }
            "round" | "trunc" | "ceil" | "ceiling" | "floor" | "sign" | "sqrt" => {
                let places = bound.len() == 2 && matches!(name.as_str(), "round" | "trunc");
                if !places {
                    arity(1)?;
                } else if !bound[1].1.is_integer() && bound[1].1 != DataType::Unknown {
                    return Err(Error::UndefinedFunction(format!(
                        "{name}({}, {})",
                        bound[0].1, bound[1].1
                    )));
                }
                let t = &bound[0].1;
                if !t.is_numeric() && *t != DataType::Unknown {
                    return Err(Error::UndefinedFunction(format!("{name}({t})")));
                }
                // An integer argument reads as double precision, as in
                // PostgreSQL; with places, the result is numeric.
                let ty = if t.is_decimal() || places {
                    DataType::Numeric(None)
                } else {
                    DataType::Float8
                };
                let func = match name.as_str() {
                    "round" => Func::Round,
                    "trunc" => Func::Trunc,
                    "ceil" | "ceiling" => Func::Ceil,
                    "floor" => Func::Floor,
                    "sign" => Func::Sign,
                    _ => Func::Sqrt,
                };
                (func, ty)
            }
            "power" | "pow" => {
                arity(2)?;
                for (_, t) in &bound {
                    if !t.is_numeric() && *t != DataType::Unknown {
                        return Err(Error::UndefinedFunction(format!(
                            "{name}({}, {})",
                            bound[0].1, bound[1].1
                        )));
                    }
                }
                let ty = if bound.iter().any(|(_, t)| t.is_decimal()) {
                    DataType::Numeric(None)
                } else {
                    DataType::Float8
                };
                (Func::Power, ty)
            }
            "mod" => {
                arity(2)?;
                let mut bound = bound.into_iter();
                let l = bound.next().expect("arity checked: 2 arguments");
                let r = bound.next().expect("arity checked: 2 arguments");
                return bind_binary(BinOp::Mod, l, r);
            }
            "gen_random_uuid" => {
                arity(0)?;
                (Func::GenRandomUuid, DataType::Uuid)
            }
            "lower" | "upper" => {
                arity(1)?;
                string_arg(0)?;
                (
                    if name == "lower" {
                        Func::Lower
                    } else {
                        Func::Upper
                    },
                    DataType::Text,
                )
            }
            "length" | "char_length" | "character_length" => {
                arity(1)?;
                if bound[0].1 != DataType::Bytea {
                    string_arg(0)?;
                }
                (Func::Length, DataType::Int4)
            }
            "coalesce" => {
                if bound.is_empty() {
                    return Err(Error::Syntax("coalesce requires arguments".into()));
                }
                let mut ty = DataType::Unknown;
                for (_, t) in &bound {
                    ty = unify(&ty, t, "COALESCE")?;
                }
                (Func::Coalesce, ty)
            }
            "nullif" => {
                arity(2)?;
                unify(&bound[0].1, &bound[1].1, "NULLIF")?;
                (Func::NullIf, bound[0].1.clone())
            }
            "version" => {
                arity(0)?;
                (Func::Version, DataType::Text)
            }
            "current_database" => {
                arity(0)?;
                (Func::CurrentDatabase, DataType::Text)
            }
            "unique_rowid" => {
                arity(0)?;
                (Func::UniqueRowid, DataType::Int8)
            }
            // Stable within the transaction: bound to its time.
            "now" | "current_timestamp" | "transaction_timestamp" | "statement_timestamp" => {
                arity(0)?;
                return Ok((
                    Expr::Literal(Value::TimestampTz(statement_time())),
                    DataType::TimestampTz,
                ));
            }
            "localtimestamp" => {
                arity(0)?;
                return Ok((
                    Expr::Literal(Value::Timestamp(statement_time())),
                    DataType::Timestamp,
                ));
            }
            "current_date" => {
                arity(0)?;
                return Ok((
                    Expr::Literal(Value::Date(crate::datetime::ts_to_date(statement_time())?)),
                    DataType::Date,
                ));
            }
            "clock_timestamp" => {
                arity(0)?;
                (Func::ClockTimestamp, DataType::TimestampTz)
            }
            "date_trunc" | "date_part" => {
                arity(2)?;
                string_arg(0)?;
                let mut bound = bound.into_iter();
                let field = bound.next().expect("arity checked: 2 arguments").0;
                let (x, t) = datetime_arg(
                    &format!("{name}(text"),
                    bound.next().expect("arity checked: 2 arguments"),
                )?;
                let args = vec![field, x];
                let (func, ty) = if name == "date_part" {
                    (Func::DatePart, DataType::Float8)
                } else if t == DataType::TimestampTz {
                    (Func::DateTrunc, DataType::TimestampTz)
                } else {
                    (Func::DateTrunc, DataType::Timestamp)
                };
                return Ok((fold(Expr::Func(func, args))?, ty));
            }
            "pg_sleep" => {
                arity(1)?;
                if !bound[0].1.is_numeric() && bound[0].1 != DataType::Unknown {
                    return Err(Error::UndefinedFunction(format!(
                        "pg_sleep({})",
                        bound[0].1
                    )));
                }
                (Func::PgSleep, DataType::Text)
            }
            _ => return Err(Error::UndefinedFunction(format!("{name}()"))),
        };
        Ok((
            Expr::Func(func, bound.into_iter().map(|(e, _)| e).collect()),
            ty,
        ))
    }
}

/// `~`, `~*`, `!~`, `!~*` (also as `OPERATOR(pg_catalog.~)`): (negated,
/// case-insensitive).
fn regex_operator(op: &ast::BinaryOperator) -> Option<(bool, bool)> {
    use ast::BinaryOperator as O;
    let custom;
    let symbol = match op {
        O::PGRegexMatch => "~",
        O::PGRegexIMatch => "~*",
        O::PGRegexNotMatch => "!~",
        O::PGRegexNotIMatch => "!~*",
        O::PGCustomBinaryOperator(parts) => {
            custom = parts.last()?.clone();
            custom.as_str()
        }
        _ => return None,
    };
    Some(match symbol {
        "~" => (false, false),
        "~*" => (false, true),
        "!~" => (true, false),
        "!~*" => (true, true),
        _ => return None,
    })
}

/// Arrays are text in PostgreSQL's array syntax (see `pg_catalog`).
fn expect_array(ty: &DataType, what: &str) -> Result<()> {
    if ty.is_string() || *ty == DataType::Unknown {
        Ok(())
    } else {
        Err(Error::DatatypeMismatch(format!(
            "op ANY/ALL (array) requires array on right side, not type {ty} (in {what})"
        )))
    }
}

fn expect_bool(ty: &DataType, what: &str) -> Result<()> {
    if *ty == DataType::Bool || *ty == DataType::Unknown {
        Ok(())
    } else {
        Err(Error::DatatypeMismatch(format!(
            "argument of {what} must be type boolean, not type {ty}"
        )))
    }
}

/// The common type of two branches (CASE, COALESCE).
fn unify(a: &DataType, b: &DataType, what: &str) -> Result<DataType> {
    Ok(match (a, b) {
        (DataType::Unknown, t) | (t, DataType::Unknown) => t.clone(),
        (x, y) if x == y => x.clone(),
        (x, y) if x.is_integer() && y.is_integer() => DataType::Int8,
        (x, y) if x.is_numeric() && y.is_numeric() => {
            if x.is_float() || y.is_float() {
                DataType::Float8
            } else {
                DataType::Numeric(None)
            }
        }
        (x, y) if x.is_string() && y.is_string() => DataType::Text,
        (DataType::TimestampTz, y) | (y, DataType::TimestampTz) if y.is_datetime() => {
            DataType::TimestampTz
        }
        (x, y) if x.is_datetime() && y.is_datetime() => DataType::Timestamp,
        (x, y) => {
            return Err(Error::DatatypeMismatch(format!(
                "{what} types {x} and {y} cannot be matched"
            )))
        }
    })
}

fn bind_literal(v: &ast::Value) -> Result<(Expr, DataType)> {
    Ok(match v {
        ast::Value::Number(n, _) => {
            if let Ok(i) = n.parse::<i64>() {
                let ty = if i32::try_from(i).is_ok() {
                    DataType::Int4
                } else {
                    DataType::Int8
                };
                (Expr::Literal(Value::Int(i)), ty)
            } else {
                // As in PostgreSQL, `1.5`, `1e3` and integers too big for
                // bigint are numeric.
                let d = crate::numeric::parse(n).map_err(|e| match e {
                    Error::InvalidTextRepresentation { .. } => {
                        Error::Syntax(format!("invalid number {n}"))
                    }
                    e => e,
                })?;
                (Expr::Literal(Value::Numeric(d)), DataType::Numeric(None))
            }
        }
        ast::Value::SingleQuotedString(s) | ast::Value::EscapedStringLiteral(s) => {
            // A string literal's type comes from context; until then it is text.
            (Expr::Literal(Value::Text(s.clone())), DataType::Unknown)
        }
        ast::Value::DollarQuotedString(s) => (
            Expr::Literal(Value::Text(s.value.clone())),
            DataType::Unknown,
        ),
        ast::Value::Boolean(b) => (Expr::Literal(Value::Bool(*b)), DataType::Bool),
        ast::Value::Null => (Expr::Literal(Value::Null), DataType::Unknown),
        ast::Value::Placeholder(p) => {
            let n = p
                .strip_prefix('$')
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|n| *n >= 1)
                .ok_or_else(|| Error::Syntax(format!("bad parameter {p}")))?;
            match params::current(n - 1) {
                Some(ty) => (Expr::Param(n - 1), ty),
                None => {
                    return Err(Error::UndefinedParameter(format!(
                        "there is no parameter {p}"
                    )))
                }
            }
        }
        other => return Err(Error::FeatureNotSupported(format!("literal {other}"))),
    })
}

/// Gives an unknown-typed literal (a string literal or NULL) the type of the
/// other operand, as PostgreSQL resolves `int_col = '5'`.
fn coerce_pair(
    l: (Expr, DataType),
    r: (Expr, DataType),
) -> Result<((Expr, DataType), (Expr, DataType))> {
    let fix = |(e, t): (Expr, DataType), other: &DataType| -> Result<(Expr, DataType)> {
        if t == DataType::Unknown && *other != DataType::Unknown {
            if let Expr::Param(n) = &e {
                params::infer(*n, other);
                return Ok((e, other.clone()));
            }
            if let Expr::Literal(v) = &e {
                let v = match v {
                    Value::Text(s) => parse_text(s, other)?,
                    v => v.clone(),
                };
                return Ok((Expr::Literal(v), other.clone()));
            }
            // Another untyped value (an array element): cast when it runs.
            return Ok((Expr::Cast(Box::new(e), other.clone()), other.clone()));
        }
        Ok((e, t))
    };
    let lt = l.1.clone();
    let rt = r.1.clone();
    let l = fix(l, &rt)?;
    let r = fix(r, &lt)?;
    // Two unknown string literals compare as text.
    let l = if l.1 == DataType::Unknown && matches!(l.0, Expr::Literal(Value::Text(_))) {
        (l.0, DataType::Text)
    } else {
        l
    };
    let r = if r.1 == DataType::Unknown && matches!(r.0, Expr::Literal(Value::Text(_))) {
        (r.0, DataType::Text)
    } else {
        r
    };
    Ok((l, r))
}

fn bind_binary(op: BinOp, l: (Expr, DataType), r: (Expr, DataType)) -> Result<(Expr, DataType)> {
    // `timestamp ± '1 day'`: the untyped literal is an interval.
    let (l, r) = interval_literals(op, l, r);
    // `||` takes its operands as text: an untyped literal stays a string.
    let ((le, lt), (re, rt)) = if op == BinOp::Concat {
        (l, r)
    } else {
        coerce_pair(l, r)?
    };
    let mismatch = || Error::UndefinedOperator(format!("{lt} {} {rt}", op.symbol()));
    let ty = match op {
        BinOp::And | BinOp::Or => {
            expect_bool(&lt, op.symbol())?;
            expect_bool(&rt, op.symbol())?;
            DataType::Bool
        }
        _ if op.is_comparison() => {
            comparable(&lt, &rt, op)?;
            // An integer compared with a numeric is read as one, so that a
            // numeric key column can use the constant as a key.
            let as_numeric = |(e, t): (Expr, DataType), other: &DataType| -> Result<Expr> {
                if t.is_integer() && other.is_decimal() {
                    fold(Expr::Cast(Box::new(e), DataType::Numeric(None)))
                } else {
                    Ok(e)
                }
            };
            let le = as_numeric((le, lt.clone()), &rt)?;
            let re = as_numeric((re, rt.clone()), &lt)?;
            return Ok((
                fold(Expr::Binary(op, Box::new(le), Box::new(re)))?,
                DataType::Bool,
            ));
        }
        BinOp::Concat => {
            if !(lt.is_string()
                || lt == DataType::Unknown
                || rt.is_string()
                || rt == DataType::Unknown)
            {
                return Err(mismatch());
            }
            DataType::Text
        }
        _ if datetime_operands(&lt, &rt) => {
            let t = datetime_result(op, &lt, &rt).ok_or_else(mismatch)?;
            return Ok((fold(Expr::Binary(op, Box::new(le), Box::new(re)))?, t));
        }
        _ => {
            let t = match (&lt, &rt) {
                (DataType::Unknown, t) | (t, DataType::Unknown) if t.is_numeric() => t.clone(),
                (DataType::Unknown, DataType::Unknown) => DataType::Unknown,
                (a, b) if a.is_integer() && b.is_integer() => {
                    let rank = |t: &DataType| match t {
                        DataType::Int2 => 2,
                        DataType::Int4 => 4,
                        _ => 8,
                    };
                    if rank(a) >= rank(b) {
                        a.clone()
                    } else {
                        b.clone()
                    }
                }
                // With a float, float; numeric with numeric or an
                // integer, exact.
                (a, b) if a.is_numeric() && b.is_numeric() => {
                    if a.is_float() || b.is_float() {
                        DataType::Float8
                    } else {
                        DataType::Numeric(None)
                    }
                }
                _ => return Err(mismatch()),
            };
            let e = Expr::Binary(op, Box::new(le), Box::new(re));
            // Integer arithmetic narrower than bigint is checked against its
            // type's range, as in PostgreSQL (int4 + int4 can overflow).
            let e = if matches!(t, DataType::Int2 | DataType::Int4) {
                Expr::Cast(Box::new(e), t.clone())
            } else {
                e
            };
            return Ok((fold(e)?, t));
        }
    };
    Ok((fold(Expr::Binary(op, Box::new(le), Box::new(re)))?, ty))
}

/// The date or time argument of `extract`, `date_part` and `date_trunc`
/// (an untyped literal reads as a timestamp); `call` begins the message of
/// the error for another type: `{call}, {type})`.
fn datetime_arg(call: &str, (x, t): (Expr, DataType)) -> Result<(Expr, DataType)> {
    let t = match t {
        DataType::Unknown => DataType::Timestamp,
        t if t.is_datetime() => t,
        t => return Err(Error::UndefinedFunction(format!("{call}, {t})"))),
    };
    let x = match x {
        Expr::Literal(Value::Text(s)) => Expr::Literal(parse_text(&s, &t)?),
        x => x,
    };
    Ok((x, t))
}

/// Whether an arithmetic operator has a date, timestamp or interval operand.
fn datetime_operands(lt: &DataType, rt: &DataType) -> bool {
    [lt, rt]
        .iter()
        .any(|t| t.is_datetime() || **t == DataType::Interval)
}

/// The result type of date/time arithmetic (PostgreSQL's operators), or
/// None if there is no such operator.
fn datetime_result(op: BinOp, lt: &DataType, rt: &DataType) -> Option<DataType> {
    use DataType as T;
    let ts = |t: &T| matches!(t, T::Timestamp | T::TimestampTz);
    Some(match (op, lt, rt) {
        (BinOp::Add, T::Date, i) | (BinOp::Add, i, T::Date) | (BinOp::Sub, T::Date, i)
            if i.is_integer() =>
        {
            T::Date
        }
        (BinOp::Sub, T::Date, T::Date) => T::Int4,
        (BinOp::Add, T::Date, T::Interval)
        | (BinOp::Add, T::Interval, T::Date)
        | (BinOp::Sub, T::Date, T::Interval) => T::Timestamp,
        (BinOp::Add, t, T::Interval)
        | (BinOp::Add, T::Interval, t)
        | (BinOp::Sub, t, T::Interval)
            if ts(t) =>
        {
            t.clone()
        }
        (BinOp::Sub, a, b) if a.is_datetime() && b.is_datetime() => T::Interval,
        (BinOp::Add | BinOp::Sub, T::Interval, T::Interval) => T::Interval,
        (BinOp::Mul, T::Interval, n)
        | (BinOp::Mul, n, T::Interval)
        | (BinOp::Div, T::Interval, n)
            if n.is_numeric() =>
        {
            T::Interval
        }
        _ => return None,
    })
}

/// In `timestamp ± 'text'` and `interval ± 'text'` the untyped literal is
/// an interval when it reads as one (else, as in `ts - '2024-01-01'`, it
/// takes the other operand's type later).
fn interval_literals(
    op: BinOp,
    l: (Expr, DataType),
    r: (Expr, DataType),
) -> ((Expr, DataType), (Expr, DataType)) {
    if !matches!(op, BinOp::Add | BinOp::Sub) {
        return (l, r);
    }
    let wants_interval = |t: &DataType| {
        matches!(
            t,
            DataType::Timestamp | DataType::TimestampTz | DataType::Interval | DataType::Date
        )
    };
    let fix = |side: (Expr, DataType), other: &DataType| -> (Expr, DataType) {
        if side.1 == DataType::Unknown && wants_interval(other) {
            if let Expr::Literal(Value::Text(s)) = &side.0 {
                if let Ok(iv) = crate::datetime::parse_interval(s) {
                    return (Expr::Literal(Value::Interval(iv)), DataType::Interval);
                }
            }
        }
        side
    };
    let (lt, rt) = (l.1.clone(), r.1.clone());
    (fix(l, &rt), fix(r, &lt))
}

/// Whether values of two types can be compared.
fn comparable(lt: &DataType, rt: &DataType, op: BinOp) -> Result<()> {
    let ok = *lt == DataType::Unknown
        || *rt == DataType::Unknown
        || (lt.is_numeric() && rt.is_numeric())
        || (lt.is_string() && rt.is_string())
        || (lt.is_datetime() && rt.is_datetime())
        || lt == rt;
    if ok {
        Ok(())
    } else {
        Err(Error::UndefinedOperator(format!(
            "{lt} {} {rt}",
            op.symbol()
        )))
    }
}

/// Evaluates constant expressions at plan time.
fn fold(e: Expr) -> Result<Expr> {
    if e.is_constant() && !matches!(e, Expr::Literal(_)) {
        Ok(Expr::Literal(e.eval(&[])?))
    } else {
        Ok(e)
    }
}

/// `CREATE [OR REPLACE] VIEW name [(columns)] AS query`: the query is
/// planned now (so a view that does not bind is refused) and stored as
/// text with the columns it yields.
fn plan_create_view(cv: &ast::CreateView, cx: &PlanCtx) -> Result<Plan> {
    if cv.materialized {
        return Err(Error::FeatureNotSupported("materialized views".into()));
    }
    let name = table_name(&cv.name)?;
    let (_, out) = plan_query(&cv.query, cx, &[])?;
    if cv.columns.len() > out.len() {
        return Err(Error::Syntax(
            "CREATE VIEW specifies more column names than columns".into(),
        ));
    }
    let mut columns: Vec<Column> = Vec::with_capacity(out.len());
    for (i, c) in out.into_iter().enumerate() {
        let col_name = cv
            .columns
            .get(i)
            .map(|d| ident_name(&d.name))
            .unwrap_or(c.name);
        if columns.iter().any(|x| x.name == col_name) {
            return Err(Error::DuplicateColumn(col_name));
        }
        columns.push(Column {
            id: i as u32 + 1,
            name: col_name,
            // An untyped literal's column is text, as in PostgreSQL.
            ty: match c.ty {
                DataType::Unknown => DataType::Text,
                t => t,
            },
            nullable: true,
            default: None,
            hidden: false,
        });
    }
    let next_column_id = columns.len() as u32 + 1;
    Ok(Plan::CreateView {
        table: Table {
            id: 0,
            name,
            columns,
            pk: vec![],
            primary_id: catalog::PRIMARY_INDEX_ID,
            indexes: vec![],
            next_index_id: catalog::PRIMARY_INDEX_ID + 1,
            next_column_id,
            checks: vec![],
            fillfactor: 0,
            version: 0,
            view: Some(cv.query.to_string()),
        },
        or_replace: cv.or_replace,
        if_not_exists: cv.if_not_exists,
    })
}

/// How deep views may refer to views.
const MAX_VIEW_DEPTH: usize = 32;

/// Adds the names of the relations `node` mentions to `names`, each once.
fn collect_relation_names<V: ast::Visit>(node: &V, names: &mut Vec<String>) {
    let _ = visit_relations(node, |n| {
        if let Ok(t) = table_name(n) {
            if !names.contains(&t) {
                names.push(t);
            }
        }
        ControlFlow::<()>::Continue(())
    });
}

/// A stored view query, parsed.
pub(crate) fn parse_view_query(sql: &str) -> Result<Box<ast::Query>> {
    let dialect = sqlparser::dialect::PostgreSqlDialect {};
    sqlparser::parser::Parser::new(&dialect)
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_query())
        .map_err(|e| Error::Internal(format!("stored view query {sql:?} does not parse: {e}")))
}

/// Whether a column's type is `SMALLSERIAL`, `SERIAL` or `BIGSERIAL`.
fn serial_type(t: &ast::DataType) -> bool {
    match t {
        ast::DataType::Custom(name, _) => matches!(
            custom_type_name(name).as_str(),
            "serial" | "serial2" | "serial4" | "serial8" | "smallserial" | "bigserial"
        ),
        _ => false,
    }
}

/// `NUMERIC`, `NUMERIC(p)`, `NUMERIC(p, s)`.
fn numeric_type(info: &ast::ExactNumberInfo) -> Result<DataType> {
    let (p, s) = match info {
        ast::ExactNumberInfo::None => return Ok(DataType::Numeric(None)),
        ast::ExactNumberInfo::Precision(p) => (*p, 0),
        ast::ExactNumberInfo::PrecisionAndScale(p, s) => (*p, *s),
    };
    if p < 1 || p > u64::from(crate::numeric::MAX_PRECISION) {
        return Err(Error::InvalidParameterValue(format!(
            "NUMERIC precision {p} must be between 1 and {}",
            crate::numeric::MAX_PRECISION
        )));
    }
    let s = u64::try_from(s)
        .map_err(|_| Error::FeatureNotSupported("NUMERIC with a negative scale".into()))?;
    if s > p {
        return Err(Error::InvalidParameterValue(format!(
            "NUMERIC scale {s} must be between 0 and precision {p}"
        )));
    }
    if s > 28 {
        return Err(Error::FeatureNotSupported(format!(
            "NUMERIC scale {s} (at most 28 places after the point)"
        )));
    }
    Ok(DataType::Numeric(Some((p as u32, s as u32))))
}

/// The SQL type named by a column definition or cast.
pub fn bind_type(t: &ast::DataType) -> Result<DataType> {
    use ast::DataType as D;
    let len = |l: &Option<ast::CharacterLength>| -> Result<Option<u32>> {
        match l {
            None => Ok(None),
            Some(ast::CharacterLength::IntegerLength { length, .. }) => {
                if *length == 0 || *length > 10_485_760 {
                    return Err(Error::InvalidParameterValue(
                        "length for type varchar must be between 1 and 10485760".into(),
                    ));
                }
                Ok(Some(*length as u32))
            }
            Some(ast::CharacterLength::Max) => Ok(None),
        }
    };
    Ok(match t {
        D::Bool | D::Boolean => DataType::Bool,
        D::SmallInt(_) | D::Int2(_) => DataType::Int2,
        D::Int(_) | D::Integer(_) | D::Int4(_) => DataType::Int4,
        D::BigInt(_) | D::Int8(_) => DataType::Int8,
        D::Real | D::Float4 => DataType::Float4,
        D::Float(info) => match info {
            ast::ExactNumberInfo::Precision(p) if *p <= 24 => DataType::Float4,
            _ => DataType::Float8,
        },
        D::Double(_) | D::DoublePrecision | D::Float8 | D::Float64 => DataType::Float8,
        D::Text | D::String(_) => DataType::Text,
        D::Varchar(l) | D::CharacterVarying(l) | D::CharVarying(l) => DataType::Varchar(len(l)?),
        // `char` alone is char(1).
        D::Char(l) | D::Character(l) => DataType::Char(Some(len(l)?.unwrap_or(1))),
        D::Date => DataType::Date,
        D::Timestamp(_, ast::TimezoneInfo::None | ast::TimezoneInfo::WithoutTimeZone) => {
            DataType::Timestamp
        }
        D::Timestamp(_, ast::TimezoneInfo::WithTimeZone | ast::TimezoneInfo::Tz) => {
            DataType::TimestampTz
        }
        D::Interval { .. } => DataType::Interval,
        D::Numeric(info) | D::Decimal(info) | D::Dec(info) => numeric_type(info)?,
        D::Bytea => DataType::Bytea,
        D::Uuid => DataType::Uuid,
        // Arrays are kept in their text form (see `pg_catalog`).
        D::Array(_) => DataType::Text,
        D::Custom(name, _) => match custom_type_name(name).as_str() {
            "string" | "name" | "\"char\"" | "char" | "pg_node_tree" | "int2vector"
            | "oidvector" | "aclitem" => DataType::Text,
            "text" => DataType::Text,
            "oid" | "regproc" => DataType::Int8,
            "bpchar" => DataType::Char(None),
            "timestamptz" => DataType::TimestampTz,
            _ => return Err(Error::FeatureNotSupported(format!("type {name}"))),
        },
        other => return Err(Error::FeatureNotSupported(format!("type {other}"))),
    })
}

/// A type name as written, lowercased, without a `pg_catalog.` schema.
fn custom_type_name(name: &ast::ObjectName) -> String {
    let s = name.to_string().to_ascii_lowercase();
    match s.strip_prefix("pg_catalog.") {
        Some(rest) => rest.to_string(),
        None => s,
    }
}

/// The `reg*` type a cast names, if it does.
fn reg_type(t: &ast::DataType) -> Option<String> {
    match t {
        ast::DataType::Regclass => Some("regclass".into()),
        ast::DataType::Custom(name, _) => {
            let n = custom_type_name(name);
            matches!(n.as_str(), "regclass" | "regtype" | "regnamespace").then_some(n)
        }
        _ => None,
    }
}

/// The system relation an object name refers to (`pg_catalog.x`,
/// `information_schema.x`, or a bare `pg_catalog` name), and whether it was
/// qualified (a bare name yields to a user table of the same name).
fn system_relation(name: &ast::ObjectName) -> Option<(&'static crate::pg_catalog::VTable, bool)> {
    let parts: Vec<String> = name
        .0
        .iter()
        .map(|p| p.as_ident().map(ident_name))
        .collect::<Option<_>>()?;
    match parts.as_slice() {
        [t] => crate::pg_catalog::relation(None, t).map(|v| (v, false)),
        [s, t] | [_, s, t] if crate::pg_catalog::is_system_schema(s) => {
            crate::pg_catalog::relation(Some(s), t).map(|v| (v, true))
        }
        _ => None,
    }
}

/// Whether planning `stmt` needs the catalog snapshot: it reads a system
/// relation, calls a catalog function or casts to a `reg*` type.
fn needs_catalog(stmt: &Statement) -> bool {
    let mut needed = false;
    let _ = visit_relations(stmt, |n| {
        needed |= system_relation(n).is_some();
        ControlFlow::<()>::Continue(())
    });
    if needed {
        return true;
    }
    let _ = ast::visit_expressions(stmt, |e| {
        match e {
            ast::Expr::Function(f) if function_name(f).starts_with("pg_") => needed = true,
            ast::Expr::Cast { data_type, .. } if reg_type(data_type).is_some() => needed = true,
            _ => {}
        }
        ControlFlow::<()>::Continue(())
    });
    needed
}

thread_local! {
    /// The transaction's time while a statement is planned ([`plan_with`]).
    static STATEMENT_TIME: Cell<Option<i64>> = const { Cell::new(None) };
}

/// `now()`: the time of the transaction whose statement is being planned
/// (the clock when planning outside one).
fn statement_time() -> i64 {
    STATEMENT_TIME
        .with(|t| t.get())
        .unwrap_or_else(crate::datetime::now_micros)
}

/// What planning a statement needs besides its text: the descriptors of
/// the tables it names, read from KV in the statement's transaction before
/// planning starts (so that binding, subqueries included, needs no I/O).
pub struct PlanCtx {
    tables: HashMap<String, Table>,
    next_subquery: Cell<usize>,
    /// The CTEs in scope while planning, innermost last. A reference plans
    /// the CTE's query again where it is used (CTEs are inlined).
    ctes: RefCell<Vec<Cte>>,
    /// The transaction's time (`now()`), as a timestamptz.
    now: i64,
    /// Every descriptor, when the statement reads the system catalogs
    /// ([`crate::pg_catalog`]).
    snapshot: Option<std::sync::Arc<crate::pg_catalog::Snapshot>>,
    /// How many views deep the planner is (a bound on views of views).
    view_depth: Cell<usize>,
}

/// A CTE in scope.
#[derive(Clone)]
struct Cte {
    name: String,
    query: ast::Query,
    alias: ast::TableAlias,
    /// How many CTEs were in scope where it was defined: what its own
    /// query may see.
    visible: usize,
}

impl PlanCtx {
    /// Reads the tables `stmt` names (those that exist: a missing one is
    /// reported when the binder meets it).
    pub async fn load(stmt: &Statement, txn: &mut Txn) -> Result<PlanCtx> {
        let mut names: Vec<String> = Vec::new();
        collect_relation_names(stmt, &mut names);
        let mut found = catalog::get_tables(txn, &names).await?;
        // The tables views name, and the views they name, to a bound depth.
        let mut depth = 0;
        // Views fetched in an earlier round have been expanded already.
        let mut expanded = 0;
        loop {
            let mut more: Vec<String> = Vec::new();
            for t in found[expanded..].iter().flatten() {
                if let Some(sql) = &t.view {
                    collect_relation_names(&*parse_view_query(sql)?, &mut more);
                }
            }
            more.retain(|n| !names.contains(n));
            expanded = found.len();
            if more.is_empty() || depth == MAX_VIEW_DEPTH {
                break;
            }
            depth += 1;
            found.extend(catalog::get_tables(txn, &more).await?);
            names.extend(more);
        }
        let snapshot = if needs_catalog(stmt) {
            Some(std::sync::Arc::new(crate::pg_catalog::Snapshot {
                tables: catalog::list_tables(txn).await?,
            }))
        } else {
            None
        };
        Ok(PlanCtx {
            snapshot,
            tables: names
                .into_iter()
                .zip(found)
                .filter_map(|(n, t)| t.map(|t| (n, t)))
                .collect(),
            next_subquery: Cell::new(0),
            ctes: RefCell::new(Vec::new()),
            now: crate::datetime::from_unix_nanos(txn.read_ts().wall),
            view_depth: Cell::new(0),
        })
    }

    /// Plans the query of the innermost CTE called `name`, if there is one:
    /// its node and its scope (named after the CTE, with column aliases).
    fn plan_cte(&self, name: &str) -> Result<Option<(Node, Scope)>> {
        let found = self
            .ctes
            .borrow()
            .iter()
            .enumerate()
            .rev()
            .find(|(_, c)| c.name == name)
            .map(|(i, c)| (i, c.clone()));
        let Some((at, cte)) = found else {
            return Ok(None);
        };
        // The CTE's query sees only the CTEs defined before it.
        let hidden = self.ctes.borrow_mut().split_off(cte.visible);
        let planned = plan_query(&cte.query, self, &[]);
        let mut ctes = self.ctes.borrow_mut();
        ctes.truncate(cte.visible);
        ctes.extend(hidden);
        debug_assert!(ctes.len() > at, "the CTE stack is restored");
        drop(ctes);
        let (node, columns) = planned?;
        let scope = Scope {
            columns: columns
                .into_iter()
                .map(|c| ScopeColumn::new(None, c.name, c.ty))
                .collect(),
        }
        .aliased(Some(&cte.alias))
        .map_err(|e| match e {
            Error::InvalidColumnReference(m) => {
                Error::InvalidColumnReference(m.replacen("table", "WITH query", 1))
            }
            e => e,
        })?;
        Ok(Some((node, scope)))
    }

    /// The catalog snapshot (empty if the statement was not expected to
    /// need one).
    fn snapshot(&self) -> std::sync::Arc<crate::pg_catalog::Snapshot> {
        self.snapshot.clone().unwrap_or_default()
    }

    /// Whether the statement names a user table called `name`.
    fn has_table(&self, name: &str) -> bool {
        self.tables.contains_key(name)
    }

    /// A table the statement names.
    fn table(&self, name: &str) -> Result<Table> {
        self.tables
            .get(name)
            .cloned()
            .ok_or_else(|| Error::UndefinedTable(name.to_string()))
    }

    fn subquery_id(&self) -> usize {
        let id = self.next_subquery.get();
        self.next_subquery.set(id + 1);
        id
    }
}

/// Plans a statement. Reads the catalog through `txn`.
pub async fn plan(stmt: &Statement, txn: &mut Txn) -> Result<Plan> {
    let cx = PlanCtx::load(stmt, txn).await?;
    plan_with(stmt, &cx)
}

/// Plans a statement against descriptors already read.
pub fn plan_with(stmt: &Statement, cx: &PlanCtx) -> Result<Plan> {
    let previous = STATEMENT_TIME.with(|t| t.replace(Some(cx.now)));
    let out = plan_statement(stmt, cx);
    STATEMENT_TIME.with(|t| t.set(previous));
    out
}

fn plan_statement(stmt: &Statement, cx: &PlanCtx) -> Result<Plan> {
    match stmt {
        Statement::Query(q) => match (q.with.as_ref(), q.body.as_ref()) {
            // WITH … INSERT / UPDATE / DELETE.
            (
                Some(with),
                SetExpr::Insert(inner) | SetExpr::Update(inner) | SetExpr::Delete(inner),
            ) => with_ctes(with, cx, || plan_statement(inner, cx)),
            _ => {
                let (node, columns) = plan_query(q, cx, &[])?;
                Ok(Plan::Query { node, columns })
            }
        },
        Statement::CreateTable(ct) => plan_create_table(ct),
        Statement::CreateView(cv) => plan_create_view(cv, cx),
        Statement::Drop {
            object_type,
            if_exists,
            names,
            ..
        } => {
            let names = names.iter().map(table_name).collect::<Result<Vec<_>>>()?;
            match object_type {
                ast::ObjectType::Table => Ok(Plan::DropTable {
                    names,
                    if_exists: *if_exists,
                }),
                ast::ObjectType::Index => Ok(Plan::DropIndex {
                    names,
                    if_exists: *if_exists,
                }),
                ast::ObjectType::View => Ok(Plan::DropView {
                    names,
                    if_exists: *if_exists,
                }),
                other => Err(Error::FeatureNotSupported(format!("DROP {other}"))),
            }
        }
        Statement::CreateIndex(ci) => plan_create_index(ci),
        Statement::AlterTable(at) => plan_alter_table(at),
        Statement::Truncate(t) => Ok(Plan::Truncate {
            names: t
                .table_names
                .iter()
                .map(|t| table_name(&t.name))
                .collect::<Result<_>>()?,
        }),
        Statement::Analyze(a) => Ok(Plan::Analyze {
            names: a.table_name.iter().map(table_name).collect::<Result<_>>()?,
        }),
        Statement::Insert(ins) => plan_insert(ins, cx),
        Statement::Update(upd) => plan_update(upd, cx),
        Statement::Delete(del) => plan_delete(del, cx),
        Statement::Explain {
            statement, analyze, ..
        } => {
            if *analyze {
                return Err(Error::FeatureNotSupported("EXPLAIN ANALYZE".into()));
            }
            Ok(Plan::Explain(Box::new(plan_statement(statement, cx)?)))
        }
        Statement::StartTransaction { .. } => Ok(Plan::Begin),
        Statement::Commit { .. } => Ok(Plan::Commit),
        Statement::Rollback {
            savepoint: None, ..
        } => Ok(Plan::Rollback),
        Statement::Set(_) | Statement::ShowVariable { .. } => plan_session_statement(stmt),
        Statement::ShowTables { .. } => Ok(Plan::ShowTables),
        other => Err(Error::FeatureNotSupported(format!(
            "statement {}",
            other
                .to_string()
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
        ))),
    }
}

/// A column's DEFAULT as stored: checked now that it binds and fits the
/// column; bound again by each INSERT.
fn check_default(e: &ast::Expr, ty: &DataType) -> Result<String> {
    let (x, _) = Binder::plain(&Scope::default(), "DEFAULT expressions").bind(e)?;
    if x.is_constant() {
        x.eval(&[])?.assign(ty)?;
    }
    Ok(e.to_string())
}

/// Applies a NULL, NOT NULL or DEFAULT option of a column definition;
/// false for any other option (the caller's).
fn basic_column_option(
    opt: &ast::ColumnOption,
    ty: &DataType,
    nullable: &mut bool,
    default: &mut Option<String>,
) -> Result<bool> {
    match opt {
        ast::ColumnOption::NotNull => *nullable = false,
        ast::ColumnOption::Null => *nullable = true,
        ast::ColumnOption::Default(e) => *default = Some(check_default(e, ty)?),
        _ => return Ok(false),
    }
    Ok(true)
}

/// `ALTER TABLE t ADD PRIMARY KEY (…) | ADD [COLUMN] … | DROP [COLUMN] …`.
fn plan_alter_table(at: &ast::AlterTable) -> Result<Plan> {
    let table = table_name(&at.name)?;
    let mut ops = Vec::new();
    for op in &at.operations {
        ops.push(match op {
            ast::AlterTableOperation::AddConstraint {
                constraint: ast::TableConstraint::PrimaryKey(pkc),
                ..
            } => AlterOp::AddPrimaryKey {
                columns: pkc
                    .columns
                    .iter()
                    .map(|c| match &c.column.expr {
                        ast::Expr::Identifier(id) => Ok(ident_name(id)),
                        other => Err(Error::FeatureNotSupported(format!(
                            "primary key on expression {other}"
                        ))),
                    })
                    .collect::<Result<_>>()?,
            },
            ast::AlterTableOperation::AddColumn {
                if_not_exists,
                column_def: def,
                ..
            } => {
                let ty = bind_type(&def.data_type)?;
                let mut nullable = true;
                let mut default = None;
                for opt in &def.options {
                    if !basic_column_option(&opt.option, &ty, &mut nullable, &mut default)? {
                        return Err(Error::FeatureNotSupported(format!(
                            "ADD COLUMN with {}",
                            opt.option
                        )));
                    }
                }
                AlterOp::AddColumn {
                    column: Column {
                        id: 0,
                        name: ident_name(&def.name),
                        ty,
                        nullable,
                        default,
                        hidden: false,
                    },
                    if_not_exists: *if_not_exists,
                }
            }
            ast::AlterTableOperation::DropColumn {
                column_names,
                if_exists,
                ..
            } => AlterOp::DropColumns {
                names: column_names.iter().map(ident_name).collect(),
                if_exists: *if_exists,
            },
            other => return Err(Error::FeatureNotSupported(format!("ALTER TABLE … {other}"))),
        });
    }
    Ok(Plan::AlterTable {
        table,
        if_exists: at.if_exists,
        ops,
    })
}

fn plan_create_table(ct: &ast::CreateTable) -> Result<Plan> {
    let name = table_name(&ct.name)?;
    if ct.query.is_some() {
        return Err(Error::FeatureNotSupported("CREATE TABLE ... AS".into()));
    }
    let mut columns: Vec<Column> = Vec::new();
    let mut pk: Option<Vec<usize>> = None;
    // (constraint name, columns) and (name, expression, its column).
    let mut uniques: Vec<(Option<String>, Vec<String>)> = Vec::new();
    let mut checks: Vec<(Option<String>, ast::Expr, Option<String>)> = Vec::new();
    let set_pk = |pk: &mut Option<Vec<usize>>, cols: Vec<usize>| -> Result<()> {
        if pk.is_some() {
            return Err(Error::InvalidTableDefinition(format!(
                "multiple primary keys for table \"{name}\" are not allowed"
            )));
        }
        *pk = Some(cols);
        Ok(())
    };
    for (i, def) in ct.columns.iter().enumerate() {
        let col_name = ident_name(&def.name);
        if columns.iter().any(|c| c.name == col_name) {
            return Err(Error::DuplicateColumn(col_name));
        }
        // SERIAL is BIGINT NOT NULL DEFAULT unique_rowid(), as in
        // CockroachDB: unique, increasing per node, not dense.
        let serial = serial_type(&def.data_type);
        let ty = if serial {
            DataType::Int8
        } else {
            bind_type(&def.data_type)?
        };
        let mut nullable = !serial;
        let mut default = serial.then(|| "unique_rowid()".to_string());
        for opt in &def.options {
            if basic_column_option(&opt.option, &ty, &mut nullable, &mut default)? {
                continue;
            }
            match &opt.option {
                ast::ColumnOption::PrimaryKey(_) => set_pk(&mut pk, vec![i])?,
                ast::ColumnOption::Unique(u) => uniques.push((
                    opt.name.as_ref().or(u.name.as_ref()).map(ident_name),
                    vec![col_name.clone()],
                )),
                ast::ColumnOption::Check(c) => checks.push((
                    opt.name.as_ref().or(c.name.as_ref()).map(ident_name),
                    (*c.expr).clone(),
                    Some(col_name.clone()),
                )),
                other => return Err(Error::FeatureNotSupported(format!("column option {other}"))),
            }
        }
        columns.push(Column {
            id: i as u32 + 1,
            name: col_name,
            ty,
            nullable,
            default,
            hidden: false,
        });
    }
    for c in &ct.constraints {
        match c {
            ast::TableConstraint::PrimaryKey(pkc) => {
                let mut cols = Vec::new();
                for col in &pkc.columns {
                    let n = match &col.column.expr {
                        ast::Expr::Identifier(id) => ident_name(id),
                        other => {
                            return Err(Error::FeatureNotSupported(format!(
                                "primary key on expression {other}"
                            )))
                        }
                    };
                    let i = columns
                        .iter()
                        .position(|c| c.name == n)
                        .ok_or_else(|| Error::UndefinedColumn(n.clone()))?;
                    cols.push(i);
                }
                set_pk(&mut pk, cols)?;
            }
            ast::TableConstraint::Unique(u) => {
                let mut cols = Vec::new();
                for col in &u.columns {
                    match &col.column.expr {
                        ast::Expr::Identifier(id) => cols.push(ident_name(id)),
                        other => {
                            return Err(Error::FeatureNotSupported(format!(
                                "unique constraint on expression {other}"
                            )))
                        }
                    }
                }
                uniques.push((u.name.as_ref().map(ident_name), cols));
            }
            ast::TableConstraint::Check(c) => {
                checks.push((c.name.as_ref().map(ident_name), (*c.expr).clone(), None))
            }
            other => {
                return Err(Error::FeatureNotSupported(format!(
                    "table constraint {other}"
                )))
            }
        }
    }
    let pk = match pk {
        Some(pk) => pk,
        None => {
            // No primary key: a hidden row id is the key (see `rowid`).
            let mut name = "rowid".to_string();
            let mut n = 0;
            while columns.iter().any(|c| c.name == name) {
                n += 1;
                name = format!("rowid_{n}");
            }
            columns.push(Column {
                id: columns.len() as u32 + 1,
                name,
                ty: DataType::Int8,
                nullable: false,
                default: Some("unique_rowid()".into()),
                hidden: true,
            });
            vec![columns.len() - 1]
        }
    };
    for &i in &pk {
        columns[i].nullable = false;
    }
    if columns.is_empty() {
        return Err(Error::InvalidTableDefinition(
            "a table needs at least one column".into(),
        ));
    }
    let next_column_id = columns.iter().map(|c| c.id + 1).max().unwrap_or(1);
    let mut table = Table {
        id: 0,
        name,
        columns,
        pk,
        primary_id: catalog::PRIMARY_INDEX_ID,
        indexes: vec![],
        next_index_id: catalog::PRIMARY_INDEX_ID + 1,
        next_column_id,
        checks: vec![],
        fillfactor: storage_params(&ct.table_options)?,
        version: 0,
        view: None,
    };
    // Constraint names follow PostgreSQL: t_col_key, t_col_check, with a
    // number appended when taken.
    let mut taken: Vec<String> = vec![format!("{}_pkey", table.name)];
    let mut pick = |explicit: Option<String>, base: String| -> Result<String> {
        let name = match explicit {
            Some(n) => {
                if taken.contains(&n) {
                    return Err(Error::DuplicateTable(n));
                }
                n
            }
            None => {
                let mut n = base.clone();
                let mut k = 0;
                while taken.contains(&n) {
                    k += 1;
                    n = format!("{base}{k}");
                }
                n
            }
        };
        taken.push(name.clone());
        Ok(name)
    };
    for (explicit, cols) in uniques {
        let mut positions = Vec::new();
        for c in &cols {
            let i = table
                .column_index(c)
                .filter(|&i| !table.columns[i].hidden)
                .ok_or_else(|| Error::UndefinedColumn(c.clone()))?;
            positions.push(i);
        }
        let name = pick(explicit, format!("{}_{}_key", table.name, cols.join("_")))?;
        table.indexes.push(catalog::Index {
            id: table.next_index_id,
            name,
            descending: vec![false; positions.len()],
            columns: positions,
            unique: true,
        });
        table.next_index_id += 1;
    }
    let scope = Scope::of_table(&table, None);
    for (explicit, expr, column) in checks {
        let (x, ty) = Binder::plain(&scope, "check constraints").bind(&expr)?;
        expect_bool(&ty, "CHECK")?;
        // Named after the column it is on, or the one column it reads.
        let col = column.or_else(|| {
            let mut refs = x.row_refs();
            refs.sort_unstable();
            refs.dedup();
            match refs.as_slice() {
                [i] => Some(table.columns[*i].name.clone()),
                _ => None,
            }
        });
        let base = match col {
            Some(c) => format!("{}_{c}_check", table.name),
            None => format!("{}_check", table.name),
        };
        let name = pick(explicit, base)?;
        table.checks.push((name, expr.to_string()));
    }
    Ok(Plan::CreateTable {
        table,
        if_not_exists: ct.if_not_exists,
    })
}

/// `WITH (fillfactor = n)`: accepted and kept; other storage parameters
/// are refused, as PostgreSQL refuses unknown ones.
fn storage_params(opts: &ast::CreateTableOptions) -> Result<u32> {
    let list = match opts {
        ast::CreateTableOptions::None => return Ok(0),
        ast::CreateTableOptions::With(l) => l,
        other => return Err(Error::FeatureNotSupported(format!("table options {other}"))),
    };
    let mut fillfactor = 0;
    for o in list {
        match o {
            ast::SqlOption::KeyValue { key, value }
                if key.to_string().eq_ignore_ascii_case("fillfactor") =>
            {
                let v = match value {
                    ast::Expr::Value(v) => match &v.value {
                        ast::Value::Number(n, _) => n.parse::<u32>().ok(),
                        _ => None,
                    },
                    _ => None,
                };
                match v {
                    Some(n) if (10..=100).contains(&n) => fillfactor = n,
                    _ => {
                        return Err(Error::InvalidParameterValue(format!(
                            "value {value} out of bounds for option \"fillfactor\""
                        )))
                    }
                }
            }
            ast::SqlOption::KeyValue { key, .. } => {
                return Err(Error::InvalidParameterValue(format!(
                    "unrecognized parameter \"{key}\""
                )))
            }
            other => {
                return Err(Error::InvalidParameterValue(format!(
                    "unrecognized parameter \"{other}\""
                )))
            }
        }
    }
    Ok(fillfactor)
}

/// The CHECK constraints of a table, bound for a DML statement.
pub(crate) fn bind_checks(table: &Table) -> Result<Vec<(String, Expr)>> {
    let scope = Scope::of_table(table, None);
    table
        .checks
        .iter()
        .map(|(name, text)| {
            let e = parse_expr(text)?;
            let (x, _) = Binder::plain(&scope, "check constraints").bind(&e)?;
            Ok((name.clone(), x))
        })
        .collect()
}

fn parse_expr(text: &str) -> Result<ast::Expr> {
    let dialect = sqlparser::dialect::PostgreSqlDialect {};
    sqlparser::parser::Parser::new(&dialect)
        .try_with_sql(text)
        .and_then(|mut p| p.parse_expr())
        .map_err(|e| Error::Internal(format!("stored expression {text:?} does not parse: {e}")))
}

fn plan_create_index(ci: &ast::CreateIndex) -> Result<Plan> {
    if ci.predicate.is_some() {
        return Err(Error::FeatureNotSupported("partial indexes (WHERE)".into()));
    }
    if !ci.include.is_empty() {
        return Err(Error::FeatureNotSupported("INCLUDE columns".into()));
    }
    if let Some(u) = &ci.using {
        if !u.to_string().eq_ignore_ascii_case("btree") {
            return Err(Error::FeatureNotSupported(format!("index method {u}")));
        }
    }
    let mut columns = Vec::new();
    for c in &ci.columns {
        let name = match &c.column.expr {
            ast::Expr::Identifier(id) => ident_name(id),
            other => {
                return Err(Error::FeatureNotSupported(format!(
                    "indexes on expressions ({other})"
                )))
            }
        };
        if c.column.options.nulls_first.is_some() {
            return Err(Error::FeatureNotSupported(
                "NULLS FIRST/LAST in an index".into(),
            ));
        }
        let desc = match &c.column.options.sort {
            None | Some(ast::OrderBySort::Asc) => false,
            Some(ast::OrderBySort::Desc) => true,
            Some(ast::OrderBySort::Using(_)) => {
                return Err(Error::FeatureNotSupported(
                    "USING in an index column".into(),
                ))
            }
        };
        columns.push((name, desc));
    }
    Ok(Plan::CreateIndex {
        table: table_name(&ci.table_name)?,
        name: ci.name.as_ref().map(table_name).transpose()?,
        columns,
        unique: ci.unique,
        if_not_exists: ci.if_not_exists,
    })
}

/// The table and alias of a FROM item that must be a plain table.
fn plain_table(tf: &TableFactor) -> Result<(String, Option<String>)> {
    match tf {
        TableFactor::Table {
            name,
            alias,
            args: None,
            ..
        } => Ok((
            table_name(name)?,
            alias.as_ref().map(|a| ident_name(&a.name)),
        )),
        other => Err(Error::FeatureNotSupported(format!("FROM {other}"))),
    }
}

fn is_table_function(tf: &TableFactor) -> bool {
    matches!(tf, TableFactor::Table { args: Some(_), .. })
}

/// `generate_series(start, stop [, step])` in FROM: one integer column named
/// after the alias (or `generate_series`).
fn plan_table_function(tf: &TableFactor, cx: &PlanCtx, outer: &[&Scope]) -> Result<(Node, Scope)> {
    let TableFactor::Table {
        name,
        alias,
        args: Some(args),
        ..
    } = tf
    else {
        return Err(Error::Internal("not a table function".into()));
    };
    let fname = match name.0.as_slice() {
        // Set-returning functions live in pg_catalog.
        [ast::ObjectNamePart::Identifier(s), ast::ObjectNamePart::Identifier(f)]
            if ident_name(s) == "pg_catalog" =>
        {
            ident_name(f)
        }
        _ => table_name(name)?,
    };
    if fname != "generate_series" {
        return Err(Error::UndefinedFunction(format!("{fname}()")));
    }
    let mut exprs = Vec::new();
    for a in &args.args {
        let ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(e)) = a else {
            return Err(Error::FeatureNotSupported(format!(
                "argument {a} of generate_series"
            )));
        };
        // The arguments may refer to the rows of enclosing queries (not to
        // the other FROM items: that would be LATERAL).
        let empty = Scope::default();
        let (x, ty) = Binder::new(&empty, outer, cx, "FROM").bind(e)?;
        if !ty.is_integer() && ty != DataType::Unknown {
            return Err(Error::UndefinedFunction(format!("generate_series({ty})")));
        }
        exprs.push(x);
    }
    if !(2..=3).contains(&exprs.len()) {
        return Err(Error::UndefinedFunction(format!(
            "generate_series with {} arguments",
            exprs.len()
        )));
    }
    let node = if exprs.iter().all(Expr::is_constant) {
        let vals = exprs
            .iter()
            .map(|x| x.eval(&[]))
            .collect::<Result<Vec<_>>>()?;
        let rows = crate::exec::generate_series(&vals)?
            .into_iter()
            .map(|v| vec![Expr::Literal(v)])
            .collect();
        Node::Values { rows }
    } else {
        Node::Series { args: exprs }
    };
    let alias_name = alias.as_ref().map(|a| ident_name(&a.name));
    let column = alias
        .as_ref()
        .and_then(|a| a.columns.first().map(|c| ident_name(&c.name)))
        .or(alias_name.clone())
        .unwrap_or_else(|| "generate_series".to_string());
    let scope = Scope {
        columns: vec![ScopeColumn::new(
            Some(alias_name.unwrap_or_else(|| "generate_series".into())),
            column,
            DataType::Int8,
        )],
    };
    Ok((node, scope))
}

fn constant_u64(e: &ast::Expr, what: &'static str) -> Result<u64> {
    let (x, _) = Binder::plain(&Scope::default(), what).bind(e)?;
    if let Expr::Param(n) = x {
        // Describing a prepared statement: the value comes at execution.
        params::infer(n, &DataType::Int8);
        return Ok(u64::MAX);
    }
    if !x.is_constant() {
        return Err(Error::Syntax(format!(
            "argument of {what} must not contain variables"
        )));
    }
    match x.eval(&[])? {
        Value::Int(i) if i >= 0 => Ok(i as u64),
        Value::Null => Ok(u64::MAX),
        Value::Int(_) => Err(Error::InvalidParameterValue(format!(
            "{what} must not be negative"
        ))),
        v => Err(Error::DatatypeMismatch(format!(
            "argument of {what} must be type bigint, not type {}",
            v.type_name()
        ))),
    }
}

fn contains_aggregate(e: &ast::Expr) -> bool {
    let s = e.to_string().to_lowercase();
    // Cheap pre-check, confirmed by walking function calls.
    if !["count(", "sum(", "min(", "max(", "avg(", "_agg("]
        .iter()
        .any(|f| s.contains(f))
    {
        return false;
    }
    fn walk(e: &ast::Expr) -> bool {
        use ast::Expr as A;
        match e {
            A::Function(f) => {
                if aggregate_func(&function_name(f)).is_some() {
                    return true;
                }
                match &f.args {
                    ast::FunctionArguments::List(l) => l.args.iter().any(|a| match a {
                        ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(x)) => walk(x),
                        _ => false,
                    }),
                    _ => false,
                }
            }
            A::BinaryOp { left, right, .. } => walk(left) || walk(right),
            A::UnaryOp { expr, .. } | A::Nested(expr) | A::Cast { expr, .. } => walk(expr),
            A::IsNull(x) | A::IsNotNull(x) => walk(x),
            A::Between {
                expr, low, high, ..
            } => walk(expr) || walk(low) || walk(high),
            A::Case {
                operand,
                conditions,
                else_result,
                ..
            } => {
                operand.as_deref().is_some_and(walk)
                    || conditions
                        .iter()
                        .any(|c| walk(&c.condition) || walk(&c.result))
                    || else_result.as_deref().is_some_and(walk)
            }
            A::In {
                expr,
                target: ast::InTarget::List(l),
                ..
            } => walk(expr) || l.iter().any(walk),
            _ => false,
        }
    }
    walk(e)
}

fn output_name(item_expr: &ast::Expr) -> String {
    match item_expr {
        ast::Expr::Identifier(id) => ident_name(id),
        ast::Expr::CompoundIdentifier(parts) => parts.last().map(ident_name).unwrap_or_default(),
        ast::Expr::Function(f) => function_name(f),
        ast::Expr::Cast { expr, .. } | ast::Expr::Nested(expr) => {
            match output_name(expr).as_str() {
                "?column?" => "?column?".into(),
                n => n.to_string(),
            }
        }
        ast::Expr::Case { .. } => "case".into(),
        _ => "?column?".into(),
    }
}

/// Plans a query: the root node and its visible output columns. `outer`
/// holds the scopes of the queries around it (nearest first) when it is a
/// subquery.
fn plan_query(q: &ast::Query, cx: &PlanCtx, outer: &[&Scope]) -> Result<(Node, Vec<OutputColumn>)> {
    if let Some(with) = &q.with {
        let mut body = q.clone();
        body.with = None;
        return with_ctes(with, cx, || plan_query(&body, cx, outer));
    }
    if !q.locks.is_empty() {
        return Err(Error::FeatureNotSupported(
            "FOR UPDATE in a subquery or a statement other than SELECT".into(),
        ));
    }
    match q.body.as_ref() {
        SetExpr::Select(s) => plan_select(s, Some(q), cx, outer),
        body => {
            let (node, columns) = plan_set_expr(body, cx, outer)?;
            finish_query(q, node, columns, None, None)
        }
    }
}

/// Runs `f` with the CTEs of `with` in scope.
fn with_ctes<T>(with: &ast::With, cx: &PlanCtx, f: impl FnOnce() -> Result<T>) -> Result<T> {
    if with.recursive {
        return Err(Error::FeatureNotSupported("WITH RECURSIVE".into()));
    }
    let base = cx.ctes.borrow().len();
    let mut names: Vec<String> = Vec::new();
    for cte in &with.cte_tables {
        let name = ident_name(&cte.alias.name);
        if names.contains(&name) {
            cx.ctes.borrow_mut().truncate(base);
            return Err(Error::DuplicateCte(name));
        }
        names.push(name.clone());
        let visible = cx.ctes.borrow().len();
        cx.ctes.borrow_mut().push(Cte {
            name,
            query: (*cte.query).clone(),
            alias: cte.alias.clone(),
            visible,
        });
    }
    let result = f();
    cx.ctes.borrow_mut().truncate(base);
    result
}

/// Plans one operand of a set operation (or a VALUES list or a
/// parenthesized query).
fn plan_set_expr(
    body: &SetExpr,
    cx: &PlanCtx,
    outer: &[&Scope],
) -> Result<(Node, Vec<OutputColumn>)> {
    match body {
        SetExpr::Select(s) => plan_select(s, None, cx, outer),
        SetExpr::Values(v) => plan_values(v),
        SetExpr::Query(inner) => plan_query(inner, cx, outer),
        SetExpr::SetOperation {
            left,
            op,
            set_quantifier,
            right,
        } => {
            let (l, lc) = plan_set_expr(left, cx, outer)?;
            let (r, rc) = plan_set_expr(right, cx, outer)?;
            let name = op.to_string().to_uppercase();
            if lc.len() != rc.len() {
                return Err(Error::Syntax(format!(
                    "each {name} query must have the same number of columns"
                )));
            }
            let mut columns = Vec::with_capacity(lc.len());
            for (a, b) in lc.iter().zip(&rc) {
                let ty = match unify(&a.ty, &b.ty, &name)? {
                    DataType::Unknown => DataType::Text,
                    t => t,
                };
                columns.push(OutputColumn {
                    name: a.name.clone(),
                    ty,
                });
            }
            let types: Vec<DataType> = columns.iter().map(|c| c.ty.clone()).collect();
            let l = convert_columns(l, &lc, &types);
            let r = convert_columns(r, &rc, &types);
            let op = match op {
                ast::SetOperator::Union => SetOpKind::Union,
                ast::SetOperator::Intersect => SetOpKind::Intersect,
                ast::SetOperator::Except | ast::SetOperator::Minus => SetOpKind::Except,
            };
            let all = match set_quantifier {
                ast::SetQuantifier::All => true,
                ast::SetQuantifier::Distinct | ast::SetQuantifier::None => false,
                other => return Err(Error::FeatureNotSupported(format!("{name} {other}"))),
            };
            Ok((
                Node::SetOp {
                    left: Box::new(l),
                    right: Box::new(r),
                    op,
                    all,
                },
                columns,
            ))
        }
        other => Err(Error::FeatureNotSupported(format!("query {other}"))),
    }
}

/// Casts the columns of a set operation's operand whose values change
/// representation in the common type (integers becoming floats, untyped
/// literals taking the other operand's type).
fn convert_columns(node: Node, have: &[OutputColumn], want: &[DataType]) -> Node {
    let convert = |h: &DataType, w: &DataType| {
        (h.is_integer() && w.is_float()) || (*h == DataType::Unknown && !w.is_string())
    };
    if !have.iter().zip(want).any(|(h, w)| convert(&h.ty, w)) {
        return node;
    }
    let exprs = have
        .iter()
        .zip(want)
        .enumerate()
        .map(|(i, (h, w))| {
            if convert(&h.ty, w) {
                Expr::Cast(Box::new(Expr::Column(i)), w.clone())
            } else {
                Expr::Column(i)
            }
        })
        .collect();
    Node::Project {
        input: Box::new(node),
        exprs,
    }
}

/// Plans a SELECT. `q` is the query it is the body of, which gives ORDER
/// BY and LIMIT (None for an operand of a set operation).
fn plan_select(
    select: &ast::Select,
    q: Option<&ast::Query>,
    cx: &PlanCtx,
    outer: &[&Scope],
) -> Result<(Node, Vec<OutputColumn>)> {
    // FROM and WHERE
    let (mut node, scope, table) = from::plan_from(select, cx, outer)?;
    // GROUP BY / aggregates
    let group_exprs: Vec<&ast::Expr> = match &select.group_by {
        ast::GroupByExpr::Expressions(exprs, mods) if mods.is_empty() => exprs.iter().collect(),
        ast::GroupByExpr::Expressions(..) | ast::GroupByExpr::All(_) => {
            return Err(Error::FeatureNotSupported(
                "GROUP BY ALL / ROLLUP / CUBE".into(),
            ))
        }
    };
    let projection_has_agg = select.projection.iter().any(|item| match item {
        ast::SelectItem::UnnamedExpr(e) | ast::SelectItem::ExprWithAlias { expr: e, .. } => {
            contains_aggregate(e)
        }
        _ => false,
    });
    let order_by = q.and_then(|q| q.order_by.as_ref());
    let order_has_agg = order_by.is_some_and(|ob| match &ob.kind {
        ast::OrderByKind::Expressions(v) => v.iter().any(|o| contains_aggregate(&o.expr)),
        _ => false,
    });
    let aggregating =
        !group_exprs.is_empty() || projection_has_agg || select.having.is_some() || order_has_agg;
    let mut agg_ctx = None;
    if aggregating {
        let mut groups = Vec::new();
        for g in &group_exprs {
            // GROUP BY 1 refers to the first select item.
            let g: &ast::Expr = match g {
                ast::Expr::Value(v) => match &v.value {
                    ast::Value::Number(n, _) => {
                        let k: usize = n
                            .parse()
                            .map_err(|_| Error::Syntax(format!("GROUP BY position {n}")))?;
                        match select.projection.get(k.wrapping_sub(1)) {
                            Some(ast::SelectItem::UnnamedExpr(e))
                            | Some(ast::SelectItem::ExprWithAlias { expr: e, .. }) => e,
                            _ => {
                                return Err(Error::InvalidParameterValue(format!(
                                    "GROUP BY position {k} is not in select list"
                                )))
                            }
                        }
                    }
                    _ => g,
                },
                _ => g,
            };
            groups.push(Binder::new(&scope, outer, cx, "GROUP BY").bind(g)?);
        }
        agg_ctx = Some(AggContext {
            groups,
            aggs: Vec::new(),
        });
    }
    // SELECT list
    let mut exprs = Vec::new();
    let mut columns = Vec::new();
    let mut select_asts: Vec<Option<ast::Expr>> = Vec::new();
    for item in &select.projection {
        match item {
            ast::SelectItem::Wildcard(_) => {
                if aggregating {
                    return Err(Error::Grouping("SELECT * with aggregation".into()));
                }
                if scope.columns.is_empty() {
                    return Err(Error::Syntax(
                        "SELECT * with no tables specified is not valid".into(),
                    ));
                }
                for (i, c) in scope.columns.iter().enumerate() {
                    if c.hidden || c.merged {
                        continue;
                    }
                    exprs.push(Expr::Column(i));
                    columns.push(OutputColumn {
                        name: c.name.clone(),
                        ty: c.ty.clone(),
                    });
                    select_asts.push(None);
                }
            }
            ast::SelectItem::QualifiedWildcard(kind, _) => {
                let q = match kind {
                    ast::SelectItemQualifiedWildcardKind::ObjectName(n) => table_name(n)?,
                    ast::SelectItemQualifiedWildcardKind::Expr(e) => e.to_string(),
                };
                if aggregating {
                    return Err(Error::Grouping("SELECT t.* with aggregation".into()));
                }
                let mut any = false;
                for (i, c) in scope.columns.iter().enumerate() {
                    if c.table.as_deref() == Some(q.as_str()) && !c.hidden {
                        exprs.push(Expr::Column(i));
                        columns.push(OutputColumn {
                            name: c.name.clone(),
                            ty: c.ty.clone(),
                        });
                        select_asts.push(None);
                        any = true;
                    }
                }
                if !any {
                    return Err(Error::MissingFromEntry(q));
                }
            }
            ast::SelectItem::UnnamedExpr(e) | ast::SelectItem::ExprWithAlias { expr: e, .. } => {
                let mut b = Binder {
                    agg: agg_ctx.as_mut(),
                    ..Binder::new(&scope, outer, cx, "SELECT")
                };
                let (x, ty) = b.bind(e)?;
                let name = match item {
                    ast::SelectItem::ExprWithAlias { alias, .. } => ident_name(alias),
                    _ => output_name(e),
                };
                // An untyped literal is text, except in an operand of a set
                // operation, where the other operands decide.
                let ty = if ty == DataType::Unknown && q.is_some() {
                    DataType::Text
                } else {
                    ty
                };
                exprs.push(x);
                columns.push(OutputColumn { name, ty });
                select_asts.push(Some(e.clone()));
            }
            other => return Err(Error::FeatureNotSupported(format!("select item {other}"))),
        }
    }
    // HAVING
    let having = match &select.having {
        Some(h) => {
            let mut b = Binder {
                agg: agg_ctx.as_mut(),
                ..Binder::new(&scope, outer, cx, "HAVING")
            };
            let (x, ty) = b.bind(h)?;
            expect_bool(&ty, "HAVING")?;
            Some(x)
        }
        None => None,
    };
    let order = plan_order_by(
        order_by,
        OrderScope {
            scope: &scope,
            outer,
            cx: Some(cx),
        },
        &mut agg_ctx,
        &columns,
        &select_asts,
        &mut exprs,
    )?;
    if let Some(ctx) = agg_ctx {
        node = Node::Aggregate {
            input: Box::new(node),
            group_by: ctx.groups.into_iter().map(|(e, _)| e).collect(),
            aggs: ctx.aggs.into_iter().map(|(a, _)| a).collect(),
        };
        if let Some(h) = having {
            node = Node::Filter {
                input: Box::new(node),
                predicate: h,
            };
        }
    }
    let visible = columns.len();
    node = Node::Project {
        input: Box::new(node),
        exprs,
    };
    if select.distinct.is_some() {
        if !matches!(select.distinct, Some(ast::Distinct::Distinct)) {
            return Err(Error::FeatureNotSupported("DISTINCT ON".into()));
        }
        if order.iter().any(|k| k.column >= visible) {
            return Err(Error::InvalidParameterValue(
                "for SELECT DISTINCT, ORDER BY expressions must appear in select list".into(),
            ));
        }
        node = Node::Distinct {
            input: Box::new(node),
        };
    }
    match q {
        Some(q) => finish_query(q, node, columns, Some(order), table.as_ref()),
        None => Ok((node, columns)),
    }
}

/// What ORDER BY expressions bind against.
struct OrderScope<'a> {
    scope: &'a Scope,
    outer: &'a [&'a Scope],
    cx: Option<&'a PlanCtx>,
}

/// Binds ORDER BY: each key becomes a column of the projection (an existing
/// one, or a hidden one appended to `exprs`).
fn plan_order_by(
    order_by: Option<&ast::OrderBy>,
    os: OrderScope<'_>,
    agg_ctx: &mut Option<AggContext>,
    columns: &[OutputColumn],
    select_asts: &[Option<ast::Expr>],
    exprs: &mut Vec<Expr>,
) -> Result<Vec<SortKey>> {
    let Some(ob) = order_by else {
        return Ok(vec![]);
    };
    let items = match &ob.kind {
        ast::OrderByKind::Expressions(v) => v,
        ast::OrderByKind::All(_) => return Err(Error::FeatureNotSupported("ORDER BY ALL".into())),
    };
    let mut keys = Vec::new();
    for o in items {
        let desc = matches!(o.options.sort, Some(ast::OrderBySort::Desc));
        if matches!(o.options.sort, Some(ast::OrderBySort::Using(_))) {
            return Err(Error::FeatureNotSupported("ORDER BY ... USING".into()));
        }
        let nulls_first = o.options.nulls_first.unwrap_or(desc);
        let column = match &o.expr {
            ast::Expr::Value(v) if matches!(v.value, ast::Value::Number(..)) => {
                let ast::Value::Number(n, _) = &v.value else {
                    unreachable!("matched above")
                };
                let k: usize = n
                    .parse()
                    .map_err(|_| Error::Syntax(format!("ORDER BY position {n}")))?;
                if k == 0 || k > columns.len() {
                    return Err(Error::InvalidParameterValue(format!(
                        "ORDER BY position {k} is not in select list"
                    )));
                }
                k - 1
            }
            ast::Expr::Identifier(id)
                if columns.iter().filter(|c| c.name == ident_name(id)).count() == 1
                    && select_asts
                        .iter()
                        .zip(columns)
                        .any(|(a, c)| c.name == ident_name(id) && a.as_ref() != Some(&o.expr)) =>
            {
                // An output alias.
                columns
                    .iter()
                    .position(|c| c.name == ident_name(id))
                    .expect("counted above")
            }
            e => {
                if let Some(i) = select_asts.iter().position(|a| a.as_ref() == Some(e)) {
                    i
                } else {
                    let mut b = Binder {
                        scope: os.scope,
                        outer: os.outer,
                        cx: os.cx,
                        agg: agg_ctx.as_mut(),
                        clause: "ORDER BY",
                    };
                    let (x, _) = b.bind(e)?;
                    match exprs.iter().position(|ex| *ex == x) {
                        Some(i) => i,
                        None => {
                            exprs.push(x);
                            exprs.len() - 1
                        }
                    }
                }
            }
        };
        keys.push(SortKey {
            column,
            desc,
            nulls_first,
        });
    }
    Ok(keys)
}

/// ORDER BY, LIMIT/OFFSET and trimming of hidden columns; applies sort
/// elimination and limit pushdown.
fn finish_query(
    q: &ast::Query,
    mut node: Node,
    columns: Vec<OutputColumn>,
    order: Option<Vec<SortKey>>,
    table: Option<&Table>,
) -> Result<(Node, Vec<OutputColumn>)> {
    let visible = columns.len();
    let order = match order {
        Some(o) => o,
        None => plan_order_by(
            q.order_by.as_ref(),
            OrderScope {
                scope: &Scope::default(),
                outer: &[],
                cx: None,
            },
            &mut None,
            &columns,
            &vec![None; columns.len()],
            &mut vec![],
        )?,
    };
    let width = match &node {
        Node::Project { exprs, .. } => exprs.len(),
        _ => visible,
    };
    if !order.is_empty() && !sort_is_scan_order(&node, &order, table) {
        node = Node::Sort {
            input: Box::new(node),
            keys: order.clone(),
        };
    }
    let (limit, offset) = match &q.limit_clause {
        None => (None, 0),
        Some(ast::LimitClause::LimitOffset {
            limit,
            offset,
            limit_by,
        }) => {
            if !limit_by.is_empty() {
                return Err(Error::FeatureNotSupported("LIMIT BY".into()));
            }
            let l = limit
                .as_ref()
                .map(|l| constant_u64(l, "LIMIT"))
                .transpose()?;
            let o = offset
                .as_ref()
                .map(|o| constant_u64(&o.value, "OFFSET"))
                .transpose()?
                .unwrap_or(0);
            (l.filter(|l| *l != u64::MAX), o)
        }
        Some(ast::LimitClause::OffsetCommaLimit { offset, limit }) => (
            Some(constant_u64(limit, "LIMIT")?),
            constant_u64(offset, "OFFSET")?,
        ),
    };
    if limit.is_some() || offset > 0 {
        push_limit(&mut node, limit.map(|l| l.saturating_add(offset)));
        node = Node::Limit {
            input: Box::new(node),
            limit,
            offset,
        };
    }
    if width > visible {
        node = Node::Trim {
            input: Box::new(node),
            width: visible,
        };
    }
    Ok((node, columns))
}

/// Whether the rows already arrive in the requested order: sorting by the
/// primary key ascending over a projection of a scan. Key columns the scan
/// pins to one value (the prefix of a range scan) are constant, so they
/// may be left out of the ORDER BY or appear anywhere in it: `WHERE a = 1
/// ORDER BY b` over a key (a, b) needs no sort.
fn sort_is_scan_order(node: &Node, order: &[SortKey], table: Option<&Table>) -> bool {
    let Some(table) = table else { return false };
    let Node::Project { input, exprs } = node else {
        return false;
    };
    let mut inner = input.as_ref();
    if let Node::Filter { input, .. } = inner {
        inner = input;
    }
    let pinned = match inner {
        Node::Scan {
            spans: ScanSpans::Range { prefix, .. },
            ..
        } => prefix.len().min(table.pk.len()),
        Node::Scan {
            spans: ScanSpans::Full | ScanSpans::Points(_),
            ..
        } => 0,
        _ => return false,
    };
    let constant = &table.pk[..pinned];
    let mut rest = table.pk[pinned..].iter();
    order.iter().all(|k| match exprs.get(k.column) {
        Some(Expr::Column(c)) if constant.contains(c) => true,
        Some(Expr::Column(c)) => !k.desc && rest.next() == Some(c),
        _ => false,
    })
}

/// Stops a scan early when nothing between it and the LIMIT drops or
/// reorders rows. A filter that only repeats the equalities a range scan's
/// prefix already holds drops nothing.
fn push_limit(node: &mut Node, n: Option<u64>) {
    let Some(n) = n else { return };
    let mut cur = node;
    loop {
        match cur {
            Node::Project { input, .. } | Node::Trim { input, .. } => cur = input,
            Node::Filter { input, predicate } if filter_is_scan_prefix(predicate, input) => {
                cur = input
            }
            Node::Scan { limit, .. } => {
                *limit = usize::try_from(n).ok();
                return;
            }
            _ => return,
        }
    }
}

/// Whether every conjunct of `pred` is `key column = constant` that the
/// range scan `node` holds by its prefix: the filter keeps every row the
/// scan returns.
fn filter_is_scan_prefix(pred: &Expr, node: &Node) -> bool {
    let Node::Scan {
        table,
        spans: ScanSpans::Range { prefix, .. },
        ..
    } = node
    else {
        return false;
    };
    pred.clone().conjuncts().iter().all(|c| {
        let Expr::Binary(BinOp::Eq, l, r) = c else {
            return false;
        };
        let (col, val) = match (l.as_ref(), r.as_ref()) {
            (Expr::Column(i), Expr::Literal(v)) | (Expr::Literal(v), Expr::Column(i)) => (*i, v),
            _ => return false,
        };
        table
            .pk
            .iter()
            .zip(prefix)
            .any(|(&pk_col, p)| pk_col == col && p == val)
    })
}

fn plan_values(v: &ast::Values) -> Result<(Node, Vec<OutputColumn>)> {
    let scope = Scope::default();
    let mut rows = Vec::new();
    let mut types: Vec<DataType> = Vec::new();
    for row in &v.rows {
        let mut bound = Vec::new();
        for (i, e) in row.content.iter().enumerate() {
            let (x, t) = Binder::plain(&scope, "VALUES").bind(e)?;
            if types.len() <= i {
                types.push(t);
            } else {
                types[i] = unify(&types[i], &t, "VALUES")?;
            }
            bound.push(x);
        }
        if !rows.is_empty() && bound.len() != types.len() {
            return Err(Error::Syntax(
                "VALUES lists must all be the same length".into(),
            ));
        }
        rows.push(bound);
    }
    let columns = types
        .into_iter()
        .enumerate()
        .map(|(i, ty)| OutputColumn {
            name: format!("column{}", i + 1),
            ty: if ty == DataType::Unknown {
                DataType::Text
            } else {
                ty
            },
        })
        .collect();
    Ok((Node::Values { rows }, columns))
}

/// Chooses the key spans a scan of `table` filtered by `pred` must read:
/// point lookups when the predicate pins whole primary keys; otherwise the
/// primary key range or the secondary index whose leading columns the
/// predicate pins with the most equalities (a bounded next column counts
/// half), the primary key on a tie since an index scan then has to fetch
/// its rows; else everything.
///
/// So TPC-C's `WHERE c_w_id = ? AND c_d_id = ? AND c_last = ?` reads the
/// few entries of the (w, d, last, first) index, not the district's 3,000
/// customers through the primary key's (w, d) prefix.
pub fn select_spans(table: &Table, pred: &Expr) -> ScanSpans {
    let primary = primary_spans(table, pred);
    let primary_score = match &primary {
        ScanSpans::Points(_) => return primary,
        ScanSpans::Range {
            prefix,
            lower,
            upper,
        } => Some(span_score(prefix.len(), lower, upper)),
        ScanSpans::Full | ScanSpans::Index { .. } => None,
    };
    match index_spans(table, pred) {
        Some((score, spans)) if primary_score.is_none_or(|p| score > p) => spans,
        _ => primary,
    }
}

/// How narrow a scan is: pinned columns count two, a bounded next column one.
fn span_score(pinned: usize, lower: &Bound<Value>, upper: &Bound<Value>) -> usize {
    pinned * 2 + usize::from(*lower != Bound::Unbounded || *upper != Bound::Unbounded)
}

/// `(column, op, constant)` facts of a predicate's conjuncts about columns
/// whose key encoding the constant shares.
fn column_facts(table: &Table, pred: &Expr) -> Vec<(usize, BinOp, Value)> {
    let mut facts = Vec::new();
    for c in pred.clone().conjuncts() {
        if let Expr::Binary(op, l, r) = &c {
            if op.is_comparison() && *op != BinOp::NotEq {
                let (col, op, val) = match (l.as_ref(), r.as_ref()) {
                    (Expr::Column(i), Expr::Literal(v)) => (*i, *op, v),
                    (Expr::Literal(v), Expr::Column(i)) => (*i, op.flip(), v),
                    _ => continue,
                };
                if !val.is_null() && key_compatible(&table.columns[col].ty, val) {
                    facts.push((col, op, val.clone()));
                }
            }
        }
    }
    facts
}

/// Spans of the best secondary index for `pred`, with their score
/// ([`span_score`]), if one is pinned by an equality on its first column or
/// bounded on both sides there.
fn index_spans(table: &Table, pred: &Expr) -> Option<(usize, ScanSpans)> {
    let facts = column_facts(table, pred);
    let mut best: Option<(usize, ScanSpans)> = None;
    for idx in &table.indexes {
        let mut prefix = Vec::new();
        for &col in &idx.columns {
            match facts
                .iter()
                .find(|(c, op, _)| *c == col && *op == BinOp::Eq)
            {
                Some((_, _, v)) => prefix.push(v.clone()),
                None => break,
            }
        }
        let (lower, upper) = match (
            idx.columns.get(prefix.len()),
            idx.descending.get(prefix.len()),
        ) {
            (Some(&col), Some(false)) => column_bounds(&facts, col),
            _ => (Bound::Unbounded, Bound::Unbounded),
        };
        let bounded = lower != Bound::Unbounded && upper != Bound::Unbounded;
        if prefix.is_empty() && !bounded {
            continue;
        }
        // More pinned columns first; a bounded column counts half.
        let score = span_score(prefix.len(), &lower, &upper);
        if best.as_ref().is_none_or(|(s, _)| score > *s) {
            best = Some((
                score,
                ScanSpans::Index {
                    index: idx.id,
                    prefix,
                    lower,
                    upper,
                },
            ));
        }
    }
    best
}

/// The tightest bounds `facts` put on column `col`.
fn column_bounds(facts: &[(usize, BinOp, Value)], col: usize) -> (Bound<Value>, Bound<Value>) {
    let mut lower = Bound::Unbounded;
    let mut upper = Bound::Unbounded;
    for (c, op, v) in facts {
        if *c != col {
            continue;
        }
        match op {
            BinOp::Gt | BinOp::GtEq => {
                let b = if *op == BinOp::Gt {
                    Bound::Excluded(v.clone())
                } else {
                    Bound::Included(v.clone())
                };
                if tighter(&b, &lower, std::cmp::Ordering::Greater) {
                    lower = b;
                }
            }
            BinOp::Lt | BinOp::LtEq => {
                let b = if *op == BinOp::Lt {
                    Bound::Excluded(v.clone())
                } else {
                    Bound::Included(v.clone())
                };
                if tighter(&b, &upper, std::cmp::Ordering::Less) {
                    upper = b;
                }
            }
            _ => {}
        }
    }
    (lower, upper)
}

/// Primary key spans for `pred`.
fn primary_spans(table: &Table, pred: &Expr) -> ScanSpans {
    let conjuncts = pred.clone().conjuncts();
    // (column, op, constant) facts about key columns.
    let mut facts: Vec<(usize, BinOp, Value)> = Vec::new();
    let mut in_lists: Vec<(usize, Vec<Value>)> = Vec::new();
    for c in &conjuncts {
        match c {
            Expr::Binary(op, l, r) if op.is_comparison() && *op != BinOp::NotEq => {
                let (col, op, val) = match (l.as_ref(), r.as_ref()) {
                    (Expr::Column(i), Expr::Literal(v)) => (*i, *op, v),
                    (Expr::Literal(v), Expr::Column(i)) => (*i, op.flip(), v),
                    _ => continue,
                };
                if key_compatible(&table.columns[col].ty, val) {
                    facts.push((col, op, val.clone()));
                }
            }
            Expr::InList {
                expr,
                list,
                negated: false,
            } => {
                if let Expr::Column(i) = expr.as_ref() {
                    let vals: Option<Vec<Value>> = list
                        .iter()
                        .map(|e| match e {
                            Expr::Literal(v) if key_compatible(&table.columns[*i].ty, v) => {
                                Some(v.clone())
                            }
                            _ => None,
                        })
                        .collect();
                    if let Some(vals) = vals {
                        in_lists.push((*i, vals));
                    }
                }
            }
            _ => {}
        }
    }
    let mut prefix = Vec::new();
    for (pos, &col) in table.pk.iter().enumerate() {
        if let Some((_, _, v)) = facts
            .iter()
            .find(|(c, op, _)| *c == col && *op == BinOp::Eq)
        {
            prefix.push(v.clone());
            continue;
        }
        let last = pos + 1 == table.pk.len();
        if last {
            if let Some((_, vals)) = in_lists.iter().find(|(c, _)| *c == col) {
                let mut vals = vals.clone();
                vals.sort_by(|a, b| a.sort_cmp(b));
                vals.dedup();
                return ScanSpans::Points(
                    vals.into_iter()
                        .map(|v| {
                            let mut p = prefix.clone();
                            p.push(v);
                            p
                        })
                        .collect(),
                );
            }
        }
        let (lower, upper) = column_bounds(&facts, col);
        if prefix.is_empty() && lower == Bound::Unbounded && upper == Bound::Unbounded {
            return ScanSpans::Full;
        }
        return ScanSpans::Range {
            prefix,
            lower,
            upper,
        };
    }
    ScanSpans::Points(vec![prefix])
}

/// Whether a constant can be used as a key bound for a column of `ty`
/// (its key encoding is the column's).
fn key_compatible(ty: &DataType, v: &Value) -> bool {
    matches!(
        (ty, v),
        (DataType::Bool, Value::Bool(_))
            | (
                DataType::Int2 | DataType::Int4 | DataType::Int8,
                Value::Int(_)
            )
            | (DataType::Float4 | DataType::Float8, Value::Float(_))
            | (
                DataType::Text | DataType::Varchar(_) | DataType::Char(_),
                Value::Text(_)
            )
            | (DataType::Date, Value::Date(_))
            | (DataType::Numeric(_), Value::Numeric(_))
            | (DataType::Bytea, Value::Bytes(_))
            | (DataType::Uuid, Value::Uuid(_))
            | (
                DataType::Timestamp | DataType::TimestampTz,
                Value::Timestamp(_) | Value::TimestampTz(_)
            )
    )
}

/// Whether bound `new` is stricter than `old`: further in the direction
/// `inward` (Greater for lower bounds, Less for upper bounds), or equal and
/// exclusive.
fn tighter(new: &Bound<Value>, old: &Bound<Value>, inward: std::cmp::Ordering) -> bool {
    match (new, old) {
        (_, Bound::Unbounded) => true,
        (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b)) => {
            let ord = a.sort_cmp(b);
            ord == inward || (ord == std::cmp::Ordering::Equal && matches!(new, Bound::Excluded(_)))
        }
        (Bound::Unbounded, _) => false,
    }
}

fn plan_returning(
    items: &Option<Vec<ast::SelectItem>>,
    table: &Table,
) -> Result<Option<Returning>> {
    let Some(items) = items else { return Ok(None) };
    let scope = Scope::of_table(table, None);
    let mut exprs = Vec::new();
    let mut columns = Vec::new();
    for item in items {
        match item {
            ast::SelectItem::Wildcard(_) => {
                for (i, c) in table.columns.iter().enumerate() {
                    if c.hidden {
                        continue;
                    }
                    exprs.push(Expr::Column(i));
                    columns.push(OutputColumn {
                        name: c.name.clone(),
                        ty: c.ty.clone(),
                    });
                }
            }
            ast::SelectItem::UnnamedExpr(e) | ast::SelectItem::ExprWithAlias { expr: e, .. } => {
                let (x, ty) = Binder::plain(&scope, "RETURNING").bind(e)?;
                let name = match item {
                    ast::SelectItem::ExprWithAlias { alias, .. } => ident_name(alias),
                    _ => output_name(e),
                };
                exprs.push(x);
                columns.push(OutputColumn {
                    name,
                    ty: if ty == DataType::Unknown {
                        DataType::Text
                    } else {
                        ty
                    },
                });
            }
            other => return Err(Error::FeatureNotSupported(format!("RETURNING {other}"))),
        }
    }
    Ok(Some(Returning { exprs, columns }))
}

fn plan_insert(ins: &ast::Insert, cx: &PlanCtx) -> Result<Plan> {
    let name = match &ins.table {
        ast::TableObject::TableName(n) => table_name(n)?,
        other => return Err(Error::FeatureNotSupported(format!("INSERT INTO {other}"))),
    };
    let table = writable(cx.table(&name)?, "insert into")?;
    let columns: Vec<usize> = if ins.columns.is_empty() {
        (0..table.columns.len())
            .filter(|&i| !table.columns[i].hidden)
            .collect()
    } else {
        let mut cols = Vec::new();
        for c in &ins.columns {
            let n = c.to_string().trim_matches('"').to_string();
            let n = if c.to_string().starts_with('"') {
                n
            } else {
                n.to_lowercase()
            };
            let i = table.column_index(&n).ok_or_else(|| {
                Error::UndefinedColumn(format!("{n}\" of relation \"{}", table.name))
            })?;
            if cols.contains(&i) {
                return Err(Error::DuplicateColumn(n));
            }
            cols.push(i);
        }
        cols
    };
    let source = match &ins.source {
        Some(q) => match q.body.as_ref() {
            SetExpr::Values(v) => {
                let mut rows = Vec::new();
                for row in &v.rows {
                    if row.content.len() > columns.len() {
                        return Err(Error::Syntax(
                            "INSERT has more expressions than target columns".into(),
                        ));
                    }
                    if row.content.len() < columns.len() {
                        return Err(Error::Syntax(
                            "INSERT has more target columns than expressions".into(),
                        ));
                    }
                    let mut bound = Vec::new();
                    for (e, &col) in row.content.iter().zip(&columns) {
                        if matches!(e, ast::Expr::Identifier(id) if id.value.eq_ignore_ascii_case("default") && id.quote_style.is_none())
                        {
                            bound.push(match &table.columns[col].default {
                                Some(d) => bind_default(d)?,
                                None => Expr::Literal(Value::Null),
                            });
                            continue;
                        }
                        let (x, ty) = Binder::plain(&Scope::default(), "VALUES").bind(e)?;
                        let col_ty = &table.columns[col].ty;
                        if let Expr::Param(n) = x {
                            params::infer(n, col_ty);
                        }
                        // A string literal takes the column's type.
                        let x = match (&x, ty) {
                            (Expr::Literal(Value::Text(s)), DataType::Unknown)
                                if !col_ty.is_string() =>
                            {
                                Expr::Literal(parse_text(s, col_ty)?)
                            }
                            _ => x,
                        };
                        bound.push(x);
                    }
                    rows.push(bound);
                }
                Node::Values { rows }
            }
            _ => {
                let (node, cols) = plan_query(q, cx, &[])?;
                if cols.len() != columns.len() {
                    return Err(Error::Syntax(format!(
                        "INSERT has {} target columns but the query returns {}",
                        columns.len(),
                        cols.len()
                    )));
                }
                node
            }
        },
        None => Node::Values { rows: vec![vec![]] },
    };
    let defaults = table
        .columns
        .iter()
        .map(|c| c.default.as_deref().map(bind_default).transpose())
        .collect::<Result<Vec<_>>>()?;
    let on_conflict = match &ins.on {
        None => OnConflict::Error,
        Some(ast::OnInsert::OnConflict(oc)) => match &oc.action {
            ast::OnConflictAction::DoNothing => {
                if targets_primary_key(&oc.conflict_target, &table)? {
                    OnConflict::DoNothingOnPrimaryKey
                } else {
                    OnConflict::DoNothing
                }
            }
            ast::OnConflictAction::DoUpdate(du) => {
                if !targets_primary_key(&oc.conflict_target, &table)? {
                    return Err(Error::Syntax(
                        "ON CONFLICT DO UPDATE requires inference specification or constraint \
                         name"
                            .into(),
                    ));
                }
                // The existing row, then the proposed one as `excluded`
                // (reachable only qualified).
                let alias = ins.table_alias.as_ref().map(|a| ident_name(&a.alias));
                let mut scope = Scope::of_table(&table, alias.as_deref());
                let mut excluded = Scope::of_table(&table, Some("excluded"));
                for c in &mut excluded.columns {
                    c.merged = true;
                }
                scope.columns.extend(excluded.columns);
                let assignments =
                    bind_assignments(&du.assignments, &table, &scope, cx, "ON CONFLICT DO UPDATE")?;
                if let Some((i, _)) = assignments.iter().find(|(i, _)| table.pk.contains(i)) {
                    return Err(Error::FeatureNotSupported(format!(
                        "ON CONFLICT DO UPDATE that changes primary key column \"{}\"",
                        table.columns[*i].name
                    )));
                }
                let selection = match &du.selection {
                    None => None,
                    Some(w) => {
                        let (x, ty) = Binder::new(&scope, &[], cx, "WHERE").bind(w)?;
                        expect_bool(&ty, "WHERE")?;
                        Some(x)
                    }
                };
                OnConflict::DoUpdate {
                    assignments,
                    selection,
                }
            }
        },
        Some(other) => return Err(Error::FeatureNotSupported(format!("{other}"))),
    };
    let returning = plan_returning(&ins.returning, &table)?;
    Ok(Plan::Insert {
        checks: bind_checks(&table)?,
        table,
        columns,
        defaults,
        source,
        on_conflict,
        returning,
    })
}

pub(crate) fn bind_default(text: &str) -> Result<Expr> {
    let e = parse_expr(text)?;
    Ok(Binder::plain(&Scope::default(), "DEFAULT expressions")
        .bind(&e)?
        .0)
}

/// The scan (with key selection) and filter of an UPDATE or DELETE.
fn dml_source(
    table: &Table,
    selection: &Option<ast::Expr>,
    scope: &Scope,
    cx: &PlanCtx,
) -> Result<Node> {
    let mut node = Node::Scan {
        table: table.clone(),
        spans: ScanSpans::Full,
        limit: None,
    };
    if let Some(w) = selection {
        let (pred, ty) = Binder::new(scope, &[], cx, "WHERE").bind(w)?;
        expect_bool(&ty, "WHERE")?;
        if let Node::Scan { spans, .. } = &mut node {
            *spans = select_spans(table, &pred);
        }
        node = Node::Filter {
            input: Box::new(node),
            predicate: pred,
        };
    }
    Ok(node)
}

fn plan_update(upd: &ast::Update, cx: &PlanCtx) -> Result<Plan> {
    if !upd.table.joins.is_empty() || upd.from.is_some() {
        return Err(Error::FeatureNotSupported("UPDATE ... FROM / joins".into()));
    }
    let (name, alias) = plain_table(&upd.table.relation)?;
    let table = writable(cx.table(&name)?, "update")?;
    let scope = Scope::of_table(&table, alias.as_deref());
    let assignments = bind_assignments(&upd.assignments, &table, &scope, cx, "UPDATE")?;
    let source = dml_source(&table, &upd.selection, &scope, cx)?;
    let returning = plan_returning(&upd.returning, &table)?;
    Ok(Plan::Update {
        checks: bind_checks(&table)?,
        table,
        source,
        assignments,
        returning,
    })
}

/// The `SET col = expr, …` of an UPDATE or of ON CONFLICT DO UPDATE:
/// (table column, expression over `scope`).
fn bind_assignments(
    list: &[ast::Assignment],
    table: &Table,
    scope: &Scope,
    cx: &PlanCtx,
    clause: &'static str,
) -> Result<Vec<(usize, Expr)>> {
    let mut assignments = Vec::new();
    for a in list {
        let col_name = match &a.target {
            ast::AssignmentTarget::ColumnName(n) => {
                n.0.last()
                    .and_then(|p| p.as_ident())
                    .map(ident_name)
                    .ok_or_else(|| Error::Syntax(format!("bad assignment target {n}")))?
            }
            other => return Err(Error::FeatureNotSupported(format!("assignment to {other}"))),
        };
        let i = table.column_index(&col_name).ok_or_else(|| {
            Error::UndefinedColumn(format!("{col_name}\" of relation \"{}", table.name))
        })?;
        if assignments.iter().any(|(j, _)| *j == i) {
            return Err(Error::Syntax(format!(
                "multiple assignments to same column \"{col_name}\""
            )));
        }
        let x = if matches!(&a.value, ast::Expr::Identifier(id) if id.value.eq_ignore_ascii_case("default") && id.quote_style.is_none())
        {
            match &table.columns[i].default {
                Some(d) => bind_default(d)?,
                None => Expr::Literal(Value::Null),
            }
        } else {
            let (x, ty) = Binder::new(scope, &[], cx, clause).bind(&a.value)?;
            let col_ty = &table.columns[i].ty;
            if let Expr::Param(n) = x {
                params::infer(n, col_ty);
            }
            match (&x, ty) {
                (Expr::Literal(Value::Text(s)), DataType::Unknown) if !col_ty.is_string() => {
                    Expr::Literal(parse_text(s, col_ty)?)
                }
                _ => x,
            }
        };
        assignments.push((i, x));
    }
    Ok(assignments)
}

/// Whether an ON CONFLICT target names exactly the primary key columns.
fn targets_primary_key(target: &Option<ast::ConflictTarget>, table: &Table) -> Result<bool> {
    match target {
        None => Ok(false),
        Some(ast::ConflictTarget::Columns { columns: cols, .. }) => {
            let mut names: Vec<String> = cols.iter().map(ident_name).collect();
            let mut pk: Vec<String> = table
                .pk
                .iter()
                .map(|&i| table.columns[i].name.clone())
                .collect();
            names.sort();
            pk.sort();
            if names != pk {
                return Err(Error::FeatureNotSupported(
                    "ON CONFLICT with a target other than the primary key".into(),
                ));
            }
            Ok(true)
        }
        Some(other) => Err(Error::FeatureNotSupported(format!("ON CONFLICT {other}"))),
    }
}

/// The table a DML statement writes: views are read-only here.
fn writable(table: Table, verb: &str) -> Result<Table> {
    if table.is_view() {
        return Err(Error::FeatureNotSupported(format!(
            "cannot {verb} view \"{}\" (views are read-only)",
            table.name
        )));
    }
    Ok(table)
}

fn plan_delete(del: &ast::Delete, cx: &PlanCtx) -> Result<Plan> {
    let from = match &del.from {
        ast::FromTable::WithFromKeyword(v) | ast::FromTable::WithoutKeyword(v) => v,
    };
    let [twj] = from.as_slice() else {
        return Err(Error::FeatureNotSupported(
            "DELETE from several tables".into(),
        ));
    };
    if !twj.joins.is_empty() || del.using.is_some() {
        return Err(Error::FeatureNotSupported(
            "DELETE ... USING / joins".into(),
        ));
    }
    let (name, alias) = plain_table(&twj.relation)?;
    let table = writable(cx.table(&name)?, "delete from")?;
    let scope = Scope::of_table(&table, alias.as_deref());
    let source = dml_source(&table, &del.selection, &scope, cx)?;
    let returning = plan_returning(&del.returning, &table)?;
    Ok(Plan::Delete {
        table,
        source,
        returning,
    })
}

/// Plans SET and SHOW, which need no catalog.
pub fn plan_session_statement(stmt: &Statement) -> Result<Plan> {
    match stmt {
        Statement::Set(ast::Set::SingleAssignment {
            variable, values, ..
        }) => {
            let value = values
                .iter()
                .map(|v| match v {
                    ast::Expr::Value(v) => match &v.value {
                        ast::Value::SingleQuotedString(s) => s.clone(),
                        other => other.to_string(),
                    },
                    ast::Expr::Identifier(id) => id.value.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(", ");
            Ok(Plan::SetVariable {
                name: variable.to_string().to_lowercase(),
                value,
            })
        }
        Statement::Set(_) => Ok(Plan::SetVariable {
            name: String::new(),
            value: String::new(),
        }),
        Statement::ShowVariable { variable } => {
            let name = variable
                .iter()
                .map(|i| i.value.to_lowercase())
                .collect::<Vec<_>>()
                .join(" ");
            if name == "tables" {
                return Ok(Plan::ShowTables);
            }
            Ok(Plan::ShowVariable { name })
        }
        _ => Err(Error::Internal("not a session statement".into())),
    }
}
