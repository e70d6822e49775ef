//! The PostgreSQL wire protocol, on the `pgwire` crate.
//!
//! Every accepted connection gets its own handler holding a
//! [`concord_sql::Session`]; pgwire drives the protocol (startup, simple
//! query, ReadyForQuery with the transaction status) and calls us with query
//! strings. Results are sent in text format with the PostgreSQL type of each
//! column, so psql and drivers render them as they would PostgreSQL's.
//!
//! Errors carry their SQLSTATE. A malformed frame or a client that goes
//! away ends that connection only.
//!
//! The extended protocol (Parse/Bind/Describe/Execute/Sync, named and
//! unnamed statements and portals) goes through [`Session::prepare`], which
//! infers parameter types and describes the result at Parse, and
//! [`Session::execute_prepared`], which substitutes the bound values.
//! Parameters and results are text or binary per the client's format codes.
//!
//! At startup the client's parameters (`application_name`, `DateStyle`,
//! `options=-c name=value`, …) become session settings, checked as SET
//! checks them, and the client hears the session's reported settings in
//! ParameterStatus, again after any SET that changes one.
//!
//! pgwire's store keeps the prepared statements but cannot list them, so
//! the session keeps their names (told at Parse and Close): `DEALLOCATE
//! name | ALL` in SQL checks and forgets them there, and the handler then
//! drops them from the store.
//!
//! `COPY … FROM STDIN` answers CopyInResponse and feeds the CopyData to the
//! session ([`Session::copy_data`]); CopyDone commits and sends `COPY n`
//! (pgwire then sends ReadyForQuery, or waits for Sync in the extended
//! protocol). `COPY … TO STDOUT` streams one CopyData per row.
//!
//! A CancelRequest (a connection of its own carrying a session's pid and
//! secret, as BackendKeyData gave them) fires that session's cancel signal
//! through pgwire's `ConnectionManager`; the session stops the running
//! statement with 57014 (see [`Session::set_cancel`]).
//!
//! # Not done yet
//! - TLS and SCRAM authentication. Any user name is accepted without a
//!   password (insecure mode).
//! - A CancelRequest reaches only sessions of the node it is sent to (as
//!   with PostgreSQL behind a load balancer).
//! - The statements of a pipeline before its Sync are not one implicit
//!   transaction as in PostgreSQL: outside a block each Execute commits on
//!   its own, so a failing statement keeps the effects of those before it
//!   (psycopg's `executemany`).

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use futures::{stream, Sink, SinkExt};
use pgwire::api::auth::{
    finish_authentication, protocol_negotiation, save_startup_parameters_to_metadata,
    ServerParameterProvider, StartupHandler,
};
use pgwire::api::cancel::{CancelHandler, DefaultCancelHandler};
use pgwire::api::copy::CopyHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{
    CopyResponse, DataRowEncoder, FieldFormat, FieldInfo, QueryResponse, Response, Tag,
};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, PgWireServerHandlers, Type, DEFAULT_NAME};
use pgwire::api::{
    ConnectionGuard, ConnectionHandle, ConnectionManager, PidSecretKeyGenerator,
    RandomPidSecretKeyGenerator,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::copy::{CopyData, CopyDone, CopyFail};
use pgwire::messages::extendedquery::{
    Close, CloseComplete, Parse, ParseComplete, TARGET_TYPE_BYTE_PORTAL, TARGET_TYPE_BYTE_STATEMENT,
};
use pgwire::messages::response::TransactionStatus;
use pgwire::messages::startup::ParameterStatus;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use tokio::net::TcpListener;
use tokio::sync::{watch, Mutex};

use concord_sql::plan::OutputColumn;
use concord_sql::{DataType, Prepared, Session, StatementResult, Value};

use crate::NodeContext;

/// Accepts PostgreSQL connections until shutdown.
pub async fn serve(
    ctx: Arc<NodeContext>,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
) {
    // Every connection of this node by (pid, secret), for CancelRequests.
    let connections = Arc::new(ConnectionManager::new());
    let cancels = Arc::new(DefaultCancelHandler::new(connections.clone()));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        match accepted {
            Ok((socket, peer)) => {
                let _ = socket.set_nodelay(true);
                let handlers = Arc::new(ConnectionHandlers {
                    handler: Arc::new_cyclic(|me| ConnectionHandler {
                        session: Mutex::new(Session::new(ctx.db.clone())),
                        me: me.clone(),
                        connections: connections.clone(),
                        cancel: std::sync::Mutex::new(None),
                    }),
                    cancels: cancels.clone(),
                });
                tokio::spawn(async move {
                    if let Err(e) = pgwire::tokio::process_socket(socket, None, handlers).await {
                        tracing::debug!(%peer, "SQL connection ended: {e}");
                    }
                });
            }
            Err(e) => {
                tracing::warn!("accepting a SQL connection failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

struct ConnectionHandler {
    session: Mutex<Session>,
    /// Itself, for pgwire's query parser handle.
    me: std::sync::Weak<ConnectionHandler>,
    /// The node's connections, which this one joins at startup.
    connections: Arc<ConnectionManager>,
    /// This connection's entry there (removed when the guard drops with
    /// the connection): what a CancelRequest with its pid and secret fires.
    cancel: std::sync::Mutex<Option<(Arc<ConnectionHandle>, ConnectionGuard)>>,
}

impl ConnectionHandler {
    /// Arms the session's cancel signal for the query about to run.
    async fn arm_cancel(&self, session: &mut Session) {
        let handle = self
            .cancel
            .lock()
            .expect("the cancel slot's lock is never held across a panic")
            .as_ref()
            .map(|(h, _)| h.clone());
        let Some(handle) = handle else {
            return;
        };
        let fired = handle.start_query().await;
        session.set_cancel(Some(Box::pin(async move {
            // A dropped sender (the next query armed a new one) is no cancel.
            if fired.await.is_err() {
                std::future::pending::<()>().await;
            }
        })));
    }
}

struct ConnectionHandlers {
    handler: Arc<ConnectionHandler>,
    cancels: Arc<DefaultCancelHandler>,
}

impl PgWireServerHandlers for ConnectionHandlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.handler.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.handler.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.handler.clone()
    }

    fn copy_handler(&self) -> Arc<impl CopyHandler> {
        self.handler.clone()
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        self.cancels.clone()
    }
}

/// Settings a client gets in ParameterStatus at startup: the session's.
struct SessionParameters(Vec<(String, String)>);

impl ServerParameterProvider for SessionParameters {
    fn server_parameters<C>(&self, _client: &C) -> Option<HashMap<String, String>>
    where
        C: ClientInfo,
    {
        Some(self.0.iter().cloned().collect())
    }
}

static PIDS: LazyLock<RandomPidSecretKeyGenerator> = LazyLock::new(Default::default);

/// Startup parameters that are settings: `application_name`, …, and
/// `options=-c name=value …` (as psql's PGOPTIONS sends them).
fn startup_settings(params: &std::collections::BTreeMap<String, String>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (k, v) in params {
        match k.as_str() {
            "user" | "database" | "replication" => {}
            "options" => {
                let mut words = v.split_whitespace();
                while let Some(w) = words.next() {
                    let setting = match w {
                        "-c" => words.next(),
                        w => w.strip_prefix("-c").or_else(|| w.strip_prefix("--")),
                    };
                    if let Some((name, value)) = setting.and_then(|s| s.split_once('=')) {
                        out.push((name.replace('-', "_"), value.to_string()));
                    }
                }
            }
            _ => out.push((k.clone(), v.clone())),
        }
    }
    out
}

#[async_trait]
impl StartupHandler for ConnectionHandler {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let PgWireFrontendMessage::Startup(ref startup) = message else {
            return Ok(());
        };
        protocol_negotiation(client, startup).await?;
        save_startup_parameters_to_metadata(client, startup);
        let (pid, secret) = PIDS.generate(client);
        *self
            .cancel
            .lock()
            .expect("the cancel slot's lock is never held across a panic") =
            Some(self.connections.register(pid, secret.clone()));
        client.set_pid_and_secret_key(pid, secret);
        let mut session = self.session.lock().await;
        for (name, value) in startup_settings(&startup.parameters) {
            // PostgreSQL refuses a connection with a bad setting (FATAL).
            if let Err(e) = session.set_var(&name, &value) {
                let mut info = error_info(&e);
                info.severity = "FATAL".into();
                return Err(PgWireError::UserError(Box::new(info)));
            }
        }
        session.take_reports();
        let params = SessionParameters(session.reported_vars());
        drop(session);
        finish_authentication(client, &params).await
    }
}

/// Our type for a parameter type the client named in Parse.
fn data_type(ty: &Type) -> DataType {
    match *ty {
        Type::BOOL => DataType::Bool,
        Type::INT2 => DataType::Int2,
        Type::INT4 => DataType::Int4,
        Type::INT8 => DataType::Int8,
        Type::FLOAT4 => DataType::Float4,
        Type::FLOAT8 => DataType::Float8,
        Type::TEXT => DataType::Text,
        Type::VARCHAR => DataType::Varchar(None),
        Type::BPCHAR => DataType::Char(None),
        Type::DATE => DataType::Date,
        Type::TIMESTAMP => DataType::Timestamp,
        Type::TIMESTAMPTZ => DataType::TimestampTz,
        Type::INTERVAL => DataType::Interval,
        Type::NUMERIC => DataType::Numeric(None),
        Type::BYTEA => DataType::Bytea,
        Type::UUID => DataType::Uuid,
        _ => DataType::Unknown,
    }
}

/// The PostgreSQL type of a column.
pub fn pg_type(ty: &DataType) -> Type {
    match ty {
        DataType::Bool => Type::BOOL,
        DataType::Int2 => Type::INT2,
        DataType::Int4 => Type::INT4,
        DataType::Int8 => Type::INT8,
        DataType::Float4 => Type::FLOAT4,
        DataType::Float8 => Type::FLOAT8,
        DataType::Text | DataType::Unknown => Type::TEXT,
        DataType::Varchar(_) => Type::VARCHAR,
        DataType::Char(_) => Type::BPCHAR,
        DataType::Date => Type::DATE,
        DataType::Timestamp => Type::TIMESTAMP,
        DataType::TimestampTz => Type::TIMESTAMPTZ,
        DataType::Interval => Type::INTERVAL,
        DataType::Numeric(_) => Type::NUMERIC,
        DataType::Bytea => Type::BYTEA,
        DataType::Uuid => Type::UUID,
    }
}

fn error_info(e: &concord_sql::Error) -> ErrorInfo {
    let mut info = ErrorInfo::new("ERROR".to_string(), e.sqlstate().to_string(), e.to_string());
    info.detail = e.detail();
    info
}

fn fields(columns: &[OutputColumn], format: Option<&Format>) -> Vec<FieldInfo> {
    columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            FieldInfo::new(
                c.name.clone(),
                None,
                None,
                pg_type(&c.ty),
                format.map(|f| f.format_for(i)).unwrap_or(FieldFormat::Text),
            )
        })
        .collect()
}

