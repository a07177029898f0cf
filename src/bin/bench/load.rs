//! The load generator: N client tasks, each sending one request at a time over a
//! keep-alive connection until the scenario's budget runs out.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::header::CONTENT_TYPE;
use reqwest::StatusCode;
use serde::Deserialize;
use uuid::Uuid;

/// Responses whose body is kept for the report (the first few unexpected ones).
const SAMPLES: usize = 5;

/// What the clients send.
#[derive(Clone)]
pub enum Request {
    /// `POST /v1/charges`, each with a body picked at random from these (one per tenant).
    Charge(Arc<Vec<String>>),
    /// `POST /v1/estimates` with this body.
    Estimate(Arc<String>),
}

/// How long the clients keep going.
#[derive(Clone, Copy)]
pub enum Until {
    /// Each client starts requests until this much time has passed (in-flight ones finish).
    Elapsed(Duration),
    /// This many requests in total, shared by all clients.
    Total(usize),
}

pub struct Plan {
    /// The services to send to: client `i` uses `bases[i % len]` (two replicas: half each).
    pub bases: Vec<String>,
    pub token: String,
    pub clients: usize,
    pub request: Request,
    pub until: Until,
    /// Makes every `Idempotency-Key` of the run unique.
    pub key_prefix: String,
}

/// What happened, merged over all clients.
#[derive(Default)]
pub struct Outcome {
    /// From the first request to the last response.
    pub elapsed: Duration,
    /// Per answered request, sorted once merged.
    pub latencies: Vec<Duration>,
    /// `"201"`, `"402 insufficient_funds"`, `"transport error"`…
    pub statuses: BTreeMap<String, u64>,
    /// Ids from the 201 bodies: the acknowledged charges.
    pub acked: Vec<Uuid>,
    /// Requests whose outcome the client cannot know: transport errors and 5xx.
    pub unknown: u64,
    /// The first few unexpected responses or errors, for the report.
    pub samples: Vec<String>,
    /// Responses completed in each second since the start: shows a rate that drifts.
    pub per_second: Vec<u64>,
}

impl Outcome {
    pub fn count(&self, label: &str) -> u64 {
        self.statuses.get(label).copied().unwrap_or(0)
    }

    /// Requests that got an HTTP response.
    pub fn answered(&self) -> usize {
        self.latencies.len()
    }

    pub fn merge(&mut self, other: Outcome) {
        self.latencies.extend(other.latencies);
        for (k, v) in other.statuses {
            *self.statuses.entry(k).or_default() += v;
        }
        self.acked.extend(other.acked);
        self.unknown += other.unknown;
        for s in other.samples {
            self.sample(s);
        }
        if self.per_second.len() < other.per_second.len() {
            self.per_second.resize(other.per_second.len(), 0);
        }
        for (total, n) in self.per_second.iter_mut().zip(other.per_second) {
            *total += n;
        }
    }

    fn completed(&mut self, since_start: Duration) {
        let second = since_start.as_secs() as usize;
        if self.per_second.len() <= second {
            self.per_second.resize(second + 1, 0);
        }
        self.per_second[second] += 1;
    }

    fn tally(&mut self, label: String) {
        *self.statuses.entry(label).or_default() += 1;
    }

    fn sample(&mut self, what: String) {
        if self.samples.len() < SAMPLES && !self.samples.contains(&what) {
            self.samples.push(what);
        }
    }

    /// Classifies one response.
    fn record(&mut self, status: StatusCode, body: &[u8], is_charge: bool) {
        #[derive(Deserialize)]
        struct Reply {
            id: Option<Uuid>,
            code: Option<String>,
        }
        let reply: Option<Reply> = serde_json::from_slice(body).ok();
        match (status.as_u16(), reply) {
            (201, Some(Reply { id: Some(id), .. })) if is_charge => {
                self.acked.push(id);
                self.tally("201".into());
            }
            (200, _) if !is_charge => self.tally("200".into()),
            (code, reply) => {
                let detail = reply.and_then(|r| r.code).unwrap_or_else(|| "?".into());
                let label = format!("{code} {detail}");
                if code >= 500 || (200..300).contains(&code) {
                    // A 5xx may still have been applied (the work runs detached); a 2xx
                    // without an id is a broken acknowledgement.
                    self.unknown += 1;
                }
                if code != 402 {
                    self.sample(format!("{label}: {}", String::from_utf8_lossy(body)));
                }
                self.tally(label);
            }
        }
    }
}

/// How the clients share the request budget.
#[derive(Clone)]
enum Budget {
    Deadline(Instant),
    Left(Arc<AtomicUsize>),
}

impl Budget {
    fn new(until: Until) -> Budget {
        match until {
            Until::Elapsed(d) => Budget::Deadline(Instant::now() + d),
            Until::Total(n) => Budget::Left(Arc::new(AtomicUsize::new(n))),
        }
    }

    /// True if the client may send one more request.
    fn take(&self) -> bool {
        match self {
            Budget::Deadline(at) => Instant::now() < *at,
            Budget::Left(n) => n.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_ok(),
        }
    }
}

/// An HTTP client for `clients` concurrent keep-alive connections.
pub fn http_client(clients: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(clients.max(64))
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTP client")
}

/// Runs the plan and returns the merged outcome. Spawn it on the load runtime.
pub async fn run(http: reqwest::Client, plan: Plan) -> Outcome {
    let plan = Arc::new(plan);
    let started = Instant::now();
    let budget = Budget::new(plan.until);
    let tasks: Vec<_> = (0..plan.clients)
        .map(|i| tokio::spawn(client(http.clone(), plan.clone(), budget.clone(), started, i)))
        .collect();
    let mut total = Outcome::default();
    for t in tasks {
        total.merge(t.await.expect("a client task panicked"));
    }
    total.elapsed = started.elapsed();
    total.latencies.sort_unstable();
    total
}

/// One client: a request at a time until the budget is spent.
async fn client(http: reqwest::Client, plan: Arc<Plan>, budget: Budget, started: Instant, me: usize) -> Outcome {
    let mut rng = StdRng::seed_from_u64(me as u64);
    let base = &plan.bases[me % plan.bases.len()];
    let (url, is_charge) = match &plan.request {
        Request::Charge(_) => (format!("{base}/v1/charges"), true),
        Request::Estimate(_) => (format!("{base}/v1/estimates"), false),
    };
    let mut out = Outcome { latencies: Vec::with_capacity(4096), ..Outcome::default() };
    let mut seq = 0u64;
    while budget.take() {
        seq += 1;
        let body = match &plan.request {
            Request::Charge(bodies) => bodies[rng.gen_range(0..bodies.len())].clone(),
            Request::Estimate(body) => body.as_str().to_owned(),
        };
        let mut req = http.post(&url).bearer_auth(&plan.token).header(CONTENT_TYPE, "application/json").body(body);
        if is_charge {
            req = req.header("Idempotency-Key", format!("{}-{me}-{seq}", plan.key_prefix));
        }
        let sent = Instant::now();
        match send(req).await {
            Ok((status, bytes)) => {
                out.latencies.push(sent.elapsed());
                out.completed(started.elapsed());
                out.record(status, &bytes, is_charge);
            }
            Err(e) => {
                out.unknown += 1;
                out.tally("transport error".into());
                out.sample(format!("transport error: {e}"));
            }
        }
    }
    out
}

async fn send(req: reqwest::RequestBuilder) -> Result<(StatusCode, Vec<u8>), reqwest::Error> {
    let resp = req.send().await?;
    let status = resp.status();
    Ok((status, resp.bytes().await?.to_vec()))
}
