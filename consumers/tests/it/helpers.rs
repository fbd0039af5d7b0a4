use cafe_consumers::lease::DynamoLeaseTable;
use cafe_localstack::{Service, StackConfig, aws, health, provision};

/// A lease table of its own (fresh name) on the DynamoDB stand-in, and a raw client to
/// look at its items.
pub async fn fresh_leases(application: &str) -> (DynamoLeaseTable, aws_sdk_dynamodb::Client, String) {
    let cfg = StackConfig::load().unwrap();
    if let Err(why) = health::probe(&cfg, Service::DynamoDb).await {
        panic!("DynamoDB stand-in not reachable ({why}); start the stack with `infra/local/dev.sh up`");
    }
    let client = aws::dynamodb(&aws::sdk_config(&cfg).await, &cfg);
    let mut spec = provision::table_specs(&cfg.names)
        .into_iter()
        .find(|s| s.name == cfg.names.leases_table)
        .unwrap();
    spec.name = format!("it-leases-{}", uuid::Uuid::now_v7().simple());
    provision::ensure_table(&client, &spec).await.unwrap();
    (
        DynamoLeaseTable::new(client.clone(), &spec.name, application),
        client,
        spec.name,
    )
}
