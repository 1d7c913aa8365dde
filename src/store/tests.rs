use super::tables::*;
use super::*;
use crate::config::Channel;
use crate::config::{AgentConfig, Capacity, Config, QueueConfig, RequeuePosition};
use crate::core::model::*;
use crate::core::time::Timestamp;
use crate::core::{Command, Core, Now, Reply};
use ::redb::ReadableDatabase;
use std::collections::BTreeMap;
use std::sync::Arc;

const T0: i64 = 1_795_428_900_000;

fn id(n: u128) -> Uuid {
    // Version-7-shaped ids whose order is the creation order.
    Uuid::from_u128((0x0190_0000_0000_7000_8000_0000_0000_0000) | n)
}

fn conversation(n: u128, group: u128, status: Status) -> Conversation {
    let assigned = status.is_assigned() || status.is_closed();
    Conversation {
        id: id(n),
        group_id: id(group),
        medium: Medium::Webchat,
        queue: "chat".into(),
        status,
        agent: assigned.then(|| "alice".to_string()),
        last_agent: assigned.then(|| "alice".to_string()),
        customer: Customer {
            name: format!("customer {n}"),
            address: format!("c{n}"),
        },
        subject: None,
        origin: Origin {
            kind: OriginKind::Inbound,
            previous: None,
        },
        queue_arrival_time: Timestamp(T0 + n as i64),
        queue_rank: T0 + n as i64,
        created_at: Timestamp(T0 + n as i64),
        ended_at: status.is_closed().then_some(Timestamp(T0 + 1_000)),
        disconnect_party: None,
        disconnect_reason: None,
        metadata: Metadata::default(),
        thread: None,
        offer_expires_at: None,
        declined_by: Vec::new(),
        event_count: 0,
    }
}

fn put(c: &Conversation) -> Write {
    Write::Conversation(Box::new(c.clone()))
}

fn event(agent: Option<&str>) -> Event {
    Event {
        at: Timestamp(T0),
        event: EventKind::Queued,
        agent: agent.map(String::from),
        detail: None,
    }
}

fn session(n: u128, token: u8) -> Session {
    Session {
        id: id(n),
        user: "alice".into(),
        role: Role::Agent,
        token_hash: [token; 32],
        state: SessionState::Disconnected,
        created_at: Timestamp(T0),
        disconnected_at: Some(Timestamp(T0 + 5)),
        deadline: Some(Timestamp(T0 + 60_005)),
    }
}

fn draft(memo: &str) -> Metadata {
    Metadata {
        script: BTreeMap::from([("q".into(), "a".into())]),
        memo: memo.into(),
    }
}

/// Either backend's invariant check.
trait Checked {
    fn check(&self) -> Result<(), String>;
}

impl Checked for Store {
    fn check(&self) -> Result<(), String> {
        self.check_invariants()
    }
}

impl Checked for RedbStore {
    fn check(&self) -> Result<(), String> {
        self.check_invariants()
    }
}

fn assert_ok(store: &impl Checked) {
    if let Err(problems) = store.check() {
        panic!("invariants broken:\n{problems}");
    }
}

fn every_record_type_round_trips_through_the_store(open: &dyn Fn() -> Store) {
    let store = open();
    let mut open = conversation(1, 1, Status::InProcess);
    open.thread = Some(id(50));
    open.event_count = 1;
    let mut closed = conversation(2, 1, Status::Handled);
    closed.metadata = draft("saved");
    closed.event_count = 1;
    let thread = Thread {
        id: id(50),
        group_id: id(1),
        medium: Medium::Webchat,
        customer: open.customer.clone(),
        token_hash: Some([9; 32]),
        current: id(1),
        open: true,
        message_count: 1,
    };
    let message = Message {
        id: id(60),
        from: Sender::Customer,
        text: "hello".into(),
        at: Timestamp(T0),
        delivery: None,
    };
    let agent = AgentRecord {
        id: "alice".into(),
        presence: Presence::Ready,
        idle_since: [Timestamp(T0); 3],
        bindings: vec![Binding {
            contact: "sip:alice@10.0.0.9".into(),
            expires_at: Timestamp(T0 + 30_000),
        }],
        sip_lost: false,
    };
    let outbox = OutboxItem {
        message_id: id(70),
        conversation_id: id(1),
        thread_id: id(50),
        medium: Medium::Sms,
        to: "+15550100".into(),
        subject: None,
        text: "reply".into(),
        agent: "alice".into(),
        created_at: Timestamp(T0),
        attempts: 1,
        next_attempt_at: Timestamp(T0 + 2_000),
    };
    store
        .apply(&[
            put(&open),
            put(&closed),
            Write::Event {
                conversation: id(1),
                seq: 0,
                event: event(Some("alice")),
            },
            Write::Event {
                conversation: id(2),
                seq: 0,
                event: event(None),
            },
            Write::Thread(Box::new(thread.clone())),
            Write::Message {
                thread: id(50),
                seq: 0,
                message: message.clone(),
            },
            Write::Session(Box::new(session(40, 1))),
            Write::Draft {
                session: id(40),
                conversation: id(1),
                draft: Some(draft("typing")),
            },
            Write::Agent(Box::new(agent.clone())),
            Write::Outbox(Box::new(outbox.clone())),
        ])
        .unwrap();
    assert_ok(&store);

    let r = store.load().unwrap();
    assert_eq!(r.conversations, vec![open.clone()]);
    assert_eq!(r.events, vec![(id(1), vec![event(Some("alice"))])]);
    assert_eq!(r.threads, vec![(thread, vec![message.clone()])]);
    assert_eq!(r.sessions, vec![session(40, 1)]);
    assert_eq!(r.drafts, vec![(id(40), id(1), draft("typing"))]);
    assert_eq!(r.agents, vec![agent]);
    assert_eq!(r.outbox, vec![outbox]);

    assert_eq!(
        store.conversation(id(2)).unwrap(),
        Some((closed, vec![event(None)]))
    );
    assert_eq!(store.conversation(id(3)).unwrap(), None);
    assert_eq!(store.messages(id(50)).unwrap(), vec![message]);
    assert!(store.messages(id(51)).unwrap().is_empty());
}

