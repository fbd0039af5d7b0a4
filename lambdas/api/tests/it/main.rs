//! API Gateway HTTP API events (fixture JSON, as API Gateway sends them) through the
//! Lambda's router, against the local stack.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use cafe_lambda_api::{Config, router};
use cafe_localstack::{StackConfig, aws, provision};
use http_body_util::BodyExt;
use tower::ServiceExt;

async fn app() -> axum::Router {
    let cfg = StackConfig::load().unwrap();
    let sdk = aws::sdk_config(&cfg).await;
    let (dynamodb, kinesis) = (aws::dynamodb(&sdk, &cfg), aws::kinesis(&sdk, &cfg));
    // The provisioned tables and stream, named through the environment as on AWS.
    provision::provision(&cfg).await.unwrap();
    let env = |k: &str| {
        Some(match k {
            "CAFE_EVENTS_TABLE" => cfg.names.events_table.clone(),
            "CAFE_IDEMPOTENCY_TABLE" => cfg.names.idempotency_table.clone(),
            "CAFE_STREAM" => cfg.names.stream.clone(),
            _ => return None,
        })
    };
    router(&Config::from_env(env).unwrap(), dynamodb, kinesis)
}

async fn invoke(app: axum::Router, event: &str) -> (u16, serde_json::Value) {
    let request = lambda_http::request::from_str(event).unwrap();
    let response = app.oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap())
}

#[tokio::test]
async fn an_api_gateway_event_runs_the_command() {
    let unique = uuid::Uuid::now_v7().simple().to_string();
    let event = include_str!("../fixtures/apigw-http-place-menu-item.json")
        .replace("IDEMPOTENCY_KEY", &format!("lambda-{unique}"))
        .replace("ITEM_ID", &format!("flat-white-{}", &unique[unique.len() - 8..]));
    let (status, body) = invoke(app().await, &event).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["events"][0], "cloudcafe.menu.v1.MenuItemPublished");
    assert_eq!(body["version"], 1);
}

#[tokio::test]
async fn bad_input_from_api_gateway_gets_the_same_json_error() {
    let (status, body) = invoke(
        app().await,
        include_str!("../fixtures/apigw-http-wrong-content-type.json"),
    )
    .await;
    assert_eq!(status, 415, "{body}");
    assert_eq!(body["error"], "unsupported_media_type");
}
