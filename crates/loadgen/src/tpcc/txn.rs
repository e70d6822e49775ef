//! The five TPC-C transactions (clause 2.4 to 2.8) and the terminal that
//! chooses and runs them.
//!
//! A terminal has a home warehouse and, for stock-level, a district. It
//! deals transactions from a deck ([`Deck`]), generates their inputs as
//! clause 2.x.1 says, and runs each in an explicit transaction with
//! prepared statements (prepared once per connection, see
//! [`Session::prepare`]). Inputs are generated once per business
//! transaction, so a retry after a conflict runs the same order, payment,
//! etc.
//!
//! Rows that are read and then updated are read with `SELECT ... FOR
//! UPDATE` (the district in new-order, stock rows, the customer in
//! payment, the oldest new-order and its order in delivery), or updated
//! first and read after (warehouse and district in payment), so that
//! PostgreSQL's READ COMMITTED does not lose updates and a serializable
//! server sees the write intent early. Stock rows of one order are locked
//! in (warehouse, item) order, which keeps two new-orders from deadlocking
//! on each other.
//!
//! New-order reads its items in one statement (`i_id IN (…)`), locks its
//! stock rows with one statement per supply warehouse, and inserts its
//! order lines with one multi-row INSERT, as other TPC-C kits do: the same
//! rows read and written as line by line, in a third of the round trips.

use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use tokio_postgres::types::{ToSql, Type};

use super::load::{CUSTOMERS, DISTRICTS, ITEMS};
use crate::conn::{Session, Sql};
use crate::error::{Error, Result};
use crate::random::{last_name, nurand, think_time, Deck, NuRandC, TxnKind};
use crate::runner::Terminal;
use crate::stats::Outcome;
use crate::values::{get, get_decimal, get_i32};

const I4: Type = Type::INT4;
const NUM: Type = Type::NUMERIC;
const TS: Type = Type::TIMESTAMP;
const VC: Type = Type::VARCHAR;
const CH: Type = Type::BPCHAR;

// New-order (clause 2.4.2).
const NO_WAREHOUSE: Sql = Sql::new("SELECT w_tax FROM warehouse WHERE w_id = $1", &[I4]);
const NO_DISTRICT: Sql = Sql::new(
    "SELECT d_tax, d_next_o_id FROM district WHERE d_w_id = $1 AND d_id = $2 FOR UPDATE",
    &[I4, I4],
);
const NO_DISTRICT_UPDATE: Sql = Sql::new(
    "UPDATE district SET d_next_o_id = d_next_o_id + 1 WHERE d_w_id = $1 AND d_id = $2",
    &[I4, I4],
);
const NO_CUSTOMER: Sql = Sql::new(
    "SELECT c_discount, c_last, c_credit FROM customer WHERE c_w_id = $1 AND c_d_id = $2 AND c_id = $3",
    &[I4, I4, I4],
);
const NO_ORDER: Sql = Sql::new(
    "INSERT INTO orders (o_id, o_d_id, o_w_id, o_c_id, o_entry_d, o_ol_cnt, o_all_local) \
     VALUES ($1, $2, $3, $4, $5, $6, $7)",
    &[I4, I4, I4, I4, TS, I4, I4],
);
const NO_NEW_ORDER: Sql = Sql::new(
    "INSERT INTO new_order (no_o_id, no_d_id, no_w_id) VALUES ($1, $2, $3)",
    &[I4, I4, I4],
);
/// The most order lines an order has (clause 2.4.1.3).
const MAX_LINES: usize = 15;

