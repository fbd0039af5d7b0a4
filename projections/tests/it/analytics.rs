//! The analytics read model: its SQL through the PostgreSQL backend (the local
//! `analytics` database), and the Redshift Data API backend's request sequences with a
//! mocked client.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_redshiftdata::Client;
use aws_sdk_redshiftdata::operation::batch_execute_statement::BatchExecuteStatementOutput;
use aws_sdk_redshiftdata::operation::describe_statement::DescribeStatementOutput;
use aws_sdk_redshiftdata::operation::execute_statement::ExecuteStatementOutput;
use aws_sdk_redshiftdata::operation::get_statement_result::GetStatementResultOutput;
use aws_sdk_redshiftdata::types::{ColumnMetadata, Field, StatusString};
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use cafe_events::proto::loyalty::v1::Tier;
use cafe_events::{DomainEvent, EventEnvelope};
use cafe_projections::analytics::reports::Window;
use cafe_projections::analytics::{
    AnalyticsFacts, DataApiOptions, DataApiTarget, DataApiWarehouse, PgWarehouse, Table, Warehouse,
};
use cafe_projections::history::{self, HistoryConfig};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};

use crate::conformance::{apply_sharded, conformance};
use crate::helpers::{stack, unique};

pub async fn fresh() -> AnalyticsFacts<PgWarehouse> {
    let cfg = stack();
    let schema = unique("it");
    let warehouse = PgWarehouse::connect(&cfg.postgres_url(&cfg.names.analytics_database), &schema).unwrap();
    AnalyticsFacts::connect(warehouse, &schema).await.unwrap()
}

fn placed(history: &[EventEnvelope]) -> Vec<(&EventEnvelope, &cafe_events::proto::orders::v1::OrderPlaced)> {
    history
        .iter()
        .filter_map(|e| match &e.event {
            DomainEvent::OrderPlaced(p) => Some((e, p)),
            _ => None,
        })
        .collect()
}

fn paid(history: &[EventEnvelope]) -> BTreeSet<String> {
    history
        .iter()
        .filter_map(|e| match &e.event {
            DomainEvent::PaymentAuthorized(p) => Some(p.order_id.clone()),
            _ => None,
        })
        .collect()
}

