//! The one list of read models, and where each lives.
//!
//! A read model is one [`Projection`] in one store. The main job runs all of them, the
//! projector Lambda hosts one, the benchmarks build throw-away copies, and the replay
//! tool builds *shadow* copies beside the live ones and swaps them in. All of them name
//! models through [`ReadModel`] and places through [`Namespace`], so a new read model is
//! added here once and every tool knows it.
//!
//! A namespace is what isolates copies of a model inside one store:
//!
//! | Model | Store | Live | Namespace `ns` |
//! |---|---|---|---|
//! | `orders` | Aurora PostgreSQL | schema `public` | schema `ns` |
//! | `active_orders` | DynamoDB | the configured table | table `<table>-ns` (created like the live one) |
//! | `documents` | DocumentDB | the configured database | database `<database>_ns` |
//! | `cache` | ElastiCache | key prefix `cache:` | key prefix `ns:cache:` |
//! | `inventory` | MemoryDB | no key prefix | key prefix `ns:` |
//! | `analytics` | Redshift | the configured schema (`analytics`) | schema `ns` |

use std::fmt;
use std::str::FromStr;

use aws_sdk_dynamodb::Client as DynamoClient;
use cafe_events::AggregateId;

use crate::active_orders::DynamoActiveOrders;
use crate::analytics::{AnalyticsFacts, DataApiWarehouse, Dialect, PgWarehouse, Table, Warehouse};
use crate::cache::RedisCache;
use crate::documents::MongoDocuments;
use crate::error::ProjectionError;
use crate::inventory::RedisInventory;
use crate::postgres::orders::PgOrdersView;
use crate::projector::{Batch, Projection};
use crate::verify::{BucketDigest, Buckets, Row, Verifiable};

/// Schema of the live Aurora read model (the seed's tables live in the default schema).
pub const LIVE_ORDERS_SCHEMA: &str = "public";
/// Key prefix of the live ElastiCache role. The MemoryDB role needs none: one local
/// Redis plays both, and the inventory's own keys already start with `inventory:`.
pub const LIVE_CACHE_PREFIX: &str = "cache:";
/// Schema of the live analytics facts unless configured otherwise (what `cafe
/// analytics` reads by default).
pub const LIVE_ANALYTICS_SCHEMA: &str = "analytics";

/// A read model: one projection in one store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ReadModel {
    /// Orders, order items, loyalty accounts and ledger (Aurora PostgreSQL).
    Orders,
    /// Orders in flight, by customer (DynamoDB).
    ActiveOrders,
    /// Menu items and order documents (DocumentDB).
    Documents,
    /// Menu items and loyalty balances written through (ElastiCache).
    Cache,
    /// On-hand stock per store and SKU (MemoryDB).
    Inventory,
    /// Facts and dimensions (Redshift).
    Analytics,
}

impl ReadModel {
    /// Every read model, in the order tools list them.
    pub const ALL: [ReadModel; 6] = [
        ReadModel::Orders,
        ReadModel::ActiveOrders,
        ReadModel::Documents,
        ReadModel::Cache,
        ReadModel::Inventory,
        ReadModel::Analytics,
    ];

