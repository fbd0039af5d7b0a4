use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use cafe_events::payment::PaymentRequest;
use cafe_events::proto::orders::v1::OrderStatus;
use cafe_events::{AggregateId, Cents, CustomerId, DomainEvent, ItemId, OrderId, StoreId};
use cafe_lambda_payment::gateway::SimulatedGateway;
use cafe_lambda_payment::handler::Payments;
use cafe_lambda_payment::idempotency::Idempotency;
use cafe_localstack::lambda::{Invoke, InvokeError};
use cafe_localstack::{Service, StackConfig, aws, health, provision};
use cafe_producers::domain::order::{LineRequest, Order, OrderCommand, PlaceOrder};
use cafe_producers::publish::{KinesisSink, Publisher, PublisherConfig};
use cafe_producers::service::{CommandMeta, CommandService, ServiceConfig};
use cafe_producers::store::{DynamoEventStore, EventStore, StoredResponse};

pub type Orders = CommandService<DynamoEventStore, KinesisSink>;
pub type Handler = Payments<SimulatedGateway, DynamoEventStore, KinesisSink>;

/// Price of the one menu item the tests order: an order of `n` costs `n` × this.
pub const PRICE: i64 = 1250;

pub fn fixture() -> SqsEvent {
    serde_json::from_str(include_str!("../fixtures/sqs-payments.json")).unwrap()
}

/// Clients and uniquely named tables, queue and stream of one test.
pub struct World {
    pub cfg: StackConfig,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub kinesis: aws_sdk_kinesis::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub events_table: String,
    pub idempotency_table: String,
    pub stream: String,
    pub orders: Arc<Orders>,
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::now_v7().simple())
}

impl World {
    pub async fn new() -> World {
        let cfg = StackConfig::load().unwrap();
        for service in [Service::DynamoDb, Service::Kinesis, Service::Sqs] {
            if let Err(why) = health::probe(&cfg, service).await {
                panic!("{service:?} stand-in not reachable ({why}); start the stack with `infra/local/dev.sh up`");
            }
        }
        let sdk = aws::sdk_config(&cfg).await;
        let dynamodb = aws::dynamodb(&sdk, &cfg);
        let kinesis = aws::kinesis(&sdk, &cfg);
        let events_table = unique("it-pay-events");
        let idempotency_table = unique("it-pay-idem");
        for (template, name) in [
            (&cfg.names.events_table, &events_table),
            (&cfg.names.idempotency_table, &idempotency_table),
        ] {
            provision::ensure_table_like(&dynamodb, &cfg.names, template, name)
                .await
                .unwrap();
        }
        let stream = unique("it-pay");
        provision::ensure_stream(&kinesis, &stream, 1).await.unwrap();
        let orders = Arc::new(CommandService::new(
            DynamoEventStore::new(dynamodb.clone(), &events_table, &idempotency_table),
            Publisher::new(KinesisSink::new(kinesis.clone(), &stream), PublisherConfig::default()),
            ServiceConfig::default(),
        ));
        World {
            sqs: aws::sqs(&sdk, &cfg),
            cfg,
            dynamodb,
            kinesis,
            events_table,
            idempotency_table,
            stream,
            orders,
        }
    }

    pub fn idempotency(&self) -> Idempotency {
        Idempotency::new(self.dynamodb.clone(), &self.idempotency_table)
    }

    /// A handler with `gateway`, over this world's tables.
    pub fn handler(&self, gateway: SimulatedGateway) -> Arc<Handler> {
        Arc::new(Payments::new(gateway, self.idempotency(), self.orders.clone()))
    }

    /// Places order `id` for `customer`: `units` of the test item.
    pub async fn place(&self, id: &str, customer: &str, units: u32) {
        let order_id = OrderId::parse(id).unwrap();
        let item = ItemId::parse("latte").unwrap();
        let menu = HashMap::from([(item.clone(), Cents::new(PRICE))]);
        let command = OrderCommand::Place(PlaceOrder {
            order_id: order_id.clone(),
            customer_id: CustomerId::parse(customer).unwrap(),
            store_id: StoreId::parse("store-1").unwrap(),
            lines: vec![LineRequest {
                item_id: item,
                quantity: units,
            }],
            currency: "USD".into(),
        });
        let respond = |_: &[cafe_events::EventEnvelope], _| StoredResponse {
            status: 201,
            body: serde_json::Value::Null,
        };
        self.orders
            .execute::<Order>(
                &AggregateId::Order(order_id.clone()),
                &(order_id, command),
                &menu,
                &CommandMeta::default(),
                respond,
            )
            .await
            .unwrap();
    }

    /// The order's status in the event store.
    pub async fn status(&self, id: &str) -> Option<OrderStatus> {
        let (order, _) = self
            .orders
            .state::<Order>(&AggregateId::Order(OrderId::parse(id).unwrap()))
            .await
            .unwrap();
        order.status
    }

