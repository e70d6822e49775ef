//! Dates, timestamps and intervals: PostgreSQL's representations, text
//! input and output, and calendar arithmetic.
//!
//! ```text
//! date         i32  days since 2000-01-01                 (PostgreSQL's epoch)
//! timestamp    i64  microseconds since 2000-01-01 00:00:00 (no zone)
//! timestamptz  i64  microseconds since 2000-01-01 00:00:00 UTC
//! interval     (months i32, days i32, micros i64)          kept apart, as in PostgreSQL:
//!                                                          a month is not 30 days until compared
//! ```
//!
//! These are exactly PostgreSQL's binary wire formats, so the wire layer
//! copies them. `infinity` and `-infinity` are the extreme values of the
//! representation, as in PostgreSQL. Calendar math (month lengths, leap
//! years) is chrono's.
//!
//! Output follows `DateStyle = ISO, MDY` and `IntervalStyle = postgres`:
//! `2024-03-01`, `2024-03-01 12:30:00.5`, `2024-03-01 12:30:00.5+00`,
//! `1 year 2 mons 3 days 04:05:06`.
//!
//! Not done: time zones other than UTC and fixed offsets (the session's
//! `TimeZone` is UTC; input may carry `Z`, `UTC`/`GMT` or `±hh[:mm]`), years
//! before 1 AD (`BC`), the `time`/`timetz` types, ISO 8601 interval input
//! (`P1D`) and the `@ … ago` form.

use std::cmp::Ordering;

use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime, Timelike};

use crate::error::{Error, Result};

/// Microseconds in a day.
pub const USECS_PER_DAY: i64 = 86_400_000_000;
/// Microseconds in an hour.
const USECS_PER_HOUR: i64 = 3_600_000_000;
/// Microseconds in a minute.
const USECS_PER_MINUTE: i64 = 60_000_000;
/// Microseconds in a second.
const USECS_PER_SEC: i64 = 1_000_000;
/// Seconds from the Unix epoch to PostgreSQL's (2000-01-01).
const UNIX_TO_PG_SECS: i64 = 946_684_800;

/// `infinity` and `-infinity` as timestamps.
pub const TS_INFINITY: i64 = i64::MAX;
pub const TS_NEG_INFINITY: i64 = i64::MIN;
/// `infinity` and `-infinity` as dates.
pub const DATE_INFINITY: i32 = i32::MAX;
pub const DATE_NEG_INFINITY: i32 = i32::MIN;

/// An interval: months, days and microseconds, each with its own sign.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Interval {
    pub months: i32,
    pub days: i32,
    pub micros: i64,
}

impl Interval {
    /// The value PostgreSQL compares and hashes by: a month is 30 days, a
    /// day 24 hours.
    pub fn normalized(&self) -> i128 {
        (i128::from(self.months) * 30 + i128::from(self.days)) * i128::from(USECS_PER_DAY)
            + i128::from(self.micros)
    }

    /// The interval with every field negated.
    pub fn negate(&self) -> Result<Interval> {
        Ok(Interval {
            months: self.months.checked_neg().ok_or_else(interval_range)?,
            days: self.days.checked_neg().ok_or_else(interval_range)?,
            micros: self.micros.checked_neg().ok_or_else(interval_range)?,
        })
    }

    /// Sum of two intervals, field by field.
    pub fn add(&self, o: &Interval) -> Result<Interval> {
        Ok(Interval {
            months: self
                .months
                .checked_add(o.months)
                .ok_or_else(interval_range)?,
            days: self.days.checked_add(o.days).ok_or_else(interval_range)?,
            micros: self
                .micros
                .checked_add(o.micros)
                .ok_or_else(interval_range)?,
        })
    }

    /// The interval times a number: fractions of months and days cascade
    /// into the smaller fields (PostgreSQL's `interval_mul`).
    pub fn mul(&self, f: f64) -> Result<Interval> {
        if !f.is_finite() {
            return Err(interval_range());
        }
        Interval::from_fractions(
            f64::from(self.months) * f,
            f64::from(self.days) * f,
            self.micros as f64 * f,
        )
    }

