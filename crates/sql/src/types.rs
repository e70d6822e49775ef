//! SQL types and values.
//!
//! A [`Value`] is one datum; a [`DataType`] is what a column or expression
//! holds. Integers of every width are carried as `i64` and checked against
//! their type's range on assignment and on arithmetic; floats as `f64`;
//! strings as `String`; NUMERIC as an exact decimal ([`crate::numeric`]);
//! BYTEA as bytes; UUID as 16 bytes. NULL is a value of every type, and comparisons follow
//! PostgreSQL's three-valued logic ([`Value::sql_cmp`] returns `None` when
//! either side is NULL). For sorting, [`Value::sort_cmp`] is a total order
//! with NULLs greater than everything (PostgreSQL's default `NULLS LAST` for
//! ascending order).

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

use rust_decimal::Decimal;

use crate::datetime::{self, Interval};
use crate::error::{Error, Result};
use crate::numeric;

/// A SQL data type.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum DataType {
    Bool,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Text,
    /// `VARCHAR(n)`; `None` = unbounded.
    Varchar(Option<u32>),
    /// `CHAR(n)` (PostgreSQL's `bpchar`): blank-padded to `n` on output;
    /// values are kept with trailing blanks stripped, which is how they
    /// compare. `None` = unbounded (`bpchar`).
    Char(Option<u32>),
    Date,
    Timestamp,
    TimestampTz,
    Interval,
    /// `NUMERIC(precision, scale)`; `None` = unconstrained (see
    /// [`crate::numeric`]).
    Numeric(Option<(u32, u32)>),
    /// `BYTEA`: a byte string.
    Bytea,
    /// `UUID`.
    Uuid,
    /// The type of a bare NULL literal, before context gives it one.
    Unknown,
}

impl DataType {
    /// The PostgreSQL name of the type.
    pub fn name(&self) -> String {
        match self {
            DataType::Bool => "boolean".into(),
            DataType::Int2 => "smallint".into(),
            DataType::Int4 => "integer".into(),
            DataType::Int8 => "bigint".into(),
            DataType::Float4 => "real".into(),
            DataType::Float8 => "double precision".into(),
            DataType::Text => "text".into(),
            DataType::Varchar(None) => "character varying".into(),
            DataType::Varchar(Some(n)) => format!("character varying({n})"),
            DataType::Char(None) => "bpchar".into(),
            DataType::Char(Some(n)) => format!("character({n})"),
            DataType::Date => "date".into(),
            DataType::Timestamp => "timestamp without time zone".into(),
            DataType::TimestampTz => "timestamp with time zone".into(),
            DataType::Interval => "interval".into(),
            DataType::Numeric(None) => "numeric".into(),
            DataType::Numeric(Some((p, s))) => format!("numeric({p},{s})"),
            DataType::Bytea => "bytea".into(),
            DataType::Uuid => "uuid".into(),
            DataType::Unknown => "unknown".into(),
        }
    }