    /// The name operators type, which is also the projection's name: its consumer
    /// application (leases, checkpoints) and its metrics label.
    pub fn name(self) -> &'static str {
        match self {
            ReadModel::Orders => "orders",
            ReadModel::ActiveOrders => "active_orders",
            ReadModel::Documents => "documents",
            ReadModel::Cache => "cache",
            ReadModel::Inventory => "inventory",
            ReadModel::Analytics => "analytics",
        }
    }

    /// The store it lives in, for messages.
    pub fn store(self) -> &'static str {
        match self {
            ReadModel::Orders => "postgresql",
            ReadModel::ActiveOrders => "dynamodb",
            ReadModel::Documents => "documentdb",
            ReadModel::Cache => "elasticache",
            ReadModel::Inventory => "memorydb",
            ReadModel::Analytics => "redshift",
        }
    }

    /// Whether events of `aggregate` change this model (the others it skips).
    pub fn consumes(self, aggregate: &AggregateId) -> bool {
        use AggregateId as A;
        match self {
            ReadModel::Orders => matches!(aggregate, A::Order(_) | A::LoyaltyAccount(_)),
            ReadModel::ActiveOrders => matches!(aggregate, A::Order(_)),
            ReadModel::Documents => matches!(aggregate, A::MenuItem(_) | A::Order(_)),
            ReadModel::Cache => matches!(aggregate, A::MenuItem(_) | A::LoyaltyAccount(_)),
            ReadModel::Inventory => matches!(aggregate, A::StockItem(..)),
            ReadModel::Analytics => true,
        }
    }

    /// Connects to this model's copy in `ns` (creating its schema, table or indexes if
    /// needed; the data is whatever the copy holds).
    pub async fn connect(self, at: &Endpoints, ns: &Namespace) -> Result<AnyProjection, CatalogError> {
        Ok(match self {
            ReadModel::Orders => AnyProjection::Orders(at.orders(ns).await?),
            ReadModel::ActiveOrders => AnyProjection::ActiveOrders(at.active_orders(ns).await?),
            ReadModel::Documents => AnyProjection::Documents(at.documents(ns).await?),
            ReadModel::Cache => AnyProjection::Cache(at.cache(ns).await?),
            ReadModel::Inventory => AnyProjection::Inventory(at.inventory(ns).await?),
            ReadModel::Analytics => AnyProjection::Analytics(at.analytics(ns).await?),
        })
    }

    /// Deletes this model's copy in `ns` with all its data. The live copy is refused:
    /// nothing in this code base drops a live read model by accident.
    pub async fn drop(self, at: &Endpoints, ns: &Namespace) -> Result<(), CatalogError> {
        if *ns == Namespace::Live {
            return Err(CatalogError::Live(self));
        }
        self.delete_copy(at, ns).await
    }

    /// Deletes the copy under the base names (the one [`Namespace::Live`] names). Only
    /// for a model whose serving pointer has moved to another copy: a replay's drop
    /// after its swap checks that first.
    pub async fn drop_base(self, at: &Endpoints) -> Result<(), CatalogError> {
        self.delete_copy(at, &Namespace::Live).await
    }

    async fn delete_copy(self, at: &Endpoints, ns: &Namespace) -> Result<(), CatalogError> {
        match self {
            ReadModel::Orders => {
                let schema = match ns {
                    Namespace::Live => LIVE_ORDERS_SCHEMA,
                    Namespace::Shadow(name) => name,
                };
                at.orders(ns)
                    .await?
                    .pool()
                    .get()
                    .await
                    .map_err(ProjectionError::from)?
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                    .await
                    .map_err(ProjectionError::from)?;
            }
            ReadModel::ActiveOrders => {
                let (client, table) = at.active_orders_table(ns)?;
                DynamoActiveOrders::delete_table(client, &table).await?;
            }
            ReadModel::Documents => at.documents(ns).await?.drop_database().await?,
            ReadModel::Cache => {
                at.cache(ns).await?.delete_all().await?;
            }
            ReadModel::Inventory => at.inventory(ns).await?.delete_all().await?,
            ReadModel::Analytics => {
                let facts = at.analytics(ns).await?;
                let schema = facts.schema().to_owned();
                facts
                    .warehouse()
                    .execute_batch(vec![format!("DROP SCHEMA IF EXISTS {schema} CASCADE")])
                    .await?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for ReadModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ReadModel {
    type Err = CatalogError;

    /// A name, with `-` read as `_` (`active-orders` is how people type it).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.replace('-', "_");
        ReadModel::ALL
            .into_iter()
            .find(|m| m.name() == wanted)
            .ok_or_else(|| CatalogError::UnknownModel(s.to_owned()))
    }
}

/// Which copy of a read model.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Namespace {
    /// The one the live projectors write and the queries read.
    Live,
    /// A copy of its own: a replay's shadow, a benchmark's scratch copy.
    Shadow(String),
}

impl Namespace {
    /// A shadow namespace. Its name is spliced into schema, table, database and key
    /// names, so only `[a-z][a-z0-9_]*` of at most 40 characters is accepted (every
    /// store's naming rules admit it, with room for the suffixes added to it).
    pub fn shadow(name: &str) -> Result<Namespace, CatalogError> {
        let ok = (1..=40).contains(&name.len())
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if ok {
            Ok(Namespace::Shadow(name.to_owned()))
        } else {
            Err(CatalogError::Namespace(name.to_owned()))
        }
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Namespace::Live => f.write_str("live"),
            Namespace::Shadow(name) => f.write_str(name),
        }
    }
}

