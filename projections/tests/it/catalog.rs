//! The catalog against the real stores: every model connects in a namespace of its
//! own, copies in two namespaces never see each other's data, and drop removes a copy
//! (and refuses the live one).

use cafe_localstack::aws;
use cafe_projections::Projection;
use cafe_projections::catalog::{AnalyticsEndpoint, CatalogError, Endpoints, Namespace, ReadModel};
use cafe_projections::history::{self, HistoryConfig};

use crate::conformance::apply_sharded;
use crate::helpers::{stack, unique};

/// The test stack's stores, as the main job configures them.
pub async fn endpoints() -> Endpoints {
    let cfg = stack();
    let sdk = aws::sdk_config(&cfg).await;
    Endpoints {
        postgres_url: Some(cfg.postgres_url(&cfg.names.orders_database)),
        analytics: Some((
            AnalyticsEndpoint::Postgres(cfg.postgres_url(&cfg.names.analytics_database)),
            "analytics".to_owned(),
        )),
        mongo: Some((cfg.mongo_url(), cfg.names.documents_database.clone())),
        redis_url: Some(cfg.redis_url()),
        memorydb_url: Some(cfg.memorydb_url()),
        dynamodb: Some((aws::dynamodb(&sdk, &cfg), cfg.names.active_orders_table.clone())),
    }
}

#[tokio::test]
async fn every_model_lives_apart_in_its_namespace_and_drops_cleanly() {
    let at = endpoints().await;
    let history = history::generate(HistoryConfig {
        orders: 30,
        ..HistoryConfig::default()
    });
    let (a, b) = (
        Namespace::shadow(&unique("cat_a")).unwrap(),
        Namespace::shadow(&unique("cat_b")).unwrap(),
    );
    for model in ReadModel::ALL {
        let in_a = model.connect(&at, &a).await.unwrap();
        assert_eq!(in_a.name(), model.name());
        apply_sharded(&in_a, &history, 7).await;
        assert!(!in_a.snapshot().await.unwrap().is_empty(), "{model}: nothing written");
        let in_b = model.connect(&at, &b).await.unwrap();
        assert_eq!(
            in_b.snapshot().await.unwrap(),
            Vec::<String>::new(),
            "{model}: namespaces share data"
        );

        model.drop(&at, &a).await.unwrap();
        model.drop(&at, &a).await.unwrap();
        let again = model.connect(&at, &a).await.unwrap();
        assert_eq!(
            again.snapshot().await.unwrap(),
            Vec::<String>::new(),
            "{model}: drop left data"
        );
        model.drop(&at, &a).await.unwrap();
        model.drop(&at, &b).await.unwrap();
        assert!(matches!(model.drop(&at, &Namespace::Live).await, Err(CatalogError::Live(m)) if m == model));
    }
}

#[tokio::test]
async fn a_model_whose_store_is_not_configured_is_refused_by_name() {
    let err = ReadModel::Orders
        .connect(&Endpoints::default(), &Namespace::Live)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("orders read model needs a PostgreSQL URL"),
        "{err}"
    );
}
