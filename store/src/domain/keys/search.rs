//! Prefix search of a project's keys by name and by start.
//!
//! A prefix `p` is matched as the half-open range `p <= col < successor(p)` rather than with
//! `LIKE`: SQLite's `LIKE` is case-insensitive and uses an index only under its own rules, and
//! PostgreSQL's uses a btree only with `text_pattern_ops` or the `C` collation. A range is
//! served by a plain btree on both, needs no escaping (`%` and `_` are ordinary characters),
//! and compares bytes on both: SQLite's default `BINARY` collation, and on PostgreSQL the
//! `C` collation that migration `2026-12-07-000008_key_search` gives `name` and `key_start`.
//! In UTF-8, byte order is code point order, which `successor` relies on.
//!
//! Names match ignoring the case of ASCII letters only: the indexed expression is `lower(name)`,
//! which folds only A-Z on SQLite (no ICU) and on PostgreSQL for a `C`-collated column; the
//! prefix is folded the same way here, with `to_ascii_lowercase`.

use crate::error::StoreError;

diesel::define_sql_function! {
    /// SQL `lower`: folds ASCII letters on SQLite and on a `C`-collated PostgreSQL column.
    fn lower(x: diesel::sql_types::Text) -> diesel::sql_types::Text;
}

/// Longest `name_prefix`: a name is at most 200 characters.
pub const MAX_NAME_PREFIX_CHARS: usize = 200;
/// Longest `start`: a start is a key prefix (at most 12), `_sk_live_` and 4 characters; 64
/// leaves room without letting a request carry a large value into a query.
pub const MAX_START_CHARS: usize = 64;

/// A checked prefix: the inclusive lower bound and the exclusive upper bound, if any (none
/// when every character of the prefix is the largest code point).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixRange {
    /// The prefix itself.
    pub low: String,
    /// The smallest string greater than every string that starts with `low`.
    pub high: Option<String>,
}

/// Checks a prefix parameter; `None` for absent or empty (no filter).
pub fn prefix_range(
    field: &str,
    value: Option<&str>,
    max_chars: usize,
    fold_ascii_case: bool,
) -> Result<Option<PrefixRange>, StoreError> {
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if value.chars().count() > max_chars {
        return Err(StoreError::validation(
            field,
            format!("must be at most {max_chars} characters"),
        ));
    }
    // No stored name or start has one, and PostgreSQL refuses NUL in text outright.
    if value.chars().any(char::is_control) {
        return Err(StoreError::validation(
            field,
            "must not contain control characters",
        ));
    }
    let low = if fold_ascii_case {
        value.to_ascii_lowercase()
    } else {
        value.to_owned()
    };
    let high = successor(&low);
    Ok(Some(PrefixRange { low, high }))
}

/// The smallest string greater than every string starting with `p`: the last character that
/// can be incremented, incremented, with what follows it dropped.
fn successor(p: &str) -> Option<String> {
    let mut chars: Vec<char> = p.chars().collect();
    while let Some(last) = chars.pop() {
        let next = match last as u32 {
            // Skip the surrogate gap, which no `char` (and no UTF-8 text) holds.
            0xD7FF => Some('\u{E000}'),
            n => char::from_u32(n + 1),
        };
        if let Some(c) = next {
            chars.push(c);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn successors_bound_the_prefix() {
        assert_eq!(successor("ab").as_deref(), Some("ac"));
        assert_eq!(successor("a%").as_deref(), Some("a&"));
        assert_eq!(successor("a_").as_deref(), Some("a`"));
        assert_eq!(successor("z\u{D7FF}").as_deref(), Some("z\u{E000}"));
        assert_eq!(successor("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(successor("\u{10FFFF}"), None);
        for s in ["ab", "abc", "ab\u{10FFFF}", "abé"] {
            assert!(s >= "ab" && s < successor("ab").unwrap().as_str(), "{s}");
        }
        for s in ["aa", "ac", "b", "a"] {
            assert!(!(s >= "ab" && s < successor("ab").unwrap().as_str()), "{s}");
        }
    }

    #[test]
    fn prefixes_are_checked_and_folded() {
        assert_eq!(prefix_range("name_prefix", None, 200, true).unwrap(), None);
        assert_eq!(
            prefix_range("name_prefix", Some(""), 200, true).unwrap(),
            None
        );
        let r = prefix_range("name_prefix", Some("CheckÉ"), 200, true)
            .unwrap()
            .unwrap();
        assert_eq!(r.low, "checkÉ");
        let r = prefix_range("start", Some("Ab"), 64, false)
            .unwrap()
            .unwrap();
        assert_eq!((r.low.as_str(), r.high.as_deref()), ("Ab", Some("Ac")));
        assert!(prefix_range("start", Some(&"a".repeat(65)), 64, false).is_err());
        assert!(prefix_range("start", Some(&"é".repeat(64)), 64, false).is_ok());
        assert!(prefix_range("name_prefix", Some("a\0"), 200, true).is_err());
    }
}