/// `$from, $from+1, …` (`n` of them).
fn placeholders(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// An order's items in one statement, one text per number of items: one
/// round trip (one batched read on the server) instead of one per line.
static NO_ITEMS: LazyLock<Vec<String>> = LazyLock::new(|| {
    (0..=MAX_LINES)
        .map(|n| {
            format!(
                "SELECT i_id, i_price, i_name, i_data FROM item WHERE i_id IN ({})",
                placeholders(1, n)
            )
        })
        .collect()
});
/// The stock rows of an order's lines from one supply warehouse, locked in
/// one statement, by district (it reads that district's S_DIST_xx) and
/// number of items; `ORDER BY` makes PostgreSQL lock them in item order.
static NO_STOCKS: LazyLock<Vec<Vec<String>>> = LazyLock::new(|| {
    (1..=DISTRICTS)
        .map(|d| {
            (0..=MAX_LINES)
                .map(|n| {
                    format!(
                        "SELECT s_i_id, s_quantity, s_data, s_dist_{d:02} FROM stock \
                         WHERE s_w_id = $1 AND s_i_id IN ({}) ORDER BY s_i_id FOR UPDATE",
                        placeholders(2, n)
                    )
                })
                .collect()
        })
        .collect()
});
/// Parameter types of the statements above and of [`NO_STOCK_UPDATES`],
/// all INT4: a prefix as long as the statement's parameters.
static I4S: [Type; 2 + 3 * MAX_LINES] = [const { Type::INT4 }; 2 + 3 * MAX_LINES];
/// The stock rows of an order's lines from one supply warehouse, updated
/// in one statement (one round trip instead of one per line, as
/// CockroachDB's TPC-C workload does), by number of items: `$1` the supply
/// warehouse, `$2` 1 if it is remote, then per item its id, its new
/// quantity and the quantity ordered.
static NO_STOCK_UPDATES: LazyLock<Vec<String>> = LazyLock::new(|| {
    (0..=MAX_LINES)
        .map(|n| {
            let case = |field: usize| -> String {
                let arms: String = (0..n)
                    .map(|j| format!(" WHEN ${} THEN ${}", 3 + 3 * j, 3 + 3 * j + field))
                    .collect();
                format!("CASE s_i_id{arms} END")
            };
            let ids: Vec<String> = (0..n).map(|j| format!("${}", 3 + 3 * j)).collect();
            format!(
                "UPDATE stock SET s_quantity = {}, s_ytd = s_ytd + {}, \
                 s_order_cnt = s_order_cnt + 1, s_remote_cnt = s_remote_cnt + $2 \
                 WHERE s_w_id = $1 AND s_i_id IN ({})",
                case(1),
                case(2),
                ids.join(", ")
            )
        })
        .collect()
});
/// An order's lines in one INSERT, one text per number of lines.
static NO_ORDER_LINES: LazyLock<Vec<String>> = LazyLock::new(|| {
    (0..=MAX_LINES)
        .map(|n| {
            let rows: Vec<String> = (0..n)
                .map(|r| format!("({})", placeholders(1 + 9 * r, 9)))
                .collect();
            format!(
                "INSERT INTO order_line (ol_o_id, ol_d_id, ol_w_id, ol_number, ol_i_id, \
                 ol_supply_w_id, ol_quantity, ol_amount, ol_dist_info) VALUES {}",
                rows.join(", ")
            )
        })
        .collect()
});
const ORDER_LINE_TYPES: [Type; 9] = [I4, I4, I4, I4, I4, I4, I4, NUM, CH];
static NO_ORDER_LINE_TYPES: LazyLock<Vec<Type>> = LazyLock::new(|| {
    ORDER_LINE_TYPES
        .iter()
        .cycle()
        .take(9 * MAX_LINES)
        .cloned()
        .collect()
});

// Payment (clause 2.5.2).
const P_WAREHOUSE_UPDATE: Sql = Sql::new(
    "UPDATE warehouse SET w_ytd = w_ytd + $2 WHERE w_id = $1",
    &[I4, NUM],
);
const P_WAREHOUSE: Sql = Sql::new(
    "SELECT w_name, w_street_1, w_street_2, w_city, w_state, w_zip FROM warehouse WHERE w_id = $1",
    &[I4],
);
const P_DISTRICT_UPDATE: Sql = Sql::new(
    "UPDATE district SET d_ytd = d_ytd + $3 WHERE d_w_id = $1 AND d_id = $2",
    &[I4, I4, NUM],
);
const P_DISTRICT: Sql = Sql::new(
    "SELECT d_name, d_street_1, d_street_2, d_city, d_state, d_zip FROM district \
     WHERE d_w_id = $1 AND d_id = $2",
    &[I4, I4],
);
const P_CUSTOMER_BY_LAST: Sql = Sql::new(
    "SELECT c_id FROM customer WHERE c_w_id = $1 AND c_d_id = $2 AND c_last = $3 ORDER BY c_first",
    &[I4, I4, VC],
);
const P_CUSTOMER: Sql = Sql::new(
    "SELECT c_first, c_middle, c_last, c_street_1, c_street_2, c_city, c_state, c_zip, c_phone, \
     c_since, c_credit, c_credit_lim, c_discount, c_balance, c_data FROM customer \
     WHERE c_w_id = $1 AND c_d_id = $2 AND c_id = $3 FOR UPDATE",
    &[I4, I4, I4],
);
const P_CUSTOMER_UPDATE: Sql = Sql::new(
    "UPDATE customer SET c_balance = c_balance - $4, c_ytd_payment = c_ytd_payment + $4, \
     c_payment_cnt = c_payment_cnt + 1 WHERE c_w_id = $1 AND c_d_id = $2 AND c_id = $3",
    &[I4, I4, I4, NUM],
);
const P_CUSTOMER_UPDATE_BC: Sql = Sql::new(
    "UPDATE customer SET c_balance = c_balance - $4, c_ytd_payment = c_ytd_payment + $4, \
     c_payment_cnt = c_payment_cnt + 1, c_data = $5 WHERE c_w_id = $1 AND c_d_id = $2 AND c_id = $3",
    &[I4, I4, I4, NUM, VC],
);
const P_HISTORY: Sql = Sql::new(
    "INSERT INTO history (h_c_id, h_c_d_id, h_c_w_id, h_d_id, h_w_id, h_date, h_amount, h_data) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    &[I4, I4, I4, I4, I4, TS, NUM, VC],
);

// Order-status (clause 2.6.2).
const OS_CUSTOMER_BY_LAST: Sql = Sql::new(
    "SELECT c_id, c_balance, c_first, c_middle, c_last FROM customer \
     WHERE c_w_id = $1 AND c_d_id = $2 AND c_last = $3 ORDER BY c_first",
    &[I4, I4, VC],
);
const OS_CUSTOMER: Sql = Sql::new(
    "SELECT c_balance, c_first, c_middle, c_last FROM customer \
     WHERE c_w_id = $1 AND c_d_id = $2 AND c_id = $3",
    &[I4, I4, I4],
);
const OS_ORDER: Sql = Sql::new(
    "SELECT o_id, o_entry_d, o_carrier_id FROM orders \
     WHERE o_w_id = $1 AND o_d_id = $2 AND o_c_id = $3 ORDER BY o_id DESC LIMIT 1",
    &[I4, I4, I4],
);
const OS_LINES: Sql = Sql::new(
    "SELECT ol_i_id, ol_supply_w_id, ol_quantity, ol_amount, ol_delivery_d FROM order_line \
     WHERE ol_w_id = $1 AND ol_d_id = $2 AND ol_o_id = $3",
    &[I4, I4, I4],
);

// Delivery (clause 2.7.4).
const D_NEW_ORDER: Sql = Sql::new(
    "SELECT no_o_id FROM new_order WHERE no_w_id = $1 AND no_d_id = $2 \
     ORDER BY no_o_id LIMIT 1 FOR UPDATE",
    &[I4, I4],
);
const D_NEW_ORDER_DELETE: Sql = Sql::new(
    "DELETE FROM new_order WHERE no_w_id = $1 AND no_d_id = $2 AND no_o_id = $3",
    &[I4, I4, I4],
);
const D_ORDER: Sql = Sql::new(
    "SELECT o_c_id FROM orders WHERE o_w_id = $1 AND o_d_id = $2 AND o_id = $3 FOR UPDATE",
    &[I4, I4, I4],
);
const D_ORDER_UPDATE: Sql = Sql::new(
    "UPDATE orders SET o_carrier_id = $4 WHERE o_w_id = $1 AND o_d_id = $2 AND o_id = $3",
    &[I4, I4, I4, I4],
);
const D_LINES_UPDATE: Sql = Sql::new(
    "UPDATE order_line SET ol_delivery_d = $4 WHERE ol_w_id = $1 AND ol_d_id = $2 AND ol_o_id = $3",
    &[I4, I4, I4, TS],
);
const D_LINES_SUM: Sql = Sql::new(
    "SELECT sum(ol_amount) FROM order_line WHERE ol_w_id = $1 AND ol_d_id = $2 AND ol_o_id = $3",
    &[I4, I4, I4],
);
const D_CUSTOMER_UPDATE: Sql = Sql::new(
    "UPDATE customer SET c_balance = c_balance + $4, c_delivery_cnt = c_delivery_cnt + 1 \
     WHERE c_w_id = $1 AND c_d_id = $2 AND c_id = $3",
    &[I4, I4, I4, NUM],
);

// Stock-level (clause 2.8.2).
const SL_DISTRICT: Sql = Sql::new(
    "SELECT d_next_o_id FROM district WHERE d_w_id = $1 AND d_id = $2",
    &[I4, I4],
);
const SL_COUNT: Sql = Sql::new(
    "SELECT count(DISTINCT s_i_id) FROM order_line JOIN stock \
     ON s_w_id = ol_w_id AND s_i_id = ol_i_id \
     WHERE ol_w_id = $1 AND ol_d_id = $2 AND ol_o_id < $3 AND ol_o_id >= $4 AND s_quantity < $5",
    &[I4, I4, I4, I4, I4],
);

/// Every statement of the five transactions, for the report of SQL
/// features used.
pub fn statements() -> Vec<&'static str> {
    let mut v = vec![
        NO_WAREHOUSE.text,
        NO_DISTRICT.text,
        NO_DISTRICT_UPDATE.text,
        NO_CUSTOMER.text,
        NO_ORDER.text,
        NO_NEW_ORDER.text,
        NO_ITEMS[MAX_LINES].as_str(),
        NO_STOCKS[0][MAX_LINES].as_str(),
        NO_STOCK_UPDATES[MAX_LINES].as_str(),
        NO_ORDER_LINES[MAX_LINES].as_str(),
        P_WAREHOUSE_UPDATE.text,
        P_WAREHOUSE.text,
        P_DISTRICT_UPDATE.text,
        P_DISTRICT.text,
        P_CUSTOMER_BY_LAST.text,
        P_CUSTOMER.text,
        P_CUSTOMER_UPDATE.text,
        P_CUSTOMER_UPDATE_BC.text,
        P_HISTORY.text,
        OS_CUSTOMER_BY_LAST.text,
        OS_CUSTOMER.text,
        OS_ORDER.text,
        OS_LINES.text,
        D_NEW_ORDER.text,
        D_NEW_ORDER_DELETE.text,
        D_ORDER.text,
        D_ORDER_UPDATE.text,
        D_LINES_UPDATE.text,
        D_LINES_SUM.text,
        D_CUSTOMER_UPDATE.text,
        SL_DISTRICT.text,
        SL_COUNT.text,
    ];
    v.dedup();
    v
}

