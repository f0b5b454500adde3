//! Finds Keygate keys in text (source files, configs, logs): the core of `keygate scan` and of
//! leak reports. Pure: no IO, no allocation per candidate.
//!
//! A key is reported only when it stands alone (not glued to other letters or digits) and its
//! checksum matches, so random strings of the same shape are not reported: a random 38
//! character tail has a 1 in 2^32 chance of carrying a valid checksum.

use core::fmt;

use crate::key::{self, ParsedKey, CHECKSUM_LEN, SECRET_LEN};

/// A key found in a text.
#[derive(Clone, PartialEq, Eq)]
pub struct Found<'a> {
    /// 1-based line number.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// The whole key (secret!). Show [`Found::start`] instead.
    pub key: &'a str,
    parsed: ParsedKey<'a>,
}

impl<'a> Found<'a> {
    /// The key, parsed.
    pub fn parsed(&self) -> &ParsedKey<'a> {
        &self.parsed
    }

    /// The key's start (`{prefix}_{kind}_{env}_` and four secret characters): safe to show.
    pub fn start(&self) -> String {
        self.parsed.start()
    }
}

impl fmt::Debug for Found<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Found {{ line: {}, column: {}, key: {}… }}",
            self.line,
            self.column,
            self.start()
        )
    }
}

/// Every key in `text`, in order.
pub fn find_keys(text: &str) -> Keys<'_> {
    Keys {
        text,
        pos: 0,
        line: 1,
        line_start: 0,
        counted: 0,
    }
}

/// The iterator of [`find_keys`].
#[derive(Clone)]
pub struct Keys<'a> {
    text: &'a str,
    /// Where to look for the next `_sk_` / `_pk_`.
    pos: usize,
    /// Line number of `counted`.
    line: usize,
    /// Byte offset of the start of that line.
    line_start: usize,
    /// Newlines are counted up to this offset.
    counted: usize,
}

impl fmt::Debug for Keys<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keys").field("pos", &self.pos).finish()
    }
}

/// `{env}_` after the kind: `live_` or `test_`.
const ENV_LEN: usize = 5;
const TAIL_LEN: usize = SECRET_LEN + CHECKSUM_LEN;

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

impl<'a> Keys<'a> {
    /// The key whose `_{kind}_` separator is at `sep`, if there is one.
    fn candidate(&self, sep: usize) -> Option<(usize, ParsedKey<'a>)> {
        let b = self.text.as_bytes();
        // The prefix: the run of letters and digits before the separator (all of it, so that a
        // key glued to a longer word is not reported).
        let mut start = sep;
        while start > 0 && is_word(b[start - 1]) {
            start -= 1;
        }
        if start == sep {
            return None;
        }
        let env = sep + 4;
        let env_bytes = b.get(env..env + ENV_LEN)?;
        if env_bytes != b"live_" && env_bytes != b"test_" {
            return None;
        }
        let tail = env + ENV_LEN;
        let mut end = tail;
        while end < b.len() && is_word(b[end]) {
            end += 1;
        }
        if end - tail != TAIL_LEN {
            return None;
        }
        // Every byte of the candidate is ASCII, so both ends are char boundaries.
        let parsed = key::parse(self.text.get(start..end)?).ok()?;
        Some((start, parsed))
    }

    fn position(&mut self, at: usize) -> (usize, usize) {
        let b = self.text.as_bytes();
        for (i, &c) in b[self.counted..at].iter().enumerate() {
            if c == b'\n' {
                self.line += 1;
                self.line_start = self.counted + i + 1;
            }
        }
        self.counted = at;
        let column = self
            .text
            .get(self.line_start..at)
            .map_or(0, |s| s.chars().count())
            + 1;
        (self.line, column)
    }
}

impl<'a> Iterator for Keys<'a> {
    type Item = Found<'a>;

    fn next(&mut self) -> Option<Found<'a>> {
        let b = self.text.as_bytes();
        while self.pos + 4 <= b.len() {
            let i = self.pos;
            self.pos += 1;
            if b[i] != b'_' || b[i + 2] != b'k' || b[i + 3] != b'_' {
                continue;
            }
            if b[i + 1] != b's' && b[i + 1] != b'p' {
                continue;
            }
            if let Some((start, parsed)) = self.candidate(i) {
                let key = parsed.expose();
                self.pos = start + key.len();
                let (line, column) = self.position(start);
                return Some(Found {
                    line,
                    column,
                    key,
                    parsed,
                });
            }
        }
        self.pos = b.len();
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::{Environment, KeyPrefix, Kind, PlaintextKey};

