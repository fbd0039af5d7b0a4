//! The one error type of replays.

use cafe_producers::store::StoreError;
use cafe_projections::ProjectionError;
use cafe_projections::catalog::CatalogError;

/// Why a replay operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The request itself is wrong (a reversed time range, a swap of an unverified
    /// replay): nothing was written.
    #[error("{0}")]
    BadInput(String),
    /// No replay has this id.
    #[error("no replay has id {0:?} (cafe replay status lists them)")]
    Unknown(String),
    /// A read model could not be named or reached.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// A read model's store failed.
    #[error(transparent)]
    Projection(#[from] ProjectionError),
    /// The event store failed.
    #[error("event store: {0}")]
    Store(#[from] StoreError),
    /// The stream failed.
    #[error("stream: {0}")]
    Stream(String),
    /// The replays table failed or holds something unreadable.
    #[error("replays table: {0}")]
    Record(String),
}

impl ReplayError {
    /// Whether the caller asked for something that cannot be done (a CLI exits 2).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            ReplayError::BadInput(_) | ReplayError::Unknown(_) | ReplayError::Catalog(CatalogError::UnknownModel(_))
        )
    }
}