/// Where the analytics facts live.
#[derive(Debug, Clone)]
pub enum AnalyticsEndpoint {
    /// A PostgreSQL-wire warehouse (the local stand-in for Redshift) at this URL.
    Postgres(String),
    /// Redshift through its Data API (HTTPS: no VPC attachment, no pool).
    DataApi(aws_sdk_redshiftdata::Client, crate::analytics::DataApiOptions),
}

/// How to reach each store. A tool sets what the models it uses need; a model whose
/// store is not set is refused by name at connect.
#[derive(Debug, Clone, Default)]
pub struct Endpoints {
    /// The Aurora database of the orders model.
    pub postgres_url: Option<String>,
    /// The warehouse, and the live model's schema on it.
    pub analytics: Option<(AnalyticsEndpoint, String)>,
    /// The DocumentDB cluster, and the live model's database on it.
    pub mongo: Option<(String, String)>,
    /// The cache's Redis (ElastiCache in AWS).
    pub redis_url: Option<String>,
    /// The inventory's Redis (MemoryDB in AWS: durable, as stock counts must be; the
    /// same server as the cache's locally).
    pub memorydb_url: Option<String>,
    /// DynamoDB, and the live active-orders table.
    pub dynamodb: Option<(DynamoClient, String)>,
}

fn need<'a, T>(v: &'a Option<T>, model: ReadModel, what: &'static str) -> Result<&'a T, CatalogError> {
    v.as_ref().ok_or(CatalogError::Unconfigured { model, what })
}

impl Endpoints {
    /// The orders model in `ns` (migrated).
    pub async fn orders(&self, ns: &Namespace) -> Result<PgOrdersView, CatalogError> {
        let url = need(&self.postgres_url, ReadModel::Orders, "a PostgreSQL URL")?;
        let schema = match ns {
            Namespace::Live => LIVE_ORDERS_SCHEMA,
            Namespace::Shadow(name) => name,
        };
        Ok(PgOrdersView::connect(url, schema).await?)
    }

    fn active_orders_table(&self, ns: &Namespace) -> Result<(&DynamoClient, String), CatalogError> {
        let (client, live) = need(&self.dynamodb, ReadModel::ActiveOrders, "a DynamoDB table")?;
        Ok(match ns {
            Namespace::Live => (client, live.clone()),
            Namespace::Shadow(name) => (client, format!("{live}-{name}")),
        })
    }

    /// The active-orders model in `ns`; a shadow's table is created like the live one.
    pub async fn active_orders(&self, ns: &Namespace) -> Result<DynamoActiveOrders, CatalogError> {
        let (client, table) = self.active_orders_table(ns)?;
        if let (Namespace::Shadow(_), Some((_, live))) = (ns, &self.dynamodb) {
            DynamoActiveOrders::create_table_like(client, live, &table).await?;
        }
        Ok(DynamoActiveOrders::new(client.clone(), table))
    }