fn indexes_follow_a_conversation_through_its_states(open: &dyn Fn() -> Store) {
    let store = open();
    let mut c = conversation(1, 1, Status::InQueue);
    store.apply(&[put(&c)]).unwrap();
    assert_ok(&store);
    let waiting = |s: &Store| {
        s.search(&SearchQuery {
            status: Some(Status::InQueue),
            ..Default::default()
        })
    };
    assert_eq!(waiting(&store).unwrap().len(), 1);

    // Front-of-queue requeue changes the rank while in the queue: the old entry goes.
    c.queue_rank -= 500;
    store.apply(&[put(&c)]).unwrap();
    assert_ok(&store);

    c.status = Status::Offered;
    c.agent = Some("alice".into());
    store.apply(&[put(&c)]).unwrap();
    assert_ok(&store);
    assert!(waiting(&store).unwrap().is_empty());
    assert_eq!(store.load().unwrap().conversations.len(), 1);

    c.status = Status::Handled;
    c.ended_at = Some(Timestamp(T0 + 9));
    store.apply(&[put(&c)]).unwrap();
    assert_ok(&store);
    assert!(store.load().unwrap().conversations.is_empty());
    assert_eq!(store.group(id(1)).unwrap(), vec![c]);
}

fn session_token_change_and_session_end_keep_tokens_and_drafts_in_step(open: &dyn Fn() -> Store) {
    let store = open();
    let other = session(41, 7);
    store
        .apply(&[
            Write::Session(Box::new(session(40, 1))),
            Write::Session(Box::new(other.clone())),
            Write::Draft {
                session: id(40),
                conversation: id(1),
                draft: Some(draft("a")),
            },
            Write::Draft {
                session: id(40),
                conversation: id(2),
                draft: Some(draft("b")),
            },
            Write::Draft {
                session: id(41),
                conversation: id(3),
                draft: Some(draft("c")),
            },
        ])
        .unwrap();
    assert_ok(&store);

    // Takeover: same session, new token.
    store
        .apply(&[Write::Session(Box::new(session(40, 2)))])
        .unwrap();
    assert_ok(&store);

    // One draft saved, then the session ends: the rest of its drafts go, the other session's stay.
    store
        .apply(&[Write::Draft {
            session: id(40),
            conversation: id(1),
            draft: None,
        }])
        .unwrap();
    assert_eq!(store.load().unwrap().drafts.len(), 2);
    store
        .apply(&[Write::SessionEnded {
            id: id(40),
            token_hash: [2; 32],
        }])
        .unwrap();
    assert_ok(&store);
    let r = store.load().unwrap();
    assert_eq!(r.sessions, vec![other]);
    assert_eq!(r.drafts, vec![(id(41), id(3), draft("c"))]);

    store
        .apply(&[Write::DraftsCleared { session: id(41) }])
        .unwrap();
    assert!(store.load().unwrap().drafts.is_empty());
    assert_ok(&store);
}

fn outbox_done_deletes_the_item_and_events_replace_by_sequence(open: &dyn Fn() -> Store) {
    let store = open();
    let mut c = conversation(1, 1, Status::InProcess);
    c.event_count = 1;
    let item = OutboxItem {
        message_id: id(70),
        conversation_id: id(1),
        thread_id: id(50),
        medium: Medium::Email,
        to: "ann@example.com".into(),
        subject: Some("Re: hi".into()),
        text: "reply".into(),
        agent: "alice".into(),
        created_at: Timestamp(T0),
        attempts: 0,
        next_attempt_at: Timestamp(T0),
    };
    store
        .apply(&[
            put(&c),
            Write::Event {
                conversation: id(1),
                seq: 0,
                event: event(None),
            },
            Write::Event {
                conversation: id(1),
                seq: 0,
                event: event(Some("bob")),
            },
            Write::Outbox(Box::new(item)),
        ])
        .unwrap();
    assert_eq!(
        store.conversation(id(1)).unwrap().unwrap().1,
        vec![event(Some("bob"))]
    );
    assert_eq!(store.load().unwrap().outbox.len(), 1);
    store
        .apply(&[Write::OutboxDone { message: id(70) }])
        .unwrap();
    assert!(store.load().unwrap().outbox.is_empty());
    assert_ok(&store);
}

fn search_filters_and_lists_newest_first(open: &dyn Fn() -> Store) {
    let store = open();
    let mut writes = Vec::new();
    for n in 1..=6u128 {
        let status = if n % 2 == 0 {
            Status::Handled
        } else {
            Status::InQueue
        };
        let mut c = conversation(n, n, status);
        if n == 3 {
            c.medium = Medium::Voice;
            c.queue = "voice".into();
        }
        if n == 4 {
            c.agent = Some("bob".into());
        }
        writes.push(put(&c));
    }
    store.apply(&writes).unwrap();
    let ids = |q: SearchQuery| -> Vec<Uuid> {
        store
            .search(&q)
            .unwrap()
            .into_iter()
            .map(|c| c.id)
            .collect()
    };

    assert_eq!(
        ids(SearchQuery::default()),
        vec![id(6), id(5), id(4), id(3), id(2), id(1)]
    );
    assert_eq!(
        ids(SearchQuery {
            limit: 2,
            ..Default::default()
        }),
        vec![id(6), id(5)]
    );
    assert_eq!(
        ids(SearchQuery {
            limit: 0,
            ..Default::default()
        }),
        Vec::<Uuid>::new()
    );
    assert_eq!(
        ids(SearchQuery {
            status: Some(Status::InQueue),
            ..Default::default()
        }),
        vec![id(5), id(3), id(1)]
    );
    assert_eq!(
        ids(SearchQuery {
            status: Some(Status::InQueue),
            limit: 1,
            ..Default::default()
        }),
        vec![id(5)]
    );
    assert_eq!(
        ids(SearchQuery {
            status: Some(Status::Handled),
            ..Default::default()
        }),
        vec![id(6), id(4), id(2)]
    );
    assert_eq!(
        ids(SearchQuery {
            queue: Some("voice".into()),
            ..Default::default()
        }),
        vec![id(3)]
    );
    assert_eq!(
        ids(SearchQuery {
            channel: Some(Channel::Voice),
            ..Default::default()
        }),
        vec![id(3)]
    );
    assert_eq!(
        ids(SearchQuery {
            channel: Some(Channel::Chat),
            status: Some(Status::InQueue),
            ..Default::default()
        }),
        vec![id(5), id(1)]
    );
    assert_eq!(
        ids(SearchQuery {
            agent: Some("bob".into()),
            ..Default::default()
        }),
        vec![id(4)]
    );
    assert_eq!(
        ids(SearchQuery {
            agent: Some("alice".into()),
            ..Default::default()
        }),
        vec![id(6), id(2)]
    );
    assert_eq!(
        ids(SearchQuery {
            queue: Some("nope".into()),
            ..Default::default()
        }),
        Vec::<Uuid>::new()
    );
}

