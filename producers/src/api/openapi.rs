//! The OpenAPI document, generated from the handlers' annotations and the request and
//! response types, so it cannot drift from what the router accepts (a test checks that
//! every routed command endpoint is documented).

use utoipa::OpenApi;

use super::dto::*;
use super::error::{ApiError, FieldError};
use super::*;

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
