//! API Gateway HTTP API events (fixture JSON, as API Gateway sends them) through the
//! Lambda's router, against the local stack.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use cafe_lambda_api::{Config, router};
use cafe_localstack::aws::CallCounter;
use cafe_localstack::{StackConfig, aws, provision};
use cafe_producers::api::guard::LocalAuth;
use cafe_producers::auth::{Caller, Role};
use cafe_producers::publish::{KinesisSink, Publisher, PublisherConfig};
use cafe_producers::service::{CommandService, ServiceConfig};
use cafe_producers::store::DynamoEventStore;
use http_body_util::BodyExt;
use serde_json::json;
use tower::ServiceExt;

async fn app() -> axum::Router {
    app_recorded(&CallCounter::default()).await
}

/// The function's router over clients whose every call `calls` records.
async fn app_recorded(calls: &CallCounter) -> axum::Router {
    let cfg = StackConfig::load().unwrap();
    let sdk = aws::sdk_config(&cfg).await;
    let (dynamodb, kinesis) = (aws::dynamodb(&sdk, &cfg), aws::kinesis(&sdk, &cfg));
    let dynamodb =
        aws_sdk_dynamodb::Client::from_conf(dynamodb.config().to_builder().interceptor(calls.clone()).build());
    let kinesis = aws_sdk_kinesis::Client::from_conf(kinesis.config().to_builder().interceptor(calls.clone()).build());
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

/// An API Gateway event for `method path` with `body`, carrying the claims of `caller`
/// as API Gateway's JWT authorizer hands them over (every value a string); None: a
/// route without the authorizer.
fn event(method: &str, path: &str, key: &str, body: &serde_json::Value, caller: Option<&Caller>) -> String {
    let mut event: serde_json::Value =
        serde_json::from_str(include_str!("../fixtures/apigw-http-place-menu-item.json")).unwrap();
    event["rawPath"] = path.into();
    event["requestContext"]["http"]["path"] = path.into();
    event["requestContext"]["http"]["method"] = method.into();
    event["headers"]["idempotency-key"] = key.into();
    event["body"] = body.to_string().into();
    let claims = &mut event["requestContext"]["authorizer"]["jwt"]["claims"];
    match caller {
        Some(caller) => {
            claims["sub"] = caller.subject.clone().into();
            claims["role"] = caller.role.name().into();
            if let Role::Staff { store } = &caller.role {
                claims["store"] = store.clone().into();
            }
        }
        None => event["requestContext"]
            .as_object_mut()
            .unwrap()
            .remove("authorizer")
            .map(drop)
            .unwrap_or_default(),
    }
    event.to_string()
}

/// The local server's router over the same tables and stream, behind tokens it
/// verifies itself.
async fn local(auth: &LocalAuth) -> axum::Router {
    let cfg = StackConfig::load().unwrap();
    let sdk = aws::sdk_config(&cfg).await;
    let store = DynamoEventStore::new(
        aws::dynamodb(&sdk, &cfg),
        &cfg.names.events_table,
        &cfg.names.idempotency_table,
    );
    let sink = KinesisSink::new(aws::kinesis(&sdk, &cfg), &cfg.names.stream);
    let service = Arc::new(CommandService::new(
        store,
        Publisher::new(sink, PublisherConfig::default()),
        ServiceConfig::default(),
    ));
    auth.protect(cafe_producers::api::router(service), None)
}

#[tokio::test]
async fn authorizer_claims_get_the_same_decisions_as_the_local_servers_tokens() {
    let (lambda, auth) = (app().await, LocalAuth::ephemeral().unwrap());
    let local = local(&auth).await;
    let unique = uuid::Uuid::now_v7().simple().to_string();
    let tail = &unique[unique.len() - 10..];
    // Each side on ids of its own (customer, menu item, order, SKU), so neither sees
    // the other's writes.
    let (gateway, server) = (cases(&format!("{tail}g")), cases(&format!("{tail}l")));
    for (n, (gw, local_case)) in gateway.into_iter().zip(server).enumerate() {
        let (who, path, body, expected) = gw;
        let key = format!("gw-{n}-{tail}");
        let (status, answer) = invoke(lambda.clone(), &event("POST", &path, &key, &body, who.as_ref())).await;
        assert_eq!(
            status, expected,
            "through API Gateway, case {n}: {who:?} {path}: {answer}"
        );
        let (who, path, body, expected) = local_case;
        let mut request = axum::http::Request::post(&path)
            .header("content-type", "application/json")
            .header("idempotency-key", format!("local-{n}-{tail}"));
        if let Some(who) = &who {
            request = request.header("authorization", auth.bearer(who).unwrap());
        }
        let response = local
            .clone()
            .oneshot(request.body(axum::body::Body::from(body.to_string())).unwrap())
            .await
            .unwrap();
        assert_eq!(
            response.status().as_u16(),
            expected,
            "to the local server, case {n}: {who:?} {path}"
        );
    }
}

/// The function's AWS calls, recorded while it answers every case (accepted, refused,
/// a replayed idempotency key), are all on its unit's list: what its IAM role grants.
#[tokio::test]
async fn every_aws_call_the_function_makes_is_on_its_units_list() {
    let calls = CallCounter::default();
    let lambda = app_recorded(&calls).await;
    calls.take(); // provisioning's own calls
    let unique = uuid::Uuid::now_v7().simple().to_string();
    let tail = &unique[unique.len() - 10..];
    for (n, (who, path, body, expected)) in cases(&format!("{tail}r")).into_iter().enumerate() {
        let key = format!("rec-{n}-{tail}");
        for _replay in 0..2 {
            let (status, answer) = invoke(lambda.clone(), &event("POST", &path, &key, &body, who.as_ref())).await;
            assert_eq!(status, expected, "case {n}: {answer}");
        }
    }
    let made = cafe_settings::units::iam_actions(calls.take().keys());
    let strays = cafe_settings::units::API_FUNCTION.unlisted(&made);
    assert!(
        strays.is_empty(),
        "calls not on the unit's list (nor in its IAM role): {strays:?}"
    );
    // The recorder saw the function work: loads, appends, answers replayed, publishes.
    for action in [
        "dynamodb:Query",
        "dynamodb:PutItem",
        "dynamodb:GetItem",
        "kinesis:PutRecords",
    ] {
        assert!(made.contains(action), "{action} not seen in {made:?}");
    }
}

/// The requests of the comparison, on ids ending in `tail`: (who, path, body, status).
fn cases(tail: &str) -> Vec<(Option<Caller>, String, serde_json::Value, u16)> {
    let person = |subject: &str, role: Role| Caller {
        subject: subject.into(),
        role,
    };
    let (me, hq) = (format!("cust-{tail}"), person("hq-1", Role::Headquarters));
    let customer = person(&me, Role::Customer);
    let staff = |store: &str| person("barista-1", Role::Staff { store: store.into() });
    let menu = |item: &str| json!({"item_id": item, "name": "Flat white", "category": "espresso", "price_cents": 450});
    let order = |id: &str, customer: &str| {
        json!({"order_id": id, "customer_id": customer, "store_id": "store-00001",
               "lines": [{"item_id": format!("fw-{tail}"), "quantity": 1}]})
    };
    let restock = |store: &str| format!("/v1/stores/{store}/inventory/sku-{tail}/restock");
    let five = json!({"quantity": 5});
    vec![
        (
            Some(hq.clone()),
            "/v1/menu/items".into(),
            menu(&format!("fw-{tail}")),
            201,
        ),
        (
            Some(customer.clone()),
            "/v1/menu/items".into(),
            menu(&format!("x-{tail}")),
            403,
        ),
        (None, "/v1/menu/items".into(), menu(&format!("y-{tail}")), 401),
        (
            Some(customer.clone()),
            "/v1/orders".into(),
            order(&format!("o1-{tail}"), &me),
            201,
        ),
        (
            Some(customer.clone()),
            "/v1/orders".into(),
            order(&format!("o2-{tail}"), "cust-other"),
            403,
        ),
        (
            Some(hq.clone()),
            "/v1/orders".into(),
            order(&format!("o3-{tail}"), &me),
            403,
        ),
        (
            Some(hq),
            format!("/v1/orders/o1-{tail}/cancel"),
            json!({"reason": "wrong size"}),
            200,
        ),
        (
            Some(staff("store-00002")),
            format!("/v1/orders/o1-{tail}/status"),
            json!({"status": "preparing"}),
            403,
        ),
        (Some(staff("store-00001")), restock("store-00001"), five.clone(), 201),
        (Some(staff("store-00001")), restock("store-00002"), five.clone(), 403),
        (Some(person("sre-1", Role::Operator)), restock("store-00001"), five, 403),
        (
            Some(customer.clone()),
            format!("/v1/loyalty/{me}/earn"),
            json!({"points": 5}),
            201,
        ),
        (
            Some(customer),
            "/v1/loyalty/cust-other/redeem".into(),
            json!({"points": 5}),
            403,
        ),
    ]
}
