//! NUMERIC/DECIMAL: exact decimal numbers.
//!
//! Values are [`rust_decimal::Decimal`]s: a 96-bit integer mantissa and a
//! decimal scale (0 to 28). The scale is kept as written, so `1.50` prints
//! as `1.50`, and the arithmetic follows PostgreSQL's display scales:
//!
//! ```text
//!  a + b, a - b, a % b   scale = max(scale a, scale b)
//!  a * b                 scale = scale a + scale b
//!  a / b                 at least 16 significant digits, and at least the
//!                        operands' scales (PostgreSQL's select_div_scale)
//!  NUMERIC(p, s)         rounded half away from zero to s places; more than
//!                        p - s integer digits is 22003 numeric field overflow
//! ```
//!
//! Binary wire format (PostgreSQL's `numeric_send`): ndigits, weight, sign,
//! dscale as 16-bit integers, then ndigits base-10000 digits, most
//! significant first; `weight` is the power of 10000 of the first digit.
//!
//! Not done: PostgreSQL's numeric holds up to 131072 digits before the
//! point and 16383 after, and NaN and ±Infinity; here values have at most
//! 28–29 significant digits (about ±7.9e28), and NaN and infinities are
//! refused (22003 and 0A000).

use std::str::FromStr;

use rust_decimal::{Decimal, RoundingStrategy};

use crate::error::{Error, Result};

/// The largest precision of `NUMERIC(p, s)`; PostgreSQL allows 1000, but
/// a value here has at most 28 digits after the point and 29 in all.
pub const MAX_PRECISION: u32 = 1000;

fn overflow() -> Error {
    Error::NumericValueOverflow("value overflows numeric format".into())
}

/// Parses PostgreSQL's numeric input: optional sign, digits with an
/// optional point, an optional exponent; blanks around it are allowed.
pub fn parse(s: &str) -> Result<Decimal> {
    let t = s.trim();
    let bad = || Error::InvalidTextRepresentation {
        ty: "numeric".into(),
        value: s.to_string(),
    };
    match t.to_ascii_lowercase().as_str() {
        "nan" | "infinity" | "+infinity" | "-infinity" | "inf" | "+inf" | "-inf" => {
            return Err(Error::FeatureNotSupported(format!(
                "numeric value {t} (NaN and infinities are not supported)"
            )))
        }
        _ => {}
    }
    let (mantissa, exp) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], Some(&t[i + 1..])),
        None => (t, None),
    };
    let digits = mantissa.trim_start_matches(['+', '-']);
    let ok = !digits.is_empty()
        && digits.chars().filter(|&c| c == '.').count() <= 1
        && digits.chars().any(|c| c.is_ascii_digit())
        && digits.chars().all(|c| c.is_ascii_digit() || c == '.')
        && mantissa.len() - digits.len() <= 1;
    if !ok {
        return Err(bad());
    }
    let d = match exp {
        None => Decimal::from_str(mantissa).map_err(|_| overflow())?,
        Some(e) => {
            let e: i64 = e.parse().map_err(|_| bad())?;
            let base = Decimal::from_str(mantissa).map_err(|_| overflow())?;
            scale_by_pow10(base, e)?
        }
    };
    Ok(d)
}

/// `d × 10^e`: exact while it fits, rounded to 28 places below that.
/// The scale shown is the input's less the exponent (`1.5e2` is `150`).
fn scale_by_pow10(d: Decimal, e: i64) -> Result<Decimal> {
    let scale = d.scale() as i64 - e;
    if scale >= 0 {
        if scale <= 28 {
            return Decimal::try_from_i128_with_scale(d.mantissa(), scale as u32)
                .map_err(|_| overflow());
        }
        let drop = scale - 28;
        if drop > 38 {
            return Ok(Decimal::ZERO);
        }
        let p = 10i128.pow(drop as u32);
        let (q, r) = (d.mantissa() / p, d.mantissa() % p);
        let q = if r.abs() * 2 >= p { q + r.signum() } else { q };
        return Decimal::try_from_i128_with_scale(q, 28).map_err(|_| overflow());
    }
    let mut m = d.mantissa();
    for _ in 0..-scale {
        m = m.checked_mul(10).ok_or_else(overflow)?;
    }
    Decimal::try_from_i128_with_scale(m, 0).map_err(|_| overflow())
}

