//! The HTTP command API (axum). The same router serves locally and, through
//! `lambda_http`, behind API Gateway.
//!
//! Status codes: 201/200 done; 400 malformed JSON or invalid fields (with their paths);
//! 401 no or bad bearer token; 403 not this caller's to do; 404 unknown aggregate; 408
//! a body that did not arrive within 10 s; 409 version conflict after internal
//! retries; 413 body over 64 KiB; 415 not JSON; 429 over the caller's rate limit; 422 a business rule or a reused idempotency key; 503 with
//! `Retry-After` when saturated or the store is unavailable. No 4xx writes anything:
//! every check runs before the append, and the append is one transaction.

mod body;
mod dto;
pub mod error;
pub mod guard;
pub mod openapi;
mod path;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cafe_events::{AggregateId, Cents, DomainEvent, EventEnvelope, ItemId};
use md5::{Digest, Md5};

use crate::auth::Action;
use crate::domain::Aggregate;
use crate::domain::loyalty::LoyaltyAccount;
use crate::domain::menu::MenuItem;
use crate::domain::order::{MenuPrices, Order, OrderCommand};
use crate::domain::stock::StockItem;
use crate::publish::RecordSink;
use crate::service::{CommandMeta, CommandService};
use crate::store::{EventStore, StoredResponse};

pub use body::{BODY_TIMEOUT, JsonBody, MAX_BODY_BYTES};
use dto::*;
pub use dto::{MAX_CATEGORY, MAX_CHAR_BYTES, MAX_TEXT};
pub use error::{ApiError, FieldError};
pub use guard::{Authenticated, Limits, observers_only, protect};
pub use openapi::document as openapi_document;
pub use path::{PathIds, QueryParams};

/// Header carrying the client's idempotency key.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Set on a response answered from an earlier identical request.
pub const REPLAYED: &str = "idempotent-replayed";

/// How long a menu price is reused. Menu changes are rare and an order must not pay a
/// database read per line at the morning rush; the cost is that a price change or a
/// retirement takes effect for new orders up to this long after it was published.
pub const MENU_CACHE_TTL: Duration = Duration::from_secs(2);

/// What the handlers share: the command service and a short-lived menu price cache.
struct App<S, K> {
    service: Arc<CommandService<S, K>>,
    /// Published items only: an unknown item costs a read each time, so a newly
    /// published item is orderable at once.
    menu: Mutex<HashMap<ItemId, (Cents, Instant)>>,
}

impl<S, K> std::ops::Deref for App<S, K> {
    type Target = CommandService<S, K>;
    fn deref(&self) -> &Self::Target {
        &self.service
    }
}

impl<S: EventStore, K: RecordSink> App<S, K> {
    async fn prices(&self, items: impl Iterator<Item = ItemId>) -> Result<MenuPrices, ApiError> {
        let mut prices = MenuPrices::new();
        for item in items {
            let cached = self.menu.lock().unwrap_or_else(|p| p.into_inner()).get(&item).copied();
            match cached {
                Some((price, at)) if at.elapsed() < MENU_CACHE_TTL => {
                    prices.insert(item, price);
                }
                _ => {
                    let (state, _) = self
                        .service
                        .state::<MenuItem>(&AggregateId::MenuItem(item.clone()))
                        .await?;
                    let mut cache = self.menu.lock().unwrap_or_else(|p| p.into_inner());
                    match state.price {
                        Some(price) => {
                            cache.insert(item.clone(), (price, Instant::now()));
                            prices.insert(item, price);
                        }
                        None => {
                            cache.remove(&item);
                        }
                    }
                }
            }
        }
        Ok(prices)
    }
}

type Shared<S, K> = State<Arc<App<S, K>>>;

/// The router over a command service, serving the commands' OpenAPI document.
pub fn router<S: EventStore + 'static, K: RecordSink + 'static>(service: Arc<CommandService<S, K>>) -> Router {
    router_documented(service, openapi::document())
}

