//! `cafe bench payments`: payments/s of the payment function's handler against the local
//! stack, the AWS calls it makes per payment (counted by an SDK interceptor), and, in the
//! same run, the stand-ins' ceiling for those calls: the same requests made one payment
//! at a time per task, with nothing of ours in between. A benchmark prints figures; it
//! asserts nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use cafe_events::payment::PaymentRequest;
use cafe_events::proto::orders::v1::PaymentAuthorized;
use cafe_events::{AggregateId, DomainEvent, EventEnvelope, EventId};
use cafe_lambda_payment::gateway::{Charge, SimulatedGateway};
use cafe_lambda_payment::handler::Payments;
use cafe_lambda_payment::idempotency::Idempotency;
use cafe_localstack::aws::CallCounter;
use cafe_localstack::{StackConfig, provision};
use cafe_producers::publish::{KinesisSink, Publisher, PublisherConfig, RecordSink};
use cafe_producers::service::{CommandService, ServiceConfig};
use cafe_producers::store::{DynamoEventStore, EventStore, IdempotencyClaim, StoredResponse};
use futures::StreamExt;

use crate::load;

/// Messages per invocation, as the event source mapping's default batch size.
const BATCH: usize = 10;

/// The benchmark; prints its figures.
pub async fn payments(cfg: &StackConfig, count: usize, invocations: usize) -> Result<()> {
    let counter = CallCounter::default();
    let sdk = cafe_localstack::aws::sdk_config(cfg).await;
    let dynamodb = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&sdk)
            .endpoint_url(cfg.dynamodb_endpoint())
            .interceptor(counter.clone())
            .build(),
    );
    let kinesis = aws_sdk_kinesis::Client::from_conf(
        aws_sdk_kinesis::config::Builder::from(&sdk)
            .endpoint_url(cfg.kinesis_endpoint())
            .interceptor(counter.clone())
            .build(),
    );
    let tag = load::run_tag();

    // Tables and a stream of the benchmark's own, removed at the end.
    let specs = crate::bench::store_tables(&dynamodb, cfg, &tag).await?;
    let (events_table, idempotency_table) = (specs[0].name.clone(), specs[1].name.clone());
    let stream = format!("bench-pay-{tag}");
    provision::ensure_stream(&kinesis, &stream, cfg.stream_shards).await?;
    let orders = Arc::new(CommandService::new(
        DynamoEventStore::new(dynamodb.clone(), &events_table, &idempotency_table),
        Publisher::new(KinesisSink::new(kinesis.clone(), &stream), PublisherConfig::default()),
        ServiceConfig::default(),
    ));

    // Orders awaiting payment: the first half for the handler, the second for the ceiling.
    let ids: Vec<String> = (0..2 * count).map(|n| format!("o-{tag}-{n}")).collect();
    let placed: Vec<Result<i64>> = futures::stream::iter(&ids)
        .map(|id| place(&orders, id))
        .buffer_unordered(64)
        .collect()
        .await;
    let totals: Vec<i64> = placed.into_iter().collect::<Result<_>>()?;
    orders.settled().await;
    let requests: Vec<PaymentRequest> = ids
        .iter()
        .zip(&totals)
        .enumerate()
        .map(|(n, (id, total))| PaymentRequest {
            order_id: id.clone(),
            customer_id: format!("cust-{n}"),
            amount_cents: *total,
            currency: "USD".into(),
            attempt: 1,
            idempotency_key: format!("{id}:payment"),
        })
        .collect();
    let (mine, theirs) = requests.split_at(count);

    // The handler, as the function runs it, `invocations` batches at a time.
    let handler = Payments::new(
        SimulatedGateway::default(),
        Idempotency::new(dynamodb.clone(), &idempotency_table),
        orders.clone(),
    );
    counter.take();
    let started = Instant::now();
    let failed: usize = futures::stream::iter(mine.chunks(BATCH))
        .map(|chunk| handler.handle(batch(chunk)))
        .buffer_unordered(invocations.max(1))
        .map(|response| response.batch_item_failures.len())
        .fold(0, |a, b| async move { a + b })
        .await;
    let handler_time = started.elapsed();
    let handler_calls = counter.take();

    // The ceiling: the same calls, `invocations × BATCH` payments at a time, each task
    // making one payment's calls in a row.
    let idempotency = Idempotency::new(dynamodb.clone(), &idempotency_table);
    let sink = KinesisSink::new(kinesis.clone(), &stream);
    let store = orders.store();
    let started = Instant::now();
    let raw_ok: usize = futures::stream::iter(theirs)
        .map(|request| raw_payment(store, &idempotency, &sink, request))
        .buffer_unordered(invocations.max(1) * BATCH)
        .map(|ok| usize::from(ok.is_ok()))
        .fold(0, |a, b| async move { a + b })
        .await;
    let raw_time = started.elapsed();
    let raw_calls = counter.take();

    kinesis.delete_stream().stream_name(&stream).send().await.ok();
    for s in &specs {
        dynamodb.delete_table().table_name(&s.name).send().await.ok();
    }

    let per_s = |n: usize, t: Duration| n as f64 / t.as_secs_f64().max(f64::EPSILON);
    let handler_rate = per_s(count - failed, handler_time);
    let raw_rate = per_s(raw_ok, raw_time);
    println!("bench payments: {count} payments, {invocations} invocation(s) of {BATCH} in flight, handler in-process");
    let row = |label: &str, value: String| println!("  {label:<56} {value:>12}");
    row("payments/s through the handler", format!("{handler_rate:.0}"));
    row("  failed (reported in batchItemFailures)", failed.to_string());
    row(
        "stand-in ceiling: payments/s, the same calls with nothing between",
        format!("{raw_rate:.0}"),
    );
    row(
        "  handler as a share of the ceiling",
        format!("{:.0} %", 100.0 * handler_rate / raw_rate.max(f64::EPSILON)),
    );
    println!("  calls per payment              handler   ceiling");
    let names: std::collections::BTreeSet<&String> = handler_calls.keys().chain(raw_calls.keys()).collect();
    let per = |calls: &BTreeMap<String, u64>, name: &String, n: usize| {
        calls.get(name).copied().unwrap_or(0) as f64 / n.max(1) as f64
    };
    for name in names {
        println!(
            "    {name:<28} {:>9.2} {:>9.2}",
            per(&handler_calls, name, count),
            per(&raw_calls, name, theirs.len())
        );
    }
    let total = |calls: &BTreeMap<String, u64>| calls.values().sum::<u64>();
    println!(
        "    {:<28} {:>9.2} {:>9.2}",
        "all",
        total(&handler_calls) as f64 / count.max(1) as f64,
        total(&raw_calls) as f64 / theirs.len().max(1) as f64
    );
    Ok(())
}

