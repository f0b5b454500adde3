//! The key format of README.md, "Keys and policies": `{prefix}_{kind}_{env}_{secret}{checksum}`.
//!
//! Never change the alphabet, the checksum or the layout of keys already issued: every key in
//! the wild would become `malformed_key`. A new layout needs a new `kind` or prefix scheme.

use core::fmt;
use core::str::FromStr;

use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Base62 alphabet used for the secret and the checksum.
pub const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Number of base62 characters in the secret (about 190 bits).
pub const SECRET_LEN: usize = 32;
/// Number of base62 characters in the checksum.
pub const CHECKSUM_LEN: usize = 6;
/// Number of secret characters kept in a key's start.
pub const START_SECRET_CHARS: usize = 4;

/// Secret key (`sk`, servers) or publishable key (`pk`, browsers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(
    feature = "sql",
    derive(diesel::expression::AsExpression, diesel::deserialize::FromSqlRow)
)]
#[cfg_attr(feature = "sql", diesel(sql_type = diesel::sql_types::Text))]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// `sk`: for servers.
    Secret,
    /// `pk`: for browsers; must carry a referrer restriction.
    Publishable,
}

impl Kind {
    /// The two-letter code in the key string.
    pub fn code(self) -> &'static str {
        match self {
            Kind::Secret => "sk",
            Kind::Publishable => "pk",
        }
    }

    /// The API name (`secret`, `publishable`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Secret => "secret",
            Kind::Publishable => "publishable",
        }
    }
}

impl FromStr for Kind {
    type Err = UnknownVariant;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "secret" => Ok(Kind::Secret),
            "publishable" => Ok(Kind::Publishable),
            _ => Err(UnknownVariant),
        }
    }
}

/// `live` or `test`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(
    feature = "sql",
    derive(diesel::expression::AsExpression, diesel::deserialize::FromSqlRow)
)]
#[cfg_attr(feature = "sql", diesel(sql_type = diesel::sql_types::Text))]
#[serde(rename_all = "snake_case")]
pub enum Environment {
    /// Production traffic.
    Live,
    /// Test traffic.
    Test,
}

impl Environment {
    /// The name used in keys and in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Live => "live",
            Environment::Test => "test",
        }
    }
}

impl FromStr for Environment {
    type Err = UnknownVariant;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "live" => Ok(Environment::Live),
            "test" => Ok(Environment::Test),
            _ => Err(UnknownVariant),
        }
    }
}

/// A string that names no variant of an enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown variant")]
pub struct UnknownVariant;

/// A project's key prefix: 2 to 12 characters of `[a-z0-9]`, starting with a letter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct KeyPrefix(String);

/// Why a prefix was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("key_prefix must be 2 to 12 characters of [a-z0-9], starting with a letter")]
pub struct InvalidPrefix;

impl KeyPrefix {
    /// Parses a prefix.
    pub fn parse(s: &str) -> Result<Self, InvalidPrefix> {
        if is_valid_prefix(s.as_bytes()) {
            Ok(KeyPrefix(s.to_owned()))
        } else {
            Err(InvalidPrefix)
        }
    }

    /// The prefix text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for KeyPrefix {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        KeyPrefix::parse(&s).map_err(serde::de::Error::custom)
    }
}

fn is_valid_prefix(b: &[u8]) -> bool {
    (2..=12).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
}

/// Why a string is not a key. Every variant maps to `malformed_key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Not `{prefix}_{kind}_{env}_{secret+checksum}`.
    #[error("key does not have the form prefix_kind_env_secret")]
    Shape,
    /// The prefix is out of its pattern.
    #[error("invalid key prefix")]
    Prefix,
    /// Neither `sk` nor `pk`.
    #[error("invalid key kind")]
    Kind,
    /// Neither `live` nor `test`.
    #[error("invalid key environment")]
    Environment,
    /// The secret or checksum has a character outside base62, or the wrong length.
    #[error("invalid key secret")]
    Secret,
    /// The checksum does not match.
    #[error("key checksum mismatch")]
    Checksum,
}

