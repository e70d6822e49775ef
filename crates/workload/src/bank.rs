//! The bank checker: money is conserved and no balance goes negative.
//!
//! The bank workload keeps a fixed number of accounts whose balances start
//! at a known total. Writers move money between two accounts in one
//! transaction (read both balances, subtract from one, add to the other,
//! refusing to overdraw); readers read *every* balance in one transaction.
//! Under snapshot isolation or anything stronger, each such read sees a
//! state between whole transfers, so:
//!
//! ```text
//!   snapshot i = [(account, balance), ...]        read in one transaction
//!   Σ balance  == initial total                   else  WrongTotal
//!   balance    >= 0 for every account             else  NegativeBalance
//!   each account appears at most once             else  DuplicateAccount
//! ```
//!
//! A torn read (half of a transfer visible), a lost update (two transfers
//! from one balance both applied to the same old value) or a write skew that
//! overdraws an account shows up as a wrong total or a negative balance. The
//! checker only needs the snapshots of committed read transactions; reads
//! whose transaction aborted or whose outcome is unknown should be left out
//! by the caller, since they promise nothing.
//!
//! Sums are computed in `i128`, so no snapshot, however wrong, can overflow
//! the checker.
//!
//! # Out of scope
//! - That acknowledged transfers are reflected in the final state. Transfers
//!   conserve the total, so a lost transfer leaves every snapshot valid; it
//!   can only be found by replaying the acknowledged transfers against the
//!   initial balances and comparing with a final read after the cluster has
//!   healed. That check belongs with the generator, which knows the transfers,
//!   and is not done yet.
//! - Which accounts a snapshot should contain. A missing account with a
//!   non-zero balance shows up as a wrong total; a missing account holding
//!   zero does not.

use std::collections::HashSet;
use std::fmt;

/// Identifies an account.
pub type AccountId = u64;

/// The balances read in one committed transaction.
pub type Snapshot = Vec<(AccountId, i64)>;

/// One violation found in one snapshot. `snapshot` is the index of the
/// snapshot in the slice given to [`check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Anomaly {
    /// The balances of the snapshot do not add up to the initial total.
    WrongTotal {
        snapshot: usize,
        expected: i64,
        actual: i128,
    },
    /// An account was read with a negative balance.
    NegativeBalance {
        snapshot: usize,
        account: AccountId,
        balance: i64,
    },
    /// The same account appears twice in one snapshot, which makes the sum
    /// meaningless.
    DuplicateAccount { snapshot: usize, account: AccountId },
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Anomaly::WrongTotal {
                snapshot,
                expected,
                actual,
            } => write!(
                f,
                "snapshot {snapshot}: balances sum to {actual}, expected {expected} \
                 (money {} by {})",
                if *actual > i128::from(*expected) {
                    "created"
                } else {
                    "destroyed"
                },
                (actual - i128::from(*expected)).abs()
            ),
            Anomaly::NegativeBalance {
                snapshot,
                account,
                balance,
            } => write!(
                f,
                "snapshot {snapshot}: account {account} has negative balance {balance}"
            ),
            Anomaly::DuplicateAccount { snapshot, account } => write!(
                f,
                "snapshot {snapshot}: account {account} was read more than once"
            ),
        }
    }
}

/// What the bank checker found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Every violation, in snapshot order.
    pub anomalies: Vec<Anomaly>,
    /// How many snapshots were checked.
    pub snapshots_checked: usize,
}

impl Report {
    /// True if no snapshot violated an invariant.
    pub fn is_valid(&self) -> bool {
        self.anomalies.is_empty()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_valid() {
            return write!(f, "bank: {} snapshots, valid", self.snapshots_checked);
        }
        write!(
            f,
            "bank: {} snapshots, {} anomalies",
            self.snapshots_checked,
            self.anomalies.len()
        )?;
        for anomaly in &self.anomalies {
            write!(f, "\n  {anomaly}")?;
        }
        Ok(())
    }
}

