//! The read side of the HTTP API: one GET per read model, each answering with the
//! version of what it shows.
//!
//! Read-your-writes: a command's response carries the aggregate's new version; a client
//! that must see its own write passes it as `?min_version=N` and the endpoint waits
//! (bounded, [`ReadModels::wait`]) until the read model has caught up, answering 503
//! with `Retry-After` when it has not. List endpoints span many aggregates, so there
//! `min_version` names the aggregate it is about with `wait_for` (an order id, an item
//! id, a SKU).
//!
//! Errors use the command API's JSON shape (`{"error", "message", "fields"}`).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use cafe_producers::api::openapi::{BearerAuth, QueryErrors};
use cafe_producers::api::{ApiError, Authenticated, FieldError, PathIds, QueryParams};
use cafe_producers::auth::Action;
use serde::Serialize;
use serde_json::json;

use crate::active_orders::{ActiveOrderView, DynamoActiveOrders};
use crate::cache::{Cached, CachedReads};
use crate::catalog::{CatalogError, Endpoints, Namespace, ReadModel};
use crate::documents::{MenuItemView, MongoDocuments};
use crate::error::ProjectionError;
use crate::inventory::{RedisInventory, StockView};
use crate::postgres::orders::{LoyaltyView, OrderLineView, OrderView, PgOrdersView};
use crate::serving::ServingReads;

/// Longest `?limit=` a list accepts.
pub const MAX_LIMIT: i32 = 100;
/// How often a `min_version` wait looks again.
const POLL: Duration = Duration::from_millis(50);

/// The read models the query endpoints serve from.
#[derive(Debug, Clone)]
pub struct ReadModels {
    /// Aurora: orders by id.
    pub orders: PgOrdersView,
    /// DynamoDB: active orders by customer.
    pub active: DynamoActiveOrders,
    /// ElastiCache in front of DocumentDB: the menu.
    pub menu: CachedReads<MongoDocuments>,
    /// ElastiCache in front of Aurora: loyalty accounts.
    pub loyalty: CachedReads<PgOrdersView>,
    /// MemoryDB: on-hand stock per store.
    pub inventory: RedisInventory,
    /// Longest a `min_version` request waits for its read model.
    pub wait: Duration,
}

impl ReadModels {
    /// Connects each queried model's copy in `namespaces` (the base names for a model
    /// not in it).
    pub async fn connect(
        at: &Endpoints,
        namespaces: &BTreeMap<ReadModel, Namespace>,
        wait: Duration,
    ) -> Result<ReadModels, CatalogError> {
        let ns = |m: ReadModel| namespaces.get(&m).cloned().unwrap_or(Namespace::Live);
        let orders = at.orders(&ns(ReadModel::Orders)).await?;
        let documents = at.documents(&ns(ReadModel::Documents)).await?;
        let cache = at.cache(&ns(ReadModel::Cache)).await?;
        Ok(ReadModels {
            menu: CachedReads::new(cache.clone(), documents),
            loyalty: CachedReads::new(cache, orders.clone()),
            orders,
            active: at.active_orders(&ns(ReadModel::ActiveOrders)).await?,
            inventory: at.inventory(&ns(ReadModel::Inventory)).await?,
            wait,
        })
    }
}

/// Where the endpoints take their read models from.
#[derive(Debug, Clone)]
pub enum Reads {
    /// Always these.
    Fixed(Arc<ReadModels>),
    /// The serving copies, followed across swaps without a restart.
    Serving(Arc<ServingReads>),
}

impl Reads {
    async fn current(&self) -> Result<Arc<ReadModels>, ApiError> {
        match self {
            Reads::Fixed(m) => Ok(m.clone()),
            Reads::Serving(s) => s.current().await.map_err(unavailable),
        }
    }
}

/// The query endpoints' OpenAPI document (the bearer scheme and error responses are
/// the command API's), to merge with the command API's.
pub fn openapi() -> utoipa::openapi::OpenApi {
    <QueryDoc as utoipa::OpenApi>::openapi()
}

