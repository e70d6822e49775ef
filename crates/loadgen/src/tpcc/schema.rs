//! The TPC-C schema (clause 1.3), in plain types both Concord and
//! PostgreSQL accept: INT, NUMERIC(p,s), VARCHAR(n), CHAR(n), TIMESTAMP.
//! No foreign keys. HISTORY has no primary key, as in the spec (Concord
//! gives such a table a hidden row id).
//!
//! Primary keys lead with the warehouse id, so `SPLIT AT VALUES (w)` cuts a
//! table between warehouses and a warehouse's rows stay together.
//!
//! Besides the nine tables, `tpcc_meta` keeps what `init` chose and `run`
//! must reuse: the number of warehouses and the NURand constants C.

/// The tables, in creation order (and the order dropped in reverse).
pub const TABLES: [&str; 10] = [
    "warehouse",
    "district",
    "customer",
    "history",
    "new_order",
    "orders",
    "order_line",
    "item",
    "stock",
    "tpcc_meta",
];

/// CREATE statements, tables then indexes.
pub const CREATE: [&str; 12] = [
    "CREATE TABLE warehouse (
        w_id INT NOT NULL,
        w_name VARCHAR(10),
        w_street_1 VARCHAR(20),
        w_street_2 VARCHAR(20),
        w_city VARCHAR(20),
        w_state CHAR(2),
        w_zip CHAR(9),
        w_tax NUMERIC(4,4),
        w_ytd NUMERIC(12,2),
        PRIMARY KEY (w_id))",
    "CREATE TABLE district (
        d_id INT NOT NULL,
        d_w_id INT NOT NULL,
        d_name VARCHAR(10),
        d_street_1 VARCHAR(20),
        d_street_2 VARCHAR(20),
        d_city VARCHAR(20),
        d_state CHAR(2),
        d_zip CHAR(9),
        d_tax NUMERIC(4,4),
        d_ytd NUMERIC(12,2),
        d_next_o_id INT,
        PRIMARY KEY (d_w_id, d_id))",
    "CREATE TABLE customer (
        c_id INT NOT NULL,
        c_d_id INT NOT NULL,
        c_w_id INT NOT NULL,
        c_first VARCHAR(16),
        c_middle CHAR(2),
        c_last VARCHAR(16),
        c_street_1 VARCHAR(20),
        c_street_2 VARCHAR(20),
        c_city VARCHAR(20),
        c_state CHAR(2),
        c_zip CHAR(9),
        c_phone CHAR(16),
        c_since TIMESTAMP,
        c_credit CHAR(2),
        c_credit_lim NUMERIC(12,2),
        c_discount NUMERIC(4,4),
        c_balance NUMERIC(12,2),
        c_ytd_payment NUMERIC(12,2),
        c_payment_cnt INT,
        c_delivery_cnt INT,
        c_data VARCHAR(500),
        PRIMARY KEY (c_w_id, c_d_id, c_id))",
    "CREATE TABLE history (
        h_c_id INT,
        h_c_d_id INT,
        h_c_w_id INT,
        h_d_id INT,
        h_w_id INT,
        h_date TIMESTAMP,
        h_amount NUMERIC(6,2),
        h_data VARCHAR(24))",
    "CREATE TABLE new_order (
        no_o_id INT NOT NULL,
        no_d_id INT NOT NULL,
        no_w_id INT NOT NULL,
        PRIMARY KEY (no_w_id, no_d_id, no_o_id))",
    "CREATE TABLE orders (
        o_id INT NOT NULL,
        o_d_id INT NOT NULL,
        o_w_id INT NOT NULL,
        o_c_id INT,
        o_entry_d TIMESTAMP,
        o_carrier_id INT,
        o_ol_cnt INT,
        o_all_local INT,
        PRIMARY KEY (o_w_id, o_d_id, o_id))",
    "CREATE TABLE order_line (
        ol_o_id INT NOT NULL,
        ol_d_id INT NOT NULL,
        ol_w_id INT NOT NULL,
        ol_number INT NOT NULL,
        ol_i_id INT,
        ol_supply_w_id INT,
        ol_delivery_d TIMESTAMP,
        ol_quantity INT,
        ol_amount NUMERIC(6,2),
        ol_dist_info CHAR(24),
        PRIMARY KEY (ol_w_id, ol_d_id, ol_o_id, ol_number))",
    "CREATE TABLE item (
        i_id INT NOT NULL,
        i_im_id INT,
        i_name VARCHAR(24),
        i_price NUMERIC(5,2),
        i_data VARCHAR(50),
        PRIMARY KEY (i_id))",
    "CREATE TABLE stock (
        s_i_id INT NOT NULL,
        s_w_id INT NOT NULL,
        s_quantity INT,
        s_dist_01 CHAR(24),
        s_dist_02 CHAR(24),
        s_dist_03 CHAR(24),
        s_dist_04 CHAR(24),
        s_dist_05 CHAR(24),
        s_dist_06 CHAR(24),
        s_dist_07 CHAR(24),
        s_dist_08 CHAR(24),
        s_dist_09 CHAR(24),
        s_dist_10 CHAR(24),
        s_ytd INT,
        s_order_cnt INT,
        s_remote_cnt INT,
        s_data VARCHAR(50),
        PRIMARY KEY (s_w_id, s_i_id))",
    "CREATE TABLE tpcc_meta (
        id INT NOT NULL,
        warehouses INT NOT NULL,
        c_last INT NOT NULL,
        c_id INT NOT NULL,
        ol_i_id INT NOT NULL,
        PRIMARY KEY (id))",
    // Payment and order-status by last name.
    "CREATE INDEX customer_idx ON customer (c_w_id, c_d_id, c_last, c_first)",
    // Order-status: the customer's latest order.
    "CREATE INDEX orders_idx ON orders (o_w_id, o_d_id, o_c_id, o_id)",
];

