//! The main job's load: real HTTP commands against the API, and a tap on the stream that
//! checks every accepted order's event arrives. A tool, not part of the pipeline.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use aws_sdk_kinesis::types::ShardIteratorType;
use bytes::Bytes;
use cafe_consumers::backlog::ShardLog;
use cafe_events::{DomainEvent, EventEnvelope, kpl};
use cafe_localstack::StackConfig;
use cafe_producers::auth::token::LocalIssuer;
use cafe_producers::auth::{self, Caller};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;

/// The HTTP client the load generators, benchmarks and tests share. Each request goes
/// with a bearer token of the caller who would send it ([`auth::sender`]), minted from the
/// local stack's key ([`LocalIssuer::open`]) once per caller and reused.
#[derive(Clone)]
pub struct Http {
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    tokens: Arc<Tokens>,
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http").finish_non_exhaustive()
    }
}

/// Tokens minted so far, by caller.
struct Tokens {
    issuer: LocalIssuer,
    minted: Mutex<std::collections::HashMap<String, (String, Instant)>>,
}

/// How long a minted token is used before a fresh one replaces it (it is valid for
/// twice as long, so none expires in flight).
const TOKEN_REUSE: Duration = Duration::from_secs(30 * 60);

impl Tokens {
    fn bearer(&self, caller: &Caller) -> Result<String> {
        let key = caller.key();
        let mut minted = self.minted.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((token, at)) = minted.get(&key)
            && at.elapsed() < TOKEN_REUSE
        {
            return Ok(format!("Bearer {token}"));
        }
        let token = self.issuer.mint(caller, TOKEN_REUSE * 2)?;
        minted.insert(key, (token.clone(), Instant::now()));
        Ok(format!("Bearer {token}"))
    }
}

/// The menu the load orders from: `(item id, price in cents)`.
pub const MENU: &[(&str, i64)] = &[
    ("espresso", 295),
    ("americano", 345),
    ("latte-tall", 445),
    ("latte-grande", 525),
    ("cappuccino", 475),
    ("cold-brew", 425),
    ("chai-latte", 495),
    ("croissant", 375),
    ("blueberry-muffin", 350),
    ("egg-bites", 525),
];

/// An HTTP client for the API, its tokens minted from the local key under `cfg`'s
/// state dir (created there if this runs before the server).
pub fn client(cfg: &StackConfig) -> Result<Http> {
    let dir = cfg.auth_dir();
    let issuer = LocalIssuer::open(&dir).with_context(|| format!("the local signing key in {}", dir.display()))?;
    Ok(Http {
        client: Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(256)
            .build_http(),
        tokens: Arc::new(Tokens {
            issuer,
            minted: Mutex::new(std::collections::HashMap::new()),
        }),
    })
}

impl Http {
    /// A bearer token (`Bearer …`) of `caller`.
    pub fn bearer(&self, caller: &Caller) -> Result<String> {
        self.tokens.bearer(caller)
    }

    /// Sends `request` as is.
    pub async fn send(&self, request: hyper::Request<Full<Bytes>>) -> Result<hyper::Response<hyper::body::Incoming>> {
        Ok(self.client.request(request).await?)
    }
}

/// POSTs one JSON command as its [`auth::sender`]; returns the status.
pub async fn post(http: &Http, base: &str, path: &str, key: &str, body: serde_json::Value) -> Result<u16> {
    let caller = auth::sender(true, path, body["customer_id"].as_str());
    let req = hyper::Request::post(format!("{base}{path}"))
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .header("authorization", http.bearer(&caller)?)
        .body(Full::new(Bytes::from(body.to_string())))?;
    let resp = http.send(req).await.context("POST")?;
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    Ok(status)
}

/// GETs a resource; returns the status and the body's bytes.
pub async fn get_bytes(http: &Http, base: &str, path: &str) -> Result<(u16, Bytes)> {
    let (status, _, body) = get_cached(http, base, path).await?;
    Ok((status, body))
}

