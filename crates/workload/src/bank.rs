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
//! Snapshots cannot see a *lost* transfer: transfers conserve the total, so
//! a transfer that was acknowledged and then vanished leaves every snapshot
//! valid. [`check_ledger`] finds those: each transfer also inserts a row into
//! a transfer log in the same transaction, and after the cluster has healed
//! the final balances and the log are read back:
//!
//! ```text
//!   acknowledged transfer  ∉ log                 else  LostTransfer
//!   log row ∈ acknowledged ∪ unknown-outcome      else  PhantomTransfer
//!   final balance == initial + Σ in − Σ out (log)  else  BalanceMismatch
//! ```
//!
//! # Out of scope
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

/// A transfer as the transfer log recorded it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transfer {
    pub id: u64,
    pub from: AccountId,
    pub to: AccountId,
    pub amount: i64,
}

/// A violation of durability found by [`check_ledger`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LedgerAnomaly {
    /// Acknowledged as committed, but not in the log: a lost update.
    LostTransfer { id: u64 },
    /// In the log, but never acknowledged nor in doubt: it committed although
    /// the client was told it failed (or never asked for it).
    PhantomTransfer { id: u64 },
    /// The final balance is not what the log says it should be.
    BalanceMismatch {
        account: AccountId,
        expected: i64,
        actual: Option<i64>,
    },
}

impl fmt::Display for LedgerAnomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LedgerAnomaly::LostTransfer { id } => {
                write!(
                    f,
                    "transfer {id} was acknowledged but is not in the log (lost)"
                )
            }
            LedgerAnomaly::PhantomTransfer { id } => write!(
                f,
                "transfer {id} is in the log but its client was told it failed"
            ),
            LedgerAnomaly::BalanceMismatch {
                account,
                expected,
                actual,
            } => write!(
                f,
                "account {account}: final balance {}, the log says {expected}",
                actual.map_or_else(|| "missing".to_string(), |a| a.to_string())
            ),
        }
    }
}

/// Checks the final state against what clients were told: every
/// `acknowledged` transfer is in `log`, every logged transfer was
/// acknowledged or `unknown` (outcome in doubt), and every final balance is
/// its `initial` balance plus the logged transfers in, minus those out.
pub fn check_ledger(
    initial: &std::collections::BTreeMap<AccountId, i64>,
    acknowledged: &std::collections::BTreeSet<u64>,
    unknown: &std::collections::BTreeSet<u64>,
    log: &[Transfer],
    final_balances: &std::collections::BTreeMap<AccountId, i64>,
) -> Vec<LedgerAnomaly> {
    let mut anomalies = Vec::new();
    let logged: HashSet<u64> = log.iter().map(|t| t.id).collect();
    for id in acknowledged {
        if !logged.contains(id) {
            anomalies.push(LedgerAnomaly::LostTransfer { id: *id });
        }
    }
    let mut expected = initial.clone();
    for t in log {
        if !acknowledged.contains(&t.id) && !unknown.contains(&t.id) {
            anomalies.push(LedgerAnomaly::PhantomTransfer { id: t.id });
        }
        *expected.entry(t.from).or_insert(0) -= t.amount;
        *expected.entry(t.to).or_insert(0) += t.amount;
    }
    for (account, want) in &expected {
        let actual = final_balances.get(account).copied();
        if actual != Some(*want) {
            anomalies.push(LedgerAnomaly::BalanceMismatch {
                account: *account,
                expected: *want,
                actual,
            });
        }
    }
    anomalies
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    #[test]
    fn ledger_matching_the_log_is_valid() {
        let initial = BTreeMap::from([(1, 100), (2, 100)]);
        let log = [Transfer {
            id: 7,
            from: 1,
            to: 2,
            amount: 30,
        }];
        let acked = BTreeSet::from([7]);
        let fin = BTreeMap::from([(1, 70), (2, 130)]);
        assert!(check_ledger(&initial, &acked, &BTreeSet::new(), &log, &fin).is_empty());
        // An in-doubt transfer may or may not have committed.
        let in_doubt = BTreeSet::from([8]);
        assert!(check_ledger(&initial, &acked, &in_doubt, &log, &fin).is_empty());
    }

    #[test]
    fn lost_update_is_reported() {
        // Transfer 8 was acknowledged, but its effect and its log row are
        // gone: every snapshot would still conserve money.
        let initial = BTreeMap::from([(1, 100), (2, 100)]);
        let log = [Transfer {
            id: 7,
            from: 1,
            to: 2,
            amount: 30,
        }];
        let acked = BTreeSet::from([7, 8]);
        let fin = BTreeMap::from([(1, 70), (2, 130)]);
        let found = check_ledger(&initial, &acked, &BTreeSet::new(), &log, &fin);
        assert_eq!(found, vec![LedgerAnomaly::LostTransfer { id: 8 }]);
        assert!(found[0].to_string().contains("lost"));
    }

    #[test]
    fn balances_that_disagree_with_the_log_are_reported() {
        // The log row survived but one half of the transfer did not.
        let initial = BTreeMap::from([(1, 100), (2, 100)]);
        let log = [Transfer {
            id: 7,
            from: 1,
            to: 2,
            amount: 30,
        }];
        let acked = BTreeSet::from([7]);
        let fin = BTreeMap::from([(1, 100), (2, 130)]);
        let found = check_ledger(&initial, &acked, &BTreeSet::new(), &log, &fin);
        assert_eq!(
            found,
            vec![LedgerAnomaly::BalanceMismatch {
                account: 1,
                expected: 70,
                actual: Some(100)
            }]
        );
    }

    #[test]
    fn a_transfer_that_failed_but_committed_is_reported() {
        let initial = BTreeMap::from([(1, 100), (2, 100)]);
        let log = [Transfer {
            id: 9,
            from: 2,
            to: 1,
            amount: 5,
        }];
        let fin = BTreeMap::from([(1, 105), (2, 95)]);
        let found = check_ledger(&initial, &BTreeSet::new(), &BTreeSet::new(), &log, &fin);
        assert_eq!(found, vec![LedgerAnomaly::PhantomTransfer { id: 9 }]);
    }

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
