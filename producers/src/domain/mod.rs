//! Aggregates: the consistency boundaries of the domain.
//!
//! Each aggregate is rebuilt from its own events ([`Aggregate::apply`]) and decides what
//! a command means ([`Aggregate::decide`]): either new events or a typed rejection that
//! the API reports as 422. Both are pure, so the whole rule book is tested
//! given/when/then without I/O, and the event store can retry a decision after an
//! optimistic-concurrency conflict simply by reloading and deciding again.

pub mod loyalty;
pub mod menu;
pub mod order;
pub mod stock;

use cafe_events::DomainEvent;

/// An event-sourced aggregate.
pub trait Aggregate: Default {
    /// What can be asked of it.
    type Command;
    /// Read-only facts from elsewhere that a decision needs (e.g. menu prices).
    type Context;
    /// Why a command was refused (a rule, never an I/O failure).
    type Rejection: Rule;

    /// Folds one of its own events into the state. Events of other aggregates and
    /// unknown event types leave it unchanged.
    fn apply(&mut self, event: &DomainEvent);

    /// True for a command that creates the aggregate. The service then decides against an
    /// empty state without loading it first; if the aggregate exists after all, the
    /// conditional append conflicts and the service reloads and decides again.
    fn is_creation(_command: &Self::Command) -> bool {
        false
    }

    /// Decides what a command means in the current state.
    fn decide(&self, command: &Self::Command, context: &Self::Context) -> Result<Vec<DomainEvent>, Self::Rejection>;

    /// The state after a history of events.
    fn replay<'a>(events: impl IntoIterator<Item = &'a DomainEvent>) -> Self {
        let mut state = Self::default();
        for e in events {
            state.apply(e);
        }
        state
    }
}

/// A broken business rule, as the API reports it.
pub trait Rule: std::error::Error + Send + Sync + 'static {
    /// Stable machine-readable code (the JSON error body's `error`).
    fn code(&self) -> &'static str;
    /// True when the command named an aggregate that does not exist (HTTP 404, not 422).
    fn is_not_found(&self) -> bool {
        false
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! given/when/then for aggregates.
    use super::Aggregate;
    use cafe_events::DomainEvent;

    /// Replays `history`, decides `command`, and returns the outcome.
    pub fn given_when<A: Aggregate>(
        history: &[DomainEvent],
        command: A::Command,
        context: &A::Context,
    ) -> Result<Vec<DomainEvent>, A::Rejection> {
        A::replay(history).decide(&command, context)
    }
}