/// How a customer is named (clause 2.5.1.2 and 2.6.1.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CustomerSel {
    Id(i32),
    Last(String),
}

/// One order line's input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineInput {
    pub i_id: i32,
    pub supply_w: i32,
    pub quantity: i32,
}

/// A transaction's inputs, generated once, reused by retries.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    NewOrder {
        d: i32,
        c: i32,
        lines: Vec<LineInput>,
    },
    Payment {
        d: i32,
        c_w: i32,
        c_d: i32,
        customer: CustomerSel,
        amount: Decimal,
    },
    OrderStatus {
        d: i32,
        customer: CustomerSel,
    },
    Delivery {
        carrier: i32,
    },
    StockLevel {
        threshold: i32,
    },
}

/// Input generation for a terminal's home warehouse (clause 2.x.1).
pub struct InputGen {
    pub w: i32,
    pub warehouses: i32,
    pub c: NuRandC,
}

impl InputGen {
    /// A warehouse other than the home one, uniformly (or the home one when
    /// there is only one).
    fn remote_warehouse(&self, rng: &mut impl Rng) -> i32 {
        if self.warehouses <= 1 {
            return self.w;
        }
        let r = rng.random_range(1..self.warehouses);
        if r >= self.w {
            r + 1
        } else {
            r
        }
    }