/// Checks every snapshot against the initial `total`: the balances must add
/// up to it, none may be negative and no account may appear twice.
pub fn check(total: i64, snapshots: &[Snapshot]) -> Report {
    let mut anomalies = Vec::new();
    let mut seen = HashSet::new();
    for (index, snapshot) in snapshots.iter().enumerate() {
        seen.clear();
        let mut sum: i128 = 0;
        for &(account, balance) in snapshot {
            if !seen.insert(account) {
                anomalies.push(Anomaly::DuplicateAccount {
                    snapshot: index,
                    account,
                });
            }
            if balance < 0 {
                anomalies.push(Anomaly::NegativeBalance {
                    snapshot: index,
                    account,
                    balance,
                });
            }
            sum += i128::from(balance);
        }
        if sum != i128::from(total) {
            anomalies.push(Anomaly::WrongTotal {
                snapshot: index,
                expected: total,
                actual: sum,
            });
        }
    }
    Report {
        anomalies,
        snapshots_checked: snapshots.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conserved_snapshots_are_valid() {
        let snapshots = vec![
            vec![(1, 50), (2, 50)],
            vec![(1, 20), (2, 80)],
            vec![(2, 0), (1, 100)],
        ];
        let report = check(100, &snapshots);
        assert!(report.is_valid(), "{report}");
        assert_eq!(report.snapshots_checked, 3);
        assert_eq!(report.to_string(), "bank: 3 snapshots, valid");
    }

    #[test]
    fn no_snapshots_is_valid() {
        assert!(check(100, &[]).is_valid());
    }

    #[test]
    fn torn_transfer_changes_total() {
        // 30 left account 1 but has not arrived in account 2.
        let snapshots = vec![vec![(1, 50), (2, 50)], vec![(1, 20), (2, 50)]];
        let report = check(100, &snapshots);
        assert_eq!(
            report.anomalies,
            vec![Anomaly::WrongTotal {
                snapshot: 1,
                expected: 100,
                actual: 70
            }]
        );
        assert!(report.to_string().contains("money destroyed by 30"));
    }

    #[test]
    fn lost_update_creates_money() {
        let report = check(100, &[vec![(1, 80), (2, 50)]]);
        assert!(!report.is_valid());
        assert!(report.anomalies[0]
            .to_string()
            .contains("money created by 30"));
    }

    #[test]
    fn negative_balance_is_reported_even_if_total_holds() {
        let report = check(100, &[vec![(1, -10), (2, 110)]]);
        assert_eq!(
            report.anomalies,
            vec![Anomaly::NegativeBalance {
                snapshot: 0,
                account: 1,
                balance: -10
            }]
        );
    }

    #[test]
    fn duplicate_account_is_reported() {
        let report = check(100, &[vec![(1, 50), (1, 50)]]);
        assert_eq!(
            report.anomalies,
            vec![Anomaly::DuplicateAccount {
                snapshot: 0,
                account: 1
            }]
        );
    }

    #[test]
    fn extreme_balances_do_not_overflow() {
        let report = check(0, &[vec![(1, i64::MAX), (2, i64::MAX), (3, i64::MAX)]]);
        assert_eq!(
            report.anomalies,
            vec![Anomaly::WrongTotal {
                snapshot: 0,
                expected: 0,
                actual: 3 * i128::from(i64::MAX)
            }]
        );
    }

    #[test]
    fn every_bad_snapshot_is_reported_in_order() {
        let snapshots = vec![
            vec![(1, 60), (2, 40)],
            vec![(1, 61), (2, 40)],
            vec![(1, 60), (2, 40)],
            vec![(1, 110), (2, -10)],
            vec![(1, 59), (2, 40)],
        ];
        let report = check(100, &snapshots);
        let bad: Vec<usize> = report
            .anomalies
            .iter()
            .map(|a| match a {
                Anomaly::WrongTotal { snapshot, .. }
                | Anomaly::NegativeBalance { snapshot, .. }
                | Anomaly::DuplicateAccount { snapshot, .. } => *snapshot,
            })
            .collect();
        assert_eq!(bad, vec![1, 3, 4]);
        assert_eq!(report.to_string().lines().count(), 4);
    }
}
