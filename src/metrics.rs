//! Metrics layer (above the driver, below the adapters): the process's one Prometheus
//! registry, built at start-up by [`crate::app`] and handed to the SIP listener and the HTTP
//! state. `/metrics` encodes it with `prometheus-client` in the Prometheus text format 0.0.4;
//! every name carries the `switchboard_` prefix.
//!
//! Three kinds of source:
//! - adapters count through the [`Counter`]s they are handed ([`SipMetrics`], [`HttpMetrics`]);
//! - the driver's own atomics ([`DriverMetrics`]) are read at each scrape;
//! - the core's counters and levels are sampled by the scraper ([`Metrics::render`]).
//!
//! Adding a metric: a field in the part that counts it plus one `register` line next to the
//! others in that part's `register` (for a counter give the name without `_total`: the
//! encoder adds it; give the help text without a final period: the registry adds it). A new
//! part (say, cluster state) is a struct like [`SipMetrics`] with its own `register`, a field of
//! [`Metrics`] and one call in [`Metrics::new`]; a value the core owns goes into
//! [`Counters`]/[`Gauges`] and one line of `CoreCollector::encode`.

use crate::core::{Counters, Gauges};
use crate::driver::DriverMetrics;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, EncodeLabelSet, EncodeMetric,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

/// A monotonically increasing count an adapter bumps (cheap to clone: clones share the value).
pub type Counter = prometheus_client::metrics::counter::Counter;

/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Counters of the SIP listener.
#[derive(Debug, Clone, Default)]
pub struct SipMetrics {
    pub datagrams: Counter,
    pub garbage: Counter,
    pub keepalives: Counter,
    pub registers_ok: Counter,
    pub challenges: Counter,
    pub auth_failures: Counter,
    pub throttled: Counter,
    /// Retransmitted requests answered from their server transaction.
    pub retransmissions: Counter,
    /// Authenticated REGISTERs dropped because too many were already waiting for the core.
    pub overloaded: Counter,
    /// Call messages (INVITE, ACK, BYE, CANCEL, responses…) handed to the proxy.
    pub call_messages: Counter,
}

impl SipMetrics {
    fn register(&self, r: &mut Registry) {
        r.register(
            "sip_datagrams",
            "SIP datagrams received",
            self.datagrams.clone(),
        );
        r.register(
            "sip_garbage",
            "SIP datagrams dropped as unparseable",
            self.garbage.clone(),
        );
        r.register(
            "sip_keepalives",
            "SIP keep-alive datagrams received",
            self.keepalives.clone(),
        );
        r.register(
            "sip_registers_ok",
            "SIP REGISTER requests answered 200 OK",
            self.registers_ok.clone(),
        );
        r.register(
            "sip_challenges",
            "SIP digest challenges sent (401)",
            self.challenges.clone(),
        );
        r.register(
            "sip_auth_failures",
            "SIP REGISTER requests with wrong credentials",
            self.auth_failures.clone(),
        );
        r.register(
            "sip_throttled",
            "SIP requests dropped from sources that keep failing authentication",
            self.throttled.clone(),
        );
        r.register(
            "sip_retransmissions",
            "SIP request retransmissions answered from the transaction cache",
            self.retransmissions.clone(),
        );
        r.register(
            "sip_overloaded",
            "Authenticated REGISTERs dropped because too many were waiting for the store (the phone retransmits)",
            self.overloaded.clone(),
        );
        r.register(
            "sip_call_messages",
            "SIP call messages (INVITE, ACK, CANCEL, BYE, responses) handed to the call proxy",
            self.call_messages.clone(),
        );
    }
}

/// Which per-address limit refused a request (`switchboard_rate_limited_total{limit=…}`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabel {
    limit: &'static str,
}

/// Counters of the HTTP adapter's login and rate-limit checks.
#[derive(Debug, Clone)]
pub struct HttpMetrics {
    pub failed_logins: Counter,
    pub login_rate_limited: Counter,
    pub chats_rate_limited: Counter,
    rate_limited: Family<LimitLabel, Counter>,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        let rate_limited = Family::<LimitLabel, Counter>::default();
        // Both series exist from the start (at 0), as scrapers expect.
        let login_rate_limited = rate_limited
            .get_or_create(&LimitLabel { limit: "login" })
            .clone();
        let chats_rate_limited = rate_limited
            .get_or_create(&LimitLabel { limit: "chats" })
            .clone();
        HttpMetrics {
            failed_logins: Counter::default(),
            login_rate_limited,
            chats_rate_limited,
            rate_limited,
        }
    }
}