    fn key(prefix: &str, kind: Kind, env: Environment, secret: &str) -> String {
        PlaintextKey::from_parts(
            &KeyPrefix::parse(prefix).expect("prefix"),
            kind,
            env,
            secret,
        )
        .expect("key")
        .into_string()
    }

    fn acme() -> String {
        key(
            "acme",
            Kind::Secret,
            Environment::Live,
            "0123456789abcdefghijABCDEFGHIJkl",
        )
    }

    fn found(text: &str) -> Vec<(usize, usize, String)> {
        find_keys(text)
            .map(|f| (f.line, f.column, f.key.to_owned()))
            .collect()
    }

    #[test]
    fn key_in_code() {
        let k = acme();
        let text = format!("fn main() {{\n    let key = \"{k}\";\n}}\n");
        assert_eq!(found(&text), vec![(2, 16, k.clone())]);
        let f = find_keys(&text).next().expect("found");
        assert_eq!(f.start(), &k[..17]);
        assert!(!format!("{f:?}").contains(&k[17..]));
    }

    #[test]
    fn key_in_json_and_env_file() {
        let k = acme();
        let pk = key(
            "shop2",
            Kind::Publishable,
            Environment::Test,
            "ZYXWVUTSRQPONMLKJIHGFEDCBA987654",
        );
        let json = format!("{{\"keys\":[\"{k}\",\"{pk}\"]}}");
        assert_eq!(found(&json), vec![(1, 11, k.clone()), (1, 65, pk.clone())]);
        let env = format!("# secrets\nKEYGATE_KEY={k}\r\nOTHER=x\n");
        assert_eq!(found(&env), vec![(2, 13, k)]);
    }

    #[test]
    fn key_in_url_query() {
        let k = acme();
        let url = format!("curl 'https://api.example.com/orders?key={k}&page=2#top'");
        assert_eq!(found(&url), vec![(1, 42, k.clone())]);
        let path = format!("https://x.example/{k}/");
        assert_eq!(found(&path).len(), 1);
    }

    #[test]
    fn adjacent_punctuation_and_unicode() {
        let k = acme();
        for text in [
            format!("({k})"),
            format!("<{k}>"),
            format!("'{k}',"),
            format!("`{k}`."),
            format!("key:{k};"),
            format!("-{k}-"),
            format!("x_{k}"),
            format!("{k}_"),
        ] {
            assert_eq!(found(&text).len(), 1, "{text}");
        }
        // Columns count characters, not bytes.
        assert_eq!(found(&format!("é→ {k}")), vec![(1, 4, k.clone())]);
        // Two keys in a row, and one at the very end of the text.
        assert_eq!(found(&format!("{k} {k}")).len(), 2);
        assert_eq!(found(&k).len(), 1);
    }

    #[test]
    fn glued_to_letters_or_digits_is_not_a_key() {
        let k = acme();
        assert!(found(&format!("x{k}")).is_empty());
        assert!(found(&format!("{k}0")).is_empty());
        assert!(found(&format!("X{k}")).is_empty());
    }

    #[test]
    fn wrong_checksum_not_reported() {
        let mut k = acme();
        let last = k.pop().expect("char");
        k.push(if last == 'a' { 'b' } else { 'a' });
        assert!(found(&format!("key = \"{k}\"")).is_empty());
    }

    #[test]
    fn key_shaped_random_strings_not_reported() {
        // Same shape as keys, made-up checksums.
        for text in [
            "acme_sk_live_4fQzT9xWb2LmN8pRkVy3Hc6Jd0Gs1Ea7Zk9AbCdEf",
            "shop_pk_test_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "ab_sk_live_0123456789abcdefghijABCDEFGHIJkl000000",
        ] {
            assert!(found(text).is_empty(), "{text}");
        }
        // Wrong lengths, kinds, environments and prefixes.
        let k = acme();
        for text in [
            k.replacen("_sk_", "_xk_", 1),
            k.replacen("_live_", "_prod_", 1),
            k.replacen("acme", "Acme", 1),
            k.replacen("acme", "1cme", 1),
            k[..k.len() - 1].to_owned(),
            "_sk_live_".to_owned(),
            "a_sk_".to_owned(),
            String::new(),
        ] {
            assert!(found(&text).is_empty(), "{text}");
        }
    }

    #[test]
    fn many_lines() {
        let k = acme();
        let text = format!("a\n\nb {k}\nc\n\n\n  {k}\n");
        assert_eq!(found(&text), vec![(3, 3, k.clone()), (7, 3, k)]);
    }
}