/// GETs a resource from the query API; returns the status, whether the cache answered
/// (its `X-Cache` header: None when absent), and the body's bytes.
pub async fn get_cached(http: &Http, base: &str, path: &str) -> Result<(u16, Option<bool>, Bytes)> {
    get_cached_as(http, base, path, &auth::sender(false, path, None)).await
}

/// [`get_cached`] as `caller` rather than the path's [`auth::sender`]: for a load that
/// stands for many callers (customers browsing the menu), each with a limit of its own.
pub async fn get_cached_as(http: &Http, base: &str, path: &str, caller: &Caller) -> Result<(u16, Option<bool>, Bytes)> {
    let req = hyper::Request::get(format!("{base}{path}"))
        .header("authorization", http.bearer(caller)?)
        .body(Full::new(Bytes::new()))?;
    let resp = http.send(req).await.context("GET")?;
    let status = resp.status().as_u16();
    let hit = resp
        .headers()
        .get("x-cache")
        .and_then(|v| v.to_str().ok())
        .map(|v| v == "hit");
    let body = resp
        .into_body()
        .collect()
        .await
        .context("reading a response")?
        .to_bytes();
    Ok((status, hit, body))
}

/// GETs a JSON resource; returns the status and the parsed body (null if not JSON).
pub async fn get(http: &Http, base: &str, path: &str) -> Result<(u16, serde_json::Value)> {
    let (status, body) = get_bytes(http, base, path).await?;
    Ok((status, serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null)))
}

/// Publishes the menu (idempotent: the keys are fixed).
pub async fn seed_menu(http: &Http, base: &str) -> Result<()> {
    for (item, price) in MENU {
        let body = json!({ "item_id": item, "name": item.replace('-', " "), "category": "menu", "price_cents": price });
        let status = post(http, base, "/v1/menu/items", &format!("menu-{item}-{price}"), body).await?;
        if status != 201 {
            bail!("publishing menu item {item} answered {status}");
        }
    }
    Ok(())
}

/// What the load saw.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Commands sent.
    pub sent: u64,
    /// Ids of the commands answered with a 2xx (for orders: the order ids).
    pub accepted: HashSet<String>,
    /// The statuses of the commands answered otherwise (0: no answer).
    pub refused: Vec<u16>,
    /// Latency of every answered request.
    pub latencies: Vec<Duration>,
    /// Wall time of the load (for the open-loop generator: until it stopped sending).
    pub elapsed: Duration,
}

impl LoadReport {
    /// Records one answered (or failed) request.
    fn record(&mut self, order_id: String, status: Result<u16>, elapsed: Duration) {
        self.sent += 1;
        match status {
            Ok(200..=299) => {
                self.accepted.insert(order_id);
                self.latencies.push(elapsed);
            }
            Ok(s) => {
                self.refused.push(s);
                self.latencies.push(elapsed);
            }
            Err(_) => self.refused.push(0),
        }
    }

    /// Adds another run's figures (elapsed times add up: the runs were back to back).
    pub fn merge(&mut self, other: LoadReport) {
        self.sent += other.sent;
        self.accepted.extend(other.accepted);
        self.refused.extend(other.refused);
        self.latencies.extend(other.latencies);
        self.elapsed += other.elapsed;
    }

    /// The `q`-quantile latency (0.5, 0.99).
    pub fn quantile(&self, q: f64) -> Duration {
        quantile(&self.latencies, q)
    }
}

/// The `q`-quantile (0.5, 0.99; 1.0 is the largest) of `values` (zero when empty).
pub fn quantile(values: &[Duration], q: f64) -> Duration {
    let mut l = values.to_vec();
    l.sort();
    l.get(((l.len() as f64 - 1.0) * q).round() as usize)
        .copied()
        .unwrap_or_default()
}

