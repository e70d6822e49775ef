//! The initial TPC-C population (clause 4.3.3.1), cut into units that
//! loader connections take from a shared queue:
//!
//! ```text
//!   items 1-10000, 10001-20000, ...            10 units of 10,000 ITEM rows
//!   warehouse w                                1 WAREHOUSE + 10 DISTRICT rows
//!   stock of w, items 1-10000, ...             10 units of 10,000 STOCK rows
//!   customers of (w, d)                        3,000 CUSTOMER + 3,000 HISTORY rows
//!   orders of (w, d)                           3,000 ORDERS, ~30,000 ORDER_LINE,
//!                                              900 NEW_ORDER rows
//! ```
//!
//! Every value follows the clause's distributions: last names from the
//! syllables (the first 1,000 customers of a district in order, the rest by
//! NURand(255, 0, 999) with the load's C), 10% "BC" credit, 10% of item and
//! stock data with "ORIGINAL", orders over a random permutation of the
//! customers, 5-15 lines each, the last 900 undelivered and in NEW_ORDER.

use std::sync::Arc;
use std::time::SystemTime;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::conn::Session;
use crate::error::Result;
use crate::load::{timestamp_text, LoadMethod, Progress, TableSink};
use crate::random::{astring, data_with_original, last_name, nstring, nurand, zip, NuRandC};

pub const ITEMS: i32 = 100_000;
pub const DISTRICTS: i32 = 10;
pub const CUSTOMERS: i32 = 3_000;
pub const ORDERS: i32 = 3_000;
/// Orders 2101..=3000 of each district are undelivered.
pub const FIRST_UNDELIVERED: i32 = 2_101;
const CHUNK: i32 = 10_000;

/// One piece of the load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Items { from: i32, to: i32 },
    Warehouse { w: i32 },
    Stock { w: i32, from: i32, to: i32 },
    Customers { w: i32, d: i32 },
    Orders { w: i32, d: i32 },
}

/// Every unit of a load of `warehouses`, big ones interleaved so that the
/// parallel loaders finish together.
pub fn units(warehouses: i32) -> Vec<Unit> {
    let mut v = Vec::new();
    for from in (1..=ITEMS).step_by(CHUNK as usize) {
        v.push(Unit::Items {
            from,
            to: (from + CHUNK - 1).min(ITEMS),
        });
    }
    for w in 1..=warehouses {
        v.push(Unit::Warehouse { w });
        for d in 1..=DISTRICTS {
            v.push(Unit::Orders { w, d });
            v.push(Unit::Customers { w, d });
        }
        for from in (1..=ITEMS).step_by(CHUNK as usize) {
            v.push(Unit::Stock {
                w,
                from,
                to: (from + CHUNK - 1).min(ITEMS),
            });
        }
    }
    v
}

/// Rows a load of `warehouses` writes (order lines estimated at 10 per
/// order), for the progress bar.
pub fn expected_rows(warehouses: i32) -> u64 {
    let w = warehouses as u64;
    ITEMS as u64
        + w * (1
            + DISTRICTS as u64
            + ITEMS as u64
            + DISTRICTS as u64 * (2 * CUSTOMERS as u64 + ORDERS as u64 * 11 + 900))
}

/// What every unit needs.
pub struct LoadCtx {
    pub method: LoadMethod,
    pub batch: usize,
    pub c: NuRandC,
    /// The load's timestamp, as text.
    pub now: String,
    pub progress: Arc<Progress>,
}

impl LoadCtx {
    pub fn new(method: LoadMethod, batch: usize, c: NuRandC, progress: Arc<Progress>) -> LoadCtx {
        LoadCtx {
            method,
            batch,
            c,
            now: timestamp_text(SystemTime::now()),
            progress,
        }
    }

    fn sink<'a>(
        &'a self,
        s: &'a Session,
        table: &'static str,
        cols: &'static str,
    ) -> TableSink<'a> {
        TableSink::new(s, table, cols, self.method, self.batch, &self.progress)
    }
}

/// Loads one unit.
pub async fn load_unit(unit: Unit, session: Session, ctx: Arc<LoadCtx>) -> Result<Session> {
    let mut rng = StdRng::from_rng(&mut rand::rng());
    match unit {
        Unit::Items { from, to } => items(&session, &ctx, &mut rng, from, to).await?,
        Unit::Warehouse { w } => warehouse(&session, &ctx, &mut rng, w).await?,
        Unit::Stock { w, from, to } => stock(&session, &ctx, &mut rng, w, from, to).await?,
        Unit::Customers { w, d } => customers(&session, &ctx, &mut rng, w, d).await?,
        Unit::Orders { w, d } => orders(&session, &ctx, &mut rng, w, d).await?,
    }
    Ok(session)
}

