//! Property tests: key format round trips and error detection, CIDR matching against a
//! bit-by-bit model, referrer pattern canonical forms, and snapshot round trips.
#![cfg(feature = "validation")]

mod common;

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use keygate_shared::key::{self, KeyError, BASE62, CHECKSUM_LEN, SECRET_LEN};
use keygate_shared::snapshot::{shard_index, verify_snapshot};
use keygate_shared::{
    evaluate, Environment, Evaluation, IpNet, KeyHash, KeyPrefix, Kind, Lookup, PlaintextKey,
    ReferrerPattern, RequestFacts, SnapshotIndex, SnapshotView, TrustedKeys,
};
use proptest::prelude::*;
use rand::SeedableRng;
use sha2::{Digest, Sha256};

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![Just(Kind::Secret), Just(Kind::Publishable)]
}

fn env() -> impl Strategy<Value = Environment> {
    prop_oneof![Just(Environment::Live), Just(Environment::Test)]
}

const PREFIX: &str = "[a-z][a-z0-9]{1,11}";
const SECRET: &str = "[0-9A-Za-z]{32}";

fn make_key(prefix: &str, kind: Kind, env: Environment, secret: &str) -> PlaintextKey {
    PlaintextKey::from_parts(
        &KeyPrefix::parse(prefix).expect("prefix"),
        kind,
        env,
        secret,
    )
    .expect("key")
}

/// Which part of `{prefix}_{kind}_{env}_{secret}{checksum}` byte `i` is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Prefix,
    Kind,
    Env,
    Separator,
    Tail,
}

fn part_of(text: &str, i: usize) -> Part {
    let seps: Vec<usize> = text.match_indices('_').map(|(i, _)| i).take(3).collect();
    match i {
        i if seps.contains(&i) => Part::Separator,
        i if i < seps[0] => Part::Prefix,
        i if i < seps[1] => Part::Kind,
        i if i < seps[2] => Part::Env,
        _ => Part::Tail,
    }
}

/// Whether substituting `c` at byte `i` leaves a key that parses up to the checksum.
fn structurally_valid(text: &str, i: usize, c: char) -> bool {
    match part_of(text, i) {
        Part::Prefix => c.is_ascii_digit() && i > 0 || c.is_ascii_lowercase(),
        // `sk` <-> `pk` is one character.
        Part::Kind => i == text.find('_').expect("sep") + 1 && (c == 's' || c == 'p'),
        Part::Env | Part::Separator => false,
        Part::Tail => c.is_ascii_alphanumeric(),
    }
}

fn substitute(text: &str, i: usize, c: char) -> String {
    let mut out = String::with_capacity(text.len() + 4);
    out.push_str(&text[..i]);
    out.push(c);
    out.push_str(&text[i + 1..]);
    out
}