/// The `n`-th order of a run: 1–3 lines over the menu, spread over stores and customers.
pub fn order_body(run: &str, n: u64) -> (String, serde_json::Value) {
    let order_id = format!("o-{run}-{n}");
    let lines: Vec<_> = (0..=(n % 3))
        .map(|i| {
            let (item, _) = MENU[((n * 7 + i * 3) % MENU.len() as u64) as usize];
            json!({ "item_id": item, "quantity": 1 + (n + i) % 3 })
        })
        .collect();
    let body = json!({
        "order_id": order_id, "customer_id": format!("cust-{}", n % 5_000),
        "store_id": format!("store-{:05}", n % 300), "lines": lines,
    });
    (order_id, body)
}

/// A fresh run tag: the random tail of a UUIDv7 (its head is a timestamp, shared by runs
/// started within the same minute, whose orders would collide on idempotency keys).
/// A short unique tag for the ids and resources one run creates.
pub fn run_tag() -> String {
    let id = cafe_events::EventId::new().as_uuid().simple().to_string();
    id[id.len() - 10..].to_owned()
}

/// `concurrency` clients each placing orders back to back for `duration`.
pub async fn orders_closed_loop(http: &Http, base: &str, concurrency: usize, duration: Duration) -> LoadReport {
    let run = run_tag();
    let seq = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = Instant::now();
    let clients: Vec<_> = (0..concurrency)
        .map(|_| {
            let (http, base, run, seq) = (http.clone(), base.to_owned(), run.clone(), seq.clone());
            tokio::spawn(async move {
                let mut r = LoadReport::default();
                while started.elapsed() < duration {
                    let n = seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let (order_id, body) = order_body(&run, n);
                    let t = Instant::now();
                    let status = post(&http, &base, "/v1/orders", &order_id, body).await;
                    r.record(order_id, status, t.elapsed());
                }
                r
            })
        })
        .collect();
    let mut total = LoadReport::default();
    for c in clients {
        if let Ok(r) = c.await {
            total.sent += r.sent;
            total.accepted.extend(r.accepted);
            total.refused.extend(r.refused);
            total.latencies.extend(r.latencies);
        }
    }
    total.elapsed = started.elapsed();
    total
}

/// The command an API order makes, for driving the command service directly: two lines
/// of the sample menu, and the menu's prices as the decision's context.
pub fn place_order_command(
    order_id: &str,
) -> Result<(
    (cafe_events::OrderId, cafe_producers::domain::order::OrderCommand),
    std::collections::HashMap<cafe_events::ItemId, cafe_events::Cents>,
)> {
    use cafe_producers::domain::order::{LineRequest, OrderCommand, PlaceOrder};
    let id = cafe_events::OrderId::parse(order_id)?;
    let menu = MENU
        .iter()
        .map(|(item, price)| Ok((cafe_events::ItemId::parse(*item)?, cafe_events::Cents::new(*price))))
        .collect::<Result<_>>()?;
    let lines = MENU[..2]
        .iter()
        .map(|(item, _)| {
            Ok(LineRequest {
                item_id: cafe_events::ItemId::parse(*item)?,
                quantity: 1,
            })
        })
        .collect::<Result<_>>()?;
    let command = OrderCommand::Place(PlaceOrder {
        order_id: id.clone(),
        customer_id: cafe_events::CustomerId::parse("cust-bench")?,
        store_id: cafe_events::StoreId::parse("store-00001")?,
        lines,
        currency: "USD".into(),
    });
    Ok(((id, command), menu))
}

