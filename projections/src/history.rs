//! Generated event histories: many aggregates of every type, each with a valid,
//! gap-free version sequence, deterministic for a seed.
//!
//! The conformance suite applies them to every projector (plainly, twice, shuffled,
//! interrupted); the projection benchmark and the replay tool's scenarios load them too.
//! The histories follow the command side's rules (status only moves forward, stock and
//! balances never go negative, totals are the sum of the lines), so a read model never
//! has to be lenient for the generator's sake.

use std::collections::{BTreeMap, VecDeque};

use cafe_events::proto::inventory::v1::{StockAdjusted, StockReserved, StockRestocked};
use cafe_events::proto::loyalty::v1::{PointsEarned, PointsRedeemed, Tier, TierChanged};
use cafe_events::proto::menu::v1::{MenuItemPublished, MenuItemRetired};
use cafe_events::proto::orders::v1::{
    OrderCancelled, OrderLine, OrderPlaced, OrderStatus, OrderStatusChanged, PaymentAuthorized, PaymentDeclined,
};
use cafe_events::{AggregateId, CustomerId, DomainEvent, EventEnvelope, EventId, ItemId, OrderId, Sku, StoreId};
use cafe_producers::domain::loyalty::tier_for;
use chrono::{DateTime, Duration, TimeZone, Utc};

use crate::projector::Positioned;

/// How big a history to make.
#[derive(Debug, Clone, Copy)]
pub struct HistoryConfig {
    /// Makes the same history every time.
    pub seed: u64,
    /// Orders placed (each then moves on a random path).
    pub orders: usize,
    /// Customers the orders are spread over.
    pub customers: usize,
    /// Stores.
    pub stores: usize,
    /// Menu items (also the SKUs stocked in every store).
    pub menu_items: usize,
    /// The first order's number, and the first customer's: histories generated with
    /// disjoint ranges share no order or loyalty account, so a long history can be
    /// made (and published) a part at a time.
    pub first_order: usize,
    /// See `first_order`.
    pub first_customer: usize,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            seed: 7,
            orders: 400,
            customers: 60,
            stores: 5,
            menu_items: 12,
            first_order: 0,
            first_customer: 0,
        }
    }
}

/// When generated histories begin: a Monday's morning rush.
pub fn epoch() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 2, 6, 0, 0).single().unwrap_or_default()
}

struct Gen {
    rng: fastrand::Rng,
    clock: DateTime<Utc>,
    versions: BTreeMap<AggregateId, u64>,
    out: Vec<EventEnvelope>,
}

impl Gen {
    fn emit(&mut self, aggregate_id: AggregateId, event: DomainEvent) {
        // 1–90 s between events: a few hours of trading for a few thousand events.
        self.clock += Duration::seconds(self.rng.i64(1..=90));
        let version = self.versions.entry(aggregate_id.clone()).or_insert(0);
        *version += 1;
        let mut random = [0u8; 10];
        self.rng.fill(&mut random);
        let millis = u64::try_from(self.clock.timestamp_millis()).unwrap_or_default();
        let event_id = EventId::from_uuid(uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid());
        self.out.push(EventEnvelope {
            event_id,
            aggregate_id,
            version: *version,
            occurred_at: self.clock,
            correlation_id: String::new(),
            causation_id: String::new(),
            command_id: String::new(),
            event,
        });
    }
}

fn id<T>(parse: fn(String) -> Result<T, cafe_events::IdError>, text: String) -> T {
    // Generated ids are short alphanumerics with dashes; they always parse.
    #[allow(clippy::expect_used)]
    parse(text).expect("generated ids are valid")
}