/// Replacement characters: mostly ones that keep the shape, some that do not.
fn replacement() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => prop::sample::select(BASE62.to_vec()).prop_map(char::from),
        1 => prop::sample::select(b"_-. /+=\0\x7f".to_vec()).prop_map(char::from),
        1 => any::<char>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn from_parts_round_trips(prefix in PREFIX, kind in kind(), env in env(), secret in SECRET) {
        let k = make_key(&prefix, kind, env, &secret);
        let text = k.expose();
        prop_assert_eq!(text.len(), prefix.len() + 1 + 2 + 1 + 4 + 1 + SECRET_LEN + CHECKSUM_LEN);
        let body = format!("{prefix}_{}_{}_{secret}", kind.code(), env.as_str());
        prop_assert!(text.starts_with(&body));
        let parsed = key::parse(text).expect("parses");
        prop_assert_eq!(parsed.prefix(), prefix.as_str());
        prop_assert_eq!(parsed.kind(), kind);
        prop_assert_eq!(parsed.environment(), env);
        prop_assert_eq!(parsed.expose(), text);
        let sha: [u8; 32] = Sha256::digest(text.as_bytes()).into();
        prop_assert_eq!(parsed.hash(), KeyHash(sha));
        prop_assert_eq!(k.hash(), KeyHash(sha));
        let start = format!("{prefix}_{}_{}_{}", kind.code(), env.as_str(), &secret[..4]);
        prop_assert_eq!(parsed.start(), start.clone());
        prop_assert_eq!(k.start(), start);
    }

    #[test]
    fn generated_keys_round_trip(
        prefix in PREFIX, kind in kind(), env in env(), seed in any::<u64>(),
    ) {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
        let p = KeyPrefix::parse(&prefix).expect("prefix");
        let k = PlaintextKey::generate(&mut rng, &p, kind, env);
        let parsed = key::parse(k.expose()).expect("parses");
        prop_assert_eq!(parsed.prefix(), prefix.as_str());
        prop_assert_eq!(parsed.kind(), kind);
        prop_assert_eq!(parsed.environment(), env);
        let secret = &k.expose()[k.expose().len() - SECRET_LEN - CHECKSUM_LEN..][..SECRET_LEN];
        prop_assert!(secret.bytes().all(|b| b.is_ascii_alphanumeric()));
        // The same secret through `from_parts` is the same key.
        let again = make_key(&prefix, kind, env, secret);
        prop_assert_eq!(again.expose(), k.expose());
        // Another draw is another key.
        let other = PlaintextKey::generate(&mut rng, &p, kind, env);
        prop_assert_ne!(other.expose(), k.expose());
    }

    #[test]
    fn any_single_substitution_is_caught(
        prefix in PREFIX, kind in kind(), env in env(), secret in SECRET,
        at in any::<prop::sample::Index>(), c in replacement(),
    ) {
        let k = make_key(&prefix, kind, env, &secret);
        let text = k.expose();
        let i = at.index(text.len());
        prop_assume!(text.as_bytes()[i] != c as u32 as u8 || !c.is_ascii());
        let changed = substitute(text, i, c);
        let result = key::parse(&changed);
        prop_assert!(result.is_err(), "{changed:?} parsed");
        if structurally_valid(text, i, c) {
            prop_assert_eq!(result.err(), Some(KeyError::Checksum), "{:?}", changed);
        }
    }

    #[test]
    fn adjacent_transposition_is_caught(
        prefix in PREFIX, kind in kind(), env in env(), secret in SECRET,
        at in any::<prop::sample::Index>(),
    ) {
        let k = make_key(&prefix, kind, env, &secret);
        let mut bytes = k.expose().as_bytes().to_vec();
        let i = at.index(bytes.len() - 1);
        prop_assume!(bytes[i] != bytes[i + 1]);
        bytes.swap(i, i + 1);
        let changed = String::from_utf8(bytes).expect("ascii");
        prop_assert!(key::parse(&changed).is_err(), "{changed:?} parsed");
    }

    #[test]
    fn other_prefix_kind_or_env_fails_the_checksum(
        prefix in PREFIX, other_prefix in PREFIX, kind in kind(), env in env(), secret in SECRET,
    ) {
        let k = make_key(&prefix, kind, env, &secret);
        let tail = &k.expose()[k.expose().len() - SECRET_LEN - CHECKSUM_LEN..];
        let flip_kind = match kind {
            Kind::Secret => Kind::Publishable,
            Kind::Publishable => Kind::Secret,
        };
        let flip_env = match env {
            Environment::Live => Environment::Test,
            Environment::Test => Environment::Live,
        };
        let mut variants = vec![
            format!("{prefix}_{}_{}_{tail}", flip_kind.code(), env.as_str()),
            format!("{prefix}_{}_{}_{tail}", kind.code(), flip_env.as_str()),
            format!("{prefix}_{}_{}_{tail}", flip_kind.code(), flip_env.as_str()),
        ];
        if other_prefix != prefix {
            variants.push(format!("{other_prefix}_{}_{}_{tail}", kind.code(), env.as_str()));
        }
        for v in variants {
            prop_assert_eq!(key::parse(&v).err(), Some(KeyError::Checksum), "{}", v);
        }
    }
}