/// Encodes one value in its column's format: text as PostgreSQL prints it,
/// or PostgreSQL's binary representation of the column's type.
fn encode_value(
    enc: &mut DataRowEncoder,
    v: &Value,
    ty: &DataType,
    binary: bool,
) -> PgWireResult<()> {
    if !binary {
        return enc.encode_field(&v.to_text_as(ty));
    }
    match (v, ty) {
        (Value::Null, _) => enc.encode_field(&None::<i32>),
        (Value::Numeric(d), DataType::Numeric(_)) => {
            enc.encode_field(&concord_sql::numeric::to_binary(d).as_slice())
        }
        // A value of another kind than its column (integers in a numeric
        // CASE, a numeric in a float one): sent as the column's type.
        (Value::Int(_) | Value::Float(_), DataType::Numeric(_)) | (Value::Numeric(_), _) => {
            match v.cast(ty) {
                Ok(cast) if std::mem::discriminant(&cast) != std::mem::discriminant(v) => {
                    encode_value(enc, &cast, ty, binary)
                }
                _ => Err(PgWireError::ApiError(
                    format!("{v} cannot be sent as binary {ty}").into(),
                )),
            }
        }
        (Value::Bytes(b), _) => enc.encode_field(&b.as_slice()),
        (Value::Uuid(u), _) => enc.encode_field(&u.as_bytes().as_slice()),
        (Value::Bool(b), _) => enc.encode_field(b),
        (Value::Int(i), DataType::Int2) => enc.encode_field(&(*i as i16)),
        (Value::Int(i), DataType::Int4) => enc.encode_field(&(*i as i32)),
        (Value::Int(i), DataType::Float4) => enc.encode_field(&(*i as f32)),
        (Value::Int(i), DataType::Float8) => enc.encode_field(&(*i as f64)),
        (Value::Int(i), _) => enc.encode_field(i),
        (Value::Float(f), DataType::Float4) => enc.encode_field(&(*f as f32)),
        (Value::Float(f), _) => enc.encode_field(f),
        (Value::Text(_), DataType::Char(_)) => enc.encode_field(&v.to_text_as(ty)),
        (Value::Text(t), _) => enc.encode_field(t),
        // PostgreSQL's binary forms are our representations, big-endian.
        (Value::Date(d), _) => enc.encode_field(d),
        (Value::Timestamp(t) | Value::TimestampTz(t), _) => enc.encode_field(t),
        (Value::Interval(iv), _) => {
            let mut b = Vec::with_capacity(16);
            b.extend_from_slice(&iv.micros.to_be_bytes());
            b.extend_from_slice(&iv.days.to_be_bytes());
            b.extend_from_slice(&iv.months.to_be_bytes());
            enc.encode_field(&b.as_slice())
        }
    }
}

