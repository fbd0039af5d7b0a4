//! Reading a JSON command body: content type, size, syntax and types, each a clear 4xx.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer, MapAccess, Visitor};

use super::error::{ApiError, FieldError};

/// Largest accepted body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Longest a body may take to arrive. A command body is at most 64 KiB, which any
/// client sends in well under a second; a body trickled in byte by byte (slowloris)
/// would otherwise hold a connection and a task for as long as the client likes.
pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A parsed JSON body, plus its raw bytes (hashed for idempotency).
#[derive(Debug)]
pub struct JsonBody<T> {
    /// The value.
    pub value: T,
    /// The bytes as received.
    pub raw: Bytes,
}

impl<T: DeserializeOwned, St: Send + Sync> FromRequest<St> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &St) -> Result<Self, ApiError> {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the command as Content-Type: application/json",
            ));
        }
        let arriving = tokio::time::timeout(BODY_TIMEOUT, Bytes::from_request(req, state));
        let raw = arriving.await.map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!("the body did not arrive within {} s", BODY_TIMEOUT.as_secs()),
            )
        })?;
        let raw = raw.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!("the body is over {MAX_BODY_BYTES} bytes"),
                )
            } else {
                ApiError::new(StatusCode::BAD_REQUEST, "unreadable_body", r.body_text())
            }
        })?;
        let mut de = serde_json::Deserializer::from_slice(&raw);
        let value = serde_path_to_error::deserialize::<_, Object<T>>(&mut de)
            .map(|o| o.0)
            .map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                if inner.is_syntax() || inner.is_eof() {
                    ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", inner.to_string())
                } else {
                    let path = if path == "." { String::new() } else { path };
                    ApiError::fields(vec![FieldError {
                        path,
                        message: inner.to_string(),
                    }])
                }
            })?;
        de.end()
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", e.to_string()))?;
        Ok(JsonBody { value, raw })
    }
}

/// `T` from a JSON object only. serde's derived structs also take an array of their
/// fields in order (`[5]` for `{"quantity": 5}`), which no client means and the OpenAPI
/// document does not allow: every body, and every object within one, is an object.
pub(super) struct Object<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Only<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Only<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                // The same map, so the fields' paths and checks are the struct's own.
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        deserializer.deserialize_map(Only(std::marker::PhantomData)).map(Object)
    }
}

/// A list of objects (an order's lines), each an [`Object`].
pub(super) fn objects<'de, D: Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<Vec<T>, D::Error> {
    Vec::<Object<T>>::deserialize(deserializer).map(|list| list.into_iter().map(|o| o.0).collect())
}

/// An integer from any JSON number with no fractional part: JSON Schema's `integer`
/// includes `1.0`, and a client (or a language without integers) may send one. A
/// fraction, or a number beyond the target's range, is refused like any wrong type.
pub(super) fn whole<'de, D: Deserializer<'de>, T: TryFrom<i64>>(deserializer: D) -> Result<T, D::Error> {
    use serde::de::Error;
    let number = serde_json::Number::deserialize(deserializer)?;
    let exact = number.as_i64().or_else(|| {
        number
            .as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= i64::MIN as f64 && *f < i64::MAX as f64)
            .map(|f| f as i64)
    });
    let value = exact.ok_or_else(|| D::Error::custom(format!("expected an integer, found {number}")))?;
    T::try_from(value).map_err(|_| D::Error::custom(format!("{value} is out of range")))
}
