//! The edge's answers, as plain data: status, headers and body. The Worker glue turns them into
//! `worker::Response`s; keeping them plain lets them be tested natively.

use keygate_shared::{Code, LimitInfo, ReferrerPattern};

/// A response the edge makes itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Headers, in order.
    pub headers: Vec<(&'static str, String)>,
    /// Body.
    pub body: String,
}

/// Headers a browser app may read on cross-origin responses.
pub const EXPOSED_HEADERS: &str =
    "RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset, Retry-After, WWW-Authenticate";

/// A problem+json answer (RFC 9457) with the stable `code`; the one builder of problem bodies
/// at the edge, the entry module's included.
pub fn problem(status: u16, code: &str, title: &str, detail: &str) -> Answer {
    let body = serde_json::json!({
        "type": keygate_shared::problem::problem_type(code),
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    })
    .to_string();
    Answer {
        status,
        headers: vec![
            ("Content-Type", "application/problem+json".to_owned()),
            ("Cache-Control", "no-store".to_owned()),
        ],
        body,
    }
}

/// The problem+json answer for a refused request.
pub fn refusal(code: Code, limits: Option<&LimitInfo>, detail: &str) -> Answer {
    let status = code.http_status();
    let mut answer = problem(status, code.as_str(), code.title(), detail);
    let headers = &mut answer.headers;
    if status == 401 {
        headers.push((
            "WWW-Authenticate",
            format!(
                "Bearer realm=\"keygate\", error=\"invalid_token\", error_description=\"{}\"",
                code.as_str()
            ),
        ));
    }
    if let Some(info) = limits {
        headers.extend(limit_headers(info));
        if let Some(retry) = info.retry_after_seconds {
            headers.push(("Retry-After", retry.to_string()));
        }
    }
    answer
}

/// A human sentence for each refusal; never echoes the key.
pub fn detail_for(code: Code) -> &'static str {
    match code {
        Code::MissingKey => {
            "Send an API key in `Authorization: Bearer`, `X-API-Key` or the `key` query parameter."
        }
        Code::MalformedKey => "The API key is not in Keygate's format, or its checksum is wrong.",
        Code::UnknownKey => "No such API key.",
        Code::ExpiredKey => "The API key has expired.",
        Code::RevokedKey => "The API key has been revoked.",
        Code::EnvironmentNotAllowed => "The API key's environment is not served on this host.",
        Code::ReferrerNotAllowed => {
            "The request's Origin or Referer is not allowed for this API key."
        }
        Code::IpNotAllowed => "The client IP address is not allowed for this API key.",
        Code::InsufficientScope => "The API key lacks the scope this route requires.",
        Code::RateLimited => "Too many requests for this API key; retry after the indicated time.",
        Code::QuotaExceeded => "The API key's quota is used up for this period.",
        Code::SnapshotUnavailable => "Key verification is temporarily unavailable.",
        _ => "",
    }
}

/// `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset`.
pub fn limit_headers(info: &LimitInfo) -> [(&'static str, String); 3] {
    [
        ("RateLimit-Limit", info.limit.to_string()),
        ("RateLimit-Remaining", info.remaining.to_string()),
        ("RateLimit-Reset", info.reset_seconds.to_string()),
    ]
}

/// Whether a response to a request from `origin` may carry CORS headers.
///
/// - A key with referrer restrictions: only when the request matches them.
/// - No key, or one that is malformed or unknown: yes, so the app can read the error.
/// - A key without referrer restrictions (a server key): no; the origin's own CORS applies.
pub fn cors_allowed(
    origin: Option<&str>,
    referer: Option<&str>,
    key_referrers: Option<&[ReferrerPattern]>,
) -> bool {
    if origin.is_none_or(str::is_empty) {
        return false;
    }
    match key_referrers {
        None => true,
        Some([]) => false,
        Some(patterns) => keygate_shared::referrer::any_matches(patterns, origin, referer),
    }
}

/// CORS headers for an actual (non-preflight) response.
pub fn cors_headers(origin: &str) -> [(&'static str, String); 3] {
    [
        ("Access-Control-Allow-Origin", origin.to_owned()),
        ("Access-Control-Expose-Headers", EXPOSED_HEADERS.to_owned()),
        ("Vary", "Origin".to_owned()),
    ]
}

/// The answer to a CORS preflight. A preflight carries no key, so it cannot be judged against
/// one; it grants nothing by itself: the actual request is verified, and gets CORS headers only
/// when its key allows its origin.
pub fn preflight(origin: &str, request_method: &str, request_headers: Option<&str>) -> Answer {
    let allow_headers = request_headers
        .filter(|h| !h.trim().is_empty())
        .map_or_else(
            || "Authorization, X-API-Key, Content-Type".to_owned(),
            str::to_owned,
        );
    Answer {
        status: 204,
        headers: vec![
            ("Access-Control-Allow-Origin", origin.to_owned()),
            ("Access-Control-Allow-Methods", request_method.to_owned()),
            ("Access-Control-Allow-Headers", allow_headers),
            ("Access-Control-Max-Age", "600".to_owned()),
            (
                "Vary",
                "Origin, Access-Control-Request-Method, Access-Control-Request-Headers".to_owned(),
            ),
        ],
        body: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(a: &'a Answer, name: &str) -> Option<&'a str> {
        a.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn statuses_and_headers() {
        let a = refusal(Code::RevokedKey, None, "x");
        assert_eq!(a.status, 401);
        assert!(header(&a, "WWW-Authenticate").is_some());
        let body: serde_json::Value = serde_json::from_str(&a.body).expect("json");
        assert_eq!(body["code"], "revoked_key");
        assert_eq!(body["status"], 401);
        let info = LimitInfo {
            limit: 10,
            remaining: 0,
            reset_seconds: 30,
            retry_after_seconds: Some(6),
        };
        let a = refusal(Code::RateLimited, Some(&info), "x");
        assert_eq!(a.status, 429);
        assert_eq!(header(&a, "Retry-After"), Some("6"));
        assert_eq!(header(&a, "RateLimit-Limit"), Some("10"));
        assert_eq!(header(&a, "RateLimit-Remaining"), Some("0"));
        assert_eq!(header(&a, "RateLimit-Reset"), Some("30"));
        assert_eq!(refusal(Code::IpNotAllowed, None, "").status, 403);
        assert_eq!(refusal(Code::SnapshotUnavailable, None, "").status, 503);
    }

    #[test]
    fn cors_rules() {
        let pats = vec![ReferrerPattern::decode("https://app.example.com").expect("p")];
        let o = Some("https://app.example.com");
        assert!(cors_allowed(o, None, Some(&pats)));
        assert!(!cors_allowed(
            Some("https://evil.example"),
            None,
            Some(&pats)
        ));
        assert!(cors_allowed(o, None, None));
        assert!(!cors_allowed(o, None, Some(&[])));
        assert!(!cors_allowed(None, None, None));
    }
}
