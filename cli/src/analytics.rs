//! `cafe analytics <report>`: the warehouse reports over the facts the analytics
//! projector fills: the local `analytics` database (the PostgreSQL stand-in for
//! Redshift), or Redshift through its Data API when configured so.

use anyhow::{Context, Result};
use cafe_localstack::StackConfig;
use cafe_projections::analytics::PgWarehouse;
use cafe_projections::analytics::reports::{Reports, Window};
use cafe_projections::catalog::{AnyWarehouse, LIVE_ANALYTICS_SCHEMA, Namespace};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub struct AnalyticsArgs {
    #[command(subcommand)]
    report: Report,
    /// Print the table as JSON (`{"columns": [...], "rows": [[...]]}`).
    #[arg(long, global = true)]
    json: bool,
    /// Schema holding the facts.
    #[arg(long, global = true, default_value = cafe_projections::catalog::LIVE_ANALYTICS_SCHEMA)]
    schema: String,
    /// Reach the AWS services the SDK's default chain names instead of the local stack
    /// (with `CAFE_REDSHIFT_WORKGROUP` or `CAFE_REDSHIFT_CLUSTER`: Redshift's Data API).
    #[arg(long, global = true)]
    aws: bool,
    /// PostgreSQL URL of the warehouse (default: Redshift's Data API when
    /// `CAFE_REDSHIFT_WORKGROUP` or `CAFE_REDSHIFT_CLUSTER` is set, else the local
    /// stack's `analytics` database).
    #[arg(long, global = true, env = cafe_settings::vars::ANALYTICS_URL, hide_env_values = true)]
    url: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Report {
    /// Paid orders, units and sales per store and hour.
    SalesByStoreHour(WindowArgs),
    /// Best-selling items by units (paid orders).
    TopItems {
        #[command(flatten)]
        window: WindowArgs,
        /// How many items.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        limit: u32,
    },
    /// Customers and points per current loyalty tier.
    LoyaltyTiers,
    /// Lines, units and value per order, per store.
    BasketSize(WindowArgs),
}

#[derive(Debug, Clone, Copy, Args)]
struct WindowArgs {
    /// First instant included (RFC 3339, e.g. 2026-11-02T06:00:00Z).
    #[arg(long, value_parser = rfc3339)]
    from: Option<DateTime<Utc>>,
    /// First instant excluded (RFC 3339).
    #[arg(long, value_parser = rfc3339)]
    to: Option<DateTime<Utc>>,
}

impl From<WindowArgs> for Window {
    fn from(w: WindowArgs) -> Self {
        Window { from: w.from, to: w.to }
    }
}

/// Parses an RFC 3339 instant; clap turns the error into a usage error (exit 2).
pub fn rfc3339(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{e} (expected RFC 3339, e.g. 2026-11-02T06:00:00Z)"))
}

pub async fn run(cfg: &StackConfig, args: AnalyticsArgs) -> Result<()> {
    let warehouse = match &args.url {
        Some(url) => AnyWarehouse::Postgres(PgWarehouse::connect(url, &args.schema)?),
        // Configured like every other tool: Redshift's Data API when the environment
        // names a Redshift target, else the local stack's database.
        None => {
            let clients = crate::pipeline::Clients::new(cfg, args.aws).await;
            let ns = if args.schema == LIVE_ANALYTICS_SCHEMA {
                Namespace::Live
            } else {
                Namespace::shadow(&args.schema)?
            };
            crate::read_side::endpoints(cfg, &clients)?.warehouse(&ns, 4)?.0
        }
    };
    let reports = Reports::new(&warehouse, &args.schema)?;
    let table = match args.report {
        Report::SalesByStoreHour(w) => reports.sales_by_store_hour(w.into()).await,
        Report::TopItems { window, limit } => reports.top_items(window.into(), limit).await,
        Report::LoyaltyTiers => reports.loyalty_tiers().await,
        Report::BasketSize(w) => reports.basket_size(w.into()).await,
    }
    .with_context(|| {
        format!(
            "running the report on schema {} (filled by the analytics projector)",
            args.schema
        )
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&table)?);
    } else {
        print!("{}", table.render());
    }
    Ok(())
}