/// PostgreSQL's text output: the digits with the value's scale.
pub fn format(d: &Decimal) -> String {
    d.to_string()
}

/// Rounds half away from zero to `scale` places and shows exactly that
/// many (adding zeros).
pub fn round_to(d: Decimal, scale: u32) -> Decimal {
    rescale_with(d, scale, RoundingStrategy::MidpointAwayFromZero)
}

/// Rounds by `strategy` to `scale` places (at most 28) and shows exactly
/// that many.
pub fn rescale_with(d: Decimal, scale: u32, strategy: RoundingStrategy) -> Decimal {
    let scale = scale.min(28);
    let mut r = d.round_dp_with_strategy(scale, strategy);
    r.rescale(scale);
    r
}

/// Fits a value to `NUMERIC(precision, scale)`.
pub fn apply_typmod(d: Decimal, precision: u32, scale: u32) -> Result<Decimal> {
    let r = round_to(d, scale);
    let int_digits = integer_digits(&r);
    let allowed = precision.saturating_sub(scale);
    if int_digits > allowed {
        return Err(Error::NumericFieldOverflow(format!(
            "A field with precision {precision}, scale {scale} must round to an absolute value \
             less than {}.",
            if allowed == 0 {
                "1".to_string()
            } else {
                format!("10^{allowed}")
            }
        )));
    }
    Ok(r)
}

/// How many digits the integer part has (0 for |d| < 1).
fn integer_digits(d: &Decimal) -> u32 {
    let t = d.abs().trunc();
    if t.is_zero() {
        0
    } else {
        t.mantissa().unsigned_abs().to_string().len() as u32 - t.scale()
    }
}

/// The base-10000 weight of the leading digit group of a non-zero value,
/// and that group's value (PostgreSQL's `weight` and first digit).
fn lead_group(d: &Decimal) -> (i32, u32) {
    let digits = d.mantissa().unsigned_abs().to_string();
    // Power of ten of the leading decimal digit.
    let exp10 = digits.len() as i32 - d.scale() as i32 - 1;
    let weight = exp10.div_euclid(4);
    let take = (exp10 - 4 * weight + 1) as usize;
    let lead = digits[..take.min(digits.len())]
        .parse::<u32>()
        .expect("a prefix of decimal digits parses");
    let lead = lead * 10u32.pow(take.saturating_sub(digits.len()) as u32);
    (weight, lead)
}

/// Division with PostgreSQL's result scale: enough places for at least 16
/// significant digits, never fewer than either operand shows.
pub fn div(a: Decimal, b: Decimal) -> Result<Decimal> {
    if b.is_zero() {
        return Err(Error::DivisionByZero);
    }
    let q = a.checked_div(b).ok_or_else(overflow)?;
    let qweight = if a.is_zero() {
        0
    } else {
        let (w1, d1) = lead_group(&a);
        let (w2, d2) = lead_group(&b);
        let mut w = w1 - w2;
        if d1 <= d2 {
            w -= 1;
        }
        w
    };
    let rscale = (16 - qweight * 4)
        .max(a.scale() as i32)
        .max(b.scale() as i32)
        .clamp(0, 28) as u32;
    Ok(round_to(q, rscale))
}

/// Applies an arithmetic operator (`+ - * %`, `/` through [`div`]).
pub fn arith(op: crate::expr::BinOp, a: Decimal, b: Decimal) -> Result<Decimal> {
    use crate::expr::BinOp;
    let r = match op {
        BinOp::Add => a.checked_add(b),
        BinOp::Sub => a.checked_sub(b),
        BinOp::Mul => a.checked_mul(b),
        BinOp::Div => return div(a, b),
        BinOp::Mod => {
            if b.is_zero() {
                return Err(Error::DivisionByZero);
            }
            a.checked_rem(b)
        }
        _ => unreachable!("arithmetic operators only"),
    };
    r.ok_or_else(overflow)
}

