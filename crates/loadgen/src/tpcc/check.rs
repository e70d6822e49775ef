//! The consistency conditions of clause 3.3.2, checked from aggregates the
//! server computes, compared here exactly (NUMERIC as `Decimal`).
//!
//! ```text
//!   3.3.2.1  W_YTD = sum(D_YTD)                               per warehouse
//!   3.3.2.2  D_NEXT_O_ID - 1 = max(O_ID) = max(NO_O_ID)         per district
//!   3.3.2.3  max(NO_O_ID) - min(NO_O_ID) + 1 = count(NEW_ORDER) per district
//!   3.3.2.4  sum(O_OL_CNT) = count(ORDER_LINE)                  per district
//! ```
//!
//! All queries run in one transaction (REPEATABLE READ on PostgreSQL, the
//! default SERIALIZABLE on Concord), so a check taken while a workload runs
//! still sees one consistent state. The comparison itself is a pure
//! function ([`evaluate`]) of the aggregates, tested without a server.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use rust_decimal::Decimal;
use serde::Serialize;

use crate::conn::{ServerKind, Session, Sql};
use crate::error::{ErrorClass, Result};
use crate::values::{get_decimal, get_i32, get_i64};

/// (warehouse, district)
pub type DistrictKey = (i32, i32);

/// The aggregates the conditions are judged on.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Aggregates {
    /// W_YTD per warehouse.
    pub w_ytd: BTreeMap<i32, Decimal>,
    /// sum(D_YTD) per warehouse.
    pub d_ytd_sum: BTreeMap<i32, Decimal>,
    /// D_NEXT_O_ID per district.
    pub d_next_o_id: BTreeMap<DistrictKey, i64>,
    /// (max(O_ID), sum(O_OL_CNT)) per district.
    pub orders: BTreeMap<DistrictKey, (i64, i64)>,
    /// (max(NO_O_ID), min(NO_O_ID), count) per district.
    pub new_orders: BTreeMap<DistrictKey, (i64, i64, i64)>,
    /// count(ORDER_LINE) per district.
    pub order_lines: BTreeMap<DistrictKey, i64>,
}

/// One offending warehouse or district.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub warehouse: i32,
    pub district: Option<i32>,
    pub detail: String,
}

/// One condition's verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Condition {
    /// "3.3.2.1" ...
    pub clause: &'static str,
    pub description: &'static str,
    /// Warehouses or districts checked.
    pub checked: usize,
    pub violations: Vec<Violation>,
}

/// What `check tpcc` found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    pub conditions: Vec<Condition>,
}

impl CheckReport {
    pub fn is_ok(&self) -> bool {
        self.conditions.iter().all(|c| c.violations.is_empty())
    }

    /// Whether condition `clause` (e.g. "3.3.2.4") is violated.
    pub fn violated(&self, clause: &str) -> bool {
        self.conditions
            .iter()
            .any(|c| c.clause == clause && !c.violations.is_empty())
    }
}

/// At most this many violations are printed per condition.
const SHOWN: usize = 20;

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.conditions {
            if c.violations.is_empty() {
                writeln!(
                    f,
                    "{} {}: ok ({} checked)",
                    c.clause, c.description, c.checked
                )?;
                continue;
            }
            writeln!(
                f,
                "{} {}: VIOLATED in {} of {}",
                c.clause,
                c.description,
                c.violations.len(),
                c.checked
            )?;
            for v in c.violations.iter().take(SHOWN) {
                match v.district {
                    Some(d) => writeln!(
                        f,
                        "  warehouse {} district {}: {}",
                        v.warehouse, d, v.detail
                    )?,
                    None => writeln!(f, "  warehouse {}: {}", v.warehouse, v.detail)?,
                }
            }
            if c.violations.len() > SHOWN {
                writeln!(f, "  ... and {} more", c.violations.len() - SHOWN)?;
            }
        }
        Ok(())
    }
}

fn violation(k: DistrictKey, detail: String) -> Violation {
    Violation {
        warehouse: k.0,
        district: Some(k.1),
        detail,
    }
}

