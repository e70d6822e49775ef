//! Prepared statements: counting `$n` parameters and putting their values
//! into a statement.
//!
//! A prepared statement is planned at Parse (to learn its parameter and
//! result types, see [`crate::planner::params`]) and again at every
//! Execute, with the bound values substituted as literals. Planning again
//! costs little (the descriptors are two batched reads) and lets key
//! selection see the values: `WHERE aid = $1` is a point lookup.

use std::ops::ControlFlow;

use sqlparser::ast::{self, visit_expressions, visit_expressions_mut, Statement};

use crate::error::{Error, Result};
use crate::types::Value;

fn placeholder_index(e: &ast::Expr) -> Option<usize> {
    match e {
        ast::Expr::Value(v) => match &v.value {
            ast::Value::Placeholder(p) => p.strip_prefix('$')?.parse::<usize>().ok(),
            _ => None,
        },
        _ => None,
    }
}

/// The highest `$n` in the statement.
pub fn parameter_count(stmt: &Statement) -> usize {
    let mut n = 0;
    let _ = visit_expressions(stmt, |e| {
        if let Some(i) = placeholder_index(e) {
            n = n.max(i);
        }
        ControlFlow::<()>::Continue(())
    });
    n
}

/// A literal that binds back to `v`.
fn literal(v: &Value) -> ast::Expr {
    let number = |s: String| ast::Expr::value(ast::Value::Number(s, false));
    match v {
        Value::Null => ast::Expr::value(ast::Value::Null),
        Value::Bool(b) => ast::Expr::value(ast::Value::Boolean(*b)),
        Value::Int(i) => number(i.to_string()),
        Value::Text(s) => ast::Expr::value(ast::Value::SingleQuotedString(s.clone())),
        // Typed by a cast of their text (which reads back exactly): a bare
        // `1.5` would bind as numeric.
        Value::Float(_)
        | Value::Numeric(_)
        | Value::Bytes(_)
        | Value::Uuid(_)
        | Value::Date(_)
        | Value::Timestamp(_)
        | Value::TimestampTz(_)
        | Value::Interval(_) => {
            let data_type = match v {
                Value::Float(_) => ast::DataType::DoublePrecision,
                Value::Numeric(_) => ast::DataType::Numeric(ast::ExactNumberInfo::None),
                Value::Bytes(_) => ast::DataType::Bytea,
                Value::Uuid(_) => ast::DataType::Uuid,
                Value::Date(_) => ast::DataType::Date,
                Value::Timestamp(_) => ast::DataType::Timestamp(None, ast::TimezoneInfo::None),
                Value::TimestampTz(_) => {
                    ast::DataType::Timestamp(None, ast::TimezoneInfo::WithTimeZone)
                }
                _ => ast::DataType::Interval {
                    fields: None,
                    precision: None,
                },
            };
            ast::Expr::Cast {
                kind: ast::CastKind::DoubleColon,
                expr: Box::new(ast::Expr::value(ast::Value::SingleQuotedString(
                    v.to_text().unwrap_or_default(),
                ))),
                data_type,
                format: None,
            }
        }
    }
}

/// The statement with every `$n` replaced by the literal of `params[n-1]`.
pub fn substitute(stmt: &Statement, params: &[Value]) -> Result<Statement> {
    let mut out = stmt.clone();
    let mut missing = None;
    let _ = visit_expressions_mut(&mut out, |e| {
        if let Some(i) = placeholder_index(e) {
            match i.checked_sub(1).and_then(|i| params.get(i)) {
                Some(v) => *e = literal(v),
                None => missing = Some(i),
            }
        }
        ControlFlow::<()>::Continue(())
    });
    match missing {
        Some(i) => Err(Error::UndefinedParameter(format!(
            "there is no parameter ${i}"
        ))),
        None => Ok(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(sql: &str) -> Statement {
        match crate::parse(sql).unwrap().remove(0) {
            crate::Stmt::Sql(s) => *s,
            other => panic!("not a sqlparser statement: {other:?}"),
        }
    }

    #[test]
    fn parameters_are_counted_and_substituted() {
        let s = one("UPDATE t SET v = v + $2 WHERE k = $1 AND s = $3");
        assert_eq!(parameter_count(&s), 3);
        let out = substitute(
            &s,
            &[
                Value::Int(-7),
                Value::Float(0.1),
                Value::Text("it's".into()),
            ],
        )
        .unwrap();
        assert_eq!(
            out.to_string(),
            "UPDATE t SET v = v + '0.1'::DOUBLE PRECISION WHERE k = -7 AND s = 'it''s'"
        );
        assert!(substitute(&s, &[Value::Int(1)]).is_err());
        let nan = substitute(&one("SELECT $1"), &[Value::Float(f64::NAN)]).unwrap();
        assert_eq!(nan.to_string(), "SELECT 'NaN'::DOUBLE PRECISION");
    }
}
