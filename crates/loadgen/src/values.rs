//! Reading column values without trusting the server's choice of integer
//! width: `count(*)` is BIGINT in PostgreSQL, `sum(int)` BIGINT and
//! `sum(bigint)` NUMERIC; another server may choose differently. [`Int`]
//! and [`Num`] accept any integer type and NUMERIC, and [`get`] names the
//! statement and the column when a value does not fit.

use std::error::Error as StdError;

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use tokio_postgres::types::{FromSql, Type};
use tokio_postgres::Row;

use crate::error::{Error, Result};

type BoxError = Box<dyn StdError + Sync + Send>;

/// An integer column of any width (or an integral NUMERIC).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Int(pub i64);

impl<'a> FromSql<'a> for Int {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Int, BoxError> {
        match *ty {
            Type::INT2 => Ok(Int(i16::from_sql(ty, raw)?.into())),
            Type::INT4 => Ok(Int(i32::from_sql(ty, raw)?.into())),
            Type::INT8 => Ok(Int(i64::from_sql(ty, raw)?)),
            Type::NUMERIC => {
                let d = Decimal::from_sql(ty, raw)?;
                if d.fract().is_zero() {
                    d.to_i64()
                        .map(Int)
                        .ok_or_else(|| format!("{d} does not fit in 64 bits").into())
                } else {
                    Err(format!("{d} is not an integer").into())
                }
            }
            _ => Err(format!("cannot read {ty} as an integer").into()),
        }
    }

    fn accepts(ty: &Type) -> bool {
        matches!(*ty, Type::INT2 | Type::INT4 | Type::INT8 | Type::NUMERIC)
    }
}

/// An exact decimal from a NUMERIC or an integer column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Num(pub Decimal);

impl<'a> FromSql<'a> for Num {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Num, BoxError> {
        match *ty {
            Type::NUMERIC => Ok(Num(Decimal::from_sql(ty, raw)?)),
            _ => Ok(Num(Decimal::from(Int::from_sql(ty, raw)?.0))),
        }
    }

    fn accepts(ty: &Type) -> bool {
        <Int as FromSql>::accepts(ty)
    }
}

/// Column `idx` of `row` as a `T`, or an error naming the statement.
pub fn get<'a, T: FromSql<'a>>(row: &'a Row, idx: usize, statement: &str) -> Result<T> {
    row.try_get(idx).map_err(|e| {
        Error::unexpected(
            statement,
            format!("column {idx}: {}", crate::error::chain(&e)),
        )
    })
}

/// An integer column as i32 (TPC-C ids and counts).
pub fn get_i32(row: &Row, idx: usize, statement: &str) -> Result<i32> {
    let Int(v) = get(row, idx, statement)?;
    i32::try_from(v)
        .map_err(|_| Error::unexpected(statement, format!("column {idx}: {v} out of range")))
}

/// An integer column as i64.
pub fn get_i64(row: &Row, idx: usize, statement: &str) -> Result<i64> {
    let Int(v) = get(row, idx, statement)?;
    Ok(v)
}

/// A NUMERIC (or integer) column as an exact decimal.
pub fn get_decimal(row: &Row, idx: usize, statement: &str) -> Result<Decimal> {
    let Num(v) = get(row, idx, statement)?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use tokio_postgres::types::ToSql;

    fn encode<T: ToSql>(v: T, ty: &Type) -> BytesMut {
        let mut buf = BytesMut::new();
        v.to_sql(ty, &mut buf).unwrap();
        buf
    }

    #[test]
    fn integers_of_every_width_and_integral_numerics_are_read() {
        assert_eq!(
            Int::from_sql(&Type::INT2, &encode(-7i16, &Type::INT2)).unwrap(),
            Int(-7)
        );
        assert_eq!(
            Int::from_sql(&Type::INT4, &encode(70_000i32, &Type::INT4)).unwrap(),
            Int(70_000)
        );
        assert_eq!(
            Int::from_sql(&Type::INT8, &encode(1i64 << 40, &Type::INT8)).unwrap(),
            Int(1 << 40)
        );
        let n = encode(Decimal::new(300_000, 0), &Type::NUMERIC);
        assert_eq!(Int::from_sql(&Type::NUMERIC, &n).unwrap(), Int(300_000));
        let frac = encode(Decimal::new(1005, 1), &Type::NUMERIC);
        assert!(Int::from_sql(&Type::NUMERIC, &frac).is_err());
        assert!(!<Int as FromSql>::accepts(&Type::TEXT));
    }

    #[test]
    fn decimals_are_read_exactly_from_numerics_and_integers() {
        let n = encode(Decimal::new(30_000_001, 2), &Type::NUMERIC);
        assert_eq!(
            Num::from_sql(&Type::NUMERIC, &n).unwrap(),
            Num(Decimal::new(30_000_001, 2))
        );
        let i = encode(42i64, &Type::INT8);
        assert_eq!(
            Num::from_sql(&Type::INT8, &i).unwrap(),
            Num(Decimal::new(42, 0))
        );
        // 300000.00 and 300000 are the same amount.
        assert_eq!(Decimal::new(30_000_000, 2), Decimal::new(300_000, 0));
    }
}