/// [`router`], serving `doc` at `/openapi.json` (a server that also serves the queries
/// serves the two documents merged).
pub fn router_documented<S: EventStore + 'static, K: RecordSink + 'static>(
    service: Arc<CommandService<S, K>>,
    doc: utoipa::openapi::OpenApi,
) -> Router {
    let app = Arc::new(App {
        service,
        menu: Mutex::new(HashMap::new()),
    });
    let doc = Arc::new(doc);
    Router::new()
        .route("/healthz", get(openapi::healthz))
        .route(
            "/openapi.json",
            get(move || async move { axum::Json(doc.as_ref().clone()) }),
        )
        .route("/v1/orders", post(place_order::<S, K>))
        .route("/v1/orders/{id}/status", post(advance_order::<S, K>))
        .route("/v1/orders/{id}/cancel", post(cancel_order::<S, K>))
        .route("/v1/stores/{store}/inventory/{sku}/restock", post(restock::<S, K>))
        .route("/v1/stores/{store}/inventory/{sku}/adjust", post(adjust::<S, K>))
        .route("/v1/loyalty/{customer}/earn", post(earn::<S, K>))
        .route("/v1/loyalty/{customer}/redeem", post(redeem::<S, K>))
        .route("/v1/menu/items", post(publish_menu_item::<S, K>))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no_route", "no such endpoint") })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(app)
        .method_not_allowed_fallback(method_not_allowed)
}

/// The 405 of every route, JSON like every other error; axum adds the `Allow` header
/// naming the methods the route has. A router merged with this one's routes gets it
/// for its own with `Router::method_not_allowed_fallback` once merged.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method; see the Allow header",
    )
}

/// What a client may use as an `Idempotency-Key` (the OpenAPI document's pattern):
/// 1 to 128 visible ASCII characters, no spaces, so a key reads the same in any log.
fn valid_key(key: &str) -> bool {
    (1..=128).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic())
}

/// An idempotency key as stored: the client's key within its caller's scope.
pub fn scoped_key(caller: &crate::auth::Caller, key: &str) -> String {
    format!("{} {key}", caller.key())
}

/// Idempotency and tracing metadata. Creating commands must carry a key. A key is the
/// caller's own: stored under the caller's identity, so one client can neither replay
/// nor probe (by a 422 for a different body) another's request.
fn meta(
    caller: &Authenticated,
    headers: &HeaderMap,
    path: &str,
    raw: &[u8],
    key_required: bool,
) -> Result<CommandMeta, ApiError> {
    let key = headers.get(IDEMPOTENCY_KEY).map(|v| v.to_str().map(str::to_owned));
    let key = match key {
        Some(Ok(k)) if valid_key(&k) => Some(scoped_key(&caller.0, &k)),
        Some(_) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_idempotency_key",
                "Idempotency-Key must be 1 to 128 visible ASCII characters, no spaces",
            ));
        }
        None if key_required => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "missing_idempotency_key",
                "this request needs an Idempotency-Key header",
            ));
        }
        None => None,
    };
    let mut hasher = Md5::new();
    hasher.update(b"POST ");
    hasher.update(path.as_bytes());
    hasher.update(b"\n");
    hasher.update(raw);
    let correlation_id = headers
        .get("x-correlation-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(|| cafe_events::EventId::new().to_string());
    Ok(CommandMeta {
        idempotency_key: key,
        request_hash: hex::encode(hasher.finalize()),
        correlation_id,
    })
}

/// The generic tail of every command endpoint.
async fn run<A: Aggregate, S: EventStore, K: RecordSink>(
    service: &CommandService<S, K>,
    id: AggregateId,
    command: A::Command,
    context: A::Context,
    meta: CommandMeta,
    created: bool,
) -> Result<Response, ApiError> {
    run_from::<A, S, K>(service, id, None, command, context, meta, created).await
}