/// A key that parsed and whose checksum matched. Its `Debug` shows only the start.
#[derive(Clone, PartialEq, Eq)]
pub struct ParsedKey<'a> {
    text: &'a str,
    prefix_len: usize,
    kind: Kind,
    environment: Environment,
}

impl<'a> ParsedKey<'a> {
    /// The project prefix.
    pub fn prefix(&self) -> &'a str {
        &self.text[..self.prefix_len]
    }
    /// The key kind.
    pub fn kind(&self) -> Kind {
        self.kind
    }
    /// The key environment.
    pub fn environment(&self) -> Environment {
        self.environment
    }
    /// The whole key text (secret!).
    pub fn expose(&self) -> &'a str {
        self.text
    }
    /// SHA-256 of the whole key string.
    pub fn hash(&self) -> KeyHash {
        KeyHash::of(self.text)
    }
    /// `{prefix}_{kind}_{env}_` plus the first four secret characters.
    pub fn start(&self) -> String {
        start_of(self.text)
    }
}

impl fmt::Debug for ParsedKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ParsedKey({}…)", self.start())
    }
}

fn start_of(text: &str) -> String {
    // The secret starts after the third underscore.
    let mut underscores = 0;
    for (i, c) in text.char_indices() {
        if c == '_' {
            underscores += 1;
            if underscores == 3 {
                let end = (i + 1 + START_SECRET_CHARS).min(text.len());
                return text[..end].to_owned();
            }
        }
    }
    String::new()
}

/// Parses a key and checks its checksum, without any lookup.
pub fn parse(text: &str) -> Result<ParsedKey<'_>, KeyError> {
    // Split at the first three underscores (`_` is ASCII, so these are char boundaries). This
    // runs on every request at the edge: no allocation, no string searching machinery.
    let b = text.as_bytes();
    let mut seps = [0usize; 3];
    let mut found = 0;
    for (i, &c) in b.iter().enumerate() {
        if c == b'_' {
            seps[found] = i;
            found += 1;
            if found == 3 {
                break;
            }
        }
    }
    if found < 3 {
        return Err(KeyError::Shape);
    }
    let [s1, s2, s3] = seps;
    if !is_valid_prefix(&b[..s1]) {
        return Err(KeyError::Prefix);
    }
    let kind = match &b[s1 + 1..s2] {
        b"sk" => Kind::Secret,
        b"pk" => Kind::Publishable,
        _ => return Err(KeyError::Kind),
    };
    let environment = match &b[s2 + 1..s3] {
        b"live" => Environment::Live,
        b"test" => Environment::Test,
        _ => return Err(KeyError::Environment),
    };
    let tail = &b[s3 + 1..];
    if tail.len() != SECRET_LEN + CHECKSUM_LEN || !tail.iter().all(|&c| is_base62(c)) {
        return Err(KeyError::Secret);
    }
    let body_len = text.len() - CHECKSUM_LEN;
    let expected = checksum(&b[..body_len]);
    // Not secret, but constant time costs little here: one word compare.
    let mut got = [0u8; 8];
    got[..CHECKSUM_LEN].copy_from_slice(&b[body_len..]);
    let mut want = [0u8; 8];
    want[..CHECKSUM_LEN].copy_from_slice(expected.as_bytes());
    if !bool::from(u64::from_le_bytes(got).ct_eq(&u64::from_le_bytes(want))) {
        return Err(KeyError::Checksum);
    }
    Ok(ParsedKey {
        text,
        prefix_len: s1,
        kind,
        environment,
    })
}

/// Which bytes are base62 digits, as a table: one load per byte on the request path.
const BASE62_BYTE: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < BASE62.len() {
        t[BASE62[i] as usize] = true;
        i += 1;
    }
    t
};

fn is_base62(b: u8) -> bool {
    BASE62_BYTE[usize::from(b)]
}