/// An `OrderPlaced` shaped like the API's (two lines), for measuring the event store's
/// ceiling with the very call an order makes.
pub fn placed(run: &str, n: u64) -> Result<EventEnvelope> {
    use cafe_events::proto::orders::v1::{OrderLine, OrderPlaced};
    let order_id = cafe_events::OrderId::parse(format!("o-{run}-{n}"))?;
    let lines: Vec<_> = MENU
        .iter()
        .take(2)
        .map(|(item, price)| OrderLine {
            item_id: (*item).to_owned(),
            quantity: 2,
            unit_price_cents: *price,
        })
        .collect();
    let total_cents = lines.iter().map(|l| l.unit_price_cents * i64::from(l.quantity)).sum();
    Ok(EventEnvelope {
        event_id: cafe_events::EventId::new(),
        event: DomainEvent::OrderPlaced(OrderPlaced {
            order_id: order_id.to_string(),
            customer_id: format!("cust-{}", n % 5_000),
            store_id: format!("store-{:05}", n % 300),
            lines,
            currency: "USD".into(),
            total_cents,
        }),
        aggregate_id: cafe_events::AggregateId::Order(order_id),
        version: 1,
        occurred_at: chrono::Utc::now(),
        correlation_id: format!("bench-{run}"),
        causation_id: format!("o-{run}-{n}"),
        command_id: format!("o-{run}-{n}"),
    })
}

/// Sends `PlaceOrder` at about `rate` per second (at most `concurrency` in flight) until
/// `stop` resolves.
pub async fn orders(
    http: &Http,
    base: &str,
    rate: u32,
    concurrency: usize,
    stop: impl Future<Output = ()>,
) -> LoadReport {
    let run = run_tag();
    let make = move |n: u64| {
        let (order_id, body) = order_body(&run, n);
        Command {
            id: order_id,
            path: "/v1/orders".to_owned(),
            body,
        }
    };
    commands(
        http,
        base,
        Profile::Constant(f64::from(rate)),
        concurrency,
        None,
        make,
        stop,
    )
    .await
}

/// One command of a load: its id (also its idempotency key), endpoint and body.
#[derive(Debug, Clone)]
pub struct Command {
    /// Reported in [`LoadReport::accepted`] when answered with a 2xx.
    pub id: String,
    /// The endpoint.
    pub path: String,
    /// The JSON body.
    pub body: serde_json::Value,
}

/// An arrival rate over time, in commands per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Profile {
    /// The same rate throughout.
    Constant(f64),
    /// From one rate to another, linearly over `over`, then the second rate.
    Ramp {
        /// Rate at the start.
        from: f64,
        /// Rate at the end of the ramp and after it.
        to: f64,
        /// How long the ramp takes.
        over: Duration,
    },
}

impl Profile {
    /// Commands due by `t` since the start: the rate's integral.
    pub fn due(&self, t: Duration) -> u64 {
        let t = t.as_secs_f64();
        let n = match *self {
            Profile::Constant(rate) => rate * t,
            Profile::Ramp { from, to, over } => {
                let over = over.as_secs_f64().max(f64::EPSILON);
                let ramp = t.min(over);
                from * ramp + (to - from) * ramp * ramp / (2.0 * over) + to * (t - over).max(0.0)
            }
        };
        n.max(0.0) as u64
    }
}

/// Sends `make(1)`, `make(2)`, … on the schedule `profile` sets (at most `concurrency`
/// in flight) until `stop` resolves or `total` were sent.
pub async fn commands(
    http: &Http,
    base: &str,
    profile: Profile,
    concurrency: usize,
    total: Option<u64>,
    make: impl Fn(u64) -> Command,
    stop: impl Future<Output = ()>,
) -> LoadReport {
    let report = Arc::new(Mutex::new(LoadReport::default()));
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let started = Instant::now();
    // Ticks of 10 ms; each sends what the schedule owes by then (the rate's integral,
    // so a rate that is not a multiple of 100 is kept, not rounded down per tick).
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    // Open loop: a tick that came late (a busy machine) is made up at once, so the
    // arrival schedule holds and a slow API shows as latency, not as fewer requests.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let total = total.unwrap_or(u64::MAX);
    let mut n = 0u64;
    tokio::pin!(stop);
    while n < total {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => {}
        }
        let due = profile.due(started.elapsed()).min(total);
        while n < due {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            n += 1;
            let command = make(n);
            let (http, base, report) = (http.clone(), base.to_owned(), report.clone());
            tokio::spawn(async move {
                let t = Instant::now();
                let status = post(&http, &base, &command.path, &command.id, command.body).await;
                report
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .record(command.id, status, t.elapsed());
                drop(permit);
            });
        }
    }
    let scheduled = started.elapsed();
    // Wait for the requests still in flight.
    let _ = permits.acquire_many(concurrency as u32).await;
    let mut r = std::mem::take(&mut *report.lock().unwrap_or_else(|p| p.into_inner()));
    r.elapsed = scheduled;
    r
}

