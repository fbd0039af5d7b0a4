//! Workers against stores that encrypt in transit, as Aurora (`sslmode=require`, with
//! `rds.force_ssl`), ElastiCache and MemoryDB (`rediss://`) and DocumentDB (`tls=true`)
//! do in AWS: real PostgreSQL and Redis servers with TLS on (Redis also as a cluster),
//! and a TLS front for the MongoDB-wire stand-in, which has no TLS of its own; their
//! certificates come from a CA this test makes, which the worker trusts through
//! `SSL_CERT_FILE` or the URL's `tlsCAFile` (as the image trusts the RDS root). Without
//! that trust the worker must refuse the server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cafe_localstack::testing::{eventually, put_raw};
use cafe_localstack::{StackConfig, aws, provision};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A server process, stopped with the test.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A CA, and a certificate it signed for 127.0.0.1 and localhost.
struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    fn new() -> Certs {
        let dir = tempfile::tempdir().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name.push(rcgen::DnType::CommonName, "cafe test CA");
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let server = rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        let server_key = rcgen::KeyPair::generate().unwrap();
        let server_cert = server.signed_by(&server_key, &issuer).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).unwrap();
        std::fs::write(dir.path().join("server.pem"), server_cert.pem()).unwrap();
        std::fs::write(dir.path().join("server.key"), server_key.serialize_pem()).unwrap();
        Certs { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// PostgreSQL with `ssl=on`, as the `postgres` user when we are root (it refuses root).
fn postgres(certs: &Certs, cfg: &StackConfig) -> (Server, u16, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    let owner = nix::unistd::geteuid()
        .is_root()
        .then(|| nix::unistd::User::from_name("postgres").unwrap().unwrap());
    let as_owner = |c: &mut Command| {
        if let Some(u) = &owner {
            c.uid(u.uid.as_raw()).gid(u.gid.as_raw());
        }
    };
    // Its key: the server's own, readable by it alone.
    let key = data.path().join("server.key");
    std::fs::copy(certs.path("server.key"), &key).unwrap();
    let cert = data.path().join("server.pem");
    std::fs::copy(certs.path("server.pem"), &cert).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let cluster = data.path().join("cluster");
    std::fs::create_dir(&cluster).unwrap();
    if let Some(u) = &owner {
        for p in [data.path(), key.as_path(), cert.as_path(), cluster.as_path()] {
            std::os::unix::fs::chown(p, Some(u.uid.as_raw()), Some(u.gid.as_raw())).unwrap();
        }
    }
    let mut initdb = Command::new(cfg.pg_bin_dir.join("initdb"));
    initdb
        .arg("-D")
        .arg(&cluster)
        .args(["-U", "cafe", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    as_owner(&mut initdb);
    assert!(initdb.status().unwrap().success(), "initdb");
    let port = free_port();
    let mut server = Command::new(cfg.pg_bin_dir.join("postgres"));
    server
        .arg("-D")
        .arg(&cluster)
        .args([
            "-p",
            &port.to_string(),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "ssl=on",
        ])
        .arg("-k")
        .arg(data.path())
        .arg("-c")
        .arg(format!("ssl_cert_file={}", cert.display()))
        .arg("-c")
        .arg(format!("ssl_key_file={}", key.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    as_owner(&mut server);
    (Server(server.spawn().unwrap()), port, data)
}

/// Redis with a TLS port (and a plain one, for the test's own reads), and `extra`
/// arguments.
fn redis(certs: &Certs, extra: &[&std::ffi::OsStr]) -> (Server, u16, u16) {
    let (tls, plain) = (free_port(), free_port());
    let child = Command::new("redis-server")
        .args([
            "--port",
            &plain.to_string(),
            "--tls-port",
            &tls.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .arg("--tls-cert-file")
        .arg(certs.path("server.pem"))
        .arg("--tls-key-file")
        .arg(certs.path("server.key"))
        .arg("--tls-ca-cert-file")
        .arg(certs.path("ca.pem"))
        .args(["--tls-auth-clients", "no", "--save", "", "--appendonly", "no"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    (Server(child), tls, plain)
}

/// A one-node Redis cluster with TLS for clients and for its bus, as MemoryDB runs
/// (and a plain port for the test's own reads), serving every slot once formed.
async fn redis_cluster(certs: &Certs) -> (Server, u16, u16, redis::Client) {
    let nodes = certs.path("nodes.conf");
    let (server, tls, plain) = redis(
        certs,
        &[
            "--tls-cluster".as_ref(),
            "yes".as_ref(),
            "--cluster-enabled".as_ref(),
            "yes".as_ref(),
            "--cluster-config-file".as_ref(),
            nodes.as_os_str(),
        ],
    );
    let client = redis::Client::open(format!("redis://127.0.0.1:{plain}/")).unwrap();
    eventually("redis up", Duration::from_secs(30), async || {
        client.get_multiplexed_async_connection().await.is_ok()
    })
    .await;
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let () = redis::cmd("CLUSTER")
        .arg("ADDSLOTSRANGE")
        .arg(0)
        .arg(16383)
        .query_async(&mut con)
        .await
        .unwrap();
    eventually("the cluster formed", Duration::from_secs(30), async || {
        let info: String = redis::cmd("CLUSTER").arg("INFO").query_async(&mut con).await.unwrap();
        info.contains("cluster_state:ok")
    })
    .await;
    (server, tls, plain, client)
}

/// A TLS front (this test's certificate) for the MongoDB-wire stand-in at `upstream`,
/// which speaks no TLS itself: what the documents worker's driver does with
/// `tls=true&tlsCAFile=…`, as DocumentDB requires, is what it checks. Runs until the test
/// ends.
async fn tls_front(certs: &Certs, upstream: u16) -> u16 {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(certs.path("server.pem"))
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_file(certs.path("server.key")).unwrap();
    let config =
        rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A client that refuses our certificate ends its handshake here.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    port
}

/// A worker process; killed if the test fails before [`stop`] or [`refused`] takes it,
/// so a failed assertion leaves no worker behind.
struct Worker(Option<Child>);

impl Worker {
    fn take(mut self) -> Child {
        self.0.take().expect("a worker is taken once")
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `cafe consume` with `sink` on its own stream, its store at `env`, trusting only the
/// CA certificates in `trust`; returns it and the stream.
async fn worker(sink: &str, env: &[(&str, String)], trust: &Path) -> (Worker, String) {
    let cfg = StackConfig::load().unwrap();
    let kinesis = aws::kinesis(&aws::sdk_config(&cfg).await, &cfg);
    let id = uuid::Uuid::now_v7().simple().to_string();
    let stream = format!("it-tls-{id}");
    provision::ensure_stream(&kinesis, &stream, 1).await.unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cafe"));
    cmd.args([
        "consume",
        "--application",
        &format!("tls-{id}"),
        "--stream",
        &stream,
        "--sink",
        sink,
    ])
    .args(["--idle-poll", "200ms"])
    .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
    .env_remove("SSL_CERT_DIR")
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    cmd.env("SSL_CERT_FILE", trust);
    (Worker(Some(cmd.spawn().unwrap())), stream)
}

/// A menu item and an order of it.
fn sample(tag: &str) -> Vec<(String, Vec<u8>)> {
    use cafe_events::samples;
    let item = format!("item-{tag}");
    [
        samples::menu_item_published(&item),
        samples::order_placed(&format!("o-{tag}"), &format!("cust-{tag}"), &item),
    ]
    .map(|e| e.unwrap())
    .iter()
    .map(|e| (e.aggregate_id.to_string(), e.encode().to_vec()))
    .collect()
}

/// The worker gave up connecting its model (a certificate it cannot verify), cleanly.
fn refused(worker: Worker, model: &str) {
    let mut child = worker.take();
    // A worker that accepted the server runs on: stopped and failed, not waited for.
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let stderr = terminate(child);
            panic!("the worker still runs: it accepted a server it cannot verify\n{stderr}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a server it cannot verify is refused: {stderr}");
    assert!(
        stderr.contains(&format!("connecting the {model} read model")),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// `cafe consume` with `sink` (`projector:<model>`), its store at `env(ca)`: trusting
/// only another CA it must refuse the server; trusting `certs`' CA it starts, and is
/// returned with its stream.
async fn trusted_worker(
    sink: &str,
    certs: &Certs,
    env: impl Fn(&Path) -> Vec<(&'static str, String)>,
) -> (Worker, String) {
    let stranger = Certs::new();
    let ca = stranger.path("ca.pem");
    let (untrusting, _) = worker(sink, &env(&ca), &ca).await;
    refused(untrusting, sink.trim_start_matches("projector:"));
    let ca = certs.path("ca.pem");
    worker(sink, &env(&ca), &ca).await
}

/// Stops the worker as ECS would (SIGTERM); it must not have panicked.
fn stop(worker: Worker) {
    let stderr = terminate(worker.take());
    assert!(!stderr.contains("panicked"), "{stderr}");
}

fn terminate(child: Child) -> String {
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_orders_worker_writes_to_postgres_over_verified_tls() {
    let cfg = StackConfig::load().unwrap();
    let certs = Certs::new();
    let (_server, port, _data) = postgres(&certs, &cfg);
    let plain = format!("host=127.0.0.1 port={port} user=cafe dbname=postgres");
    eventually("postgres up", Duration::from_secs(30), async || {
        tokio_postgres::connect(&plain, tokio_postgres::NoTls).await.is_ok()
    })
    .await;
    let url = format!("{plain} sslmode=require");

    // Trusting another CA only, the server is refused; trusted, the order arrives,
    // over a TLS connection.
    let (child, stream) =
        trusted_worker("projector:orders", &certs, |_| vec![("CAFE_POSTGRES_URL", url.clone())]).await;
    let kinesis = aws::kinesis(&aws::sdk_config(&cfg).await, &cfg);
    let tag = uuid::Uuid::now_v7().simple().to_string();
    put_raw(&kinesis, &stream, &sample(&tag[tag.len() - 10..])).await;
    let (client, conn) = tokio_postgres::connect(&plain, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let order = format!("o-{}", &tag[tag.len() - 10..]);
    eventually("the order in postgres", Duration::from_secs(60), async || {
        client
            .query_opt("SELECT 1 FROM public.orders WHERE order_id = $1", &[&order])
            .await
            .ok()
            .flatten()
            .is_some()
    })
    .await;
    let tls: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE s.ssl AND a.usename = 'cafe'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(tls >= 1, "the worker's connections are TLS");
    stop(child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_worker_writes_to_redis_over_verified_tls() {
    let cfg = StackConfig::load().unwrap();
    let certs = Certs::new();
    let (_server, tls, plain) = redis(&certs, &[]);
    let plain_url = format!("redis://127.0.0.1:{plain}/");
    let client = redis::Client::open(plain_url.as_str()).unwrap();
    eventually("redis up", Duration::from_secs(30), async || {
        client.get_multiplexed_async_connection().await.is_ok()
    })
    .await;
    let url = format!("rediss://127.0.0.1:{tls}/");

    let (child, stream) = trusted_worker("projector:cache", &certs, |_| vec![("CAFE_REDIS_URL", url.clone())]).await;
    let kinesis = aws::kinesis(&aws::sdk_config(&cfg).await, &cfg);
    let tag = uuid::Uuid::now_v7().simple().to_string();
    let tag = &tag[tag.len() - 10..];
    put_raw(&kinesis, &stream, &sample(tag)).await;
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    eventually("the menu item in redis", Duration::from_secs(60), async || {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("*item-{tag}*"))
            .query_async(&mut conn)
            .await
            .unwrap_or_default();
        !keys.is_empty()
    })
    .await;
    stop(child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inventory_worker_writes_to_a_redis_cluster_over_verified_tls() {
    let cfg = StackConfig::load().unwrap();
    let certs = Certs::new();
    let (_server, tls, plain, client) = redis_cluster(&certs).await;
    let url = format!("rediss://127.0.0.1:{tls}/");

    let (child, stream) = trusted_worker("projector:inventory", &certs, |_| {
        vec![("CAFE_MEMORYDB_URL", url.clone())]
    })
    .await;
    let kinesis = aws::kinesis(&aws::sdk_config(&cfg).await, &cfg);
    let restocked = cafe_events::samples::restocked(7, 3).unwrap();
    let record = (restocked.aggregate_id.to_string(), restocked.encode().to_vec());
    put_raw(&kinesis, &stream, &[record]).await;
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    eventually("the stock in the cluster", Duration::from_secs(60), async || {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("inventory:*")
            .query_async(&mut conn)
            .await
            .unwrap_or_default();
        !keys.is_empty()
    })
    .await;
    // The cluster client found the node through `CLUSTER SLOTS` and kept to its TLS
    // port: the only connection on the plain one is this test's.
    let clients: String = redis::cmd("CLIENT").arg("LIST").query_async(&mut conn).await.unwrap();
    let on = |port: u16| clients.matches(&format!("laddr=127.0.0.1:{port} ")).count();
    assert!(on(tls) >= 1, "{clients}");
    assert_eq!(on(plain), 1, "{clients}");
    // It was the cluster client (it asks for the slots; a plain client never does).
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(stats.contains("cmdstat_cluster|slots:calls="), "{stats}");
    stop(child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documents_worker_reaches_the_mongodb_wire_server_over_verified_tls() {
    let cfg = StackConfig::load().unwrap();
    let certs = Certs::new();
    let front = tls_front(&certs, cfg.ports.mongo).await;
    // The deployment's URL form (tls=true, the CA file named), on a database of this
    // test's own; the short server selection makes a refusal quick.
    let url = |ca: &Path| {
        format!(
            "mongodb://127.0.0.1:{front}/?directConnection=true&tls=true&tlsCAFile={}&serverSelectionTimeoutMS=5000",
            ca.display()
        )
    };
    let id = uuid::Uuid::now_v7().simple().to_string();
    let database = format!("tls_{}", &id[id.len() - 12..]);

    let (child, stream) = trusted_worker("projector:documents", &certs, |ca| {
        vec![
            ("CAFE_MONGO_URL", url(ca)),
            ("CAFE_DOCUMENTS_DATABASE", database.clone()),
        ]
    })
    .await;
    let kinesis = aws::kinesis(&aws::sdk_config(&cfg).await, &cfg);
    let tag = &id[id.len() - 10..];
    put_raw(&kinesis, &stream, &sample(tag)).await;
    let documents = cafe_projections::documents::MongoDocuments::connect(&cfg.mongo_url(), &database)
        .await
        .unwrap();
    let item = format!("item-{tag}");
    eventually(
        "the menu item in the documents model",
        Duration::from_secs(60),
        async || {
            documents
                .menu_items(None)
                .await
                .is_ok_and(|items| items.iter().any(|i| i.item_id == item))
        },
    )
    .await;
    stop(child);
    documents.drop_database().await.unwrap();
}