    /// The stable name stored in table descriptors.
    pub fn catalog_name(&self) -> &'static str {
        match self {
            DataType::Bool => "bool",
            DataType::Int2 => "int2",
            DataType::Int4 => "int4",
            DataType::Int8 => "int8",
            DataType::Float4 => "float4",
            DataType::Float8 => "float8",
            DataType::Text => "text",
            DataType::Varchar(_) => "varchar",
            DataType::Char(_) => "bpchar",
            DataType::Date => "date",
            DataType::Timestamp => "timestamp",
            DataType::TimestampTz => "timestamptz",
            DataType::Interval => "interval",
            DataType::Numeric(_) => "numeric",
            DataType::Bytea => "bytea",
            DataType::Uuid => "uuid",
            DataType::Unknown => "unknown",
        }
    }

    /// The type from its catalog name and width.
    pub fn from_catalog(name: &str, width: u32) -> Result<Self> {
        Ok(match name {
            "bool" => DataType::Bool,
            "int2" => DataType::Int2,
            "int4" => DataType::Int4,
            "int8" => DataType::Int8,
            "float4" => DataType::Float4,
            "float8" => DataType::Float8,
            "text" => DataType::Text,
            "varchar" => DataType::Varchar((width > 0).then_some(width)),
            "bpchar" => DataType::Char((width > 0).then_some(width)),
            "date" => DataType::Date,
            "timestamp" => DataType::Timestamp,
            "timestamptz" => DataType::TimestampTz,
            "interval" => DataType::Interval,
            // Precision in the high 16 bits, scale in the low (precision ≥ 1).
            "numeric" => DataType::Numeric((width > 0).then_some((width >> 16, width & 0xffff))),
            "bytea" => DataType::Bytea,
            "uuid" => DataType::Uuid,
            other => return Err(Error::Internal(format!("unknown type {other} in catalog"))),
        })
    }

    /// Width stored in the catalog (VARCHAR length; 0 otherwise).
    pub fn catalog_width(&self) -> u32 {
        match self {
            DataType::Varchar(Some(n)) | DataType::Char(Some(n)) => *n,
            DataType::Numeric(Some((p, s))) => (p << 16) | s,
            _ => 0,
        }
    }

    /// Whether values are integers.
    pub fn is_integer(&self) -> bool {
        matches!(self, DataType::Int2 | DataType::Int4 | DataType::Int8)
    }

    /// Whether values are floats.
    pub fn is_float(&self) -> bool {
        matches!(self, DataType::Float4 | DataType::Float8)
    }

    /// Whether values are numbers.
    pub fn is_numeric(&self) -> bool {
        self.is_integer() || self.is_float() || self.is_decimal()
    }

    /// Whether values are exact decimals (NUMERIC).
    pub fn is_decimal(&self) -> bool {
        matches!(self, DataType::Numeric(_))
    }

    /// Whether values are strings.
    pub fn is_string(&self) -> bool {
        matches!(
            self,
            DataType::Text | DataType::Varchar(_) | DataType::Char(_)
        )
    }

    /// Whether values are dates or timestamps.
    pub fn is_datetime(&self) -> bool {
        matches!(
            self,
            DataType::Date | DataType::Timestamp | DataType::TimestampTz
        )
    }

    /// The range of an integer type.
    fn int_range(&self) -> Option<(i64, i64)> {
        match self {
            DataType::Int2 => Some((i16::MIN as i64, i16::MAX as i64)),
            DataType::Int4 => Some((i32::MIN as i64, i32::MAX as i64)),
            DataType::Int8 => Some((i64::MIN, i64::MAX)),
            _ => None,
        }
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// A SQL value.
#[derive(Clone, Debug)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    /// Days since 2000-01-01 ([`crate::datetime`]).
    Date(i32),
    /// Microseconds since 2000-01-01 00:00:00.
    Timestamp(i64),
    /// Microseconds since 2000-01-01 00:00:00 UTC.
    TimestampTz(i64),
    Interval(Interval),
    /// An exact decimal, with the scale it shows ([`crate::numeric`]).
    Numeric(Decimal),
    Bytes(Vec<u8>),
    Uuid(uuid::Uuid),
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        self.sort_cmp(other) == Ordering::Equal
    }
}

impl Eq for Value {}

impl Hash for Value {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self {
            Value::Null => 0u8.hash(state),
            Value::Bool(b) => b.hash(state),
            // Integers and floats that compare equal must hash equally.
            Value::Int(i) => (*i as f64).to_bits().hash(state),
            Value::Float(f) => {
                let f = if *f == 0.0 { 0.0 } else { *f };
                if f.is_nan() {
                    u64::MAX.hash(state)
                } else {
                    f.to_bits().hash(state)
                }
            }
            Value::Text(s) => s.hash(state),
            // Dates and timestamps that compare equal must hash equally.
            Value::Date(d) => {
                2u8.hash(state);
                datetime::date_as_ts(*d).hash(state)
            }
            Value::Timestamp(t) | Value::TimestampTz(t) => {
                2u8.hash(state);
                t.hash(state)
            }
            Value::Interval(iv) => iv.normalized().hash(state),
            // Equal to an integer or float of the same value, so hashed as one.
            Value::Numeric(d) => {
                let f = numeric::to_f64(d);
                let f = if f == 0.0 { 0.0 } else { f };
                f.to_bits().hash(state)
            }
            Value::Bytes(b) => b.hash(state),
            Value::Uuid(u) => u.hash(state),
        }
    }
}