/// The 6-character base62 CRC-32 (IEEE) checksum of `body`.
pub fn checksum(body: &[u8]) -> ChecksumText {
    let mut n = crc32fast::hash(body);
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    ChecksumText(out)
}

/// Six base62 characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChecksumText([u8; CHECKSUM_LEN]);

impl ChecksumText {
    /// The checksum as bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
    /// The checksum as text.
    pub fn as_str(&self) -> &str {
        // Only base62 bytes are ever written.
        core::str::from_utf8(&self.0).unwrap_or("")
    }
}

/// A freshly generated key. Holds the plaintext, which must be shown once and then dropped;
/// its `Debug` shows only the start.
#[derive(Clone, PartialEq, Eq)]
pub struct PlaintextKey(String);

impl PlaintextKey {
    /// Generates a key with a secret drawn from `rng`.
    pub fn generate<R: RngCore + CryptoRng>(
        rng: &mut R,
        prefix: &KeyPrefix,
        kind: Kind,
        environment: Environment,
    ) -> Self {
        let mut text = String::with_capacity(prefix.as_str().len() + 9 + SECRET_LEN + 6);
        text.push_str(prefix.as_str());
        text.push('_');
        text.push_str(kind.code());
        text.push('_');
        text.push_str(environment.as_str());
        text.push('_');
        let mut filled = 0;
        let mut buf = [0u8; 64];
        while filled < SECRET_LEN {
            rng.fill_bytes(&mut buf);
            for &b in &buf {
                // Rejection sampling: 248 = 4 * 62, so `b % 62` is uniform below it.
                if b < 248 && filled < SECRET_LEN {
                    text.push(BASE62[(b % 62) as usize] as char);
                    filled += 1;
                }
            }
        }
        let sum = checksum(text.as_bytes());
        text.push_str(sum.as_str());
        PlaintextKey(text)
    }

    /// Builds a key from an explicit secret (golden vectors, tests). `None` if the secret is not
    /// 32 base62 characters.
    pub fn from_parts(
        prefix: &KeyPrefix,
        kind: Kind,
        environment: Environment,
        secret: &str,
    ) -> Option<Self> {
        if secret.len() != SECRET_LEN || !secret.bytes().all(is_base62) {
            return None;
        }
        let mut text = format!(
            "{}_{}_{}_{}",
            prefix.as_str(),
            kind.code(),
            environment.as_str(),
            secret
        );
        let sum = checksum(text.as_bytes());
        text.push_str(sum.as_str());
        Some(PlaintextKey(text))
    }

    /// The plaintext. Show it once; never store or log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// Consumes the key, returning the plaintext.
    pub fn into_string(self) -> String {
        self.0
    }
    /// SHA-256 of the key string.
    pub fn hash(&self) -> KeyHash {
        KeyHash::of(&self.0)
    }
    /// The key's start, safe to store and show.
    pub fn start(&self) -> String {
        start_of(&self.0)
    }
}

impl fmt::Debug for PlaintextKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PlaintextKey({}…)", self.start())
    }
}

/// SHA-256 of a whole key string: the only form in which a key is stored or shipped.
/// Equality is constant time; `Debug` prints only a short fingerprint.
#[derive(Clone, Copy, Eq, PartialOrd, Ord)]
pub struct KeyHash(pub [u8; 32]);

impl KeyHash {
    /// Hashes a key string.
    pub fn of(key: &str) -> Self {
        KeyHash(Sha256::digest(key.as_bytes()).into())
    }
    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
    /// Parses lowercase or uppercase hex.
    pub fn from_hex(s: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(KeyHash(out))
    }
    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl PartialEq for KeyHash {
    fn eq(&self, other: &Self) -> bool {
        // Constant time, a word at a time: the hash map compares hashes on every lookup.
        let mut same = subtle::Choice::from(1);
        for (a, b) in self.0.chunks_exact(8).zip(other.0.chunks_exact(8)) {
            let a = u64::from_le_bytes(a.try_into().unwrap_or([0; 8]));
            let b = u64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
            same &= a.ct_eq(&b);
        }
        same.into()
    }
}

impl core::hash::Hash for KeyHash {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        state.write(&self.0);
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A hash of a 190-bit key reveals nothing, but a short form keeps logs tidy and
        // avoids pasting whole digests around.
        write!(f, "KeyHash({}…)", hex::encode(&self.0[..4]))
    }
}