/// Judges the four conditions on `a`.
pub fn evaluate(a: &Aggregates) -> CheckReport {
    // 3.3.2.1
    let warehouses: BTreeSet<i32> = a.w_ytd.keys().chain(a.d_ytd_sum.keys()).copied().collect();
    let mut c1 = Vec::new();
    for &w in &warehouses {
        match (a.w_ytd.get(&w), a.d_ytd_sum.get(&w)) {
            (Some(wy), Some(dy)) if wy == dy => {}
            (wy, dy) => c1.push(Violation {
                warehouse: w,
                district: None,
                detail: format!(
                    "W_YTD = {} but sum(D_YTD) = {}",
                    wy.map_or("(no warehouse)".into(), |v| v.to_string()),
                    dy.map_or("(no districts)".into(), |v| v.to_string())
                ),
            }),
        }
    }

    // 3.3.2.2
    let districts: BTreeSet<DistrictKey> = a
        .d_next_o_id
        .keys()
        .chain(a.orders.keys())
        .chain(a.new_orders.keys())
        .copied()
        .collect();
    let mut c2 = Vec::new();
    for &k in &districts {
        let Some(&next) = a.d_next_o_id.get(&k) else {
            c2.push(violation(
                k,
                "orders or new orders of a district that does not exist".into(),
            ));
            continue;
        };
        let max_o = a.orders.get(&k).map_or(0, |o| o.0);
        let mut bad = next - 1 != max_o;
        let mut detail = format!("D_NEXT_O_ID - 1 = {}, max(O_ID) = {max_o}", next - 1);
        if let Some(&(max_no, _, _)) = a.new_orders.get(&k) {
            bad |= next - 1 != max_no;
            detail.push_str(&format!(", max(NO_O_ID) = {max_no}"));
        }
        if bad {
            c2.push(violation(k, detail));
        }
    }

    // 3.3.2.3
    let mut c3 = Vec::new();
    for (&k, &(max, min, count)) in &a.new_orders {
        if max - min + 1 != count {
            c3.push(violation(
                k,
                format!(
                    "max(NO_O_ID) - min(NO_O_ID) + 1 = {} but count = {count}",
                    max - min + 1
                ),
            ));
        }
    }

    // 3.3.2.4
    let with_orders: BTreeSet<DistrictKey> = a
        .orders
        .keys()
        .chain(a.order_lines.keys())
        .copied()
        .collect();
    let mut c4 = Vec::new();
    for &k in &with_orders {
        let sum = a.orders.get(&k).map_or(0, |o| o.1);
        let count = a.order_lines.get(&k).copied().unwrap_or(0);
        if sum != count {
            c4.push(violation(
                k,
                format!("sum(O_OL_CNT) = {sum} but count(ORDER_LINE) = {count}"),
            ));
        }
    }

    CheckReport {
        conditions: vec![
            Condition {
                clause: "3.3.2.1",
                description: "W_YTD = sum(D_YTD)",
                checked: warehouses.len(),
                violations: c1,
            },
            Condition {
                clause: "3.3.2.2",
                description: "D_NEXT_O_ID - 1 = max(O_ID) = max(NO_O_ID)",
                checked: districts.len(),
                violations: c2,
            },
            Condition {
                clause: "3.3.2.3",
                description: "max(NO_O_ID) - min(NO_O_ID) + 1 = count(NEW_ORDER)",
                checked: a.new_orders.len(),
                violations: c3,
            },
            Condition {
                clause: "3.3.2.4",
                description: "sum(O_OL_CNT) = count(ORDER_LINE)",
                checked: with_orders.len(),
                violations: c4,
            },
        ],
    }
}

const Q_W_YTD: Sql = Sql::new("SELECT w_id, w_ytd FROM warehouse", &[]);
const Q_D_YTD: Sql = Sql::new(
    "SELECT d_w_id, sum(d_ytd) FROM district GROUP BY d_w_id",
    &[],
);
const Q_D_NEXT: Sql = Sql::new("SELECT d_w_id, d_id, d_next_o_id FROM district", &[]);
const Q_ORDERS: Sql = Sql::new(
    "SELECT o_w_id, o_d_id, max(o_id), sum(o_ol_cnt) FROM orders GROUP BY o_w_id, o_d_id",
    &[],
);
const Q_NEW_ORDERS: Sql = Sql::new(
    "SELECT no_w_id, no_d_id, max(no_o_id), min(no_o_id), count(*) FROM new_order \
     GROUP BY no_w_id, no_d_id",
    &[],
);
const Q_ORDER_LINES: Sql = Sql::new(
    "SELECT ol_w_id, ol_d_id, count(*) FROM order_line GROUP BY ol_w_id, ol_d_id",
    &[],
);

/// The check's queries, for the report of SQL features used.
pub fn statements() -> Vec<&'static str> {
    vec![
        Q_W_YTD.text,
        Q_D_YTD.text,
        Q_D_NEXT.text,
        Q_ORDERS.text,
        Q_NEW_ORDERS.text,
        Q_ORDER_LINES.text,
    ]
}

async fn read(s: &mut Session) -> Result<Aggregates> {
    let mut a = Aggregates::default();
    for row in s.query(Q_W_YTD, &[]).await? {
        a.w_ytd.insert(
            get_i32(&row, 0, Q_W_YTD.text)?,
            get_decimal(&row, 1, Q_W_YTD.text)?,
        );
    }
    for row in s.query(Q_D_YTD, &[]).await? {
        a.d_ytd_sum.insert(
            get_i32(&row, 0, Q_D_YTD.text)?,
            get_decimal(&row, 1, Q_D_YTD.text)?,
        );
    }
    for row in s.query(Q_D_NEXT, &[]).await? {
        let t = Q_D_NEXT.text;
        a.d_next_o_id.insert(
            (get_i32(&row, 0, t)?, get_i32(&row, 1, t)?),
            get_i64(&row, 2, t)?,
        );
    }
    for row in s.query(Q_ORDERS, &[]).await? {
        let t = Q_ORDERS.text;
        a.orders.insert(
            (get_i32(&row, 0, t)?, get_i32(&row, 1, t)?),
            (get_i64(&row, 2, t)?, get_i64(&row, 3, t)?),
        );
    }
    for row in s.query(Q_NEW_ORDERS, &[]).await? {
        let t = Q_NEW_ORDERS.text;
        a.new_orders.insert(
            (get_i32(&row, 0, t)?, get_i32(&row, 1, t)?),
            (
                get_i64(&row, 2, t)?,
                get_i64(&row, 3, t)?,
                get_i64(&row, 4, t)?,
            ),
        );
    }
    for row in s.query(Q_ORDER_LINES, &[]).await? {
        let t = Q_ORDER_LINES.text;
        a.order_lines.insert(
            (get_i32(&row, 0, t)?, get_i32(&row, 1, t)?),
            get_i64(&row, 2, t)?,
        );
    }
    Ok(a)
}

