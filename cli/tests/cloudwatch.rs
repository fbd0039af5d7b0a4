//! The generated CloudWatch dashboard and alarms, put into the stand-in (moto) the way
//! Terraform puts them into an account: accepted, and read back as generated.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use cafe_app::observability;
use cafe_localstack::{Service, StackConfig, aws, health};

#[tokio::test]
async fn the_generated_dashboard_and_alarms_are_accepted_by_cloudwatch() {
    let cfg = StackConfig::load().unwrap();
    if let Err(why) = health::probe(&cfg, Service::Moto).await {
        panic!("moto not reachable ({why}); start the stack with `infra/local/dev.sh up`");
    }
    let cw = aws::cloudwatch(&aws::sdk_config(&cfg).await, &cfg);
    let apps = cafe_app::dashboard::applications();
    let applied = observability::apply(&cw, &cfg.names, &apps, "abc123").await.unwrap();

    let got = cw
        .get_dashboard()
        .dashboard_name(&applied.dashboard)
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = serde_json::from_str(got.dashboard_body().unwrap()).unwrap();
    let expected: serde_json::Value = serde_json::from_str(
        &serde_json::to_string(&observability::dashboard(&cfg.names, &apps))
            .unwrap()
            .replace(observability::API_ID, "abc123"),
    )
    .unwrap();
    assert_eq!(body, expected);

    let described = cw
        .describe_alarms()
        .alarm_name_prefix("")
        .max_records(100)
        .send()
        .await
        .unwrap();
    let names: Vec<&str> = described
        .metric_alarms()
        .iter()
        .filter_map(|a| a.alarm_name())
        .collect();
    for alarm in observability::alarms(&cfg.names, &apps) {
        assert!(
            names.contains(&alarm.alarm_name.as_str()),
            "{} missing: {names:?}",
            alarm.alarm_name
        );
        let stored = described
            .metric_alarms()
            .iter()
            .find(|a| a.alarm_name() == Some(alarm.alarm_name.as_str()))
            .unwrap();
        assert_eq!(stored.metric_name(), Some(alarm.metric_name.as_str()));
        assert_eq!(stored.namespace(), Some(alarm.namespace.as_str()));
        assert_eq!(stored.threshold(), Some(alarm.threshold));
        assert_eq!(stored.dimensions().len(), alarm.dimensions.len());
    }
}