    /// The documents model in `ns`.
    pub async fn documents(&self, ns: &Namespace) -> Result<MongoDocuments, CatalogError> {
        let (url, live) = need(&self.mongo, ReadModel::Documents, "a MongoDB URL")?;
        let database = match ns {
            Namespace::Live => live.clone(),
            Namespace::Shadow(name) => format!("{live}_{name}"),
        };
        Ok(MongoDocuments::connect(url, &database).await?)
    }

    /// The cache in `ns`.
    pub async fn cache(&self, ns: &Namespace) -> Result<RedisCache, CatalogError> {
        let url = need(&self.redis_url, ReadModel::Cache, "a Redis URL")?;
        let prefix = match ns {
            Namespace::Live => LIVE_CACHE_PREFIX.to_owned(),
            Namespace::Shadow(name) => format!("{name}:{LIVE_CACHE_PREFIX}"),
        };
        Ok(RedisCache::connect(url, &prefix).await?)
    }

    /// The inventory in `ns`.
    pub async fn inventory(&self, ns: &Namespace) -> Result<RedisInventory, CatalogError> {
        let url = need(&self.memorydb_url, ReadModel::Inventory, "a MemoryDB (Redis) URL")?;
        let prefix = match ns {
            Namespace::Live => String::new(),
            Namespace::Shadow(name) => format!("{name}:"),
        };
        Ok(RedisInventory::connect(url, &prefix).await?)
    }

    /// The analytics facts in `ns` (tables created if needed).
    pub async fn analytics(&self, ns: &Namespace) -> Result<AnalyticsFacts<AnyWarehouse>, CatalogError> {
        let (warehouse, schema) = self.warehouse(ns, 4)?;
        Ok(AnalyticsFacts::connect(warehouse, &schema).await?)
    }

    /// The warehouse holding the analytics facts in `ns`, and their schema: what the
    /// reports read. `connections` bounds concurrent queries on the PostgreSQL wire
    /// (the Data API has no pool: Redshift queues beyond its own slots).
    pub fn warehouse(&self, ns: &Namespace, connections: usize) -> Result<(AnyWarehouse, String), CatalogError> {
        let (endpoint, live) = need(&self.analytics, ReadModel::Analytics, "a warehouse")?;
        let schema = match ns {
            Namespace::Live => live,
            Namespace::Shadow(name) => name,
        };
        let warehouse = match endpoint {
            AnalyticsEndpoint::Postgres(url) => {
                AnyWarehouse::Postgres(PgWarehouse::with_connections(url, schema, connections)?)
            }
            AnalyticsEndpoint::DataApi(client, options) => {
                AnyWarehouse::DataApi(DataApiWarehouse::new(client.clone(), options.clone()))
            }
        };
        Ok((warehouse, schema.clone()))
    }
}

/// Why a read model could not be named or reached.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// Not one of [`ReadModel::ALL`].
    #[error(
        "no read model is called {0:?}; the read models are orders, active_orders, documents, cache, inventory, analytics"
    )]
    UnknownModel(String),
    /// A namespace name the stores cannot all take.
    #[error("namespace {0:?} must match [a-z][a-z0-9_]* and be at most 40 characters")]
    Namespace(String),
    /// The tool did not configure the model's store.
    #[error("the {model} read model needs {what}, and none is configured")]
    Unconfigured {
        /// The model.
        model: ReadModel,
        /// What is missing.
        what: &'static str,
    },
    /// A request to drop a live model.
    #[error("refusing to drop the live {0} read model")]
    Live(ReadModel),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] ProjectionError),
}

/// The analytics warehouse either adapter serves: chosen by configuration, not by a code
/// path of its own.
#[derive(Debug, Clone)]
pub enum AnyWarehouse {
    /// PostgreSQL wire.
    Postgres(PgWarehouse),
    /// Redshift Data API.
    DataApi(DataApiWarehouse),
}

impl Warehouse for AnyWarehouse {
    fn dialect(&self) -> Dialect {
        match self {
            AnyWarehouse::Postgres(w) => w.dialect(),
            AnyWarehouse::DataApi(w) => w.dialect(),
        }
    }

