//! Demo layer: the simulated trunk — one UDP SIP user agent on loopback standing for the
//! customers' telephone network. The demo lists its address in `sip.trunks` and names it as
//! `sip.outbound_proxy`: it places the customers' calls to the voice queue ([`super::dial`])
//! and answers the callbacks switchboard places through it ([`super::answer`]). This module
//! is the socket loop; what is said is decided by those two pure machines.

use super::answer::{self, Answerer, Pickup};
use super::dial::{self, Dialer, Placed};
use super::phone::until;
use crate::driver::Clock;
use crate::sip::message::{SipMessage, parse};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

/// What the simulated trunk has seen so far (read by the tests).
#[derive(Debug, Default)]
pub struct TrunkCounts {
    /// Customers' calls sent to switchboard.
    pub placed: AtomicU64,
    /// Calls an agent's phone answered.
    pub answered: AtomicU64,
    /// Calls the customer hung up after talking.
    pub customer_hung_up: AtomicU64,
    /// Calls switchboard hung up (the agent ended it, or the call dropped).
    pub hung_up_by_center: AtomicU64,
    /// Customers who gave up waiting (CANCEL).
    pub gave_up: AtomicU64,
    /// Calls refused or ended by switchboard before an answer.
    pub failed: AtomicU64,
    /// Callbacks that reached the trunk and were answered by the customer.
    pub callbacks_answered: AtomicU64,
    /// Callbacks connected (the ACK came, with the agent's phone on the other side).
    pub callbacks_connected: AtomicU64,
}

impl TrunkCounts {
    fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The current value of a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// The customer picks up a callback after a few rings and talks for a while.
fn pick_callback(rng: &mut StdRng) -> Pickup {
    Pickup::Answer {
        after: rng.gen_range(2_000..=5_000),
        talk: Some(rng.gen_range(60_000..=150_000)),
    }
}

/// Runs the trunk on `sock`, talking to switchboard at `server`: places every call sent on
/// `calls`, answers callbacks, until `stop`.
pub(crate) async fn run(
    sock: UdpSocket,
    server: SocketAddr,
    clock: Clock,
    seed: u64,
    mut calls: mpsc::UnboundedReceiver<Placed>,
    counts: Arc<TrunkCounts>,
    mut stop: watch::Receiver<bool>,
) {
    let Ok(local) = sock.local_addr() else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(seed);
    let mut dialer = Dialer::new(local, server);
    let mut callbacks = Answerer::new("customer", local);
    let mut calls_open = true;
    let mut buf = vec![0u8; 65_536];
    loop {
        let next = [dialer.next_due(), callbacks.next_due()]
            .into_iter()
            .flatten()
            .min();
        let mut send: Vec<Vec<u8>> = Vec::new();
        let mut dialled: Vec<dial::Note> = Vec::new();
        let mut answered: Vec<answer::Note> = Vec::new();
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            placed = calls.recv(), if calls_open => match placed {
                Some(p) => match dialer.place(clock.now().mono, &p) {
                    Some((call_id, invite)) => {
                        TrunkCounts::add(&counts.placed);
                        tracing::debug!(%call_id, customer = %p.number, "demo trunk: calling the queue");
                        send.push(invite);
                    }
                    None => tracing::debug!("demo trunk: too many calls at once"),
                },
                None => calls_open = false,
            },
            r = sock.recv_from(&mut buf) => {
                let Ok((n, from)) = r else { continue };
                if from != server {
                    continue;
                }
                let now = clock.now().mono;
                match parse(buf.get(..n).unwrap_or_default()) {
                    Ok(SipMessage::Request(req)) => match dialer.on_request(now, &req) {
                        Some(out) => {
                            send = out.send;
                            dialled = out.notes;
                        }
                        None => {
                            let out = callbacks.on_request(now, &req, |_| pick_callback(&mut rng));
                            send = out.send;
                            answered = out.notes;
                        }
                    },
                    Ok(SipMessage::Response(resp)) => {
                        let out = dialer.on_response(now, &resp);
                        send = out.send;
                        dialled = out.notes;
                        callbacks.on_response(&resp);
                    }
                    Err(_) => {}
                }
            }
            _ = until(&clock, next) => {
                let now = clock.now().mono;
                let out = dialer.on_time(now);
                send = out.send;
                dialled = out.notes;
                let out = callbacks.on_time(now);
                send.extend(out.send);
                answered = out.notes;
            }
        }
        for bytes in send {
            if let Err(e) = sock.send_to(&bytes, server).await {
                tracing::debug!(error = %e, "demo trunk: send failed");
            }
        }
        for note in dialled {
            let counter = match note {
                dial::Note::Answered { .. } => &counts.answered,
                dial::Note::GaveUp { .. } => &counts.gave_up,
                dial::Note::HungUp { .. } => &counts.customer_hung_up,
                dial::Note::HungUpOnUs { .. } => &counts.hung_up_by_center,
                dial::Note::Failed { .. } => &counts.failed,
            };
            TrunkCounts::add(counter);
        }
        for note in answered {
            match note {
                answer::Note::Answered { .. } => TrunkCounts::add(&counts.callbacks_answered),
                answer::Note::Connected { call_id, .. } => {
                    TrunkCounts::add(&counts.callbacks_connected);
                    tracing::info!(%call_id, "demo: the customer answers the agent's callback");
                }
                _ => {}
            }
        }
    }
}
