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
//! # Not done yet
//! - The extended query protocol (Parse/Bind/Execute), COPY, cancel
//!   requests, TLS and SCRAM authentication (the SQL issue). Any user name
//!   is accepted without a password (insecure mode).

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use futures::{stream, Sink};
use pgwire::api::auth::noop::NoopStartupHandler;
use pgwire::api::auth::StartupHandler;
use pgwire::api::query::SimpleQueryHandler;
use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::{ClientInfo, PgWireServerHandlers, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use tokio::net::TcpListener;
use tokio::sync::{watch, Mutex};

use concord_sql::plan::OutputColumn;
use concord_sql::{DataType, Session, StatementResult, Value};

use crate::NodeContext;

/// Accepts PostgreSQL connections until shutdown.
pub async fn serve(
    ctx: Arc<NodeContext>,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        match accepted {
            Ok((socket, peer)) => {
                let _ = socket.set_nodelay(true);
                let handlers = Arc::new(ConnectionHandlers {
                    handler: Arc::new(ConnectionHandler {
                        session: Mutex::new(Session::new(ctx.db.clone())),
                    }),
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
}

struct ConnectionHandlers {
    handler: Arc<ConnectionHandler>,
}

impl PgWireServerHandlers for ConnectionHandlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.handler.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.handler.clone()
    }
}

#[async_trait]
impl NoopStartupHandler for ConnectionHandler {}

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
    }
}

fn error_info(e: &concord_sql::Error) -> ErrorInfo {
    let mut info = ErrorInfo::new("ERROR".to_string(), e.sqlstate().to_string(), e.to_string());
    info.detail = e.detail();
    info
}

fn query_response(columns: &[OutputColumn], rows: Vec<Vec<Value>>) -> PgWireResult<Response> {
    let fields: Arc<Vec<FieldInfo>> = Arc::new(
        columns
            .iter()
            .map(|c| {
                FieldInfo::new(
                    c.name.clone(),
                    None,
                    None,
                    pg_type(&c.ty),
                    FieldFormat::Text,
                )
            })
            .collect(),
    );
    let mut encoded = Vec::with_capacity(rows.len());
    let mut enc = DataRowEncoder::new(fields.clone());
    for row in rows {
        for v in &row {
            enc.encode_field(&v.to_text())?;
        }
        encoded.push(Ok(enc.take_row()));
    }
    Ok(Response::Query(QueryResponse::new(
        fields,
        stream::iter(encoded),
    )))
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
    async fn do_query<C>(&self, _client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let mut session = self.session.lock().await;
        let results = session.execute(query).await;
        let mut responses = Vec::with_capacity(results.len());
        for r in results {
            responses.push(match r {
                Ok(StatementResult::Query { columns, rows }) => query_response(&columns, rows)?,
                Ok(StatementResult::Command { tag }) => match tag.as_str() {
                    "BEGIN" => Response::TransactionStart(Tag::new("BEGIN")),
                    "COMMIT" | "ROLLBACK" => Response::TransactionEnd(Tag::new(&tag)),
                    _ => Response::Execution(command_tag(&tag)),
                },
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
