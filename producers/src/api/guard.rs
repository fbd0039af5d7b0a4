//! Who is calling, and how often: the layer every API route sits behind.
//!
//! [`protect`] runs before any handler. It asks its authenticator who the request
//! comes from (locally: the bearer token, verified here; behind API Gateway: the claims
//! its JWT authorizer put in the request context), charges that caller's token bucket,
//! and leaves the answer in the request for [`Authenticated`], the extractor each
//! handler takes first. A handler that needs a caller therefore answers 401 before it
//! reads a path, a header or a body, and the decision of *what* a caller may do stays
//! with the handler, which alone knows what the request touches (an order's store is
//! known once the order is loaded): [`crate::auth::authorize`].
//!
//! A router without this layer has no caller on any request, so every protected route
//! answers 401: forgetting the layer fails closed.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::error::ApiError;
use crate::auth::{Action, Caller, Refused, Role, Unauthenticated, authorize};

/// The `realm` of our `WWW-Authenticate` challenges.
const REALM: &str = "cloudcafe";

/// Who the request comes from, as [`protect`] found it.
#[derive(Debug, Clone)]
struct Identified(Result<Caller, Unauthenticated>);

/// The verified caller of a request: the first extractor of every protected handler.
/// Rejects with 401 and a `WWW-Authenticate: Bearer` challenge.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Caller);

impl<S: Send + Sync> FromRequestParts<S> for Authenticated {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Response> {
        match parts.extensions.get::<Identified>() {
            Some(Identified(Ok(caller))) => Ok(Authenticated(caller.clone())),
            Some(Identified(Err(why))) => Err(unauthenticated(why, parts)),
            None => Err(unauthenticated(&Unauthenticated::Missing, parts)),
        }
    }
}

impl Authenticated {
    /// Whether this caller may do `action`: Err is the 403 to answer.
    pub fn may(&self, action: &Action<'_>) -> Result<(), ApiError> {
        authorize(&self.0, action).map_err(|refused| forbidden(&self.0, &refused))
    }
}

/// The 401: what was wrong with the credentials, never the credentials themselves.
fn unauthenticated(why: &Unauthenticated, parts: &Parts) -> Response {
    tracing::info!(method = %parts.method, path = parts.uri.path(), reason = %why, "refused: not authenticated");
    let challenge = match why {
        // RFC 6750 §3.1: no error code when the request carried no credentials.
        Unauthenticated::Missing => format!("Bearer realm=\"{REALM}\""),
        _ => format!("Bearer realm=\"{REALM}\", error=\"invalid_token\""),
    };
    let mut response = ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", why.to_string()).into_response();
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

/// The 403, logged with who asked for what.
fn forbidden(caller: &Caller, refused: &Refused) -> ApiError {
    tracing::info!(caller = %caller.key(), reason = %refused, "refused: not allowed");
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", refused.to_string())
}

/// How often each caller may call: a token bucket per caller, its size and refill by
/// role. A customer is a person with a phone; a store's staff are its tills; HQ and
/// operators are back-office systems (the loyalty recalculation, dashboards).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Requests per second, and burst, of one customer.
    pub customer: (u32, u32),
    /// Of one member of a store's staff.
    pub staff: (u32, u32),
    /// Of one headquarters or operator caller.
    pub back_office: (u32, u32),
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            customer: (10, 20),
            staff: (50, 100),
            back_office: (500, 1_000),
        }
    }
}

/// One keyed token bucket per quota.
struct Buckets {
    customer: DefaultKeyedRateLimiter<String>,
    staff: DefaultKeyedRateLimiter<String>,
    back_office: DefaultKeyedRateLimiter<String>,
    /// Checks since the buckets last forgot the callers that went quiet.
    checks: AtomicU64,
}

/// Every this many checks, full buckets are dropped, so memory follows the callers
/// active now, not every caller since the start.
const FORGET_EVERY: u64 = 4_096;

fn quota((per_second, burst): (u32, u32)) -> Quota {
    let rate = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(rate).allow_burst(NonZeroU32::new(burst).unwrap_or(rate))
}

impl Buckets {
    fn new(limits: Limits) -> Buckets {
        Buckets {
            customer: RateLimiter::keyed(quota(limits.customer)),
            staff: RateLimiter::keyed(quota(limits.staff)),
            back_office: RateLimiter::keyed(quota(limits.back_office)),
            checks: AtomicU64::new(0),
        }
    }

    /// Ok, or how long until this caller may call again.
    fn charge(&self, caller: &Caller) -> Result<(), std::time::Duration> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % FORGET_EVERY == FORGET_EVERY - 1 {
            for limiter in [&self.customer, &self.staff, &self.back_office] {
                limiter.retain_recent();
            }
        }
        let limiter = match caller.role {
            Role::Customer => &self.customer,
            Role::Staff { .. } => &self.staff,
            Role::Headquarters | Role::Operator => &self.back_office,
        };
        limiter
            .check_key(&caller.key())
            .map_err(|not_until| not_until.wait_time_from(limiter.clock().now()))
    }
}