    fn customer(&self, rng: &mut impl Rng) -> CustomerSel {
        if rng.random_range(1..=100) <= 60 {
            CustomerSel::Last(last_name(nurand(rng, 255, 0, 999, self.c.c_last)))
        } else {
            CustomerSel::Id(nurand(rng, 1023, 1, CUSTOMERS, self.c.c_id))
        }
    }

    pub fn new_order(&self, rng: &mut impl Rng) -> Input {
        let d = rng.random_range(1..=DISTRICTS);
        let c = nurand(rng, 1023, 1, CUSTOMERS, self.c.c_id);
        let ol_cnt = rng.random_range(5..=15);
        let rollback = rng.random_range(1..=100) == 1;
        let mut lines: Vec<LineInput> = Vec::with_capacity(ol_cnt);
        while lines.len() < ol_cnt {
            let i_id = nurand(rng, 8191, 1, ITEMS, self.c.ol_i_id);
            // Distinct items: one stock row is not ordered twice in an order.
            if lines.iter().any(|l| l.i_id == i_id) {
                continue;
            }
            let supply_w = if self.warehouses > 1 && rng.random_range(1..=100) == 1 {
                self.remote_warehouse(rng)
            } else {
                self.w
            };
            lines.push(LineInput {
                i_id,
                supply_w,
                quantity: rng.random_range(1..=10),
            });
        }
        // Lock stock rows in one global order (no deadlock between two
        // new-orders); the order-line numbers follow this order.
        lines.sort_by_key(|l| (l.i_id, l.supply_w));
        if rollback {
            // The unused item is the last line (clause 2.4.1.4).
            if let Some(last) = lines.last_mut() {
                last.i_id = ITEMS + 1;
            }
        }
        Input::NewOrder { d, c, lines }
    }

    pub fn payment(&self, rng: &mut impl Rng) -> Input {
        let d = rng.random_range(1..=DISTRICTS);
        let (c_w, c_d) = if self.warehouses <= 1 || rng.random_range(1..=100) <= 85 {
            (self.w, d)
        } else {
            (self.remote_warehouse(rng), rng.random_range(1..=DISTRICTS))
        };
        Input::Payment {
            d,
            c_w,
            c_d,
            customer: self.customer(rng),
            amount: Decimal::new(rng.random_range(100..=500_000), 2),
        }
    }

    pub fn order_status(&self, rng: &mut impl Rng) -> Input {
        Input::OrderStatus {
            d: rng.random_range(1..=DISTRICTS),
            customer: self.customer(rng),
        }
    }

    pub fn delivery(&self, rng: &mut impl Rng) -> Input {
        Input::Delivery {
            carrier: rng.random_range(1..=10),
        }
    }

    pub fn stock_level(&self, rng: &mut impl Rng) -> Input {
        Input::StockLevel {
            threshold: rng.random_range(10..=20),
        }
    }

    pub fn generate(&self, kind: TxnKind, rng: &mut impl Rng) -> Input {
        match kind {
            TxnKind::NewOrder => self.new_order(rng),
            TxnKind::Payment => self.payment(rng),
            TxnKind::OrderStatus => self.order_status(rng),
            TxnKind::Delivery => self.delivery(rng),
            TxnKind::StockLevel => self.stock_level(rng),
        }
    }
}

/// A TPC-C terminal (or a flat-out worker when `wait` is off).
pub struct TpccTerminal {
    rng: StdRng,
    gen: InputGen,
    /// The district whose stock levels this terminal asks about.
    sl_district: i32,
    wait: bool,
    deck: Deck,
    current: Option<Input>,
}

