//! `COPY`: the statement and its text and CSV data formats, as PostgreSQL 15
//! has them.
//!
//! # Pieces
//!
//! * [`parse_copy`] parses the statement from sqlparser tokens (the front
//!   parser in [`crate::parser`] calls it when a statement starts with
//!   `COPY`). Both syntaxes PostgreSQL accepts are parsed:
//!
//!   ```text
//!   COPY t [(c, …)] FROM STDIN | TO STDOUT [WITH] (option [value], …)
//!   COPY t [(c, …)] FROM STDIN | TO STDOUT [WITH] [BINARY] [DELIMITER [AS] 'c']
//!        [NULL [AS] 's'] [CSV [HEADER] [QUOTE [AS] 'q'] [ESCAPE [AS] 'e']] …
//!   COPY (query) TO STDOUT [WITH] (…) | legacy options
//!   ```
//!
//!   The options are then checked as `ProcessCopyOptions` does (same
//!   messages, same SQLSTATEs) into a [`CopyOptions`]. sqlparser's own
//!   `parse_copy` is not used: it rejects `WITH (FREEZE ON)` (what pgbench
//!   sends) and would take inline data after `FROM STDIN;`.
//! * [`CopyDecoder`] turns the CopyData payloads of `COPY FROM STDIN` into
//!   rows of optional strings (`None` = NULL). It follows PostgreSQL's two
//!   stages: `CopyReadLineText` finds the end of a line (a backslash in text
//!   format escapes the next byte, a newline inside CSV quotes belongs to the
//!   field, `\.` ends the data) and `CopyReadAttributesText/CSV` split the
//!   line into fields and undo the escapes. Lines may be split anywhere across
//!   payloads: the line scanner keeps its state and resumes where it stopped,
//!   so a long field spread over many payloads is scanned once.
//! * [`encode_row`] writes one row of `COPY TO STDOUT`, as
//!   `CopyAttributeOutText/CSV` do.
//!
//! Converting fields to column values (type input functions, defaults for
//! the columns not listed) is the caller's job, as are the checks that need
//! the table (unknown or duplicate columns in the column list, `FREEZE`
//! preconditions). [`CopyDecoder::with_columns`] makes the decoder check the
//! number of fields of each row with PostgreSQL's messages.
//!
//! Errors in the data are [`Error::BadCopyFileFormat`] (22P04), with the
//! context PostgreSQL gives (`COPY t, line 3: "…"`) appended to the message.
//!
//! # Not done
//!
//! * `FORMAT binary` is parsed and checked, but decoding it fails with 0A000
//!   and [`encode_row`] only writes text and CSV (callers reject binary).
//! * `FORCE_QUOTE`, `FORCE_NOT_NULL`, `FORCE_NULL`, `HEADER MATCH` and
//!   `COPY … FROM … WHERE` are rejected with 0A000.
//! * Files and programs (`COPY t FROM '/path'`, `PROGRAM`): 0A000.
//! * Only UTF-8 data: `ENCODING` accepts the names of UTF-8 only (other
//!   PostgreSQL encodings are 0A000). Invalid UTF-8 and NUL bytes are
//!   reported as 22P04 with PostgreSQL's message ("invalid byte sequence for
//!   encoding "UTF8": 0xff"), where PostgreSQL uses 22021.
//! * Data inline in the query string after `COPY … FROM STDIN;` (a psql
//!   script habit that PostgreSQL's server does not accept either) is a
//!   syntax error; the data must come as CopyData messages.

use sqlparser::ast::{ObjectName, Query};
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::Token;

use crate::error::{Error, Result};

/// A parsed `COPY` statement.
#[derive(Debug, Clone, PartialEq)]
pub struct CopyStmt {
    /// What is copied.
    pub target: CopyTarget,
    /// From the client or to the client.
    pub direction: CopyDirection,
    /// The checked options, with PostgreSQL's defaults filled in.
    pub options: CopyOptions,
}

/// What a `COPY` reads or writes.
#[derive(Debug, Clone, PartialEq)]
pub enum CopyTarget {
    /// A table, and the columns listed after it.
    Table {
        /// The table name, as written.
        name: ObjectName,
        /// The listed columns, lower-cased unless quoted; empty = all
        /// columns.
        columns: Vec<String>,
    },
    /// `COPY (query) TO STDOUT`.
    Query(Box<Query>),
}

/// The direction of a `COPY`. (`STDIN` and `STDOUT` are interchangeable in
/// PostgreSQL's grammar: `COPY t TO STDIN` writes to the client.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyDirection {
    /// `COPY … FROM STDIN`: the client sends CopyData.
    FromStdin,
    /// `COPY … TO STDOUT`: the server sends CopyData.
    ToStdout,
}

/// The data format of a `COPY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyFormat {
    /// Tab-separated lines with backslash escapes (the default).
    Text,
    /// Comma-separated values with quoting.
    Csv,
    /// PostgreSQL's binary format (parsed, not supported).
    Binary,
}

/// The options of a `COPY`, checked, with PostgreSQL's defaults.
///
/// `delimiter`, `quote` and `escape` are single-byte (ASCII) characters when
/// they come from [`parse_copy`]; the decoder and encoder rely on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyOptions {
    /// The data format.
    pub format: CopyFormat,
    /// The field separator: tab (text) or comma (CSV) by default.
    pub delimiter: char,
    /// The representation of NULL: `\N` (text) or the empty string (CSV).
    pub null: String,
    /// The first line is a header: skipped on input, written on output.
    pub header: bool,
    /// The CSV quote character (`"`); unused in text format.
    pub quote: char,
    /// The CSV escape character inside quotes (the quote by default);
    /// unused in text format.
    pub escape: char,
    /// `FREEZE`: a hint PostgreSQL uses for freshly created tables.
    pub freeze: bool,
}

impl Default for CopyOptions {
    fn default() -> Self {
        Self::text()
    }
}

impl CopyOptions {
    /// The defaults of the text format.
    pub fn text() -> Self {
        CopyOptions {
            format: CopyFormat::Text,
            delimiter: '\t',
            null: "\\N".into(),
            header: false,
            quote: '"',
            escape: '"',
            freeze: false,
        }
    }

    /// The defaults of the CSV format.
    pub fn csv() -> Self {
        CopyOptions {
            format: CopyFormat::Csv,
            delimiter: ',',
            null: String::new(),
            ..Self::text()
        }
    }
}

// ---------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------

fn syntax(e: ParserError) -> Error {
    let msg = e.to_string();
    Error::Syntax(msg.trim_start_matches("sql parser error: ").to_string())
}

fn is_word(t: &Token, word: &str) -> bool {
    matches!(t, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word))
}

fn peek_word(p: &Parser, word: &str) -> bool {
    is_word(&p.peek_token().token, word)
}

fn eat_word(p: &mut Parser, word: &str) -> bool {
    if peek_word(p, word) {
        p.next_token();
        true
    } else {
        false
    }
}

fn expected(what: &str, found: &Token) -> Error {
    Error::Syntax(format!("Expected: {what}, found: {found}"))
}

/// A string constant (PostgreSQL's `Sconst`).
fn sconst(t: &Token) -> Option<String> {
    match t {
        Token::SingleQuotedString(s)
        | Token::EscapedStringLiteral(s)
        | Token::UnicodeStringLiteral(s) => Some(s.clone()),
        Token::DollarQuotedString(s) => Some(s.value.clone()),
        _ => None,
    }
}

fn parse_sconst(p: &mut Parser) -> Result<String> {
    let t = p.next_token().token;
    sconst(&t).ok_or_else(|| expected("a string constant", &t))
}

/// An identifier: lower-cased unless quoted.
fn parse_name(p: &mut Parser) -> Result<String> {
    match p.next_token().token {
        Token::Word(w) if w.quote_style.is_some() => Ok(w.value),
        Token::Word(w) => Ok(w.value.to_lowercase()),
        other => Err(expected("identifier", &other)),
    }
}

/// The argument of an option, as PostgreSQL's grammar gives it to
/// `ProcessCopyOptions` (a DefElem's `arg`).
#[derive(Debug, Clone, PartialEq)]
enum OptArg {
    /// A string or a word.
    Str(String),
    /// An integer (`ICONST`).
    Int(i64),
    /// Another number, as written.
    Num(String),
    /// `*`.
    Star,
    /// `(a, b, …)`.
    List(Vec<String>),
}

/// One option (a DefElem): its lower-case name and its argument.
#[derive(Debug, Clone)]
struct DefElem {
    name: String,
    arg: Option<OptArg>,
}

impl DefElem {
    fn new(name: &str, arg: Option<OptArg>) -> Self {
        DefElem {
            name: name.into(),
            arg,
        }
    }

    /// `defGetString`.
    fn string(&self) -> Result<String> {
        match &self.arg {
            None => Err(Error::Syntax(format!("{} requires a parameter", self.name))),
            Some(OptArg::Str(s) | OptArg::Num(s)) => Ok(s.clone()),
            Some(OptArg::Int(i)) => Ok(i.to_string()),
            Some(OptArg::Star) => Ok("*".into()),
            Some(OptArg::List(l)) => Ok(l.join(".")),
        }
    }

    /// `defGetBoolean`, and `defGetCopyHeaderChoice` when `matchable`
    /// (then `Ok(None)` is `MATCH`).
    fn boolean(&self, matchable: bool) -> Result<Option<bool>> {
        let v = match &self.arg {
            None => Some(true),
            Some(OptArg::Int(0)) => Some(false),
            Some(OptArg::Int(1)) => Some(true),
            Some(OptArg::Int(_)) => None,
            Some(_) => {
                let s = self.string()?.to_ascii_lowercase();
                match s.as_str() {
                    "true" | "on" => Some(true),
                    "false" | "off" => Some(false),
                    "match" if matchable => return Ok(None),
                    _ => None,
                }
            }
        };
        match v {
            Some(b) => Ok(Some(b)),
            None if matchable => Err(Error::Syntax(format!(
                "{} requires a Boolean value or \"match\"",
                self.name
            ))),
            None => Err(Error::Syntax(format!(
                "{} requires a Boolean value",
                self.name
            ))),
        }
    }
}

