//! Parameter types of a statement being prepared (the extended query
//! protocol's Parse).
//!
//! Planning is synchronous, so while [`describe`] plans a statement the
//! types live in a thread-local: `$n` binds as [`Expr::Param`] with the type
//! known so far (from the client's Parse message, or inferred), and the
//! binder records the type context gives an untyped one (`aid = $1` → the
//! column's type, `LIMIT $1` → bigint, an INSERT value → its column's).
//! Whatever stays unknown is text, as in PostgreSQL.
//!
//! [`Expr::Param`]: crate::expr::Expr::Param

use std::cell::RefCell;

use crate::types::DataType;

thread_local! {
    static TYPES: RefCell<Option<Vec<DataType>>> = const { RefCell::new(None) };
}

/// The type of parameter `n` (0-based) so far, or None when no statement
/// is being described or it has no such parameter.
pub(crate) fn current(n: usize) -> Option<DataType> {
    TYPES.with(|t| t.borrow().as_ref().and_then(|v| v.get(n).cloned()))
}

/// Records that context gives parameter `n` type `ty` (the first type
/// found wins).
pub(crate) fn infer(n: usize, ty: &DataType) {
    TYPES.with(|t| {
        if let Some(v) = t.borrow_mut().as_mut() {
            if let Some(slot) = v.get_mut(n) {
                if *slot == DataType::Unknown {
                    *slot = ty.clone();
                }
            }
        }
    });
}

/// Runs `f` (which plans the statement) with `count` parameters typed
/// `hints` (Unknown where the client gave none); returns its result and
/// the parameter types, unknown ones as text.
pub fn describe<T>(hints: Vec<DataType>, f: impl FnOnce() -> T) -> (T, Vec<DataType>) {
    let previous = TYPES.with(|t| t.borrow_mut().replace(hints));
    let out = f();
    let types = TYPES
        .with(|t| std::mem::replace(&mut *t.borrow_mut(), previous))
        .unwrap_or_default()
        .into_iter()
        .map(|ty| match ty {
            DataType::Unknown => DataType::Text,
            ty => ty,
        })
        .collect();
    (out, types)
}