fn search_pages_with_before_walk_all_history_newest_first(open: &dyn Fn() -> Store) {
    let store = open();
    let writes: Vec<Write> = (1..=5u128)
        .map(|n| {
            let status = if n == 4 {
                Status::InQueue
            } else {
                Status::Handled
            };
            put(&conversation(n, n, status))
        })
        .collect();
    store.apply(&writes).unwrap();
    let page = |before: Option<Uuid>, status: Option<Status>| -> Vec<Uuid> {
        store
            .search(&SearchQuery {
                before,
                status,
                limit: 2,
                ..Default::default()
            })
            .unwrap()
            .into_iter()
            .map(|c| c.id)
            .collect()
    };
    assert_eq!(page(None, None), vec![id(5), id(4)]);
    assert_eq!(page(Some(id(4)), None), vec![id(3), id(2)]);
    assert_eq!(page(Some(id(2)), None), vec![id(1)]);
    assert_eq!(page(Some(id(1)), None), Vec::<Uuid>::new());
    // Filters apply to the page after the cursor, open work included.
    assert_eq!(page(Some(id(5)), Some(Status::InQueue)), vec![id(4)]);
    assert_eq!(page(Some(id(4)), Some(Status::InQueue)), Vec::<Uuid>::new());
}

fn search_limit_is_capped(open: &dyn Fn() -> Store) {
    let store = open();
    let writes: Vec<Write> = (1..=1005u128)
        .map(|n| put(&conversation(n, 1, Status::Handled)))
        .collect();
    store.apply(&writes).unwrap();
    let found = store
        .search(&SearchQuery {
            limit: 5000,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(found.len(), SearchQuery::MAX_LIMIT);
    assert_eq!(found[0].id, id(1005));
}

/// A conversation with the four searchable fields set as given.
fn searchable(
    n: u128,
    queue: &str,
    medium: Medium,
    status: Status,
    agent: Option<&str>,
) -> Conversation {
    let mut c = conversation(n, n, status);
    c.queue = queue.into();
    c.medium = medium;
    c.agent = agent.map(String::from);
    c.last_agent = c.agent.clone();
    c
}

fn search_ids(store: &Store, q: SearchQuery) -> Vec<Uuid> {
    store
        .search(&q)
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect()
}

const NONE: Vec<Uuid> = Vec::new();

fn ids_of(ns: &[u128]) -> Vec<Uuid> {
    ns.iter().map(|n| id(*n)).collect()
}

fn search_combines_filters_pages_them_and_finds_nothing_for_unknown_values(
    open: &dyn Fn() -> Store,
) {
    let store = open();
    use Medium::*;
    use Status::*;
    let all = [
        searchable(1, "voice", Voice, Handled, Some("alice")),
        searchable(2, "chat", Webchat, Handled, Some("bob")),
        searchable(3, "chat", Sms, Abandoned, None),
        searchable(4, "mail", Email, Handled, Some("alice")),
        searchable(5, "chat", Webchat, InProcess, Some("bob")),
        searchable(6, "voice", Voice, Abandoned, None),
        searchable(7, "chat", Social, Handled, Some("alice")),
        searchable(8, "mail", Email, InQueue, None),
        searchable(9, "chat", Webchat, Handled, Some("bob")),
    ];
    store
        .apply(&all.iter().map(put).collect::<Vec<_>>())
        .unwrap();
    assert_ok(&store);
    let q =
        |status: Option<Status>, queue: Option<&str>, agent: Option<&str>, channel| SearchQuery {
            status,
            queue: queue.map(String::from),
            agent: agent.map(String::from),
            channel,
            ..Default::default()
        };
    let find = |query: SearchQuery| search_ids(&store, query);
    assert_eq!(
        find(q(Some(Handled), None, Some("alice"), None)),
        ids_of(&[7, 4, 1])
    );
    assert_eq!(
        find(q(Some(Handled), None, None, Some(Channel::Chat))),
        ids_of(&[9, 7, 2])
    );
    assert_eq!(
        find(q(None, Some("chat"), Some("bob"), None)),
        ids_of(&[9, 5, 2])
    );
    assert_eq!(
        find(q(
            Some(InProcess),
            Some("chat"),
            Some("bob"),
            Some(Channel::Chat)
        )),
        ids_of(&[5])
    );
    assert_eq!(
        find(q(Some(InQueue), None, None, Some(Channel::Email))),
        ids_of(&[8])
    );
    assert_eq!(find(q(Some(Abandoned), None, None, None)), ids_of(&[6, 3]));

    // Filters that each match something but never together, and values nobody has.
    assert_eq!(
        find(q(None, Some("voice"), None, Some(Channel::Email))),
        NONE
    );
    assert_eq!(find(q(Some(Abandoned), None, Some("alice"), None)), NONE);
    assert_eq!(find(q(Some(InQueue), Some("chat"), None, None)), NONE);
    assert_eq!(find(q(None, None, Some("nobody"), None)), NONE);
    assert_eq!(find(q(Some(Handled), Some("nope"), None, None)), NONE);
    assert_eq!(find(q(None, Some(""), Some(""), None)), NONE);
    assert_eq!(find(q(Some(Offered), None, None, None)), NONE);

    // `before=` and `limit` with filters: the next page of the same filtered list.
    let page = |query: SearchQuery, before: u128, limit: usize| {
        find(SearchQuery {
            before: Some(id(before)),
            limit,
            ..query
        })
    };
    assert_eq!(
        page(
            q(Some(Handled), None, Some("bob"), Some(Channel::Chat)),
            9,
            100
        ),
        ids_of(&[2])
    );
    assert_eq!(
        page(q(None, Some("chat"), None, None), 7, 2),
        ids_of(&[5, 3])
    );
    assert_eq!(page(q(None, Some("chat"), None, None), 3, 2), ids_of(&[2]));
    assert_eq!(page(q(None, Some("chat"), None, None), 2, 2), NONE);
    assert_eq!(page(q(None, None, Some("alice"), None), 7, 1), ids_of(&[4]));
    assert_eq!(page(q(None, None, Some("alice"), None), 1, 1), NONE);
    assert_eq!(
        page(
            q(Some(Handled), Some("voice"), None, Some(Channel::Voice)),
            1,
            5
        ),
        NONE
    );
    assert_eq!(
        find(SearchQuery {
            limit: 0,
            ..q(Some(Handled), None, None, None)
        }),
        NONE
    );
}

fn search_finds_a_conversation_only_under_its_current_queue_agent_and_status(
    open: &dyn Fn() -> Store,
) {
    let store = open();
    let other = searchable(2, "chat", Medium::Webchat, Status::Handled, Some("bob"));
    let mut c = searchable(1, "chat", Medium::Webchat, Status::InQueue, None);
    store.apply(&[put(&other), put(&c)]).unwrap();
    let find = |status: Option<Status>, queue: Option<&str>, agent: Option<&str>| {
        search_ids(
            &store,
            SearchQuery {
                status,
                queue: queue.map(String::from),
                agent: agent.map(String::from),
                ..Default::default()
            },
        )
    };
    assert_eq!(find(None, Some("chat"), None), ids_of(&[2, 1]));
    assert_eq!(find(Some(Status::InQueue), None, None), ids_of(&[1]));

    // Transferred to another queue and offered to bob.
    c.queue = "sales".into();
    c.status = Status::Offered;
    c.agent = Some("bob".into());
    store.apply(&[put(&c)]).unwrap();
    assert_ok(&store);
    assert_eq!(find(None, Some("chat"), None), ids_of(&[2]));
    assert_eq!(find(Some(Status::InQueue), None, None), NONE);
    assert_eq!(find(None, Some("sales"), Some("bob")), ids_of(&[1]));
    assert_eq!(find(Some(Status::Offered), None, Some("bob")), ids_of(&[1]));

    // Taken over by alice.
    c.status = Status::InProcess;
    c.agent = Some("alice".into());
    store.apply(&[put(&c)]).unwrap();
    assert_ok(&store);
    assert_eq!(find(None, None, Some("bob")), ids_of(&[2]));
    assert_eq!(find(Some(Status::Offered), None, None), NONE);
    assert_eq!(find(None, Some("sales"), Some("alice")), ids_of(&[1]));

    // Closed.
    c.status = Status::Handled;
    c.ended_at = Some(Timestamp(T0 + 50));
    store.apply(&[put(&c)]).unwrap();
    assert_ok(&store);
    assert_eq!(find(Some(Status::InProcess), None, None), NONE);
    assert_eq!(find(Some(Status::Handled), None, None), ids_of(&[2, 1]));
    assert_eq!(
        find(Some(Status::Handled), Some("sales"), Some("alice")),
        ids_of(&[1])
    );
    assert_eq!(
        find(Some(Status::Handled), Some("chat"), Some("alice")),
        NONE
    );

    // A put that changes none of the searched fields leaves the results as they were.
    c.metadata = draft("noted");
    store.apply(&[put(&c)]).unwrap();
    assert_ok(&store);
    assert_eq!(find(None, None, Some("alice")), ids_of(&[1]));
}

fn group_lists_oldest_first_and_knows_who_worked_in_it(open: &dyn Fn() -> Store) {
    let store = open();
    let mut a = conversation(3, 9, Status::Handled);
    a.created_at = Timestamp(T0 + 10);
    let mut b = conversation(1, 9, Status::InQueue);
    b.created_at = Timestamp(T0 + 20);
    let mut c = conversation(2, 9, Status::InQueue);
    c.created_at = Timestamp(T0 + 20);
    c.event_count = 1;
    let other = conversation(4, 8, Status::InQueue);
    store
        .apply(&[
            put(&b),
            put(&a),
            put(&c),
            put(&other),
            Write::Event {
                conversation: id(2),
                seq: 0,
                event: event(Some("carol")),
            },
        ])
        .unwrap();
    let ids: Vec<Uuid> = store
        .group(id(9))
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(ids, vec![id(3), id(1), id(2)]);
    assert!(store.group(id(7)).unwrap().is_empty());

    assert!(store.agent_worked_in_group("alice", id(9)).unwrap());
    assert!(store.agent_worked_in_group("carol", id(9)).unwrap());
    assert!(!store.agent_worked_in_group("dave", id(9)).unwrap());
    assert!(!store.agent_worked_in_group("alice", id(8)).unwrap());
    assert_ok(&store);
}

#[test]
fn a_newer_schema_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested").join(FILE_NAME);
    let store = RedbStore::open(&path).unwrap();
    {
        let txn = store.db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert(SCHEMA_VERSION_KEY, SCHEMA_VERSION + 1)
            .unwrap();
        txn.commit().unwrap();
    }
    drop(store);
    match RedbStore::open(&path) {
        Err(StoreError::NewerSchema { found, supported }) => {
            assert_eq!((found, supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
        }
        other => panic!("expected NewerSchema, got {other:?}"),
    }
}

/// Turns a store file into what schema version 1 wrote: no search tables, version 1.
fn make_version_1(path: &std::path::Path) {
    let db = ::redb::Database::create(path).unwrap();
    let txn = db.begin_write().unwrap();
    for table in ["search_index", "search_counts", "search_mix"] {
        assert!(
            txn.delete_table(::redb::TableDefinition::<u128, u64>::new(table))
                .is_ok()
        );
    }
    txn.open_table(META)
        .unwrap()
        .insert(SCHEMA_VERSION_KEY, 1)
        .unwrap();
    txn.commit().unwrap();
}

fn stored_version(path: &std::path::Path) -> Option<u64> {
    let db = ::redb::Database::create(path).unwrap();
    let txn = db.begin_read().unwrap();
    txn.open_table(META)
        .unwrap()
        .get(SCHEMA_VERSION_KEY)
        .unwrap()
        .map(|v| v.value())
}

#[test]
fn a_version_1_file_is_migrated_at_open_and_searched_from_its_new_index() {
    assert_eq!(SCHEMA_VERSION, 2);
    let dir = tempfile::tempdir().unwrap();
    let path = RedbStore::file_in(dir.path());
    let all = [
        searchable(1, "voice", Medium::Voice, Status::Handled, Some("alice")),
        searchable(2, "chat", Medium::Sms, Status::Abandoned, None),
        searchable(3, "chat", Medium::Webchat, Status::InProcess, Some("bob")),
        searchable(4, "mail", Medium::Email, Status::Handled, Some("bob")),
        searchable(5, "chat", Medium::Webchat, Status::InQueue, None),
    ];
    {
        let store = RedbStore::open(&path).unwrap();
        store
            .apply(&all.iter().map(put).collect::<Vec<_>>())
            .unwrap();
    }
    make_version_1(&path);
    {
        let db = ::redb::Database::create(&path).unwrap();
        let txn = db.begin_read().unwrap();
        assert!(txn.open_table(SEARCH_INDEX).is_err(), "no index before");
    }

    let store = Store::open(&path).unwrap();
    assert_ok(&store);
    let find = |q: SearchQuery| search_ids(&store, q);
    assert_eq!(
        find(SearchQuery {
            agent: Some("bob".into()),
            ..Default::default()
        }),
        ids_of(&[4, 3])
    );
    assert_eq!(
        find(SearchQuery {
            queue: Some("chat".into()),
            status: Some(Status::InQueue),
            ..Default::default()
        }),
        ids_of(&[5])
    );
    assert_eq!(
        find(SearchQuery {
            queue: Some("voice".into()),
            channel: Some(Channel::Chat),
            ..Default::default()
        }),
        NONE
    );
    // Later writes keep the migrated index in step.
    let mut moved = all[2].clone();
    moved.status = Status::Handled;
    moved.agent = Some("alice".into());
    store.apply(&[put(&moved)]).unwrap();
    assert_ok(&store);
    assert_eq!(
        find(SearchQuery {
            agent: Some("alice".into()),
            ..Default::default()
        }),
        ids_of(&[3, 1])
    );
    drop(store);
    assert_eq!(stored_version(&path), Some(SCHEMA_VERSION));
    assert_ok(&RedbStore::open(&path).unwrap());
}

#[test]
fn a_version_1_file_with_an_unreadable_conversation_is_refused_and_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let path = RedbStore::file_in(dir.path());
    {
        let store = RedbStore::open(&path).unwrap();
        store
            .apply(&[put(&conversation(1, 1, Status::Handled))])
            .unwrap();
        let txn = store.db.begin_write().unwrap();
        txn.open_table(CONVERSATIONS)
            .unwrap()
            .insert(id(2).as_u128(), [9u8, 9, 9].as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    make_version_1(&path);
    match RedbStore::open(&path) {
        Err(StoreError::Corrupt { table, key, .. }) => {
            assert_eq!((table, key), ("conversations", id(2).to_string()));
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(stored_version(&path), Some(1));
}

#[test]
fn a_file_older_than_version_1_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = RedbStore::file_in(dir.path());
    drop(RedbStore::open(&path).unwrap());
    make_version_1(&path);
    {
        let db = ::redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert(SCHEMA_VERSION_KEY, 0)
            .unwrap();
        txn.commit().unwrap();
    }
    assert!(matches!(
        RedbStore::open(&path),
        Err(StoreError::OlderSchema {
            found: 0,
            supported: SCHEMA_VERSION
        })
    ));
}

#[test]
fn check_invariants_reports_a_search_index_that_disagrees_with_the_records() {
    let store = RedbStore::in_memory().unwrap();
    store
        .apply(&[put(&searchable(
            1,
            "chat",
            Medium::Webchat,
            Status::Handled,
            Some("alice"),
        ))])
        .unwrap();
    assert_ok(&store);
    let txn = store.db.begin_write().unwrap();
    txn.open_table(SEARCH_INDEX)
        .unwrap()
        .remove((search_index::FIELD_AGENT, "alice", id(1).as_u128()))
        .unwrap();
    txn.open_table(SEARCH_COUNTS)
        .unwrap()
        .insert((search_index::FIELD_QUEUE, "chat"), 5)
        .unwrap();
    txn.commit().unwrap();
    let problems = store.check_invariants().unwrap_err();
    assert!(problems.contains("search_index lacks"), "{problems}");
    assert!(problems.contains("search_counts"), "{problems}");
}

/// What the search returned before it had an index: every stored conversation, newest
/// first, below the cursor, through the query's own filter.
fn linear_search(all: &BTreeMap<Uuid, Conversation>, q: &SearchQuery) -> Vec<Uuid> {
    all.values()
        .rev()
        .filter(|c| q.before.is_none_or(|b| c.id < b))
        .filter(|c| q.matches(c))
        .take(q.limit.min(SearchQuery::MAX_LIMIT))
        .map(|c| c.id)
        .collect()
}

mod search_property {
    use super::*;
    use proptest::prelude::*;

    const QUEUES: [&str; 4] = ["voice", "chat", "mail", "unknown"];
    const AGENTS: [&str; 4] = ["alice", "bob", "carol", "nobody"];
    const STATUSES: [Status; 6] = [
        Status::InQueue,
        Status::Offered,
        Status::InProcess,
        Status::WrapUp,
        Status::Handled,
        Status::Abandoned,
    ];
    const MEDIA: [Medium; 5] = [
        Medium::Voice,
        Medium::Webchat,
        Medium::Sms,
        Medium::Social,
        Medium::Email,
    ];

    /// (conversation number, status, queue, agent (3 = none), medium): one put.
    fn put_strategy() -> impl Strategy<Value = (u128, usize, usize, usize, usize)> {
        (1u128..40, 0..6usize, 0..3usize, 0..4usize, 0..5usize)
    }

    fn query_strategy() -> impl Strategy<Value = SearchQuery> {
        (
            proptest::option::of(0..6usize),
            proptest::option::of(0..4usize),
            proptest::option::of(0..4usize),
            proptest::option::of(0..3usize),
            proptest::option::of(0u128..42),
            0..12usize,
        )
            .prop_map(
                |(status, queue, agent, channel, before, limit)| SearchQuery {
                    status: status.map(|i| STATUSES[i]),
                    queue: queue.map(|i| QUEUES[i].to_string()),
                    agent: agent.map(|i| AGENTS[i].to_string()),
                    channel: channel.map(|i| Channel::ALL[i]),
                    before: before.map(id),
                    limit,
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        /// The indexed search returns exactly what filtering every record did, for random
        /// histories (conversations put again with other fields) and random queries.
        #[test]
        fn indexed_search_equals_the_linear_filter_over_every_record(
            batches in proptest::collection::vec(proptest::collection::vec(put_strategy(), 1..6), 1..12),
            queries in proptest::collection::vec(query_strategy(), 1..24),
        ) {
            let store = Store::in_memory().unwrap();
            let mut all = BTreeMap::new();
            for batch in &batches {
                let mut writes = Vec::new();
                for &(n, status, queue, agent, medium) in batch {
                    let status = STATUSES[status];
                    // As the core keeps them: an agent exactly while assigned, maybe one
                    // once closed.
                    let agent = match status {
                        Status::InQueue => None,
                        s if s.is_assigned() => Some(AGENTS[agent.min(2)]),
                        _ => (agent < 3).then_some(AGENTS[agent]),
                    };
                    let c = searchable(n, QUEUES[queue], MEDIA[medium], status, agent);
                    writes.push(put(&c));
                    all.insert(c.id, c);
                }
                store.apply(&writes).unwrap();
            }
            prop_assert_eq!(store.check_invariants(), Ok(()));
            for q in &queries {
                prop_assert_eq!(search_ids(&store, q.clone()), linear_search(&all, q), "{:?}", q);
            }
        }
    }
}

#[test]
fn the_page_cache_stays_bounded_however_much_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(&RedbStore::file_in(dir.path())).unwrap();
    // Several times the cache's bound of conversations with their timelines.
    for batch in 0..60u128 {
        let mut writes = Vec::new();
        for n in 0..500u128 {
            let c = conversation(batch * 1000 + n, batch * 1000 + n, Status::Handled);
            writes.push(Write::Event {
                conversation: c.id,
                seq: 0,
                event: event(Some("alice")),
            });
            writes.push(put(&c));
        }
        store.apply(&writes).unwrap();
    }
    let file = std::fs::metadata(RedbStore::file_in(dir.path()))
        .unwrap()
        .len();
    assert!(
        file as usize > 2 * super::redb::PAGE_CACHE_BYTES,
        "file of {file} bytes"
    );
    let cached = store.cached_bytes();
    assert!(cached > 0, "the cache is counted in tests");
    assert!(
        cached <= super::redb::PAGE_CACHE_BYTES,
        "{cached} bytes cached"
    );
}

#[test]
fn a_fresh_file_records_the_schema_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = RedbStore::file_in(dir.path());
    drop(RedbStore::open(&path).unwrap());
    let store = RedbStore::open(&path).unwrap();
    let txn = store.db.begin_read().unwrap();
    let version = txn
        .open_table(META)
        .unwrap()
        .get(SCHEMA_VERSION_KEY)
        .unwrap()
        .map(|v| v.value());
    assert_eq!(version, Some(SCHEMA_VERSION));
}

#[test]
fn a_corrupt_record_is_an_error_naming_table_and_key() {
    let store = RedbStore::in_memory().unwrap();
    store
        .apply(&[put(&conversation(1, 1, Status::InQueue))])
        .unwrap();
    {
        let txn = store.db.begin_write().unwrap();
        txn.open_table(CONVERSATIONS)
            .unwrap()
            .insert(id(1).as_u128(), [99u8, 1, 2].as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    match store.conversation(id(1)) {
        Err(StoreError::Corrupt {
            table,
            key,
            source: CodecError::UnknownVersion { found: 99, .. },
        }) => {
            assert_eq!(table, "conversations");
            assert_eq!(key, id(1).to_string());
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(matches!(
        store.load(),
        Err(StoreError::Corrupt {
            table: "conversations",
            ..
        })
    ));
    assert!(store.check_invariants().is_err());

    // Writing a good record over the bad one repairs it, indexes included.
    let mut fixed = conversation(1, 1, Status::InQueue);
    fixed.queue_rank += 1;
    store.apply(&[put(&fixed)]).unwrap();
    assert_ok(&store);
}

#[test]
fn check_invariants_reports_a_broken_index() {
    let store = RedbStore::in_memory().unwrap();
    store
        .apply(&[put(&conversation(1, 1, Status::InQueue))])
        .unwrap();
    assert_ok(&store);
    {
        let txn = store.db.begin_write().unwrap();
        txn.open_table(QUEUE_INDEX)
            .unwrap()
            .insert(("chat", 5i64, id(2).as_u128()), ())
            .unwrap();
        txn.commit().unwrap();
    }
    let problems = store.check_invariants().unwrap_err();
    assert!(problems.contains("queue_index"), "{problems}");
}

#[test]
fn check_invariants_reports_a_second_requeue_of_the_same_conversation() {
    let store = RedbStore::in_memory().unwrap();
    let orig = conversation(1, 1, Status::Handled);
    let mut again = Vec::new();
    for n in [2, 3] {
        let mut c = conversation(n, 1, Status::InQueue);
        c.origin = Origin {
            kind: OriginKind::Requeue,
            previous: Some(id(1)),
        };
        again.push(put(&c));
    }
    store.apply(&[put(&orig), again[0].clone()]).unwrap();
    assert_ok(&store);
    store.apply(&[again[1].clone()]).unwrap();
    let problems = store.check_invariants().unwrap_err();
    assert!(problems.contains("requeued 2 times"), "{problems}");
}

#[test]
fn backup_is_a_store_file_with_the_same_contents() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(&RedbStore::file_in(dir.path())).unwrap();
    let mut c = conversation(1, 1, Status::InQueue);
    c.event_count = 1;
    store
        .apply(&[
            put(&c),
            put(&conversation(2, 1, Status::Handled)),
            Write::Event {
                conversation: id(1),
                seq: 0,
                event: event(None),
            },
            Write::Session(Box::new(session(40, 1))),
        ])
        .unwrap();
    let dest = dir.path().join("backups").join("one.redb");
    store.backup_to(&dest).unwrap();
    assert!(matches!(
        store.backup_to(&dest),
        Err(StoreError::BackupExists(_))
    ));

    // The source stays usable and later writes do not reach the copy.
    store
        .apply(&[put(&conversation(3, 3, Status::InQueue))])
        .unwrap();

    let copy = RedbStore::open(&dest).unwrap();
    assert_ok(&copy);
    let all = SearchQuery::default();
    let want: Vec<Conversation> = store
        .search(&all)
        .unwrap()
        .into_iter()
        .filter(|c| c.id != id(3))
        .collect();
    assert_eq!(copy.search(&all).unwrap(), want);
    assert_eq!(
        copy.conversation(id(1)).unwrap(),
        store.conversation(id(1)).unwrap()
    );
    assert_eq!(copy.load().unwrap().sessions, vec![session(40, 1)]);
}

#[test]
fn in_memory_store_can_be_backed_up_to_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::in_memory().unwrap();
    store
        .apply(&[put(&conversation(1, 1, Status::InQueue))])
        .unwrap();
    let dest = dir.path().join("mem.redb");
    store.backup_to(&dest).unwrap();
    assert_eq!(
        RedbStore::open(&dest).unwrap().group(id(1)).unwrap().len(),
        1
    );
}

fn export_writes_one_json_object_per_conversation_with_its_events(open: &dyn Fn() -> Store) {
    let store = open();
    let mut c = conversation(1, 1, Status::InQueue);
    c.event_count = 2;
    store
        .apply(&[
            put(&c),
            put(&conversation(2, 2, Status::Handled)),
            Write::Event {
                conversation: id(1),
                seq: 0,
                event: event(None),
            },
            Write::Event {
                conversation: id(1),
                seq: 1,
                event: event(Some("alice")),
            },
        ])
        .unwrap();
    let mut out = Vec::new();
    assert_eq!(store.export_jsonl(&mut out).unwrap(), 2);
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["id"], id(1).to_string());
    assert_eq!(lines[0]["status"], "in_queue");
    assert_eq!(lines[0]["channel"], "chat");
    assert_eq!(lines[0]["created_at"], "2026-11-23T10:15:00.001Z");
    assert_eq!(lines[0]["ended_at"], serde_json::Value::Null);
    assert_eq!(lines[0]["events"].as_array().unwrap().len(), 2);
    assert_eq!(lines[0]["events"][1]["agent"], "alice");
    assert_eq!(lines[1]["events"], serde_json::json!([]));
}

// ----- the real core, a real file, a reopen after every batch -----

fn chat_config() -> Config {
    let mut cfg = Config::default();
    cfg.queues.push(QueueConfig {
        id: "chat".into(),
        name: "Chat".into(),
        channel: Channel::Chat,
        offer_timeout: None,
        not_ready_after_no_response: false,
        session_lost_prompt: Some("You will be connected to another agent.".into()),
        reconnecting_prompt: None,
        requeue_position: RequeuePosition::Original,
        sticky_agent: std::time::Duration::ZERO,
    });
    cfg.agents.push(AgentConfig {
        id: "alice".into(),
        name: "Alice".into(),
        password_hash: String::new(),
        sip_password: String::new(),
        queues: vec!["chat".into()],
        capacity: Capacity::default(),
    });
    cfg
}

/// Commits the core's batch, closes the store, reopens it and checks the invariants.
fn commit_and_reopen(store: Store, core: &mut Core, open: &dyn Fn() -> Store) -> Store {
    store.apply(&core.take_writes()).unwrap();
    drop(store);
    let store = open();
    assert_ok(&store);
    store
}

fn chat_requeued_after_grace_survives_reopen_after_every_batch(open: &dyn Fn() -> Store) {
    let cfg = Arc::new(chat_config());
    let grace = cfg.resilience.session_grace.as_millis() as u64;
    let t0 = Now {
        mono: 1_000,
        wall: T0,
    };
    let mut core = Core::new(Arc::new(cfg.policy()), 7, t0);
    let mut store = open();
    let agent_token = [1u8; 32];
    let customer_token = [2u8; 32];

    let login = core.handle(
        t0,
        Command::Login {
            user: "alice".into(),
            role: Role::Agent,
            token: agent_token,
        },
    );
    assert!(matches!(login, Ok(Reply::LoggedIn { .. })), "{login:?}");
    store = commit_and_reopen(store, &mut core, open);

    let t1 = t0.plus_ms(1_000);
    core.handle(
        t1,
        Command::AttachPanel {
            token: agent_token,
            socket: 1,
        },
    )
    .unwrap();
    store = commit_and_reopen(store, &mut core, open);

    let t2 = t0.plus_ms(2_000);
    let started = core
        .handle(
            t2,
            Command::StartChat {
                queue: "chat".into(),
                name: "Ann".into(),
                text: Some("my order is late".into()),
                token: customer_token,
            },
        )
        .unwrap();
    let Reply::ChatStarted {
        conversation_id: orig,
        group_id,
    } = started
    else {
        panic!("unexpected reply {started:?}")
    };
    store = commit_and_reopen(store, &mut core, open);
    let (offered, _) = store.conversation(orig).unwrap().unwrap();
    assert_eq!(
        offered.status,
        Status::Offered,
        "the chat is offered to the connected agent"
    );

    let t3 = t0.plus_ms(3_000);
    core.handle(
        t3,
        Command::Accept {
            token: agent_token,
            conversation: orig,
        },
    )
    .unwrap();
    store = commit_and_reopen(store, &mut core, open);

    let t4 = t0.plus_ms(4_000);
    core.handle(
        t4,
        Command::SaveDraft {
            token: agent_token,
            conversation: orig,
            draft: draft("half typed"),
        },
    )
    .unwrap();
    store = commit_and_reopen(store, &mut core, open);

    let t5 = t0.plus_ms(5_000);
    core.handle(
        t5,
        Command::DetachPanel {
            socket: 1,
            cause: crate::core::LossCause::Closed,
        },
    )
    .unwrap();
    store = commit_and_reopen(store, &mut core, open);

    // During the grace period the chat stays with the agent and the draft is kept.
    let during = store.load().unwrap();
    assert_eq!(during.conversations.len(), 1);
    assert_eq!(during.conversations[0].status, Status::InProcess);
    assert_eq!(
        during.drafts,
        vec![(during.sessions[0].id, orig, draft("half typed"))]
    );
    assert_eq!(during.sessions[0].state, SessionState::Disconnected);
    assert_eq!(
        during.sessions[0].deadline,
        Some(t5.ts().plus(cfg.resilience.session_grace))
    );

    // The reconnecting prompt's delay passes first; then the deadline.
    let prompt_at = t5.plus_ms(cfg.resilience.reconnecting_prompt_delay.as_millis() as u64);
    assert_eq!(core.poll_timeout(), Some(prompt_at.mono));
    core.handle_timeout(prompt_at);
    store = commit_and_reopen(store, &mut core, open);
    let deadline = t5.plus_ms(grace);
    assert_eq!(core.poll_timeout(), Some(deadline.mono));
    core.handle_timeout(deadline);
    store = commit_and_reopen(store, &mut core, open);

    // The original is handled and out of the open work.
    let (original, events) = store.conversation(orig).unwrap().unwrap();
    assert_eq!(original.status, Status::Handled);
    assert_eq!(
        original.disconnect_reason,
        Some(DisconnectReason::AgentSessionLost)
    );
    assert_eq!(original.disconnect_party, Some(DisconnectParty::Agent));
    assert_eq!(original.ended_at, Some(deadline.ts()));
    assert!(events.iter().any(|e| e.event == EventKind::SessionLost));

    // Exactly one requeue, in the queue with the ORIGINAL arrival time.
    let restored = store.load().unwrap();
    assert_eq!(
        restored.conversations.len(),
        1,
        "{:?}",
        restored.conversations
    );
    let requeued = restored.conversations[0].clone();
    assert_ne!(requeued.id, orig);
    assert_eq!(requeued.status, Status::InQueue);
    assert_eq!(requeued.group_id, group_id);
    assert_eq!(
        requeued.origin,
        Origin {
            kind: OriginKind::Requeue,
            previous: Some(orig)
        }
    );
    assert_eq!(requeued.queue_arrival_time, original.queue_arrival_time);
    assert_eq!(requeued.queue_arrival_time, t2.ts());
    assert_eq!(requeued.agent, None);
    assert_eq!(
        store
            .search(&SearchQuery {
                status: Some(Status::InQueue),
                ..Default::default()
            })
            .unwrap(),
        vec![requeued.clone()]
    );
    let group = store.group(group_id).unwrap();
    assert_eq!(
        group.iter().map(|c| c.id).collect::<Vec<_>>(),
        vec![orig, requeued.id]
    );
    assert_eq!(
        group
            .iter()
            .filter(|c| c.origin.kind == OriginKind::Requeue)
            .count(),
        1
    );
    assert!(store.agent_worked_in_group("alice", group_id).unwrap());

    // The session ended: no session, no drafts; the thread follows the new conversation.
    assert!(restored.sessions.is_empty());
    assert!(restored.drafts.is_empty());
    assert_eq!(restored.events.len(), 1);
    assert_eq!(restored.events[0].0, requeued.id);
    assert_eq!(restored.threads.len(), 1);
    let (thread, messages) = &restored.threads[0];
    assert_eq!(thread.current, requeued.id);
    assert!(thread.open);
    assert_eq!(messages.len() as u32, thread.message_count);
    assert_eq!(messages[0].text, "my order is late");
    assert_eq!(store.messages(thread.id).unwrap(), *messages);

    // A restart from this store: the new core has the chat waiting, nothing written twice.
    let boot = deadline.plus_ms(1_000);
    let mut rebooted = Core::new(Arc::new(cfg.policy()), 8, boot);
    rebooted.restore(restored, boot);
    assert_eq!(
        rebooted.conversation(&requeued.id).map(|c| c.status),
        Some(Status::InQueue)
    );
    assert_eq!(rebooted.conversation(&orig), None);
    let store = commit_and_reopen(store, &mut rebooted, open);
    assert_eq!(store.load().unwrap().conversations.len(), 1);
}

// ----- every test above that takes an opener runs on both backends -----

/// The PostgreSQL database the tests use, from `SWITCHBOARD_TEST_POSTGRES_URL`. Without it
/// the PostgreSQL variants are skipped with a message, except under CI (`CI=true`), where a
/// missing database is a failure: CI must never pass by running nothing.
pub(crate) fn postgres_test_url() -> Option<String> {
    match std::env::var("SWITCHBOARD_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!(
                "CI=true but SWITCHBOARD_TEST_POSTGRES_URL is not set: the PostgreSQL store tests would not run"
            )
        }
        _ => {
            eprintln!(
                "skipped: set SWITCHBOARD_TEST_POSTGRES_URL=postgres://... to run the PostgreSQL store tests"
            );
            None
        }
    }
}

/// Options for a fresh schema of its own (dropped first if a previous run left it).
fn postgres_options(test: &str) -> Option<PostgresOptions> {
    let url = postgres_test_url()?;
    let schema: String = format!("t_{test}").chars().take(60).collect();
    let mut options = PostgresOptions::new(url);
    let admin = options.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = admin.connect_async().await.unwrap();
        client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .await
            .unwrap();
    });
    options.schema = Some(schema);
    options.readers = 2;
    Some(options)
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod on_redb {
            $(
                #[test]
                fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    let path = super::RedbStore::file_in(dir.path());
                    super::$name(&|| super::Store::open(&path).unwrap());
                }
            )*
        }
        mod on_postgres {
            $(
                #[test]
                fn $name() {
                    let Some(options) = super::postgres_options(stringify!($name)) else {
                        return;
                    };
                    super::$name(&|| super::Store::postgres(&options).unwrap());
                }
            )*
        }
    };
}