/// A number token, optionally signed, as an option argument.
fn number_arg(n: &str, negative: bool) -> OptArg {
    let text = if negative {
        format!("-{n}")
    } else {
        n.to_string()
    };
    match text.parse::<i32>() {
        Ok(i) => OptArg::Int(i64::from(i)),
        Err(_) => OptArg::Num(text),
    }
}

/// The argument of a generic option: `opt_boolean_or_string | NumericOnly |
/// '*' | '(' list ')' | nothing`.
fn parse_generic_arg(p: &mut Parser) -> Result<Option<OptArg>> {
    let t = p.peek_token().token;
    let arg = match &t {
        Token::Comma | Token::RParen => return Ok(None),
        Token::Word(w) if w.quote_style.is_none() => OptArg::Str(w.value.to_lowercase()),
        Token::Word(w) => OptArg::Str(w.value.clone()),
        Token::Number(n, _) => number_arg(n, false),
        Token::Plus | Token::Minus => {
            p.next_token();
            let negative = t == Token::Minus;
            return match p.next_token().token {
                Token::Number(n, _) => Ok(Some(number_arg(&n, negative))),
                other => Err(expected("a number", &other)),
            };
        }
        Token::Mul => OptArg::Star,
        Token::LParen => {
            p.next_token();
            let mut items = Vec::new();
            loop {
                let t = p.next_token().token;
                match &t {
                    Token::Word(w) if w.quote_style.is_none() => items.push(w.value.to_lowercase()),
                    Token::Word(w) => items.push(w.value.clone()),
                    other => match sconst(other) {
                        Some(s) => items.push(s),
                        None => return Err(expected("a name or a string", other)),
                    },
                }
                match p.next_token().token {
                    Token::Comma => {}
                    Token::RParen => break,
                    other => return Err(expected(", or )", &other)),
                }
            }
            return Ok(Some(OptArg::List(items)));
        }
        other => match sconst(other) {
            Some(s) => OptArg::Str(s),
            None => return Err(expected("an option value", other)),
        },
    };
    p.next_token();
    Ok(Some(arg))
}

/// `( name [arg], … )` after the opening parenthesis.
fn parse_generic_options(p: &mut Parser, elems: &mut Vec<DefElem>) -> Result<()> {
    loop {
        let name = parse_name(p)?;
        let arg = parse_generic_arg(p)?;
        elems.push(DefElem { name, arg });
        match p.next_token().token {
            Token::Comma => {}
            Token::RParen => return Ok(()),
            other => return Err(expected(", or )", &other)),
        }
    }
}

/// `FORCE QUOTE` / `FORCE NOT NULL` / `FORCE NULL` arguments: `*` or a
/// column list without parentheses.
fn parse_force_columns(p: &mut Parser, star_ok: bool) -> Result<OptArg> {
    if star_ok && p.consume_token(&Token::Mul) {
        return Ok(OptArg::Star);
    }
    let mut cols = vec![parse_name(p)?];
    while p.consume_token(&Token::Comma) {
        cols.push(parse_name(p)?);
    }
    Ok(OptArg::List(cols))
}

/// The legacy options (no parentheses, no commas), as long as they come.
fn parse_legacy_options(p: &mut Parser, elems: &mut Vec<DefElem>) -> Result<()> {
    loop {
        let e = if eat_word(p, "BINARY") {
            DefElem::new("format", Some(OptArg::Str("binary".into())))
        } else if eat_word(p, "CSV") {
            DefElem::new("format", Some(OptArg::Str("csv".into())))
        } else if eat_word(p, "FREEZE") {
            DefElem::new("freeze", None)
        } else if eat_word(p, "HEADER") {
            DefElem::new("header", None)
        } else if let Some(name) = ["DELIMITER", "NULL", "QUOTE", "ESCAPE"]
            .into_iter()
            .find(|w| peek_word(p, w))
        {
            p.next_token();
            eat_word(p, "AS");
            let s = parse_sconst(p)?;
            DefElem::new(&name.to_ascii_lowercase(), Some(OptArg::Str(s)))
        } else if eat_word(p, "ENCODING") {
            let s = parse_sconst(p)?;
            DefElem::new("encoding", Some(OptArg::Str(s)))
        } else if eat_word(p, "FORCE") {
            if eat_word(p, "QUOTE") {
                DefElem::new("force_quote", Some(parse_force_columns(p, true)?))
            } else if eat_word(p, "NOT") {
                if !eat_word(p, "NULL") {
                    return Err(expected("NULL", &p.peek_token().token));
                }
                DefElem::new("force_not_null", Some(parse_force_columns(p, false)?))
            } else if eat_word(p, "NULL") {
                DefElem::new("force_null", Some(parse_force_columns(p, false)?))
            } else {
                return Err(expected("QUOTE, NOT NULL or NULL", &p.peek_token().token));
            }
        } else {
            return Ok(());
        };
        elems.push(e);
    }
}

/// Where the data goes or comes from: `STDIN`/`STDOUT` (the only ones
/// supported), a file name, or `PROGRAM 'command'`. Returns what is not
/// supported, to be reported once the whole statement parsed.
fn parse_copy_file(p: &mut Parser) -> Result<Option<&'static str>> {
    let program = eat_word(p, "PROGRAM");
    let t = p.next_token().token;
    if is_word(&t, "STDIN") || is_word(&t, "STDOUT") {
        if program {
            return Err(Error::Syntax(
                "STDIN/STDOUT not allowed with PROGRAM".into(),
            ));
        }
        return Ok(None);
    }
    match sconst(&t) {
        Some(_) if program => Ok(Some(
            "COPY to or from an external program is not supported; use STDIN/STDOUT",
        )),
        Some(_) => Ok(Some(
            "COPY to or from a file is not supported; use STDIN/STDOUT",
        )),
        None => Err(expected("STDIN, STDOUT or a file name", &t)),
    }
}

/// Whether the parser is at a `COPY` statement.
pub fn at_copy(p: &Parser) -> bool {
    peek_word(p, "COPY")
}

/// Parses a `COPY` statement, from its `COPY` keyword to its end (not
/// consuming a `;`), and checks its options.
pub fn parse_copy(p: &mut Parser) -> Result<CopyStmt> {
    if !eat_word(p, "COPY") {
        return Err(expected("COPY", &p.peek_token().token));
    }
    let mut elems = Vec::new();
    let (target, direction, unsupported);
    if p.consume_token(&Token::LParen) {
        let query = p.parse_query().map_err(syntax)?;
        p.expect_token(&Token::RParen).map_err(syntax)?;
        if !eat_word(p, "TO") {
            return Err(expected("TO", &p.peek_token().token));
        }
        direction = CopyDirection::ToStdout;
        unsupported = parse_copy_file(p)?;
        target = CopyTarget::Query(query);
    } else {
        if eat_word(p, "BINARY") {
            elems.push(DefElem::new("format", Some(OptArg::Str("binary".into()))));
        }
        let name = p.parse_object_name(false).map_err(syntax)?;
        let mut columns = Vec::new();
        if p.consume_token(&Token::LParen) {
            loop {
                columns.push(parse_name(p)?);
                if !p.consume_token(&Token::Comma) {
                    break;
                }
            }
            p.expect_token(&Token::RParen).map_err(syntax)?;
        }
        direction = if eat_word(p, "FROM") {
            CopyDirection::FromStdin
        } else if eat_word(p, "TO") {
            CopyDirection::ToStdout
        } else {
            return Err(expected("FROM or TO", &p.peek_token().token));
        };
        unsupported = parse_copy_file(p)?;
        // Old syntax: [USING] DELIMITERS 'c'.
        let using = eat_word(p, "USING");
        if using || peek_word(p, "DELIMITERS") {
            if !eat_word(p, "DELIMITERS") {
                return Err(expected("DELIMITERS", &p.peek_token().token));
            }
            let s = parse_sconst(p)?;
            elems.push(DefElem::new("delimiter", Some(OptArg::Str(s))));
        }
        target = CopyTarget::Table { name, columns };
    }
    eat_word(p, "WITH");
    if p.consume_token(&Token::LParen) {
        parse_generic_options(p, &mut elems)?;
    } else {
        parse_legacy_options(p, &mut elems)?;
    }
    let next = p.peek_token().token;
    if is_word(&next, "WHERE") {
        return Err(Error::FeatureNotSupported(match direction {
            CopyDirection::ToStdout => "WHERE clause not allowed with COPY TO".into(),
            CopyDirection::FromStdin => "COPY FROM … WHERE is not supported".into(),
        }));
    }
    if matches!(next, Token::CopyData { .. }) {
        return Err(Error::Syntax(
            "COPY data cannot follow COPY … FROM STDIN in the query string; \
             send it in CopyData messages"
                .into(),
        ));
    }
    if !matches!(next, Token::EOF | Token::SemiColon) {
        return Err(expected("end of statement", &next));
    }
    if let Some(msg) = unsupported {
        return Err(Error::FeatureNotSupported(msg.into()));
    }
    let options = process_options(&elems, direction == CopyDirection::FromStdin)?;
    Ok(CopyStmt {
        target,
        direction,
        options,
    })
}