impl Value {
    /// Whether the value is NULL.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// SQL comparison: `None` if either side is NULL.
    pub fn sql_cmp(&self, other: &Value) -> Option<Ordering> {
        if self.is_null() || other.is_null() {
            return None;
        }
        Some(self.sort_cmp(other))
    }

    /// A total order for sorting and grouping: NULL sorts last, NaN above
    /// every other float (as in PostgreSQL), integers and floats compare by
    /// value.
    pub fn sort_cmp(&self, other: &Value) -> Ordering {
        use Value::*;
        match (self, other) {
            (Null, Null) => Ordering::Equal,
            (Null, _) => Ordering::Greater,
            (_, Null) => Ordering::Less,
            (Bool(a), Bool(b)) => a.cmp(b),
            (Int(a), Int(b)) => a.cmp(b),
            (Float(a), Float(b)) => float_cmp(*a, *b),
            (Int(a), Float(b)) => float_cmp(*a as f64, *b),
            (Float(a), Int(b)) => float_cmp(*a, *b as f64),
            (Text(a), Text(b)) => a.cmp(b),
            (Date(a), Date(b)) => a.cmp(b),
            (Timestamp(a) | TimestampTz(a), Timestamp(b) | TimestampTz(b)) => a.cmp(b),
            (Date(a), Timestamp(b) | TimestampTz(b)) => datetime::date_as_ts(*a).cmp(b),
            (Timestamp(a) | TimestampTz(a), Date(b)) => a.cmp(&datetime::date_as_ts(*b)),
            (Interval(a), Interval(b)) => a.cmp(b),
            (Numeric(a), Numeric(b)) => a.cmp(b),
            (Int(a), Numeric(b)) => Decimal::from(*a).cmp(b),
            (Numeric(a), Int(b)) => a.cmp(&Decimal::from(*b)),
            (Float(a), Numeric(b)) => float_cmp(*a, numeric::to_f64(b)),
            (Numeric(a), Float(b)) => float_cmp(numeric::to_f64(a), *b),
            (Bytes(a), Bytes(b)) => a.cmp(b),
            (Uuid(a), Uuid(b)) => a.cmp(b),
            // Values of different types never meet in a well-typed plan; order
            // them by type so that sorting stays total.
            (a, b) => a.type_rank().cmp(&b.type_rank()),
        }
    }

    fn type_rank(&self) -> u8 {
        match self {
            Value::Bool(_) => 1,
            Value::Int(_) | Value::Float(_) | Value::Numeric(_) => 2,
            Value::Text(_) => 3,
            Value::Date(_) | Value::Timestamp(_) | Value::TimestampTz(_) => 4,
            Value::Interval(_) => 5,
            Value::Bytes(_) => 7,
            Value::Uuid(_) => 8,
            Value::Null => 6,
        }
    }

    /// Converts the value to `ty` as an explicit `CAST` does.
    pub fn cast(&self, ty: &DataType) -> Result<Value> {
        self.convert(ty, true)
    }

    /// Converts the value for storing in a column of type `ty` (assignment
    /// cast): strings that do not fit a VARCHAR are an error, not truncated.
    pub fn assign(&self, ty: &DataType) -> Result<Value> {
        self.convert(ty, false)
    }