/// Places one order (two lines of the sample menu); answers its total.
async fn place<S: EventStore, K: RecordSink>(orders: &CommandService<S, K>, id: &str) -> Result<i64> {
    let (command, menu) = load::place_order_command(id)?;
    let aggregate = AggregateId::Order(command.0.clone());
    let executed = orders
        .execute::<cafe_producers::domain::order::Order>(
            &aggregate,
            &command,
            &menu,
            &cafe_producers::service::CommandMeta::default(),
            |_, _| StoredResponse {
                status: 201,
                body: serde_json::Value::Null,
            },
        )
        .await
        .with_context(|| format!("placing {id}"))?;
    executed
        .events
        .iter()
        .find_map(|e| match &e.event {
            DomainEvent::OrderPlaced(p) => Some(p.total_cents),
            _ => None,
        })
        .context("placing an order made no OrderPlaced")
}

/// An SQS batch carrying `requests`.
fn batch(requests: &[PaymentRequest]) -> SqsEvent {
    let mut event = SqsEvent::default();
    event.records = requests
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut m = SqsMessage::default();
            m.message_id = Some(format!("{}-{i}", r.order_id));
            m.receipt_handle = Some(format!("rh-{}", r.order_id));
            m.body = serde_json::to_string(r).ok();
            m.event_source = Some("aws:sqs".into());
            m
        })
        .collect();
    event
}

/// One payment's calls with nothing of ours between them: claim the key, read the
/// order, record the outcome, append it with its idempotency record, put it on the
/// stream, clear its marker.
async fn raw_payment<S: EventStore>(
    store: &S,
    idempotency: &Idempotency,
    sink: &KinesisSink,
    request: &PaymentRequest,
) -> Result<()> {
    let hash = format!("{:064x}", request.amount_cents);
    idempotency.claim(request, &hash).await?;
    let aggregate = AggregateId::Order(cafe_events::OrderId::parse(&request.order_id)?);
    let history = store.load(&aggregate).await?;
    let charge = Charge::Authorized {
        payment_id: format!("pay-{}", request.idempotency_key),
    };
    idempotency.complete(request, &hash, &charge).await?;
    let event = EventEnvelope {
        event_id: EventId::new(),
        aggregate_id: aggregate,
        version: history.last().map_or(0, |e| e.version) + 1,
        occurred_at: chrono::Utc::now(),
        correlation_id: request.order_id.clone(),
        causation_id: String::new(),
        command_id: String::new(),
        event: DomainEvent::PaymentAuthorized(PaymentAuthorized {
            order_id: request.order_id.clone(),
            payment_id: format!("pay-{}", request.idempotency_key),
            amount_cents: request.amount_cents,
        }),
    };
    let claim = IdempotencyClaim {
        key: format!("payment-outcome:{}", request.idempotency_key),
        request_hash: hash,
        response: StoredResponse {
            status: 200,
            body: serde_json::Value::Null,
        },
        ttl: Duration::from_secs(24 * 3600),
    };
    store.append(std::slice::from_ref(&event), Some(&claim)).await?;
    let entry = cafe_producers::publish::Entry {
        partition_key: event.partition_key(),
        data: event.encode(),
    };
    sink.put_records(std::slice::from_ref(&entry)).await?;
    store.mark_published(std::slice::from_ref(&event)).await?;
    Ok(())
}
