//! Known-answer vectors for `Keygate-Signature` (`shared/testdata/origin_signature.json`), for
//! origins written in other languages (`examples/origins/`, docs/origins.md).
//!
//! Every header in the file is written by [`keygate_shared::origin`] from the cases below, and
//! every case is checked against [`verify`] and [`verify_v2`]: the file cannot drift from the
//! code. If the cases change, regenerate with
//!
//! ```text
//! KEYGATE_REGENERATE_GOLDEN=1 cargo test -p keygate-shared --test origin_vectors
//! ```
#![cfg(not(target_arch = "wasm32"))]

use std::fs;
use std::path::{Path, PathBuf};

use keygate_shared::origin::{
    sign, verify, verify_v2, OriginSignatureError, OriginSigner, Signed, Version,
    DEFAULT_TOLERANCE_SECONDS,
};
use serde::{Deserialize, Serialize};

const SECRET: &str = "s3cret";
const T: i64 = 1_700_000_000;
/// The README's known answer ("Verifying requests at the origin").
const README_HEADER: &str =
    "t=1700000000,v2=ab8e238c0d8881b9ad87f9e989152257d4ee665d59c4782c4da7196f7b481dba";

const REQ: Signed<'static> = Signed {
    method: "GET",
    path_and_query: "/orders/1?expand=items",
    key_id: "key_1",
    project_id: "prj_1",
    environment: "live",
};

fn path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/origin_signature.json")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Outcome {
    ValidV2,
    ValidV1Only,
    Stale,
    Mismatch,
    Malformed,
}

impl Outcome {
    fn of(r: Result<Version, OriginSignatureError>) -> Option<Outcome> {
        Some(match r {
            Ok(Version::V2) => Outcome::ValidV2,
            Ok(Version::V1) => Outcome::ValidV1Only,
            Err(OriginSignatureError::Stale) => Outcome::Stale,
            Err(OriginSignatureError::Mismatch) => Outcome::Mismatch,
            Err(OriginSignatureError::Malformed) => Outcome::Malformed,
            Err(_) => return None,
        })
    }
}

/// The file: what an origin receives, and what it must conclude.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct File {
    description: Vec<String>,
    tolerance_seconds: i64,
    cases: Vec<Case>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    note: String,
    /// The shared secret, as UTF-8.
    secret: String,
    /// The timestamp in the header (`null` when it has none that parses).
    t: Option<i64>,
    /// The request as the origin received it: the method and the request target exactly as
    /// received, and the three `Keygate-*` headers.
    method: String,
    path_and_query: String,
    key_id: String,
    project_id: String,
    environment: String,
    /// The origin's clock, Unix seconds.
    now: i64,
    /// `Keygate-Signature`.
    header: String,
    expected: Outcome,
}

/// A case: what the edge signed, what the origin received and the header it carries.
struct Spec {
    name: &'static str,
    note: &'static str,
    received: Signed<'static>,
    now: i64,
    header: Header,
    expected: Outcome,
}

