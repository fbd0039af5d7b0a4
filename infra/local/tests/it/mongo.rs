use cafe_localstack::Service;
use mongodb::bson::{Bson, Document, doc};

use crate::helpers::{stack_with, unique};

// nx-27017 accepts only letters, digits and underscores in collection names (DocumentDB
// and MongoDB accept more); our collection names keep to that subset.

#[tokio::test]
async fn insert_find_update_with_the_official_driver() {
    let cfg = stack_with(Service::Mongo).await;
    let client = mongodb::Client::with_uri_str(cfg.mongo_url()).await.unwrap();
    let coll = client
        .database(&cfg.names.documents_database)
        .collection::<Document>(&unique("it_menu").replace('-', "_"));

    coll.insert_many([
        doc! { "_id": "latte", "category": "espresso", "price_cents": 525_i64, "version": 1_i64 },
        doc! { "_id": "muffin", "category": "bakery", "price_cents": 300_i64, "version": 1_i64 },
    ])
    .await
    .unwrap();
    let found = coll.find_one(doc! { "category": "espresso" }).await.unwrap().unwrap();
    assert_eq!(found.get_str("_id").unwrap(), "latte");

    // Version-guarded update: only a newer version applies.
    let newer = coll
        .update_one(
            doc! { "_id": "latte", "version": { "$lt": 2_i64 } },
            doc! { "$set": { "price_cents": 550_i64, "version": 2_i64 } },
        )
        .await
        .unwrap();
    let stale = coll
        .update_one(
            doc! { "_id": "latte", "version": { "$lt": 1_i64 } },
            doc! { "$set": { "price_cents": 1_i64 } },
        )
        .await
        .unwrap();
    assert_eq!((newer.modified_count, stale.modified_count), (1, 0));
    let latte = coll.find_one(doc! { "_id": "latte" }).await.unwrap().unwrap();
    assert_eq!(int(&latte, "price_cents"), 550);
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 2);
    coll.drop().await.unwrap();
}

/// nx-27017 keeps numbers in SQLite and hands small ones back as int32 even when they
/// were written as int64; serde-typed reads accept both, and so does this check.
fn int(doc: &Document, key: &str) -> i64 {
    match doc.get(key) {
        Some(Bson::Int64(v)) => *v,
        Some(Bson::Int32(v)) => i64::from(*v),
        other => panic!("{key} is {other:?}"),
    }
}