    fn convert(&self, ty: &DataType, explicit: bool) -> Result<Value> {
        use Value::*;
        let v = match (self, ty) {
            (Null, _) => Null,
            (_, DataType::Unknown) => self.clone(),
            (Numeric(d), DataType::Numeric(m)) => Numeric(fit_numeric(*d, *m)?),
            (Int(i), DataType::Numeric(m)) => Numeric(fit_numeric(Decimal::from(*i), *m)?),
            (Float(f), DataType::Numeric(m)) => Numeric(fit_numeric(numeric::from_f64(*f)?, *m)?),
            (Numeric(d), t) if t.is_integer() => {
                let i = numeric::to_i64(d).ok_or_else(|| Error::NumericOutOfRange(t.name()))?;
                Int(i).convert(t, explicit)?
            }
            (Numeric(d), t) if t.is_float() => Float(numeric::to_f64(d)).convert(t, explicit)?,
            (Bool(_), DataType::Numeric(_)) => {
                return Err(Error::DatatypeMismatch(
                    "cannot cast type boolean to numeric".into(),
                ))
            }
            (Bytes(b), DataType::Bytea) => Bytes(b.clone()),
            (Uuid(u), DataType::Uuid) => Uuid(*u),
            (Numeric(_) | Bytes(_) | Uuid(_), t) if t.is_string() => {
                let s = self.to_text().unwrap_or_default();
                Text(s).convert(t, explicit)?
            }
            (Bool(b), DataType::Bool) => Bool(*b),
            (Bool(b), t) if t.is_integer() => Int(*b as i64),
            (Bool(b), t) if t.is_string() => Text(if *b { "true" } else { "false" }.into()),
            (Int(i), t) if t.is_integer() => {
                let (lo, hi) = t.int_range().expect("integer type has a range");
                if *i < lo || *i > hi {
                    return Err(Error::NumericOutOfRange(t.name()));
                }
                Int(*i)
            }
            (Int(i), DataType::Bool) => Bool(*i != 0),
            (Int(i), DataType::Float4) => Float(*i as f32 as f64),
            (Int(i), DataType::Float8) => Float(*i as f64),
            (Float(f), t) if t.is_integer() => {
                let r = f.round_ties_even();
                let (lo, hi) = t.int_range().expect("integer type has a range");
                if !r.is_finite() || r < lo as f64 || r > hi as f64 {
                    return Err(Error::NumericOutOfRange(t.name()));
                }
                Int(r as i64)
            }
            (Float(f), DataType::Float4) => {
                let g = *f as f32;
                if f.is_finite() && !g.is_finite() {
                    return Err(Error::NumericOutOfRange("real".into()));
                }
                Float(g as f64)
            }
            (Float(f), DataType::Float8) => Float(*f),
            (Text(s), DataType::Char(n)) => Text(fit_char(s, *n, explicit)?),
            (v, DataType::Char(n)) => Text(fit_char(&v.to_text().unwrap_or_default(), *n, true)?),
            (Int(_) | Float(_) | Date(_) | Timestamp(_) | TimestampTz(_) | Interval(_), t)
                if t.is_string() =>
            {
                Text(self.to_text().unwrap_or_default())
            }
            (Date(d), DataType::Date) => Date(*d),
            (Date(d), DataType::Timestamp) => Timestamp(datetime::date_to_ts(*d)?),
            (Date(d), DataType::TimestampTz) => TimestampTz(datetime::date_to_ts(*d)?),
            (Timestamp(t) | TimestampTz(t), DataType::Date) => Date(datetime::ts_to_date(*t)?),
            (Timestamp(t) | TimestampTz(t), DataType::Timestamp) => Timestamp(*t),
            (Timestamp(t) | TimestampTz(t), DataType::TimestampTz) => TimestampTz(*t),
            (Interval(iv), DataType::Interval) => Interval(*iv),
            (Text(s), t) if t.is_string() => {
                if let DataType::Varchar(Some(n)) = t {
                    let len = s.chars().count();
                    if len > *n as usize {
                        if explicit {
                            return Ok(Text(s.chars().take(*n as usize).collect()));
                        }
                        // PostgreSQL allows excess trailing spaces.
                        if s.chars().skip(*n as usize).all(|c| c == ' ') {
                            return Ok(Text(s.chars().take(*n as usize).collect()));
                        }
                        return Err(Error::StringDataRightTruncation(t.name()));
                    }
                }
                Text(s.clone())
            }
            (Text(s), t) => parse_text(s, t)?,
            (v, t) => {
                return Err(Error::DatatypeMismatch(format!(
                    "cannot cast {} to {}",
                    v.type_name(),
                    t.name()
                )))
            }
        };
        Ok(v)
    }

