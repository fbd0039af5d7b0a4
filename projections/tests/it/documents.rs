//! The DocumentDB read model against the local nx-27017.

use std::collections::BTreeMap;

use cafe_events::{AggregateId, DomainEvent};
use cafe_projections::Projection;
use cafe_projections::documents::MongoDocuments;
use cafe_projections::history::{self, HistoryConfig};

use crate::conformance::{apply_sharded, conformance};
use crate::helpers::{first_order, stack, unique};

pub async fn fresh() -> MongoDocuments {
    let cfg = stack();
    MongoDocuments::connect(&cfg.mongo_url(), &unique("it")).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conforms() {
    let snapshot = conformance(fresh).await;
    let orders = snapshot.iter().filter(|l| l.starts_with("order_documents ")).count();
    assert_eq!(orders, HistoryConfig::default().orders);
    let items = snapshot.iter().filter(|l| l.starts_with("menu_items ")).count();
    assert_eq!(items, HistoryConfig::default().menu_items);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn menu_and_orders_read_back_as_the_history_left_them() {
    let docs = fresh().await;
    let history = history::generate(HistoryConfig::default());
    apply_sharded(&docs, &history, 11).await;

    // The menu as the history leaves it: last publish per item, minus the retired.
    let mut menu: BTreeMap<String, (String, i64, bool, u64)> = BTreeMap::new();
    for e in &history {
        match (&e.aggregate_id, &e.event) {
            (AggregateId::MenuItem(id), DomainEvent::MenuItemPublished(p)) => {
                menu.insert(id.to_string(), (p.category.clone(), p.price_cents, false, e.version));
            }
            (AggregateId::MenuItem(id), DomainEvent::MenuItemRetired(_)) => {
                let m = menu.get_mut(id.as_str()).unwrap();
                (m.2, m.3) = (true, e.version);
            }
            _ => {}
        }
    }
    assert!(menu.values().any(|m| m.2), "the history retires something");
    let published: Vec<&String> = menu.iter().filter(|(_, m)| !m.2).map(|(id, _)| id).collect();
    let listed = docs.menu_items(None).await.unwrap();
    assert_eq!(listed.iter().map(|i| &i.item_id).collect::<Vec<_>>(), published);
    let coffee = docs.menu_items(Some("coffee")).await.unwrap();
    assert!(!coffee.is_empty());
    for item in &coffee {
        let (category, price, retired, version) = &menu[&item.item_id];
        assert_eq!(
            (&item.category, item.price_cents, item.retired, item.version),
            (category, *price, *retired, *version)
        );
    }
    let (retired_id, _) = menu.iter().find(|(_, m)| m.2).unwrap();
    assert!(docs.menu_item(retired_id).await.unwrap().unwrap().retired);
    assert!(docs.menu_item("item-nope").await.unwrap().is_none());

    let (placed, last) = first_order(&history);
    let order = docs.order_document(&placed.order_id).await.unwrap().unwrap();
    assert_eq!(order.version, last);
    assert_eq!(order.total_cents, placed.total_cents);
    assert_eq!(order.lines.len(), placed.lines.len());
    assert_eq!(
        order
            .lines
            .iter()
            .map(|l| l.unit_price_cents * i64::from(l.quantity))
            .sum::<i64>(),
        placed.total_cents
    );
    assert!(order.created_at <= order.updated_at);
    assert!(docs.order_document("order-nope").await.unwrap().is_none());
}

/// A status change whose order document is missing (the read model started after the
/// order was placed) creates nothing: no half documents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_change_alone_creates_no_half_document() {
    let docs = fresh().await;
    let history = history::generate(HistoryConfig {
        orders: 5,
        ..HistoryConfig::default()
    });
    let later: Vec<_> = history
        .iter()
        .filter(|e| matches!(e.aggregate_id, AggregateId::Order(_)) && e.version > 1)
        .cloned()
        .collect();
    crate::conformance::apply_as(&docs, "late", &later, 3).await;
    assert!(docs.snapshot().await.unwrap().is_empty());
}