/// [`run`] on a state the handler has already loaded.
async fn run_from<A: Aggregate, S: EventStore, K: RecordSink>(
    service: &CommandService<S, K>,
    id: AggregateId,
    known: Option<(A, u64)>,
    command: A::Command,
    context: A::Context,
    meta: CommandMeta,
    created: bool,
) -> Result<Response, ApiError> {
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    let respond = |events: &[EventEnvelope], version: u64| StoredResponse {
        status: status.as_u16(),
        body: response_body(&id, version, events),
    };
    let done = service
        .execute_from::<A>(&id, known, &command, &context, &meta, respond)
        .await?;
    let status = StatusCode::from_u16(done.response.status).unwrap_or(status);
    let mut response = (status, axum::Json(done.response.body)).into_response();
    if done.replayed {
        response
            .headers_mut()
            .insert(REPLAYED, HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// The body of every successful command.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Accepted {
    /// The aggregate the command changed.
    aggregate_id: String,
    /// Its version after the command (read models catch up to it).
    version: u64,
    /// Fully qualified types of the events the command produced.
    events: Vec<String>,
    /// For a placed order: its id.
    #[serde(skip_serializing_if = "Option::is_none")]
    order_id: Option<String>,
    /// For a placed order: the total priced from the menu, in cents.
    #[serde(skip_serializing_if = "Option::is_none")]
    total_cents: Option<i64>,
    /// For a placed order: `placed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<String>,
}

fn response_body(id: &AggregateId, version: u64, events: &[EventEnvelope]) -> serde_json::Value {
    let mut body = Accepted {
        aggregate_id: id.to_string(),
        version,
        events: events.iter().map(|e| e.event.event_type().to_owned()).collect(),
        order_id: None,
        total_cents: None,
        status: None,
    };
    for e in events {
        if let DomainEvent::OrderPlaced(p) = &e.event {
            body.order_id = Some(p.order_id.clone());
            body.total_cents = Some(p.total_cents);
            body.status = Some("placed".to_owned());
        }
    }
    serde_json::to_value(body).unwrap_or_default()
}

#[utoipa::path(
    post,
    path = "/v1/orders",
    tag = "orders",
    request_body(content = PlaceOrderBody, content_type = "application/json"),
    params( ("Idempotency-Key" = String, Header, min_length = 1, max_length = 128, pattern = r"^[!-~]+$", description = "Required: a retry with the same key and body gets the same answer")),
    responses(
        (status = 201, description = "Done", body = Accepted),
        openapi::CommandErrors,
    )
)]
async fn place_order<S: EventStore, K: RecordSink>(
    caller: Authenticated,
    State(svc): Shared<S, K>,
    headers: HeaderMap,
    body: JsonBody<PlaceOrderBody>,
) -> Result<Response, ApiError> {
    let meta = meta(&caller, &headers, "/v1/orders", &body.raw, true)?;
    let place = body.value.validate()?;
    caller.may(&Action::PlaceOrder {
        customer: place.customer_id.as_str(),
        store: place.store_id.as_str(),
    })?;
    // Prices come from the menu (the event store, briefly cached), never from the client.
    let items: std::collections::BTreeSet<ItemId> = place.lines.iter().map(|l| l.item_id.clone()).collect();
    let prices = svc.prices(items.into_iter()).await?;
    let id = AggregateId::Order(place.order_id.clone());
    let cmd = (place.order_id.clone(), OrderCommand::Place(place));
    run::<Order, _, _>(&svc, id, cmd, prices, meta, true).await
}

#[utoipa::path(
    post,
    path = "/v1/orders/{id}/status",
    tag = "orders",
    request_body(content = AdvanceBody, content_type = "application/json"),
    params(("id" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$", min_length = 1, max_length = 64, description = "Order id"), ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 128, pattern = r"^[!-~]+$", description = "Optional: makes a retry safe")),
    responses(
        (status = 200, description = "Done", body = Accepted),
        openapi::CommandErrors,
    )
)]
async fn advance_order<S: EventStore, K: RecordSink>(
    caller: Authenticated,
    State(svc): Shared<S, K>,
    PathIds(id): PathIds<String>,
    headers: HeaderMap,
    body: JsonBody<AdvanceBody>,
) -> Result<Response, ApiError> {
    let order_id = path_id(&id, "order_id", cafe_events::OrderId::parse_addressable)?;
    let meta = meta(&caller, &headers, &format!("/v1/orders/{id}/status"), &body.raw, false)?;
    let cmd = (
        order_id,
        OrderCommand::Advance {
            to: body.value.status.into(),
        },
    );
    change_order(&svc, &caller, cmd, meta).await
}

#[utoipa::path(
    post,
    path = "/v1/orders/{id}/cancel",
    tag = "orders",
    request_body(content = CancelBody, content_type = "application/json"),
    params(("id" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$", min_length = 1, max_length = 64, description = "Order id"), ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 128, pattern = r"^[!-~]+$", description = "Optional: makes a retry safe")),
    responses(
        (status = 200, description = "Done", body = Accepted),
        openapi::CommandErrors,
    )
)]
async fn cancel_order<S: EventStore, K: RecordSink>(
    caller: Authenticated,
    State(svc): Shared<S, K>,
    PathIds(id): PathIds<String>,
    headers: HeaderMap,
    body: JsonBody<CancelBody>,
) -> Result<Response, ApiError> {
    let order_id = path_id(&id, "order_id", cafe_events::OrderId::parse_addressable)?;
    let meta = meta(&caller, &headers, &format!("/v1/orders/{id}/cancel"), &body.raw, false)?;
    let reason = body.value.validate()?;
    let cmd = (order_id, OrderCommand::Cancel { reason });
    change_order(&svc, &caller, cmd, meta).await
}