impl HttpMetrics {
    fn register(&self, r: &mut Registry) {
        r.register(
            "failed_logins",
            "Login attempts refused (unknown user or wrong password)",
            self.failed_logins.clone(),
        );
        r.register(
            "rate_limited",
            "Requests refused by a per-address rate limit",
            self.rate_limited.clone(),
        );
    }
}

/// The process's metrics: the registry and the parts the adapters count through.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub sip: SipMetrics,
    pub http: HttpMetrics,
    core: Arc<CoreCollector>,
}

impl Metrics {
    /// Every metric registered once, with the driver's counters read at each scrape.
    pub fn new(driver: Arc<DriverMetrics>) -> Metrics {
        let mut registry = Registry::with_prefix("switchboard");
        let core = Arc::new(CoreCollector::default());
        registry.register_collector(Box::new(core.clone()));
        let http = HttpMetrics::default();
        http.register(&mut registry);
        registry.register_collector(Box::new(DriverCollector(driver)));
        let sip = SipMetrics::default();
        sip.register(&mut registry);
        Metrics {
            registry,
            sip,
            http,
            core,
        }
    }

    /// The text exposition, with the core's counters and levels as sampled just now.
    pub fn render(&self, counters: Counters, gauges: Gauges) -> String {
        self.core.set(counters, gauges);
        let mut text = String::with_capacity(8 * 1024);
        if let Err(e) =
            prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
        {
            tracing::error!(error = %e, "metrics could not be encoded");
        }
        text
    }
}

/// One family of one sample.
fn one<M: EncodeMetric>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: M,
) -> std::fmt::Result {
    let m = enc.encode_descriptor(name, help, None, metric.metric_type())?;
    metric.encode(m)
}

fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: impl EncodeCounterValue,
) -> std::fmt::Result {
    one(enc, name, help, ConstCounter::new(v))
}

fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: impl EncodeGaugeValue,
) -> std::fmt::Result {
    one(enc, name, help, ConstGauge::new(v))
}

/// A gauge family labelled by `label`, one sample per `(value, level)`.
fn gauges<'a>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    samples: impl IntoIterator<Item = (&'a str, u64)>,
) -> std::fmt::Result {
    let mut m = enc.encode_descriptor(
        name,
        help,
        None,
        prometheus_client::metrics::MetricType::Gauge,
    )?;
    for (value, n) in samples {
        let labels = [(label, value)];
        ConstGauge::new(n).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

/// The core's counters and levels, as last sampled by the scraper.
#[derive(Debug, Default)]
struct CoreCollector {
    latest: Mutex<(Counters, Gauges)>,
}

impl CoreCollector {
    fn set(&self, counters: Counters, gauges: Gauges) {
        match self.latest.lock() {
            Ok(mut l) => *l = (counters, gauges),
            Err(p) => *p.into_inner() = (counters, gauges),
        }
    }
}

impl Collector for CoreCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let (c, g) = match self.latest.lock() {
            Ok(l) => l.clone(),
            Err(p) => p.into_inner().clone(),
        };
        let e = &mut enc;
        counter(
            e,
            "logins",
            "Successful logins (agents, including takeovers).",
            c.logins,
        )?;
        counter(
            e,
            "connection_losses",
            "Agent sessions that lost their last panel connection.",
            c.connection_losses,
        )?;
        counter(
            e,
            "resumes",
            "Agent sessions resumed within the grace period.",
            c.resumes,
        )?;
        counter(
            e,
            "sessions_lost",
            "Agent sessions ended by the grace deadline.",
            c.sessions_lost,
        )?;
        counter(
            e,
            "chats_requeued",
            "Chats requeued because their agent's session was lost.",
            c.chats_requeued,
        )?;
        counter(
            e,
            "calls_dropped",
            "Voice calls dropped by a lost panel connection or SIP registration.",
            c.calls_dropped,
        )?;
        counter(e, "offers", "Conversations offered to agents.", c.offers)?;
        counter(
            e,
            "offer_timeouts",
            "Offers that timed out unanswered.",
            c.offer_timeouts,
        )?;
        counter(
            e,
            "sip_registrations_lost",
            "Agents whose last SIP binding expired or was removed.",
            c.sip_registrations_lost,
        )?;
        gauges(
            e,
            "agent_sessions",
            "Agent sessions by state.",
            "state",
            [
                ("connected", g.sessions_connected),
                ("disconnected", g.sessions_disconnected),
            ],
        )?;
        gauge(
            e,
            "supervisor_sessions",
            "Supervisor sessions.",
            g.supervisor_sessions,
        )?;
        gauges(
            e,
            "open_conversations",
            "Conversations not yet handled or abandoned, by status.",
            "status",
            ["in_queue", "offered", "in_process", "wrap_up"]
                .map(|s| (s, g.conversations.get(s).copied().unwrap_or(0))),
        )?;
        gauges(
            e,
            "queue_waiting",
            "Conversations waiting in each queue.",
            "queue",
            g.queue_waiting.iter().map(|(q, n)| (q.as_str(), *n)),
        )?;
        gauge(
            e,
            "sip_bindings",
            "Live SIP contact bindings.",
            g.sip_bindings,
        )?;
        gauge(
            e,
            "sip_agents_registered",
            "Agents with at least one live SIP binding.",
            g.agents_registered,
        )?;
        gauges(
            e,
            "sip_calls",
            "SIP calls held by the proxy, by state.",
            "state",
            [
                ("waiting", g.calls_waiting),
                ("ringing", g.calls_ringing),
                ("talking", g.calls_talking),
            ],
        )?;
        gauge(e, "timers", "Deadlines in the timing wheel.", g.timers)?;
        gauge(
            e,
            "outbox_pending",
            "Agent replies waiting for webhook delivery.",
            g.outbox_pending,
        )
    }
}

