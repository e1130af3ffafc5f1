//! Request extractors that answer bad input in our error format: malformed JSON is a 400
//! `MALFORMED_JSON`; a well-formed body with an unknown field, a missing field or a value of
//! the wrong type is a 422 `VALIDATION_FAILED` naming the field.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// JSON body.
pub struct ApiJson<T>(pub T);

/// Query string.
pub struct ApiQuery<T>(pub T);

/// The field named in a serde message like "unknown field `foo`, expected ...".
fn quoted(msg: &str) -> Option<&str> {
    let start = msg.find('`')? + 1;
    let len = msg[start..].find('`')?;
    Some(&msg[start..start + len])
}

fn join_field(path: &str, name: &str) -> String {
    if path.is_empty() || path == "." {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

pub fn json_error(path: String, err: serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    let msg = err.to_string();
    match err.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            ApiError::bad_request("MALFORMED_JSON", format!("the request body is not valid JSON: {msg}"))
        }
        Category::Data => {
            let field = if msg.starts_with("unknown field") && !(path.is_empty() || path == ".") {
                // serde_path_to_error's path already ends with the unknown key
                path
            } else if msg.starts_with("unknown field") || msg.starts_with("missing field") {
                join_field(&path, quoted(&msg).unwrap_or(""))
            } else if path.is_empty() || path == "." {
                "body".to_string()
            } else {
                path
            };
            // Strip serde's " at line X column Y" tail: the field says where.
            let clean = msg.split(" at line ").next().unwrap_or(&msg).to_string();
            ApiError::validation(field, clean)
        }
    }
}

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let ct = req.headers().get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let mime = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        if mime != "application/json" && !mime.ends_with("+json") {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UNSUPPORTED_MEDIA_TYPE",
                "the request body must be JSON (Content-Type: application/json)",
            ));
        }
        let LimitedBytes(bytes) = LimitedBytes::from_request(req, state).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// A request body of at most [`super::JSON_BODY_LIMIT`] bytes. A larger one is answered 413
/// `PAYLOAD_TOO_LARGE` after reading (and discarding) up to [`DRAIN_LIMIT`] more bytes, so a
/// client that sends a little too much sees the answer rather than a connection reset in the
/// middle of its send.
pub struct LimitedBytes(pub Bytes);

/// How much of an oversized body is read and discarded before answering.
pub const DRAIN_LIMIT: usize = 16 * 1024 * 1024;

impl<S: Send + Sync> FromRequest<S> for LimitedBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        use futures::StreamExt;
        let limit = super::JSON_BODY_LIMIT;
        let mut stream = req.into_body().into_data_stream();
        let mut buf = bytes::BytesMut::new();
        let mut total = 0usize;
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|_| ApiError::bad_request("BODY_READ_FAILED", "the request body could not be read"))?;
            total += chunk.len();
            if total <= limit {
                buf.extend_from_slice(&chunk);
            } else if total > limit + DRAIN_LIMIT {
                break;
            }
        }
        if total > limit {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "PAYLOAD_TOO_LARGE",
                format!("the request body is larger than {} bytes", limit),
            ));
        }
        Ok(LimitedBytes(buf.freeze()))
    }
}

/// Parses a JSON document strictly (trailing characters are an error).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // Every body we take is an object; serde would otherwise read a struct from an array.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return match serde_json::from_slice::<serde_json::Value>(bytes) {
            Err(e) => Err(json_error(String::new(), e)),
            Ok(_) => Err(ApiError::validation("body", "the request body must be a JSON object")),
        };
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let v = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        json_error(path, e.into_inner())
    })?;
    de.end().map_err(|e| json_error(String::new(), e))?;
    Ok(v)
}

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let q = parts.uri.query().unwrap_or("");
        serde_urlencoded::from_str(q).map(ApiQuery).map_err(|e| {
            let msg = e.to_string();
            let field = quoted(&msg).unwrap_or("query").to_string();
            ApiError::validation(field, format!("invalid query string: {msg}"))
        })
    }
}

/// `limit` with a default and bounds, as a 422 naming the field otherwise.
pub fn limit(raw: Option<i64>, default: i64, max: i64) -> Result<i64, ApiError> {
    match raw {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::validation("limit", format!("must be between 1 and {max}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        inner: Option<Inner>,
    }
    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        n: u32,
    }

    #[test]
    fn bad_json_is_named_precisely() {
        let e = parse_json::<Body>(b"{").unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (400, "MALFORMED_JSON"));
        let e = parse_json::<Body>(br#"{"name":"a","nope":1}"#).unwrap_err();
        assert_eq!((e.status.as_u16(), e.field.as_deref()), (422, Some("nope")));
        let e = parse_json::<Body>(br#"{}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("name"));
        let e = parse_json::<Body>(br#"{"name":"a","inner":{"n":"x"}}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("inner.n"));
        let e = parse_json::<Body>(br#"{"name":"a"} x"#).unwrap_err();
        assert_eq!(e.code, "MALFORMED_JSON");
    }
}