fn query_response(
    columns: &[OutputColumn],
    rows: Vec<Vec<Value>>,
    format: Option<&Format>,
) -> PgWireResult<Response> {
    let fields: Arc<Vec<FieldInfo>> = Arc::new(fields(columns, format));
    let mut encoded = Vec::with_capacity(rows.len());
    let mut enc = DataRowEncoder::new(fields.clone());
    for row in rows {
        for (i, (v, c)) in row.iter().zip(columns).enumerate() {
            let binary = format.is_some_and(|f| f.is_binary(i));
            encode_value(&mut enc, v, &c.ty, binary)?;
        }
        encoded.push(Ok(enc.take_row()));
    }
    Ok(Response::Query(QueryResponse::new(
        fields,
        stream::iter(encoded),
    )))
}

/// A parameter value from its Bind bytes.
fn decode_param(bytes: Option<&[u8]>, ty: &DataType, binary: bool) -> concord_sql::Result<Value> {
    let Some(b) = bytes else {
        return Ok(Value::Null);
    };
    let bad = || {
        concord_sql::Error::ProtocolViolation(format!(
            "incorrect binary data format in bind parameter of type {ty}"
        ))
    };
    if !binary {
        let s = std::str::from_utf8(b).map_err(|_| {
            concord_sql::Error::ProtocolViolation("invalid UTF-8 in bind parameter".into())
        })?;
        return concord_sql::types::parse_text(s, ty);
    }
    Ok(match ty {
        DataType::Bool => match b {
            [x] => Value::Bool(*x != 0),
            _ => return Err(bad()),
        },
        DataType::Int2 => Value::Int(i16::from_be_bytes(b.try_into().map_err(|_| bad())?).into()),
        DataType::Int4 => Value::Int(i32::from_be_bytes(b.try_into().map_err(|_| bad())?).into()),
        DataType::Int8 => Value::Int(i64::from_be_bytes(b.try_into().map_err(|_| bad())?)),
        DataType::Float4 => {
            Value::Float(f32::from_be_bytes(b.try_into().map_err(|_| bad())?).into())
        }
        DataType::Float8 => Value::Float(f64::from_be_bytes(b.try_into().map_err(|_| bad())?)),
        DataType::Text | DataType::Varchar(_) | DataType::Unknown => {
            Value::Text(String::from_utf8(b.to_vec()).map_err(|_| bad())?)
        }
        DataType::Char(_) => {
            Value::Text(String::from_utf8(b.to_vec()).map_err(|_| bad())?).assign(ty)?
        }
        DataType::Date => Value::Date(i32::from_be_bytes(b.try_into().map_err(|_| bad())?)),
        DataType::Timestamp => {
            Value::Timestamp(i64::from_be_bytes(b.try_into().map_err(|_| bad())?))
        }
        DataType::TimestampTz => {
            Value::TimestampTz(i64::from_be_bytes(b.try_into().map_err(|_| bad())?))
        }
        DataType::Numeric(_) => Value::Numeric(concord_sql::numeric::from_binary(b)?),
        DataType::Bytea => Value::Bytes(b.to_vec()),
        DataType::Uuid => Value::Uuid(concord_sql::types::uuid_from_bytes(b).ok_or_else(bad)?),
        DataType::Interval => {
            if b.len() != 16 {
                return Err(bad());
            }
            let micros = i64::from_be_bytes(b[0..8].try_into().map_err(|_| bad())?);
            let days = i32::from_be_bytes(b[8..12].try_into().map_err(|_| bad())?);
            let months = i32::from_be_bytes(b[12..16].try_into().map_err(|_| bad())?);
            Value::Interval(concord_sql::datetime::Interval {
                months,
                days,
                micros,
            })
        }
    })
}