impl TpccTerminal {
    pub fn new(w: i32, sl_district: i32, warehouses: i32, c: NuRandC, wait: bool) -> TpccTerminal {
        TpccTerminal {
            rng: StdRng::from_rng(&mut rand::rng()),
            gen: InputGen { w, warehouses, c },
            sl_district,
            wait,
            deck: Deck::new(),
            current: None,
        }
    }

    async fn execute_current(&mut self, s: &mut Session) -> Result<Outcome> {
        let w = self.gen.w;
        let input = match &self.current {
            Some(i) => i.clone(),
            None => return Err(Error::Usage("no transaction chosen".into())),
        };
        s.batch("BEGIN").await?;
        let outcome = match input {
            Input::NewOrder { d, c, lines } => new_order(s, w, d, c, &lines).await?,
            Input::Payment {
                d,
                c_w,
                c_d,
                customer,
                amount,
            } => payment(s, w, d, c_w, c_d, &customer, amount).await?,
            Input::OrderStatus { d, customer } => order_status(s, w, d, &customer).await?,
            Input::Delivery { carrier } => delivery(s, w, carrier).await?,
            Input::StockLevel { threshold } => {
                stock_level(s, w, self.sl_district, threshold).await?
            }
        };
        match outcome {
            Outcome::Committed => s.batch("COMMIT").await?,
            Outcome::RolledBack => s.batch("ROLLBACK").await?,
        }
        Ok(outcome)
    }
}

impl Terminal for TpccTerminal {
    fn next(&mut self) -> usize {
        let kind = self.deck.deal(&mut self.rng);
        self.current = Some(self.gen.generate(kind, &mut self.rng));
        kind as usize
    }

    fn keying_time(&mut self, kind: usize) -> Duration {
        match TxnKind::ALL.get(kind) {
            Some(k) if self.wait => k.keying_time(),
            _ => Duration::ZERO,
        }
    }

    fn think_time(&mut self, kind: usize) -> Duration {
        match TxnKind::ALL.get(kind) {
            Some(k) if self.wait => think_time(&mut self.rng, k.mean_think_time()),
            _ => Duration::ZERO,
        }
    }

    fn execute<'a>(&'a mut self, session: &'a mut Session) -> BoxFuture<'a, Result<Outcome>> {
        Box::pin(self.execute_current(session))
    }
}