#[derive(utoipa::OpenApi)]
#[openapi(
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    paths(order, customer_orders, menu_items, loyalty, inventory),
    components(schemas(OrderView, OrderLineView, ActiveOrderView, MenuItemView, LoyaltyView, StockView))
)]
struct QueryDoc;

/// The GET routes, to merge with the command router.
pub fn router(models: Reads) -> Router {
    Router::new()
        .route("/v1/orders/{id}", get(order))
        .route("/v1/customers/{id}/orders", get(customer_orders))
        .route("/v1/menu/items", get(menu_items))
        .route("/v1/loyalty/{customer}", get(loyalty))
        .route("/v1/stores/{store}/inventory", get(inventory))
        .with_state(models)
}

type Shared = State<Reads>;
type Params = QueryParams<HashMap<String, String>>;

fn field(path: &str, message: impl Into<String>) -> ApiError {
    ApiError::fields(vec![FieldError {
        path: path.to_owned(),
        message: message.into(),
    }])
}

fn unavailable(e: ProjectionError) -> ApiError {
    tracing::warn!(error = %e, "read model query failed");
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "read_model_unavailable", e.to_string())
}

/// `?min_version=` as a positive integer, if given.
pub fn min_version(params: &HashMap<String, String>) -> Result<Option<u64>, ApiError> {
    match params.get("min_version") {
        None => Ok(None),
        Some(raw) => match raw.parse::<u64>() {
            Ok(v) if v >= 1 => Ok(Some(v)),
            _ => Err(field("min_version", "must be a positive integer")),
        },
    }
}

/// `?limit=` within 1..=[`MAX_LIMIT`] (default 20).
pub fn limit(params: &HashMap<String, String>) -> Result<i32, ApiError> {
    match params.get("limit") {
        None => Ok(20),
        Some(raw) => match raw.parse::<i32>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            _ => Err(field("limit", format!("must be an integer from 1 to {MAX_LIMIT}"))),
        },
    }
}

/// Fetches until `version_of` the answer reaches `min` or the wait runs out. Without a
/// minimum, one fetch.
pub async fn at_least<T, F, Fut>(
    min: Option<u64>,
    wait: Duration,
    mut fetch: F,
    version_of: impl Fn(&T) -> Option<u64>,
) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ProjectionError>>,
{
    let deadline = Instant::now() + wait;
    loop {
        let answer = fetch().await.map_err(unavailable)?;
        let seen = version_of(&answer);
        match min {
            None => return Ok(answer),
            Some(min) if seen.is_some_and(|v| v >= min) => return Ok(answer),
            Some(min) if Instant::now() >= deadline => {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "read_model_behind",
                    format!(
                        "the read model is at version {} and did not reach {min} within {} ms; retry",
                        seen.map_or("none".to_owned(), |v| v.to_string()),
                        wait.as_millis()
                    ),
                ));
            }
            Some(_) => tokio::time::sleep(POLL).await,
        }
    }
}

fn not_found(what: &str, id: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no {what} {id}"))
}

fn parsed<T>(raw: &str, name: &str, parse: impl Fn(String) -> Result<T, cafe_events::IdError>) -> Result<T, ApiError> {
    parse(raw.to_owned()).map_err(|e| field(name, e.to_string()))
}

#[utoipa::path(get, path = "/v1/orders/{id}", tag = "queries",
    params(("id" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$", min_length = 1, max_length = 64, description = "Order id"), ("min_version" = Option<u64>, Query, minimum = 1, description = "Wait (bounded) until the read model reached this version; 503 if it does not")),
    responses((status = 200, description = "The order (Aurora)", body = OrderView), QueryErrors))]
