//! The Aurora PostgreSQL read model against the local PostgreSQL.

use std::sync::Arc;
use std::time::Duration;

use cafe_localstack::Service;
use cafe_localstack::testing::PrivateStack;
use cafe_projections::history::{self, HistoryConfig};
use cafe_projections::postgres::orders::PgOrdersView;
use cafe_projections::{Batch, Projection, digest};

use crate::conformance::{apply_sharded, conformance, positioned};
use crate::helpers::{Counting, Paced, Stream, first_order, stack, unique};

pub async fn fresh() -> PgOrdersView {
    let cfg = stack();
    PgOrdersView::connect(&cfg.postgres_url(&cfg.names.orders_database), &unique("it"))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conforms() {
    let snapshot = conformance(fresh).await;
    let orders = snapshot.iter().filter(|l| l.starts_with("orders ")).count();
    assert_eq!(orders, HistoryConfig::default().orders);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_reads_back_with_its_lines_status_and_version_and_totals_match() {
    let view = fresh().await;
    let history = history::generate(HistoryConfig {
        orders: 30,
        ..HistoryConfig::default()
    });
    apply_sharded(&view, &history, 9).await;
    let (placed, last) = first_order(&history);
    let order = view.order(&placed.order_id).await.unwrap().unwrap();
    assert_eq!(order.version, last);
    assert_eq!(order.total_cents, placed.total_cents);
    assert_eq!(
        order.total_amount,
        format!("{}.{:02}", placed.total_cents / 100, placed.total_cents % 100)
    );
    assert_eq!(order.lines.len(), placed.lines.len());
    assert_eq!(
        order
            .lines
            .iter()
            .map(|l| l.unit_price_cents * i64::from(l.quantity))
            .sum::<i64>(),
        placed.total_cents
    );
    assert!(view.order("order-nope").await.unwrap().is_none());
}

/// PostgreSQL restarted while a worker projects: the worker retries, and the final
/// read model is exactly the one a clean run makes (nothing lost, nothing doubled).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_mid_projection_loses_and_doubles_nothing() {
    let history = history::generate(HistoryConfig::default());
    let reference = fresh().await;
    apply_sharded(&reference, &history, 1).await;
    let want = digest(&reference.snapshot().await.unwrap());

    let private = PrivateStack::start(&[Service::Postgres]).await;
    let url = private.config().postgres_url("postgres");
    let view = Arc::new(PgOrdersView::connect(&url, "restart").await.unwrap());
    let stream = Stream::with(&history).await;
    let applied = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // Paced: unpaced, a lightly loaded machine can finish the stream before the stop.
    let (stop, worker) = stream.spawn(
        view.name(),
        "w",
        Paced(Counting {
            inner: view.clone(),
            applied: applied.clone(),
        }),
    );
    cafe_localstack::testing::eventually("some events applied", Duration::from_secs(60), async || {
        applied.load(std::sync::atomic::Ordering::SeqCst) > 200
    })
    .await;
    private.stack.stop_one(Service::Postgres).await.unwrap();
    let during = applied.load(std::sync::atomic::Ordering::SeqCst);
    assert!(during < history.len(), "PostgreSQL stopped after the end");
    tokio::time::sleep(Duration::from_secs(2)).await;
    private.stack.up_only(&[Service::Postgres]).await.unwrap();
    cafe_localstack::testing::eventually(
        "the history finished after the restart",
        Duration::from_secs(90),
        async || view.snapshot().await.is_ok_and(|s| digest(&s) == want),
    )
    .await;
    stop.cancel();
    worker.await.unwrap();
}

/// New rows are loaded by COPY; a batch mixing rows that exist (a replay under another
/// shard name) with new ones makes the COPY fail, and the fallback upserts must still
/// bring in the new ones, moved forward exactly as a clean run does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_mixing_known_and_new_rows_lands_through_the_upserts() {
    let history = history::generate(HistoryConfig::default());
    let clean = fresh().await;
    clean
        .apply(Batch {
            shard_id: "all",
            events: &positioned(&history),
        })
        .await
        .unwrap();

    let mixed = fresh().await;
    let half = history.len() / 2;
    mixed
        .apply(Batch {
            shard_id: "first-half",
            events: &positioned(&history[..half]),
        })
        .await
        .unwrap();
    mixed
        .apply(Batch {
            shard_id: "replayed",
            events: &positioned(&history),
        })
        .await
        .unwrap();
    let (want, got) = (clean.snapshot().await.unwrap(), mixed.snapshot().await.unwrap());
    assert_eq!(got.len(), want.len(), "rows missing after the mixed batch");
    assert_eq!(digest(&got), digest(&want));
}