/// Clause 2.4.2.2. Returns `RolledBack` for the 1% with an unused item
/// (the caller rolls back).
async fn new_order(
    s: &mut Session,
    w: i32,
    d: i32,
    c: i32,
    lines: &[LineInput],
) -> Result<Outcome> {
    let row = s.query_one(NO_WAREHOUSE, &[&w]).await?;
    let w_tax = get_decimal(&row, 0, NO_WAREHOUSE.text)?;
    let row = s.query_one(NO_DISTRICT, &[&w, &d]).await?;
    let d_tax = get_decimal(&row, 0, NO_DISTRICT.text)?;
    let o_id = get_i32(&row, 1, NO_DISTRICT.text)?;
    s.execute(NO_DISTRICT_UPDATE, &[&w, &d]).await?;
    let row = s.query_one(NO_CUSTOMER, &[&w, &d, &c]).await?;
    let c_discount = get_decimal(&row, 0, NO_CUSTOMER.text)?;
    let all_local = i32::from(lines.iter().all(|l| l.supply_w == w));
    let ol_cnt = lines.len() as i32;
    let now = SystemTime::now();
    s.execute(NO_ORDER, &[&o_id, &d, &w, &c, &now, &ol_cnt, &all_local])
        .await?;
    s.execute(NO_NEW_ORDER, &[&o_id, &d, &w]).await?;
    // The items, in one statement: the unused item of a rolled-back order
    // is missing from the answer.
    let n = lines.len();
    if n > MAX_LINES {
        return Err(Error::unexpected(
            NO_ITEMS[MAX_LINES].as_str(),
            format!("an order of {n} lines; clause 2.4.1.3 allows at most {MAX_LINES}"),
        ));
    }
    let item_sql = Sql {
        text: NO_ITEMS[n].as_str(),
        types: &I4S[..n],
    };
    let ids: Vec<i32> = lines.iter().map(|l| l.i_id).collect();
    let params: Vec<&(dyn ToSql + Sync)> = ids.iter().map(|i| i as &(dyn ToSql + Sync)).collect();
    let mut items: HashMap<i32, (Decimal, String)> = HashMap::with_capacity(n);
    for row in s.query(item_sql, &params).await? {
        let id = get_i32(&row, 0, item_sql.text)?;
        let price = get_decimal(&row, 1, item_sql.text)?;
        let i_data: String = get(&row, 3, item_sql.text)?;
        items.insert(id, (price, i_data));
    }
    if lines.iter().any(|l| !items.contains_key(&l.i_id)) {
        return Ok(Outcome::RolledBack);
    }
    // The stock rows, locked one supply warehouse at a time in warehouse
    // order, each in item order: one global order, no deadlock between
    // two new-orders.
    let mut supply: Vec<i32> = lines.iter().map(|l| l.supply_w).collect();
    supply.sort_unstable();
    supply.dedup();
    let mut stock: HashMap<(i32, i32), (i32, String, String)> = HashMap::with_capacity(n);
    for sw in supply {
        let ids: Vec<i32> = lines
            .iter()
            .filter(|l| l.supply_w == sw)
            .map(|l| l.i_id)
            .collect();
        let stock_sql = Sql {
            text: NO_STOCKS[(d - 1) as usize][ids.len()].as_str(),
            types: &I4S[..ids.len() + 1],
        };
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&sw];
        params.extend(ids.iter().map(|i| i as &(dyn ToSql + Sync)));
        for row in s.query(stock_sql, &params).await? {
            let id = get_i32(&row, 0, stock_sql.text)?;
            let quantity = get_i32(&row, 1, stock_sql.text)?;
            let s_data: String = get(&row, 2, stock_sql.text)?;
            let dist_info: String = get(&row, 3, stock_sql.text)?;
            stock.insert((sw, id), (quantity, s_data, dist_info));
        }
    }
    let mut total = Decimal::ZERO;
    // The order lines' values, inserted in one statement after the loop.
    let mut rows: Vec<(i32, Decimal, String)> = Vec::with_capacity(n);
    // Per supply warehouse: (item, new quantity, quantity ordered).
    let mut updates: BTreeMap<i32, Vec<(i32, i32, i32)>> = BTreeMap::new();
    for line in lines {
        let (price, i_data) = &items[&line.i_id];
        let Some((s_quantity, s_data, dist_info)) = stock.get(&(line.supply_w, line.i_id)) else {
            return Err(Error::unexpected(
                NO_STOCKS[0][1].as_str(),
                format!(
                    "no stock row for item {} in warehouse {}",
                    line.i_id, line.supply_w
                ),
            ));
        };
        let new_quantity = if *s_quantity >= line.quantity + 10 {
            s_quantity - line.quantity
        } else {
            s_quantity - line.quantity + 91
        };
        updates
            .entry(line.supply_w)
            .or_default()
            .push((line.i_id, new_quantity, line.quantity));
        let amount = price * Decimal::from(line.quantity);
        // Brand/generic (clause 2.4.2.2): computed as the spec asks, shown
        // nowhere.
        let _brand = i_data.contains("ORIGINAL") && s_data.contains("ORIGINAL");
        total += amount;
        rows.push((line.quantity, amount, dist_info.clone()));
    }
    for (sw, items) in &updates {
        let remote = i32::from(*sw != w);
        let sql = Sql {
            text: NO_STOCK_UPDATES[items.len()].as_str(),
            types: &I4S[..2 + 3 * items.len()],
        };
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![sw, &remote];
        for (i_id, new_quantity, quantity) in items {
            params.extend([i_id as &(dyn ToSql + Sync), new_quantity, quantity]);
        }
        let changed = s.execute(sql, &params).await?;
        if changed != items.len() as u64 {
            return Err(Error::unexpected(
                sql.text,
                format!(
                    "updated {changed} stock rows of warehouse {sw}, expected {}",
                    items.len()
                ),
            ));
        }
    }
    let numbers: Vec<i32> = (1..=n as i32).collect();
    let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(9 * n);
    for ((line, (quantity, amount, dist_info)), number) in lines.iter().zip(&rows).zip(&numbers) {
        params.extend([
            &o_id as &(dyn ToSql + Sync),
            &d,
            &w,
            number,
            &line.i_id,
            &line.supply_w,
            quantity,
            amount,
            dist_info,
        ]);
    }
    let lines_sql = Sql {
        text: NO_ORDER_LINES[n].as_str(),
        types: &NO_ORDER_LINE_TYPES[..9 * n],
    };
    s.execute(lines_sql, &params).await?;
    let _total = total * (Decimal::ONE - c_discount) * (Decimal::ONE + w_tax + d_tax);
    Ok(Outcome::Committed)
}

/// The customer id named by `sel` in (w, d): by id, or the one at position
/// ceil(n/2) of those with that last name ordered by first name.
async fn customer_id(
    s: &mut Session,
    sql: Sql<'_>,
    w: i32,
    d: i32,
    sel: &CustomerSel,
) -> Result<i32> {
    match sel {
        CustomerSel::Id(c) => Ok(*c),
        CustomerSel::Last(last) => {
            let rows = s.query(sql, &[&w, &d, last]).await?;
            if rows.is_empty() {
                return Err(Error::unexpected(
                    sql.text,
                    format!("no customer named {last} in warehouse {w} district {d}"),
                ));
            }
            get_i32(&rows[(rows.len() - 1) / 2], 0, sql.text)
        }
    }
}

