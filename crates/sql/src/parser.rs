//! Parsing: Concord's own statements, then sqlparser's PostgreSQL dialect.
//!
//! A small front parser recognises the statements sqlparser does not know,
//! using sqlparser's own tokenizer and parser methods, and hands everything
//! else to `Parser::parse_statement`:
//!
//! ```text
//! ALTER TABLE t SPLIT AT VALUES (k1 [, k2 …]) [, (…)]   split t's ranges at these keys
//! SHOW RANGES [FROM TABLE t]                            list ranges (of one table)
//! SELECT … FROM … AS OF SYSTEM TIME '-10s' [WHERE …]     read in the past (also: an
//!                                                       HLC wall time in ns, or
//!                                                       follower_read_timestamp())
//! ```
//!
//! `AS OF SYSTEM TIME` is cut out of the token stream before sqlparser sees
//! the statement (it would take `AS OF` for a table alias).

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
    /// A statement with `AS OF SYSTEM TIME`.
    AsOf { stmt: Box<Statement>, at: AsOf },
    /// `VACUUM [FULL | FREEZE | VERBOSE | ANALYZE | (options)] [t [(cols)], …]`
    /// (sqlparser knows Redshift's VACUUM, not PostgreSQL's).
    Vacuum { tables: Vec<ObjectName> },
    /// `COPY … FROM STDIN | TO STDOUT` (see [`crate::copy`]).
    Copy(Box<crate::copy::CopyStmt>),
}

/// When an `AS OF SYSTEM TIME` statement reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AsOf {
    /// This long before now (`'-10s'`).
    Ago(std::time::Duration),
    /// An HLC wall time, in nanoseconds since the epoch.
    WallNanos(u64),
    /// `follower_read_timestamp()`: far enough in the past for any replica.
    FollowerRead,
}

/// Parses the argument of `AS OF SYSTEM TIME`.
fn parse_as_of(tokens: &[Token]) -> Result<AsOf> {
    let words: Vec<&Token> = tokens
        .iter()
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .collect();
    let bad = || {
        Error::Syntax(
            "AS OF SYSTEM TIME takes a string like '-10s', a timestamp in nanoseconds, or follower_read_timestamp()"
                .into(),
        )
    };
    match words.as_slice() {
        [Token::SingleQuotedString(s)] => {
            if let Some(d) = s.strip_prefix('-') {
                parse_duration(d).map(AsOf::Ago).ok_or_else(bad)
            } else {
                let whole = s.split('.').next().unwrap_or_default();
                whole.parse().map(AsOf::WallNanos).map_err(|_| bad())
            }
        }
        [Token::Number(n, _)] => n
            .split('.')
            .next()
            .unwrap_or_default()
            .parse()
            .map(AsOf::WallNanos)
            .map_err(|_| bad()),
        [Token::Word(w), Token::LParen, Token::RParen]
            if w.value.eq_ignore_ascii_case("follower_read_timestamp") =>
        {
            Ok(AsOf::FollowerRead)
        }
        _ => Err(bad()),
    }
}

/// `10s`, `1.5m`, `500ms`, `2h`, `100us`.
fn parse_duration(s: &str) -> Option<std::time::Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let secs = match unit.trim() {
        "ns" => n / 1e9,
        "us" | "µs" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    (secs.is_finite() && secs >= 0.0).then(|| std::time::Duration::from_secs_f64(secs))
}

/// Cuts `AS OF SYSTEM TIME <arg>` out of one statement's tokens.
fn take_as_of(tokens: &mut Vec<Token>) -> Result<Option<AsOf>> {
    let is_word =
        |t: &Token, w: &str| matches!(t, Token::Word(x) if x.value.eq_ignore_ascii_case(w));
    // Positions of non-whitespace tokens.
    let idx: Vec<usize> = (0..tokens.len())
        .filter(|&i| !matches!(tokens[i], Token::Whitespace(_)))
        .collect();
    let mut depth = 0i32;
    for (n, &i) in idx.iter().enumerate() {
        match tokens[i] {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            _ => {}
        }
        if depth == 0
            && n + 3 < idx.len()
            && is_word(&tokens[i], "AS")
            && is_word(&tokens[idx[n + 1]], "OF")
            && is_word(&tokens[idx[n + 2]], "SYSTEM")
            && is_word(&tokens[idx[n + 3]], "TIME")
        {
            // The argument: one literal, or a function call without
            // arguments. It sits after the FROM list (as in CockroachDB);
            // what follows (WHERE, ORDER BY, …) stays.
            let rest = &idx[n + 4..];
            let arg_len = match rest {
                [f, l, r, ..]
                    if matches!(tokens[*f], Token::Word(_))
                        && tokens[*l] == Token::LParen
                        && tokens[*r] == Token::RParen =>
                {
                    3
                }
                [_, ..] => 1,
                [] => return Err(parse_as_of(&[]).unwrap_err()),
            };
            let last = rest[arg_len - 1];
            let arg: Vec<Token> = tokens[idx[n + 3] + 1..=last].to_vec();
            let at = parse_as_of(&arg)?;
            tokens.drain(i..=last);
            return Ok(Some(at));
        }
    }
    Ok(None)
}

fn expect_word(p: &mut Parser, word: &str) -> std::result::Result<(), ParserError> {
    match p.next_token().token {
        Token::Word(w) if w.value.eq_ignore_ascii_case(word) => Ok(()),
        other => Err(ParserError::ParserError(format!(
            "Expected: {word}, found: {other}"
        ))),
    }
}