/// ParameterStatus for the reported settings a statement changed.
async fn send_reports<C>(client: &mut C, session: &mut Session) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    for (name, value) in session.take_reports() {
        client
            .send(PgWireBackendMessage::ParameterStatus(ParameterStatus::new(
                name, value,
            )))
            .await?;
    }
    Ok(())
}

/// Drops from pgwire's store the statements a DEALLOCATE removed.
fn drop_deallocated<C: ClientPortalStore>(client: &C, session: &mut Session)
where
    C::PortalStore: PortalStore,
{
    for name in session.take_deallocated() {
        client.portal_store().rm_statement(&name);
    }
}

fn user_error(e: &concord_sql::Error) -> PgWireError {
    PgWireError::UserError(Box::new(error_info(e)))
}

/// The session's transaction status, as ReadyForQuery reports it. pgwire
/// marks an open block failed after any error; the session knows better: a
/// COMMIT that fails (40001) has ended its transaction, and PostgreSQL then
/// reports idle. Set before an error goes back to pgwire, which keeps an
/// idle status idle.
fn protocol_status(session: &Session) -> TransactionStatus {
    match session.txn_status() {
        concord_sql::TxnStatus::Idle => TransactionStatus::Idle,
        concord_sql::TxnStatus::InTransaction => TransactionStatus::Transaction,
        concord_sql::TxnStatus::Failed => TransactionStatus::Error,
    }
}