/// Tables split at each warehouse id on Concord (those whose primary key
/// leads with it; HISTORY has none).
pub const SPLIT_BY_WAREHOUSE: [&str; 6] = [
    "district",
    "customer",
    "new_order",
    "orders",
    "order_line",
    "stock",
];

/// `ALTER TABLE t SPLIT AT VALUES (a), (b), ...` statements cutting
/// `table` before each of `points`, at most 100 points a statement.
pub fn split_statements(table: &str, points: &[i64]) -> Vec<String> {
    points
        .chunks(100)
        .map(|chunk| {
            let values = chunk
                .iter()
                .map(|p| format!("({p})"))
                .collect::<Vec<_>>()
                .join(", ");
            format!("ALTER TABLE {table} SPLIT AT VALUES {values}")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_has_the_nine_tables_the_indexes_and_no_foreign_keys() {
        for t in &TABLES {
            assert!(
                CREATE
                    .iter()
                    .any(|c| c.starts_with(&format!("CREATE TABLE {t} ("))),
                "{t}"
            );
        }
        assert!(CREATE
            .iter()
            .all(|c| !c.to_uppercase().contains("REFERENCES")));
        assert!(CREATE
            .contains(&"CREATE INDEX customer_idx ON customer (c_w_id, c_d_id, c_last, c_first)"));
        assert!(
            CREATE.contains(&"CREATE INDEX orders_idx ON orders (o_w_id, o_d_id, o_c_id, o_id)")
        );
        let history = CREATE.iter().find(|c| c.contains("TABLE history")).unwrap();
        assert!(!history.contains("PRIMARY KEY"));
    }

    #[test]
    fn splits_are_chunked_value_lists() {
        let points: Vec<i64> = (2..=250).collect();
        let s = split_statements("stock", &points);
        assert_eq!(s.len(), 3);
        assert!(s[0].starts_with("ALTER TABLE stock SPLIT AT VALUES (2), (3), "));
        assert!(s[2].ends_with("(250)"));
        assert!(split_statements("stock", &[]).is_empty());
    }
}