    async fn execute_batch(&self, statements: Vec<String>) -> Result<(), ProjectionError> {
        match self {
            AnyWarehouse::Postgres(w) => w.execute_batch(statements).await,
            AnyWarehouse::DataApi(w) => w.execute_batch(statements).await,
        }
    }

    async fn query(&self, sql: String) -> Result<Table, ProjectionError> {
        match self {
            AnyWarehouse::Postgres(w) => w.query(sql).await,
            AnyWarehouse::DataApi(w) => w.query(sql).await,
        }
    }
}

/// Any read model, connected: what tools that handle models by name run.
#[derive(Debug, Clone)]
pub enum AnyProjection {
    /// [`ReadModel::Orders`].
    Orders(PgOrdersView),
    /// [`ReadModel::ActiveOrders`].
    ActiveOrders(DynamoActiveOrders),
    /// [`ReadModel::Documents`].
    Documents(MongoDocuments),
    /// [`ReadModel::Cache`].
    Cache(RedisCache),
    /// [`ReadModel::Inventory`].
    Inventory(RedisInventory),
    /// [`ReadModel::Analytics`].
    Analytics(AnalyticsFacts<AnyWarehouse>),
}

/// Runs `$body` with `$p` bound to the model inside, whatever it is.
macro_rules! each {
    ($self:expr, $p:ident => $body:expr) => {
        match $self {
            AnyProjection::Orders($p) => $body,
            AnyProjection::ActiveOrders($p) => $body,
            AnyProjection::Documents($p) => $body,
            AnyProjection::Cache($p) => $body,
            AnyProjection::Inventory($p) => $body,
            AnyProjection::Analytics($p) => $body,
        }
    };
}

impl AnyProjection {
    /// Which model this is.
    pub fn model(&self) -> ReadModel {
        match self {
            AnyProjection::Orders(_) => ReadModel::Orders,
            AnyProjection::ActiveOrders(_) => ReadModel::ActiveOrders,
            AnyProjection::Documents(_) => ReadModel::Documents,
            AnyProjection::Cache(_) => ReadModel::Cache,
            AnyProjection::Inventory(_) => ReadModel::Inventory,
            AnyProjection::Analytics(_) => ReadModel::Analytics,
        }
    }
}

impl Projection for AnyProjection {
    fn name(&self) -> &'static str {
        each!(self, p => p.name())
    }

    async fn apply(&self, batch: Batch<'_>) -> Result<(), ProjectionError> {
        each!(self, p => p.apply(batch).await)
    }

    async fn snapshot(&self) -> Result<Vec<String>, ProjectionError> {
        each!(self, p => p.snapshot().await)
    }
}

impl Verifiable for AnyProjection {
    async fn digests(&self, buckets: Buckets) -> Result<Vec<BucketDigest>, ProjectionError> {
        each!(self, p => p.digests(buckets).await)
    }

    async fn rows(&self, buckets: Buckets, which: &[u32]) -> Result<Vec<Row>, ProjectionError> {
        each!(self, p => p.rows(buckets, which).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_model_is_found_by_its_name_and_only_by_it() {
        for m in ReadModel::ALL {
            assert_eq!(m.name().parse::<ReadModel>().ok(), Some(m));
        }
        assert_eq!("active-orders".parse::<ReadModel>().ok(), Some(ReadModel::ActiveOrders));
        let err = "order".parse::<ReadModel>().unwrap_err();
        assert!(err.to_string().contains("\"order\""), "{err}");
        assert!(err.to_string().contains("active_orders"), "{err}");
    }

    #[test]
    fn shadow_names_are_checked_before_they_reach_a_store() {
        assert!(Namespace::shadow("replay_0a1b").is_ok());
        for bad in ["", "Replay", "1x", "a-b", "a;drop", &"a".repeat(41)] {
            assert!(Namespace::shadow(bad).is_err(), "{bad:?}");
        }
    }
}