fn column(t: &Table, name: &str) -> Vec<String> {
    let i = t
        .column(name)
        .unwrap_or_else(|| panic!("no column {name} in {:?}", t.columns));
    t.rows.iter().map(|r| r[i].clone().unwrap_or_default()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conforms() {
    let snapshot = conformance(fresh).await;
    let history = history::generate(HistoryConfig::default());
    let lines: usize = placed(&history).iter().map(|(_, p)| p.lines.len()).sum();
    let count = |table: &str| snapshot.iter().filter(|l| l.starts_with(&format!("{table} "))).count();
    assert_eq!(count("fact_order_lines"), lines);
    assert_eq!(count("dim_store"), HistoryConfig::default().stores);
    assert_eq!(count("dim_menu_item"), HistoryConfig::default().menu_items);
    let loyalty = history
        .iter()
        .filter(|e| matches!(e.aggregate_id, cafe_events::AggregateId::LoyaltyAccount(_)))
        .count();
    assert_eq!(count("fact_loyalty"), loyalty);
}

/// The end-to-end figure: for every order, the lines in the warehouse add up to the
/// total the order was placed with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_orders_line_totals_add_up_to_its_placed_total() {
    let facts = fresh().await;
    let history = history::generate(HistoryConfig::default());
    apply_sharded(&facts, &history, 11).await;
    let sums = facts
        .warehouse()
        .query(format!(
            "SELECT order_id, SUM(line_total_cents) FROM {}.fact_order_lines GROUP BY order_id",
            facts.schema()
        ))
        .await
        .unwrap();
    let got: BTreeMap<String, i64> = sums
        .rows
        .iter()
        .map(|r| (r[0].clone().unwrap(), r[1].as_deref().unwrap().parse().unwrap()))
        .collect();
    let want: BTreeMap<String, i64> = placed(&history)
        .iter()
        .map(|(_, p)| (p.order_id.clone(), p.total_cents))
        .collect();
    assert_eq!(got.len(), HistoryConfig::default().orders);
    assert_eq!(got, want);
    // The per-order lookup the smoke run uses says the same, and nothing for a stranger.
    for (order, total) in want.iter().take(5) {
        assert_eq!(facts.reports().order_total_cents(order).await.unwrap(), Some(*total));
    }
    assert_eq!(
        facts.reports().order_total_cents("order-it's-none").await.unwrap(),
        None
    );
}

fn hour(at: DateTime<Utc>) -> String {
    at.duration_trunc(TimeDelta::hours(1))
        .unwrap()
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_match_figures_computed_from_the_history() {
    let facts = fresh().await;
    // Few customers, so some earn their way past green.
    let history = history::generate(HistoryConfig {
        customers: 16,
        ..HistoryConfig::default()
    });
    apply_sharded(&facts, &history, 21).await;
    let reports = facts.reports();
    let paid = paid(&history);
    let orders = placed(&history);

    // Sales by store and hour, in full and within a window.
    let from = history::epoch() + TimeDelta::hours(2);
    let to = from + TimeDelta::hours(3);
    for window in [
        Window::default(),
        Window {
            from: Some(from),
            to: Some(to),
        },
    ] {
        let mut want: BTreeMap<(String, String), (BTreeSet<&str>, i64, i64)> = BTreeMap::new();
        for (e, p) in &orders {
            let inside = window.from.is_none_or(|f| e.occurred_at >= f) && window.to.is_none_or(|t| e.occurred_at < t);
            if !paid.contains(&p.order_id) || !inside {
                continue;
            }
            let cell = want.entry((p.store_id.clone(), hour(e.occurred_at))).or_default();
            cell.0.insert(&p.order_id);
            for l in &p.lines {
                cell.1 += i64::from(l.quantity);
                cell.2 += l.unit_price_cents * i64::from(l.quantity);
            }
        }
        let want: Vec<Vec<Option<String>>> = want
            .into_iter()
            .map(|((store, hour), (o, units, sales))| {
                [store, hour, o.len().to_string(), units.to_string(), sales.to_string()]
                    .into_iter()
                    .map(Some)
                    .collect()
            })
            .collect();
        let got = reports.sales_by_store_hour(window).await.unwrap();
        assert_eq!(
            got.columns,
            ["store_id", "hour_start", "orders", "units", "sales_cents"]
        );
        assert!(!want.is_empty());
        assert_eq!(got.rows, want, "{window:?}");
    }

    // Top items by units sold (paid orders).
    let mut units: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    for (_, p) in orders.iter().filter(|(_, p)| paid.contains(&p.order_id)) {
        for l in &p.lines {
            let u = units.entry(&l.item_id).or_default();
            u.0 += i64::from(l.quantity);
            u.1 += l.unit_price_cents * i64::from(l.quantity);
        }
    }
    let mut ranked: Vec<(&str, (i64, i64))> = units.into_iter().collect();
    ranked.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(a.0.cmp(b.0)));
    let top = reports.top_items(Window::default(), 5).await.unwrap();
    assert_eq!(
        column(&top, "item_id"),
        ranked.iter().take(5).map(|r| r.0.to_owned()).collect::<Vec<_>>()
    );
    assert_eq!(
        column(&top, "units"),
        ranked.iter().take(5).map(|r| r.1.0.to_string()).collect::<Vec<_>>()
    );
    assert_eq!(
        column(&top, "sales_cents"),
        ranked.iter().take(5).map(|r| r.1.1.to_string()).collect::<Vec<_>>()
    );
    assert!(column(&top, "name").iter().all(|n| n.starts_with("Item ")));

    // Loyalty tiers: each customer's last tier and balance.
    let mut accounts: BTreeMap<String, (&str, i64)> = BTreeMap::new();
    for e in &history {
        match &e.event {
            DomainEvent::PointsEarned(x) => {
                accounts.entry(x.customer_id.clone()).or_insert(("green", 0)).1 = x.balance_after
            }
            DomainEvent::PointsRedeemed(x) => {
                accounts.entry(x.customer_id.clone()).or_insert(("green", 0)).1 = x.balance_after
            }
            DomainEvent::TierChanged(x) => {
                let tier = match Tier::try_from(x.to).unwrap() {
                    Tier::Gold => "gold",
                    Tier::Platinum => "platinum",
                    _ => "green",
                };
                accounts.entry(x.customer_id.clone()).or_insert(("green", 0)).0 = tier;
            }
            _ => {}
        }
    }
    let mut want = Vec::new();
    for tier in ["green", "gold", "platinum"] {
        let members: Vec<i64> = accounts.values().filter(|a| a.0 == tier).map(|a| a.1).collect();
        if !members.is_empty() {
            want.push(vec![
                Some(tier.to_owned()),
                Some(members.len().to_string()),
                Some(members.iter().sum::<i64>().to_string()),
            ]);
        }
    }
    let tiers = reports.loyalty_tiers().await.unwrap();
    assert_eq!(tiers.columns, ["tier", "customers", "points"]);
    assert!(want.len() >= 2, "{want:?}");
    assert_eq!(tiers.rows, want);

    // Basket size per store, over every placed order.
    let baskets = reports.basket_size(Window::default()).await.unwrap();
    let mut per_store: BTreeMap<&str, (usize, usize, i64, i64)> = BTreeMap::new();
    for (_, p) in &orders {
        let s = per_store.entry(&p.store_id).or_default();
        s.0 += 1;
        s.1 += p.lines.len();
        s.2 += p.lines.iter().map(|l| i64::from(l.quantity)).sum::<i64>();
        s.3 += p.total_cents;
    }
    assert_eq!(
        column(&baskets, "store_id"),
        per_store.keys().map(|s| s.to_string()).collect::<Vec<_>>()
    );
    for (row, (_, (n, lines, units, cents))) in baskets.rows.iter().zip(&per_store) {
        let n_f = *n as f64;
        // DECIMAL(_, 2) rounds half away from zero: within half a cent, plus float noise.
        let value = |c: &str| {
            row[baskets.column(c).unwrap()]
                .as_deref()
                .unwrap()
                .parse::<f64>()
                .unwrap()
        };
        assert_eq!(value("orders"), n_f);
        assert!(
            (value("lines_per_order") - *lines as f64 / n_f).abs() <= 0.0051,
            "{row:?}"
        );
        assert!(
            (value("units_per_order") - *units as f64 / n_f).abs() <= 0.0051,
            "{row:?}"
        );
        assert!(
            (value("avg_order_cents") - *cents as f64 / n_f).abs() <= 0.0051,
            "{row:?}"
        );
    }
    let total: usize = per_store.values().map(|s| s.1).sum();
    assert!(
        total > HistoryConfig::default().orders,
        "more than one line per order on average"
    );

    // The text rendering has a header, a rule and a line per row.
    assert_eq!(baskets.render().lines().count(), baskets.rows.len() + 2);
}

/// A quote in a menu item's name goes through the literal escaping and back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awkward_text_round_trips() {
    let facts = fresh().await;
    let mut history = history::generate(HistoryConfig {
        orders: 3,
        ..HistoryConfig::default()
    });
    let name = "Barista's \"special\" \\ café; DROP TABLE x; --";
    for e in &mut history {
        if let DomainEvent::MenuItemPublished(p) = &mut e.event {
            p.name = name.to_owned();
        }
    }
    apply_sharded(&facts, &history, 3).await;
    let names = facts
        .warehouse()
        .query(format!("SELECT DISTINCT name FROM {}.dim_menu_item", facts.schema()))
        .await
        .unwrap();
    assert_eq!(names.rows, vec![vec![Some(name.to_owned())]]);
}