/// Generates a history in a plausible global order (menu first, then trading).
pub fn generate(cfg: HistoryConfig) -> Vec<EventEnvelope> {
    let mut g = Gen {
        rng: fastrand::Rng::with_seed(cfg.seed),
        clock: epoch(),
        versions: BTreeMap::new(),
        out: Vec::new(),
    };
    let categories = ["coffee", "tea", "bakery", "cold-drinks"];
    let mut menu: Vec<(ItemId, i64, bool)> = Vec::new();
    for i in 0..cfg.menu_items.max(1) {
        let item = id(ItemId::parse, format!("item-{i:03}"));
        let price = g.rng.i64(250..=750);
        let category = categories[i % categories.len()];
        g.emit(
            AggregateId::MenuItem(item.clone()),
            DomainEvent::MenuItemPublished(MenuItemPublished {
                item_id: item.to_string(),
                name: format!("Item {i}"),
                category: category.to_owned(),
                price_cents: price,
                tags: vec![category.to_owned()],
            }),
        );
        menu.push((item, price, true));
    }
    let mut stock: BTreeMap<(usize, usize), i64> = BTreeMap::new();
    for store in 0..cfg.stores.max(1) {
        for sku in 0..menu.len() {
            restock(&mut g, &mut stock, store, sku, 40);
        }
    }
    let mut balances: BTreeMap<usize, (i64, i64, Tier)> = BTreeMap::new();
    for n in 0..cfg.orders {
        // Now and then the menu changes: a price moves, or an item is retired.
        if n % 50 == 49 {
            let i = g.rng.usize(..menu.len());
            let (item, _, published) = menu[i].clone();
            if published && g.rng.bool() {
                let price = g.rng.i64(250..=750);
                g.emit(
                    AggregateId::MenuItem(item.clone()),
                    DomainEvent::MenuItemPublished(MenuItemPublished {
                        item_id: item.to_string(),
                        name: format!("Item {i} (new recipe)"),
                        category: categories[i % categories.len()].to_owned(),
                        price_cents: price,
                        tags: vec!["new".into()],
                    }),
                );
                menu[i].1 = price;
            } else if published && menu.iter().filter(|m| m.2).count() > 2 {
                g.emit(
                    AggregateId::MenuItem(item.clone()),
                    DomainEvent::MenuItemRetired(MenuItemRetired {
                        item_id: item.to_string(),
                        reason: "seasonal".into(),
                    }),
                );
                menu[i].2 = false;
            }
        }
        let order = id(OrderId::parse, format!("order-{:06}", cfg.first_order + n));
        let customer_n = cfg.first_customer + g.rng.usize(..cfg.customers.max(1));
        let customer = id(CustomerId::parse, format!("customer-{customer_n:05}"));
        let store_n = g.rng.usize(..cfg.stores.max(1));
        let store = id(StoreId::parse, format!("store-{store_n:03}"));
        let published: Vec<usize> = (0..menu.len()).filter(|&i| menu[i].2).collect();
        let mut lines = Vec::new();
        for _ in 0..g.rng.usize(1..=4) {
            let i = published[g.rng.usize(..published.len())];
            lines.push((i, g.rng.u32(1..=3)));
        }
        let total: i64 = lines.iter().map(|&(i, q)| menu[i].1 * i64::from(q)).sum();
        let oid = AggregateId::Order(order.clone());
        g.emit(
            oid.clone(),
            DomainEvent::OrderPlaced(OrderPlaced {
                order_id: order.to_string(),
                customer_id: customer.to_string(),
                store_id: store.to_string(),
                lines: lines
                    .iter()
                    .map(|&(i, q)| OrderLine {
                        item_id: menu[i].0.to_string(),
                        quantity: q,
                        unit_price_cents: menu[i].1,
                    })
                    .collect(),
                currency: "USD".into(),
                total_cents: total,
            }),
        );
        // Reserve the stock, restocking first when it runs short.
        for &(sku, q) in &lines {
            if stock.get(&(store_n, sku)).copied().unwrap_or(0) < i64::from(q) {
                restock(&mut g, &mut stock, store_n, sku, 40);
            }
            let left = stock.entry((store_n, sku)).or_insert(0);
            *left -= i64::from(q);
            let on_hand_after = *left;
            g.emit(
                stock_id(store_n, sku),
                DomainEvent::StockReserved(StockReserved {
                    store_id: store.to_string(),
                    sku: sku_name(sku),
                    quantity: i64::from(q),
                    order_id: order.to_string(),
                    on_hand_after,
                }),
            );
        }
        let status = |from: OrderStatus, to: OrderStatus| {
            DomainEvent::OrderStatusChanged(OrderStatusChanged {
                order_id: order.to_string(),
                from: from as i32,
                to: to as i32,
            })
        };
        match g.rng.u8(..10) {
            // Declined, sometimes cancelled afterwards.
            0 => {
                g.emit(
                    oid.clone(),
                    DomainEvent::PaymentDeclined(PaymentDeclined {
                        order_id: order.to_string(),
                        reason: "card declined".into(),
                    }),
                );
                if g.rng.bool() {
                    g.emit(oid.clone(), cancel(&order));
                }
            }
            // Cancelled before payment.
            1 => g.emit(oid.clone(), cancel(&order)),
            // Paid, then as far along as the rush got.
            _ => {
                g.emit(
                    oid.clone(),
                    DomainEvent::PaymentAuthorized(PaymentAuthorized {
                        order_id: order.to_string(),
                        payment_id: format!("pay-{:06}", cfg.first_order + n),
                        amount_cents: total,
                    }),
                );
                let steps = [
                    (OrderStatus::Paid, OrderStatus::Preparing),
                    (OrderStatus::Preparing, OrderStatus::Ready),
                    (OrderStatus::Ready, OrderStatus::Completed),
                ];
                for &(from, to) in steps.iter().take(g.rng.usize(0..=3)) {
                    g.emit(oid.clone(), status(from, to));
                }
                earn(&mut g, &mut balances, customer_n, &customer, total / 100, &order);
                if g.rng.u8(..8) == 0 {
                    redeem(&mut g, &mut balances, customer_n, &customer);
                }
            }
        }
    }
    // A stock count at closing: corrections both ways.
    for store in 0..cfg.stores.max(1) {
        let sku = g.rng.usize(..menu.len());
        let left = stock.entry((store, sku)).or_insert(0);
        let delta = if *left > 3 { -3 } else { 2 };
        *left += delta;
        let on_hand_after = *left;
        g.emit(
            stock_id(store, sku),
            DomainEvent::StockAdjusted(StockAdjusted {
                store_id: format!("store-{store:03}"),
                sku: sku_name(sku),
                delta,
                reason: "count".into(),
                on_hand_after,
            }),
        );
    }
    g.out
}