async fn items(s: &Session, ctx: &LoadCtx, rng: &mut StdRng, from: i32, to: i32) -> Result<()> {
    let mut sink = ctx.sink(s, "item", "(i_id, i_im_id, i_name, i_price, i_data)");
    for i in from..=to {
        sink.row()
            .int(i.into())
            .int(rng.random_range(1..=10_000))
            .text(&astring(rng, 14, 24))
            .num(rng.random_range(100..=10_000), 2)
            .text(&data_with_original(rng));
        sink.end_row().await?;
    }
    sink.finish().await
}

async fn warehouse(s: &Session, ctx: &LoadCtx, rng: &mut StdRng, w: i32) -> Result<()> {
    let mut sink = ctx.sink(
        s,
        "warehouse",
        "(w_id, w_name, w_street_1, w_street_2, w_city, w_state, w_zip, w_tax, w_ytd)",
    );
    sink.row()
        .int(w.into())
        .text(&astring(rng, 6, 10))
        .text(&astring(rng, 10, 20))
        .text(&astring(rng, 10, 20))
        .text(&astring(rng, 10, 20))
        .text(&astring(rng, 2, 2))
        .text(&zip(rng))
        .num(rng.random_range(0..=2000), 4)
        .num(30_000_000, 2);
    sink.end_row().await?;
    sink.finish().await?;

    let mut sink = ctx.sink(
        s,
        "district",
        "(d_id, d_w_id, d_name, d_street_1, d_street_2, d_city, d_state, d_zip, d_tax, d_ytd, d_next_o_id)",
    );
    for d in 1..=DISTRICTS {
        sink.row()
            .int(d.into())
            .int(w.into())
            .text(&astring(rng, 6, 10))
            .text(&astring(rng, 10, 20))
            .text(&astring(rng, 10, 20))
            .text(&astring(rng, 10, 20))
            .text(&astring(rng, 2, 2))
            .text(&zip(rng))
            .num(rng.random_range(0..=2000), 4)
            .num(3_000_000, 2)
            .int((ORDERS + 1).into());
        sink.end_row().await?;
    }
    sink.finish().await
}

async fn stock(
    s: &Session,
    ctx: &LoadCtx,
    rng: &mut StdRng,
    w: i32,
    from: i32,
    to: i32,
) -> Result<()> {
    let mut sink = ctx.sink(
        s,
        "stock",
        "(s_i_id, s_w_id, s_quantity, s_dist_01, s_dist_02, s_dist_03, s_dist_04, s_dist_05, \
         s_dist_06, s_dist_07, s_dist_08, s_dist_09, s_dist_10, s_ytd, s_order_cnt, s_remote_cnt, s_data)",
    );
    for i in from..=to {
        let row = sink.row();
        row.int(i.into())
            .int(w.into())
            .int(rng.random_range(10..=100));
        for _ in 0..10 {
            row.text(&astring(rng, 24, 24));
        }
        row.int(0).int(0).int(0).text(&data_with_original(rng));
        sink.end_row().await?;
    }
    sink.finish().await
}

/// The last name of customer `c` at load time (clause 4.3.3.1).
pub fn load_last_name(rng: &mut impl Rng, c: i32, c_last: i32) -> String {
    if c <= 1000 {
        last_name(c - 1)
    } else {
        last_name(nurand(rng, 255, 0, 999, c_last))
    }
}

async fn customers(s: &Session, ctx: &LoadCtx, rng: &mut StdRng, w: i32, d: i32) -> Result<()> {
    let mut sink = ctx.sink(
        s,
        "customer",
        "(c_id, c_d_id, c_w_id, c_first, c_middle, c_last, c_street_1, c_street_2, c_city, c_state, \
         c_zip, c_phone, c_since, c_credit, c_credit_lim, c_discount, c_balance, c_ytd_payment, \
         c_payment_cnt, c_delivery_cnt, c_data)",
    );
    for c in 1..=CUSTOMERS {
        let last = load_last_name(rng, c, ctx.c.c_last);
        let credit = if rng.random_range(0..10) == 0 {
            "BC"
        } else {
            "GC"
        };
        sink.row()
            .int(c.into())
            .int(d.into())
            .int(w.into())
            .text(&astring(rng, 8, 16))
            .text("OE")
            .text(&last)
            .text(&astring(rng, 10, 20))
            .text(&astring(rng, 10, 20))
            .text(&astring(rng, 10, 20))
            .text(&astring(rng, 2, 2))
            .text(&zip(rng))
            .text(&nstring(rng, 16, 16))
            .text(&ctx.now)
            .text(credit)
            .num(5_000_000, 2)
            .num(rng.random_range(0..=5000), 4)
            .num(-1000, 2)
            .num(1000, 2)
            .int(1)
            .int(0)
            .text(&astring(rng, 300, 500));
        sink.end_row().await?;
    }
    sink.finish().await?;

    let mut sink = ctx.sink(
        s,
        "history",
        "(h_c_id, h_c_d_id, h_c_w_id, h_d_id, h_w_id, h_date, h_amount, h_data)",
    );
    for c in 1..=CUSTOMERS {
        sink.row()
            .int(c.into())
            .int(d.into())
            .int(w.into())
            .int(d.into())
            .int(w.into())
            .text(&ctx.now)
            .num(1000, 2)
            .text(&astring(rng, 12, 24));
        sink.end_row().await?;
    }
    sink.finish().await
}