fn response(r: StatementResult, format: Option<&Format>) -> PgWireResult<Response> {
    Ok(match r {
        StatementResult::Query { columns, rows } => query_response(&columns, rows, format)?,
        StatementResult::Command { tag } => match tag.as_str() {
            "" => Response::EmptyQuery,
            "BEGIN" => Response::TransactionStart(Tag::new("BEGIN")),
            "COMMIT" | "ROLLBACK" => Response::TransactionEnd(Tag::new(&tag)),
            _ => Response::Execution(command_tag(&tag)),
        },
        StatementResult::CopyIn { columns } => {
            Response::CopyIn(CopyResponse::new(0, columns, stream::empty()))
        }
        StatementResult::CopyOut { columns, data } => Response::CopyOut(CopyResponse::new(
            0,
            columns,
            stream::iter(
                data.into_iter()
                    .map(|d| Ok(CopyData::new(bytes::Bytes::from(d)))),
            ),
        )),
    })
}

#[async_trait]
impl CopyHandler for ConnectionHandler {
    async fn on_copy_data<C>(&self, _client: &mut C, copy_data: CopyData) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.session.lock().await.copy_data(&copy_data.data).await;
        Ok(())
    }

    async fn on_copy_done<C>(&self, client: &mut C, _done: CopyDone) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let mut session = self.session.lock().await;
        match session.copy_done().await {
            Ok(n) => {
                client
                    .send(PgWireBackendMessage::CommandComplete(
                        Tag::new("COPY").with_rows(n as usize).into(),
                    ))
                    .await?;
                Ok(())
            }
            Err(e) => {
                if session.txn_status() == concord_sql::TxnStatus::Failed {
                    client.set_transaction_status(TransactionStatus::Error);
                }
                Err(user_error(&e))
            }
        }
    }

    async fn on_copy_fail<C>(&self, client: &mut C, fail: CopyFail) -> PgWireError
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let mut session = self.session.lock().await;
        let e = session.copy_fail(&fail.message);
        if session.txn_status() == concord_sql::TxnStatus::Failed {
            client.set_transaction_status(TransactionStatus::Error);
        }
        user_error(&e)
    }
}