fn sku_name(sku: usize) -> String {
    format!("item-{sku:03}")
}

fn stock_id(store: usize, sku: usize) -> AggregateId {
    AggregateId::StockItem(
        id(StoreId::parse, format!("store-{store:03}")),
        id(Sku::parse, sku_name(sku)),
    )
}

fn restock(g: &mut Gen, stock: &mut BTreeMap<(usize, usize), i64>, store: usize, sku: usize, quantity: i64) {
    let left = stock.entry((store, sku)).or_insert(0);
    *left += quantity;
    let on_hand_after = *left;
    g.emit(
        stock_id(store, sku),
        DomainEvent::StockRestocked(StockRestocked {
            store_id: format!("store-{store:03}"),
            sku: sku_name(sku),
            quantity,
            on_hand_after,
        }),
    );
}

fn cancel(order: &OrderId) -> DomainEvent {
    DomainEvent::OrderCancelled(OrderCancelled {
        order_id: order.to_string(),
        reason: "changed mind".into(),
    })
}

fn earn(
    g: &mut Gen,
    balances: &mut BTreeMap<usize, (i64, i64, Tier)>,
    n: usize,
    customer: &CustomerId,
    points: i64,
    order: &OrderId,
) {
    let (balance, lifetime, tier) = balances.entry(n).or_insert((0, 0, Tier::Green));
    *balance += points;
    *lifetime += points;
    let (balance_after, new_tier, old_tier) = (*balance, tier_for(*lifetime), *tier);
    *tier = new_tier;
    let aid = AggregateId::LoyaltyAccount(customer.clone());
    g.emit(
        aid.clone(),
        DomainEvent::PointsEarned(PointsEarned {
            customer_id: customer.to_string(),
            points,
            order_id: order.to_string(),
            balance_after,
        }),
    );
    if new_tier != old_tier {
        g.emit(
            aid,
            DomainEvent::TierChanged(TierChanged {
                customer_id: customer.to_string(),
                from: old_tier as i32,
                to: new_tier as i32,
            }),
        );
    }
}