/// Records statements instead of running them (queries answer nothing).
#[derive(Default)]
struct Recording(Mutex<Vec<Vec<String>>>);

impl Warehouse for Recording {
    fn dialect(&self) -> cafe_projections::analytics::Dialect {
        cafe_projections::analytics::Dialect::Redshift
    }

    async fn execute_batch(&self, statements: Vec<String>) -> Result<(), cafe_projections::ProjectionError> {
        self.0.lock().unwrap().push(statements);
        Ok(())
    }

    async fn query(&self, _sql: String) -> Result<Table, cafe_projections::ProjectionError> {
        Ok(Table::default())
    }
}

/// What the Data API would be sent for one large batch: one `execute_batch`, each table
/// staged, merged and dropped in that order, inserts under the statement size limit,
/// and `MERGE` in the form Redshift accepts (no target alias, both clauses).
#[tokio::test]
async fn one_batch_is_one_execute_batch_of_staged_merges_within_redshift_limits() {
    let facts = AnalyticsFacts::connect(Recording::default(), "an").await.unwrap();
    let history = history::generate(HistoryConfig {
        orders: 3_000,
        ..HistoryConfig::default()
    });
    let events: Vec<cafe_projections::Positioned> = history
        .iter()
        .enumerate()
        .map(|(n, e)| cafe_projections::Positioned {
            event: e.clone(),
            sequence: n.to_string(),
            sub: 0,
        })
        .collect();
    cafe_projections::Projection::apply(
        &facts,
        cafe_projections::Batch {
            shard_id: "s",
            events: &events,
        },
    )
    .await
    .unwrap();
    let calls = facts.warehouse().0.lock().unwrap().clone();
    assert_eq!(calls.len(), 2, "the DDL, then one call for the batch");
    let batch = &calls[1];
    assert!(batch.iter().all(|s| s.len() <= 64 * 1024), "a statement over 64 KB");
    let inserts = batch
        .iter()
        .filter(|s| s.starts_with("INSERT INTO stage_fact_order_lines"))
        .count();
    assert!(
        inserts > 1,
        "a large batch's lines split over several inserts ({inserts})"
    );
    let kinds: Vec<&str> = batch
        .iter()
        .map(|s| s.split_whitespace().next().unwrap())
        .collect::<Vec<_>>()
        .chunk_by(|a, b| a == b)
        .map(|c| c[0])
        .collect();
    assert_eq!(kinds.first(), Some(&"CREATE"));
    assert_eq!(kinds.iter().filter(|k| **k == "MERGE").count(), 6, "{kinds:?}");
    for merge in batch.iter().filter(|s| s.starts_with("MERGE")) {
        assert!(!merge.contains(" AS t "), "{merge}");
        assert!(merge.contains("WHEN MATCHED THEN UPDATE SET") && merge.contains("WHEN NOT MATCHED THEN INSERT"));
        assert!(merge.starts_with("MERGE INTO an."), "{merge}");
    }
    assert_eq!(batch.iter().filter(|s| s.starts_with("DROP TABLE stage_")).count(), 6);
}