/// Every position, every printable ASCII character: nothing slips through.
#[test]
fn exhaustive_single_substitutions() {
    let keys = [
        make_key(
            "acme",
            Kind::Secret,
            Environment::Live,
            "0123456789abcdefghijABCDEFGHIJkl",
        ),
        make_key(
            "z9",
            Kind::Publishable,
            Environment::Test,
            "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz",
        ),
        make_key(
            "abcdefghijkl",
            Kind::Secret,
            Environment::Test,
            "00000000000000000000000000000000",
        ),
    ];
    let mut structural = 0;
    for k in &keys {
        let text = k.expose();
        assert!(key::parse(text).is_ok());
        for i in 0..text.len() {
            for b in 0x20u8..0x7f {
                let c = char::from(b);
                if text.as_bytes()[i] == b {
                    continue;
                }
                let changed = substitute(text, i, c);
                let result = key::parse(&changed);
                assert!(result.is_err(), "{changed:?}");
                if structurally_valid(text, i, c) {
                    structural += 1;
                    assert_eq!(result.err(), Some(KeyError::Checksum), "{changed:?}");
                }
            }
        }
    }
    // The checksum, not the shape, caught thousands of these.
    assert!(structural > 3 * 38 * 60, "{structural}");
}

// ---------------------------------------------------------------------------------------
// CIDR against a model that compares addresses bit by bit, as strings of 0 and 1.

fn bits4(a: u32) -> String {
    format!("{a:032b}")
}

fn bits6(a: u128) -> String {
    format!("{a:0128b}")
}

fn model_contains(net_bits: &str, len: usize, ip_bits: &str) -> bool {
    net_bits.chars().take(len).eq(ip_bits.chars().take(len))
}

/// `bits` with everything after `len` set to 0.
fn model_network(bits: &str, len: usize) -> String {
    bits.chars()
        .enumerate()
        .map(|(i, c)| if i < len { c } else { '0' })
        .collect()
}

/// An address sharing its first `share` bits with `net` and random bits after.
fn splice(net: &str, random: &str, share: usize) -> String {
    format!("{}{}", &net[..share], &random[share..])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn cidr_v4_matches_the_model(
        addr in any::<u32>(), len in 0usize..=32, rand_ip in any::<u32>(), share in 0usize..=32,
    ) {
        let addr_bits = bits4(addr);
        let net_bits = model_network(&addr_bits, len);
        let net_addr = Ipv4Addr::from(u32::from_str_radix(&net_bits, 2).expect("bits"));
        // Host bits set: refused, unless there are none.
        let raw = IpNet::parse(&format!("{}/{len}", Ipv4Addr::from(addr)));
        prop_assert_eq!(raw.is_ok(), net_bits == addr_bits);
        let net = IpNet::parse(&format!("{net_addr}/{len}")).expect("network");
        prop_assert_eq!(net.prefix_len() as usize, len);
        prop_assert_eq!(net.addr(), IpAddr::V4(net_addr));
        prop_assert_eq!(IpNet::parse(&net.to_string()).expect("display"), net);
        let ip_bits = splice(&net_bits, &bits4(rand_ip), share);
        let ip = Ipv4Addr::from(u32::from_str_radix(&ip_bits, 2).expect("bits"));
        let expected = model_contains(&net_bits, len, &ip_bits);
        prop_assert_eq!(net.contains(IpAddr::V4(ip)), expected, "{} in {}", ip, net);
        // Proxies may report the IPv4-mapped IPv6 form.
        prop_assert_eq!(net.contains(IpAddr::V6(ip.to_ipv6_mapped())), expected);
        // A plain IPv6 address is never in an IPv4 network.
        let v6 = Ipv6Addr::from(u128::from(rand_ip) << 96 | 1);
        prop_assert!(!net.contains(IpAddr::V6(v6)));
    }

    #[test]
    fn cidr_v6_matches_the_model(
        addr in any::<u128>(), len in 0usize..=128, rand_ip in any::<u128>(),
        share in 0usize..=128, v4 in any::<u32>(),
    ) {
        let addr_bits = bits6(addr);
        let net_bits = model_network(&addr_bits, len);
        let net_addr = Ipv6Addr::from(u128::from_str_radix(&net_bits, 2).expect("bits"));
        let raw = IpNet::parse(&format!("{}/{len}", Ipv6Addr::from(addr)));
        prop_assert_eq!(raw.is_ok(), net_bits == addr_bits);
        let net = IpNet::parse(&format!("{net_addr}/{len}")).expect("network");
        prop_assert_eq!(net.prefix_len() as usize, len);
        prop_assert_eq!(IpNet::parse(&net.to_string()).expect("display"), net);
        let ip_bits = splice(&net_bits, &bits6(rand_ip), share);
        let ip = Ipv6Addr::from(u128::from_str_radix(&ip_bits, 2).expect("bits"));
        prop_assert_eq!(
            net.contains(IpAddr::V6(ip)),
            model_contains(&net_bits, len, &ip_bits),
            "{} in {}", ip, net
        );
        // An IPv4 address is never in an IPv6 network.
        prop_assert!(!net.contains(IpAddr::V4(Ipv4Addr::from(v4))));
    }
}