/// Clause 2.5.2.2.
async fn payment(
    s: &mut Session,
    w: i32,
    d: i32,
    c_w: i32,
    c_d: i32,
    sel: &CustomerSel,
    amount: Decimal,
) -> Result<Outcome> {
    s.execute(P_WAREHOUSE_UPDATE, &[&w, &amount]).await?;
    let row = s.query_one(P_WAREHOUSE, &[&w]).await?;
    let w_name: String = get(&row, 0, P_WAREHOUSE.text)?;
    s.execute(P_DISTRICT_UPDATE, &[&w, &d, &amount]).await?;
    let row = s.query_one(P_DISTRICT, &[&w, &d]).await?;
    let d_name: String = get(&row, 0, P_DISTRICT.text)?;
    let c = customer_id(s, P_CUSTOMER_BY_LAST, c_w, c_d, sel).await?;
    let row = s.query_one(P_CUSTOMER, &[&c_w, &c_d, &c]).await?;
    let credit: String = get(&row, 10, P_CUSTOMER.text)?;
    if credit.trim() == "BC" {
        let old: String = get(&row, 14, P_CUSTOMER.text)?;
        let mut data = format!("{c} {c_d} {c_w} {d} {w} {amount} | {old}");
        if let Some((cut, _)) = data.char_indices().nth(500) {
            data.truncate(cut);
        }
        s.execute(P_CUSTOMER_UPDATE_BC, &[&c_w, &c_d, &c, &amount, &data])
            .await?;
    } else {
        s.execute(P_CUSTOMER_UPDATE, &[&c_w, &c_d, &c, &amount])
            .await?;
    }
    let h_data = format!("{w_name}    {d_name}");
    let now = SystemTime::now();
    s.execute(P_HISTORY, &[&c, &c_d, &c_w, &d, &w, &now, &amount, &h_data])
        .await?;
    Ok(Outcome::Committed)
}

/// Clause 2.6.2.2.
async fn order_status(s: &mut Session, w: i32, d: i32, sel: &CustomerSel) -> Result<Outcome> {
    let c = match sel {
        CustomerSel::Id(c) => {
            s.query_one(OS_CUSTOMER, &[&w, &d, c]).await?;
            *c
        }
        sel => customer_id(s, OS_CUSTOMER_BY_LAST, w, d, sel).await?,
    };
    let Some(order) = s.query_opt(OS_ORDER, &[&w, &d, &c]).await? else {
        return Err(Error::unexpected(
            OS_ORDER.text,
            format!("customer {c} of warehouse {w} district {d} has no order"),
        ));
    };
    let o_id = get_i32(&order, 0, OS_ORDER.text)?;
    s.query(OS_LINES, &[&w, &d, &o_id]).await?;
    Ok(Outcome::Committed)
}

/// Clause 2.7.4.2: all ten districts in one transaction. A district
/// without an undelivered order is skipped.
async fn delivery(s: &mut Session, w: i32, carrier: i32) -> Result<Outcome> {
    let now = SystemTime::now();
    for d in 1..=DISTRICTS {
        let Some(row) = s.query_opt(D_NEW_ORDER, &[&w, &d]).await? else {
            continue;
        };
        let o_id = get_i32(&row, 0, D_NEW_ORDER.text)?;
        if s.execute(D_NEW_ORDER_DELETE, &[&w, &d, &o_id]).await? == 0 {
            // Delivered by a concurrent delivery meanwhile (possible under
            // READ COMMITTED): skip, as for an empty district.
            continue;
        }
        let row = s.query_one(D_ORDER, &[&w, &d, &o_id]).await?;
        let c = get_i32(&row, 0, D_ORDER.text)?;
        s.execute(D_ORDER_UPDATE, &[&w, &d, &o_id, &carrier])
            .await?;
        s.execute(D_LINES_UPDATE, &[&w, &d, &o_id, &now]).await?;
        let row = s.query_one(D_LINES_SUM, &[&w, &d, &o_id]).await?;
        let total: Option<crate::values::Num> = get(&row, 0, D_LINES_SUM.text)?;
        let total = total.map_or(Decimal::ZERO, |n| n.0);
        s.execute(D_CUSTOMER_UPDATE, &[&w, &d, &c, &total]).await?;
    }
    Ok(Outcome::Committed)
}