/// Encoding names PostgreSQL knows (after `clean_encoding_name`: lower
/// case, letters and digits only), other than UTF-8's.
const OTHER_ENCODINGS: &str =
    "abc alt big5 euccn eucjis2004 eucjp euckr euctw gb18030 gbk iso88591 \
     iso885910 iso885913 iso885914 iso885915 iso885916 iso88592 iso88593 \
     iso88594 iso88595 iso88596 iso88597 iso88598 iso88599 johab koi8 koi8r \
     koi8u latin1 latin10 latin2 latin3 latin4 latin5 latin6 latin7 latin8 \
     latin9 mskanji muleinternal shiftjis shiftjis2004 sjis sqlascii tcvn \
     tcvn5712 uhc vscii win win1250 win1251 win1252 win1253 win1254 win1255 \
     win1256 win1257 win1258 win866 win874 win932 win936 win949 win950 \
     windows1250 windows1251 windows1252 windows1253 windows1254 \
     windows1255 windows1256 windows1257 windows1258 windows866 windows874 \
     windows932 windows936 windows949 windows950";

/// `ProcessCopyOptions`: the options in order, then the checks of their
/// combination, with PostgreSQL's messages and codes.
fn process_options(elems: &[DefElem], is_from: bool) -> Result<CopyOptions> {
    let conflict = || Error::Syntax("conflicting or redundant options".into());
    let mut format: Option<CopyFormat> = None;
    let mut freeze: Option<bool> = None;
    let mut header: Option<bool> = None;
    let mut delimiter: Option<String> = None;
    let mut null: Option<String> = None;
    let mut quote: Option<String> = None;
    let mut escape: Option<String> = None;
    let mut encoding = false;
    for e in elems {
        match e.name.as_str() {
            "format" => {
                let f = e.string()?;
                if format.is_some() {
                    return Err(conflict());
                }
                format = Some(match f.as_str() {
                    "text" => CopyFormat::Text,
                    "csv" => CopyFormat::Csv,
                    "binary" => CopyFormat::Binary,
                    _ => {
                        return Err(Error::InvalidParameterValue(format!(
                            "COPY format \"{f}\" not recognized"
                        )))
                    }
                });
            }
            "freeze" => {
                if freeze.is_some() {
                    return Err(conflict());
                }
                freeze = e.boolean(false)?;
            }
            "delimiter" => {
                if delimiter.is_some() {
                    return Err(conflict());
                }
                delimiter = Some(e.string()?);
            }
            "null" => {
                if null.is_some() {
                    return Err(conflict());
                }
                null = Some(e.string()?);
            }
            "header" => {
                if header.is_some() {
                    return Err(conflict());
                }
                match e.boolean(true)? {
                    Some(b) => header = Some(b),
                    None if !is_from => {
                        return Err(Error::FeatureNotSupported(format!(
                            "cannot use \"{}\" with HEADER in COPY TO",
                            e.string()?
                        )))
                    }
                    None => {
                        return Err(Error::FeatureNotSupported(
                            "COPY FROM with HEADER MATCH is not supported".into(),
                        ))
                    }
                }
            }
            "quote" => {
                if quote.is_some() {
                    return Err(conflict());
                }
                quote = Some(e.string()?);
            }
            "escape" => {
                if escape.is_some() {
                    return Err(conflict());
                }
                escape = Some(e.string()?);
            }
            "force_quote" | "force_not_null" | "force_null" => {
                if !matches!(e.arg, Some(OptArg::Star | OptArg::List(_))) {
                    return Err(Error::InvalidParameterValue(format!(
                        "argument to option \"{}\" must be a list of column names",
                        e.name
                    )));
                }
                return Err(Error::FeatureNotSupported(format!(
                    "COPY {} is not supported",
                    e.name.to_ascii_uppercase()
                )));
            }
            "encoding" => {
                if encoding {
                    return Err(conflict());
                }
                encoding = true;
                let name = e.string()?;
                let clean: String = name
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric())
                    .map(|c| c.to_ascii_lowercase())
                    .collect();
                if clean != "utf8" && clean != "unicode" {
                    if OTHER_ENCODINGS.split_whitespace().any(|n| n == clean) {
                        return Err(Error::FeatureNotSupported(format!(
                            "COPY encoding \"{name}\": only UTF8 is supported"
                        )));
                    }
                    return Err(Error::InvalidParameterValue(format!(
                        "argument to option \"{}\" must be a valid encoding name",
                        e.name
                    )));
                }
            }
            other => {
                return Err(Error::Syntax(format!("option \"{other}\" not recognized")));
            }
        }
    }

    let format = format.unwrap_or(CopyFormat::Text);
    let csv = format == CopyFormat::Csv;
    if format == CopyFormat::Binary && delimiter.is_some() {
        return Err(Error::Syntax(
            "cannot specify DELIMITER in BINARY mode".into(),
        ));
    }
    if format == CopyFormat::Binary && null.is_some() {
        return Err(Error::Syntax("cannot specify NULL in BINARY mode".into()));
    }
    let delimiter = delimiter.unwrap_or_else(|| if csv { "," } else { "\t" }.into());
    let null = null.unwrap_or_else(|| if csv { "" } else { "\\N" }.into());
    let quote_given = quote.is_some();
    let escape_given = escape.is_some();
    let quote = quote.unwrap_or_else(|| "\"".into());
    let escape = escape.unwrap_or_else(|| quote.clone());
    let Some(delim) = one_byte(&delimiter) else {
        return Err(Error::FeatureNotSupported(
            "COPY delimiter must be a single one-byte character".into(),
        ));
    };
    if delim == '\r' || delim == '\n' {
        return Err(Error::InvalidParameterValue(
            "COPY delimiter cannot be newline or carriage return".into(),
        ));
    }
    if null.contains(['\r', '\n']) {
        return Err(Error::InvalidParameterValue(
            "COPY null representation cannot use newline or carriage return".into(),
        ));
    }
    if !csv && "\\.abcdefghijklmnopqrstuvwxyz0123456789".contains(delim) {
        return Err(Error::InvalidParameterValue(format!(
            "COPY delimiter cannot be \"{delim}\""
        )));
    }
    if format == CopyFormat::Binary && header == Some(true) {
        return Err(Error::FeatureNotSupported(
            "cannot specify HEADER in BINARY mode".into(),
        ));
    }
    let quote_char = csv_char("quote", &quote, quote_given, csv, '"')?;
    if csv && delim == quote_char {
        return Err(Error::InvalidParameterValue(
            "COPY delimiter and quote must be different".into(),
        ));
    }
    let escape_char = csv_char("escape", &escape, escape_given, csv, quote_char)?;
    if null.contains(delim) {
        return Err(Error::InvalidParameterValue(
            "COPY delimiter must not appear in the NULL specification".into(),
        ));
    }
    if csv && null.contains(quote_char) {
        return Err(Error::InvalidParameterValue(
            "CSV quote character must not appear in the NULL specification".into(),
        ));
    }
    Ok(CopyOptions {
        format,
        delimiter: delim,
        null,
        header: header.unwrap_or(false),
        quote: quote_char,
        escape: escape_char,
        freeze: freeze.unwrap_or(false),
    })
}

/// The character of a one-byte (ASCII) option value.
fn one_byte(s: &str) -> Option<char> {
    match s.as_bytes() {
        [b] if b.is_ascii() => Some(char::from(*b)),
        _ => None,
    }
}

/// The QUOTE or ESCAPE character (`name`): CSV only, one byte; `default`
/// outside CSV, where it is unused.
fn csv_char(name: &str, value: &str, given: bool, csv: bool, default: char) -> Result<char> {
    if !csv && given {
        return Err(Error::FeatureNotSupported(format!(
            "COPY {name} available only in CSV mode"
        )));
    }
    match one_byte(value) {
        Some(c) => Ok(c),
        None if csv => Err(Error::FeatureNotSupported(format!(
            "COPY {name} must be a single one-byte character"
        ))),
        None => Ok(default),
    }
}

// ---------------------------------------------------------------------------
// Decoding (COPY FROM STDIN)
// ---------------------------------------------------------------------------

/// One decoded row: a field per column, `None` for NULL.
pub type CopyRow = Vec<Option<String>>;

/// The byte of a single-byte option character. Characters that are not
/// ASCII never come from [`parse_copy`]; NUL, which valid data never
/// contains, stands in for them.
fn option_byte(c: char) -> u8 {
    u8::try_from(c).ok().filter(u8::is_ascii).unwrap_or(0)
}

/// The line ending style, fixed by the first line (PostgreSQL's `EolType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Eol {
    Unknown,
    Nl,
    Cr,
    CrNl,
}

/// How a line ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineEnd {
    /// At a newline; the next line starts at this index.
    Newline(usize),
    /// At the end-of-data marker `\.`.
    Marker,
    /// At the end of the data.
    Eof,
}

/// Finds the ends of lines, as `CopyReadLineText` does, resumably: when the
/// data runs out in the middle of a line, the scanner keeps its position
/// and state and goes on when more data comes.
#[derive(Debug)]
struct LineScanner {
    csv: bool,
    quote: u8,
    escape: u8,
    eol: Eol,
    /// The next byte to look at (an index into the decoder's buffer).
    pos: usize,
    in_quote: bool,
    last_was_esc: bool,
    first_char: bool,
    /// Newlines inside quotes in the current line (PostgreSQL counts them
    /// as lines).
    embedded: u64,
}

impl LineScanner {
    fn start_line(&mut self, at: usize) {
        self.pos = at;
        self.in_quote = false;
        self.last_was_esc = false;
        self.first_char = true;
        self.embedded = 0;
    }

