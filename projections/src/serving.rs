//! Which copy of each read model is the live one, and the projectors and queries that
//! follow it without a restart.
//!
//! A swap (`cafe replay swap`) makes a replay's shadow the serving copy of a model by
//! writing one pointer item: `Namespace::Shadow(name)` instead of the model's base
//! names. No store renames anything, so a swap is one atomic write whatever the store,
//! and the old copy stays where it was until it is dropped.
//!
//! [`Following`] is the projection the live projector workers run: it looks at the
//! pointer at most every [`FOLLOW_EVERY`] and, when it moved, connects the new copy and
//! writes there. [`ServingReads`] does the same for the query endpoints. Both answer a
//! transient error when the pointer cannot be read, so a projector retries its batch
//! and a query answers 503.
//!
//! Pointer items live in the replays table: `replay_id = "serving"`, `part = <model>`,
//! `namespace = <shadow name>`; no item means the base names.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use tokio::sync::Mutex;

use crate::catalog::{AnyProjection, CatalogError, Endpoints, Namespace, ReadModel};
use crate::error::ProjectionError;
use crate::projector::{Batch, Projection};
use crate::query::ReadModels;

/// How often a follower looks at the pointers: the longest a swap takes to reach every
/// projector and query endpoint (a swap waits longer than this before its final
/// catch-up).
pub const FOLLOW_EVERY: Duration = Duration::from_secs(1);

const POINTER_ID: &str = "serving";

/// The serving pointers.
#[derive(Debug, Clone)]
pub struct Pointers {
    client: Client,
    table: String,
}

fn dynamo(op: &str, e: impl std::fmt::Display) -> ProjectionError {
    ProjectionError::transient("dynamodb", format!("{op} (serving pointer): {e}"))
}

impl Pointers {
    /// Over the replays table.
    pub fn new(client: Client, table: impl Into<String>) -> Pointers {
        Pointers {
            client,
            table: table.into(),
        }
    }

    /// The copy of `model` that serves.
    pub async fn get(&self, model: ReadModel) -> Result<Namespace, ProjectionError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("replay_id", AttributeValue::S(POINTER_ID.to_owned()))
            .key("part", AttributeValue::S(model.name().to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| dynamo("GetItem", aws_sdk_dynamodb::error::DisplayErrorContext(e)))?;
        let name = out
            .item
            .as_ref()
            .and_then(|i| i.get("namespace"))
            .and_then(|v| v.as_s().ok());
        Ok(match name {
            Some(name) => Namespace::shadow(name).map_err(|e| ProjectionError::poison("dynamodb", e))?,
            None => Namespace::Live,
        })
    }

    /// Makes `ns` the serving copy of `model` (one write: atomic).
    pub async fn set(&self, model: ReadModel, ns: &Namespace) -> Result<(), ProjectionError> {
        let key = |v: &str| AttributeValue::S(v.to_owned());
        match ns {
            Namespace::Live => self
                .client
                .delete_item()
                .table_name(&self.table)
                .key("replay_id", key(POINTER_ID))
                .key("part", key(model.name()))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| dynamo("DeleteItem", aws_sdk_dynamodb::error::DisplayErrorContext(e))),
            Namespace::Shadow(name) => self
                .client
                .put_item()
                .table_name(&self.table)
                .item("replay_id", key(POINTER_ID))
                .item("part", key(model.name()))
                .item("namespace", key(name))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| dynamo("PutItem", aws_sdk_dynamodb::error::DisplayErrorContext(e))),
        }
    }
}

/// Where the live copies are: fixed (tests, a tool that must not follow), or wherever
/// the pointers say.
#[derive(Debug, Clone)]
pub enum LiveSide {
    /// Always this namespace.
    Fixed(Namespace),
    /// The serving pointers.
    Serving(Pointers),
}

impl LiveSide {
    /// The live copy of `model` now.
    pub async fn namespace(&self, model: ReadModel) -> Result<Namespace, ProjectionError> {
        match self {
            LiveSide::Fixed(ns) => Ok(ns.clone()),
            LiveSide::Serving(p) => p.get(model).await,
        }
    }
}

struct Followed<T> {
    checked: Instant,
    namespaces: BTreeMap<ReadModel, Namespace>,
    current: T,
}