enum Header {
    /// `sign` over `signed` at `t` with `secret`.
    V2 {
        secret: &'static str,
        t: i64,
        signed: Signed<'static>,
    },
    /// `t=..,v1=..,v2=..`.
    V1AndV2 { signed: Signed<'static> },
    /// `t=..,v1=..` only.
    V1Only { signed: Signed<'static> },
    /// A header the code signed, then changed by `edit` (a forgery or a damaged header).
    Edited {
        signed: Signed<'static>,
        with_v1: bool,
        edit: fn(&str) -> String,
    },
    /// A literal that is no signature at all.
    Literal(&'static str),
}

fn specs() -> Vec<Spec> {
    let v2 = |signed| Header::V2 {
        secret: SECRET,
        t: T,
        signed,
    };
    let spec = |name, note, received, header, expected| Spec {
        name,
        note,
        received,
        now: T,
        header,
        expected,
    };
    vec![
        spec(
            "readme_known_answer",
            "The README's known answer: secret s3cret, t=1700000000, GET /orders/1?expand=items, key_1, prj_1, live.",
            REQ,
            v2(REQ),
            Outcome::ValidV2,
        ),
        spec(
            "v1_and_v2",
            "During the transition the edge sends both MACs; v2 decides.",
            REQ,
            Header::V1AndV2 { signed: REQ },
            Outcome::ValidV2,
        ),
        spec(
            "v1_only",
            "A header with only v1 (an edge from before version 2): valid for a verifier that still accepts v1, refused by one that requires v2.",
            REQ,
            Header::V1Only { signed: REQ },
            Outcome::ValidV1Only,
        ),
        spec(
            "v1_only_does_not_cover_query_or_project",
            "Why v1 is being retired: it covers neither the query nor the project nor the environment, so a changed query and project still pass it.",
            Signed {
                path_and_query: "/orders/1?expand=all",
                project_id: "prj_2",
                environment: "test",
                ..REQ
            },
            Header::V1Only { signed: REQ },
            Outcome::ValidV1Only,
        ),
        spec(
            "v1_and_v2_changed_project",
            "With both MACs, a valid v1 does not rescue a request whose project changed: v2 decides.",
            Signed {
                project_id: "prj_2",
                ..REQ
            },
            Header::V1AndV2 { signed: REQ },
            Outcome::Mismatch,
        ),
        spec(
            "v1_and_v2_forged_v2",
            "A valid v1 beside a forged v2 is refused.",
            REQ,
            Header::Edited {
                signed: REQ,
                with_v1: true,
                edit: |h| match h.rsplit_once(",v2=") {
                    Some((head, mac)) => format!("{head},v2={}", "0".repeat(mac.len())),
                    None => h.to_owned(),
                },
            },
            Outcome::Mismatch,
        ),
        spec(
            "changed_query",
            "The query the origin received differs from the one signed.",
            Signed {
                path_and_query: "/orders/1?expand=all",
                ..REQ
            },
            v2(REQ),
            Outcome::Mismatch,
        ),
        spec(
            "query_removed",
            "The query was signed; the origin received the path alone.",
            Signed {
                path_and_query: "/orders/1",
                ..REQ
            },
            v2(REQ),
            Outcome::Mismatch,
        ),
        spec(
            "changed_path",
            "A different path, same query.",
            Signed {
                path_and_query: "/orders/2?expand=items",
                ..REQ
            },
            v2(REQ),
            Outcome::Mismatch,
        ),
        spec(
            "changed_project",
            "Keygate-Project-Id differs from the one signed.",
            Signed {
                project_id: "prj_2",
                ..REQ
            },
            v2(REQ),
            Outcome::Mismatch,
        ),
        spec(
            "changed_environment",
            "Keygate-Environment differs from the one signed.",
            Signed {
                environment: "test",
                ..REQ
            },
            v2(REQ),
            Outcome::Mismatch,
        ),
        spec(
            "changed_key_id",
            "Keygate-Key-Id differs from the one signed.",
            Signed {
                key_id: "key_2",
                ..REQ
            },
            v2(REQ),
            Outcome::Mismatch,
        ),
        spec(
            "changed_method",
            "Signed for GET, received as POST.",
            Signed {
                method: "POST",
                ..REQ
            },
            v2(REQ),
            Outcome::Mismatch,
        ),
        spec(
            "lowercase_method",
            "The method is uppercased before it is signed and before it is checked.",
            Signed {
                method: "get",
                ..REQ
            },
            v2(REQ),
            Outcome::ValidV2,
        ),
        spec(
            "wrong_secret",
            "Signed with another secret.",
            REQ,
            Header::V2 {
                secret: "not-the-secret",
                t: T,
                signed: REQ,
            },
            Outcome::Mismatch,
        ),
        spec(
            "percent_encoded_target",
            "The target is signed exactly as sent, percent-encoding included.",
            Signed {
                path_and_query: "/files/a%20b?q=x%2Fy",
                ..REQ
            },
            v2(Signed {
                path_and_query: "/files/a%20b?q=x%2Fy",
                ..REQ
            }),
            Outcome::ValidV2,
        ),
        spec(
            "decoded_target",
            "An origin that checks the decoded path and query instead of the raw target refuses a genuine request.",
            Signed {
                path_and_query: "/files/a b?q=x/y",
                ..REQ
            },
            v2(Signed {
                path_and_query: "/files/a%20b?q=x%2Fy",
                ..REQ
            }),
            Outcome::Mismatch,
        ),
        spec(
            "empty_query",
            "A target ending in a bare `?` is signed with the `?`.",
            Signed {
                path_and_query: "/orders/1?",
                ..REQ
            },
            v2(Signed {
                path_and_query: "/orders/1?",
                ..REQ
            }),
            Outcome::ValidV2,
        ),
        Spec {
            now: T + 300,
            ..spec(
                "clock_300_s_ahead",
                "The origin's clock 300 s after t: still within the tolerance.",
                REQ,
                v2(REQ),
                Outcome::ValidV2,
            )
        },
        Spec {
            now: T + 301,
            ..spec(
                "clock_301_s_ahead",
                "The origin's clock 301 s after t: stale.",
                REQ,
                v2(REQ),
                Outcome::Stale,
            )
        },
        Spec {
            now: T - 301,
            ..spec(
                "clock_301_s_behind",
                "The origin's clock 301 s before t (the edge's clock ahead): stale.",
                REQ,
                v2(REQ),
                Outcome::Stale,
            )
        },
        Spec {
            now: T + 301,
            ..spec(
                "stale_before_mismatch",
                "The timestamp is checked before the MAC: a stale header with a wrong MAC is stale.",
                Signed {
                    project_id: "prj_2",
                    ..REQ
                },
                v2(REQ),
                Outcome::Stale,
            )
        },
        spec(
            "negative_timestamp",
            "A negative timestamp parses and is stale.",
            REQ,
            Header::V2 {
                secret: SECRET,
                t: -1,
                signed: REQ,
            },
            Outcome::Stale,
        ),
        spec(
            "second_v2_candidate",
            "Several v2 values: the header is valid when any one matches.",
            REQ,
            Header::Edited {
                signed: REQ,
                with_v1: false,
                edit: |h| match h.split_once(",v2=") {
                    Some((t, mac)) => format!("{t},v2={},v2={mac}", "f".repeat(mac.len())),
                    None => h.to_owned(),
                },
            },
            Outcome::ValidV2,
        ),
        spec(
            "first_v2_candidate",
            "Several v2 values, the matching one first: every candidate is compared, none decides alone.",
            REQ,
            Header::Edited {
                signed: REQ,
                with_v1: false,
                edit: |h| format!("{h},v2={}", "f".repeat(64)),
            },
            Outcome::ValidV2,
        ),
        spec(
            "uppercase_hex",
            "The MAC is compared as bytes: uppercase hex is the same MAC.",
            REQ,
            Header::Edited {
                signed: REQ,
                with_v1: false,
                edit: |h| match h.split_once(",v2=") {
                    Some((t, mac)) => format!("{t},v2={}", mac.to_ascii_uppercase()),
                    None => h.to_owned(),
                },
            },
            Outcome::ValidV2,
        ),
        spec(
            "spaces_after_commas",
            "Whitespace around each comma-separated part is ignored.",
            REQ,
            Header::Edited {
                signed: REQ,
                with_v1: false,
                edit: |h| format!(" {} ", h.replace(',', ", ")),
            },
            Outcome::ValidV2,
        ),
        spec(
            "truncated_mac",
            "A v2 value that is not 64 hex digits matches nothing.",
            REQ,
            Header::Edited {
                signed: REQ,
                with_v1: false,
                edit: |h| h[..h.len() - 2].to_owned(),
            },
            Outcome::Mismatch,
        ),
        spec(
            "mac_not_hex",
            "A v2 value with a character that is not hex matches nothing.",
            REQ,
            Header::Edited {
                signed: REQ,
                with_v1: false,
                edit: |h| format!("{}g", &h[..h.len() - 1]),
            },
            Outcome::Mismatch,
        ),
        spec(
            "empty_v2",
            "An empty v2 value matches nothing.",
            REQ,
            Header::Literal("t=1700000000,v2="),
            Outcome::Mismatch,
        ),
        spec(
            "no_mac",
            "A timestamp and no MAC.",
            REQ,
            Header::Literal("t=1700000000"),
            Outcome::Malformed,
        ),
        spec(
            "no_timestamp",
            "A MAC and no timestamp.",
            REQ,
            Header::Edited {
                signed: REQ,
                with_v1: false,
                edit: |h| h.split_once(',').map_or(h, |(_, rest)| rest).to_owned(),
            },
            Outcome::Malformed,
        ),
        spec(
            "timestamp_not_a_number",
            "A timestamp that is not an integer.",
            REQ,
            Header::Edited {
                signed: REQ,
                with_v1: false,
                edit: |h| h.replacen("t=1700000000", "t=1.7e9", 1),
            },
            Outcome::Malformed,
        ),
        spec(
            "timestamp_beyond_64_bits",
            "A timestamp outside the signed 64-bit range.",
            REQ,
            Header::Edited {
                signed: REQ,
                with_v1: false,
                edit: |h| h.replacen("t=1700000000", "t=99999999999999999999", 1),
            },
            Outcome::Malformed,
        ),
        spec(
            "unknown_part",
            "A part other than t, v1 and v2.",
            REQ,
            Header::Edited {
                signed: REQ,
                with_v1: false,
                edit: |h| format!("{h},v3=00"),
            },
            Outcome::Malformed,
        ),
        spec(
            "trailing_comma",
            "An empty part.",
            REQ,
            Header::Edited {
                signed: REQ,
                with_v1: false,
                edit: |h| format!("{h},"),
            },
            Outcome::Malformed,
        ),
        spec(
            "garbage",
            "Not a signature header.",
            REQ,
            Header::Literal("garbage"),
            Outcome::Malformed,
        ),
        spec(
            "empty",
            "An empty header.",
            REQ,
            Header::Literal(""),
            Outcome::Malformed,
        ),
    ]
}

/// The timestamp in a header the code wrote.
fn t_of(header: &str) -> Option<i64> {
    header
        .split(',')
        .find_map(|p| p.trim().strip_prefix("t="))
        .and_then(|t| t.parse().ok())
}

fn build(spec: &Spec) -> Case {
    let header = match &spec.header {
        Header::V2 { secret, t, signed } => sign(secret.as_bytes(), *t, signed),
        Header::V1AndV2 { signed } => OriginSigner::new(SECRET.as_bytes())
            .with_v1(true)
            .sign(T, signed),
        Header::V1Only { signed } => {
            let both = OriginSigner::new(SECRET.as_bytes())
                .with_v1(true)
                .sign(T, signed);
            both.rsplit_once(",v2=")
                .map_or(both.clone(), |(h, _)| h.to_owned())
        }
        Header::Edited {
            signed,
            with_v1,
            edit,
        } => edit(
            &OriginSigner::new(SECRET.as_bytes())
                .with_v1(*with_v1)
                .sign(T, signed),
        ),
        Header::Literal(h) => (*h).to_owned(),
    };
    let r = spec.received;
    Case {
        name: spec.name.to_owned(),
        note: spec.note.to_owned(),
        // The origin's secret; `wrong_secret` is signed with another.
        secret: SECRET.to_owned(),
        t: t_of(&header),
        method: r.method.to_owned(),
        path_and_query: r.path_and_query.to_owned(),
        key_id: r.key_id.to_owned(),
        project_id: r.project_id.to_owned(),
        environment: r.environment.to_owned(),
        now: spec.now,
        header,
        expected: spec.expected,
    }
}

fn expected_file() -> File {
    File {
        description: vec![
            "Known-answer vectors for Keygate-Signature, written by keygate_shared::origin (shared/tests/origin_vectors.rs).".into(),
            "Each case: the shared secret, the request as the origin received it (method, request target exactly as received, Keygate-Key-Id, Keygate-Project-Id, Keygate-Environment), the origin's clock `now` in Unix seconds, the Keygate-Signature header, and what a verifier must conclude with the tolerance below.".into(),
            "expected: valid_v2 (accept), valid_v1_only (only a v1 MAC matched: accept only while v1 is still allowed, otherwise refuse), stale (t more than tolerance_seconds from now), mismatch (no MAC matches), malformed (not t=...,v1=...,v2=...).".into(),
            "Order of checks: malformed, then stale, then the MAC. `t` is the timestamp in the header (null when it has none).".into(),
        ],
        tolerance_seconds: DEFAULT_TOLERANCE_SECONDS,
        cases: specs().iter().map(build).collect(),
    }
}

fn render(file: &File) -> String {
    let mut s = serde_json::to_string_pretty(file).expect("the vectors serialize");
    s.push('\n');
    s
}

/// The file, written first when `KEYGATE_REGENERATE_GOLDEN=1` (once per run: the tests run in
/// parallel).
fn read_file() -> String {
    static REGENERATED: std::sync::Once = std::sync::Once::new();
    if std::env::var_os("KEYGATE_REGENERATE_GOLDEN").is_some_and(|v| v == "1") {
        REGENERATED.call_once(|| {
            fs::write(path(), render(&expected_file())).expect("write the vectors");
        });
    }
    fs::read_to_string(path()).expect(
        "shared/testdata/origin_signature.json is missing; run with KEYGATE_REGENERATE_GOLDEN=1",
    )
}

#[test]
fn the_file_is_what_the_code_writes() {
    let want = render(&expected_file());
    let have = read_file();
    assert!(
        have == want,
        "shared/testdata/origin_signature.json differs from what the code writes; if the cases \
         changed on purpose, regenerate with KEYGATE_REGENERATE_GOLDEN=1 cargo test -p \
         keygate-shared --test origin_vectors"
    );
}

#[test]
fn every_vector_holds_against_verify() {
    let file: File = serde_json::from_str(&read_file()).expect("the vectors parse");
    assert_eq!(file.tolerance_seconds, DEFAULT_TOLERANCE_SECONDS);
    assert!(file.cases.len() >= 30, "{} cases", file.cases.len());
    for c in &file.cases {
        let req = Signed {
            method: &c.method,
            path_and_query: &c.path_and_query,
            key_id: &c.key_id,
            project_id: &c.project_id,
            environment: &c.environment,
        };
        let secret = c.secret.as_bytes();
        let got = verify(secret, &c.header, &req, c.now, file.tolerance_seconds);
        assert_eq!(Outcome::of(got), Some(c.expected), "{}: {got:?}", c.name);
        let strict = verify_v2(secret, &c.header, &req, c.now, file.tolerance_seconds);
        match c.expected {
            Outcome::ValidV2 => assert_eq!(strict, Ok(()), "{}", c.name),
            Outcome::ValidV1Only => assert_eq!(
                strict,
                Err(OriginSignatureError::VersionOneOnly),
                "{}",
                c.name
            ),
            _ => assert!(strict.is_err(), "{}", c.name),
        }
    }
}

#[test]
fn the_readme_known_answer_is_a_vector() {
    let file = expected_file();
    let kat = file
        .cases
        .iter()
        .find(|c| c.name == "readme_known_answer")
        .expect("the README's case");
    assert_eq!(kat.header, README_HEADER);
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let readme = fs::read_to_string(readme).expect("read the README");
    assert!(
        readme.contains(README_HEADER),
        "the README's known answer changed"
    );
    // Every outcome is exercised, so a verifier in another language cannot skip one.
    for o in [
        Outcome::ValidV2,
        Outcome::ValidV1Only,
        Outcome::Stale,
        Outcome::Mismatch,
        Outcome::Malformed,
    ] {
        assert!(file.cases.iter().any(|c| c.expected == o), "{o:?}");
    }
    // Names are unique: the examples report failures by name.
    let mut names: Vec<_> = file.cases.iter().map(|c| c.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), file.cases.len());
}