impl Serialize for KeyHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&self.to_hex())
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for KeyHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            KeyHash::from_hex(&s).ok_or_else(|| serde::de::Error::custom("invalid key hash"))
        } else {
            <[u8; 32]>::deserialize(d).map(KeyHash)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_parses_and_has_start() {
        let mut rng = rand_chacha_rng();
        let prefix = KeyPrefix::parse("acme").expect("prefix");
        let key = PlaintextKey::generate(&mut rng, &prefix, Kind::Secret, Environment::Live);
        let parsed = parse(key.expose()).expect("parses");
        assert_eq!(parsed.prefix(), "acme");
        assert_eq!(parsed.kind(), Kind::Secret);
        assert_eq!(parsed.environment(), Environment::Live);
        assert_eq!(key.expose().len(), 4 + 9 + 32 + 6);
        assert_eq!(key.start(), key.expose()[..17]);
        assert!(!format!("{key:?}").contains(&key.expose()[17..]));
        assert!(!format!("{parsed:?}").contains(&key.expose()[17..]));
    }

    #[test]
    fn checksum_is_crc32_in_base62() {
        // crc32("123456789") = 0xCBF43926 = 3421780262 = base62 "3jtMFE" ... computed below.
        let n: u32 = 0xCBF4_3926;
        let mut digits = Vec::new();
        let mut m = n;
        for _ in 0..6 {
            digits.push(BASE62[(m % 62) as usize]);
            m /= 62;
        }
        digits.reverse();
        assert_eq!(checksum(b"123456789").as_bytes(), &digits[..]);
        assert_eq!(checksum(b"").as_str(), "000000");
    }

    #[test]
    fn rejects_bad_forms() {
        assert_eq!(parse("").unwrap_err(), KeyError::Shape);
        assert_eq!(parse("acme_sk_live").unwrap_err(), KeyError::Shape);
        let good = PlaintextKey::from_parts(
            &KeyPrefix::parse("acme").expect("prefix"),
            Kind::Publishable,
            Environment::Test,
            "0123456789abcdefghijABCDEFGHIJkl",
        )
        .expect("key");
        assert!(parse(good.expose()).is_ok());
        let bad_kind = good.expose().replacen("_pk_", "_xk_", 1);
        assert_eq!(parse(&bad_kind).unwrap_err(), KeyError::Kind);
        let bad_env = good.expose().replacen("_test_", "_prod_", 1);
        assert_eq!(parse(&bad_env).unwrap_err(), KeyError::Environment);
        let mut bad_sum = good.expose().to_owned();
        let last = bad_sum.pop().expect("char");
        bad_sum.push(if last == 'a' { 'b' } else { 'a' });
        assert_eq!(parse(&bad_sum).unwrap_err(), KeyError::Checksum);
        assert_eq!(
            parse(&format!("{}x", good.expose())).unwrap_err(),
            KeyError::Secret
        );
        let upper = good.expose().replacen("acme", "Acme", 1);
        assert_eq!(parse(&upper).unwrap_err(), KeyError::Prefix);
    }

    #[test]
    fn prefix_rules() {
        for ok in ["ab", "acme", "a1", "abcdefghijkl"] {
            assert!(KeyPrefix::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["a", "1ab", "Acme", "abcdefghijklm", "ac_me", "ac-me", ""] {
            assert!(KeyPrefix::parse(bad).is_err(), "{bad}");
        }
    }

    fn rand_chacha_rng() -> impl RngCore + CryptoRng {
        use rand::SeedableRng;
        rand_chacha::ChaCha20Rng::seed_from_u64(7)
    }
}
