//! The function's AWS calls, recorded while it pays, declines, retries a gateway outage
//! and answers a duplicate, are all on its unit's list: what its IAM role grants.

use cafe_lambda_payment::config::PaymentConfig;
use cafe_localstack::aws::CallCounter;
use cafe_settings::units::{PAYMENT_FUNCTION, iam_actions};

use crate::helpers::{World, delivered, event, message, request};

#[tokio::test]
async fn every_aws_call_the_function_makes_is_on_its_units_list() {
    let world = World::new().await;
    for (id, customer) in [("o-ok", "c-1"), ("o-blocked", "c-blocked"), ("o-flaky", "c-flaky")] {
        world.place(id, customer, 1).await;
    }
    // Configured as deployed: its unit's names, the gateway's rules.
    let mut names = world.cfg.names.clone();
    names.events_table.clone_from(&world.events_table);
    names.idempotency_table.clone_from(&world.idempotency_table);
    names.stream.clone_from(&world.stream);
    let mut env = names.env(PAYMENT_FUNCTION.names);
    env.extend(
        [
            ("CAFE_GATEWAY_BLOCKED", "c-blocked"),
            ("CAFE_GATEWAY_FLAKY", "c-flaky:1"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    let config = PaymentConfig::from_env(|k| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())).unwrap();
    let calls = CallCounter::default();
    let dynamodb =
        aws_sdk_dynamodb::Client::from_conf(world.dynamodb.config().to_builder().interceptor(calls.clone()).build());
    let kinesis =
        aws_sdk_kinesis::Client::from_conf(world.kinesis.config().to_builder().interceptor(calls.clone()).build());
    let function = cafe_lambda_payment::function(config, dynamodb, kinesis);

    let body = |id: &str, customer: &str| serde_json::to_string(&request(id, customer, 1)).unwrap();
    let first = event(vec![
        message("m-ok", &body("o-ok", "c-1")),
        message("m-dup", &body("o-ok", "c-1")),
        message("m-blocked", &body("o-blocked", "c-blocked")),
        delivered(message("m-flaky", &body("o-flaky", "c-flaky")), 1),
    ]);
    let answer = function.handle(first).await;
    // The outage fails the flaky one. The two copies of o-ok run at once: whichever loses
    // the race for the claim waits for the other's (a batch item failure), unless the
    // other finished first and it was answered from the record. Every failure goes
    // through on its next delivery.
    let failed: Vec<String> = answer
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    assert!(failed.iter().any(|f| f == "m-flaky"), "{answer:?}");
    let twins = failed.iter().filter(|f| *f == "m-ok" || *f == "m-dup").count();
    assert!(failed.len() == 1 + twins && twins <= 1, "{answer:?}");
    let bodies = [
        ("m-ok", body("o-ok", "c-1")),
        ("m-dup", body("o-ok", "c-1")),
        ("m-flaky", body("o-flaky", "c-flaky")),
    ];
    let again = function
        .handle(event(
            bodies
                .iter()
                .filter(|(id, _)| failed.iter().any(|f| f == id))
                .map(|(id, b)| delivered(message(id, b), 2))
                .collect(),
        ))
        .await;
    assert!(again.batch_item_failures.is_empty(), "{again:?}");

    let made = iam_actions(calls.take().keys());
    let strays = PAYMENT_FUNCTION.unlisted(&made);
    assert!(
        strays.is_empty(),
        "calls not on the unit's list (nor in its IAM role): {strays:?}"
    );
    // The recorder saw it work: claims and outcomes, a released claim, loads, appends.
    for action in [
        "dynamodb:PutItem",
        "dynamodb:GetItem",
        "dynamodb:DeleteItem",
        "dynamodb:Query",
        "kinesis:PutRecords",
    ] {
        assert!(made.contains(action), "{action} not seen in {made:?}");
    }
}