    /// The name of the value's type, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "unknown",
            Value::Bool(_) => "boolean",
            Value::Int(_) => "bigint",
            Value::Float(_) => "double precision",
            Value::Text(_) => "text",
            Value::Date(_) => "date",
            Value::Timestamp(_) => "timestamp without time zone",
            Value::TimestampTz(_) => "timestamp with time zone",
            Value::Interval(_) => "interval",
            Value::Numeric(_) => "numeric",
            Value::Bytes(_) => "bytea",
            Value::Uuid(_) => "uuid",
        }
    }

    /// PostgreSQL's text output format; `None` for NULL.
    pub fn to_text(&self) -> Option<String> {
        match self {
            Value::Null => None,
            Value::Bool(b) => Some(if *b { "t" } else { "f" }.into()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(format_float(*f)),
            Value::Text(s) => Some(s.clone()),
            Value::Date(d) => Some(datetime::format_date(*d)),
            Value::Timestamp(t) => Some(datetime::format_timestamp(*t)),
            Value::TimestampTz(t) => Some(datetime::format_timestamptz(*t)),
            Value::Interval(iv) => Some(datetime::format_interval(iv)),
            Value::Numeric(d) => Some(numeric::format(d)),
            Value::Bytes(b) => Some(format_bytea(b)),
            Value::Uuid(u) => Some(u.hyphenated().to_string()),
        }
    }

    /// PostgreSQL's text output of the value as a `ty`: `CHAR(n)` is
    /// blank-padded, `REAL` prints with single precision.
    pub fn to_text_as(&self, ty: &DataType) -> Option<String> {
        match (self, ty) {
            (Value::Text(s), DataType::Char(Some(n))) => {
                let len = s.chars().count();
                let mut out = s.clone();
                out.extend(std::iter::repeat_n(' ', (*n as usize).saturating_sub(len)));
                Some(out)
            }
            (Value::Float(f), DataType::Float4) => Some(format_float4(*f as f32)),
            _ => self.to_text(),
        }
    }

    /// The value as a boolean condition: NULL is not true.
    pub fn is_true(&self) -> bool {
        matches!(self, Value::Bool(true))
    }
}

fn float_cmp(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        _ => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}

/// The value of a `CHAR(n)`: at most `n` characters (an explicit cast
/// truncates; an assignment may drop only blanks, else 22001), kept without
/// trailing blanks.
fn fit_char(s: &str, n: Option<u32>, explicit: bool) -> Result<String> {
    let trimmed = s.trim_end_matches(' ');
    if let Some(n) = n {
        let n = n as usize;
        if trimmed.chars().count() > n {
            if !explicit {
                return Err(Error::StringDataRightTruncation(format!("character({n})")));
            }
            let cut: String = trimmed.chars().take(n).collect();
            return Ok(cut.trim_end_matches(' ').to_string());
        }
    }
    Ok(trimmed.to_string())
}

/// Formats a `real` as PostgreSQL does: the shortest text that reads back
/// as the same single-precision number.
pub fn format_float4(f: f32) -> String {
    if f.is_nan() || f.is_infinite() || f == 0.0 {
        return format_float(f64::from(f));
    }
    shortest(f, (1e-4..1e15).contains(&f.abs()))
}

