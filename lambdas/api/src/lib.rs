//! The command API on AWS Lambda, behind an API Gateway HTTP API.
//!
//! Not a second implementation: [`router`] is `cafe_producers::api::router` over the
//! same command service the local server runs; `lambda_http` turns API Gateway events
//! into HTTP requests for it and its responses back into API Gateway responses.
//!
//! Who calls: API Gateway's JWT authorizer has verified the bearer token before the
//! function is invoked and hands over its claims in the request context; [`caller`]
//! maps them with the same `caller_from_claims` the local server applies to a token it
//! verified itself, so both answer every request alike.
//!
//! # Layout
//! - [`Config`]: table and stream names, read once from the environment at cold start.
//! - [`router`]: the shared router over clients built once.
//! - [`caller`]: who a request comes from, from the authorizer's claims.

use std::sync::Arc;

use axum::http::request::Parts;
use cafe_producers::api::{Limits, protect};
use cafe_producers::auth::{Caller, Unauthenticated, caller_from_claims};
use cafe_producers::publish::{KinesisSink, Publisher, PublisherConfig};
use cafe_producers::service::{CommandService, ServiceConfig};
use cafe_producers::store::DynamoEventStore;
use lambda_http::RequestExt;
use lambda_http::request::RequestContext;

/// Why the function cannot start: a variable of its unit
/// ([`cafe_settings::units::API_FUNCTION`]) is missing.
pub use cafe_settings::SettingsError as ConfigError;

/// What the function needs to know, from its environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `CAFE_EVENTS_TABLE`.
    pub events_table: String,
    /// `CAFE_IDEMPOTENCY_TABLE`.
    pub idempotency_table: String,
    /// `CAFE_STREAM`.
    pub stream: String,
}

impl Config {
    /// Reads the environment through `get` (so tests need not touch the process env):
    /// every name the unit lists must be set, Terraform hands them from what it created.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let names = cafe_settings::units::API_FUNCTION.names_from(get)?;
        Ok(Config {
            events_table: names.events_table,
            idempotency_table: names.idempotency_table,
            stream: names.stream,
        })
    }
}

/// The command router over the given clients, built once per cold start.
pub fn router(config: &Config, dynamodb: aws_sdk_dynamodb::Client, kinesis: aws_sdk_kinesis::Client) -> axum::Router {
    let store = DynamoEventStore::new(dynamodb, &config.events_table, &config.idempotency_table);
    let publisher = Publisher::new(KinesisSink::new(kinesis, &config.stream), PublisherConfig::default());
    let service = Arc::new(CommandService::new(store, publisher, ServiceConfig::default()));
    let settled = service.clone();
    // Lambda freezes the process once a response is returned, so here (unlike the
    // local server) a response waits until the markers of its events are cleared;
    // otherwise the relay would find them pending and publish them again.
    let routes = protect(cafe_producers::api::router(service), caller, Some(Limits::default()));
    routes.layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            let service = settled.clone();
            async move {
                let response = next.run(request).await;
                service.settled().await;
                response
            }
        },
    ))
}

/// The caller named by the claims API Gateway's JWT authorizer verified. A request
/// without them came by a route without the authorizer (the public ones), and is
/// treated as carrying no token.
pub fn caller(parts: &Parts) -> Result<Caller, Unauthenticated> {
    let claims = match parts.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(context)) => context
            .authorizer
            .as_ref()
            .and_then(|a| a.jwt.as_ref())
            .map(|jwt| &jwt.claims),
        _ => None,
    };
    match claims {
        Some(claims) if !claims.is_empty() => caller_from_claims(|name| claims.get(name).map(String::as_str)),
        _ => Err(Unauthenticated::Missing),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_required() {
        let unit = cafe_settings::units::API_FUNCTION.must_have();
        let all = |k: &str| unit.iter().any(|v| v == k).then(|| format!("{k}-value"));
        assert_eq!(Config::from_env(all).unwrap().stream, "CAFE_STREAM-value");
        let without_stream = |k: &str| (k != "CAFE_STREAM").then(|| "x".to_owned());
        assert!(matches!(
            Config::from_env(without_stream),
            Err(ConfigError::Missing(ref v)) if v == "CAFE_STREAM"
        ));
    }
}
