//! SQL errors and their SQLSTATE codes.
//!
//! Every error a client can see is one variant here, and [`Error::sqlstate`]
//! gives the code PostgreSQL uses for the same condition, so drivers and
//! applications can react to codes rather than messages (retry on `40001`,
//! report `23505` as a duplicate, …). Errors name the stage that refused the
//! statement where that helps (parse, plan, execute).

/// A SQL error.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The statement does not parse (42601).
    #[error("syntax error: {0}")]
    Syntax(String),
    /// Unknown table (42P01).
    #[error("relation \"{0}\" does not exist")]
    UndefinedTable(String),
    /// DROP TABLE of a table that does not exist (42P01).
    #[error("table \"{0}\" does not exist")]
    UndefinedTableToDrop(String),
    /// DROP VIEW of a view that does not exist (42P01).
    #[error("view \"{0}\" does not exist")]
    UndefinedViewToDrop(String),
    /// A qualifier names no table of the FROM clause (42P01).
    #[error("missing FROM-clause entry for table \"{0}\"")]
    MissingFromEntry(String),
    /// Unknown column (42703).
    #[error("column \"{0}\" does not exist")]
    UndefinedColumn(String),
    /// Unknown qualified column, `t.c` (42703).
    #[error("column {0} does not exist")]
    UndefinedQualifiedColumn(String),
    /// A column name matches several columns (42702).
    #[error("column reference \"{0}\" is ambiguous")]
    AmbiguousColumn(String),
    /// Unknown function (42883).
    #[error("function {0} does not exist")]
    UndefinedFunction(String),
    /// The table exists already (42P07).
    #[error("relation \"{0}\" already exists")]
    DuplicateTable(String),
    /// Unknown index (42704).
    #[error("index \"{0}\" does not exist")]
    UndefinedIndex(String),
    /// The statement was canceled: a timeout or a cancel request (57014).
    #[error("{0}")]
    QueryCanceled(String),
    /// A setting that cannot change (55P02).
    #[error("parameter \"{0}\" cannot be changed")]
    CantChangeRuntimeParam(String),
    /// The client broke the protocol (08P01).
    #[error("{0}")]
    ProtocolViolation(String),
    /// A `$n` with no parameter behind it (42P02).
    #[error("{0}")]
    UndefinedParameter(String),
    /// Two CTEs of one WITH with the same name (42712).
    #[error("WITH query name \"{0}\" specified more than once")]
    DuplicateCte(String),
    /// Two FROM items with the same name (42712).
    #[error("table name \"{0}\" specified more than once")]
    DuplicateAlias(String),
    /// A column list does not fit its relation (42P10).
    #[error("{0}")]
    InvalidColumnReference(String),
    /// A column is defined twice (42701).
    #[error("column \"{0}\" specified more than once")]
    DuplicateColumn(String),
    /// ADD COLUMN of a name the table has (42701).
    #[error("column \"{column}\" of relation \"{table}\" already exists")]
    ColumnExists { column: String, table: String },
    /// DROP COLUMN of a name the table lacks (42703).
    #[error("column \"{column}\" of relation \"{table}\" does not exist")]
    UndefinedColumnOf { column: String, table: String },
    /// Invalid table definition (42P16).
    #[error("invalid table definition: {0}")]
    InvalidTableDefinition(String),
    /// Duplicate key (23505).
    #[error("duplicate key value violates unique constraint \"{constraint}\"")]
    UniqueViolation { constraint: String, detail: String },
    /// A CHECK constraint is false for a row (23514).
    #[error("new row for relation \"{table}\" violates check constraint \"{constraint}\"")]
    CheckViolation { table: String, constraint: String },
    /// NULL in a NOT NULL column (23502).
    #[error(
        "null value in column \"{column}\" of relation \"{table}\" violates not-null constraint"
    )]
    NotNullViolation { table: String, column: String },
    /// Operand types do not fit (42804).
    #[error("{0}")]
    DatatypeMismatch(String),
    /// Operator does not exist for these types (42883).
    #[error("operator does not exist: {0}")]
    UndefinedOperator(String),
    /// A value does not parse as its type (22P02).
    #[error("invalid input syntax for type {ty}: \"{value}\"")]
    InvalidTextRepresentation { ty: String, value: String },
    /// A regular expression that does not compile (2201B).
    #[error("{0}")]
    InvalidRegularExpression(String),
    /// Malformed COPY data (22P04), with its line as context.
    #[error("{0}")]
    BadCopyFileFormat(String),
    /// Out of range for the type (22003).
    #[error("{0} out of range")]
    NumericOutOfRange(String),
    /// A number that does not fit a NUMERIC(p, s) column (22003), with the
    /// bound as detail.
    #[error("numeric field overflow")]
    NumericFieldOverflow(String),
    /// A number beyond what NUMERIC can hold (22003).
    #[error("{0}")]
    NumericValueOverflow(String),
    /// `sqrt` of a negative number and the like (2201F).
    #[error("{0}")]
    InvalidArgumentForPowerFunction(String),
    /// Division by zero (22012).
    #[error("division by zero")]
    DivisionByZero,
    /// A string too long for its column (22001).
    #[error("value too long for type {0}")]
    StringDataRightTruncation(String),
    /// Aggregates and GROUP BY misuse (42803).
    #[error("{0}")]
    Grouping(String),
    /// A transaction grew past what the node holds in memory (53200).
    #[error("out of memory: {0}")]
    OutOfMemory(String),
    /// A date/time value that does not parse (22007).
    #[error("{0}")]
    InvalidDatetimeFormat(String),
    /// A date/time value out of its type's range (22008).
    #[error("{0}")]
    DatetimeFieldOverflow(String),
    /// A scalar subquery returned several rows (21000).
    #[error("more than one row returned by a subquery used as an expression")]
    CardinalityViolation,
    /// An INSERT … ON CONFLICT DO UPDATE that proposes one key twice (21000).
    #[error("ON CONFLICT DO UPDATE command cannot affect row a second time")]
    UpsertSameRowTwice,
    /// A view where a table is needed, or the other way round (42809).
    #[error("{0}")]
    WrongObjectType(String),
    /// A write in a read-only transaction (25006).
    #[error("{0}")]
    ReadOnlyTransaction(String),
    /// Bad LIMIT/OFFSET or other argument (22023 / 2201W).
    #[error("{0}")]
    InvalidParameterValue(String),
    /// Unknown configuration parameter and the like (42704).
    #[error("unrecognized configuration parameter \"{0}\"")]
    UndefinedObject(String),
    /// DEALLOCATE of a statement the session has not prepared (26000).
    #[error("prepared statement \"{0}\" does not exist")]
    InvalidSqlStatementName(String),
    /// The object is busy (55006).
    #[error("object in use: {0}")]
    ObjectInUse(String),
    /// Not supported (0A000).
    #[error("unimplemented: {0}")]
    FeatureNotSupported(String),
    /// A command in an aborted transaction (25P02).
    #[error("current transaction is aborted, commands ignored until end of transaction block")]
    InFailedTransaction,
    /// BEGIN inside a transaction and the like (25001).
    #[error("{0}")]
    ActiveTransaction(String),
    /// The transaction must be retried (40001).
    #[error("restart transaction: {0}")]
    SerializationFailure(String),
    /// The transaction must be retried (40001) because of a conflict on
    /// `key`; the session names the key's table and primary key.
    #[error("restart transaction: {reason} (key {}, conflicting transaction {txn})", crate::encoding::pretty_key(.key, &[]))]
    RetryOnKey {
        reason: String,
        key: Vec<u8>,
        txn: String,
    },
    /// The outcome of a commit is unknown (40003).
    #[error("result is ambiguous: {0}")]
    StatementCompletionUnknown(String),
    /// The cluster cannot serve the request (08006 = connection_failure:
    /// clients reconnect, possibly to another node).
    #[error("{0}")]
    Unavailable(String),
    /// Disk full (53100).
    #[error("could not write: disk full: {0}")]
    DiskFull(String),
    /// I/O failure in storage (58030).
    #[error("storage I/O error: {0}")]
    Io(String),
    /// Cluster not initialized (57P03 = cannot_connect_now).
    #[error("the cluster is not initialized yet: run `concord init`")]
    NotInitialized,
    /// Anything else (XX000): a bug.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The SQLSTATE code of the error.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            Error::Syntax(_) => "42601",
            Error::InvalidColumnReference(_) => "42P10",
            Error::DuplicateAlias(_) | Error::DuplicateCte(_) => "42712",
            Error::CheckViolation { .. } => "23514",
            Error::UndefinedParameter(_) => "42P02",
            Error::ProtocolViolation(_) => "08P01",
            Error::QueryCanceled(_) => "57014",
            Error::CantChangeRuntimeParam(_) => "55P02",
            Error::UndefinedIndex(_) => "42704",
            Error::UndefinedTable(_)
            | Error::UndefinedTableToDrop(_)
            | Error::UndefinedViewToDrop(_)
            | Error::MissingFromEntry(_) => "42P01",
            Error::UndefinedColumn(_) | Error::UndefinedQualifiedColumn(_) => "42703",
            Error::AmbiguousColumn(_) => "42702",
            Error::UndefinedFunction(_) | Error::UndefinedOperator(_) => "42883",
            Error::DuplicateTable(_) => "42P07",
            Error::DuplicateColumn(_) | Error::ColumnExists { .. } => "42701",
            Error::UndefinedColumnOf { .. } => "42703",
            Error::InvalidTableDefinition(_) => "42P16",
            Error::UniqueViolation { .. } => "23505",
            Error::NotNullViolation { .. } => "23502",
            Error::DatatypeMismatch(_) => "42804",
            Error::InvalidTextRepresentation { .. } => "22P02",
            Error::InvalidRegularExpression(_) => "2201B",
            Error::BadCopyFileFormat(_) => "22P04",
            Error::NumericOutOfRange(_)
            | Error::NumericFieldOverflow(_)
            | Error::NumericValueOverflow(_) => "22003",
            Error::DivisionByZero => "22012",
            Error::InvalidArgumentForPowerFunction(_) => "2201F",
            Error::StringDataRightTruncation(_) => "22001",
            Error::Grouping(_) => "42803",
            Error::InvalidDatetimeFormat(_) => "22007",
            Error::OutOfMemory(_) => "53200",
            Error::DatetimeFieldOverflow(_) => "22008",
            Error::CardinalityViolation | Error::UpsertSameRowTwice => "21000",
            Error::WrongObjectType(_) => "42809",
            Error::InvalidParameterValue(_) => "22023",
            Error::ReadOnlyTransaction(_) => "25006",
            Error::UndefinedObject(_) => "42704",
            Error::InvalidSqlStatementName(_) => "26000",
            Error::FeatureNotSupported(_) => "0A000",
            Error::ObjectInUse(_) => "55006",
            Error::InFailedTransaction => "25P02",
            Error::ActiveTransaction(_) => "25001",
            Error::SerializationFailure(_) | Error::RetryOnKey { .. } => "40001",
            Error::StatementCompletionUnknown(_) => "40003",
            Error::Unavailable(_) => "08006",
            Error::DiskFull(_) => "53100",
            Error::Io(_) => "58030",
            Error::NotInitialized => "57P03",
            Error::Internal(_) => "XX000",
        }
    }

    /// Extra detail for the client, if any.
    pub fn detail(&self) -> Option<String> {
        match self {
            Error::UniqueViolation { detail, .. } => Some(detail.clone()),
            Error::NumericFieldOverflow(detail) => Some(detail.clone()),
            _ => None,
        }
    }

    /// Whether the statement may be retried as a whole (automatic retries of
    /// implicit transactions).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::SerializationFailure(_) | Error::RetryOnKey { .. }
        )
    }
}