    /// An interval from possibly fractional fields: fractions cascade down
    /// (1.5 months = 1 month 15 days, 1.5 days = 1 day 12 hours), as in
    /// PostgreSQL.
    fn from_fractions(months: f64, days: f64, micros: f64) -> Result<Interval> {
        let whole_months = months.trunc();
        let days = days + (months - whole_months) * 30.0;
        let whole_days = days.trunc();
        let micros = micros + (days - whole_days) * USECS_PER_DAY as f64;
        let fits = |x: f64| x >= f64::from(i32::MIN) && x <= f64::from(i32::MAX);
        if !fits(whole_months) || !fits(whole_days) || micros.abs() >= 9.2e18 {
            return Err(interval_range());
        }
        Ok(Interval {
            months: whole_months as i32,
            days: whole_days as i32,
            micros: micros.round() as i64,
        })
    }
}

impl PartialOrd for Interval {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Interval {
    fn cmp(&self, other: &Self) -> Ordering {
        self.normalized().cmp(&other.normalized())
    }
}

fn interval_range() -> Error {
    Error::DatetimeFieldOverflow("interval out of range".into())
}

fn ts_range() -> Error {
    Error::DatetimeFieldOverflow("timestamp out of range".into())
}

fn date_range() -> Error {
    Error::DatetimeFieldOverflow("date out of range".into())
}

fn pg_epoch() -> NaiveDate {
    NaiveDate::from_ymd_opt(2000, 1, 1).expect("2000-01-01 is a valid date")
}

fn epoch_datetime() -> NaiveDateTime {
    pg_epoch().and_time(NaiveTime::MIN)
}

/// A date as days since 2000-01-01.
pub fn date_from_naive(d: NaiveDate) -> i32 {
    (d - pg_epoch()).num_days() as i32
}

/// The calendar date of a day number (None for ±infinity or beyond chrono).
pub fn naive_date(days: i32) -> Option<NaiveDate> {
    if days == DATE_INFINITY || days == DATE_NEG_INFINITY {
        return None;
    }
    pg_epoch().checked_add_signed(Duration::days(i64::from(days)))
}

/// A timestamp as microseconds since 2000-01-01.
pub fn ts_from_naive(dt: NaiveDateTime) -> Result<i64> {
    (dt - epoch_datetime())
        .num_microseconds()
        .filter(|&us| us != TS_INFINITY && us != TS_NEG_INFINITY)
        .ok_or_else(ts_range)
}

/// The calendar time of a timestamp (None for ±infinity).
pub fn naive_ts(us: i64) -> Option<NaiveDateTime> {
    if us == TS_INFINITY || us == TS_NEG_INFINITY {
        return None;
    }
    epoch_datetime().checked_add_signed(Duration::microseconds(us))
}

/// Now, as a timestamptz.
pub fn now_micros() -> i64 {
    let since_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0);
    since_unix - UNIX_TO_PG_SECS * USECS_PER_SEC
}

/// A wall time in nanoseconds since the Unix epoch, as a timestamptz.
pub fn from_unix_nanos(nanos: u64) -> i64 {
    (nanos / 1000) as i64 - UNIX_TO_PG_SECS * USECS_PER_SEC
}

/// The date part of a timestamp (days, rounding toward −∞).
pub fn ts_to_date(us: i64) -> Result<i32> {
    match us {
        TS_INFINITY => Ok(DATE_INFINITY),
        TS_NEG_INFINITY => Ok(DATE_NEG_INFINITY),
        us => i32::try_from(us.div_euclid(USECS_PER_DAY)).map_err(|_| date_range()),
    }
}

/// Midnight of a date, as a timestamp.
pub fn date_to_ts(days: i32) -> Result<i64> {
    match days {
        DATE_INFINITY => Ok(TS_INFINITY),
        DATE_NEG_INFINITY => Ok(TS_NEG_INFINITY),
        d => i64::from(d)
            .checked_mul(USECS_PER_DAY)
            .filter(|&us| us != TS_INFINITY && us != TS_NEG_INFINITY)
            .ok_or_else(ts_range),
    }
}