async fn orders(s: &Session, ctx: &LoadCtx, rng: &mut StdRng, w: i32, d: i32) -> Result<()> {
    let mut customers: Vec<i32> = (1..=CUSTOMERS).collect();
    customers.shuffle(rng);
    let mut orders = ctx.sink(
        s,
        "orders",
        "(o_id, o_d_id, o_w_id, o_c_id, o_entry_d, o_carrier_id, o_ol_cnt, o_all_local)",
    );
    let mut lines = ctx.sink(
        s,
        "order_line",
        "(ol_o_id, ol_d_id, ol_w_id, ol_number, ol_i_id, ol_supply_w_id, ol_delivery_d, \
         ol_quantity, ol_amount, ol_dist_info)",
    );
    let mut new_orders = ctx.sink(s, "new_order", "(no_o_id, no_d_id, no_w_id)");
    for o in 1..=ORDERS {
        let delivered = o < FIRST_UNDELIVERED;
        let ol_cnt: i32 = rng.random_range(5..=15);
        let row = orders.row();
        row.int(o.into())
            .int(d.into())
            .int(w.into())
            .int(customers[(o - 1) as usize].into())
            .text(&ctx.now);
        if delivered {
            row.int(rng.random_range(1..=10));
        } else {
            row.null();
        }
        row.int(ol_cnt.into()).int(1);
        orders.end_row().await?;
        for n in 1..=ol_cnt {
            let row = lines.row();
            row.int(o.into())
                .int(d.into())
                .int(w.into())
                .int(n.into())
                .int(rng.random_range(1..=ITEMS).into())
                .int(w.into());
            if delivered {
                row.text(&ctx.now).int(5).num(0, 2);
            } else {
                row.null().int(5).num(rng.random_range(1..=999_999), 2);
            }
            row.text(&astring(rng, 24, 24));
            lines.end_row().await?;
        }
        if !delivered {
            new_orders.row().int(o.into()).int(d.into()).int(w.into());
            new_orders.end_row().await?;
        }
    }
    orders.finish().await?;
    lines.finish().await?;
    new_orders.finish().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_cover_every_row_once() {
        let u = units(3);
        let items: i32 = u
            .iter()
            .map(|u| match u {
                Unit::Items { from, to } => to - from + 1,
                _ => 0,
            })
            .sum();
        assert_eq!(items, ITEMS);
        for w in 1..=3 {
            let stock: i32 = u
                .iter()
                .map(|u| match u {
                    Unit::Stock { w: sw, from, to } if *sw == w => to - from + 1,
                    _ => 0,
                })
                .sum();
            assert_eq!(stock, ITEMS);
            for d in 1..=DISTRICTS {
                assert_eq!(
                    u.iter().filter(|x| **x == Unit::Customers { w, d }).count(),
                    1
                );
                assert_eq!(u.iter().filter(|x| **x == Unit::Orders { w, d }).count(), 1);
            }
            assert_eq!(u.iter().filter(|x| **x == Unit::Warehouse { w }).count(), 1);
        }
        // One warehouse: 100k items + 100k stock + 30k customers + 30k
        // history + 30k orders + ~300k lines + 9k new orders + 11.
        assert_eq!(
            expected_rows(1),
            100_000 + 100_000 + 30_000 * 2 + 330_000 + 9_000 + 11
        );
    }

    #[test]
    fn first_thousand_customers_take_every_last_name_in_order() {
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(load_last_name(&mut rng, 1, 0), "BARBARBAR");
        assert_eq!(load_last_name(&mut rng, 372, 0), "PRICALLYOUGHT");
        assert_eq!(load_last_name(&mut rng, 1000, 0), "EINGEINGEING");
        let names: std::collections::HashSet<String> =
            (1..=1000).map(|c| load_last_name(&mut rng, c, 0)).collect();
        assert_eq!(names.len(), 1000);
        // Later ones are drawn with NURand, still from the syllables.
        for c in 1001..=3000 {
            let n = load_last_name(&mut rng, c, 123);
            assert!(names.contains(&n), "{n}");
        }
    }
}
