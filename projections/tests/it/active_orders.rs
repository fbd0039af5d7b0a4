//! The DynamoDB active-orders read model against the DynamoDB stand-in.

use std::collections::BTreeMap;

use cafe_events::DomainEvent;
use cafe_localstack::{aws, provision};
use cafe_projections::active_orders::DynamoActiveOrders;
use cafe_projections::history::{self, HistoryConfig};

use crate::conformance::{apply_sharded, conformance};
use crate::helpers::{stack, unique};

pub async fn fresh() -> DynamoActiveOrders {
    let cfg = stack();
    let client = aws::dynamodb(&aws::sdk_config(&cfg).await, &cfg);
    let name = unique("it-active").replace('_', "-");
    provision::ensure_table_like(&client, &cfg.names, &cfg.names.active_orders_table, &name)
        .await
        .unwrap();
    DynamoActiveOrders::new(client, name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conforms() {
    conformance(fresh).await;
}

/// What the model holds is exactly the orders the history leaves unfinished, listed per
/// customer newest first; finished ones read as absent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_unfinished_orders_are_listed_per_customer_newest_first() {
    let model = fresh().await;
    let history = history::generate(HistoryConfig {
        orders: 80,
        customers: 5,
        ..HistoryConfig::default()
    });
    apply_sharded(&model, &history, 3).await;
    // order -> (customer, created, finished, last version)
    type Seen = (String, chrono::DateTime<chrono::Utc>, bool, u64);
    let mut orders: BTreeMap<String, Seen> = BTreeMap::new();
    for e in &history {
        match &e.event {
            DomainEvent::OrderPlaced(p) => {
                orders.insert(
                    p.order_id.clone(),
                    (p.customer_id.clone(), e.occurred_at, false, e.version),
                );
            }
            DomainEvent::OrderCancelled(c) => {
                let o = orders.get_mut(&c.order_id).unwrap();
                (o.2, o.3) = (true, e.version);
            }
            DomainEvent::OrderStatusChanged(c) => {
                let o = orders.get_mut(&c.order_id).unwrap();
                o.2 = c.to() == cafe_events::proto::orders::v1::OrderStatus::Completed;
                o.3 = e.version;
            }
            DomainEvent::PaymentAuthorized(p) => orders.get_mut(&p.order_id).unwrap().3 = e.version,
            DomainEvent::PaymentDeclined(p) => orders.get_mut(&p.order_id).unwrap().3 = e.version,
            _ => {}
        }
    }
    let finished = orders.values().filter(|o| o.2).count();
    assert!(
        finished > 5 && finished < orders.len(),
        "{finished} of {}",
        orders.len()
    );
    for customer in 0..5 {
        let customer = format!("customer-{customer:05}");
        let listed = model.customer_orders(&customer, 1000).await.unwrap();
        let mut want: Vec<(&String, &Seen)> = orders.iter().filter(|(_, o)| o.0 == customer && !o.2).collect();
        want.sort_by_key(|(_, o)| std::cmp::Reverse(o.1));
        assert_eq!(
            listed.iter().map(|o| o.order_id.as_str()).collect::<Vec<_>>(),
            want.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(),
            "{customer}"
        );
        for (o, (_, w)) in listed.iter().zip(&want) {
            assert_eq!(o.version, w.3);
        }
    }
    let (done, _) = orders.iter().find(|(_, o)| o.2).unwrap();
    assert!(model.order(done).await.unwrap().is_none());
    let (open, o) = orders.iter().find(|(_, o)| !o.2).unwrap();
    assert_eq!(model.order(open).await.unwrap().unwrap().version, o.3);
    assert_eq!(model.customer_orders("customer-00000", 2).await.unwrap().len(), 2);
}