/// The average of `count` values summing to `sum`, as PostgreSQL's
/// `avg(numeric)` shows it (at least 16 significant digits).
pub fn avg(sum: Decimal, count: i64) -> Result<Decimal> {
    div(sum, Decimal::from(count))
}

/// A float as a numeric (the shortest text that reads back as it).
pub fn from_f64(f: f64) -> Result<Decimal> {
    if !f.is_finite() {
        return Err(Error::FeatureNotSupported(
            "numeric value NaN or Infinity (not supported)".into(),
        ));
    }
    parse(&format!("{f:e}")).map(|d| d.normalize())
}

/// A numeric as a float.
pub fn to_f64(d: &Decimal) -> f64 {
    use rust_decimal::prelude::ToPrimitive;
    d.to_f64().unwrap_or(f64::NAN)
}

/// A numeric as an integer, rounded half away from zero; `None` if it does
/// not fit an i64.
pub fn to_i64(d: &Decimal) -> Option<i64> {
    use rust_decimal::prelude::ToPrimitive;
    d.round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero)
        .to_i64()
}

/// PostgreSQL's binary form (`numeric_send`).
pub fn to_binary(d: &Decimal) -> Vec<u8> {
    let scale = d.scale() as usize;
    let mut digits = d.mantissa().unsigned_abs().to_string();
    if digits.len() <= scale {
        digits = format!("{}{digits}", "0".repeat(scale + 1 - digits.len()));
    }
    let (int_part, frac_part) = digits.split_at(digits.len() - scale);
    let pad_left = (4 - int_part.len() % 4) % 4;
    let int_part = format!("{}{int_part}", "0".repeat(pad_left));
    let pad_right = (4 - frac_part.len() % 4) % 4;
    let frac_part = format!("{frac_part}{}", "0".repeat(pad_right));
    let group = |s: &str| -> Vec<i16> {
        s.as_bytes()
            .chunks(4)
            .map(|c| {
                std::str::from_utf8(c)
                    .expect("ASCII digits")
                    .parse::<i16>()
                    .expect("four decimal digits fit an i16")
            })
            .collect()
    };
    let mut groups = group(&int_part);
    let mut weight = groups.len() as i32 - 1;
    groups.extend(group(&frac_part));
    // Strip leading and trailing zero groups.
    let lead = groups.iter().take_while(|&&g| g == 0).count();
    groups.drain(..lead);
    weight -= lead as i32;
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        weight = 0;
    }
    let sign: u16 = if d.is_sign_negative() && !d.is_zero() {
        0x4000
    } else {
        0
    };
    let mut out = Vec::with_capacity(8 + 2 * groups.len());
    out.extend_from_slice(&(groups.len() as i16).to_be_bytes());
    out.extend_from_slice(&(weight as i16).to_be_bytes());
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&(scale as u16).to_be_bytes());
    for g in groups {
        out.extend_from_slice(&g.to_be_bytes());
    }
    out
}