/// The shortest text of a finite non-zero float: plain, or with
/// PostgreSQL's exponent (`1e+20`, `1.5e-05`).
fn shortest<F: fmt::Display + fmt::LowerExp>(f: F, plain: bool) -> String {
    if plain {
        return format!("{f}");
    }
    let s = format!("{f:e}");
    let (mantissa, exp) = s.split_once('e').expect("{:e} output has an exponent");
    let exp: i32 = exp.parse().expect("{:e} exponent is an integer");
    let sign = if exp < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exp.abs())
}

/// Formats a float as PostgreSQL does with `extra_float_digits = 1`: the
/// shortest text that reads back as the same number.
pub fn format_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    if f == 0.0 {
        return if f.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    shortest(f, (1e-4..1e15).contains(&f.abs()))
}

/// A numeric fitted to its column's precision and scale, if it has them.
fn fit_numeric(d: Decimal, typmod: Option<(u32, u32)>) -> Result<Decimal> {
    match typmod {
        Some((p, s)) => numeric::apply_typmod(d, p, s),
        None => Ok(d),
    }
}

/// A UUID from its 16 bytes (binary wire format); `None` for another length.
pub fn uuid_from_bytes(b: &[u8]) -> Option<uuid::Uuid> {
    uuid::Uuid::from_slice(b).ok()
}

/// BYTEA's text output (PostgreSQL's default `bytea_output = hex`).
pub fn format_bytea(b: &[u8]) -> String {
    let mut s = String::with_capacity(2 + 2 * b.len());
    s.push_str("\\x");
    for byte in b {
        s.push_str(&format!("{byte:02x}"));
    }
    s
}

/// BYTEA's text input: `\x` followed by hex pairs (blanks between pairs
/// allowed), or the escape format, where `\\` is a backslash, `\nnn` an
/// octal byte, and any other character itself.
pub fn parse_bytea(s: &str) -> Result<Vec<u8>> {
    let bad = || Error::InvalidTextRepresentation {
        ty: "bytea".into(),
        value: s.to_string(),
    };
    if let Some(hex) = s.strip_prefix("\\x").or_else(|| s.strip_prefix("\\X")) {
        let digit = |c: u8| -> Result<u8> {
            (c as char).to_digit(16).map(|d| d as u8).ok_or_else(|| {
                Error::InvalidParameterValue(format!(
                    "invalid hexadecimal digit: \"{}\"",
                    c as char
                ))
            })
        };
        let digits: Vec<u8> = hex.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
        let mut out = Vec::with_capacity(digits.len() / 2);
        for pair in digits.chunks(2) {
            let hi = digit(pair[0])?;
            let lo = match pair.get(1) {
                Some(&c) => digit(c)?,
                None => {
                    return Err(Error::InvalidParameterValue(
                        "invalid hexadecimal data: odd number of digits".into(),
                    ))
                }
            };
            out.push(hi * 16 + lo);
        }
        return Ok(out);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
        } else if bytes.get(i + 1) == Some(&b'\\') {
            out.push(b'\\');
            i += 2;
        } else {
            let oct = bytes.get(i + 1..i + 4).ok_or_else(bad)?;
            let ok = oct[0] >= b'0'
                && oct[0] <= b'3'
                && oct[1..].iter().all(|c| (b'0'..=b'7').contains(c));
            if !ok {
                return Err(bad());
            }
            out.push((oct[0] - b'0') * 64 + (oct[1] - b'0') * 8 + (oct[2] - b'0'));
            i += 4;
        }
    }
    Ok(out)
}

