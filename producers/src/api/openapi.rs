//! The OpenAPI document, generated from the handlers' annotations and the request and
//! response types, so it cannot drift from what the router accepts (a test checks that
//! every routed command endpoint is documented).

use utoipa::OpenApi;

use super::dto::*;
use super::error::{ApiError, FieldError};
use super::*;

/// The error responses every command endpoint can give, documented once.
#[allow(dead_code)] // Only its derived documentation is used; it is never constructed.
#[derive(utoipa::IntoResponses)]
pub(super) enum CommandErrors {
    /// Malformed JSON or invalid fields.
    #[response(status = 400)]
    BadRequest(ApiError),
    /// Unknown aggregate.
    #[response(status = 404)]
    NotFound(ApiError),
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
    /// Saturated or unavailable; see Retry-After.
    #[response(status = 503)]
    Unavailable(ApiError),
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "CloudCafe command API",
        description = "Commands that become events. Errors are JSON: {error, message, fields}."
    ),
    paths(
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
        Accepted,
        ApiError,
        FieldError
    ))
)]
struct Doc;

/// The document served at `GET /openapi.json`.
pub fn document() -> utoipa::openapi::OpenApi {
    Doc::openapi()
}