    /// Scans on from `pos` for the end of the current line. Returns the end
    /// of the line's content and how it ended, or `None` if more data is
    /// needed (only when `!eof`). Errors are PostgreSQL's messages.
    fn scan(
        &mut self,
        buf: &[u8],
        eof: bool,
    ) -> std::result::Result<Option<(usize, LineEnd)>, &'static str> {
        let csv = self.csv;
        let need_more = |i: usize| i >= buf.len() && !eof;
        loop {
            let prev = self.pos;
            let Some(&c) = buf.get(prev) else {
                return Ok(eof.then_some((buf.len(), LineEnd::Eof)));
            };
            // Everything below may need to look ahead: when the data is
            // short, put the state back and wait for more.
            let saved = (self.in_quote, self.last_was_esc, self.embedded, self.eol);
            macro_rules! wait_if_short {
                ($i:expr) => {
                    if need_more($i) {
                        (self.in_quote, self.last_was_esc, self.embedded, self.eol) = saved;
                        self.pos = prev;
                        return Ok(None);
                    }
                };
            }
            if csv && (c == b'\\' || c == b'\r') {
                wait_if_short!(prev + 1);
            }
            self.pos += 1;
            if csv {
                if self.in_quote && c == self.escape {
                    self.last_was_esc = !self.last_was_esc;
                }
                if c == self.quote && !self.last_was_esc {
                    self.in_quote = !self.in_quote;
                }
                if c != self.escape {
                    self.last_was_esc = false;
                }
                let nl = if self.eol == Eol::Nl { b'\n' } else { b'\r' };
                if self.in_quote && c == nl {
                    self.embedded += 1;
                }
            }
            let unquoted = !csv || !self.in_quote;
            if c == b'\r' && unquoted {
                match self.eol {
                    Eol::Unknown | Eol::CrNl => {
                        wait_if_short!(self.pos);
                        if buf.get(self.pos) == Some(&b'\n') {
                            self.pos += 1;
                            self.eol = Eol::CrNl;
                        } else if self.eol == Eol::CrNl {
                            return Err(literal_cr(csv));
                        } else {
                            self.eol = Eol::Cr;
                        }
                    }
                    Eol::Nl => return Err(literal_cr(csv)),
                    Eol::Cr => {}
                }
                return Ok(Some((prev, LineEnd::Newline(self.pos))));
            }
            if c == b'\n' && unquoted {
                if matches!(self.eol, Eol::Cr | Eol::CrNl) {
                    return Err(if csv {
                        "unquoted newline found in data"
                    } else {
                        "literal newline found in data"
                    });
                }
                self.eol = Eol::Nl;
                return Ok(Some((prev, LineEnd::Newline(self.pos))));
            }
            if c == b'\\' && (!csv || self.first_char) {
                wait_if_short!(self.pos);
                let Some(&c2) = buf.get(self.pos) else {
                    // A backslash just before the end: data.
                    return Ok(Some((buf.len(), LineEnd::Eof)));
                };
                if c2 == b'.' {
                    self.pos += 1;
                    // The end-of-data marker must end its line, in the
                    // line ending style of the data (in CSV, `\.` followed
                    // by more is a data value).
                    let mut marker = true;
                    if self.eol == Eol::CrNl {
                        wait_if_short!(self.pos);
                        let c3 = buf.get(self.pos).copied().unwrap_or(0);
                        self.pos += 1;
                        if c3 == b'\n' {
                            if !csv {
                                return Err(
                                    "end-of-copy marker does not match previous newline style",
                                );
                            }
                            marker = false;
                        } else if c3 != b'\r' {
                            if !csv {
                                return Err("end-of-copy marker corrupt");
                            }
                            marker = false;
                        }
                    }
                    if marker {
                        wait_if_short!(self.pos);
                        let c3 = buf.get(self.pos).copied().unwrap_or(0);
                        self.pos += 1;
                        let style_matches = match self.eol {
                            Eol::Nl | Eol::CrNl => c3 == b'\n',
                            Eol::Cr => c3 == b'\r',
                            Eol::Unknown => true,
                        };
                        if c3 != b'\r' && c3 != b'\n' {
                            if !csv {
                                return Err("end-of-copy marker corrupt");
                            }
                            marker = false;
                        } else if !style_matches {
                            return Err("end-of-copy marker does not match previous newline style");
                        }
                    }
                    if marker {
                        return Ok(Some((prev, LineEnd::Marker)));
                    }
                    // CSV data that starts with `\.`: go on after the
                    // backslash.
                    self.pos = prev + 1;
                } else if !csv {
                    // In text format the byte after a backslash is never
                    // special (not even a newline).
                    self.pos += 1;
                }
            }
            self.first_char = false;
        }
    }
}

fn literal_cr(csv: bool) -> &'static str {
    if csv {
        "unquoted carriage return found in data"
    } else {
        "literal carriage return found in data"
    }
}

