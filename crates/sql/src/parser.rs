//! Parsing: Concord's own statements, then sqlparser's PostgreSQL dialect.
//!
//! A small front parser recognises the statements sqlparser does not know,
//! using sqlparser's own tokenizer and parser methods, and hands everything
//! else to `Parser::parse_statement`:
//!
//! ```text
//! ALTER TABLE t SPLIT AT VALUES (k1 [, k2 …]) [, (…)]   split t's ranges at these keys
//! SHOW RANGES [FROM TABLE t]                            list ranges (of one table)
//! ```

use sqlparser::ast::{ObjectName, Query, Statement};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::Token;

use crate::error::{Error, Result};

/// A parsed statement.
#[derive(Debug, Clone)]
pub enum Stmt {
    /// A statement sqlparser knows.
    Sql(Box<Statement>),
    /// `ALTER TABLE t SPLIT AT <query>`.
    SplitAt { table: ObjectName, rows: Box<Query> },
    /// `SHOW RANGES [FROM TABLE t]`.
    ShowRanges { table: Option<ObjectName> },
}

fn expect_word(p: &mut Parser, word: &str) -> std::result::Result<(), ParserError> {
    match p.next_token().token {
        Token::Word(w) if w.value.eq_ignore_ascii_case(word) => Ok(()),
        other => Err(ParserError::ParserError(format!(
            "Expected: {word}, found: {other}"
        ))),
    }
}

fn concord_statement(p: &mut Parser) -> std::result::Result<Stmt, ParserError> {
    if p.parse_keyword(Keyword::SHOW) {
        expect_word(p, "RANGES")?;
        let table = if p.parse_keyword(Keyword::FROM) {
            p.expect_keyword(Keyword::TABLE)?;
            Some(p.parse_object_name(false)?)
        } else {
            None
        };
        return Ok(Stmt::ShowRanges { table });
    }
    p.expect_keywords(&[Keyword::ALTER, Keyword::TABLE])?;
    let table = p.parse_object_name(false)?;
    expect_word(p, "SPLIT")?;
    p.expect_keyword(Keyword::AT)?;
    let rows = p.parse_query()?;
    Ok(Stmt::SplitAt { table, rows })
}

fn syntax(e: ParserError) -> Error {
    let msg = e.to_string();
    Error::Syntax(msg.trim_start_matches("sql parser error: ").to_string())
}

/// Parses a query string into statements.
pub fn parse(sql: &str) -> Result<Vec<Stmt>> {
    let dialect = PostgreSqlDialect {};
    let mut p = Parser::new(&dialect).try_with_sql(sql).map_err(syntax)?;
    let mut out = Vec::new();
    loop {
        while p.consume_token(&Token::SemiColon) {}
        if p.peek_token().token == Token::EOF {
            return Ok(out);
        }
        let stmt = match p.maybe_parse(concord_statement).map_err(syntax)? {
            Some(s) => s,
            None => Stmt::Sql(Box::new(p.parse_statement().map_err(syntax)?)),
        };
        out.push(stmt);
        let next = p.peek_token().token;
        if next != Token::EOF && next != Token::SemiColon {
            return Err(Error::Syntax(format!(
                "Expected: end of statement, found: {next}"
            )));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concord_statements_and_sql_mix() {
        let s = parse("ALTER TABLE t SPLIT AT VALUES (5), (10); SELECT 1; show ranges from table public.t; SHOW RANGES").unwrap();
        assert_eq!(s.len(), 4);
        assert!(matches!(&s[0], Stmt::SplitAt { table, .. } if table.to_string() == "t"));
        assert!(matches!(&s[1], Stmt::Sql(_)));
        assert!(
            matches!(&s[2], Stmt::ShowRanges { table: Some(t) } if t.to_string() == "public.t")
        );
        assert!(matches!(&s[3], Stmt::ShowRanges { table: None }));
    }

    #[test]
    fn other_alter_and_show_statements_fall_through() {
        assert!(matches!(
            &parse("SHOW application_name").unwrap()[0],
            Stmt::Sql(_)
        ));
        assert!(matches!(
            &parse("ALTER TABLE t ADD COLUMN c INT").unwrap()[0],
            Stmt::Sql(_)
        ));
        assert!(parse("ALTER TABLE t SPLIT AT").is_err());
        assert!(parse("SELECT 1 SELECT 2").is_err());
    }
}
