//! Bound scalar expressions and their evaluation.
//!
//! The planner turns `sqlparser` expressions into [`Expr`]s whose column
//! references are positions in the input row and whose types are known. An
//! [`Expr`] is then evaluated once per row with PostgreSQL semantics: NULL
//! propagates through operators, `AND`/`OR` use three-valued logic, integer
//! arithmetic is checked for overflow (SQLSTATE 22003) and division by zero
//! (22012).

use std::cmp::Ordering;
use std::collections::HashMap;
use std::fmt;

use crate::datetime;
use crate::error::{Error, Result};
use crate::numeric;
use crate::types::{DataType, Value};

/// Binary operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    And,
    Or,
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Concat,
}

impl BinOp {
    /// The operator's SQL spelling.
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::And => "AND",
            BinOp::Or => "OR",
            BinOp::Eq => "=",
            BinOp::NotEq => "<>",
            BinOp::Lt => "<",
            BinOp::LtEq => "<=",
            BinOp::Gt => ">",
            BinOp::GtEq => ">=",
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Mod => "%",
            BinOp::Concat => "||",
        }
    }

    /// Whether the operator compares.
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinOp::Eq | BinOp::NotEq | BinOp::Lt | BinOp::LtEq | BinOp::Gt | BinOp::GtEq
        )
    }

    /// The comparison with its operands swapped (`a < b` ⇔ `b > a`).
    pub fn flip(self) -> BinOp {
        match self {
            BinOp::Lt => BinOp::Gt,
            BinOp::LtEq => BinOp::GtEq,
            BinOp::Gt => BinOp::Lt,
            BinOp::GtEq => BinOp::LtEq,
            other => other,
        }
    }
}

/// Scalar functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Func {
    Abs,
    Lower,
    Upper,
    Length,
    Coalesce,
    NullIf,
    Version,
    CurrentDatabase,
    /// A new row id for a table without a primary key ([`crate::rowid`]).
    UniqueRowid,
    /// `gen_random_uuid()`: a version 4 UUID.
    GenRandomUuid,
    /// `round(x [, places])`: numeric half away from zero, double
    /// precision half to even.
    Round,
    /// `trunc(x [, places])`.
    Trunc,
    Ceil,
    Floor,
    Sign,
    Sqrt,
    /// `power(x, y)` and `x ^ y`.
    Power,
    /// `pg_sleep(seconds)`: the executor sleeps (see `exec`); NULL.
    PgSleep,
    /// `clock_timestamp()`: the time now (volatile; `now()` and
    /// `CURRENT_TIMESTAMP` are bound to the transaction's time instead).
    ClockTimestamp,
    /// `date_trunc(field, timestamp)`.
    DateTrunc,
    /// `extract(field FROM x)` / `date_part(field, x)` (double precision).
    DatePart,
    /// `format_type(type oid, typmod)`.
    FormatType,
    /// `x ~ pattern` and its negated and case-insensitive forms (POSIX
    /// regular expressions, as the `regex` crate reads them).
    RegexMatch {
        negated: bool,
        insensitive: bool,
    },
    /// `x = ANY(array)`.
    AnyEq,
    /// `array_to_string(array, separator)`.
    ArrayToString,
    /// `array_upper(array, dimension)`.
    ArrayUpper,
    /// `array_position(array, element)`.
    ArrayPosition,
    /// `array[i]` (1-based).
    ArraySubscript,
}

/// What a subquery computes for its enclosing row.
#[derive(Clone, Debug, PartialEq)]
pub enum SubqueryKind {
    /// `(SELECT x …)`: the single value of its single row, NULL if no row.
    Scalar,
    /// `EXISTS (SELECT …)`.
    Exists,
    /// `ARRAY(SELECT x …)`: the values of its rows, as an array.
    Array,
    /// `expr [NOT] IN (SELECT x …)`.
    In { expr: Box<Expr>, negated: bool },
}

/// A subquery inside an expression. Its plan refers to the rows of the
/// queries around it through [`Expr::Outer`]; the executor substitutes
/// those references with the current row's values ("instantiates" it) and
/// runs the plan, once per statement if it refers to no outer row.
#[derive(Clone, Debug)]
pub struct Subquery {
    /// Unique within a statement: the key of the executor's cache.
    pub id: usize,
    pub kind: SubqueryKind,
    pub node: crate::plan::Node,
    /// Whether the plan refers to an enclosing query's row.
    pub correlated: bool,
}