async fn order(
    caller: Authenticated,
    State(reads): Shared,
    PathIds(id): PathIds<String>,
    QueryParams(params): Params,
) -> Result<Response, ApiError> {
    let m = reads.current().await?;
    let id = parsed(&id, "order_id", cafe_events::OrderId::parse_addressable)?;
    let min = min_version(&params)?;
    let found = at_least(
        min,
        m.wait,
        || m.orders.order(id.as_str()),
        |o| o.as_ref().map(|o| o.version),
    )
    .await?;
    let order = found.ok_or_else(|| not_found("order", id.as_str()))?;
    caller.may(&Action::ReadOrder {
        customer: &order.customer_id,
        store: &order.store_id,
    })?;
    Ok(axum::Json(order).into_response())
}

/// A list answer: the version it stands for and its items.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Listing<T> {
    /// The `wait_for` aggregate's version when one was named, else the highest listed.
    pub version: u64,
    /// The items.
    pub items: Vec<T>,
}

/// For lists: `min_version` needs `wait_for` to say which aggregate it is about.
fn wait_target(params: &HashMap<String, String>) -> Result<(Option<u64>, Option<String>), ApiError> {
    let min = min_version(params)?;
    let target = params.get("wait_for").cloned();
    if min.is_some() && target.is_none() {
        return Err(field(
            "wait_for",
            "required with min_version on a list: the id of the aggregate the version is about",
        ));
    }
    Ok((min, target))
}

#[utoipa::path(get, path = "/v1/customers/{id}/orders", tag = "queries",
    params(("id" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$", min_length = 1, max_length = 64, description = "Customer id"), ("limit" = Option<i32>, Query, minimum = 1, maximum = 100, description = "At most this many items (default 20)"), ("min_version" = Option<u64>, Query, minimum = 1, description = "Wait (bounded) until the read model reached this version; 503 if it does not"), ("wait_for" = Option<String>, Query, description = "With min_version on a list: the id of the aggregate the version is about")),
    responses((status = 200, description = "The customer's orders in flight (DynamoDB)", body = Listing<ActiveOrderView>), QueryErrors))]
async fn customer_orders(
    caller: Authenticated,
    State(reads): Shared,
    PathIds(id): PathIds<String>,
    QueryParams(params): Params,
) -> Result<Response, ApiError> {
    let customer = parsed(&id, "customer_id", cafe_events::CustomerId::parse_addressable)?;
    caller.may(&Action::ReadCustomer {
        customer: customer.as_str(),
    })?;
    let m = reads.current().await?;
    let limit = limit(&params)?;
    let (min, target) = wait_target(&params)?;
    let items = at_least(
        min,
        m.wait,
        || m.active.customer_orders(customer.as_str(), limit),
        |items: &Vec<ActiveOrderView>| version_in(items, target.as_deref(), |o| (&o.order_id, o.version)),
    )
    .await?;
    let version = version_in(&items, target.as_deref(), |o| (&o.order_id, o.version)).unwrap_or(0);
    Ok(axum::Json(json!(Listing { version, items })).into_response())
}

/// The version of `target` among `items`, or the highest version when no target.
pub fn version_in<T>(items: &[T], target: Option<&str>, key: impl Fn(&T) -> (&String, u64)) -> Option<u64> {
    match target {
        Some(t) => items.iter().map(&key).find(|(id, _)| id.as_str() == t).map(|(_, v)| v),
        None => items.iter().map(key).map(|(_, v)| v).max(),
    }
}

/// Whether the cache answered (`X-Cache: hit|miss`), for operators and tests.
const X_CACHE: &str = "x-cache";

fn with_cache_header(mut response: Response, hit: bool) -> Response {
    response.headers_mut().insert(
        X_CACHE,
        axum::http::HeaderValue::from_static(if hit { "hit" } else { "miss" }),
    );
    response
}