/// A command on an existing order: the order is loaded first, since who may change it
/// depends on its customer and store; the command is then decided on that same state
/// (no second read). An order that does not exist is the domain's 404 for anyone.
async fn change_order<S: EventStore, K: RecordSink>(
    svc: &App<S, K>,
    caller: &Authenticated,
    cmd: (cafe_events::OrderId, OrderCommand),
    meta: CommandMeta,
) -> Result<Response, ApiError> {
    let id = AggregateId::Order(cmd.0.clone());
    let (order, version) = svc.state::<Order>(&id).await?;
    if version > 0 {
        caller.may(&Action::ChangeOrder {
            customer: &order.customer_id,
            store: &order.store_id,
            cancel: matches!(cmd.1, OrderCommand::Cancel { .. }),
        })?;
    }
    run_from::<Order, _, _>(svc, id, Some((order, version)), cmd, HashMap::new(), meta, false).await
}

#[utoipa::path(
    post,
    path = "/v1/stores/{store}/inventory/{sku}/restock",
    tag = "inventory",
    request_body(content = RestockBody, content_type = "application/json"),
    params(("store" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$", min_length = 1, max_length = 64), ("sku" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$", min_length = 1, max_length = 64), ("Idempotency-Key" = String, Header, min_length = 1, max_length = 128, pattern = r"^[!-~]+$", description = "Required: a retry with the same key and body gets the same answer")),
    responses(
        (status = 201, description = "Done", body = Accepted),
        openapi::CommandErrors,
    )
)]
async fn restock<S: EventStore, K: RecordSink>(
    caller: Authenticated,
    State(svc): Shared<S, K>,
    PathIds((store, sku)): PathIds<(String, String)>,
    headers: HeaderMap,
    body: JsonBody<RestockBody>,
) -> Result<Response, ApiError> {
    stock(&svc, &caller, &store, &sku, "restock", &headers, &body.raw, || {
        body.value.validate()
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/stores/{store}/inventory/{sku}/adjust",
    tag = "inventory",
    request_body(content = AdjustBody, content_type = "application/json"),
    params(("store" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$", min_length = 1, max_length = 64), ("sku" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$", min_length = 1, max_length = 64), ("Idempotency-Key" = String, Header, min_length = 1, max_length = 128, pattern = r"^[!-~]+$", description = "Required: a retry with the same key and body gets the same answer")),
    responses(
        (status = 201, description = "Done", body = Accepted),
        openapi::CommandErrors,
    )
)]
async fn adjust<S: EventStore, K: RecordSink>(
    caller: Authenticated,
    State(svc): Shared<S, K>,
    PathIds((store, sku)): PathIds<(String, String)>,
    headers: HeaderMap,
    body: JsonBody<AdjustBody>,
) -> Result<Response, ApiError> {
    stock(&svc, &caller, &store, &sku, "adjust", &headers, &body.raw, || {
        body.value.validate()
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/loyalty/{customer}/earn",
    tag = "loyalty",
    request_body(content = EarnBody, content_type = "application/json"),
    params(("customer" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$", min_length = 1, max_length = 64), ("Idempotency-Key" = String, Header, min_length = 1, max_length = 128, pattern = r"^[!-~]+$", description = "Required: a retry with the same key and body gets the same answer")),
    responses(
        (status = 201, description = "Done", body = Accepted),
        openapi::CommandErrors,
    )
)]
async fn earn<S: EventStore, K: RecordSink>(
    caller: Authenticated,
    State(svc): Shared<S, K>,
    PathIds(customer): PathIds<String>,
    headers: HeaderMap,
    body: JsonBody<EarnBody>,
) -> Result<Response, ApiError> {
    loyalty(&svc, &caller, &customer, "earn", &headers, &body.raw, || {
        body.value.validate()
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/loyalty/{customer}/redeem",
    tag = "loyalty",
    request_body(content = RedeemBody, content_type = "application/json"),
    params(("customer" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$", min_length = 1, max_length = 64), ("Idempotency-Key" = String, Header, min_length = 1, max_length = 128, pattern = r"^[!-~]+$", description = "Required: a retry with the same key and body gets the same answer")),
    responses(
        (status = 201, description = "Done", body = Accepted),
        openapi::CommandErrors,
    )
)]
async fn redeem<S: EventStore, K: RecordSink>(
    caller: Authenticated,
    State(svc): Shared<S, K>,
    PathIds(customer): PathIds<String>,
    headers: HeaderMap,
    body: JsonBody<RedeemBody>,
) -> Result<Response, ApiError> {
    loyalty(&svc, &caller, &customer, "redeem", &headers, &body.raw, || {
        body.value.validate()
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/menu/items",
    tag = "menu",
    request_body(content = MenuItemBody, content_type = "application/json"),
    params( ("Idempotency-Key" = String, Header, min_length = 1, max_length = 128, pattern = r"^[!-~]+$", description = "Required: a retry with the same key and body gets the same answer")),
    responses(
        (status = 201, description = "Done", body = Accepted),
        openapi::CommandErrors,
    )
)]
async fn publish_menu_item<S: EventStore, K: RecordSink>(
    caller: Authenticated,
    State(svc): Shared<S, K>,
    headers: HeaderMap,
    body: JsonBody<MenuItemBody>,
) -> Result<Response, ApiError> {
    caller.may(&Action::ChangeMenu)?;
    let meta = meta(&caller, &headers, "/v1/menu/items", &body.raw, true)?;
    let (item_id, cmd) = body.value.validate()?;
    run::<MenuItem, _, _>(
        &svc,
        AggregateId::MenuItem(item_id.clone()),
        (item_id, cmd),
        (),
        meta,
        true,
    )
    .await
}

/// The shared tail of the two stock endpoints: ids from the path, metadata, command.
#[allow(clippy::too_many_arguments)]
async fn stock<S: EventStore, K: RecordSink>(
    svc: &App<S, K>,
    caller: &Authenticated,
    store: &str,
    sku: &str,
    action: &str,
    headers: &HeaderMap,
    raw: &[u8],
    command: impl FnOnce() -> Result<crate::domain::stock::StockCommand, ApiError>,
) -> Result<Response, ApiError> {
    let (store_id, sku_id) = stock_ids(store, sku)?;
    caller.may(&Action::ChangeInventory {
        store: store_id.as_str(),
    })?;
    let meta = meta(
        caller,
        headers,
        &format!("/v1/stores/{store}/inventory/{sku}/{action}"),
        raw,
        true,
    )?;
    let cmd = command()?;
    let id = AggregateId::StockItem(store_id.clone(), sku_id.clone());
    run::<StockItem, _, _>(svc, id, (store_id, sku_id, cmd), (), meta, true).await
}

/// The shared tail of the two loyalty endpoints.
async fn loyalty<S: EventStore, K: RecordSink>(
    svc: &App<S, K>,
    caller: &Authenticated,
    customer: &str,
    action: &str,
    headers: &HeaderMap,
    raw: &[u8],
    command: impl FnOnce() -> Result<crate::domain::loyalty::LoyaltyCommand, ApiError>,
) -> Result<Response, ApiError> {
    let customer_id = path_id(customer, "customer_id", cafe_events::CustomerId::parse_addressable)?;
    let customer = customer_id.as_str();
    caller.may(&if action == "redeem" {
        Action::Redeem { customer }
    } else {
        Action::Earn { customer }
    })?;
    let meta = meta(caller, headers, &format!("/v1/loyalty/{customer}/{action}"), raw, true)?;
    let cmd = command()?;
    let id = AggregateId::LoyaltyAccount(customer_id.clone());
    run::<LoyaltyAccount, _, _>(svc, id, (customer_id, cmd), (), meta, true).await
}

fn path_id<T>(raw: &str, name: &str, parse: impl Fn(String) -> Result<T, cafe_events::IdError>) -> Result<T, ApiError> {
    parse(raw.to_owned()).map_err(|e| {
        ApiError::fields(vec![FieldError {
            path: name.to_owned(),
            message: e.to_string(),
        }])
    })
}

fn stock_ids(store: &str, sku: &str) -> Result<(cafe_events::StoreId, cafe_events::Sku), ApiError> {
    let mut fields = Vec::new();
    let store = cafe_events::StoreId::parse_addressable(store).map_err(|e| {
        fields.push(FieldError {
            path: "store_id".into(),
            message: e.to_string(),
        })
    });
    let sku = cafe_events::Sku::parse_addressable(sku).map_err(|e| {
        fields.push(FieldError {
            path: "sku".into(),
            message: e.to_string(),
        })
    });
    match (store, sku) {
        (Ok(store), Ok(sku)) => Ok((store, sku)),
        _ => Err(ApiError::fields(fields)),
    }
}