// ---------------------------------------------------------------------------------------
// Referrer patterns: generated valid patterns have a stable canonical form, and match the
// URL they were made from.

#[derive(Debug, Clone)]
enum GenHost {
    Exact(String),
    Wildcard(String),
}

#[derive(Debug, Clone)]
enum GenPort {
    Default,
    Exact(u16, usize),
    Any,
}

#[derive(Debug, Clone)]
enum GenPath {
    None,
    Root,
    Prefix(String),
    Exact(String),
}

fn label() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9]([a-zA-Z0-9-]{0,6}[a-zA-Z0-9])?"
}

fn labels(min: usize, max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(label(), min..=max).prop_map(|v| v.join("."))
}

fn idn_label() -> impl Strategy<Value = String> {
    let words: Vec<String> = ["bücher", "MÜNCHEN", "пример", "例え", "café", "ελληνικά"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    prop::sample::select(words)
}

/// A registrable base for `*.` (never a public suffix).
fn base() -> BoxedStrategy<String> {
    (
        labels(0, 2),
        prop::sample::select(vec!["example", "example.com", "example.co.uk", "test"]),
    )
        .prop_map(|(l, tail)| {
            if l.is_empty() {
                format!("x.{tail}")
            } else {
                format!("{l}.{tail}")
            }
        })
        .boxed()
}

fn gen_host() -> impl Strategy<Value = GenHost> {
    let mut options = vec![
        labels(1, 4).prop_map(GenHost::Exact).boxed(),
        base().prop_map(GenHost::Wildcard).boxed(),
        Just(GenHost::Exact("localhost".into())).boxed(),
        (any::<[u8; 4]>())
            .prop_map(|o| GenHost::Exact(Ipv4Addr::from(o).to_string()))
            .boxed(),
        (any::<u128>())
            .prop_map(|a| GenHost::Exact(format!("[{}]", Ipv6Addr::from(a))))
            .boxed(),
    ];
    if cfg!(feature = "validation") {
        options.push(
            (idn_label(), base())
                .prop_map(|(idn, base)| GenHost::Exact(format!("{idn}.{base}")))
                .boxed(),
        );
        options.push(
            (label(), idn_label())
                .prop_map(|(l, idn)| GenHost::Wildcard(format!("{l}.{idn}.example")))
                .boxed(),
        );
    }
    prop::strategy::Union::new(options)
}

fn gen_port() -> impl Strategy<Value = GenPort> {
    prop_oneof![
        Just(GenPort::Default),
        (1u16..=65535, 0usize..=2).prop_map(|(p, zeros)| GenPort::Exact(p, zeros)),
        Just(GenPort::Any),
    ]
}

fn gen_path() -> impl Strategy<Value = GenPath> {
    let seg = "[A-Za-z0-9._~-]{1,8}";
    prop_oneof![
        Just(GenPath::None),
        Just(GenPath::Root),
        prop::collection::vec(seg, 1..4)
            .prop_map(|s| GenPath::Prefix(format!("/{}/", s.join("/")))),
        prop::collection::vec(seg, 1..4).prop_map(|s| GenPath::Exact(format!("/{}", s.join("/")))),
    ]
}

fn gen_scheme() -> impl Strategy<Value = Option<&'static str>> {
    prop::sample::select(vec![
        None,
        Some("http"),
        Some("https"),
        Some("HTTPS"),
        Some("Http"),
    ])
}

fn pattern_text(scheme: Option<&str>, host: &GenHost, port: &GenPort, path: &GenPath) -> String {
    let mut s = String::new();
    if let Some(sc) = scheme {
        s.push_str(sc);
        s.push_str("://");
    }
    match host {
        GenHost::Exact(h) => s.push_str(h),
        GenHost::Wildcard(b) => {
            s.push_str("*.");
            s.push_str(b);
        }
    }
    match port {
        GenPort::Default => {}
        GenPort::Exact(p, zeros) => {
            // Up to five digits, with leading zeros when there is room.
            let digits = p.to_string();
            let width = (digits.len() + zeros).min(5);
            s.push_str(&format!(":{digits:0>width$}"));
        }
        GenPort::Any => s.push_str(":*"),
    }
    match path {
        GenPath::None => {}
        GenPath::Root => s.push_str("/*"),
        GenPath::Prefix(p) => {
            s.push_str(p);
            s.push('*');
        }
        GenPath::Exact(p) => s.push_str(p),
    }
    s
}

