//! Driver layer: the frame queue of one socket. Frames that carry the latest state of an
//! entity (an agent, a queue, a conversation, a presence…) replace that entity's frame still
//! waiting in the queue, so a burst of thousands of changes leaves at most one frame per
//! entity and never overflows a slow-but-reading client. Other frames (messages, session
//! ends, closes) keep every one, in order, up to a bound; beyond the bound the socket is
//! dropped. No tokio I/O here, only a mutex and a wake-up.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;
use uuid::Uuid;

/// A frame for one socket.
#[derive(Debug, Clone)]
pub enum Outgoing {
    Text(Arc<str>),
    Close(u16, &'static str),
}

/// The entity whose latest state a frame carries; a newer frame with the same key replaces
/// the one still queued.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FrameKey {
    Agent(String),
    Queue(String),
    Conversation(Uuid),
    /// A Dashboard alert: raised, then cleared (the clear replaces a raise still queued).
    Alert(Uuid),
    /// A per-socket state frame kind that has a single entity (presence, capabilities, a
    /// chat's status…), named by its `type`.
    Kind(&'static str),
}

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    #[error("the socket's queue is full")]
    Full,
    #[error("the socket is gone")]
    Closed,
}

#[derive(Debug, Default)]
struct State {
    /// Queued frames by sequence number: first = next to send.
    frames: BTreeMap<u64, (Option<FrameKey>, Outgoing)>,
    /// Where each keyed frame sits in `frames`.
    keyed: HashMap<FrameKey, u64>,
    next: u64,
    /// Frames without a key (bounded separately: they are never replaced).
    unkeyed: usize,
    senders: usize,
    receiver: bool,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    wake: Notify,
    /// Most unkeyed frames queued at once.
    max_unkeyed: usize,
    /// Most frames of any kind queued at once.
    max_total: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind: keep using it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The driver's end of one socket's queue (cheap to clone).
#[derive(Debug)]
pub struct FrameTx(Arc<Shared>);

/// The socket task's end: frames in order, then `None` once every sender is gone.
#[derive(Debug)]
pub struct FrameRx(Arc<Shared>);

/// A queue holding at most `max_unkeyed` frames without a key (and at most 64 times as
/// many frames in all).
pub fn channel(max_unkeyed: usize) -> (FrameTx, FrameRx) {
    let max_unkeyed = max_unkeyed.max(1);
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            senders: 1,
            receiver: true,
            ..State::default()
        }),
        wake: Notify::new(),
        max_unkeyed,
        max_total: max_unkeyed.saturating_mul(64),
    });
    (FrameTx(shared.clone()), FrameRx(shared))
}

impl FrameTx {
    /// Queues a frame at once; a keyed frame replaces the queued frame of the same entity.
    pub fn push(&self, key: Option<FrameKey>, frame: Outgoing) -> Result<(), PushError> {
        let mut st = self.0.lock();
        if !st.receiver {
            return Err(PushError::Closed);
        }
        let replaced = match &key {
            Some(k) => st.keyed.get(k).copied(),
            None => None,
        };
        if let Some(seq) = replaced {
            st.frames.remove(&seq);
        } else if (key.is_none() && st.unkeyed >= self.0.max_unkeyed)
            || st.frames.len() >= self.0.max_total
        {
            return Err(PushError::Full);
        }
        let seq = st.next;
        st.next += 1;
        match &key {
            Some(k) => {
                st.keyed.insert(k.clone(), seq);
            }
            None => st.unkeyed += 1,
        }
        st.frames.insert(seq, (key, frame));
        drop(st);
        self.0.wake.notify_one();
        Ok(())
    }

    /// Queues an unkeyed frame (the channel-like form).
    pub async fn send(&self, frame: Outgoing) -> Result<(), PushError> {
        self.push(None, frame)
    }