/// PostgreSQL's `limit_printout_length`: at most 100 bytes of a line in an
/// error context.
fn limit_printout(line: &[u8]) -> String {
    const MAX: usize = 100;
    let s = String::from_utf8_lossy(line);
    if s.len() <= MAX {
        return s.into_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// `report_invalid_encoding` for UTF-8: the bytes of the bad character.
fn invalid_utf8(bytes: &[u8]) -> String {
    let len = match bytes.first() {
        Some(b) if b & 0xe0 == 0xc0 => 2,
        Some(b) if b & 0xf0 == 0xe0 => 3,
        Some(b) if b & 0xf8 == 0xf0 => 4,
        _ => 1,
    };
    let shown: Vec<String> = bytes
        .iter()
        .take(len)
        .map(|b| format!("0x{b:02x}"))
        .collect();
    format!(
        "invalid byte sequence for encoding \"UTF8\": {}",
        shown.join(" ")
    )
}

/// Checks that bytes are UTF-8 without NUL (PostgreSQL's
/// `pg_verifymbstr`), returning the message if not.
fn verify_utf8(bytes: &[u8]) -> std::result::Result<&str, String> {
    match std::str::from_utf8(bytes) {
        Ok(s) => match s.find('\0') {
            None => Ok(s),
            Some(i) => Err(invalid_utf8(&bytes[i..])),
        },
        Err(e) => {
            let at = e.valid_up_to();
            match bytes[..at].iter().position(|&b| b == 0) {
                Some(i) => Err(invalid_utf8(&bytes[i..])),
                None => Err(invalid_utf8(&bytes[at..])),
            }
        }
    }
}

/// Decodes the data of `COPY FROM STDIN` in text or CSV format.
///
/// Feed it every CopyData payload ([`CopyDecoder::feed`]) and call
/// [`CopyDecoder::finish`] at CopyDone. Once the end-of-data marker `\.`
/// has been seen, the rest of the data is ignored, as PostgreSQL does.
/// After an error the decoder returns that error again on every call.
#[derive(Debug)]
pub struct CopyDecoder {
    format: CopyFormat,
    delim: u8,
    quote: u8,
    escape: u8,
    null: Vec<u8>,
    /// The header line is still to be skipped.
    header_pending: bool,
    /// The table (for error contexts) and its columns (for field counts).
    table: Option<String>,
    columns: Option<Vec<String>>,
    /// Data not yet consumed; the current line starts at `line_start`.
    buf: Vec<u8>,
    line_start: usize,
    scanner: LineScanner,
    /// Lines read so far, counted as PostgreSQL does (`cur_lineno`).
    line_no: u64,
    /// The end of the data (marker or CopyDone) has been reached.
    done: bool,
    failed: Option<Error>,
}

impl CopyDecoder {
    /// A decoder for data in this format.
    pub fn new(options: &CopyOptions) -> Self {
        let csv = options.format == CopyFormat::Csv;
        let quote = option_byte(options.quote);
        let escape = option_byte(options.escape);
        CopyDecoder {
            format: options.format,
            delim: option_byte(options.delimiter),
            quote,
            escape,
            null: options.null.as_bytes().to_vec(),
            header_pending: options.header,
            table: None,
            columns: None,
            buf: Vec::new(),
            line_start: 0,
            scanner: LineScanner {
                csv,
                quote,
                // As in PostgreSQL, an escape that is the quote is no escape
                // for finding line ends: the quote just toggles.
                escape: if escape == quote { 0 } else { escape },
                eol: Eol::Unknown,
                pos: 0,
                in_quote: false,
                last_was_esc: false,
                first_char: true,
                embedded: 0,
            },
            line_no: 0,
            done: false,
            failed: None,
        }
    }

    /// Names the table in error contexts (`COPY t, line 3: "…"`) and checks
    /// that every row has one field per column: "extra data after last
    /// expected column", "missing data for column "c"" (22P04). With no
    /// columns, lines must be empty and rows have no fields.
    pub fn with_columns(mut self, table: &str, columns: Vec<String>) -> Self {
        self.table = Some(table.to_string());
        self.columns = Some(columns);
        self
    }

    /// The number of lines read so far (the header included), counted as
    /// PostgreSQL does (a CSV newline inside quotes counts as a line).
    pub fn lines(&self) -> u64 {
        self.line_no
    }

    /// Feeds one CopyData payload and returns the rows it completes. A line
    /// may be split anywhere across payloads, and a quoted CSV field may
    /// contain newlines.
    pub fn feed(&mut self, data: &[u8]) -> Result<Vec<CopyRow>> {
        Ok(strip_lines(self.feed_numbered(data)?))
    }

    /// At CopyDone: returns the last row if the data did not end with a
    /// newline; errors on an unterminated CSV quoted field.
    pub fn finish(&mut self) -> Result<Vec<CopyRow>> {
        Ok(strip_lines(self.finish_numbered()?))
    }

    /// As [`CopyDecoder::feed`], each row with its line number (for the
    /// caller's error contexts, e.g. a value that does not convert).
    pub fn feed_numbered(&mut self, data: &[u8]) -> Result<Vec<(u64, CopyRow)>> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.done {
            return Ok(Vec::new());
        }
        self.buf.extend_from_slice(data);
        self.run(false)
    }

    /// As [`CopyDecoder::finish`], each row with its line number.
    pub fn finish_numbered(&mut self) -> Result<Vec<(u64, CopyRow)>> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.done {
            return Ok(Vec::new());
        }
        let rows = self.run(true);
        self.done = true;
        self.buf = Vec::new();
        rows
    }

    fn run(&mut self, eof: bool) -> Result<Vec<(u64, CopyRow)>> {
        let r = self.run_inner(eof);
        if let Err(e) = &r {
            self.failed = Some(e.clone());
            self.done = true;
            self.buf = Vec::new();
        }
        r
    }

    fn run_inner(&mut self, eof: bool) -> Result<Vec<(u64, CopyRow)>> {
        if self.format == CopyFormat::Binary {
            return Err(Error::FeatureNotSupported(
                "COPY FROM STDIN in binary format is not supported".into(),
            ));
        }
        let mut rows = Vec::new();
        while !self.done {
            let scanned = match self.scanner.scan(&self.buf, eof) {
                Ok(s) => s,
                Err(msg) => {
                    let line = self.line_no + 1 + self.scanner.embedded;
                    return Err(self.error(msg, line, None));
                }
            };
            let Some((end, how)) = scanned else { break };
            self.line_no += 1 + self.scanner.embedded;
            let start = self.line_start;
            let last = !matches!(how, LineEnd::Newline(_));
            if self.header_pending {
                self.header_pending = false;
            } else if !(last && end == start) {
                let row = self.parse_line(start, end)?;
                rows.push((self.line_no, row));
            }
            match how {
                LineEnd::Newline(next) => {
                    self.line_start = next;
                    self.scanner.start_line(next);
                }
                LineEnd::Marker | LineEnd::Eof => {
                    self.done = true;
                    self.buf = Vec::new();
                    self.line_start = 0;
                }
            }
        }
        // Drop the consumed lines.
        if self.line_start > 0 {
            self.buf.drain(..self.line_start);
            self.scanner.pos -= self.line_start;
            self.line_start = 0;
        }
        Ok(rows)
    }

    /// A 22P04 error with PostgreSQL's context for the line.
    fn error(&self, msg: &str, line: u64, content: Option<&[u8]>) -> Error {
        let mut ctx = match &self.table {
            Some(t) => format!("COPY {t}, line {line}"),
            None => format!("line {line}"),
        };
        if let Some(c) = content {
            ctx.push_str(&format!(": \"{}\"", limit_printout(c)));
        }
        Error::BadCopyFileFormat(format!("{msg} ({ctx})"))
    }

    /// Splits the line `buf[start..end]` into fields and checks their count.
    fn parse_line(&self, start: usize, end: usize) -> Result<CopyRow> {
        let line = &self.buf[start..end];
        let err = |msg: &str| self.error(msg, self.line_no, Some(line));
        if let Err(msg) = verify_utf8(line) {
            return Err(err(&msg));
        }
        if self.columns.as_ref().is_some_and(Vec::is_empty) {
            // A table without columns: the line must be empty.
            if !line.is_empty() {
                return Err(err("extra data after last expected column"));
            }
            return Ok(Vec::new());
        }
        let fields = if self.format == CopyFormat::Csv {
            self.split_csv(line)
        } else {
            self.split_text(line)
        }
        .map_err(|m| err(&m))?;
        if let Some(cols) = &self.columns {
            if fields.len() > cols.len() {
                return Err(err("extra data after last expected column"));
            }
            if let Some(missing) = cols.get(fields.len()) {
                return Err(err(&format!("missing data for column \"{missing}\"")));
            }
        }
        Ok(fields)
    }

    /// `CopyReadAttributesText`.
    fn split_text(&self, line: &[u8]) -> std::result::Result<CopyRow, String> {
        let mut fields = Vec::new();
        let mut i = 0;
        loop {
            let start = i;
            let mut end;
            let mut out = Vec::new();
            let mut found_delim = false;
            loop {
                end = i;
                let Some(&first) = line.get(i) else { break };
                i += 1;
                if first == self.delim {
                    found_delim = true;
                    break;
                }
                let mut c = first;
                if c == b'\\' {
                    let Some(&next) = line.get(i) else { break };
                    i += 1;
                    c = match next {
                        b'0'..=b'7' => {
                            let mut val = u32::from(next - b'0');
                            for _ in 0..2 {
                                match line.get(i) {
                                    Some(&d @ b'0'..=b'7') => {
                                        i += 1;
                                        val = (val << 3) + u32::from(d - b'0');
                                    }
                                    _ => break,
                                }
                            }
                            (val & 0o377) as u8
                        }
                        b'x' => match line.get(i).and_then(|&h| hex_value(h)) {
                            Some(h1) => {
                                i += 1;
                                let mut val = h1;
                                if let Some(h2) = line.get(i).and_then(|&h| hex_value(h)) {
                                    i += 1;
                                    val = (val << 4) + h2;
                                }
                                val
                            }
                            None => b'x',
                        },
                        b'b' => 0x08,
                        b'f' => 0x0c,
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'v' => 0x0b,
                        other => other,
                    };
                }
                out.push(c);
            }
            // The NULL string is compared with the raw (escaped) field.
            if line[start..end] == self.null[..] {
                fields.push(None);
            } else {
                verify_utf8(&out)?;
                fields.push(Some(
                    String::from_utf8(out).map_err(|e| invalid_utf8(e.as_bytes()))?,
                ));
            }
            if !found_delim {
                return Ok(fields);
            }
        }
    }

    /// `CopyReadAttributesCSV`.
    fn split_csv(&self, line: &[u8]) -> std::result::Result<CopyRow, String> {
        let mut fields = Vec::new();
        let mut i = 0;
        loop {
            let start = i;
            let mut end;
            let mut out = Vec::new();
            let mut found_delim = false;
            let mut saw_quote = false;
            'field: loop {
                // Not in quotes.
                loop {
                    end = i;
                    let Some(&c) = line.get(i) else {
                        break 'field;
                    };
                    i += 1;
                    if c == self.delim {
                        found_delim = true;
                        break 'field;
                    }
                    if c == self.quote {
                        saw_quote = true;
                        break;
                    }
                    out.push(c);
                }
                // In quotes.
                loop {
                    let Some(&c) = line.get(i) else {
                        return Err("unterminated CSV quoted field".into());
                    };
                    i += 1;
                    if c == self.escape {
                        if let Some(&next) = line.get(i) {
                            if next == self.escape || next == self.quote {
                                out.push(next);
                                i += 1;
                                continue;
                            }
                        }
                    }
                    if c == self.quote {
                        break;
                    }
                    out.push(c);
                }
            }
            if !saw_quote && line[start..end] == self.null[..] {
                fields.push(None);
            } else {
                // Fields are cut at ASCII bytes of valid UTF-8: still valid.
                fields.push(Some(
                    String::from_utf8(out).map_err(|e| invalid_utf8(e.as_bytes()))?,
                ));
            }
            if !found_delim {
                return Ok(fields);
            }
        }
    }
}

fn hex_value(h: u8) -> Option<u8> {
    char::from(h)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

fn strip_lines(rows: Vec<(u64, CopyRow)>) -> Vec<CopyRow> {
    rows.into_iter().map(|(_, r)| r).collect()
}

// ---------------------------------------------------------------------------
// Encoding (COPY TO STDOUT)
// ---------------------------------------------------------------------------

/// Appends one row in the COPY TO format, with its newline: text format
/// escapes backslash, the delimiter and `\b \f \n \r \t \v`; NULL is the
/// null string; CSV quotes a field when it contains the delimiter, the
/// quote, a newline or a carriage return, when it equals the null string,
/// or when it is `\.` alone on its line. Binary format is not supported:
/// callers reject it before the COPY starts (this writes text then).
pub fn encode_row(options: &CopyOptions, fields: &[Option<&str>], out: &mut Vec<u8>) {
    let delim = option_byte(options.delimiter);
    let single = fields.len() == 1;
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push(delim);
        }
        match field {
            None => out.extend_from_slice(options.null.as_bytes()),
            Some(s) if options.format == CopyFormat::Csv => {
                encode_csv_field(options, s, single, out)
            }
            Some(s) => encode_text_field(delim, s, out),
        }
    }
    out.push(b'\n');
}

/// Appends the header line of `COPY TO … HEADER`: the column names, encoded
/// as a row.
pub fn encode_header(options: &CopyOptions, names: &[&str], out: &mut Vec<u8>) {
    let fields: Vec<Option<&str>> = names.iter().map(|n| Some(*n)).collect();
    encode_row(options, &fields, out);
}

/// `CopyAttributeOutText`.
fn encode_text_field(delim: u8, s: &str, out: &mut Vec<u8>) {
    for &c in s.as_bytes() {
        let escaped = match c {
            0x08 => Some(b'b'),
            0x0c => Some(b'f'),
            b'\n' => Some(b'n'),
            b'\r' => Some(b'r'),
            b'\t' => Some(b't'),
            0x0b => Some(b'v'),
            _ => None,
        };
        match escaped {
            Some(e) => out.extend_from_slice(&[b'\\', e]),
            None if c == b'\\' || c == delim => out.extend_from_slice(&[b'\\', c]),
            None => out.push(c),
        }
    }
}