/// The 429, with the whole seconds to wait (at least one) in `Retry-After`.
fn too_many(caller: &Caller, wait: std::time::Duration) -> Response {
    tracing::info!(caller = %caller.key(), wait_ms = wait.as_millis() as u64, "refused: over the rate limit");
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let seconds = seconds.max(1);
    let mut response = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("too many requests from this caller; retry in {seconds} s"),
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

/// Puts `router` behind `authenticate` and, with `limits`, a token bucket per caller.
/// Requests without credentials pass through uncharged: a public route answers them,
/// a protected one refuses them with 401.
pub fn protect<F>(router: Router, authenticate: F, limits: Option<Limits>) -> Router
where
    F: Fn(&Parts) -> Result<Caller, Unauthenticated> + Clone + Send + Sync + 'static,
{
    let buckets = limits.map(|l| Arc::new(Buckets::new(l)));
    router.layer(axum::middleware::from_fn(move |request: Request, next: Next| {
        let (authenticate, buckets) = (authenticate.clone(), buckets.clone());
        async move {
            let (mut parts, body) = request.into_parts();
            let found = authenticate(&parts);
            if let (Ok(caller), Some(buckets)) = (&found, &buckets)
                && let Err(wait) = buckets.charge(caller)
            {
                return too_many(caller, wait);
            }
            parts.extensions.insert(Identified(found));
            next.run(Request::from_parts(parts, body)).await
        }
    }))
}

/// The bearer token of a request, if it carries one (`Authorization: Bearer …`).
pub fn bearer_token(parts: &Parts) -> Result<Option<&str>, Unauthenticated> {
    let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| Unauthenticated::Invalid("the Authorization header is not ASCII".into()))?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => {
            Ok(Some(token.trim()))
        }
        _ => Err(Unauthenticated::Invalid(
            "the Authorization header is not `Bearer <token>`".into(),
        )),
    }
}

/// The authenticator of a server that verifies tokens itself (the local stack).
#[cfg(feature = "jwt")]
pub fn verify_bearer(
    verifier: Arc<crate::auth::token::Verifier>,
) -> impl Fn(&Parts) -> Result<Caller, Unauthenticated> + Clone + Send + Sync + 'static {
    move |parts: &Parts| match bearer_token(parts)? {
        Some(token) => verifier.verify(token),
        None => Err(Unauthenticated::Missing),
    }
}

/// Puts the observers' routes (metrics, dashboards) behind a rule of their own: a
/// request from this machine (the server's default bind) is let through, so a browser
/// on the dashboard needs no token; from elsewhere it needs an operator's token. Wrap
/// the observers' routes with this before the whole router goes behind [`protect`].
pub fn observers_only(router: Router) -> Router {
    router.layer(axum::middleware::from_fn(|request: Request, next: Next| async move {
        let local = request
            .extensions()
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .is_some_and(|peer| peer.0.ip().is_loopback());
        if !local {
            let (mut parts, body) = request.into_parts();
            let caller = match Authenticated::from_request_parts(&mut parts, &()).await {
                Ok(caller) => caller,
                Err(refused) => return refused,
            };
            if let Err(refused) = caller.may(&Action::Observe) {
                return refused.into_response();
            }
            return next.run(Request::from_parts(parts, body)).await;
        }
        next.run(request).await
    }))
}

/// The local stack's authentication: its identity provider and a verifier of that
/// provider's tokens. The server opens the one kept under the state dir; tests make a
/// throwaway one.
#[cfg(feature = "jwt")]
pub struct LocalAuth {
    /// Mints the tokens.
    pub issuer: crate::auth::token::LocalIssuer,
    verifier: Arc<crate::auth::token::Verifier>,
}

#[cfg(feature = "jwt")]
impl std::fmt::Debug for LocalAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalAuth").field("issuer", &self.issuer).finish()
    }
}

#[cfg(feature = "jwt")]
impl LocalAuth {
    /// The key kept in `dir` (made there on first use, its JWKS beside it), trusted
    /// through that JWKS as any verifier of it would.
    pub fn open(dir: &std::path::Path) -> Result<LocalAuth, crate::auth::token::KeyError> {
        use crate::auth::token::{LocalIssuer, Verifier};
        let issuer = LocalIssuer::open(dir)?;
        let verifier = Arc::new(Verifier::local(dir)?);
        Ok(LocalAuth { issuer, verifier })
    }

    /// A new key, kept nowhere.
    pub fn ephemeral() -> Result<LocalAuth, crate::auth::token::KeyError> {
        use crate::auth::token::{LOCAL_AUDIENCE, LOCAL_ISSUER, LocalIssuer, Verifier};
        let issuer = LocalIssuer::generate(LOCAL_ISSUER, LOCAL_AUDIENCE)?;
        let verifier = Arc::new(Verifier::new(issuer.jwks(), LOCAL_ISSUER, LOCAL_AUDIENCE)?);
        Ok(LocalAuth { issuer, verifier })
    }

    /// `router` behind these tokens ([`protect`] with [`verify_bearer`]).
    pub fn protect(&self, router: Router, limits: Option<Limits>) -> Router {
        protect(router, verify_bearer(self.verifier.clone()), limits)
    }

    /// An `Authorization` value for `caller`, valid for an hour.
    pub fn bearer(&self, caller: &Caller) -> Result<String, crate::auth::token::KeyError> {
        let token = self.issuer.mint(caller, std::time::Duration::from_secs(3600))?;
        Ok(format!("Bearer {token}"))
    }
}
