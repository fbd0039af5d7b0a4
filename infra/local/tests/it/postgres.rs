use cafe_localstack::{Service, config::StackConfig};

use crate::helpers::{stack_with, unique};

async fn connect(cfg: &StackConfig, db: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&cfg.postgres_url(db), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

#[tokio::test]
async fn both_databases_take_writes_and_read_them_back() {
    let cfg = stack_with(Service::Postgres).await;
    for db in [&cfg.names.orders_database, &cfg.names.analytics_database] {
        let client = connect(&cfg, db).await;
        let schema = unique("it").replace('-', "_");
        client
            .batch_execute(&format!(
                "CREATE SCHEMA {schema};
                 CREATE TABLE {schema}.orders (order_id text PRIMARY KEY, total_cents bigint NOT NULL, version bigint NOT NULL);"
            ))
            .await
            .unwrap();
        // A version-guarded upsert, the shape every projector uses.
        let upsert = format!(
            "INSERT INTO {schema}.orders VALUES ($1, $2, $3)
             ON CONFLICT (order_id) DO UPDATE SET total_cents = EXCLUDED.total_cents, version = EXCLUDED.version
             WHERE {schema}.orders.version < EXCLUDED.version"
        );
        client.execute(&upsert, &[&"o-1", &1425i64, &2i64]).await.unwrap();
        let stale = client.execute(&upsert, &[&"o-1", &1i64, &1i64]).await.unwrap();
        assert_eq!(stale, 0, "an older version must not overwrite a newer one");
        let row = client
            .query_one(
                &format!("SELECT total_cents FROM {schema}.orders WHERE order_id = $1"),
                &[&"o-1"],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, i64>(0), 1425);
        client
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .await
            .unwrap();
    }
}