impl PartialEq for Subquery {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

/// A bound expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Literal(Value),
    /// A column of the input row, by position.
    Column(usize),
    /// A column of an enclosing query's row: `depth` 1 is the query
    /// immediately around the subquery this expression is in.
    Outer {
        depth: u32,
        index: usize,
    },
    Subquery(Box<Subquery>),
    /// `$n` (0-based) of a statement being prepared: only planned, to learn
    /// parameter and result types; execution substitutes the values.
    Param(usize),
    Not(Box<Expr>),
    Neg(Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    IsNull(Box<Expr>, bool),
    Like {
        expr: Box<Expr>,
        pattern: Box<Expr>,
        negated: bool,
        case_insensitive: bool,
    },
    InList {
        expr: Box<Expr>,
        list: Vec<Expr>,
        negated: bool,
    },
    Case {
        operand: Option<Box<Expr>>,
        whens: Vec<(Expr, Expr)>,
        else_: Option<Box<Expr>>,
    },
    Cast(Box<Expr>, DataType),
    Func(Func, Vec<Expr>),
    /// A catalog function or `reg*` cast: the argument looked up in a map
    /// built from the catalog when the statement was planned.
    Catalog(crate::pg_catalog::Lookup, Box<Expr>),
}

impl Expr {
    /// Evaluates the expression against one row.
    pub fn eval(&self, row: &[Value]) -> Result<Value> {
        Ok(match self {
            Expr::Literal(v) => v.clone(),
            Expr::Column(i) => row.get(*i).cloned().ok_or_else(|| {
                Error::Internal(format!("column {i} out of the row's {} columns", row.len()))
            })?,
            Expr::Outer { .. } | Expr::Subquery(_) | Expr::Param(_) => {
                return Err(Error::Internal(format!(
                    "{self} reached evaluation without being instantiated"
                )))
            }
            Expr::Not(e) => match e.eval(row)? {
                Value::Null => Value::Null,
                Value::Bool(b) => Value::Bool(!b),
                v => {
                    return Err(Error::DatatypeMismatch(format!(
                        "argument of NOT must be type boolean, not type {}",
                        v.type_name()
                    )))
                }
            },
            Expr::Neg(e) => match e.eval(row)? {
                Value::Null => Value::Null,
                Value::Int(i) => Value::Int(
                    i.checked_neg()
                        .ok_or_else(|| Error::NumericOutOfRange("bigint".into()))?,
                ),
                Value::Float(f) => Value::Float(-f),
                Value::Numeric(d) => Value::Numeric(-d),
                Value::Interval(iv) => Value::Interval(iv.negate()?),
                v => return Err(Error::UndefinedOperator(format!("- {}", v.type_name()))),
            },
            Expr::Binary(op, l, r) => eval_binary(*op, l, r, row)?,
            Expr::IsNull(e, negated) => Value::Bool(e.eval(row)?.is_null() != *negated),
            Expr::Like {
                expr,
                pattern,
                negated,
                case_insensitive,
            } => match (expr.eval(row)?, pattern.eval(row)?) {
                (Value::Null, _) | (_, Value::Null) => Value::Null,
                (Value::Text(s), Value::Text(p)) => {
                    let m = if *case_insensitive {
                        like(&s.to_lowercase(), &p.to_lowercase())
                    } else {
                        like(&s, &p)
                    };
                    Value::Bool(m != *negated)
                }
                (a, b) => {
                    return Err(Error::UndefinedOperator(format!(
                        "{} ~~ {}",
                        a.type_name(),
                        b.type_name()
                    )))
                }
            },
            Expr::InList {
                expr,
                list,
                negated,
            } => {
                // Nothing is in an empty set, not even NULL (an IN list is
                // only empty when a subquery returned no rows).
                if list.is_empty() {
                    return Ok(Value::Bool(*negated));
                }
                let v = expr.eval(row)?;
                if v.is_null() {
                    return Ok(Value::Null);
                }
                let mut saw_null = false;
                for item in list {
                    match v.sql_cmp(&item.eval(row)?) {
                        Some(Ordering::Equal) => return Ok(Value::Bool(!negated)),
                        None => saw_null = true,
                        _ => {}
                    }
                }
                if saw_null {
                    Value::Null
                } else {
                    Value::Bool(*negated)
                }
            }
            Expr::Case {
                operand,
                whens,
                else_,
            } => {
                let op = operand.as_ref().map(|o| o.eval(row)).transpose()?;
                for (cond, result) in whens {
                    let hit = match &op {
                        Some(o) => o.sql_cmp(&cond.eval(row)?) == Some(Ordering::Equal),
                        None => cond.eval(row)?.is_true(),
                    };
                    if hit {
                        return result.eval(row);
                    }
                }
                match else_ {
                    Some(e) => e.eval(row)?,
                    None => Value::Null,
                }
            }
            Expr::Cast(e, ty) => e.eval(row)?.cast(ty)?,
            Expr::Func(f, args) => eval_func(*f, args, row)?,
            Expr::Catalog(lookup, arg) => lookup.get(&arg.eval(row)?)?,
        })
    }

    /// Whether the expression reads no column, no enclosing row and no
    /// table (a constant that can be folded at plan time).
    pub fn is_constant(&self) -> bool {
        let mut constant = true;
        self.walk(&mut |e| {
            if matches!(
                e,
                Expr::Column(_) | Expr::Outer { .. } | Expr::Subquery(_) | Expr::Param(_)
            ) || matches!(
                e,
                Expr::Func(Func::UniqueRowid | Func::PgSleep | Func::ClockTimestamp, _)
            ) {
                constant = false;
            }
        });
        constant
    }

    /// Whether the expression reads a column of its own input row (not
    /// counting references from inside subqueries).
    pub fn reads_columns(&self) -> bool {
        let mut reads = false;
        self.walk(&mut |e| reads |= matches!(e, Expr::Column(_)));
        reads
    }

    /// Whether a subquery appears anywhere in the expression.
    pub fn has_subquery(&self) -> bool {
        let mut found = false;
        self.walk(&mut |e| found |= matches!(e, Expr::Subquery(_)));
        found
    }

