//! The OpenAPI document, generated from the handlers' annotations and the request and
//! response types, so it cannot drift from what the router accepts (a test checks that
//! every routed command endpoint is documented). The query endpoints document
//! themselves in `cafe_projections::query::openapi`, with the same security scheme and
//! error responses from here; the server that serves both merges the two.

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::dto::*;
use super::error::{ApiError, FieldError};
use super::*;

/// The name of the bearer-token scheme in the document.
pub const BEARER: &str = "bearer";

/// Adds the bearer-token scheme (JWT) the protected operations name.
#[derive(Debug)]
pub struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.bearer_format = Some("JWT".to_owned());
        scheme.description = Some(
            "RS256 or ES256, verified against the JWKS; claims sub, role (customer, staff, hq, operator), \
             store for staff. Locally: `cafe token`."
                .to_owned(),
        );
        components.add_security_scheme(BEARER, SecurityScheme::Http(scheme));
    }
}

/// The error responses every command endpoint can give, documented once.
#[allow(dead_code)] // Only its derived documentation is used; it is never constructed.
#[derive(Debug, utoipa::IntoResponses)]
pub enum CommandErrors {
    /// Malformed JSON or invalid fields.
    #[response(status = 400)]
    BadRequest(ApiError),
    /// No bearer token, or one that does not verify.
    #[response(status = 401, headers(("WWW-Authenticate" = String, description = "Bearer realm=\"cloudcafe\"")))]
    Unauthenticated(ApiError),
    /// A valid token whose caller may not do this.
    #[response(status = 403)]
    Forbidden(ApiError),
    /// Unknown aggregate.
    #[response(status = 404)]
    NotFound(ApiError),
    /// The body did not arrive within 10 s.
    #[response(status = 408)]
    BodyTimeout(ApiError),
    /// Version conflict after retries.
    #[response(status = 409)]
    Conflict(ApiError),
    /// Body over 64 KiB.
    #[response(status = 413)]
    TooLarge(ApiError),
    /// Not application/json.
    #[response(status = 415)]
    UnsupportedMediaType(ApiError),
    /// Business rule violated, or idempotency key reused.
    #[response(status = 422)]
    Unprocessable(ApiError),
    /// Over the caller's rate limit.
    #[response(status = 429, headers(("Retry-After" = u64, description = "Seconds to wait")))]
    TooManyRequests(ApiError),
    /// Saturated or unavailable.
    #[response(status = 503, headers(("Retry-After" = u64, description = "Seconds to wait")))]
    Unavailable(ApiError),
}

/// The error responses every query endpoint can give.
#[allow(dead_code)] // Only its derived documentation is used; it is never constructed.
#[derive(Debug, utoipa::IntoResponses)]
pub enum QueryErrors {
    /// Invalid id or query parameter.
    #[response(status = 400)]
    BadRequest(ApiError),
    /// No bearer token, or one that does not verify.
    #[response(status = 401, headers(("WWW-Authenticate" = String, description = "Bearer realm=\"cloudcafe\"")))]
    Unauthenticated(ApiError),
    /// A valid token whose caller may not read this.
    #[response(status = 403)]
    Forbidden(ApiError),
    /// Nothing under that id.
    #[response(status = 404)]
    NotFound(ApiError),
    /// Over the caller's rate limit.
    #[response(status = 429, headers(("Retry-After" = u64, description = "Seconds to wait")))]
    TooManyRequests(ApiError),
    /// The read model is unavailable, or did not reach `min_version` in time.
    #[response(status = 503, headers(("Retry-After" = u64, description = "Seconds to wait")))]
    Unavailable(ApiError),
}

/// The error responses of the observers' routes (metrics, dashboards): answered from
/// this machine without a token, from elsewhere with an operator's.
#[allow(dead_code)] // Only its derived documentation is used; it is never constructed.
#[derive(Debug, utoipa::IntoResponses)]
pub enum ObserverErrors {
    /// From elsewhere, with no bearer token or one that does not verify.
    #[response(status = 401, headers(("WWW-Authenticate" = String, description = "Bearer realm=\"cloudcafe\"")))]
    Unauthenticated(ApiError),
    /// From elsewhere, with a token that is not an operator's.
    #[response(status = 403)]
    Forbidden(ApiError),
    /// Over the caller's rate limit.
    #[response(status = 429, headers(("Retry-After" = u64, description = "Seconds to wait")))]
    TooManyRequests(ApiError),
}

/// This document. Public. (The route serves it from a closure holding the document;
/// this is its entry in the document.)
#[utoipa::path(get, path = "/openapi.json", tag = "meta", security(()),
    responses((status = 200, description = "This OpenAPI document", content_type = "application/json", body = Object)))]
#[allow(dead_code)]
pub(super) async fn openapi_json() {}

/// `GET /healthz`'s body.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: String,
}

/// Whether the server answers. Public.
#[utoipa::path(get, path = "/healthz", tag = "meta", security(()), responses((status = 200, description = "Up", body = Health)))]
pub(super) async fn healthz() -> axum::Json<Health> {
    axum::Json(Health {
        status: "ok".to_owned(),
    })
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "CloudCafe command API",
        description = "Commands that become events. Errors are JSON: {error, message, fields}."
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    paths(
        healthz,
        openapi_json,
        place_order,
        advance_order,
        cancel_order,
        restock,
        adjust,
        earn,
        redeem,
        publish_menu_item
    ),
    components(schemas(
        PlaceOrderBody,
        LineBody,
        AdvanceBody,
        NextStatus,
        CancelBody,
        RestockBody,
        AdjustBody,
        EarnBody,
        RedeemBody,
        MenuItemBody,
        Tag,
        Accepted,
        ApiError,
        FieldError,
        Health
    ))
)]
struct Doc;

/// The document served at `GET /openapi.json`.
pub fn document() -> utoipa::openapi::OpenApi {
    Doc::openapi()
}