/// Midnight of a date as a timestamp, for comparing and hashing dates
/// with timestamps (every date chrono can hold fits).
pub fn date_as_ts(days: i32) -> i64 {
    date_to_ts(days).unwrap_or(if days < 0 {
        TS_NEG_INFINITY
    } else {
        TS_INFINITY
    })
}

/// `date + n days`.
pub fn date_add_days(days: i32, n: i64) -> Result<i32> {
    if days == DATE_INFINITY || days == DATE_NEG_INFINITY {
        return Ok(days);
    }
    let out = i64::from(days).checked_add(n).ok_or_else(date_range)?;
    let out = i32::try_from(out).map_err(|_| date_range())?;
    naive_date(out).ok_or_else(date_range)?;
    Ok(out)
}

/// `timestamp + interval`: months by the calendar (clamping the day to the
/// month's length), then days, then microseconds.
pub fn ts_add_interval(us: i64, iv: &Interval) -> Result<i64> {
    if us == TS_INFINITY || us == TS_NEG_INFINITY {
        return Ok(us);
    }
    let mut dt = naive_ts(us).ok_or_else(ts_range)?;
    if iv.months != 0 {
        let total = dt.year() as i64 * 12 + dt.month0() as i64 + i64::from(iv.months);
        let year = i32::try_from(total.div_euclid(12)).map_err(|_| ts_range())?;
        let month = total.rem_euclid(12) as u32 + 1;
        let mut day = dt.day();
        let date = loop {
            if let Some(d) = NaiveDate::from_ymd_opt(year, month, day) {
                break d;
            }
            if day <= 28 {
                return Err(ts_range());
            }
            day -= 1;
        };
        dt = date.and_time(dt.time());
    }
    let us = ts_from_naive(dt)?;
    let us = us
        .checked_add(i64::from(iv.days) * USECS_PER_DAY)
        .and_then(|u| u.checked_add(iv.micros))
        .filter(|&u| u != TS_INFINITY && u != TS_NEG_INFINITY)
        .ok_or_else(ts_range)?;
    naive_ts(us).ok_or_else(ts_range)?;
    Ok(us)
}

/// `timestamp − timestamp`: days and microseconds (PostgreSQL's
/// `timestamp_mi` then `justify_hours`).
pub fn ts_diff(a: i64, b: i64) -> Result<Interval> {
    if [a, b]
        .iter()
        .any(|&x| x == TS_INFINITY || x == TS_NEG_INFINITY)
    {
        return Err(Error::DatetimeFieldOverflow(
            "cannot subtract infinite timestamps".into(),
        ));
    }
    let d = a.checked_sub(b).ok_or_else(interval_range)?;
    let days = d / USECS_PER_DAY;
    Ok(Interval {
        months: 0,
        days: i32::try_from(days).map_err(|_| interval_range())?,
        micros: d - days * USECS_PER_DAY,
    })
}

fn bad_format(ty: &str, s: &str) -> Error {
    Error::InvalidDatetimeFormat(format!("invalid input syntax for type {ty}: \"{s}\""))
}

/// Splits `s` into a date/time part and a zone offset in seconds east of
/// UTC, if it carries one.
fn split_zone(s: &str) -> (&str, Option<i32>) {
    let t = s.trim_end();
    for suffix in [" UTC", " GMT", "Z", "z", "UTC", "GMT"] {
        if let Some(rest) = t.strip_suffix(suffix) {
            if rest
                .chars()
                .last()
                .is_some_and(|c| c.is_ascii_digit() || c == ' ')
            {
                return (rest.trim_end(), Some(0));
            }
        }
    }
    // ±hh, ±hhmm or ±hh:mm after the time (which has a ':').
    if let Some(pos) = t.rfind(['+', '-']) {
        let (head, zone) = t.split_at(pos);
        if head.contains(':') && !zone.contains(' ') {
            let sign = if zone.starts_with('-') { -1 } else { 1 };
            let digits: String = zone[1..].chars().filter(|c| *c != ':').collect();
            if !digits.is_empty() && digits.len() <= 4 && digits.chars().all(|c| c.is_ascii_digit())
            {
                let (h, m) = if digits.len() <= 2 {
                    (digits.parse::<i32>().unwrap_or(99), 0)
                } else {
                    let (h, m) = digits.split_at(digits.len() - 2);
                    (
                        h.parse::<i32>().unwrap_or(99),
                        m.parse::<i32>().unwrap_or(99),
                    )
                };
                if h <= 15 && m < 60 {
                    return (head.trim_end(), Some(sign * (h * 3600 + m * 60)));
                }
            }
        }
    }
    (t, None)
}