    /// Whether evaluating the expression must wait: a subquery to run or
    /// a `pg_sleep`.
    pub fn needs_executor(&self) -> bool {
        let mut found = false;
        self.walk(&mut |e| found |= matches!(e, Expr::Subquery(_) | Expr::Func(Func::PgSleep, _)));
        found
    }

    /// Visits the expression and every sub-expression, descending into the
    /// plans of subqueries; `depth` counts the subquery boundaries crossed
    /// (0 for this expression's own terms).
    pub fn walk_depth(&self, depth: u32, f: &mut dyn FnMut(&Expr, u32)) {
        f(self, depth);
        self.for_each_child(&mut |c| c.walk_depth(depth, f));
        if let Expr::Subquery(sq) = self {
            sq.node.walk_exprs(depth + 1, f);
        }
    }

    /// [`Expr::walk_depth`], mutably: `f` may replace the expression it is
    /// given (its children are visited after the replacement).
    pub fn walk_depth_mut(&mut self, depth: u32, f: &mut dyn FnMut(&mut Expr, u32)) {
        f(self, depth);
        self.for_each_child_mut(&mut |c| c.walk_depth_mut(depth, f));
        if let Expr::Subquery(sq) = self {
            sq.node.walk_exprs_mut(depth + 1, f);
        }
    }

    /// Calls `f` with every reference to the current query's row: its own
    /// columns, and the enclosing-row references of subqueries inside it
    /// that point at this query.
    pub fn visit_row_refs_mut(&mut self, f: &mut dyn FnMut(&mut usize)) {
        self.walk_depth_mut(0, &mut |e, d| match e {
            Expr::Column(i) if d == 0 => f(i),
            Expr::Outer { depth, index } if *depth == d => f(index),
            _ => {}
        });
    }

    /// The positions of the current query's row that the expression reads
    /// (see [`Expr::visit_row_refs_mut`]).
    pub fn row_refs(&self) -> Vec<usize> {
        let mut out = Vec::new();
        self.walk_depth(0, &mut |e, d| match e {
            Expr::Column(i) if d == 0 => out.push(*i),
            Expr::Outer { depth, index } if *depth == d => out.push(*index),
            _ => {}
        });
        out
    }

    fn for_each_child(&self, f: &mut dyn FnMut(&Expr)) {
        match self {
            Expr::Literal(_) | Expr::Column(_) | Expr::Outer { .. } | Expr::Param(_) => {}
            Expr::Subquery(sq) => {
                if let SubqueryKind::In { expr, .. } = &sq.kind {
                    f(expr)
                }
            }
            Expr::Not(e)
            | Expr::Neg(e)
            | Expr::IsNull(e, _)
            | Expr::Cast(e, _)
            | Expr::Catalog(_, e) => f(e),
            Expr::Binary(_, l, r) => {
                f(l);
                f(r);
            }
            Expr::Like { expr, pattern, .. } => {
                f(expr);
                f(pattern);
            }
            Expr::InList { expr, list, .. } => {
                f(expr);
                list.iter().for_each(f);
            }
            Expr::Case {
                operand,
                whens,
                else_,
            } => {
                if let Some(o) = operand {
                    f(o);
                }
                for (c, r) in whens {
                    f(c);
                    f(r);
                }
                if let Some(e) = else_ {
                    f(e);
                }
            }
            Expr::Func(_, args) => args.iter().for_each(f),
        }
    }

    fn for_each_child_mut(&mut self, f: &mut dyn FnMut(&mut Expr)) {
        match self {
            Expr::Literal(_) | Expr::Column(_) | Expr::Outer { .. } | Expr::Param(_) => {}
            Expr::Subquery(sq) => {
                if let SubqueryKind::In { expr, .. } = &mut sq.kind {
                    f(expr)
                }
            }
            Expr::Not(e)
            | Expr::Neg(e)
            | Expr::IsNull(e, _)
            | Expr::Cast(e, _)
            | Expr::Catalog(_, e) => f(e),
            Expr::Binary(_, l, r) => {
                f(l);
                f(r);
            }
            Expr::Like { expr, pattern, .. } => {
                f(expr);
                f(pattern);
            }
            Expr::InList { expr, list, .. } => {
                f(expr);
                list.iter_mut().for_each(f);
            }
            Expr::Case {
                operand,
                whens,
                else_,
            } => {
                if let Some(o) = operand {
                    f(o);
                }
                for (c, r) in whens {
                    f(c);
                    f(r);
                }
                if let Some(e) = else_ {
                    f(e);
                }
            }
            Expr::Func(_, args) => args.iter_mut().for_each(f),
        }
    }

    /// Visits the expression and every sub-expression of this query level
    /// (not the plans of subqueries).
    pub fn walk(&self, f: &mut impl FnMut(&Expr)) {
        f(self);
        self.for_each_child(&mut |c| c.walk(f));
    }

