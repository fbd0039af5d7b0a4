use cafe_localstack::Service;
use cafe_localstack::provision::{ensure_memorydb_cluster, memorydb_shards};

use crate::helpers::{stack_with, unique};

/// `CLUSTER NODES` of one node, as (port, slot ranges) of every primary it knows.
async fn primaries(url: &str) -> Vec<(u16, String)> {
    let mut con = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let nodes: String = redis::cmd("CLUSTER").arg("NODES").query_async(&mut con).await.unwrap();
    let mut out: Vec<(u16, String)> = nodes
        .lines()
        .filter(|l| l.split_whitespace().nth(2).is_some_and(|f| f.contains("master")))
        .map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            let port = fields[1].split([':', '@']).nth(1).unwrap().parse().unwrap();
            (port, fields[8..].join(" "))
        })
        .collect();
    out.sort();
    out
}

/// The MemoryDB stand-in is a formed cluster like MemoryDB: two primaries, each
/// serving its half of the slots, seen alike from both; provisioning again changes
/// nothing; the cluster client works through either node.
#[tokio::test]
async fn the_memorydb_stand_in_is_a_cluster_of_two_shards_splitting_the_slots() {
    let cfg = stack_with(Service::MemoryDb).await;
    stack_with(Service::MemoryDb2).await;
    let want: Vec<(u16, String)> = memorydb_shards(&cfg)
        .iter()
        .map(|(port, slots)| (*port, format!("{}-{}", slots.start(), slots.end())))
        .collect();
    let nodes = [
        cfg.redis_node_url(cfg.ports.memorydb),
        cfg.redis_node_url(cfg.ports.memorydb_2),
    ];
    for node in &nodes {
        assert_eq!(primaries(node).await, want, "{node}");
    }
    ensure_memorydb_cluster(&cfg).await.unwrap();
    for node in &nodes {
        assert_eq!(primaries(node).await, want, "{node} after provisioning again");
    }

    let tag = unique("it");
    for node in &nodes {
        let mut con = redis::cluster::ClusterClient::new(vec![node.as_str()])
            .unwrap()
            .get_async_connection()
            .await
            .unwrap();
        for key in ["a", "b"].map(|k| format!("{tag}:{k}:{node}")) {
            let () = redis::cmd("SET").arg(&key).arg(1).query_async(&mut con).await.unwrap();
            let got: i64 = redis::cmd("GET").arg(&key).query_async(&mut con).await.unwrap();
            assert_eq!(got, 1);
        }
    }
}