on_both_backends!(
    every_record_type_round_trips_through_the_store,
    indexes_follow_a_conversation_through_its_states,
    session_token_change_and_session_end_keep_tokens_and_drafts_in_step,
    outbox_done_deletes_the_item_and_events_replace_by_sequence,
    search_filters_and_lists_newest_first,
    search_limit_is_capped,
    search_pages_with_before_walk_all_history_newest_first,
    search_combines_filters_pages_them_and_finds_nothing_for_unknown_values,
    search_finds_a_conversation_only_under_its_current_queue_agent_and_status,
    group_lists_oldest_first_and_knows_who_worked_in_it,
    export_writes_one_json_object_per_conversation_with_its_events,
    chat_requeued_after_grace_survives_reopen_after_every_batch,
);

// ----- PostgreSQL only -----

fn postgres_store(test: &str) -> Option<(PostgresOptions, PostgresStore)> {
    let options = postgres_options(test)?;
    let store = PostgresStore::connect(&options).unwrap();
    Some((options, store))
}

#[test]
fn postgres_a_newer_schema_version_is_refused() {
    let Some((options, store)) = postgres_store("pg_newer_schema") else {
        return;
    };
    store
        .execute_for_tests(
            "UPDATE switchboard_meta SET value = value + 1 WHERE key = 'schema_version'",
        )
        .unwrap();
    drop(store);
    match PostgresStore::connect(&options) {
        Err(StoreError::NewerSchema { found, supported }) => {
            assert_eq!(found, supported + 1);
        }
        other => panic!("expected NewerSchema, got {other:?}"),
    }
}

