//! Request extractors whose failures are problem+json, never actix's default text errors:
//! wrong content type 415, oversized body 413, malformed JSON 400, and unknown fields or invalid
//! values 422 with the offending field's path (`restrictions.referrers[1]: ...`).

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest};
use futures_util::future::{ready, LocalBoxFuture, Ready};
use futures_util::StreamExt as _;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Largest request body accepted.
pub const BODY_LIMIT: usize = 64 * 1024;
/// Largest body of `POST /v1/usage`: room for its 5000 items and 5000 sightings.
pub const USAGE_BODY_LIMIT: usize = 2 * 1024 * 1024;

/// A JSON body of at most `LIMIT` bytes, parsed with field-path errors.
#[derive(Debug)]
pub struct Json<T, const LIMIT: usize = BODY_LIMIT>(pub T);

impl<T, const LIMIT: usize> Json<T, LIMIT> {
    /// The value.
    pub fn into_inner(self) -> T {
        self.0
    }
}

fn is_json(req: &HttpRequest) -> bool {
    let Some(ct) = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

impl<T: DeserializeOwned + 'static, const LIMIT: usize> FromRequest for Json<T, LIMIT> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        if !is_json(req) {
            return Box::pin(ready(Err(ApiError::UnsupportedMediaType(
                "the request body must be application/json".to_owned(),
            ))));
        }
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > LIMIT) {
            return Box::pin(ready(Err(ApiError::PayloadTooLarge(LIMIT))));
        }
        let mut stream = payload.take();
        Box::pin(async move {
            let mut body = Vec::with_capacity(declared.unwrap_or(256).min(LIMIT));
            while let Some(chunk) = stream.next().await {
                let chunk =
                    chunk.map_err(|e| ApiError::MalformedJson(format!("cannot read body: {e}")))?;
                if body.len() + chunk.len() > LIMIT {
                    return Err(ApiError::PayloadTooLarge(LIMIT));
                }
                body.extend_from_slice(&chunk);
            }
            parse_json(&body).map(Json)
        })
    }
}

/// Parses JSON bytes into `T`, naming the field on a data error.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::MalformedJson(
            "the request body is empty; expected a JSON object".to_owned(),
        ));
    }
    // Syntax first, over the whole body; then the shape, with the field's path.
    let mut value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::MalformedJson(format!("the request body is not valid JSON: {e}")))?;
    // Every body is an object: serde would also read a struct from an array of its fields
    // in order (`[]` is a struct whose fields all have defaults).
    if !value.is_object() {
        return Err(ApiError::validation("body", "must be a JSON object"));
    }
    integral_floats_to_integers(&mut value);
    serde_path_to_error::deserialize::<_, T>(value).map_err(|e| {
        let path = e.path().to_string();
        let message = strip_position(&e.into_inner().to_string());
        ApiError::Validation {
            field: field_of(&path, &message),
            message,
        }
    })
}

/// Largest magnitude below which every integer is exactly an `f64`.
const MAX_EXACT_F64_INTEGER: f64 = 9_007_199_254_740_992.0;

/// JSON has one number type: `415.0` is the integer 415 (JSON Schema agrees: a number with a
/// zero fractional part is an `integer`), but serde refuses it for an integer field. Such numbers
/// become integers before the typed parse; fields of a float type take integers as well.
fn integral_floats_to_integers(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Number(n) if n.is_f64() => {
            if let Some(f) = n.as_f64() {
                if f.fract() == 0.0 && f.abs() <= MAX_EXACT_F64_INTEGER {
                    // Exact: |f| ≤ 2^53 and integral.
                    #[allow(clippy::cast_possible_truncation)]
                    let i = f as i64;
                    *value = serde_json::Value::from(i);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(integral_floats_to_integers),
        serde_json::Value::Object(fields) => {
            fields.values_mut().for_each(integral_floats_to_integers)
        }
        _ => {}
    }
}

/// serde_json appends " at line L column C"; the field path says more.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

/// The path of the offending field. For a missing or unknown field the path is its parent, so
/// the field's own name is appended from serde's message.
fn field_of(path: &str, message: &str) -> String {
    let named = ["missing field `", "unknown field `"]
        .iter()
        .find_map(|p| message.strip_prefix(p))
        .and_then(|rest| rest.split('`').next());
    let base = if path == "." { "" } else { path };
    match named {
        Some(name) if !base.ends_with(name) => {
            if base.is_empty() {
                name.to_owned()
            } else {
                format!("{base}.{name}")
            }
        }
        _ if base.is_empty() => "body".to_owned(),
        _ => base.to_owned(),
    }
}

/// A query string parsed with field-path errors.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<T: DeserializeOwned> FromRequest for Query<T> {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(
            req.query_string().as_bytes(),
        ));
        ready(
            serde_path_to_error::deserialize::<_, T>(de)
                .map(Query)
                .map_err(|e| {
                    let path = e.path().to_string();
                    let message = e.into_inner().to_string();
                    ApiError::Validation {
                        field: field_of(&path, &message),
                        message,
                    }
                }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        list: Vec<u32>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        name: String,
        inner: Option<Inner>,
    }

    fn field(body: &str) -> String {
        match parse_json::<Outer>(body.as_bytes()) {
            Err(ApiError::Validation { field, .. }) => field,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn names_the_offending_field() {
        assert_eq!(field(r#"{"inner": null}"#), "name");
        assert_eq!(field(r#"{"name": "x", "extra": 1}"#), "extra");
        assert_eq!(
            field(r#"{"name": "x", "inner": {"list": [1, -2]}}"#),
            "inner.list[1]"
        );
        assert_eq!(
            field(r#"{"name": "x", "inner": {"list": [], "more": 1}}"#),
            "inner.more"
        );
        assert_eq!(field(r#"{"name": 5}"#), "name");
        assert_eq!(field(r#"[]"#), "body");
        assert_eq!(field(r#"["x", null]"#), "body");
        assert_eq!(field(r#""x""#), "body");
    }

    #[derive(Debug, serde::Deserialize)]
    struct Numbers {
        count: u32,
        signed: i64,
        ratio: f64,
    }

    #[test]
    fn integral_floats_are_integers() {
        let n: Numbers = parse_json(br#"{"count": 415.0, "signed": -3e2, "ratio": 2.0}"#).unwrap();
        assert_eq!((n.count, n.signed), (415, -300));
        assert!((n.ratio - 2.0).abs() < f64::EPSILON);
        // A fraction stays a fraction, and so is refused for an integer field.
        assert!(matches!(
            parse_json::<Numbers>(br#"{"count": 1.5, "signed": 0, "ratio": 0}"#),
            Err(ApiError::Validation { field, .. }) if field == "count"
        ));
    }

    #[test]
    fn syntax_errors_are_malformed_json() {
        for body in ["", "  ", "{", r#"{"name": "x"} trailing"#, "nul"] {
            assert!(
                matches!(
                    parse_json::<Outer>(body.as_bytes()),
                    Err(ApiError::MalformedJson(_))
                ),
                "{body:?}"
            );
        }
        assert!(parse_json::<Outer>(br#"{"name": "x"}"#).is_ok());
    }
}