    /// Frames queued and not yet taken.
    pub fn len(&self) -> usize {
        self.0.lock().frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Clone for FrameTx {
    fn clone(&self) -> Self {
        self.0.lock().senders += 1;
        FrameTx(self.0.clone())
    }
}

impl Drop for FrameTx {
    fn drop(&mut self) {
        let last = {
            let mut st = self.0.lock();
            st.senders -= 1;
            st.senders == 0
        };
        if last {
            self.0.wake.notify_one();
        }
    }
}

impl FrameRx {
    /// The next frame; `None` once the queue is empty and the driver let go of the socket.
    pub async fn recv(&mut self) -> Option<Outgoing> {
        loop {
            {
                let mut st = self.0.lock();
                if let Some(frame) = Self::pop(&mut st) {
                    return Some(frame);
                }
                if st.senders == 0 {
                    return None;
                }
            }
            self.0.wake.notified().await;
        }
    }

    /// The next frame if one is queued now (never waits): a socket writes what has piled
    /// up in one go.
    pub fn try_recv(&mut self) -> Option<Outgoing> {
        Self::pop(&mut self.0.lock())
    }

    fn pop(st: &mut State) -> Option<Outgoing> {
        let (seq, (key, frame)) = st.frames.pop_first()?;
        match key {
            Some(k) => {
                if st.keyed.get(&k) == Some(&seq) {
                    st.keyed.remove(&k);
                }
            }
            None => st.unkeyed -= 1,
        }
        if st.frames.is_empty() {
            // Give the memory of a burst back instead of keeping its high mark.
            st.keyed.shrink_to_fit();
        }
        Some(frame)
    }
}

impl Drop for FrameRx {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.receiver = false;
        st.frames.clear();
        st.keyed = HashMap::new();
        st.unkeyed = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Outgoing {
        Outgoing::Text(Arc::from(s))
    }

    fn body(f: Option<Outgoing>) -> String {
        match f {
            Some(Outgoing::Text(t)) => t.to_string(),
            Some(Outgoing::Close(code, _)) => format!("close {code}"),
            None => "end".into(),
        }
    }

    #[tokio::test]
    async fn a_newer_state_of_an_entity_replaces_the_queued_one_and_moves_to_its_place_in_time() {
        let (tx, mut rx) = channel(8);
        let a = || Some(FrameKey::Agent("alice".into()));
        tx.push(a(), text("alice 1")).unwrap();
        tx.push(None, text("message")).unwrap();
        tx.push(Some(FrameKey::Queue("q".into())), text("queue 1"))
            .unwrap();
        tx.push(a(), text("alice 2")).unwrap();
        assert_eq!(tx.len(), 3);
        assert_eq!(body(rx.recv().await), "message");
        assert_eq!(body(rx.recv().await), "queue 1");
        assert_eq!(body(rx.recv().await), "alice 2");
    }

    #[tokio::test]
    async fn a_burst_of_changes_to_few_entities_never_fills_the_queue() {
        let (tx, mut rx) = channel(4);
        for round in 0..10_000 {
            for agent in 0..50 {
                let key = Some(FrameKey::Agent(format!("a{agent}")));
                tx.push(key, text(&format!("a{agent} {round}"))).unwrap();
            }
        }
        assert_eq!(tx.len(), 50);
        assert_eq!(body(rx.recv().await), "a0 9999");
    }

    #[tokio::test]
    async fn unkeyed_frames_are_all_kept_up_to_the_bound_then_refused() {
        let (tx, mut rx) = channel(3);
        for i in 0..3 {
            tx.push(None, text(&format!("m{i}"))).unwrap();
        }
        assert_eq!(tx.push(None, text("m3")), Err(PushError::Full));
        // Keyed frames still fit; taking one frame makes room again.
        tx.push(Some(FrameKey::Kind("presence")), text("p"))
            .unwrap();
        assert_eq!(body(rx.recv().await), "m0");
        tx.push(None, text("m3")).unwrap();
        for want in ["m1", "m2", "p", "m3"] {
            assert_eq!(body(rx.recv().await), want);
        }
    }

    #[tokio::test]
    async fn the_total_is_bounded_even_for_distinct_entities() {
        let (tx, _rx) = channel(1);
        for i in 0..64 {
            tx.push(Some(FrameKey::Conversation(Uuid::from_u128(i))), text("c"))
                .unwrap();
        }
        let more = tx.push(Some(FrameKey::Conversation(Uuid::from_u128(64))), text("c"));
        assert_eq!(more, Err(PushError::Full));
    }

    #[tokio::test]
    async fn try_recv_takes_what_is_queued_without_waiting() {
        let (tx, mut rx) = channel(4);
        assert!(rx.try_recv().is_none());
        tx.push(None, text("a")).unwrap();
        tx.push(Some(FrameKey::Alert(Uuid::from_u128(1))), text("raised"))
            .unwrap();
        tx.push(Some(FrameKey::Alert(Uuid::from_u128(1))), text("cleared"))
            .unwrap();
        assert_eq!(body(rx.try_recv()), "a");
        assert_eq!(body(rx.try_recv()), "cleared");
        assert!(rx.try_recv().is_none());
        assert_eq!(tx.len(), 0);
    }

    #[tokio::test]
    async fn the_receiver_drains_then_ends_when_every_sender_is_gone() {
        let (tx, mut rx) = channel(4);
        let other = tx.clone();
        tx.push(None, text("last")).unwrap();
        drop(tx);
        other
            .push(None, Outgoing::Close(4001, "taken over"))
            .unwrap();
        drop(other);
        assert_eq!(body(rx.recv().await), "last");
        assert_eq!(body(rx.recv().await), "close 4001");
        assert_eq!(body(rx.recv().await), "end");
    }

    #[tokio::test]
    async fn a_waiting_receiver_wakes_on_a_frame_and_a_gone_receiver_refuses_frames() {
        let (tx, mut rx) = channel(4);
        let task = tokio::spawn(async move {
            let first = body(rx.recv().await);
            (first, rx)
        });
        tokio::task::yield_now().await;
        tx.push(None, text("hello")).unwrap();
        let (first, rx) = task.await.unwrap();
        assert_eq!(first, "hello");
        drop(rx);
        assert_eq!(tx.push(None, text("x")), Err(PushError::Closed));
    }
}