    /// Splits a conjunction into its terms.
    pub fn conjuncts(self) -> Vec<Expr> {
        match self {
            Expr::Binary(BinOp::And, l, r) => {
                let mut v = l.conjuncts();
                v.extend(r.conjuncts());
                v
            }
            e => vec![e],
        }
    }
}

fn eval_binary(op: BinOp, l: &Expr, r: &Expr, row: &[Value]) -> Result<Value> {
    // AND / OR short-circuit with three-valued logic.
    if op == BinOp::And || op == BinOp::Or {
        let lv = l.eval(row)?;
        let lb = as_bool(&lv, op)?;
        if op == BinOp::And && lb == Some(false) {
            return Ok(Value::Bool(false));
        }
        if op == BinOp::Or && lb == Some(true) {
            return Ok(Value::Bool(true));
        }
        let rb = as_bool(&r.eval(row)?, op)?;
        return Ok(match (op, lb, rb) {
            (BinOp::And, _, Some(false)) => Value::Bool(false),
            (BinOp::And, Some(true), Some(true)) => Value::Bool(true),
            (BinOp::Or, _, Some(true)) => Value::Bool(true),
            (BinOp::Or, Some(false), Some(false)) => Value::Bool(false),
            _ => Value::Null,
        });
    }
    let lv = l.eval(row)?;
    let rv = r.eval(row)?;
    binary_values(op, lv, rv)
}

fn as_bool(v: &Value, op: BinOp) -> Result<Option<bool>> {
    match v {
        Value::Null => Ok(None),
        Value::Bool(b) => Ok(Some(*b)),
        v => Err(Error::DatatypeMismatch(format!(
            "argument of {} must be type boolean, not type {}",
            op.symbol(),
            v.type_name()
        ))),
    }
}

/// Applies a non-logical binary operator to two values.
pub fn binary_values(op: BinOp, lv: Value, rv: Value) -> Result<Value> {
    if lv.is_null() || rv.is_null() {
        return Ok(Value::Null);
    }
    if op.is_comparison() {
        let ord = lv.sql_cmp(&rv).expect("neither side is NULL");
        let b = match op {
            BinOp::Eq => ord == Ordering::Equal,
            BinOp::NotEq => ord != Ordering::Equal,
            BinOp::Lt => ord == Ordering::Less,
            BinOp::LtEq => ord != Ordering::Greater,
            BinOp::Gt => ord == Ordering::Greater,
            BinOp::GtEq => ord != Ordering::Less,
            _ => unreachable!("comparison operators only"),
        };
        return Ok(Value::Bool(b));
    }
    use Value::*;
    let overflow = || Error::NumericOutOfRange("bigint".into());
    Ok(match (op, lv, rv) {
        (BinOp::Concat, a, b) => Text(format!("{a}{b}")),
        (BinOp::Add, Int(a), Int(b)) => Int(a.checked_add(b).ok_or_else(overflow)?),
        (BinOp::Sub, Int(a), Int(b)) => Int(a.checked_sub(b).ok_or_else(overflow)?),
        (BinOp::Mul, Int(a), Int(b)) => Int(a.checked_mul(b).ok_or_else(overflow)?),
        (BinOp::Div, Int(a), Int(b)) => {
            if b == 0 {
                return Err(Error::DivisionByZero);
            }
            Int(a.checked_div(b).ok_or_else(overflow)?)
        }
        (BinOp::Mod, Int(a), Int(b)) => {
            if b == 0 {
                return Err(Error::DivisionByZero);
            }
            Int(a.checked_rem(b).unwrap_or(0))
        }
        (op, a @ (Date(_) | Timestamp(_) | TimestampTz(_) | Interval(_)), b)
        | (op, a, b @ (Date(_) | Timestamp(_) | TimestampTz(_) | Interval(_))) => {
            datetime_arith(op, a, b)?
        }
        (op, Numeric(a), Numeric(b)) => Numeric(numeric::arith(op, a, b)?),
        (op, Numeric(a), Int(b)) => Numeric(numeric::arith(op, a, b.into())?),
        (op, Int(a), Numeric(b)) => Numeric(numeric::arith(op, a.into(), b)?),
        (op, a @ (Int(_) | Float(_) | Numeric(_)), b @ (Int(_) | Float(_) | Numeric(_))) => {
            let x = to_f64(&a);
            let y = to_f64(&b);
            let v = match op {
                BinOp::Add => x + y,
                BinOp::Sub => x - y,
                BinOp::Mul => x * y,
                BinOp::Div => {
                    if y == 0.0 {
                        return Err(Error::DivisionByZero);
                    }
                    x / y
                }
                BinOp::Mod => {
                    if y == 0.0 {
                        return Err(Error::DivisionByZero);
                    }
                    x % y
                }
                _ => unreachable!("arithmetic operators only"),
            };
            if v.is_infinite() && x.is_finite() && y.is_finite() {
                return Err(Error::NumericOutOfRange("double precision".into()));
            }
            Float(v)
        }
        (op, a, b) => return Err(no_operator(op, &a, &b)),
    })
}

/// `round` and `trunc`: numeric (an integer counts as one) to `places`
/// (0 if absent), double precision to an integer.
fn round_like(v: Value, places: Value, truncate: bool) -> Result<Value> {
    use rust_decimal::RoundingStrategy as R;
    let strategy = if truncate {
        R::ToZero
    } else {
        R::MidpointAwayFromZero
    };
    let places = match places {
        Value::Null => 0,
        Value::Int(p) => p,
        other => {
            return Err(Error::UndefinedFunction(format!(
                "round(numeric, {})",
                other.type_name()
            )))
        }
    };
    let d = match v {
        Value::Float(f) => {
            if places == 0 {
                return Ok(Value::Float(if truncate {
                    f.trunc()
                } else {
                    f.round_ties_even()
                }));
            }
            numeric::from_f64(f)?
        }
        Value::Int(i) if places == 0 => return Ok(Value::Float(i as f64)),
        Value::Int(i) => rust_decimal::Decimal::from(i),
        Value::Numeric(d) => d,
        other => {
            return Err(Error::UndefinedFunction(format!(
                "round({})",
                other.type_name()
            )))
        }
    };
    if places >= 0 {
        let p = places.min(28) as u32;
        return Ok(Value::Numeric(numeric::rescale_with(d, p, strategy)));
    }
    // Negative places round to tens, hundreds, …
    let shift = rust_decimal::Decimal::from(10i64.pow((-places).min(18) as u32));
    let r = (d / shift).round_dp_with_strategy(0, strategy) * shift;
    Ok(Value::Numeric(r.round_dp(0)))
}

/// A float as a numeric with 16 significant digits (what PostgreSQL shows
/// for inexact numeric functions).
fn sig16(f: f64) -> Result<rust_decimal::Decimal> {
    numeric::parse(&format!("{f:.15e}")).map(|d| d.normalize())
}

/// "operator does not exist: date + date" (42883).
fn no_operator(op: BinOp, a: &Value, b: &Value) -> Error {
    Error::UndefinedOperator(format!(
        "{} {} {}",
        a.type_name(),
        op.symbol(),
        b.type_name()
    ))
}

/// Arithmetic on dates, timestamps and intervals (PostgreSQL's operators:
/// `date ± int`, `date − date`, `date/timestamp ± interval`,
/// `timestamp − timestamp`, `interval ± interval`, `interval * / number`).
fn datetime_arith(op: BinOp, a: Value, b: Value) -> Result<Value> {
    use Value::*;
    let ts_plus = |t: i64, iv: &datetime::Interval, neg: bool| -> Result<i64> {
        let iv = if neg { iv.negate()? } else { *iv };
        datetime::ts_add_interval(t, &iv)
    };
    Ok(match (op, a, b) {
        (BinOp::Add, Date(d), Int(n)) | (BinOp::Add, Int(n), Date(d)) => {
            Date(datetime::date_add_days(d, n)?)
        }
        (BinOp::Sub, Date(d), Int(n)) => Date(datetime::date_add_days(d, -n)?),
        (BinOp::Sub, Date(a), Date(b)) => Int(i64::from(a) - i64::from(b)),
        (BinOp::Add, Date(d), Interval(iv)) | (BinOp::Add, Interval(iv), Date(d)) => {
            Timestamp(ts_plus(datetime::date_to_ts(d)?, &iv, false)?)
        }
        (BinOp::Sub, Date(d), Interval(iv)) => {
            Timestamp(ts_plus(datetime::date_to_ts(d)?, &iv, true)?)
        }
        (BinOp::Add, Timestamp(t), Interval(iv)) | (BinOp::Add, Interval(iv), Timestamp(t)) => {
            Timestamp(ts_plus(t, &iv, false)?)
        }
        (BinOp::Add, TimestampTz(t), Interval(iv)) | (BinOp::Add, Interval(iv), TimestampTz(t)) => {
            TimestampTz(ts_plus(t, &iv, false)?)
        }
        (BinOp::Sub, Timestamp(t), Interval(iv)) => Timestamp(ts_plus(t, &iv, true)?),
        (BinOp::Sub, TimestampTz(t), Interval(iv)) => TimestampTz(ts_plus(t, &iv, true)?),
        (BinOp::Sub, Timestamp(a) | TimestampTz(a), Timestamp(b) | TimestampTz(b)) => {
            Interval(datetime::ts_diff(a, b)?)
        }
        (BinOp::Sub, Timestamp(a) | TimestampTz(a), Date(b)) => {
            Interval(datetime::ts_diff(a, datetime::date_to_ts(b)?)?)
        }
        (BinOp::Sub, Date(a), Timestamp(b) | TimestampTz(b)) => {
            Interval(datetime::ts_diff(datetime::date_to_ts(a)?, b)?)
        }
        (BinOp::Add, Interval(a), Interval(b)) => Interval(a.add(&b)?),
        (BinOp::Sub, Interval(a), Interval(b)) => Interval(a.add(&b.negate()?)?),
        (BinOp::Mul, Interval(iv), n @ (Int(_) | Float(_) | Numeric(_)))
        | (BinOp::Mul, n @ (Int(_) | Float(_) | Numeric(_)), Interval(iv)) => {
            Interval(iv.mul(to_f64(&n))?)
        }
        (BinOp::Div, Interval(iv), n @ (Int(_) | Float(_) | Numeric(_))) => {
            let n = to_f64(&n);
            if n == 0.0 {
                return Err(Error::DivisionByZero);
            }
            Interval(iv.mul(1.0 / n)?)
        }
        (op, a, b) => return Err(no_operator(op, &a, &b)),
    })
}

fn to_f64(v: &Value) -> f64 {
    match v {
        Value::Int(i) => *i as f64,
        Value::Float(f) => *f,
        Value::Numeric(d) => numeric::to_f64(d),
        _ => f64::NAN,
    }
}

fn eval_func(f: Func, args: &[Expr], row: &[Value]) -> Result<Value> {
    let vals = args
        .iter()
        .map(|a| a.eval(row))
        .collect::<Result<Vec<_>>>()?;
    let arg = |i: usize| vals.get(i).cloned().unwrap_or(Value::Null);
    Ok(match f {
        Func::Coalesce => vals
            .into_iter()
            .find(|v| !v.is_null())
            .unwrap_or(Value::Null),
        Func::NullIf => {
            let (a, b) = (arg(0), arg(1));
            if a.sql_cmp(&b) == Some(Ordering::Equal) {
                Value::Null
            } else {
                a
            }
        }
        Func::Version => Value::Text(crate::version_string()),
        Func::CurrentDatabase => Value::Text(crate::catalog::DEFAULT_DATABASE.into()),
        Func::UniqueRowid => Value::Int(crate::rowid::unique_rowid()),
        Func::GenRandomUuid => {
            Value::Uuid(uuid::Builder::from_random_bytes(rand::random()).into_uuid())
        }
        // The executor sleeps before evaluating (`exec::resolve_subqueries`).
        Func::PgSleep => Value::Null,
        Func::ClockTimestamp => Value::TimestampTz(datetime::now_micros()),
        Func::DateTrunc | Func::DatePart => match (arg(0), arg(1)) {
            (Value::Null, _) | (_, Value::Null) => Value::Null,
            (Value::Text(field), v) => {
                let field = datetime::Field::parse(&field)?;
                let (us, tz) = match v {
                    Value::Timestamp(t) => (t, false),
                    Value::TimestampTz(t) => (t, true),
                    Value::Date(d) => (datetime::date_to_ts(d)?, false),
                    v => {
                        return Err(Error::UndefinedFunction(format!(
                            "{f:?}(text, {})",
                            v.type_name()
                        )))
                    }
                };
                if f == Func::DatePart {
                    Value::Float(datetime::extract(field, us)?)
                } else if tz {
                    Value::TimestampTz(datetime::trunc(field, us)?)
                } else {
                    Value::Timestamp(datetime::trunc(field, us)?)
                }
            }
            (a, _) => {
                return Err(Error::UndefinedFunction(format!(
                    "{f:?}({}, …)",
                    a.type_name()
                )))
            }
        },
        Func::FormatType => match arg(0) {
            Value::Null => Value::Null,
            Value::Int(oid) => Value::Text(crate::pg_catalog::format_type(
                oid,
                match arg(1) {
                    Value::Int(m) => Some(m),
                    _ => None,
                },
            )),
            v => {
                return Err(Error::UndefinedFunction(format!(
                    "format_type({})",
                    v.type_name()
                )))
            }
        },
        Func::RegexMatch {
            negated,
            insensitive,
        } => match (arg(0), arg(1)) {
            (Value::Null, _) | (_, Value::Null) => Value::Null,
            (x, p) => Value::Bool(
                regex_match(
                    &x.to_text().unwrap_or_default(),
                    &p.to_text().unwrap_or_default(),
                    insensitive,
                )? != negated,
            ),
        },
        Func::AnyEq => match array_items(&arg(1))? {
            None => Value::Null,
            Some(items) => {
                let x = arg(0);
                if x.is_null() {
                    return Ok(Value::Null);
                }
                let mut saw_null = false;
                let mut found = false;
                for item in items {
                    match item {
                        None => saw_null = true,
                        Some(s) => found |= array_element_eq(&x, &s)?,
                    }
                }
                if found {
                    Value::Bool(true)
                } else if saw_null {
                    Value::Null
                } else {
                    Value::Bool(false)
                }
            }
        },
        Func::ArrayToString => match (array_items(&arg(0))?, arg(1)) {
            (None, _) | (_, Value::Null) => Value::Null,
            (Some(items), sep) => Value::Text(
                items
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(&sep.to_text().unwrap_or_default()),
            ),
        },
        Func::ArrayUpper => match (array_items(&arg(0))?, arg(1)) {
            (Some(items), Value::Int(1)) if !items.is_empty() => Value::Int(items.len() as i64),
            _ => Value::Null,
        },
        Func::ArrayPosition => match (array_items(&arg(0))?, arg(1)) {
            (Some(items), x) if !x.is_null() => {
                let mut at = Value::Null;
                for (i, item) in items.into_iter().enumerate() {
                    if let Some(s) = item {
                        if array_element_eq(&x, &s)? {
                            at = Value::Int(i as i64 + 1);
                            break;
                        }
                    }
                }
                at
            }
            _ => Value::Null,
        },
        Func::ArraySubscript => match (array_items(&arg(0))?, arg(1)) {
            (Some(items), Value::Int(i)) if i >= 1 => items
                .into_iter()
                .nth(i as usize - 1)
                .flatten()
                .map_or(Value::Null, Value::Text),
            _ => Value::Null,
        },
        _ => match (f, arg(0)) {
            (_, Value::Null) => Value::Null,
            (Func::Abs, Value::Int(i)) => Value::Int(
                i.checked_abs()
                    .ok_or_else(|| Error::NumericOutOfRange("bigint".into()))?,
            ),
            (Func::Abs, Value::Float(x)) => Value::Float(x.abs()),
            (Func::Abs, Value::Numeric(d)) => Value::Numeric(d.abs()),
            (Func::Round, v) => round_like(v, arg(1), false)?,
            (Func::Trunc, v) => round_like(v, arg(1), true)?,
            (Func::Ceil, Value::Numeric(d)) => Value::Numeric(d.ceil()),
            (Func::Floor, Value::Numeric(d)) => Value::Numeric(d.floor()),
            (Func::Ceil, v @ (Value::Int(_) | Value::Float(_))) => Value::Float(to_f64(&v).ceil()),
            (Func::Floor, v @ (Value::Int(_) | Value::Float(_))) => {
                Value::Float(to_f64(&v).floor())
            }
            (Func::Sign, Value::Numeric(d)) => Value::Numeric(if d.is_zero() {
                rust_decimal::Decimal::ZERO
            } else if d.is_sign_negative() {
                rust_decimal::Decimal::NEGATIVE_ONE
            } else {
                rust_decimal::Decimal::ONE
            }),
            (Func::Sign, v @ (Value::Int(_) | Value::Float(_))) => {
                let x = to_f64(&v);
                Value::Float(if x == 0.0 { 0.0 } else { x.signum() })
            }
            (Func::Sqrt, v @ (Value::Int(_) | Value::Float(_) | Value::Numeric(_))) => {
                let x = to_f64(&v);
                if x < 0.0 {
                    return Err(Error::InvalidArgumentForPowerFunction(
                        "cannot take square root of a negative number".into(),
                    ));
                }
                match v {
                    // 16 significant digits, as PostgreSQL shows sqrt(numeric).
                    Value::Numeric(_) => Value::Numeric(sig16(x.sqrt())?),
                    _ => Value::Float(x.sqrt()),
                }
            }
            (Func::Power, v) => match (v, arg(1)) {
                (_, Value::Null) => Value::Null,
                (Value::Numeric(a), Value::Int(b)) if (0..=64).contains(&b) => {
                    let mut r = rust_decimal::Decimal::ONE;
                    for _ in 0..b {
                        r = r.checked_mul(a).ok_or_else(|| {
                            Error::NumericValueOverflow("value overflows numeric format".into())
                        })?;
                    }
                    Value::Numeric(r)
                }
                (a, b) => {
                    let (x, y) = (to_f64(&a), to_f64(&b));
                    if x == 0.0 && y < 0.0 {
                        return Err(Error::InvalidArgumentForPowerFunction(
                            "zero raised to a negative power is undefined".into(),
                        ));
                    }
                    let r = x.powf(y);
                    if r.is_nan() && !x.is_nan() && !y.is_nan() {
                        return Err(Error::InvalidArgumentForPowerFunction(
                            "a negative number raised to a non-integer power yields a complex \
                             result"
                                .into(),
                        ));
                    }
                    match (a, b) {
                        (Value::Numeric(_), _) | (_, Value::Numeric(_)) => {
                            Value::Numeric(sig16(r)?)
                        }
                        _ => Value::Float(r),
                    }
                }
            },
            (Func::Lower, Value::Text(s)) => Value::Text(s.to_lowercase()),
            (Func::Upper, Value::Text(s)) => Value::Text(s.to_uppercase()),
            (Func::Length, Value::Text(s)) => Value::Int(s.chars().count() as i64),
            (Func::Length, Value::Bytes(b)) => Value::Int(b.len() as i64),
            (f, v) => {
                return Err(Error::UndefinedFunction(
                    format!("{f:?}({})", v.type_name()).to_lowercase(),
                ))
            }
        },
    })
}

/// SQL `LIKE` matching: `%` any sequence, `_` any one character, `\`
/// escapes the next character.
pub fn like(s: &str, pattern: &str) -> bool {
    let s: Vec<char> = s.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    // Iterative matching with backtracking on the last '%'.
    let (mut si, mut pi) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() {
            match p[pi] {
                '%' => {
                    star = Some((pi, si));
                    pi += 1;
                    continue;
                }
                '_' => {
                    si += 1;
                    pi += 1;
                    continue;
                }
                '\\' if pi + 1 < p.len() && p[pi + 1] == s[si] => {
                    si += 1;
                    pi += 2;
                    continue;
                }
                '\\' if pi + 1 < p.len() => {}
                c if c == s[si] => {
                    si += 1;
                    pi += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, ss)) => {
                pi = sp + 1;
                si = ss + 1;
                star = Some((sp, ss + 1));
            }
            None => return false,
        }
    }
    while pi < p.len() && p[pi] == '%' {
        pi += 1;
    }
    pi == p.len()
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Literal(Value::Text(s)) => write!(f, "'{}'", s.replace('\'', "''")),
            Expr::Literal(v) => write!(f, "{v}"),
            Expr::Column(i) => write!(f, "#{i}"),
            Expr::Outer { depth, index } => write!(f, "outer{depth}#{index}"),
            Expr::Param(n) => write!(f, "${}", n + 1),
            Expr::Subquery(sq) => match &sq.kind {
                SubqueryKind::Scalar => write!(f, "(subquery {})", sq.id),
                SubqueryKind::Exists => write!(f, "EXISTS (subquery {})", sq.id),
                SubqueryKind::Array => write!(f, "ARRAY(subquery {})", sq.id),
                SubqueryKind::In { expr, negated } => write!(
                    f,
                    "{expr} {}IN (subquery {})",
                    if *negated { "NOT " } else { "" },
                    sq.id
                ),
            },
            Expr::Not(e) => write!(f, "NOT {e}"),
            Expr::Neg(e) => write!(f, "-{e}"),
            Expr::Binary(op, l, r) => write!(f, "({l} {} {r})", op.symbol()),
            Expr::IsNull(e, false) => write!(f, "{e} IS NULL"),
            Expr::IsNull(e, true) => write!(f, "{e} IS NOT NULL"),
            Expr::Like {
                expr,
                pattern,
                negated,
                case_insensitive,
            } => write!(
                f,
                "{expr} {}{} {pattern}",
                if *negated { "NOT " } else { "" },
                if *case_insensitive { "ILIKE" } else { "LIKE" }
            ),
            Expr::InList {
                expr,
                list,
                negated,
            } => {
                let items: Vec<String> = list.iter().map(|e| e.to_string()).collect();
                write!(
                    f,
                    "{expr} {}IN ({})",
                    if *negated { "NOT " } else { "" },
                    items.join(", ")
                )
            }
            Expr::Case { .. } => write!(f, "CASE ... END"),
            Expr::Cast(e, ty) => write!(f, "{e}::{ty}"),
            Expr::Catalog(lookup, e) => write!(f, "{}({e})", lookup.name),
            Expr::Func(func, args) => {
                let items: Vec<String> = args.iter().map(|e| e.to_string()).collect();
                write!(
                    f,
                    "{}({})",
                    format!("{func:?}").to_lowercase(),
                    items.join(", ")
                )
            }
        }
    }
}