/// A live projection that follows its model's serving pointer.
pub struct Following {
    model: ReadModel,
    at: Endpoints,
    live: LiveSide,
    state: Mutex<Followed<AnyProjection>>,
}

impl std::fmt::Debug for Following {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Following")
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

impl Following {
    /// Connects `model`'s serving copy.
    pub async fn connect(model: ReadModel, at: Endpoints, live: LiveSide) -> Result<Following, CatalogError> {
        let ns = live.namespace(model).await?;
        let current = model.connect(&at, &ns).await?;
        Ok(Following {
            model,
            at,
            live,
            state: Mutex::new(Followed {
                checked: Instant::now(),
                namespaces: BTreeMap::from([(model, ns)]),
                current,
            }),
        })
    }

    /// The serving copy, looking at the pointer if it is due.
    pub async fn current(&self) -> Result<AnyProjection, ProjectionError> {
        let mut state = self.state.lock().await;
        if state.checked.elapsed() >= FOLLOW_EVERY {
            let ns = self.live.namespace(self.model).await?;
            if state.namespaces.get(&self.model) != Some(&ns) {
                let next = self.model.connect(&self.at, &ns).await.map_err(to_projection)?;
                tracing::info!(model = %self.model, namespace = %ns, "following the serving pointer to a new copy");
                state.current = next;
                state.namespaces.insert(self.model, ns);
            }
            state.checked = Instant::now();
        }
        Ok(state.current.clone())
    }
}

fn to_projection(e: CatalogError) -> ProjectionError {
    match e {
        CatalogError::Store(e) => e,
        other => ProjectionError::poison("catalog", other),
    }
}

impl Projection for Following {
    fn name(&self) -> &'static str {
        self.model.name()
    }

    async fn apply(&self, batch: Batch<'_>) -> Result<(), ProjectionError> {
        self.current().await?.apply(batch).await
    }

    async fn snapshot(&self) -> Result<Vec<String>, ProjectionError> {
        self.current().await?.snapshot().await
    }
}

/// The query endpoints' read models, following the serving pointers.
pub struct ServingReads {
    at: Endpoints,
    live: LiveSide,
    wait: Duration,
    state: Mutex<Followed<Arc<ReadModels>>>,
}

impl std::fmt::Debug for ServingReads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServingReads").finish_non_exhaustive()
    }
}

/// The models the query endpoints read.
const QUERIED: [ReadModel; 5] = [
    ReadModel::Orders,
    ReadModel::ActiveOrders,
    ReadModel::Documents,
    ReadModel::Cache,
    ReadModel::Inventory,
];

impl ServingReads {
    /// Connects the serving copies; `min_version` waits last at most `wait`.
    pub async fn connect(at: Endpoints, live: LiveSide, wait: Duration) -> Result<ServingReads, CatalogError> {
        let namespaces = namespaces(&live).await?;
        let current = Arc::new(ReadModels::connect(&at, &namespaces, wait).await?);
        Ok(ServingReads {
            at,
            live,
            wait,
            state: Mutex::new(Followed {
                checked: Instant::now(),
                namespaces,
                current,
            }),
        })
    }

    /// The read models to answer from, looking at the pointers if it is due.
    pub async fn current(&self) -> Result<Arc<ReadModels>, ProjectionError> {
        let mut state = self.state.lock().await;
        if state.checked.elapsed() >= FOLLOW_EVERY {
            let namespaces = namespaces(&self.live).await.map_err(to_projection)?;
            if namespaces != state.namespaces {
                let next = ReadModels::connect(&self.at, &namespaces, self.wait)
                    .await
                    .map_err(to_projection)?;
                tracing::info!(?namespaces, "queries follow the serving pointers to new copies");
                state.current = Arc::new(next);
                state.namespaces = namespaces;
            }
            state.checked = Instant::now();
        }
        Ok(state.current.clone())
    }
}

async fn namespaces(live: &LiveSide) -> Result<BTreeMap<ReadModel, Namespace>, CatalogError> {
    let mut out = BTreeMap::new();
    for model in QUERIED {
        out.insert(model, live.namespace(model).await?);
    }
    Ok(out)
}