// ---- The Redshift Data API backend, against a mocked client -------------------------
//
// moto's Data API cannot stand in here: it lacks BatchExecuteStatement, its
// DescribeStatement never leaves STARTED, and its timestamps do not parse in the Rust
// SDK. So the request sequences are checked with aws-smithy-mocks (rules consumed in
// order; any other request fails the test), and the SQL itself is tested through the
// PostgreSQL backend above.

fn options() -> DataApiOptions {
    DataApiOptions {
        poll_initial: Duration::from_millis(1),
        poll_max: Duration::from_millis(4),
        ..DataApiOptions::new(DataApiTarget::Workgroup("wg".into()), "dev")
    }
}

fn describe(id: &'static str, status: StatusString) -> aws_smithy_mocks::Rule {
    mock!(Client::describe_statement)
        .match_requests(move |r| r.id() == Some(id))
        .then_output(move || {
            DescribeStatementOutput::builder()
                .id(id)
                .status(status.clone())
                .has_result_set(true)
                .build()
                .unwrap()
        })
}

#[tokio::test]
async fn data_api_batch_polls_until_finished() {
    let sent: Arc<Mutex<Vec<Vec<String>>>> = Arc::default();
    let seen = sent.clone();
    let batch = mock!(Client::batch_execute_statement)
        .match_requests(move |r| {
            seen.lock().unwrap().push(r.sqls().to_vec());
            r.workgroup_name() == Some("wg") && r.database() == Some("dev") && r.session_id().is_none()
        })
        .then_output(|| BatchExecuteStatementOutput::builder().id("b-1").build());
    let rules = [
        batch,
        describe("b-1", StatusString::Submitted),
        describe("b-1", StatusString::Started),
        describe("b-1", StatusString::Finished),
    ];
    let client = mock_client!(aws_sdk_redshiftdata, RuleMode::Sequential, &rules);
    let w = DataApiWarehouse::new(client, options());
    let statements = vec!["CREATE TEMP TABLE s (LIKE t)".to_owned(), "DROP TABLE s".to_owned()];
    w.execute_batch(statements.clone()).await.unwrap();
    assert_eq!(*sent.lock().unwrap(), [statements]);
    assert!(rules.iter().all(|r| r.num_calls() == 1));
}