#[utoipa::path(get, path = "/v1/menu/items", tag = "queries",
    params(("category" = Option<String>, Query, description = "Only this category"), ("min_version" = Option<u64>, Query, minimum = 1, description = "Wait (bounded) until the read model reached this version; 503 if it does not"), ("wait_for" = Option<String>, Query, description = "With min_version on a list: the id of the aggregate the version is about")),
    responses((status = 200, description = "The menu (ElastiCache in front of DocumentDB)", body = Listing<MenuItemView>), QueryErrors))]
async fn menu_items(
    caller: Authenticated,
    State(reads): Shared,
    QueryParams(params): Params,
) -> Result<Response, ApiError> {
    caller.may(&Action::ReadMenu)?;
    let m = reads.current().await?;
    let category = params.get("category").map(String::as_str);
    let (min, target) = wait_target(&params)?;
    let answer = at_least(
        min,
        m.wait,
        || m.menu.menu_items(category),
        |c: &Cached<Vec<MenuItemView>>| version_in(&c.value, target.as_deref(), |i| (&i.item_id, i.version)),
    )
    .await?;
    let (items, hit) = (answer.value, answer.hit);
    let version = version_in(&items, target.as_deref(), |i| (&i.item_id, i.version)).unwrap_or(0);
    Ok(with_cache_header(
        axum::Json(json!(Listing { version, items })).into_response(),
        hit,
    ))
}

#[utoipa::path(get, path = "/v1/loyalty/{customer}", tag = "queries",
    params(("customer" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$", min_length = 1, max_length = 64, description = "Customer id"), ("min_version" = Option<u64>, Query, minimum = 1, description = "Wait (bounded) until the read model reached this version; 503 if it does not")),
    responses((status = 200, description = "The loyalty account (ElastiCache in front of Aurora)", body = LoyaltyView), QueryErrors))]
async fn loyalty(
    caller: Authenticated,
    State(reads): Shared,
    PathIds(customer): PathIds<String>,
    QueryParams(params): Params,
) -> Result<Response, ApiError> {
    let customer = parsed(&customer, "customer_id", cafe_events::CustomerId::parse_addressable)?;
    caller.may(&Action::ReadCustomer {
        customer: customer.as_str(),
    })?;
    let m = reads.current().await?;
    let min = min_version(&params)?;
    let answer = at_least(
        min,
        m.wait,
        || m.loyalty.loyalty(customer.as_str()),
        |c| c.value.as_ref().map(|a| a.version),
    )
    .await?;
    let hit = answer.hit;
    let account = answer
        .value
        .ok_or_else(|| not_found("loyalty account", customer.as_str()))?;
    Ok(with_cache_header(axum::Json(account).into_response(), hit))
}

#[utoipa::path(get, path = "/v1/stores/{store}/inventory", tag = "queries",
    params(("store" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$", min_length = 1, max_length = 64, description = "Store id"), ("min_version" = Option<u64>, Query, minimum = 1, description = "Wait (bounded) until the read model reached this version; 503 if it does not"), ("wait_for" = Option<String>, Query, description = "With min_version on a list: the id of the aggregate the version is about")),
    responses((status = 200, description = "The store's stock (MemoryDB)", body = Listing<StockView>), QueryErrors))]
async fn inventory(
    caller: Authenticated,
    State(reads): Shared,
    PathIds(store): PathIds<String>,
    QueryParams(params): Params,
) -> Result<Response, ApiError> {
    let store = parsed(&store, "store_id", cafe_events::StoreId::parse_addressable)?;
    caller.may(&Action::ReadInventory { store: store.as_str() })?;
    let m = reads.current().await?;
    let (min, target) = wait_target(&params)?;
    let items = at_least(
        min,
        m.wait,
        || m.inventory.store(store.as_str()),
        |items: &Vec<StockView>| version_in(items, target.as_deref(), |s| (&s.sku, s.version)),
    )
    .await?;
    let version = version_in(&items, target.as_deref(), |s| (&s.sku, s.version)).unwrap_or(0);
    Ok(axum::Json(json!(Listing { version, items })).into_response())
}