/// The parts of a request URL that the pattern must match, with the host in the punycode
/// form browsers send: `(scheme, base host, port, path)`. For a wildcard pattern the base host
/// is the pattern's base, to which the caller adds a subdomain.
fn matching_parts(
    pattern: &ReferrerPattern,
    scheme: Option<&str>,
    port: &GenPort,
    path: &GenPath,
) -> (String, String, String, String) {
    let canonical = pattern.as_str();
    let after_scheme = canonical.split_once("://").map_or(canonical, |(_, r)| r);
    let authority_end = after_scheme.find('/').unwrap_or(after_scheme.len());
    let authority = &after_scheme[..authority_end];
    let host = match authority.strip_prefix('[') {
        Some(_) => &authority[..=authority.find(']').expect("bracket")],
        None => authority.split(':').next().expect("host"),
    };
    let host = host.strip_prefix("*.").unwrap_or(host).to_owned();
    let scheme = scheme.map_or("https".to_owned(), str::to_ascii_lowercase);
    let port = match port {
        GenPort::Default => String::new(),
        GenPort::Exact(p, _) => format!(":{p}"),
        GenPort::Any => ":8080".to_owned(),
    };
    let path = match path {
        GenPath::None | GenPath::Root => "/".to_owned(),
        GenPath::Prefix(p) => format!("{p}page"),
        GenPath::Exact(p) => p.clone(),
    };
    (scheme, host, port, path)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn pattern_canonical_form_is_a_fixed_point(
        scheme in gen_scheme(), host in gen_host(), port in gen_port(), path in gen_path(),
    ) {
        let text = pattern_text(scheme, &host, &port, &path);
        let p1 = ReferrerPattern::parse(&text);
        prop_assert!(p1.is_ok(), "{text:?}: {p1:?}");
        let p1 = p1.expect("checked");
        let p2 = ReferrerPattern::parse(&p1.to_string()).expect("canonical parses");
        prop_assert_eq!(&p2, &p1);
        prop_assert_eq!(p2.as_str(), p1.as_str());
        prop_assert!(p1.as_str().is_ascii());
        let json = serde_json::to_string(&p1).expect("json");
        let back: ReferrerPattern = serde_json::from_str(&json).expect("json back");
        prop_assert_eq!(back, p1.clone());

        // The pattern matches the URL it was made from (query and fragment ignored, any case
        // in scheme and host)...
        let wildcard = matches!(host, GenHost::Wildcard(_));
        let (sc, base, port_s, path_s) = matching_parts(&p1, scheme, &port, &path);
        let site = if wildcard { format!("sub.{base}") } else { base.clone() };
        let origin = format!("{sc}://{site}{port_s}");
        let url = format!("{origin}{path_s}?q=1#f");
        prop_assert!(p1.matches(None, Some(&url)), "{} should match {}", p1, url);
        prop_assert!(p2.matches(None, Some(&url)), "{} should match {}", p2, url);
        prop_assert!(
            p1.matches(Some(&origin), Some(&url)),
            "{} should match {} + {}", p1, origin, url
        );
        prop_assert!(p1.matches(Some(&origin.to_ascii_uppercase()), Some(&url)));
        // ...but an Origin alone only satisfies a pattern without a path.
        let path_free = matches!(path, GenPath::None | GenPath::Root);
        prop_assert_eq!(p1.matches(Some(&origin), None), path_free);
        // Hosts that merely contain the pattern's host never match.
        for evil in [
            format!("{site}.evil.test"),
            format!("evil{base}"),
            format!("{base}evil"),
            format!("{site}@evil.test"),
            format!("evil.test@{site}"),
        ] {
            let u = format!("{sc}://{evil}{port_s}{path_s}");
            prop_assert!(!p1.matches(None, Some(&u)), "{} matched {}", p1, u);
        }
        if wildcard {
            // The base of a wildcard is not one of its subdomains.
            let u = format!("{sc}://{base}{port_s}{path_s}");
            prop_assert!(!p1.matches(None, Some(&u)), "{} matched {}", p1, u);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Snapshot round trip: every key comes back from the shards, and nothing else does.

fn arb_record_tweaks() -> impl Strategy<Value = (bool, Option<i64>, u8)> {
    (any::<bool>(), prop::option::of(0i64..1_000_000), 0u8..4)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn snapshot_round_trip_finds_every_key(
        seed in any::<u64>(),
        tweaks in prop::collection::vec(arb_record_tweaks(), 0..300),
        shard_bits in prop::option::of(0u8..=5),
        version in 1u64..1_000,
    ) {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
        let prefix = KeyPrefix::parse("prop").expect("prefix");
        let mut keys = Vec::new();
        let mut records = Vec::new();
        for (i, (revoked, expires, scopes)) in tweaks.iter().enumerate() {
            let kind = if i % 3 == 0 { Kind::Publishable } else { Kind::Secret };
            let k = PlaintextKey::generate(&mut rng, &prefix, kind, Environment::Test);
            let mut r = common::record(&k, &format!("key_{i}"));
            r.kind = kind;
            r.environment = Environment::Test;
            r.revoked = *revoked;
            r.expires_at_ms = expires.map(|e| common::T0 + e);
            r.scopes = (0..*scopes)
                .map(|s| keygate_shared::Scope::parse(&format!("s:{s}")).expect("scope"))
                .collect();
            if kind == Kind::Publishable {
                r.referrers = vec![ReferrerPattern::parse("*.example.com").expect("pattern")];
                r.metadata_json = Some(format!("{{\"n\":{i}}}"));
            }
            keys.push(k);
            records.push(r);
        }
        let signer = common::signer(9);
        let window = common::Window { version, ..common::Window::default() };
        let projects = vec![common::project("proj_1", vec![], Default::default())];
        let (wire, shards) =
            common::snapshot(&signer, records.clone(), projects, shard_bits, window);
        let mut trusted = TrustedKeys::new();
        trusted.add(signer.verifying_key());
        let verified =
            verify_snapshot(&wire, &trusted, Some(version), common::T0 + 1).expect("verifies");
        prop_assert_eq!(verified.version(), version);
        prop_assert_eq!(verified.manifest().key_count, records.len() as u64);
        prop_assert_eq!(verified.shard_count() as usize, shards.shards.len());
        if let Some(bits) = shard_bits {
            prop_assert_eq!(verified.manifest().shard_bits, bits);
        }
        let bits = verified.manifest().shard_bits;
        let mut index = SnapshotIndex::new(verified);

        // Before any shard is loaded, a lookup names the shard it needs.
        for k in keys.iter().take(5) {
            let want = shard_index(&k.hash(), bits);
            let lookup = index.key(&k.hash());
            let names_shard = matches!(lookup, Lookup::NotLoaded { shard } if shard == want);
            prop_assert!(names_shard, "{:?}", lookup);
            let facts = RequestFacts { key: Some(k.expose()), ..RequestFacts::default() };
            let evaluation = evaluate(&index, &facts, common::T0, None);
            prop_assert!(matches!(evaluation, Evaluation::NeedsShard(s) if s == want));
        }
        let mut total = 0;
        for (i, s) in shards.shards.iter().enumerate() {
            let shard = index.manifest().verify_shard(i as u32, &s.bytes).expect("shard verifies");
            total += shard.entries.len();
            prop_assert!(shard.entries.windows(2).all(|w| w[0].0 < w[1].0));
            index.load_shard(i as u32, &s.bytes).expect("shard loads");
        }
        prop_assert_eq!(total, records.len());
        prop_assert_eq!(index.loaded_shards() as usize, shards.shards.len());
        for (k, r) in keys.iter().zip(&records) {
            match index.key(&k.hash()) {
                Lookup::Found(found) => prop_assert_eq!(found, r),
                other => prop_assert!(false, "{:?} not found: {:?}", k, other),
            }
        }
        // Keys that were never issued are absent, not "not loaded".
        for _ in 0..20 {
            let stranger =
                PlaintextKey::generate(&mut rng, &prefix, Kind::Secret, Environment::Test);
            prop_assert!(matches!(index.key(&stranger.hash()), Lookup::Absent));
        }
    }
}