#[async_trait]
impl QueryParser for ConnectionHandler {
    type Statement = Arc<Prepared>;

    async fn parse_sql<C>(
        &self,
        _client: &C,
        sql: &str,
        types: &[Option<Type>],
    ) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let hints: Vec<DataType> = types
            .iter()
            .map(|t| t.as_ref().map(data_type).unwrap_or(DataType::Unknown))
            .collect();
        let mut session = self.session.lock().await;
        match session.prepare(sql, &hints).await {
            Ok(p) if p.stmt.is_none() => Ok(None),
            Ok(p) => Ok(Some(Arc::new(p))),
            Err(e) => Err(user_error(&e)),
        }
    }

    fn get_parameter_types(&self, stmt: &Self::Statement) -> PgWireResult<Vec<Type>> {
        Ok(stmt.param_types.iter().map(pg_type).collect())
    }

    fn get_result_schema(
        &self,
        stmt: &Self::Statement,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        Ok(stmt
            .columns
            .as_deref()
            .map(|c| fields(c, column_format))
            .unwrap_or_default())
    }
}

#[async_trait]
impl ExtendedQueryHandler for ConnectionHandler {
    type Statement = Arc<Prepared>;
    type QueryParser = ConnectionHandler;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        self.me
            .upgrade()
            .expect("a connection's handler outlives its protocol loop")
    }

    /// pgwire's Parse, also telling the session the statement's name.
    async fn on_parse<C>(&self, client: &mut C, message: Parse) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        match StoredStatement::parse(client, &message, self.query_parser()).await? {
            Some(stmt) => client.portal_store().put_statement(Arc::new(stmt)),
            None => client.portal_store().put_empty_statement(name),
        }
        if let Some(name) = &message.name {
            self.session.lock().await.statement_prepared(name);
        }
        client
            .send(PgWireBackendMessage::ParseComplete(ParseComplete::new()))
            .await?;
        Ok(())
    }

    /// pgwire's Close, also telling the session a statement is gone.
    async fn on_close<C>(&self, client: &mut C, message: Close) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        match message.target_type {
            TARGET_TYPE_BYTE_STATEMENT => {
                self.session.lock().await.statement_closed(name);
                client.portal_store().rm_statement(name);
            }
            TARGET_TYPE_BYTE_PORTAL => client.portal_store().rm_portal(name),
            _ => {}
        }
        client
            .send(PgWireBackendMessage::CloseComplete(CloseComplete::new()))
            .await?;
        Ok(())
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let prepared = &portal.statement.statement;
        let mut params = Vec::with_capacity(portal.parameters.len());
        for (i, p) in portal.parameters.iter().enumerate() {
            let ty = prepared.param_types.get(i).unwrap_or(&DataType::Text);
            let v = decode_param(p.as_deref(), ty, portal.parameter_format.is_binary(i))
                .map_err(|e| user_error(&e))?;
            params.push(v);
        }
        let mut session = self.session.lock().await;
        self.arm_cancel(&mut session).await;
        let started = std::time::Instant::now();
        let result = session.execute_prepared(prepared, &params).await;
        log_if_slow(started, || statement_text(prepared));
        session.set_cancel(None);
        drop_deallocated(client, &mut session);
        send_reports(client, &mut session).await?;
        match result {
            Ok(r) => response(r, Some(&portal.result_column_format)),
            Err(e) => {
                if matches!(e, concord_sql::Error::Internal(_)) {
                    tracing::error!("internal error: {e}");
                }
                client.set_transaction_status(protocol_status(&session));
                Err(user_error(&e))
            }
        }
    }
}