/// The items of an array value (arrays are kept in their text form), or
/// `None` for NULL.
fn array_items(v: &Value) -> Result<Option<Vec<Option<String>>>> {
    match v {
        Value::Null => Ok(None),
        Value::Text(s) => crate::pg_catalog::parse_array(s).map(Some).ok_or_else(|| {
            Error::InvalidTextRepresentation {
                ty: "array".into(),
                value: s.clone(),
            }
        }),
        other => Err(Error::DatatypeMismatch(format!(
            "{} is not an array",
            other.type_name()
        ))),
    }
}

/// Whether an array element (text) equals `x`, read as `x`'s type.
fn array_element_eq(x: &Value, item: &str) -> Result<bool> {
    let ty = match x {
        Value::Bool(_) => DataType::Bool,
        Value::Int(_) => DataType::Int8,
        Value::Float(_) => DataType::Float8,
        Value::Date(_) => DataType::Date,
        Value::Timestamp(_) => DataType::Timestamp,
        Value::TimestampTz(_) => DataType::TimestampTz,
        Value::Interval(_) => DataType::Interval,
        Value::Numeric(_) => DataType::Numeric(None),
        Value::Bytes(_) => DataType::Bytea,
        Value::Uuid(_) => DataType::Uuid,
        Value::Null | Value::Text(_) => DataType::Text,
    };
    let item = Value::Text(item.to_string()).cast(&ty)?;
    Ok(x.sql_cmp(&item) == Some(Ordering::Equal))
}