fn redeem(g: &mut Gen, balances: &mut BTreeMap<usize, (i64, i64, Tier)>, n: usize, customer: &CustomerId) {
    let Some((balance, _, _)) = balances.get_mut(&n) else {
        return;
    };
    let points = *balance / 2;
    if points == 0 {
        return;
    }
    *balance -= points;
    let balance_after = *balance;
    g.emit(
        AggregateId::LoyaltyAccount(customer.clone()),
        DomainEvent::PointsRedeemed(PointsRedeemed {
            customer_id: customer.to_string(),
            points,
            balance_after,
        }),
    );
}

/// Splits a history the way Kinesis would: by partition key onto `shards` shards, the
/// order kept within each, with synthetic increasing sequence numbers.
pub fn sharded(history: &[EventEnvelope], shards: usize) -> Vec<(String, Vec<Positioned>)> {
    let shards = shards.max(1);
    let mut out: Vec<(String, Vec<Positioned>)> = (0..shards).map(|s| (format!("shard-{s:03}"), Vec::new())).collect();
    for (n, event) in history.iter().enumerate() {
        let key = event.partition_key();
        let shard = (md5_prefix(&key) % shards as u64) as usize;
        out[shard].1.push(Positioned {
            event: event.clone(),
            // Kinesis sequence numbers are decimal strings that grow along a shard.
            sequence: format!("{:056}", n + 1),
            sub: 0,
        });
    }
    out
}

fn md5_prefix(key: &str) -> u64 {
    use md5::{Digest, Md5};
    let digest = Md5::digest(key.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// A random interleaving of the history that keeps each aggregate's own order: what a
/// different shard layout or a different consumer speed could deliver.
pub fn shuffled(history: &[EventEnvelope], seed: u64) -> Vec<EventEnvelope> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut queues: BTreeMap<&AggregateId, VecDeque<&EventEnvelope>> = BTreeMap::new();
    for e in history {
        queues.entry(&e.aggregate_id).or_default().push_back(e);
    }
    let mut queues: Vec<VecDeque<&EventEnvelope>> = queues.into_values().collect();
    let mut out = Vec::with_capacity(history.len());
    while !queues.is_empty() {
        let i = rng.usize(..queues.len());
        if let Some(e) = queues[i].pop_front() {
            out.push(e.clone());
        }
        if queues[i].is_empty() {
            queues.swap_remove(i);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histories_are_deterministic_and_gap_free_per_aggregate() {
        let a = generate(HistoryConfig::default());
        let b = generate(HistoryConfig::default());
        assert_eq!(a.len(), b.len());
        assert!(a.iter().zip(&b).all(|(x, y)| x.event_id == y.event_id));
        let mut last: BTreeMap<&AggregateId, u64> = BTreeMap::new();
        for e in &a {
            let v = last.entry(&e.aggregate_id).or_insert(0);
            assert_eq!(e.version, *v + 1, "{}", e.aggregate_id);
            *v = e.version;
        }
        assert!(a.len() > 1_500, "{} events", a.len());
    }

    #[test]
    fn shuffling_keeps_each_aggregates_order_and_loses_nothing() {
        let h = generate(HistoryConfig::default());
        let s = shuffled(&h, 3);
        assert_eq!(s.len(), h.len());
        assert!(h.iter().zip(&s).any(|(x, y)| x.event_id != y.event_id));
        let mut last: BTreeMap<&AggregateId, u64> = BTreeMap::new();
        for e in &s {
            let v = last.entry(&e.aggregate_id).or_insert(0);
            assert_eq!(e.version, *v + 1);
            *v = e.version;
        }
        let shards = sharded(&h, 4);
        assert_eq!(shards.iter().map(|(_, e)| e.len()).sum::<usize>(), h.len());
    }
}