    /// How many payment outcome events (authorised, declined) the order has.
    pub async fn payment_events(&self, id: &str) -> usize {
        let events = self
            .orders
            .store()
            .load(&AggregateId::Order(OrderId::parse(id).unwrap()))
            .await
            .unwrap();
        events
            .iter()
            .filter(|e| {
                matches!(
                    e.event,
                    DomainEvent::PaymentAuthorized(_) | DomainEvent::PaymentDeclined(_)
                )
            })
            .count()
    }

    /// A leases table of the test's own, shaped like the stack's.
    pub async fn leases_table(&self) -> String {
        let leases = unique("it-pay-leases");
        provision::ensure_table_like(&self.dynamodb, &self.cfg.names, &self.cfg.names.leases_table, &leases)
            .await
            .unwrap();
        leases
    }

    /// A consumer worker on this world's stream, with fast polls and checkpoints.
    pub fn spawn_worker<P: cafe_consumers::Processor>(
        &self,
        leases: &str,
        application: &str,
        processor: P,
        stop: &tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinHandle<cafe_consumers::WorkerReport> {
        let worker = cafe_consumers::Worker::new(
            cafe_consumers::WorkerConfig {
                idle_poll: Duration::from_millis(200),
                checkpoint_interval: Duration::from_millis(200),
                defer_pause: Duration::from_millis(100),
                ..cafe_consumers::WorkerConfig::new(application, &self.stream)
            },
            self.kinesis.clone(),
            cafe_consumers::lease::DynamoLeaseTable::new(self.dynamodb.clone(), leases, application),
            Arc::new(cafe_consumers::parking::DynamoParkingLot::new(
                self.dynamodb.clone(),
                &self.cfg.names.parked_table,
            )),
            Arc::new(processor),
            cafe_consumers::metrics::Metrics::unregistered(),
        );
        tokio::spawn(worker.run(stop.clone()))
    }

    /// Sends `body` to the queue at `url`.
    pub async fn send(&self, url: &str, body: &str) {
        self.sqs
            .send_message()
            .queue_url(url)
            .message_body(body)
            .send()
            .await
            .unwrap();
    }

    /// A queue with its DLQ (after 5 receives), both uniquely named.
    pub async fn queue(&self) -> (String, String) {
        let name = unique("it-pay");
        let url = provision::ensure_queue_with_dlq(&self.sqs, &name, &format!("{name}-dlq"), 5)
            .await
            .unwrap();
        let dlq = self
            .sqs
            .get_queue_url()
            .queue_name(format!("{name}-dlq"))
            .send()
            .await
            .unwrap()
            .queue_url
            .unwrap();
        (url, dlq)
    }
}

/// The request the pipeline sends for order `id` of `units` items.
pub fn request(id: &str, customer: &str, units: u32) -> PaymentRequest {
    PaymentRequest {
        order_id: id.into(),
        customer_id: customer.into(),
        amount_cents: PRICE * i64::from(units),
        currency: "USD".into(),
        attempt: 1,
        idempotency_key: format!("{id}:payment"),
    }
}

/// An SQS record carrying `body`.
pub fn message(message_id: &str, body: &str) -> SqsMessage {
    let mut m = SqsMessage::default();
    m.message_id = Some(message_id.into());
    m.receipt_handle = Some(format!("rh-{message_id}"));
    m.body = Some(body.into());
    m.event_source = Some("aws:sqs".into());
    m
}

/// `message` as SQS hands it out the `n`-th time.
pub fn delivered(mut message: SqsMessage, n: u32) -> SqsMessage {
    message
        .attributes
        .insert("ApproximateReceiveCount".into(), n.to_string());
    message
}

pub fn event(messages: Vec<SqsMessage>) -> SqsEvent {
    let mut e = SqsEvent::default();
    e.records = messages;
    e
}

pub fn failed_ids(response: &SqsBatchResponse) -> Vec<String> {
    let mut ids: Vec<_> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    ids.sort();
    ids
}

/// The handler called in-process, as the emulator would call the function.
pub struct InProcess(pub Arc<Handler>);

impl Invoke for InProcess {
    async fn invoke(&self, event: &SqsEvent) -> Result<SqsBatchResponse, InvokeError> {
        Ok(self.0.handle(event.clone()).await)
    }
}

/// Every message of the queue at `url` (visible ones; they are received, so hidden
/// for `hide`).
pub async fn drain(sqs: &aws_sdk_sqs::Client, url: &str, hide: Duration) -> Vec<aws_sdk_sqs::types::Message> {
    let mut all = Vec::new();
    loop {
        let out = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .visibility_timeout(i32::try_from(hide.as_secs()).unwrap())
            .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
            .send()
            .await
            .unwrap();
        let got = out.messages.unwrap_or_default();
        if got.is_empty() {
            return all;
        }
        all.extend(got);
    }
}