/// Reads the aggregates in one transaction (retrying a serialization
/// failure a few times) and judges them.
pub async fn check_session(s: &mut Session, kind: ServerKind) -> Result<CheckReport> {
    let begin = match kind {
        ServerKind::Postgres => "BEGIN ISOLATION LEVEL REPEATABLE READ",
        ServerKind::Concord => "BEGIN",
    };
    let mut attempt = 0;
    loop {
        s.batch(begin).await?;
        match read(s).await {
            Ok(a) => {
                s.batch("COMMIT").await?;
                return Ok(evaluate(&a));
            }
            Err(e) if e.class() == ErrorClass::Retryable && attempt < 5 => {
                attempt += 1;
                s.batch("ROLLBACK").await?;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A freshly loaded database of `w` warehouses.
    fn loaded(w: i32) -> Aggregates {
        let mut a = Aggregates::default();
        for w in 1..=w {
            a.w_ytd.insert(w, Decimal::new(30_000_000, 2));
            a.d_ytd_sum.insert(w, Decimal::new(300_000, 0));
            for d in 1..=10 {
                a.d_next_o_id.insert((w, d), 3001);
                a.orders.insert((w, d), (3000, 30_123));
                a.new_orders.insert((w, d), (3000, 2101, 900));
                a.order_lines.insert((w, d), 30_123);
            }
        }
        a
    }

    #[test]
    fn a_fresh_load_satisfies_every_condition() {
        let r = evaluate(&loaded(2));
        assert!(r.is_ok(), "{r}");
        assert_eq!(r.conditions.len(), 4);
        assert_eq!(r.conditions[0].checked, 2);
        assert_eq!(r.conditions[1].checked, 20);
        // Same amount at different scales is equal.
        let text = r.to_string();
        assert_eq!(text.lines().count(), 4);
        assert!(text.lines().all(|l| l.contains(": ok")), "{text}");
    }

    #[test]
    fn a_district_ytd_off_by_one_violates_3_3_2_1() {
        let mut a = loaded(2);
        a.d_ytd_sum.insert(2, Decimal::new(30_000_001, 2));
        let r = evaluate(&a);
        assert!(r.violated("3.3.2.1") && !r.is_ok());
        let v = &r.conditions[0].violations;
        assert_eq!(v.len(), 1);
        assert_eq!((v[0].warehouse, v[0].district), (2, None));
        assert!(v[0].detail.contains("300000.01"), "{}", v[0].detail);
        assert!(r
            .to_string()
            .contains("3.3.2.1 W_YTD = sum(D_YTD): VIOLATED"));
    }

    #[test]
    fn order_ids_out_of_step_violate_3_3_2_2() {
        let mut a = loaded(1);
        a.d_next_o_id.insert((1, 4), 3002);
        let r = evaluate(&a);
        assert!(r.violated("3.3.2.2"));
        assert_eq!(r.conditions[1].violations[0].district, Some(4));
        // A district whose new orders were all delivered only compares
        // with max(O_ID).
        let mut a = loaded(1);
        a.new_orders.remove(&(1, 5));
        assert!(evaluate(&a).is_ok());
        a.orders.insert((1, 5), (2999, 30_123));
        assert!(evaluate(&a).violated("3.3.2.2"));
    }

    #[test]
    fn a_gap_in_new_orders_violates_3_3_2_3() {
        let mut a = loaded(1);
        a.new_orders.insert((1, 1), (3000, 2101, 899));
        let r = evaluate(&a);
        assert!(r.violated("3.3.2.3") && !r.violated("3.3.2.2"));
    }

    #[test]
    fn a_line_count_mismatch_violates_3_3_2_4() {
        let mut a = loaded(1);
        a.orders.insert((1, 7), (3000, 30_124));
        let r = evaluate(&a);
        assert!(r.violated("3.3.2.4"));
        assert!(!r.violated("3.3.2.1") && !r.violated("3.3.2.3"));
        let text = r.to_string();
        assert!(
            text.contains(
                "warehouse 1 district 7: sum(O_OL_CNT) = 30124 but count(ORDER_LINE) = 30123"
            ),
            "{text}"
        );
        // Order lines of a district without orders also count.
        let mut a = loaded(1);
        a.order_lines.insert((1, 11), 5);
        assert!(evaluate(&a).violated("3.3.2.4"));
    }
}