/// Parses text as a value of `ty` (input functions of PostgreSQL types).
pub fn parse_text(s: &str, ty: &DataType) -> Result<Value> {
    let bad = || Error::InvalidTextRepresentation {
        ty: ty.name(),
        value: s.to_string(),
    };
    let t = s.trim();
    Ok(match ty {
        DataType::Bool => match t.to_ascii_lowercase().as_str() {
            "t" | "true" | "yes" | "y" | "on" | "1" => Value::Bool(true),
            "f" | "false" | "no" | "n" | "off" | "0" => Value::Bool(false),
            _ => return Err(bad()),
        },
        DataType::Int2 | DataType::Int4 | DataType::Int8 => {
            let i: i64 = t.parse().map_err(|e: std::num::ParseIntError| {
                if matches!(
                    e.kind(),
                    std::num::IntErrorKind::PosOverflow | std::num::IntErrorKind::NegOverflow
                ) {
                    Error::NumericOutOfRange(ty.name())
                } else {
                    bad()
                }
            })?;
            Value::Int(i).assign(ty)?
        }
        DataType::Float4 | DataType::Float8 => {
            let f: f64 = match t.to_ascii_lowercase().as_str() {
                "nan" => f64::NAN,
                "infinity" | "+infinity" | "inf" | "+inf" => f64::INFINITY,
                "-infinity" | "-inf" => f64::NEG_INFINITY,
                other => other.parse().map_err(|_| bad())?,
            };
            Value::Float(f).assign(ty)?
        }
        DataType::Text | DataType::Varchar(_) | DataType::Char(_) | DataType::Unknown => {
            Value::Text(s.to_string()).assign(ty)?
        }
        DataType::Date => Value::Date(datetime::parse_date(s)?),
        DataType::Timestamp => Value::Timestamp(datetime::parse_timestamp(s)?),
        DataType::TimestampTz => Value::TimestampTz(datetime::parse_timestamptz(s)?),
        DataType::Interval => Value::Interval(datetime::parse_interval(s)?),
        DataType::Numeric(m) => Value::Numeric(fit_numeric(numeric::parse(s)?, *m)?),
        DataType::Bytea => Value::Bytes(parse_bytea(s)?),
        DataType::Uuid => Value::Uuid(uuid::Uuid::try_parse(t).map_err(|_| bad())?),
    })
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_text() {
            Some(s) => f.write_str(&s),
            None => f.write_str("NULL"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_like_postgres() {
        assert_eq!(format_float(1.5), "1.5");
        assert_eq!(format_float(0.1), "0.1");
        assert_eq!(format_float(1e20), "1e+20");
        assert_eq!(format_float(1.5e-5), "1.5e-05");
        assert_eq!(format_float(100.0), "100");
        assert_eq!(format_float(f64::INFINITY), "Infinity");
    }

    #[test]
    fn assignment_checks_ranges_and_lengths() {
        assert!(matches!(
            Value::Int(70000).assign(&DataType::Int2),
            Err(Error::NumericOutOfRange(_))
        ));
        assert!(matches!(
            Value::Text("abcd".into()).assign(&DataType::Varchar(Some(3))),
            Err(Error::StringDataRightTruncation(_))
        ));
        assert_eq!(
            Value::Text("abc  ".into())
                .assign(&DataType::Varchar(Some(3)))
                .unwrap(),
            Value::Text("abc".into())
        );
        assert_eq!(
            Value::Text("abcd".into())
                .cast(&DataType::Varchar(Some(3)))
                .unwrap(),
            Value::Text("abc".into())
        );
        assert!(matches!(
            parse_text("12x", &DataType::Int4),
            Err(Error::InvalidTextRepresentation { .. })
        ));
        assert_eq!(parse_text(" 42 ", &DataType::Int8).unwrap(), Value::Int(42));
        assert_eq!(
            Value::Float(2.5).assign(&DataType::Int4).unwrap(),
            Value::Int(2)
        );
    }

    #[test]
    fn nulls_sort_last_and_compare_unknown() {
        assert_eq!(Value::Null.sort_cmp(&Value::Int(1)), Ordering::Greater);
        assert_eq!(Value::Null.sql_cmp(&Value::Int(1)), None);
        assert_eq!(
            Value::Int(2).sql_cmp(&Value::Float(2.0)),
            Some(Ordering::Equal)
        );
    }
}
