//! Forwards raft-rs's `slog` records to `tracing`, so a node has one log.

use std::fmt::Write as _;

use slog::{Drain, Key, OwnedKVList, Record, KV};

struct TracingDrain;

struct KvFormatter(String);

impl slog::Serializer for KvFormatter {
    fn emit_arguments(&mut self, key: Key, val: &std::fmt::Arguments) -> slog::Result {
        let _ = write!(self.0, " {key}={val}");
        Ok(())
    }
}

impl Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record, values: &OwnedKVList) -> Result<(), slog::Never> {
        // raft-rs logs at debug level on hot paths with messages as values
        // (formatted through protobuf's text format): format only what
        // the subscriber keeps.
        let enabled = match record.level() {
            slog::Level::Critical | slog::Level::Error => {
                tracing::enabled!(target: "raft", tracing::Level::ERROR)
            }
            slog::Level::Warning => tracing::enabled!(target: "raft", tracing::Level::WARN),
            slog::Level::Info => tracing::enabled!(target: "raft", tracing::Level::INFO),
            slog::Level::Debug => tracing::enabled!(target: "raft", tracing::Level::DEBUG),
            slog::Level::Trace => tracing::enabled!(target: "raft", tracing::Level::TRACE),
        };
        if !enabled {
            return Ok(());
        }
        let mut kv = KvFormatter(String::new());
        let _ = record.kv().serialize(record, &mut kv);
        let _ = values.serialize(record, &mut kv);
        let msg = record.msg();
        match record.level() {
            slog::Level::Critical | slog::Level::Error => {
                tracing::error!(target: "raft", "{msg}{}", kv.0)
            }
            slog::Level::Warning => tracing::warn!(target: "raft", "{msg}{}", kv.0),
            slog::Level::Info => tracing::info!(target: "raft", "{msg}{}", kv.0),
            slog::Level::Debug => tracing::debug!(target: "raft", "{msg}{}", kv.0),
            slog::Level::Trace => tracing::trace!(target: "raft", "{msg}{}", kv.0),
        }
        Ok(())
    }
}

/// A raft-rs logger for one replica.
pub fn raft_logger(node_id: u64, range_id: u64) -> slog::Logger {
    slog::Logger::root(
        TracingDrain.fuse(),
        slog::o!("node" => node_id, "range" => range_id),
    )
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    static FORMATTED: AtomicUsize = AtomicUsize::new(0);

    struct Counted;

    impl std::fmt::Debug for Counted {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            FORMATTED.fetch_add(1, Ordering::SeqCst);
            f.write_str("counted")
        }
    }

    #[test]
    fn records_below_the_subscribers_level_are_not_formatted() {
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_test_writer()
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let log = raft_logger(1, 1);
            slog::debug!(log, "hot path"; "msg" => ?Counted);
            assert_eq!(FORMATTED.load(Ordering::SeqCst), 0, "debug is off");
            slog::info!(log, "kept"; "msg" => ?Counted);
            assert_eq!(FORMATTED.load(Ordering::SeqCst), 1, "info is on");
        });
    }
}