impl From<concord_kv::Error> for Error {
    fn from(e: concord_kv::Error) -> Self {
        use concord_kv::Error as K;
        match e {
            K::TransactionRetry { key, txn, reason } if !key.is_empty() => {
                Error::RetryOnKey { reason, key, txn }
            }
            K::TransactionRetry { txn, reason, .. } => {
                // A cached descriptor changed under the transaction: the
                // retry must read the catalog afresh.
                if reason.starts_with(concord_kv::ASSUMED_READ_CHANGED) {
                    crate::catalog::forget_cached_descriptors();
                }
                Error::SerializationFailure(format!("{reason} (transaction {txn})"))
            }
            K::WriteIntent { key, intent } => Error::RetryOnKey {
                reason: "WRITE_INTENT: another transaction's write is in the way".into(),
                key,
                txn: concord_storage::fmt_txn_id(&intent.id),
            },
            K::TxnAborted(m) => Error::SerializationFailure(format!("TRANSACTION_ABORTED: {m}")),
            K::Uncertainty { .. } | K::NeedsRefresh { .. } => {
                Error::SerializationFailure(e.to_string())
            }
            K::AmbiguousResult(m) => Error::StatementCompletionUnknown(m),
            K::Unavailable(m) => Error::Unavailable(m),
            K::DiskFull(m) => Error::DiskFull(m),
            K::OutOfMemory(m) => Error::OutOfMemory(m),
            K::Storage(m) => Error::Io(m),
            K::ClockOffset(m) => Error::Unavailable(format!("clock offset: {m}")),
            K::TxnFinished(s) => Error::Internal(format!("transaction already {s}")),
            K::Unimplemented(m) => Error::FeatureNotSupported(m),
            K::RangeBusy(m) => Error::ObjectInUse(m),
            K::ReadOnly(m) => Error::ReadOnlyTransaction(m),
            K::InvalidTimestamp(m) => Error::InvalidParameterValue(m),
            K::RangeChanged => Error::Unavailable("ranges kept changing under the request".into()),
            K::NotInitialized => Error::NotInitialized,
            K::Internal(m) => Error::Internal(m),
        }
    }
}

/// Result of SQL operations.
pub type Result<T> = std::result::Result<T, Error>;