fn parse_date_part(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .or_else(|| NaiveDate::parse_from_str(s, "%Y%m%d").ok())
        .or_else(|| NaiveDate::parse_from_str(s, "%m/%d/%Y").ok())
        .filter(|d| d.year() >= 1)
}

fn parse_time_part(s: &str) -> Option<NaiveTime> {
    NaiveTime::parse_from_str(s, "%H:%M:%S%.f")
        .ok()
        .or_else(|| NaiveTime::parse_from_str(s, "%H:%M").ok())
}

/// The special words every date/time input accepts.
enum Special {
    Infinity,
    NegInfinity,
    Epoch,
    /// Days from today (`today` 0, `tomorrow` 1, `yesterday` −1).
    Today(i64),
    Now,
}

fn special(s: &str) -> Option<Special> {
    Some(match s.trim().to_ascii_lowercase().as_str() {
        "infinity" | "+infinity" => Special::Infinity,
        "-infinity" => Special::NegInfinity,
        "epoch" => Special::Epoch,
        "today" => Special::Today(0),
        "tomorrow" => Special::Today(1),
        "yesterday" => Special::Today(-1),
        "now" => Special::Now,
        _ => return None,
    })
}

/// Parses a timestamp; `zone` receives the offset the text carried.
fn parse_datetime(s: &str, ty: &str) -> Result<(i64, Option<i32>)> {
    if let Some(sp) = special(s) {
        let now = now_micros();
        return Ok((
            match sp {
                Special::Infinity => TS_INFINITY,
                Special::NegInfinity => TS_NEG_INFINITY,
                Special::Epoch => -UNIX_TO_PG_SECS * USECS_PER_SEC,
                Special::Today(d) => (now.div_euclid(USECS_PER_DAY) + d) * USECS_PER_DAY,
                Special::Now => now,
            },
            Some(0),
        ));
    }
    let (body, zone) = split_zone(s.trim());
    let (date, time) = match body.split_once(['T', ' ']) {
        Some((d, t)) => (d, Some(t.trim())),
        None => (body, None),
    };
    let date = parse_date_part(date).ok_or_else(|| {
        // Well-formed but not a day of the calendar (2024-02-30).
        let fields: Vec<&str> = date.split('-').collect();
        if fields.len() == 3
            && fields
                .iter()
                .all(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
        {
            Error::DatetimeFieldOverflow(format!("date/time field value out of range: \"{s}\""))
        } else {
            bad_format(ty, s)
        }
    })?;
    let time = match time {
        Some(t) if !t.is_empty() => parse_time_part(t).ok_or_else(|| bad_format(ty, s))?,
        _ => NaiveTime::MIN,
    };
    Ok((ts_from_naive(date.and_time(time))?, zone))
}

/// Input of `date`.
pub fn parse_date(s: &str) -> Result<i32> {
    if let Some(sp) = special(s) {
        return Ok(match sp {
            Special::Infinity => DATE_INFINITY,
            Special::NegInfinity => DATE_NEG_INFINITY,
            Special::Epoch => date_from_naive(
                NaiveDate::from_ymd_opt(1970, 1, 1).expect("1970-01-01 is a valid date"),
            ),
            Special::Today(d) => ts_to_date(now_micros())? + d as i32,
            Special::Now => ts_to_date(now_micros())?,
        });
    }
    let (us, _) = parse_datetime(s, "date")?;
    ts_to_date(us)
}

/// Input of `timestamp` (a zone in the text is ignored, as in PostgreSQL).
pub fn parse_timestamp(s: &str) -> Result<i64> {
    Ok(parse_datetime(s, "timestamp")?.0)
}

/// Input of `timestamptz`: a zone in the text applies, else the session's
/// (UTC).
pub fn parse_timestamptz(s: &str) -> Result<i64> {
    let (us, zone) = parse_datetime(s, "timestamp with time zone")?;
    if us == TS_INFINITY || us == TS_NEG_INFINITY {
        return Ok(us);
    }
    us.checked_sub(i64::from(zone.unwrap_or(0)) * USECS_PER_SEC)
        .ok_or_else(ts_range)
}

/// Output of `date`.
pub fn format_date(days: i32) -> String {
    match days {
        DATE_INFINITY => "infinity".into(),
        DATE_NEG_INFINITY => "-infinity".into(),
        d => match naive_date(d) {
            Some(d) => format!("{:04}-{:02}-{:02}", d.year(), d.month(), d.day()),
            None => "invalid date".into(),
        },
    }
}

fn push_seconds(out: &mut String, sec: i64, frac_us: i64) {
    out.push_str(&format!("{sec:02}"));
    if frac_us != 0 {
        let f = format!("{frac_us:06}");
        out.push('.');
        out.push_str(f.trim_end_matches('0'));
    }
}

/// Output of `timestamp`.
pub fn format_timestamp(us: i64) -> String {
    match us {
        TS_INFINITY => "infinity".into(),
        TS_NEG_INFINITY => "-infinity".into(),
        us => match naive_ts(us) {
            Some(dt) => {
                let mut s = format!(
                    "{} {:02}:{:02}:",
                    format_date(date_from_naive(dt.date())),
                    dt.hour(),
                    dt.minute()
                );
                push_seconds(&mut s, i64::from(dt.second()), us.rem_euclid(USECS_PER_SEC));
                s
            }
            None => "invalid timestamp".into(),
        },
    }
}

/// Output of `timestamptz` in the session's zone (UTC).
pub fn format_timestamptz(us: i64) -> String {
    match us {
        TS_INFINITY | TS_NEG_INFINITY => format_timestamp(us),
        us => format!("{}+00", format_timestamp(us)),
    }
}

/// Output of `interval` in the `postgres` style.
pub fn format_interval(iv: &Interval) -> String {
    let mut out = String::new();
    let mut is_zero = true;
    let mut is_before = false;
    let mut part = |out: &mut String, value: i64, unit: &str| {
        if value == 0 {
            return;
        }
        if !is_zero {
            out.push(' ');
        }
        if is_before && value > 0 {
            out.push('+');
        }
        out.push_str(&format!(
            "{value} {unit}{}",
            if value != 1 { "s" } else { "" }
        ));
        is_before = value < 0;
        is_zero = false;
    };
    let years = i64::from(iv.months / 12);
    let mons = i64::from(iv.months % 12);
    part(&mut out, years, "year");
    part(&mut out, mons, "mon");
    part(&mut out, i64::from(iv.days), "day");
    if is_zero || iv.micros != 0 {
        let us = iv.micros;
        let hours = us / USECS_PER_HOUR;
        let mins = (us % USECS_PER_HOUR) / USECS_PER_MINUTE;
        let secs = (us % USECS_PER_MINUTE) / USECS_PER_SEC;
        let frac = us % USECS_PER_SEC;
        if !is_zero {
            out.push(' ');
        }
        if us < 0 {
            out.push('-');
        } else if is_before {
            out.push('+');
        }
        out.push_str(&format!("{:02}:{:02}:", hours.abs(), mins.abs()));
        push_seconds(&mut out, secs.abs(), frac.abs());
    }
    out
}

/// Input of `interval`: `1 year 2 mons 3 days 04:05:06.5`, `-1 day`,
/// `1.5 hours`, `10:00`, units spelled as PostgreSQL accepts them.
pub fn parse_interval(s: &str) -> Result<Interval> {
    let bad = || bad_format("interval", s);
    let mut months = 0f64;
    let mut days = 0f64;
    let mut micros = 0f64;
    let mut tokens = s.split_whitespace().peekable();
    let mut any = false;
    while let Some(tok) = tokens.next() {
        any = true;
        if tok.contains(':') {
            // [-]hh:mm[:ss[.f]]
            let (neg, body) = match tok.strip_prefix('-') {
                Some(b) => (true, b),
                None => (false, tok.strip_prefix('+').unwrap_or(tok)),
            };
            let parts: Vec<&str> = body.split(':').collect();
            if parts.len() < 2 || parts.len() > 3 {
                return Err(bad());
            }
            let h: f64 = parts[0].parse().map_err(|_| bad())?;
            let m: f64 = parts[1].parse().map_err(|_| bad())?;
            let sec: f64 = match parts.get(2) {
                Some(p) => p.parse().map_err(|_| bad())?,
                None => 0.0,
            };
            let t = h * USECS_PER_HOUR as f64 + m * USECS_PER_MINUTE as f64 + sec * 1e6;
            micros += if neg { -t } else { t };
            continue;
        }
        // A number, then a unit (possibly glued: `10d`).
        let split = tok
            .find(|c: char| c.is_ascii_alphabetic())
            .unwrap_or(tok.len());
        let (num, glued) = tok.split_at(split);
        let n: f64 = num.parse().map_err(|_| bad())?;
        let unit = if glued.is_empty() {
            match tokens.peek() {
                Some(u) if u.chars().all(|c| c.is_ascii_alphabetic()) => {
                    tokens.next().unwrap_or_default().to_ascii_lowercase()
                }
                // A bare number is seconds.
                _ => "second".into(),
            }
        } else {
            glued.to_ascii_lowercase()
        };
        match unit.as_str() {
            "microsecond" | "microseconds" | "us" | "usec" | "usecs" => micros += n,
            "millisecond" | "milliseconds" | "ms" | "msec" | "msecs" => micros += n * 1e3,
            "second" | "seconds" | "s" | "sec" | "secs" => micros += n * 1e6,
            "minute" | "minutes" | "m" | "min" | "mins" => micros += n * USECS_PER_MINUTE as f64,
            "hour" | "hours" | "h" | "hr" | "hrs" => micros += n * USECS_PER_HOUR as f64,
            "day" | "days" | "d" => days += n,
            "week" | "weeks" | "w" => days += n * 7.0,
            "month" | "months" | "mon" | "mons" => months += n,
            "year" | "years" | "y" | "yr" | "yrs" => months += n * 12.0,
            "decade" | "decades" => months += n * 120.0,
            "century" | "centuries" => months += n * 1200.0,
            _ => return Err(bad()),
        }
    }
    if !any {
        return Err(bad());
    }
    Interval::from_fractions(months, days, micros)
}

/// A field of `extract`/`date_part`/`date_trunc`, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Microseconds,
    Milliseconds,
    Second,
    Minute,
    Hour,
    Day,
    Week,
    Month,
    Quarter,
    Year,
    Decade,
    Century,
    Millennium,
    Dow,
    Doy,
    Epoch,
}