fn vacuum(p: &mut Parser) -> std::result::Result<Stmt, ParserError> {
    if p.consume_token(&Token::LParen) {
        // (option [value], …): any options.
        loop {
            match p.next_token().token {
                Token::RParen => break,
                Token::EOF => return Err(ParserError::ParserError("Expected: )".into())),
                _ => {}
            }
        }
    } else {
        while ["FULL", "FREEZE", "VERBOSE", "ANALYZE", "ANALYSE"]
            .iter()
            .any(|w| matches!(&p.peek_token().token, Token::Word(x) if x.value.eq_ignore_ascii_case(w)))
        {
            p.next_token();
        }
    }
    let mut tables = Vec::new();
    while !matches!(p.peek_token().token, Token::EOF | Token::SemiColon) {
        tables.push(p.parse_object_name(false)?);
        if p.consume_token(&Token::LParen) {
            p.parse_comma_separated(|p| p.parse_identifier())?;
            p.expect_token(&Token::RParen)?;
        }
        if !p.consume_token(&Token::Comma) {
            break;
        }
    }
    Ok(Stmt::Vacuum { tables })
}

fn concord_statement(p: &mut Parser) -> std::result::Result<Stmt, ParserError> {
    if p.parse_keyword(Keyword::VACUUM) {
        return vacuum(p);
    }
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
    let tokens = sqlparser::tokenizer::Tokenizer::new(&dialect, sql)
        .tokenize()
        .map_err(|e| Error::Syntax(e.to_string()))?;
    let has_as_of = tokens
        .iter()
        .any(|t| matches!(t, Token::Word(w) if w.value.eq_ignore_ascii_case("SYSTEM")));
    if has_as_of {
        // Statement by statement: cut AS OF SYSTEM TIME out, parse the rest.
        let mut out = Vec::new();
        for part in tokens.split(|t| *t == Token::SemiColon) {
            let mut part = part.to_vec();
            if part.iter().all(|t| matches!(t, Token::Whitespace(_))) {
                continue;
            }
            let at = take_as_of(&mut part)?;
            let text: String = part.iter().map(|t| t.to_string()).collect();
            let mut stmts = parse_plain(&text)?;
            match (at, stmts.len()) {
                (None, _) => out.append(&mut stmts),
                (Some(at), 1) => match stmts.remove(0) {
                    Stmt::Sql(stmt) => out.push(Stmt::AsOf { stmt, at }),
                    _ => {
                        return Err(Error::Syntax(
                            "AS OF SYSTEM TIME applies to SELECT statements".into(),
                        ))
                    }
                },
                (Some(_), _) => return Err(Error::Syntax("AS OF SYSTEM TIME misplaced".into())),
            }
        }
        return Ok(out);
    }
    parse_plain(sql)
}

fn parse_plain(sql: &str) -> Result<Vec<Stmt>> {
    let dialect = PostgreSqlDialect {};
    let mut p = Parser::new(&dialect).try_with_sql(sql).map_err(syntax)?;
    let mut out = Vec::new();
    loop {
        while p.consume_token(&Token::SemiColon) {}
        if p.peek_token().token == Token::EOF {
            return Ok(out);
        }
        // COPY is parsed here rather than in `concord_statement`: its errors
        // carry their own SQLSTATEs and must not fall back to sqlparser.
        let stmt = if crate::copy::at_copy(&p) {
            Stmt::Copy(Box::new(crate::copy::parse_copy(&mut p)?))
        } else {
            match p.maybe_parse(concord_statement).map_err(syntax)? {
                Some(s) => s,
                None => Stmt::Sql(Box::new(p.parse_statement().map_err(syntax)?)),
            }
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
    fn as_of_system_time_is_cut_out_of_selects() {
        let s = parse("SELECT k FROM t AS OF SYSTEM TIME '-10s'; SELECT 1").unwrap();
        assert_eq!(s.len(), 2);
        assert!(matches!(&s[0], Stmt::AsOf { at: AsOf::Ago(d), stmt }
            if *d == std::time::Duration::from_secs(10) && stmt.to_string() == "SELECT k FROM t"));
        assert!(matches!(&s[1], Stmt::Sql(_)));
        let s = parse("select count(*) from t where k in (select k from u) as of system time follower_read_timestamp()").unwrap();
        assert!(matches!(
            &s[0],
            Stmt::AsOf {
                at: AsOf::FollowerRead,
                ..
            }
        ));
        let s = parse("SELECT 1 AS OF SYSTEM TIME 1700000000000000000.0000000001").unwrap();
        assert!(matches!(
            &s[0],
            Stmt::AsOf {
                at: AsOf::WallNanos(1_700_000_000_000_000_000),
                ..
            }
        ));
        assert!(parse("SELECT 1 AS OF SYSTEM TIME 'yesterday'").is_err());
        assert!(parse("SELECT 1 AS OF SYSTEM TIME '-10s' ((").is_err());
        let s = parse("SELECT k FROM t AS OF SYSTEM TIME '-1s' WHERE k > 1 ORDER BY k").unwrap();
        assert!(matches!(&s[0], Stmt::AsOf { stmt, .. }
            if stmt.to_string() == "SELECT k FROM t WHERE k > 1 ORDER BY k"));
        // A column named system is not AS OF SYSTEM TIME.
        assert!(matches!(
            &parse("SELECT system FROM t").unwrap()[0],
            Stmt::Sql(_)
        ));
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
        for v in [
            "VACUUM",
            "vacuum analyze t",
            "VACUUM FULL VERBOSE t, u",
            "VACUUM (VERBOSE, ANALYZE) t (a, b)",
        ] {
            assert!(matches!(&parse(v).unwrap()[0], Stmt::Vacuum { .. }), "{v}");
        }
        assert!(parse("SELECT 1 SELECT 2").is_err());
    }
}