/// Logs a statement that took longer than the replication layer's slow
/// step, under the same `concord::slow` target (see
/// [`concord_replication::SLOW_STEP`]), with its text.
fn log_if_slow(started: std::time::Instant, text: impl FnOnce() -> String) {
    let took = started.elapsed();
    if took > concord_replication::SLOW_STEP
        && tracing::enabled!(target: "concord::slow", tracing::Level::DEBUG)
    {
        tracing::debug!(
            target: "concord::slow",
            took_ms = took.as_millis() as u64,
            sql = text(),
            "slow statement"
        );
    }
}

fn statement_text(p: &Prepared) -> String {
    match &p.stmt {
        Some(concord_sql::parser::Stmt::Sql(s)) => s.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn command_tag(tag: &str) -> Tag {
    let parts: Vec<&str> = tag.split_whitespace().collect();
    match parts.as_slice() {
        ["INSERT", _oid, n] => Tag::new("INSERT")
            .with_oid(0)
            .with_rows(n.parse().unwrap_or(0)),
        [cmd @ ("UPDATE" | "DELETE" | "SELECT"), n] => {
            Tag::new(cmd).with_rows(n.parse().unwrap_or(0))
        }
        _ => Tag::new(tag),
    }
}

#[async_trait]
impl SimpleQueryHandler for ConnectionHandler {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let mut session = self.session.lock().await;
        self.arm_cancel(&mut session).await;
        let started = std::time::Instant::now();
        let results = session.execute(query).await;
        log_if_slow(started, || query.to_string());
        session.set_cancel(None);
        drop_deallocated(client, &mut session);
        send_reports(client, &mut session).await?;
        if let [Err(e)] = results.as_slice() {
            // The first statement failed: answered as an error of the
            // query, so that ReadyForQuery reports the session's status
            // (a Response::Error would report an open block as failed even
            // when a failed COMMIT ended it). After earlier results it
            // still has to be a Response::Error.
            if matches!(e, concord_sql::Error::Internal(_)) {
                tracing::error!(query, "internal error: {e}");
            }
            client.set_transaction_status(protocol_status(&session));
            return Err(user_error(e));
        }
        let mut responses = Vec::with_capacity(results.len());
        for r in results {
            responses.push(match r {
                Ok(r) => response(r, None)?,
                Err(e) => {
                    if matches!(e, concord_sql::Error::Internal(_)) {
                        tracing::error!(query, "internal error: {e}");
                    }
                    Response::Error(Box::new(error_info(&e)))
                }
            });
        }
        Ok(responses)
    }
}