thread_local! {
    /// Compiled patterns of recent regular-expression matches: catalog
    /// queries match one pattern against every row.
    static REGEX_CACHE: std::cell::RefCell<HashMap<(String, bool), regex::Regex>> =
        std::cell::RefCell::new(HashMap::new());
}

/// `text ~ pattern`.
fn regex_match(text: &str, pattern: &str, insensitive: bool) -> Result<bool> {
    REGEX_CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        let key = (pattern.to_string(), insensitive);
        if !cache.contains_key(&key) {
            let re = regex::RegexBuilder::new(pattern)
                .case_insensitive(insensitive)
                .build()
                .map_err(|e| {
                    Error::InvalidRegularExpression(format!("invalid regular expression: {e}"))
                })?;
            if cache.len() >= 64 {
                cache.clear();
            }
            cache.insert(key.clone(), re);
        }
        Ok(cache[&key].is_match(text))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns() {
        assert!(like("hello", "h%o"));
        assert!(like("hello", "_ello"));
        assert!(!like("hello", "h_o"));
        assert!(like("", "%"));
        assert!(like("a%b", "a\\%b"));
        assert!(!like("axb", "a\\%b"));
        assert!(like("abcabc", "%abc"));
    }

    #[test]
    fn three_valued_logic() {
        let t = Expr::Literal(Value::Bool(true));
        let f = Expr::Literal(Value::Bool(false));
        let n = Expr::Literal(Value::Null);
        let and = |a: &Expr, b: &Expr| {
            Expr::Binary(BinOp::And, Box::new(a.clone()), Box::new(b.clone()))
                .eval(&[])
                .unwrap()
        };
        let or = |a: &Expr, b: &Expr| {
            Expr::Binary(BinOp::Or, Box::new(a.clone()), Box::new(b.clone()))
                .eval(&[])
                .unwrap()
        };
        assert_eq!(and(&f, &n), Value::Bool(false));
        assert_eq!(and(&n, &f), Value::Bool(false));
        assert!(and(&t, &n).is_null());
        assert_eq!(or(&n, &t), Value::Bool(true));
        assert!(or(&f, &n).is_null());
    }

    #[test]
    fn arithmetic_errors_have_codes() {
        let e = binary_values(BinOp::Div, Value::Int(1), Value::Int(0)).unwrap_err();
        assert_eq!(e.sqlstate(), "22012");
        let e = binary_values(BinOp::Mul, Value::Int(i64::MAX), Value::Int(2)).unwrap_err();
        assert_eq!(e.sqlstate(), "22003");
        assert_eq!(
            binary_values(BinOp::Div, Value::Int(7), Value::Int(2)).unwrap(),
            Value::Int(3)
        );
    }
}