impl Field {
    /// The field a name denotes (PostgreSQL's spellings, any case).
    pub fn parse(name: &str) -> Result<Field> {
        Ok(match name.to_ascii_lowercase().as_str() {
            "microsecond" | "microseconds" | "us" => Field::Microseconds,
            "millisecond" | "milliseconds" | "ms" => Field::Milliseconds,
            "second" | "seconds" | "sec" | "s" => Field::Second,
            "minute" | "minutes" | "min" | "m" => Field::Minute,
            "hour" | "hours" | "h" => Field::Hour,
            "day" | "days" | "d" => Field::Day,
            "week" | "weeks" => Field::Week,
            "month" | "months" | "mon" => Field::Month,
            "quarter" => Field::Quarter,
            "year" | "years" | "y" => Field::Year,
            "decade" => Field::Decade,
            "century" => Field::Century,
            "millennium" => Field::Millennium,
            "dow" => Field::Dow,
            "doy" => Field::Doy,
            "epoch" => Field::Epoch,
            other => {
                return Err(Error::InvalidParameterValue(format!(
                    "unit \"{other}\" not recognized for type timestamp"
                )))
            }
        })
    }
}

/// `extract(field FROM timestamp)` as a double.
pub fn extract(field: Field, us: i64) -> Result<f64> {
    if field == Field::Epoch {
        return Ok(match us {
            TS_INFINITY => f64::INFINITY,
            TS_NEG_INFINITY => f64::NEG_INFINITY,
            us => (us as f64) / 1e6 + UNIX_TO_PG_SECS as f64,
        });
    }
    let dt = naive_ts(us).ok_or_else(ts_range)?;
    let sec_frac = f64::from(dt.second()) + (us.rem_euclid(USECS_PER_SEC) as f64) / 1e6;
    Ok(match field {
        Field::Microseconds => sec_frac * 1e6,
        Field::Milliseconds => sec_frac * 1e3,
        Field::Second => sec_frac,
        Field::Minute => f64::from(dt.minute()),
        Field::Hour => f64::from(dt.hour()),
        Field::Day => f64::from(dt.day()),
        Field::Week => f64::from(dt.iso_week().week()),
        Field::Month => f64::from(dt.month()),
        Field::Quarter => f64::from(dt.month0() / 3 + 1),
        Field::Year => f64::from(dt.year()),
        Field::Decade => f64::from(dt.year().div_euclid(10)),
        Field::Century => f64::from((dt.year() + 99) / 100),
        Field::Millennium => f64::from((dt.year() + 999) / 1000),
        Field::Dow => f64::from(dt.weekday().num_days_from_sunday()),
        Field::Doy => f64::from(dt.ordinal()),
        Field::Epoch => unreachable!("handled above"),
    })
}