/// Clause 2.8.2.2.
async fn stock_level(s: &mut Session, w: i32, d: i32, threshold: i32) -> Result<Outcome> {
    let row = s.query_one(SL_DISTRICT, &[&w, &d]).await?;
    let next = get_i32(&row, 0, SL_DISTRICT.text)?;
    let low = next - 20;
    let row = s
        .query_one(SL_COUNT, &[&w, &d, &next, &low, &threshold])
        .await?;
    let _count = crate::values::get_i64(&row, 0, SL_COUNT.text)?;
    Ok(Outcome::Committed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gen(w: i32, warehouses: i32) -> InputGen {
        InputGen {
            w,
            warehouses,
            c: NuRandC {
                c_last: 10,
                c_id: 20,
                ol_i_id: 30,
            },
        }
    }

    #[test]
    fn new_orders_follow_clause_2_4_1() {
        let mut rng = StdRng::seed_from_u64(7);
        let g = gen(3, 10);
        let (mut rolled_back, mut remote_lines, mut lines_total) = (0, 0, 0);
        let n = 20_000;
        for _ in 0..n {
            let Input::NewOrder { d, c, lines } = g.new_order(&mut rng) else {
                panic!("not a new-order")
            };
            assert!((1..=10).contains(&d) && (1..=3000).contains(&c));
            assert!((5..=15).contains(&lines.len()));
            // Sorted by item, distinct.
            assert!(lines
                .windows(2)
                .all(|p| p[0].i_id < p[1].i_id || p[1].i_id == ITEMS + 1));
            for (k, l) in lines.iter().enumerate() {
                assert!((1..=10).contains(&l.quantity));
                assert!((1..=10).contains(&l.supply_w));
                if l.i_id == ITEMS + 1 {
                    // Only ever the last line.
                    assert_eq!(k, lines.len() - 1);
                    rolled_back += 1;
                } else {
                    assert!((1..=ITEMS).contains(&l.i_id));
                }
                remote_lines += usize::from(l.supply_w != 3);
                lines_total += 1;
            }
        }
        // 1% rolled back, 1% of lines remote.
        assert!((140..=260).contains(&rolled_back), "{rolled_back}");
        let remote = remote_lines as f64 / lines_total as f64;
        assert!((0.007..0.013).contains(&remote), "{remote}");
        // With one warehouse nothing is remote.
        let g1 = gen(1, 1);
        for _ in 0..1000 {
            let Input::NewOrder { lines, .. } = g1.new_order(&mut rng) else {
                panic!()
            };
            assert!(lines.iter().all(|l| l.supply_w == 1));
        }
    }

    #[test]
    fn payments_are_15_percent_remote_and_60_percent_by_last_name() {
        let mut rng = StdRng::seed_from_u64(8);
        let g = gen(2, 5);
        let (mut remote, mut by_name) = (0, 0);
        let n = 20_000;
        for _ in 0..n {
            let Input::Payment {
                d,
                c_w,
                c_d,
                customer,
                amount,
            } = g.payment(&mut rng)
            else {
                panic!()
            };
            assert!((1..=10).contains(&d) && (1..=10).contains(&c_d) && (1..=5).contains(&c_w));
            assert!(amount >= Decimal::new(100, 2) && amount <= Decimal::new(500_000, 2));
            if c_w != 2 {
                remote += 1;
            } else {
                assert_eq!(c_d, d);
            }
            match customer {
                CustomerSel::Last(name) => {
                    by_name += 1;
                    assert!(name.len() >= 9);
                }
                CustomerSel::Id(c) => assert!((1..=3000).contains(&c)),
            }
        }
        let remote = remote as f64 / n as f64;
        let by_name = by_name as f64 / n as f64;
        assert!((0.13..0.17).contains(&remote), "{remote}");
        assert!((0.58..0.62).contains(&by_name), "{by_name}");
        // A single warehouse pays at home.
        let g1 = gen(1, 1);
        for _ in 0..1000 {
            let Input::Payment { c_w, .. } = g1.payment(&mut rng) else {
                panic!()
            };
            assert_eq!(c_w, 1);
        }
    }

    #[test]
    fn stock_level_thresholds_and_delivery_carriers_are_in_range() {
        let mut rng = StdRng::seed_from_u64(9);
        let g = gen(1, 1);
        for _ in 0..1000 {
            let Input::StockLevel { threshold } = g.stock_level(&mut rng) else {
                panic!()
            };
            assert!((10..=20).contains(&threshold));
            let Input::Delivery { carrier } = g.delivery(&mut rng) else {
                panic!()
            };
            assert!((1..=10).contains(&carrier));
        }
    }

    #[test]
    fn terminals_deal_the_mix_and_wait_only_with_wait() {
        let c = NuRandC {
            c_last: 0,
            c_id: 0,
            ol_i_id: 0,
        };
        let mut t = TpccTerminal::new(1, 1, 1, c, true);
        let mut counts = [0; 5];
        for _ in 0..1000 {
            let k = t.next();
            counts[k] += 1;
            assert_eq!(t.keying_time(k), TxnKind::ALL[k].keying_time());
            assert!(t.think_time(k) <= TxnKind::ALL[k].mean_think_time() * 10);
        }
        assert_eq!(counts, [450, 430, 40, 40, 40]);
        let mut flat = TpccTerminal::new(1, 1, 1, c, false);
        let k = flat.next();
        assert_eq!(flat.keying_time(k), Duration::ZERO);
        assert_eq!(flat.think_time(k), Duration::ZERO);
    }

    #[test]
    fn remote_warehouses_are_never_home() {
        let mut rng = StdRng::seed_from_u64(10);
        for home in 1..=4 {
            let g = gen(home, 4);
            for _ in 0..200 {
                let r = g.remote_warehouse(&mut rng);
                assert!(r != home && (1..=4).contains(&r));
            }
        }
    }
}