#[tokio::test]
async fn data_api_splits_a_long_batch_over_one_session() {
    let statements: Vec<String> = (0..45).map(|i| format!("SELECT {i}")).collect();
    let (first, rest) = (statements[..40].to_vec(), statements[40..].to_vec());
    let rules = [
        mock!(Client::batch_execute_statement)
            .match_requests(move |r| {
                r.sqls() == first && r.workgroup_name() == Some("wg") && r.session_keep_alive_seconds().is_some()
            })
            .then_output(|| {
                BatchExecuteStatementOutput::builder()
                    .id("b-1")
                    .session_id("sess")
                    .build()
            }),
        describe("b-1", StatusString::Finished),
        mock!(Client::batch_execute_statement)
            .match_requests(move |r| r.sqls() == rest && r.session_id() == Some("sess") && r.workgroup_name().is_none())
            .then_output(|| BatchExecuteStatementOutput::builder().id("b-2").build()),
        describe("b-2", StatusString::Picked),
        describe("b-2", StatusString::Finished),
    ];
    let client = mock_client!(aws_sdk_redshiftdata, RuleMode::Sequential, &rules);
    DataApiWarehouse::new(client, options())
        .execute_batch(statements)
        .await
        .unwrap();
    assert!(rules.iter().all(|r| r.num_calls() == 1));
}

#[tokio::test]
async fn data_api_query_follows_result_pages_in_order() {
    let page = |fields: Vec<Vec<Field>>, next: Option<&'static str>| {
        let out = GetStatementResultOutput::builder()
            .column_metadata(ColumnMetadata::builder().name("store_id").build())
            .column_metadata(ColumnMetadata::builder().name("sales_cents").build())
            .column_metadata(ColumnMetadata::builder().name("retired").build())
            .set_records(Some(fields))
            .set_next_token(next.map(str::to_owned));
        move || out.clone().build().unwrap()
    };
    let row = |store: &str, cents: i64| {
        vec![
            Field::StringValue(store.into()),
            Field::LongValue(cents),
            Field::BooleanValue(false),
        ]
    };
    let rules = [
        mock!(Client::execute_statement)
            .match_requests(|r| r.sql() == Some("SELECT 1") && r.workgroup_name() == Some("wg"))
            .then_output(|| ExecuteStatementOutput::builder().id("q-1").build()),
        describe("q-1", StatusString::Started),
        describe("q-1", StatusString::Finished),
        mock!(Client::get_statement_result)
            .match_requests(|r| r.id() == Some("q-1") && r.next_token().is_none())
            .then_output(page(vec![row("store-000", 10), row("store-001", 20)], Some("page-2"))),
        mock!(Client::get_statement_result)
            .match_requests(|r| r.id() == Some("q-1") && r.next_token() == Some("page-2"))
            .then_output(page(
                vec![vec![
                    Field::StringValue("store-002".into()),
                    Field::IsNull(true),
                    Field::BooleanValue(true),
                ]],
                None,
            )),
    ];
    let client = mock_client!(aws_sdk_redshiftdata, RuleMode::Sequential, &rules);
    let table = DataApiWarehouse::new(client, options())
        .query("SELECT 1".into())
        .await
        .unwrap();
    assert_eq!(table.columns, ["store_id", "sales_cents", "retired"]);
    let s = |v: &str| Some(v.to_owned());
    assert_eq!(
        table.rows,
        [
            vec![s("store-000"), s("10"), s("f")],
            vec![s("store-001"), s("20"), s("f")],
            vec![s("store-002"), None, s("t")],
        ]
    );
    assert!(rules.iter().all(|r| r.num_calls() == 1));
}

#[tokio::test]
async fn data_api_failed_statement_surfaces_its_message() {
    let failed = |message: &'static str| {
        mock!(Client::describe_statement).then_output(move || {
            DescribeStatementOutput::builder()
                .id("b-1")
                .status(StatusString::Failed)
                .error(message)
                .build()
                .unwrap()
        })
    };
    let batch = || {
        mock!(Client::batch_execute_statement).then_output(|| BatchExecuteStatementOutput::builder().id("b-1").build())
    };
    let rules = [
        batch(),
        failed("ERROR: syntax error at or near \"MERGEE\""),
        batch(),
        failed("ERROR: 1023 Serializable isolation violation on table - 12345"),
    ];
    let client = mock_client!(aws_sdk_redshiftdata, RuleMode::Sequential, &rules);
    let w = DataApiWarehouse::new(client, options());
    let e = w.execute_batch(vec!["MERGEE".into()]).await.unwrap_err();
    assert!(!e.is_transient(), "{e}");
    assert!(e.to_string().contains("syntax error at or near \"MERGEE\""), "{e}");
    let e = w.execute_batch(vec!["MERGE ...".into()]).await.unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(e.to_string().contains("Serializable isolation violation"), "{e}");
}