#[test]
fn postgres_a_corrupt_record_is_an_error_naming_table_and_key() {
    let Some((_, store)) = postgres_store("pg_corrupt_record") else {
        return;
    };
    store
        .apply(&[put(&conversation(1, 1, Status::InQueue))])
        .unwrap();
    store
        .execute_for_tests("UPDATE conversations SET value = '\\x630102'")
        .unwrap();
    match store.conversation(id(1)) {
        Err(StoreError::Corrupt {
            table,
            key,
            source: CodecError::UnknownVersion { found: 99, .. },
        }) => {
            assert_eq!(table, "conversations");
            assert_eq!(key, id(1).to_string());
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(store.load().is_err());
    assert!(store.check_invariants().is_err());
    store
        .apply(&[put(&conversation(1, 1, Status::InQueue))])
        .unwrap();
    assert!(store.check_invariants().is_ok());
}

#[test]
fn postgres_refuses_a_second_requeue_of_the_same_conversation_and_commits_nothing_of_it() {
    let Some((_, store)) = postgres_store("pg_second_requeue") else {
        return;
    };
    let orig = conversation(1, 1, Status::Handled);
    let requeue = |n| {
        let mut c = conversation(n, 1, Status::InQueue);
        c.origin = Origin {
            kind: OriginKind::Requeue,
            previous: Some(id(1)),
        };
        put(&c)
    };
    store.apply(&[put(&orig), requeue(2)]).unwrap();
    let before = store.load().unwrap();
    assert!(
        store
            .apply(&[requeue(3), Write::Session(Box::new(session(40, 1)))])
            .is_err()
    );
    // The whole batch was rolled back, the session too.
    assert_eq!(
        format!("{:?}", store.load().unwrap()),
        format!("{before:?}")
    );
    assert!(store.check_invariants().is_ok());
}

#[test]
fn postgres_a_node_whose_term_is_not_the_lease_term_commits_nothing() {
    let Some((_, store)) = postgres_store("pg_fencing") else {
        return;
    };
    store
        .execute_for_tests("UPDATE cluster_lease SET term = 7, holder = 'node-a'")
        .unwrap();
    store.set_fence(Some(Fence {
        term: 7,
        node: "node-a".into(),
    }));
    store
        .apply(&[put(&conversation(1, 1, Status::InQueue))])
        .unwrap();
    // Another node took over.
    store
        .execute_for_tests("UPDATE cluster_lease SET term = 8, holder = 'node-b'")
        .unwrap();
    match store.apply(&[put(&conversation(2, 2, Status::InQueue))]) {
        Err(StoreError::Fenced {
            ours: 7,
            current: Some(8),
        }) => {}
        other => panic!("expected Fenced, got {other:?}"),
    }
    assert_eq!(store.load().unwrap().conversations.len(), 1);
}