/// `CopyAttributeOutCSV`.
fn encode_csv_field(options: &CopyOptions, s: &str, single: bool, out: &mut Vec<u8>) {
    let delim = option_byte(options.delimiter);
    let quote = option_byte(options.quote);
    let escape = option_byte(options.escape);
    let needs_quote = s == options.null
        || (single && s == "\\.")
        || s.bytes()
            .any(|c| c == delim || c == quote || c == b'\n' || c == b'\r');
    if !needs_quote {
        out.extend_from_slice(s.as_bytes());
        return;
    }
    out.push(quote);
    for &c in s.as_bytes() {
        if c == quote || c == escape {
            out.push(escape);
        }
        out.push(c);
    }
    out.push(quote);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parser::{parse, Stmt};

    fn copy(sql: &str) -> CopyStmt {
        match parse(sql) {
            Ok(mut v) if v.len() == 1 => match v.remove(0) {
                Stmt::Copy(c) => *c,
                other => panic!("{sql}: not a COPY: {other:?}"),
            },
            other => panic!("{sql}: {other:?}"),
        }
    }

    fn copy_err(sql: &str) -> (String, &'static str) {
        match parse(sql) {
            Err(e) => (e.to_string(), e.sqlstate()),
            Ok(v) => panic!("{sql}: parsed: {v:?}"),
        }
    }

    fn table(c: &CopyStmt) -> (String, Vec<String>) {
        match &c.target {
            CopyTarget::Table { name, columns } => (name.to_string(), columns.clone()),
            CopyTarget::Query(q) => panic!("a query: {q}"),
        }
    }

    #[test]
    fn copy_parses_pgbench_and_psql_forms() {
        let c = copy("copy pgbench_accounts from stdin with (freeze on)");
        assert_eq!(table(&c), ("pgbench_accounts".into(), vec![]));
        assert_eq!(c.direction, CopyDirection::FromStdin);
        assert_eq!(
            c.options,
            CopyOptions {
                freeze: true,
                ..CopyOptions::text()
            }
        );
        let c = copy("COPY public.t (A, \"B\", c) TO STDOUT");
        assert_eq!(
            table(&c),
            ("public.t".into(), vec!["a".into(), "B".into(), "c".into()])
        );
        assert_eq!(c.direction, CopyDirection::ToStdout);
        assert_eq!(c.options, CopyOptions::text());
        // STDIN and STDOUT are interchangeable.
        assert_eq!(copy("COPY t TO STDIN").direction, CopyDirection::ToStdout);
        let c = copy("COPY (SELECT k, v FROM t WHERE k > 1) TO STDOUT WITH (FORMAT csv, HEADER)");
        match &c.target {
            CopyTarget::Query(q) => assert_eq!(q.to_string(), "SELECT k, v FROM t WHERE k > 1"),
            other => panic!("{other:?}"),
        }
        assert_eq!(c.options.format, CopyFormat::Csv);
        assert!(c.options.header);
        // Several statements, COPY among them.
        let s = parse("COPY t FROM STDIN; SELECT 1").unwrap();
        assert!(matches!(&s[0], Stmt::Copy(_)));
        assert!(matches!(&s[1], Stmt::Sql(_)));
    }

    #[test]
    fn copy_generic_options() {
        let c = copy(
            "COPY t FROM STDIN WITH (FORMAT csv, HEADER true, DELIMITER ';', NULL 'n/a', \
             QUOTE '''', ESCAPE '\\', FREEZE false, ENCODING 'UTF8')",
        );
        assert_eq!(
            c.options,
            CopyOptions {
                format: CopyFormat::Csv,
                delimiter: ';',
                null: "n/a".into(),
                header: true,
                quote: '\'',
                escape: '\\',
                freeze: false,
            }
        );
        for (v, want) in [
            ("", true),
            (" true", true),
            (" on", true),
            (" 1", true),
            (" 'TRUE'", true),
            (" false", false),
            (" off", false),
            (" 0", false),
        ] {
            let c = copy(&format!("COPY t FROM STDIN (HEADER{v})"));
            assert_eq!(c.options.header, want, "{v}");
            let c = copy(&format!("COPY t FROM STDIN (FREEZE{v})"));
            assert_eq!(c.options.freeze, want, "{v}");
        }
        // CSV defaults; escape defaults to the quote.
        let c = copy("COPY t TO STDOUT (FORMAT CSV, QUOTE '|')");
        assert_eq!(
            c.options,
            CopyOptions {
                quote: '|',
                escape: '|',
                ..CopyOptions::csv()
            }
        );
        assert_eq!(
            copy("COPY t FROM STDIN (DELIMITER E'\\x01', ENCODING 'utf-8')")
                .options
                .delimiter,
            '\x01'
        );
        assert_eq!(
            copy("COPY t FROM STDIN (FORMAT text, NULL '')")
                .options
                .null,
            ""
        );
        assert_eq!(
            copy("COPY t TO STDOUT (FORMAT binary)").options.format,
            CopyFormat::Binary
        );
    }

    #[test]
    fn copy_legacy_options() {
        let c = copy(
            "COPY t (a, b) FROM STDIN WITH CSV HEADER DELIMITER AS ';' NULL AS 'x' \
             QUOTE AS '\"' ESCAPE AS '\\'",
        );
        assert_eq!(
            c.options,
            CopyOptions {
                format: CopyFormat::Csv,
                delimiter: ';',
                null: "x".into(),
                header: true,
                quote: '"',
                escape: '\\',
                freeze: false,
            }
        );
        assert_eq!(
            copy("COPY t TO STDOUT BINARY").options.format,
            CopyFormat::Binary
        );
        assert_eq!(
            copy("COPY BINARY t FROM STDIN").options.format,
            CopyFormat::Binary
        );
        assert_eq!(
            copy("COPY t FROM STDIN USING DELIMITERS '|'")
                .options
                .delimiter,
            '|'
        );
        let c = copy("copy t to stdout delimiter E'\\t' null '' csv freeze");
        assert_eq!(c.options.delimiter, '\t');
        assert_eq!(c.options.null, "");
        assert!(c.options.freeze);
        assert_eq!(c.options.format, CopyFormat::Csv);
        let c = copy("COPY t FROM STDIN CSV ENCODING 'UTF8'");
        assert_eq!(c.options, CopyOptions::csv());
    }

    #[test]
    fn copy_option_errors_have_postgres_codes() {
        for (sql, code, msg) in [
            (
                "COPY t FROM STDIN (FORMAT csv, FORMAT text)",
                "42601",
                "conflicting or redundant options",
            ),
            (
                "COPY t FROM STDIN CSV BINARY",
                "42601",
                "conflicting or redundant options",
            ),
            (
                "COPY t FROM STDIN (BOGUS 1)",
                "42601",
                "option \"bogus\" not recognized",
            ),
            (
                "COPY t FROM STDIN (FORMAT xml)",
                "22023",
                "COPY format \"xml\" not recognized",
            ),
            (
                "COPY t FROM STDIN (FORMAT 'CSV')",
                "22023",
                "COPY format \"CSV\" not recognized",
            ),
            (
                "COPY t FROM STDIN (DELIMITER ',,')",
                "0A000",
                "COPY delimiter must be a single one-byte character",
            ),
            (
                "COPY t FROM STDIN (DELIMITER 'é')",
                "0A000",
                "COPY delimiter must be a single one-byte character",
            ),
            (
                "COPY t FROM STDIN (DELIMITER E'\\n')",
                "22023",
                "COPY delimiter cannot be newline or carriage return",
            ),
            (
                "COPY t FROM STDIN (DELIMITER '\\')",
                "22023",
                "COPY delimiter cannot be \"\\\"",
            ),
            (
                "COPY t FROM STDIN (DELIMITER 'a')",
                "22023",
                "COPY delimiter cannot be \"a\"",
            ),
            (
                "COPY t FROM STDIN (NULL E'a\\nb')",
                "22023",
                "COPY null representation cannot use newline or carriage return",
            ),
            (
                "COPY t FROM STDIN (QUOTE '\"')",
                "0A000",
                "COPY quote available only in CSV mode",
            ),
            (
                "COPY t FROM STDIN (ESCAPE '\\')",
                "0A000",
                "COPY escape available only in CSV mode",
            ),
            (
                "COPY t FROM STDIN (FORMAT csv, QUOTE '')",
                "0A000",
                "COPY quote must be a single one-byte character",
            ),
            (
                "COPY t FROM STDIN (FORMAT csv, ESCAPE 'ab')",
                "0A000",
                "COPY escape must be a single one-byte character",
            ),
            (
                "COPY t FROM STDIN (FORMAT csv, DELIMITER '\"')",
                "22023",
                "COPY delimiter and quote must be different",
            ),
            (
                "COPY t FROM STDIN (NULL 'a\tb')",
                "22023",
                "COPY delimiter must not appear in the NULL specification",
            ),
            (
                "COPY t FROM STDIN (FORMAT csv, NULL '\"')",
                "22023",
                "CSV quote character must not appear in the NULL specification",
            ),
            (
                "COPY t FROM STDIN (FORMAT binary, DELIMITER ',')",
                "42601",
                "cannot specify DELIMITER in BINARY mode",
            ),
            (
                "COPY t FROM STDIN BINARY NULL 'x'",
                "42601",
                "cannot specify NULL in BINARY mode",
            ),
            (
                "COPY t FROM STDIN (FORMAT binary, HEADER)",
                "0A000",
                "cannot specify HEADER in BINARY mode",
            ),
            (
                "COPY t FROM STDIN (HEADER maybe)",
                "42601",
                "header requires a Boolean value or \"match\"",
            ),
            (
                "COPY t FROM STDIN (HEADER 2)",
                "42601",
                "header requires a Boolean value or \"match\"",
            ),
            (
                "COPY t FROM STDIN (FREEZE 2)",
                "42601",
                "freeze requires a Boolean value",
            ),
            (
                "COPY t FROM STDIN (DELIMITER)",
                "42601",
                "delimiter requires a parameter",
            ),
            (
                "COPY t TO STDOUT (HEADER match)",
                "0A000",
                "cannot use \"match\" with HEADER in COPY TO",
            ),
            (
                "COPY t FROM STDIN (HEADER match)",
                "0A000",
                "HEADER MATCH is not supported",
            ),
            (
                "COPY t FROM STDIN (ENCODING 'LATIN1')",
                "0A000",
                "only UTF8 is supported",
            ),
            (
                "COPY t FROM STDIN (ENCODING 'klingon')",
                "22023",
                "argument to option \"encoding\" must be a valid encoding name",
            ),
            (
                "COPY t FROM STDIN (FORCE_NOT_NULL (a))",
                "0A000",
                "COPY FORCE_NOT_NULL is not supported",
            ),
            (
                "COPY t FROM STDIN (FORCE_NULL 'a')",
                "22023",
                "argument to option \"force_null\" must be a list of column names",
            ),
            (
                "COPY t TO STDOUT CSV FORCE QUOTE *",
                "0A000",
                "COPY FORCE_QUOTE is not supported",
            ),
            (
                "COPY t FROM STDIN CSV FORCE NOT NULL a, b",
                "0A000",
                "COPY FORCE_NOT_NULL is not supported",
            ),
            (
                "COPY t FROM '/tmp/t.csv'",
                "0A000",
                "COPY to or from a file is not supported; use STDIN/STDOUT",
            ),
            (
                "COPY t TO PROGRAM 'gzip > /tmp/x'",
                "0A000",
                "COPY to or from an external program is not supported",
            ),
            (
                "COPY t FROM PROGRAM STDIN",
                "42601",
                "STDIN/STDOUT not allowed with PROGRAM",
            ),
            (
                "COPY t FROM STDIN WHERE a > 1",
                "0A000",
                "WHERE is not supported",
            ),
            ("COPY (SELECT 1) FROM STDIN", "42601", "Expected: TO"),
            ("COPY t STDIN", "42601", "Expected: FROM or TO"),
            ("COPY t FROM STDIN ()", "42601", "Expected: identifier"),
            ("COPY t FROM STDIN (FORMAT csv", "42601", "Expected: , or )"),
            ("COPY t FROM STDIN CSV bogus", "42601", "end of statement"),
            (
                "COPY t FROM STDIN DELIMITER ,",
                "42601",
                "a string constant",
            ),
        ] {
            let (m, c) = copy_err(sql);
            assert_eq!(c, code, "{sql}: {m}");
            assert!(m.contains(msg), "{sql}: {m}");
        }
    }

    #[test]
    fn copy_with_inline_data_is_a_syntax_error() {
        let (m, c) = copy_err("COPY t FROM STDIN;\n1\t2\n\\.\n");
        assert_eq!(c, "42601", "{m}");
        assert!(m.contains("CopyData"), "{m}");
        // A bare COPY ending with `;` and a newline carries no data.
        assert!(matches!(
            &parse("COPY t FROM STDIN;\n").unwrap()[0],
            Stmt::Copy(_)
        ));
    }

    fn decode(options: &CopyOptions, data: &[u8]) -> Result<Vec<CopyRow>> {
        let mut d = CopyDecoder::new(options);
        let mut rows = d.feed(data)?;
        rows.extend(d.finish()?);
        Ok(rows)
    }

    /// Decodes feeding one byte at a time, and checks that it gives the
    /// same as feeding everything at once.
    fn decode_split(options: &CopyOptions, data: &[u8]) -> Result<Vec<CopyRow>> {
        let whole = decode(options, data);
        let mut d = CopyDecoder::new(options);
        let mut rows = Vec::new();
        let mut bytewise = Ok(());
        for b in data {
            match d.feed(std::slice::from_ref(b)) {
                Ok(r) => rows.extend(r),
                Err(e) => {
                    bytewise = Err(e);
                    break;
                }
            }
        }
        let bytewise = bytewise.and_then(|_| {
            rows.extend(d.finish()?);
            Ok(rows)
        });
        assert_eq!(
            format!("{whole:?}"),
            format!("{bytewise:?}"),
            "{:?}",
            String::from_utf8_lossy(data)
        );
        whole
    }

    fn row(fields: &[Option<&str>]) -> CopyRow {
        fields.iter().map(|f| f.map(str::to_string)).collect()
    }

    fn msg(r: Result<Vec<CopyRow>>) -> (String, &'static str) {
        match r {
            Err(e) => (e.to_string(), e.sqlstate()),
            Ok(rows) => panic!("decoded: {rows:?}"),
        }
    }

    #[test]
    fn text_rows_escapes_and_nulls() {
        let t = CopyOptions::text();
        let rows = decode_split(
            &t,
            b"1\tabc\t\\N\n2\ta\\tb\\nc\\\\d\\qf\t\\\\N\n3\t\\101\\x41\\x4a\\xg\\8\t\n",
        )
        .unwrap();
        assert_eq!(
            rows,
            vec![
                row(&[Some("1"), Some("abc"), None]),
                row(&[Some("2"), Some("a\tb\nc\\dqf"), Some("\\N")]),
                row(&[Some("3"), Some("AAJxg8"), Some("")]),
            ]
        );
        let rows = decode_split(&t, b"\\b\\f\\v\\r\\1011\\541\\303\\251\\xe2\\x82\\xac\n").unwrap();
        assert_eq!(rows, vec![row(&[Some("\x08\x0c\x0b\rA1aé€")])]);
        // Empty line = one empty field; a trailing backslash is dropped;
        // backslash-newline is a newline inside the field.
        let rows = decode_split(&t, b"\nab\\\ncd\tx\\").unwrap();
        assert_eq!(
            rows,
            vec![row(&[Some("")]), row(&[Some("ab\ncd"), Some("x")])]
        );
        // A custom delimiter and NULL string; the delimiter is escapable.
        let o = CopyOptions {
            delimiter: '|',
            null: "NULL".into(),
            ..CopyOptions::text()
        };
        let rows = decode_split(&o, b"a\\|b|NULL|\\N|\\NULL\n").unwrap();
        assert_eq!(
            rows,
            vec![row(&[Some("a|b"), None, Some("N"), Some("NULL")])]
        );
        // No newline at the end: the last row comes at finish.
        let mut d = CopyDecoder::new(&t);
        assert_eq!(
            d.feed(b"1\t2\n3").unwrap(),
            vec![row(&[Some("1"), Some("2")])]
        );
        assert_eq!(d.feed(b"\t4").unwrap(), Vec::<CopyRow>::new());
        assert_eq!(d.finish().unwrap(), vec![row(&[Some("3"), Some("4")])]);
        assert_eq!(d.lines(), 2);
        assert_eq!(decode(&t, b"").unwrap(), Vec::<CopyRow>::new());
    }

    #[test]
    fn text_end_marker_header_and_line_endings() {
        let t = CopyOptions::text();
        // Everything after `\.` is ignored.
        let rows = decode_split(&t, b"1\n2\n\\.\n3\ngarbage\\").unwrap();
        assert_eq!(rows, vec![row(&[Some("1")]), row(&[Some("2")])]);
        // In text format `\.` ends the data even after data on its line.
        let rows = decode_split(&t, b"1\nab\\.\n3\n").unwrap();
        assert_eq!(rows, vec![row(&[Some("1")]), row(&[Some("ab")])]);
        // An escaped backslash before a dot is data.
        let rows = decode_split(&t, b"\\\\.\n").unwrap();
        assert_eq!(rows, vec![row(&[Some("\\.")])]);
        let (m, c) = msg(decode_split(&t, b"1\n\\.x\n"));
        assert_eq!(c, "22P04");
        assert!(m.contains("end-of-copy marker corrupt (line 2)"), "{m}");
        let (m, _) = msg(decode_split(&t, b"1\n\\."));
        assert!(m.contains("end-of-copy marker corrupt"), "{m}");
        // Header.
        let h = CopyOptions {
            header: true,
            ..CopyOptions::text()
        };
        let rows = decode_split(&h, b"k\tv\n1\tx\n").unwrap();
        assert_eq!(rows, vec![row(&[Some("1"), Some("x")])]);
        assert_eq!(decode_split(&h, b"k\tv").unwrap(), Vec::<CopyRow>::new());
        assert_eq!(
            decode_split(&h, b"\\.\n1\n").unwrap(),
            Vec::<CopyRow>::new()
        );
        // CRLF and CR line endings; the marker follows the style.
        let rows = decode_split(&t, b"1\t2\r\n3\t4\r\n\\.\r\n").unwrap();
        assert_eq!(
            rows,
            vec![row(&[Some("1"), Some("2")]), row(&[Some("3"), Some("4")])]
        );
        let rows = decode_split(&t, b"1\r2\r\\.\r").unwrap();
        assert_eq!(rows, vec![row(&[Some("1")]), row(&[Some("2")])]);
        let (m, _) = msg(decode_split(&t, b"1\n2\r\n"));
        assert!(
            m.contains("literal carriage return found in data (line 2)"),
            "{m}"
        );
        let (m, _) = msg(decode_split(&t, b"1\r\n2\n"));
        assert!(m.contains("literal newline found in data (line 2)"), "{m}");
        let (m, _) = msg(decode_split(&t, b"1\r\n\\.\n"));
        assert!(
            m.contains("end-of-copy marker does not match previous newline style"),
            "{m}"
        );
        let (m, _) = msg(decode_split(&t, b"1\n\\.\r"));
        assert!(
            m.contains("end-of-copy marker does not match previous newline style"),
            "{m}"
        );
    }

    #[test]
    fn text_invalid_utf8_and_nul() {
        let t = CopyOptions::text();
        let (m, c) = msg(decode_split(&t, b"ok\nbad\xff\n"));
        assert_eq!(c, "22P04");
        assert!(
            m.contains("invalid byte sequence for encoding \"UTF8\": 0xff (line 2: \"bad"),
            "{m}"
        );
        let (m, _) = msg(decode_split(&t, b"a\\0b\n"));
        assert!(m.contains("\"UTF8\": 0x00"), "{m}");
        let (m, _) = msg(decode_split(&t, b"\\xc3\\x28\n"));
        assert!(m.contains("\"UTF8\": 0xc3 0x28"), "{m}");
        // An escaped NUL in a NULL field is not checked (it is NULL).
        let o = CopyOptions {
            null: "\\0".into(),
            ..CopyOptions::text()
        };
        assert_eq!(decode_split(&o, b"\\0\n").unwrap(), vec![row(&[None])]);
    }

    #[test]
    fn csv_quotes_nulls_and_embedded_newlines() {
        let c = CopyOptions::csv();
        let rows = decode_split(
            &c,
            b"1,abc,,\"\"\n2,\"a,b\",\"say \"\"hi\"\"\",\"line1\nline2\"\n3, x ,a\"b,c\"d,\\N\n",
        )
        .unwrap();
        assert_eq!(
            rows,
            vec![
                row(&[Some("1"), Some("abc"), None, Some("")]),
                row(&[
                    Some("2"),
                    Some("a,b"),
                    Some("say \"hi\""),
                    Some("line1\nline2")
                ]),
                row(&[Some("3"), Some(" x "), Some("ab,cd"), Some("\\N")]),
            ]
        );
        // An empty line is one NULL field; CRLF inside quotes is data.
        let rows = decode_split(&c, b"\r\n\"a\r\nb\",\r\n").unwrap();
        assert_eq!(rows, vec![row(&[None]), row(&[Some("a\r\nb"), None])]);
        // A NULL string: quoted it is a value.
        let n = CopyOptions {
            null: "NULL".into(),
            ..CopyOptions::csv()
        };
        let rows = decode_split(&n, b"NULL,\"NULL\",,\"\"\n").unwrap();
        assert_eq!(rows, vec![row(&[None, Some("NULL"), Some(""), Some("")])]);
        // Another escape character.
        let e = CopyOptions {
            escape: '\\',
            ..CopyOptions::csv()
        };
        let rows = decode_split(&e, b"\"a\\\"b\\\\c\\d\",\"x\"\"y\"\n").unwrap();
        assert_eq!(rows, vec![row(&[Some("a\"b\\c\\d"), Some("xy")])]);
        // A single quote as the quote, ; as the delimiter.
        let q = CopyOptions {
            delimiter: ';',
            quote: '\'',
            escape: '\'',
            ..CopyOptions::csv()
        };
        let rows = decode_split(&q, b"'it''s';'a;b'\n").unwrap();
        assert_eq!(rows, vec![row(&[Some("it's"), Some("a;b")])]);
    }

    #[test]
    fn csv_end_marker_header_and_errors() {
        let c = CopyOptions::csv();
        let rows = decode_split(&c, b"1,a\n\\.\n2,b\n").unwrap();
        assert_eq!(rows, vec![row(&[Some("1"), Some("a")])]);
        // `\.` is data when not alone on its line, or quoted, or at the
        // very end without a newline.
        let rows = decode_split(&c, b"a\\.\n\\.x,1\n\"\\.\"\n\"a\n\\.\nb\"\n\\.").unwrap();
        assert_eq!(
            rows,
            vec![
                row(&[Some("a\\.")]),
                row(&[Some("\\.x"), Some("1")]),
                row(&[Some("\\.")]),
                row(&[Some("a\n\\.\nb")]),
                row(&[Some("\\.")]),
            ]
        );
        let h = CopyOptions {
            header: true,
            ..CopyOptions::csv()
        };
        let rows = decode_split(&h, b"\"k\nk\",v\n1,2\n").unwrap();
        assert_eq!(rows, vec![row(&[Some("1"), Some("2")])]);
        let (m, c2) = msg(decode_split(&c, b"0,x\n1,\"abc\n2,def\n"));
        assert_eq!(c2, "22P04");
        assert!(m.contains("unterminated CSV quoted field (line 4"), "{m}");
        let (m, _) = msg(decode_split(&c, b"1\r\n2\r3\r\n"));
        assert!(
            m.contains("unquoted carriage return found in data (line 2)"),
            "{m}"
        );
        let (m, _) = msg(decode_split(&c, b"1\r2\n"));
        assert!(m.contains("unquoted newline found in data (line 2)"), "{m}");
    }

    #[test]
    fn decoder_checks_columns_and_numbers_lines() {
        let cols = vec!["k".to_string(), "v".to_string()];
        let mut d = CopyDecoder::new(&CopyOptions::text()).with_columns("t", cols.clone());
        let rows = d.feed_numbered(b"1\ta\n2\tb\n").unwrap();
        assert_eq!(
            rows,
            vec![
                (1, row(&[Some("1"), Some("a")])),
                (2, row(&[Some("2"), Some("b")]))
            ]
        );
        let e = d.feed(b"3\tc\textra\n").unwrap_err();
        assert_eq!(e.sqlstate(), "22P04");
        assert_eq!(
            e.to_string(),
            "extra data after last expected column (COPY t, line 3: \"3\tc\textra\")"
        );
        // The decoder stays failed.
        assert_eq!(d.feed(b"4\td\n").unwrap_err().to_string(), e.to_string());
        assert!(d.finish().is_err());

        let h = CopyOptions {
            header: true,
            ..CopyOptions::csv()
        };
        let mut d = CopyDecoder::new(&h).with_columns("t", cols);
        assert_eq!(
            d.feed_numbered(b"k,v\n\"a\nb\",1\n").unwrap(),
            vec![(3, row(&[Some("a\nb"), Some("1")]))]
        );
        let e = d.feed(b"5\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "missing data for column \"v\" (COPY t, line 4: \"5\")"
        );

        // A table without columns takes empty lines only.
        let mut d = CopyDecoder::new(&CopyOptions::text()).with_columns("z", vec![]);
        assert_eq!(d.feed(b"\n\n").unwrap(), vec![row(&[]), row(&[])]);
        assert!(d
            .feed(b"x\n")
            .unwrap_err()
            .to_string()
            .starts_with("extra data after last expected column (COPY z, line 3"));

        // Long lines are cut in the context.
        let mut d = CopyDecoder::new(&CopyOptions::text()).with_columns("t", vec!["a".into()]);
        let long = format!("{}\tx\n", "é".repeat(80));
        let m = d.feed(long.as_bytes()).unwrap_err().to_string();
        assert!(m.ends_with(&format!("\"{}...\")", "é".repeat(50))), "{m}");
    }

    #[test]
    fn binary_decoding_is_not_supported() {
        let b = CopyOptions {
            format: CopyFormat::Binary,
            ..CopyOptions::text()
        };
        let e = CopyDecoder::new(&b).feed(b"PGCOPY\n").unwrap_err();
        assert_eq!(e.sqlstate(), "0A000");
    }

    fn encode(options: &CopyOptions, rows: &[&[Option<&str>]]) -> String {
        let mut out = Vec::new();
        for r in rows {
            encode_row(options, r, &mut out);
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn encode_text_and_csv() {
        let t = CopyOptions::text();
        assert_eq!(
            encode(
                &t,
                &[
                    &[Some("1"), None, Some("a\tb\nc\rd\\e\x08\x0c\x0b\x01é")],
                    &[Some(""), Some("\\N")]
                ]
            ),
            "1\t\\N\ta\\tb\\nc\\rd\\\\e\\b\\f\\v\x01é\n\t\\\\N\n"
        );
        let p = CopyOptions {
            delimiter: '|',
            null: "".into(),
            ..CopyOptions::text()
        };
        assert_eq!(encode(&p, &[&[Some("a|b"), None]]), "a\\|b|\n");
        let c = CopyOptions::csv();
        assert_eq!(
            encode(
                &c,
                &[
                    &[Some("1"), None, Some(""), Some("a,b"), Some("say \"hi\"")],
                    &[Some("l1\nl2"), Some("cr\r"), Some("\\."), Some(" x ")],
                    &[Some("\\.")],
                ]
            ),
            "1,,\"\",\"a,b\",\"say \"\"hi\"\"\"\n\"l1\nl2\",\"cr\r\",\\., x \n\"\\.\"\n"
        );
        let e = CopyOptions {
            escape: '\\',
            null: "NULL".into(),
            ..CopyOptions::csv()
        };
        assert_eq!(
            encode(&e, &[&[Some("a\"b\\c"), Some("NULL"), None, Some("")]]),
            "\"a\\\"b\\\\c\",\"NULL\",NULL,\n"
        );
        let mut out = Vec::new();
        encode_header(&c, &["k", "my col", "a,b"], &mut out);
        assert_eq!(out, b"k,my col,\"a,b\"\n");
    }

    #[test]
    fn encode_then_decode_round_trips() {
        // Deterministic pseudo-random fields over the awkward characters.
        let alphabet = [
            "a", "\t", "\n", "\r", "\\", ",", "\"", "'", "|", ".", "N", "é", "€", " ", "\x01",
            "\\.", "\\N",
        ];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |n: usize| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            usize::try_from(seed >> 33).unwrap_or(0) % n
        };
        let mut rows: Vec<Vec<Option<String>>> = Vec::new();
        for _ in 0..300 {
            let width = 1 + next(4);
            let r = (0..width)
                .map(|_| {
                    if next(6) == 0 {
                        None
                    } else {
                        Some(
                            (0..next(6))
                                .map(|_| alphabet[next(alphabet.len())])
                                .collect(),
                        )
                    }
                })
                .collect();
            rows.push(r);
        }
        for options in [
            CopyOptions::text(),
            CopyOptions::csv(),
            CopyOptions {
                delimiter: '|',
                null: "NULL".into(),
                ..CopyOptions::text()
            },
            CopyOptions {
                delimiter: ';',
                quote: '\'',
                escape: '\\',
                null: "N".into(),
                ..CopyOptions::csv()
            },
        ] {
            let mut data = Vec::new();
            for r in &rows {
                let fields: Vec<Option<&str>> = r.iter().map(|f| f.as_deref()).collect();
                encode_row(&options, &fields, &mut data);
            }
            data.extend_from_slice(b"\\.\n");
            // Feed in uneven chunks.
            let mut d = CopyDecoder::new(&options);
            let mut got = Vec::new();
            let mut rest = &data[..];
            while !rest.is_empty() {
                let n = (1 + next(40)).min(rest.len());
                got.extend(d.feed(&rest[..n]).unwrap());
                rest = &rest[n..];
            }
            got.extend(d.finish().unwrap());
            assert_eq!(got, rows, "{options:?}");
        }
    }
}