/// Reads PostgreSQL's binary form (`numeric_recv`).
pub fn from_binary(b: &[u8]) -> Result<Decimal> {
    let bad = || Error::ProtocolViolation("invalid binary numeric".into());
    let word = |i: usize| -> Result<i16> {
        let s = b.get(i..i + 2).ok_or_else(bad)?;
        Ok(i16::from_be_bytes([s[0], s[1]]))
    };
    let ndigits = word(0)?;
    let weight = word(2)? as i32;
    let sign = word(4)? as u16;
    let dscale = word(6)? as u16 as u32;
    if ndigits < 0 || b.len() != 8 + 2 * ndigits as usize {
        return Err(bad());
    }
    match sign {
        0 | 0x4000 => {}
        _ => {
            return Err(Error::FeatureNotSupported(
                "numeric NaN or Infinity (not supported)".into(),
            ))
        }
    }
    let mut int_part = String::new();
    let mut frac_part = String::new();
    for i in 0..ndigits as usize {
        let g = word(8 + 2 * i)?;
        if !(0..10000).contains(&g) {
            return Err(bad());
        }
        let power = weight - i as i32;
        if power >= 0 {
            int_part.push_str(&format!("{g:04}"));
        } else {
            // Groups skipped between the point and this one are zeros.
            while (frac_part.len() as i32) < 4 * (-power - 1) {
                frac_part.push_str("0000");
            }
            frac_part.push_str(&format!("{g:04}"));
        }
    }
    // Integer groups omitted after the last digit (trailing zero groups).
    let last_power = weight - ndigits as i32 + 1;
    if ndigits > 0 && last_power > 0 {
        int_part.push_str(&"0000".repeat(last_power as usize));
    }
    if int_part.is_empty() {
        int_part.push('0');
    }
    let text = if frac_part.is_empty() {
        int_part
    } else {
        format!("{int_part}.{frac_part}")
    };
    let d = Decimal::from_str(&text).map_err(|_| overflow())?;
    let d = if sign == 0x4000 { -d } else { d };
    Ok(round_to(d, dscale.min(28)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Decimal {
        parse(s).unwrap()
    }

    #[test]
    fn text_keeps_the_written_scale() {
        assert_eq!(format(&n("1.50")), "1.50");
        assert_eq!(format(&n(" -0.001 ")), "-0.001");
        assert_eq!(format(&n("1.5e2")), "150");
        assert_eq!(format(&n("15e-3")), "0.015");
        assert!(matches!(
            parse("1.2.3"),
            Err(Error::InvalidTextRepresentation { .. })
        ));
        assert!(matches!(
            parse("abc"),
            Err(Error::InvalidTextRepresentation { .. })
        ));
    }

    #[test]
    fn division_shows_at_least_sixteen_digits() {
        // As PostgreSQL 15 prints them.
        assert_eq!(
            format(&div(n("1"), n("3")).unwrap()),
            "0.33333333333333333333"
        );
        assert_eq!(format(&div(n("10"), n("4")).unwrap()), "2.5000000000000000");
        assert_eq!(
            format(&div(n("100000"), n("3")).unwrap()),
            "33333.333333333333"
        );
        assert_eq!(
            format(&div(n("1.000"), n("8")).unwrap()),
            "0.12500000000000000000"
        );
        assert!(matches!(div(n("1"), n("0")), Err(Error::DivisionByZero)));
    }

    #[test]
    fn typmod_rounds_half_away_and_checks_the_integer_digits() {
        assert_eq!(format(&apply_typmod(n("2.345"), 5, 2).unwrap()), "2.35");
        assert_eq!(format(&apply_typmod(n("-2.345"), 5, 2).unwrap()), "-2.35");
        assert_eq!(format(&apply_typmod(n("7"), 5, 2).unwrap()), "7.00");
        assert!(matches!(
            apply_typmod(n("1000"), 5, 2),
            Err(Error::NumericFieldOverflow(_))
        ));
        assert!(matches!(
            apply_typmod(n("999.995"), 5, 2),
            Err(Error::NumericFieldOverflow(_))
        ));
    }

    #[test]
    fn binary_round_trips_as_postgres_sends_it() {
        // 12345.678: weight 1, digits [1, 2345, 6780], dscale 3.
        let b = to_binary(&n("12345.678"));
        assert_eq!(
            b,
            [0, 3, 0, 1, 0, 0, 0, 3, 0, 1, 0x09, 0x29, 0x1a, 0x7c].to_vec()
        );
        for s in [
            "0",
            "0.00",
            "-1",
            "10000",
            "0.0001",
            "-123456789.000001",
            "1e20",
        ] {
            let d = n(s);
            let back = from_binary(&to_binary(&d)).unwrap();
            assert_eq!(format(&back), format(&d), "{s}");
        }
    }
}