/// The driver's counters, read at each scrape.
#[derive(Debug)]
struct DriverCollector(Arc<DriverMetrics>);

impl Collector for DriverCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let d = &self.0;
        let e = &mut enc;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let secs = |micros: u64| micros as f64 / 1_000_000.0;
        counter(
            e,
            "commands",
            "Commands run by the driver.",
            load(&d.commands),
        )?;
        counter(
            e,
            "batches",
            "Command batches run by the driver.",
            load(&d.batches),
        )?;
        counter(
            e,
            "commits",
            "Store transactions committed.",
            load(&d.commits),
        )?;
        counter(
            e,
            "store_writes",
            "Records written to the store.",
            load(&d.writes),
        )?;
        counter(
            e,
            "commit_seconds",
            "Time spent committing store transactions.",
            secs(load(&d.commit_micros_total)),
        )?;
        gauge(
            e,
            "commit_seconds_max",
            "Longest store commit since start.",
            secs(load(&d.commit_micros_max)),
        )?;
        counter(
            e,
            "sockets_dropped_slow",
            "Sockets dropped because they did not keep up with their frames.",
            load(&d.sockets_dropped_slow),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::new(Arc::default());
        let mut g = Gauges::default();
        g.queue_waiting.insert("a\"b\\c\nd".into(), 1);
        let text = m.render(Counters::default(), g);
        assert!(
            text.contains("switchboard_queue_waiting{queue=\"a\\\"b\\\\c\\nd\"} 1\n"),
            "{text}"
        );
    }

    #[test]
    fn counters_keep_their_total_names_and_both_rate_limit_series_exist() {
        let m = Metrics::new(Arc::default());
        m.sip.garbage.inc();
        m.http.login_rate_limited.inc();
        let text = m.render(Counters::default(), Gauges::default());
        for line in [
            "# HELP switchboard_sip_garbage_total SIP datagrams dropped as unparseable.\n",
            "# TYPE switchboard_sip_garbage_total counter\n",
            "switchboard_sip_garbage_total 1\n",
            "# TYPE switchboard_commit_seconds_total counter\n",
            "# TYPE switchboard_commit_seconds_max gauge\n",
            "switchboard_rate_limited_total{limit=\"login\"} 1\n",
            "switchboard_rate_limited_total{limit=\"chats\"} 0\n",
            "switchboard_open_conversations{status=\"wrap_up\"} 0\n",
        ] {
            assert!(text.contains(line), "{line:?} missing from\n{text}");
        }
    }
}