/// Reads every shard from where it was when tapped, deaggregating KPL records.
#[derive(Debug)]
pub struct StreamTap {
    kinesis: aws_sdk_kinesis::Client,
    /// Per shard: its id, the next iterator, and the records seen.
    shards: Vec<(String, Option<String>, ShardLog)>,
    /// Order ids of every `OrderPlaced` seen.
    pub orders_seen: HashSet<String>,
    /// Events decoded.
    pub events: u64,
    /// Records that did not decode.
    pub undecodable: u64,
}

/// Every shard of `stream` with an iterator of `kind` (None where the stand-in gave none).
pub async fn shard_iterators(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    kind: ShardIteratorType,
) -> Result<Vec<(String, Option<String>)>> {
    let shards = kinesis
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .context("ListShards")?;
    let mut out = Vec::new();
    for s in shards.shards() {
        let it = kinesis
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(s.shard_id())
            .shard_iterator_type(kind.clone())
            .send()
            .await
            .context("GetShardIterator")?;
        out.push((s.shard_id().to_owned(), it.shard_iterator));
    }
    Ok(out)
}

impl StreamTap {
    /// Taps every shard at LATEST.
    pub async fn new(kinesis: aws_sdk_kinesis::Client, stream: &str) -> Result<StreamTap> {
        let tapped = shard_iterators(&kinesis, stream, ShardIteratorType::Latest)
            .await?
            .into_iter()
            .map(|(shard, it)| (shard, it, ShardLog::default()))
            .collect();
        Ok(StreamTap {
            kinesis,
            shards: tapped,
            orders_seen: HashSet::new(),
            events: 0,
            undecodable: 0,
        })
    }

    /// Reads what arrived since the last poll.
    pub async fn poll(&mut self) -> Result<()> {
        for (_, slot, log) in &mut self.shards {
            let Some(it) = slot.take() else { continue };
            let out = self
                .kinesis
                .get_records()
                .shard_iterator(it)
                .send()
                .await
                .context("GetRecords")?;
            for r in out.records() {
                let users = kpl::deaggregate(r.partition_key(), Bytes::copy_from_slice(r.data().as_ref()));
                log.push(r.sequence_number(), u32::try_from(users.len()).unwrap_or(u32::MAX));
                for user in users {
                    match EventEnvelope::decode(&user.data) {
                        Ok(e) => {
                            self.events += 1;
                            if let DomainEvent::OrderPlaced(p) = e.event {
                                self.orders_seen.insert(p.order_id);
                            }
                        }
                        Err(_) => self.undecodable += 1,
                    }
                }
            }
            *slot = out.next_shard_iterator;
        }
        Ok(())
    }

    /// What was seen on each shard, by shard id.
    pub fn logs(&self) -> impl Iterator<Item = (&str, &ShardLog)> {
        self.shards.iter().map(|(id, _, log)| (id.as_str(), log))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ramp_sends_its_area_then_the_peak_rate() {
        let ramp = Profile::Ramp {
            from: 10.0,
            to: 110.0,
            over: Duration::from_secs(10),
        };
        assert_eq!(ramp.due(Duration::ZERO), 0);
        // Half way: 10/s for 5 s plus a triangle of 5 s × 50/s / 2.
        assert_eq!(ramp.due(Duration::from_secs(5)), 50 + 125);
        assert_eq!(ramp.due(Duration::from_secs(10)), 100 + 500);
        assert_eq!(
            ramp.due(Duration::from_secs(12)),
            600 + 220,
            "the peak rate after the ramp"
        );
        assert_eq!(Profile::Constant(580.0).due(Duration::from_millis(1500)), 870);
    }
}
