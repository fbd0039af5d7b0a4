//! The query storm: the reports run on the live facts beside a replay, with slot waits
//! measured, and the replay's shadows are dropped afterwards.

use cafe_projections::catalog::ReadModel;
use cafe_replay::ReplayError;
use cafe_replay::record::State;
use cafe_replay::storm::{REPORTS, Storm};
use tokio_util::sync::CancellationToken;

use crate::helpers::{params, world};

#[tokio::test]
async fn a_storm_runs_every_report_beside_a_replay_then_drops_its_shadows() {
    let w = world(60).await;
    let storm = Storm {
        clients: 6,
        slots: 2,
        keep: false,
    };
    // Paced so that the clients get many turns while it runs.
    let report = w
        .replayer
        .storm(
            storm,
            params(&[ReadModel::Analytics], Some(400)),
            None,
            CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(report.errors, 0, "{:?}", report.first_error);
    assert!(report.replay_finished);
    assert_eq!(report.events_applied as usize, w.history.len());
    assert!(report.queries >= 2 * storm.clients, "{report:?}");
    assert_eq!(report.by_report.len(), REPORTS.len(), "every report ran");
    // Six closed-loop clients on two slots: a query waits about twice as long for its
    // slot as it runs, and the wait is part of its latency.
    let (wait, run) = (
        report.queue_wait.p50_ms,
        report.latency.p50_ms - report.queue_wait.p50_ms,
    );
    assert!(wait > run / 2.0, "wait {wait} ms, run {run} ms: {report:?}");
    assert!(report.dropped);
    let (meta, _) = w.replayer.status(&report.replay).await.unwrap();
    assert_eq!(meta.state, State::Dropped);
    assert!(
        ReadModel::Analytics.connect(&w.at, &w.live).await.is_ok(),
        "the live facts are untouched"
    );
    w.drop_all(&report.replay.namespace()).await;
}

#[tokio::test]
async fn a_storm_without_clients_or_slots_is_refused_and_writes_nothing() {
    let w = world(5).await;
    for (clients, slots) in [(0, 2), (3, 0)] {
        let err = w
            .replayer
            .storm(
                Storm {
                    clients,
                    slots,
                    keep: false,
                },
                params(&[ReadModel::Analytics], None),
                None,
                CancellationToken::new(),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, ReplayError::BadInput(_)), "{err}");
    }
    assert!(w.replays.list().await.unwrap().is_empty(), "no replay was recorded");
    w.drop_all(&w.live).await;
}