/// `date_trunc(field, timestamp)`.
pub fn trunc(field: Field, us: i64) -> Result<i64> {
    if us == TS_INFINITY || us == TS_NEG_INFINITY {
        return Ok(us);
    }
    let dt = naive_ts(us).ok_or_else(ts_range)?;
    let ymd = |y: i32, m: u32, d: u32| -> Result<i64> {
        let date = NaiveDate::from_ymd_opt(y, m, d).ok_or_else(ts_range)?;
        ts_from_naive(date.and_time(NaiveTime::MIN))
    };
    let unit = |u: i64| Ok(us - us.rem_euclid(u));
    match field {
        Field::Microseconds => Ok(us),
        Field::Milliseconds => unit(1000),
        Field::Second => unit(USECS_PER_SEC),
        Field::Minute => unit(USECS_PER_MINUTE),
        Field::Hour => unit(USECS_PER_HOUR),
        Field::Day => unit(USECS_PER_DAY),
        Field::Week => {
            let back = i64::from(dt.weekday().num_days_from_monday());
            Ok(unit(USECS_PER_DAY)? - back * USECS_PER_DAY)
        }
        Field::Month => ymd(dt.year(), dt.month(), 1),
        Field::Quarter => ymd(dt.year(), dt.month0() / 3 * 3 + 1, 1),
        Field::Year => ymd(dt.year(), 1, 1),
        Field::Decade => ymd(dt.year() - dt.year().rem_euclid(10), 1, 1),
        Field::Century => ymd((dt.year() - 1) / 100 * 100 + 1, 1, 1),
        Field::Millennium => ymd((dt.year() - 1) / 1000 * 1000 + 1, 1, 1),
        Field::Dow | Field::Doy | Field::Epoch => Err(Error::FeatureNotSupported(format!(
            "date_trunc unit {field:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip_in_iso_format() {
        for s in [
            "2000-01-01",
            "1999-12-31",
            "2024-02-29",
            "0001-01-01",
            "9999-12-31",
        ] {
            assert_eq!(format_date(parse_date(s).unwrap()), s);
        }
        assert_eq!(parse_date("2000-01-02").unwrap(), 1);
        assert_eq!(parse_date("infinity").unwrap(), DATE_INFINITY);
        assert_eq!(format_date(DATE_NEG_INFINITY), "-infinity");
        assert!(matches!(
            parse_date("2024-02-30"),
            Err(Error::DatetimeFieldOverflow(_))
        ));
        assert!(matches!(
            parse_date("someday"),
            Err(Error::InvalidDatetimeFormat(_))
        ));
    }

    #[test]
    fn timestamps_print_like_postgres() {
        let t = parse_timestamp("2024-03-01 12:30:00.5").unwrap();
        assert_eq!(format_timestamp(t), "2024-03-01 12:30:00.5");
        assert_eq!(
            format_timestamp(parse_timestamp("2024-03-01T01:02:03").unwrap()),
            "2024-03-01 01:02:03"
        );
        assert_eq!(
            format_timestamp(parse_timestamp("2024-03-01").unwrap()),
            "2024-03-01 00:00:00"
        );
        // A zone in timestamp input is ignored; in timestamptz input it applies.
        assert_eq!(
            format_timestamp(parse_timestamp("2024-03-01 10:00:00+02").unwrap()),
            "2024-03-01 10:00:00"
        );
        assert_eq!(
            format_timestamptz(parse_timestamptz("2024-03-01 10:00:00+02").unwrap()),
            "2024-03-01 08:00:00+00"
        );
        assert_eq!(
            format_timestamptz(parse_timestamptz("2024-03-01 10:00:00-05:30").unwrap()),
            "2024-03-01 15:30:00+00"
        );
        assert_eq!(
            format_timestamptz(parse_timestamptz("2024-03-01 10:00:00Z").unwrap()),
            "2024-03-01 10:00:00+00"
        );
        assert_eq!(
            format_timestamp(parse_timestamp("1999-12-31 23:59:59.999999").unwrap()),
            "1999-12-31 23:59:59.999999"
        );
        assert!(parse_timestamp("yesterday-ish").is_err());
    }

    #[test]
    fn intervals_print_like_postgres() {
        let p = |s: &str| format_interval(&parse_interval(s).unwrap());
        assert_eq!(
            p("1 year 2 mons 3 days 04:05:06"),
            "1 year 2 mons 3 days 04:05:06"
        );
        assert_eq!(p("1 day"), "1 day");
        assert_eq!(p("-1 day"), "-1 days");
        assert_eq!(p("-1 day 2 hours"), "-1 days +02:00:00");
        assert_eq!(p("1 day -2 hours"), "1 day -02:00:00");
        assert_eq!(p("1.5 days"), "1 day 12:00:00");
        assert_eq!(p("1.5 months"), "1 mon 15 days");
        assert_eq!(p("90 minutes"), "01:30:00");
        assert_eq!(p("0 seconds"), "00:00:00");
        assert_eq!(p("10:00"), "10:00:00");
        assert_eq!(p("2 weeks"), "14 days");
        assert_eq!(p("0.5 seconds"), "00:00:00.5");
        assert!(parse_interval("1 fortnight").is_err());
        assert!(parse_interval("").is_err());
    }

    #[test]
    fn calendar_arithmetic_clamps_month_ends() {
        let jan31 = parse_timestamp("2024-01-31 10:00:00").unwrap();
        let one_month = parse_interval("1 mon").unwrap();
        assert_eq!(
            format_timestamp(ts_add_interval(jan31, &one_month).unwrap()),
            "2024-02-29 10:00:00"
        );
        let diff = ts_diff(
            parse_timestamp("2024-03-02 12:00:00").unwrap(),
            parse_timestamp("2024-03-01 00:00:00").unwrap(),
        )
        .unwrap();
        assert_eq!(format_interval(&diff), "1 day 12:00:00");
        assert_eq!(
            parse_interval("1 mon")
                .unwrap()
                .cmp(&parse_interval("30 days").unwrap()),
            Ordering::Equal
        );
        assert_eq!(
            format_interval(&parse_interval("1 mon").unwrap().mul(1.5).unwrap()),
            "1 mon 15 days"
        );
    }

    #[test]
    fn extract_and_trunc() {
        let t = parse_timestamp("2024-05-17 13:45:30.25").unwrap();
        assert_eq!(extract(Field::Year, t).unwrap(), 2024.0);
        assert_eq!(extract(Field::Second, t).unwrap(), 30.25);
        assert_eq!(extract(Field::Dow, t).unwrap(), 5.0);
        assert_eq!(
            format_timestamp(trunc(Field::Month, t).unwrap()),
            "2024-05-01 00:00:00"
        );
        assert_eq!(
            format_timestamp(trunc(Field::Hour, t).unwrap()),
            "2024-05-17 13:00:00"
        );
        assert_eq!(
            format_timestamp(trunc(Field::Week, t).unwrap()),
            "2024-05-13 00:00:00"
        );
        assert_eq!(
            extract(Field::Epoch, parse_timestamp("1970-01-01").unwrap()).unwrap(),
            0.0
        );
    }
}
