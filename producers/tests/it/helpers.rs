use cafe_events::proto::loyalty::v1::PointsEarned;
use cafe_events::{AggregateId, CustomerId, DomainEvent, EventEnvelope, EventId};
use cafe_localstack::{Service, StackConfig, aws, health, provision};
use cafe_producers::store::DynamoEventStore;

/// An event store over freshly made, uniquely named tables (same specs as production).
pub async fn fresh_store() -> DynamoEventStore {
    let cfg = StackConfig::load().unwrap();
    if let Err(why) = health::probe(&cfg, Service::DynamoDb).await {
        panic!("DynamoDB stand-in not reachable ({why}); start the stack with `infra/local/dev.sh up`");
    }
    let client = aws::dynamodb(&aws::sdk_config(&cfg).await, &cfg);
    let suffix = uuid::Uuid::now_v7().simple().to_string();
    let mut specs = provision::table_specs(&cfg.names);
    let mut name_of = |table: &str| {
        let spec = specs.iter_mut().find(|s| s.name == table).unwrap();
        spec.name = format!("it-{table}-{suffix}");
        spec.clone()
    };
    let events = name_of(&cfg.names.events_table);
    let idem = name_of(&cfg.names.idempotency_table);
    provision::ensure_table(&client, &events).await.unwrap();
    provision::ensure_table(&client, &idem).await.unwrap();
    DynamoEventStore::new(client, events.name, idem.name)
}

pub fn account(id: &str) -> AggregateId {
    AggregateId::LoyaltyAccount(CustomerId::parse(id).unwrap())
}

/// Event `version` of a loyalty account.
pub fn earned(id: &AggregateId, version: u64) -> EventEnvelope {
    EventEnvelope {
        event_id: EventId::new(),
        aggregate_id: id.clone(),
        version,
        occurred_at: chrono::Utc::now(),
        correlation_id: "corr".into(),
        causation_id: String::new(),
        command_id: format!("cmd-{version}"),
        event: DomainEvent::PointsEarned(PointsEarned {
            customer_id: id.to_string(),
            points: 10,
            order_id: String::new(),
            balance_after: 10 * version as i64,
        }),
    }
}
