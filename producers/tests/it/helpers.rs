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

use aws_sdk_kinesis::types::ShardIteratorType;
use cafe_events::kpl;
use cafe_producers::publish::KinesisSink;

/// A fresh stream with `shards` shards, and a sink on it.
pub async fn fresh_stream(shards: u32) -> (aws_sdk_kinesis::Client, String, KinesisSink) {
    let cfg = StackConfig::load().unwrap();
    if let Err(why) = health::probe(&cfg, Service::Kinesis).await {
        panic!("Kinesis stand-in not reachable ({why}); start the stack with `infra/local/dev.sh up`");
    }
    let client = aws::kinesis(&aws::sdk_config(&cfg).await, &cfg);
    let stream = format!("it-pub-{}", uuid::Uuid::now_v7().simple());
    provision::ensure_stream(&client, &stream, shards).await.unwrap();
    let sink = KinesisSink::new(client.clone(), stream.clone());
    (client, stream, sink)
}

/// Everything in the stream, shard by shard in sequence order: `(kinesis records, user
/// records decoded)`.
pub async fn read_stream(client: &aws_sdk_kinesis::Client, stream: &str) -> (usize, Vec<Vec<EventEnvelope>>) {
    let shards = client.list_shards().stream_name(stream).send().await.unwrap();
    let mut kinesis_records = 0;
    let mut per_shard = Vec::new();
    for shard in shards.shards() {
        let mut it = client
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(shard.shard_id())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .unwrap()
            .shard_iterator;
        let mut events = Vec::new();
        while let Some(i) = it {
            let out = client
                .get_records()
                .shard_iterator(i)
                .limit(10_000)
                .send()
                .await
                .unwrap();
            for r in out.records() {
                kinesis_records += 1;
                let data = bytes::Bytes::copy_from_slice(r.data().as_ref());
                for user in kpl::deaggregate(r.partition_key(), data) {
                    events.push(EventEnvelope::decode(&user.data).expect("every user record decodes intact"));
                }
            }
            let caught_up = out.records().is_empty() && out.millis_behind_latest().unwrap_or(0) == 0;
            it = if caught_up { None } else { out.next_shard_iterator };
        }
        per_shard.push(events);
    }
    (kinesis_records, per_shard)
}

/// The tests' identity provider: one key for the whole test binary.
pub fn auth() -> &'static cafe_producers::api::guard::LocalAuth {
    static AUTH: std::sync::OnceLock<cafe_producers::api::guard::LocalAuth> = std::sync::OnceLock::new();
    AUTH.get_or_init(|| cafe_producers::api::guard::LocalAuth::ephemeral().unwrap())
}
