//! Model-based test: random operation sequences against the store and a
//! `BTreeMap` model; after every operation the whole state must agree.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::*;
use crate::caps::{AggregateWrite, Effects};
use crate::model::{
    Agent, AgentId, Aggregate, ChannelName, ChannelRef, EventEnvelope, EventId, Message, MessageId, OrgId, WriteMode,
    apply_write,
};

const AGENTS: [u64; 4] = [1, 2, 3, 4];
const CHANNELS: [&str; 3] = ["a", "ab", "b"];

#[derive(Default)]
struct Model {
    agents: BTreeMap<u64, (u64, Option<String>)>,
    aggregates: BTreeMap<(u64, &'static str), Value>,
    messages: BTreeMap<(u64, &'static str), BTreeMap<u64, Value>>,
    /// Queued events (seq zeroed: the store assigns it) by (org, due, id).
    queue: BTreeMap<(u64, u64, u64), QueuedEvent>,
    /// Event id -> insertion order, to check the store's lines are FIFO.
    order: BTreeMap<u64, u64>,
    next_order: u64,
    dead: BTreeMap<u64, DeadLetter>,
}

impl Model {
    fn push(&mut self, e: QueuedEvent) {
        self.order.insert(e.id.get(), self.next_order);
        self.next_order += 1;
        self.queue.insert(qkey(&e), QueuedEvent { seq: 0, ..e });
    }
}

fn qkey(e: &QueuedEvent) -> (u64, u64, u64) {
    (e.organisation_id.get(), e.due_ms, e.id.get())
}

fn unseq(events: Vec<QueuedEvent>) -> Vec<QueuedEvent> {
    events.into_iter().map(|e| QueuedEvent { seq: 0, ..e }).collect()
}

fn ch(agent: u64, name: &str) -> ChannelRef {
    ChannelRef { agent_id: agent.into(), name: ChannelName::new(name).unwrap() }
}

fn event(rng: &mut fastrand::Rng, id: u64) -> QueuedEvent {
    let due = rng.u64(0..100);
    // An installation belongs to one organisation (installation 7 to
    // organisation 1, 8 to 2, 9 to 3), so its lines never span two.
    let org = rng.u64(1..4);
    QueuedEvent {
        id: EventId::from(id),
        organisation_id: OrgId::from(org),
        install_id: (org + 6).into(),
        agent_id: AgentId::from(rng.u64(1..5)),
        event: EventEnvelope { op: "on_manual_invoke".into(), d: json!({"organisation_id": 1, "payload": {"n": id}}) },
        attempt: 1,
        depth: 0,
        enqueued_ms: due,
        enqueued_us: due * 1000,
        due_ms: due,
        seq: 0,
    }
}

fn value(rng: &mut fastrand::Rng, depth: u32) -> Value {
    match rng.u8(0..6) {
        0 => Value::Null,
        1 => json!(rng.u8(0..4)),
        2 => json!("s"),
        3 => json!([1, 2]),
        _ if depth < 2 => diff(rng, depth + 1),
        _ => json!(true),
    }
}

fn diff(rng: &mut fastrand::Rng, depth: u32) -> Value {
    let mut map = serde_json::Map::new();
    for _ in 0..rng.usize(0..3) {
        map.insert(["x", "y", "z"][rng.usize(0..3)].to_string(), value(rng, depth));
    }
    Value::Object(map)
}

fn mode(rng: &mut fastrand::Rng) -> WriteMode {
    match rng.u8(0..4) {
        0 => WriteMode::Replace,
        1 => WriteMode::ReplacePaths(vec!["x".into()]),
        _ => WriteMode::Merge,
    }
}

/// A random pick from the store's queued events (with their real sequence
/// numbers), or a made-up event that is not queued.
fn pick_queued(rng: &mut fastrand::Rng, store: &Store, next_id: u64) -> QueuedEvent {
    let queued = store.queued().unwrap();
    if queued.is_empty() || rng.u8(0..5) == 0 {
        event(rng, next_id + 1000)
    } else {
        queued[rng.usize(0..queued.len())].clone()
    }
}

fn check(store: &Store, model: &Model) {
    for agent in AGENTS {
        let want = model.agents.get(&agent).map(|(org, _)| OrgId::from(*org));
        assert_eq!(store.agent_org(agent.into()).unwrap(), want, "agent {agent} org");
        for name in CHANNELS {
            let c = ch(agent, name);
            let agg = store.get_aggregate(&c).unwrap().map(|a| a.data);
            assert_eq!(agg.as_ref(), model.aggregates.get(&(agent, name)), "aggregate {agent}/{name}");
            let got: Vec<Value> = store.list_messages(&c, None, 1000).unwrap().into_iter().map(|m| m.data).collect();
            let want: Vec<Value> =
                model.messages.get(&(agent, name)).map(|m| m.values().rev().cloned().collect()).unwrap_or_default();
            assert_eq!(got, want, "messages {agent}/{name}");
        }
    }
    // Every serial that any step could have written, in every organisation:
    // a stale index entry (after a re-put with a new serial or organisation)
    // would resolve here.
    for org in 1..3u64 {
        for agent in AGENTS {
            for n in 0..3 {
                let serial = format!("SN-{agent}-{n}");
                let want = model
                    .agents
                    .iter()
                    .find(|(_, (o, s))| *o == org && s.as_deref() == Some(serial.as_str()))
                    .map(|(id, _)| *id);
                let found = store.agent_by_serial(OrgId::from(org), &serial).unwrap().map(|a| a.id.get());
                assert_eq!(found, want, "serial {serial} in org {org}");
            }
        }
    }
    let orgs: Vec<u64> = store.queued_orgs().unwrap().iter().map(|o| o.get()).collect();
    let mut want_orgs: Vec<u64> = model.queue.keys().map(|k| k.0).collect();
    want_orgs.dedup();
    assert_eq!(orgs, want_orgs, "organisations with queued events");
    let queued = store.queued().unwrap();
    assert_eq!(unseq(queued.clone()), model.queue.values().cloned().collect::<Vec<_>>(), "queue");
    // Each (installation, agent) line is FIFO by insertion, whatever the due
    // times, and only its first event is the head.
    let mut lines: BTreeMap<(u64, u64), Vec<&QueuedEvent>> = BTreeMap::new();
    for e in &queued {
        lines.entry((e.install_id.get(), e.agent_id.get())).or_default().push(e);
    }
    for line in lines.values_mut() {
        line.sort_by_key(|e| e.seq);
        let orders: Vec<u64> = line.iter().map(|e| model.order[&e.id.get()]).collect();
        assert!(orders.windows(2).all(|w| w[0] < w[1]), "line out of insertion order: {orders:?}");
        for (i, e) in line.iter().enumerate() {
            assert_eq!(store.is_head(e).unwrap(), i == 0, "head of line");
        }
        let head = store.line_head(line[0].install_id, line[0].agent_id).unwrap();
        assert_eq!(head.as_ref(), Some(line[0]), "line_head reads the current head (after reschedules too)");
    }
    // What the dispatcher may start: exactly the heads of the lines
    // (everything is due at the end of time).
    let mut orgs: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for line in lines.values() {
        orgs.entry(line[0].organisation_id.get()).or_default().push(line[0].id.get());
    }
    // The heads index, kept write by write, is what rebuilding it from the
    // disk gives.
    let t = store.t().unwrap();
    assert_eq!(*t.heads(), super::heads::Heads::build(&t.keyq).unwrap(), "heads index");
    for (org, mut heads) in orgs {
        let mut got: Vec<u64> = store
            .runnable_heads(org.into(), u64::MAX - 1, usize::MAX, usize::MAX, |_, _| false)
            .unwrap()
            .events
            .iter()
            .map(|e| e.id.get())
            .collect();
        heads.sort_unstable();
        got.sort_unstable();
        assert_eq!(got, heads, "runnable heads of organisation {org}");
    }
    let dead: Vec<DeadLetter> = store
        .dead_letters(1000)
        .unwrap()
        .into_iter()
        .map(|d| DeadLetter { event: QueuedEvent { seq: 0, ..d.event }, ..d })
        .collect();
    let mut want: Vec<DeadLetter> = model.dead.values().cloned().collect();
    want.sort_by_key(|d| (d.event.organisation_id, d.event.id));
    assert_eq!(dead, want, "dead letters, by organisation");
    for org in 1..4u64 {
        let mine = store.dead_letters_of(org.into(), 1000).unwrap();
        assert!(mine.iter().all(|d| d.event.organisation_id == OrgId::from(org)), "organisation {org}'s only");
        assert_eq!(mine.len(), want.iter().filter(|d| d.event.organisation_id == OrgId::from(org)).count());
    }
}

fn run(seed: u64, steps: usize) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let store = Store::temporary().unwrap();
    let mut model = Model::default();
    let mut next_id = 1u64;
    for step in 0..steps {
        match rng.u8(0..8) {
            0 => {
                let id = AGENTS[rng.usize(0..AGENTS.len())];
                let org = rng.u64(1..3);
                let serial = (rng.bool()).then(|| format!("SN-{id}-{}", rng.u8(0..3)));
                let agent = Agent {
                    id: id.into(),
                    name: format!("a{id}"),
                    serial_number: serial.clone(),
                    group: None,
                    metadata: json!({}),
                };
                store.put_agent(org.into(), agent).unwrap();
                model.agents.insert(id, (org, serial));
            }
            1 => {
                next_id += 1;
                let e = event(&mut rng, next_id);
                let queued = store.enqueue(&e).unwrap();
                assert_eq!(QueuedEvent { seq: 0, ..queued }, e);
                model.push(e);
            }
            2 => {
                let (ack, effects, downstream) = random_commit(&mut rng, &store, &mut next_id, step);
                let result = store.commit(plain(&ack, &effects, &downstream));
                expect(&mut model, &ack, &effects, downstream, &result);
            }
            7 => {
                // A batch: one atomic write in which each commit sees the
                // ones before it (the same aggregates, the same acks) and
                // has its own verdict.
                let commits: Vec<_> =
                    (0..rng.usize(1..5)).map(|_| random_commit(&mut rng, &store, &mut next_id, step)).collect();
                let batch: Vec<Commit<'_>> =
                    commits.iter().map(|(ack, effects, downstream)| plain(ack, effects, downstream)).collect();
                let verdicts = store.commit_batch(&batch).unwrap();
                assert_eq!(verdicts.len(), commits.len());
                for ((ack, effects, downstream), verdict) in commits.iter().zip(&verdicts) {
                    expect(&mut model, ack, effects, downstream.clone(), verdict);
                }
            }
            3 => {
                let e = pick_queued(&mut rng, &store, next_id);
                let due = rng.u64(0..200);
                match store.reschedule(&e, due) {
                    Ok(next) => {
                        assert!(model.queue.remove(&qkey(&e)).is_some());
                        assert_eq!(next.attempt, e.attempt + 1);
                        assert_eq!(next.seq, e.seq, "a retry keeps its place in line");
                        model.queue.insert(qkey(&next), QueuedEvent { seq: 0, ..next });
                    }
                    Err(err) => {
                        assert!(matches!(err, StoreError::NotQueued(_)));
                        assert!(!model.queue.contains_key(&qkey(&e)));
                    }
                }
            }
            4 => {
                let e = pick_queued(&mut rng, &store, next_id);
                match store.dead_letter(&e, "test", 5) {
                    Ok(()) => {
                        model.queue.remove(&qkey(&e));
                        let event = QueuedEvent { seq: 0, ..e };
                        model.dead.insert(event.id.get(), DeadLetter { event, reason: "test".into(), dead_ms: 5 });
                    }
                    Err(err) => assert!(matches!(err, StoreError::NotQueued(_))),
                }
            }
            5 => {
                let ids: Vec<u64> = model.dead.keys().copied().collect();
                let id = if ids.is_empty() || rng.bool() { 424242 } else { ids[rng.usize(0..ids.len())] };
                let org = model.dead.get(&id).map_or(OrgId::from(rng.u64(1..4)), |d| d.event.organisation_id);
                let redriven = store.redrive(org, id.into(), 50).unwrap();
                assert_eq!(redriven, model.dead.contains_key(&id));
                if let Some(letter) = model.dead.remove(&id) {
                    model.push(QueuedEvent { attempt: 1, due_ms: 50, ..letter.event });
                }
            }
            _ => {
                let now = rng.u64(0..200);
                let due = store.due(now, 1000).unwrap();
                let mut want: Vec<QueuedEvent> = model.queue.values().filter(|e| e.due_ms <= now).cloned().collect();
                want.sort_by_key(|e| (e.due_ms, e.id));
                assert_eq!(unseq(due), want, "due at {now}");
                for org in 1..4u64 {
                    let got = unseq(store.due_for(OrgId::from(org), now, 1000).unwrap());
                    let want: Vec<QueuedEvent> =
                        model.queue.range((org, 0, 0)..=(org, now, u64::MAX)).map(|(_, e)| e.clone()).collect();
                    assert_eq!(got, want, "org {org} due at {now}");
                }
            }
        }
        check(&store, &model);
    }
}

/// A commit of `effects` acknowledging `ack`, queueing `downstream`, at
/// time 1: no summary, claim, feed or chain.
fn plain<'a>(ack: &'a QueuedEvent, effects: &'a Effects, downstream: &'a [QueuedEvent]) -> Commit<'a> {
    Commit { ack: Some(ack), downstream, ..Commit::of(effects, 1) }
}

/// A random commit: an event to acknowledge (queued or not), a few
/// messages and aggregate writes (now and then on an unknown agent, or an
/// aggregate made too large), and events it raises.
fn random_commit(
    rng: &mut fastrand::Rng,
    store: &Store,
    next_id: &mut u64,
    step: usize,
) -> (QueuedEvent, Effects, Vec<QueuedEvent>) {
    let ack = pick_queued(rng, store, *next_id);
    let mut effects = Effects::default();
    for _ in 0..rng.usize(0..3) {
        let agent = if rng.u8(0..8) == 0 { 99 } else { AGENTS[rng.usize(0..AGENTS.len())] };
        let name = CHANNELS[rng.usize(0..CHANNELS.len())];
        let id = MessageId::from(rng.u64(1..6));
        let data = json!({"m": step});
        effects.messages.push(Message {
            id,
            author_id: agent.into(),
            channel: ch(agent, name),
            data,
            timestamp: None,
            attachments: None,
        });
    }
    for _ in 0..rng.usize(0..3) {
        let agent = AGENTS[rng.usize(0..AGENTS.len())];
        let name = CHANNELS[rng.usize(0..CHANNELS.len())];
        let data = if rng.u8(0..20) == 0 { json!({"big": "x".repeat(MAX_AGGREGATE_BYTES)}) } else { diff(rng, 0) };
        effects.aggregates.push(AggregateWrite { channel: ch(agent, name), data, mode: mode(rng) });
    }
    let downstream: Vec<QueuedEvent> = (0..rng.usize(0..2))
        .map(|_| {
            *next_id += 1;
            event(rng, *next_id)
        })
        .collect();
    (ack, effects, downstream)
}

/// Check a commit's verdict against the model, and apply it there when it
/// was applied: refused if its event is not queued, if it names an
/// unknown agent, or if an aggregate it leaves is too large.
fn expect(
    model: &mut Model,
    ack: &QueuedEvent,
    effects: &Effects,
    downstream: Vec<QueuedEvent>,
    result: &Result<(), StoreError>,
) {
    let queued = model.queue.contains_key(&qkey(ack));
    let unknown = effects
        .messages
        .iter()
        .map(|m| m.channel.agent_id)
        .chain(effects.aggregates.iter().map(|w| w.channel.agent_id))
        .find(|a| !model.agents.contains_key(&a.get()));
    // Each write applies to the state the one before it left; any state
    // past the bound refuses the commit.
    let mut after = model.aggregates.clone();
    let mut too_large = false;
    for w in &effects.aggregates {
        let name = CHANNELS.iter().find(|n| **n == w.channel.name.as_str()).unwrap();
        let entry = after.entry((w.channel.agent_id.get(), name)).or_insert(json!({}));
        *entry = apply_write(entry, &w.data, &w.mode);
        let stored = Aggregate { data: entry.clone(), last_updated: Some(1) };
        too_large |= serde_json::to_vec(&stored).unwrap().len() > MAX_AGGREGATE_BYTES;
    }
    match (queued, unknown, too_large) {
        (false, ..) => assert!(matches!(result, Err(StoreError::NotQueued(_))), "{result:?}"),
        (true, Some(a), _) => {
            assert!(matches!(result, Err(StoreError::UnknownAgent(x)) if *x == a), "{result:?}")
        }
        (true, None, true) => assert!(matches!(result, Err(StoreError::AggregateTooLarge { .. })), "{result:?}"),
        (true, None, false) => {
            assert!(result.is_ok(), "{result:?}");
            model.queue.remove(&qkey(ack));
            for m in &effects.messages {
                let name = CHANNELS.iter().find(|n| **n == m.channel.name.as_str()).unwrap();
                model
                    .messages
                    .entry((m.channel.agent_id.get(), name))
                    .or_default()
                    .entry(m.id.get())
                    .or_insert(m.data.clone());
            }
            model.aggregates = after;
            for e in downstream {
                model.push(e);
            }
        }
    }
}

#[test]
fn store_agrees_with_the_model_over_random_operation_sequences() {
    for seed in 0..12 {
        run(seed, 150);
    }
}

#[test]
fn a_commit_survives_reopening_after_flush() {
    let dir = tempfile::tempdir().unwrap();
    let e = {
        let store = Store::open(dir.path()).unwrap();
        store
            .put_agent(
                1.into(),
                Agent { id: 1.into(), name: "a".into(), serial_number: None, group: None, metadata: json!({}) },
            )
            .unwrap();
        let mut rng = fastrand::Rng::with_seed(1);
        let e = event(&mut rng, 1);
        store.enqueue(&e).unwrap();
        let mut effects = Effects::default();
        effects.aggregates.push(AggregateWrite { channel: ch(1, "a"), data: json!({"n": 1}), mode: WriteMode::Merge });
        store.commit(Commit { ack: Some(&e), ..Commit::of(&effects, 9) }).unwrap();
        tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(store.flush()).unwrap();
        e
    };
    // sled's async flush runs on its thread pool, which may hold the
    // database (and its file lock) a moment after the future resolves; a
    // restarted process has no such race.
    let reopen = || Store::open(dir.path()).map_err(|_| std::thread::sleep(std::time::Duration::from_millis(20)));
    let store = (0..100).find_map(|_| reopen().ok()).expect("the store reopens");
    assert_eq!(
        store.get_aggregate(&ch(1, "a")).unwrap().map(|a| (a.data, a.last_updated)),
        Some((json!({"n": 1}), Some(9)))
    );
    assert!(store.queued().unwrap().is_empty());
    let again = store.commit(Commit { ack: Some(&e), ..Commit::of(&Effects::default(), 10) });
    assert!(matches!(again, Err(StoreError::NotQueued(_))), "an acknowledged event cannot commit twice");
}

#[test]
fn after_a_write_failure_writes_are_refused_until_the_store_reopens_at_its_last_durable_state() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with_reserve(dir.path(), 0).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let mut rng = fastrand::Rng::with_seed(7);
    let durable = store.enqueue(&event(&mut rng, 1)).unwrap();
    rt.block_on(store.flush()).unwrap();

    store.failed("injected: the disk went away");
    assert_eq!(store.write_failure().as_deref(), Some("injected: the disk went away"));
    let refused = store.enqueue(&event(&mut rng, 2));
    assert!(matches!(refused, Err(StoreError::NotWritable(_))), "{refused:?}");
    assert!(matches!(rt.block_on(store.flush()), Err(StoreError::NotWritable(_))));

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while store.generation() == 0 || store.write_failure().is_some() {
        assert!(std::time::Instant::now() < deadline, "the store did not recover");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(unseq(store.queued().unwrap()), unseq(vec![durable]), "the durable state, and only it");
    store.enqueue(&event(&mut rng, 3)).unwrap();
    rt.block_on(store.flush()).unwrap();
    assert_eq!(store.queued().unwrap().len(), 2, "writes work again");
}

/// A temporary store with agent 1 in organisation 1.
fn store_with_agent_1() -> Store {
    let store = Store::temporary().unwrap();
    let agent = Agent { id: 1.into(), name: "a".into(), serial_number: None, group: None, metadata: json!({}) };
    store.put_agent(1.into(), agent).unwrap();
    store
}

/// Effects merging `{"n": n}` into agent 1's channel `a`.
fn merge_n(n: i64) -> Effects {
    let write = AggregateWrite { channel: ch(1, "a"), data: json!({ "n": n }), mode: WriteMode::Merge };
    Effects { aggregates: vec![write], ..Effects::default() }
}

/// A successful first attempt's summary of `event` on `install`, at `event` ms.
fn summary(install: u64, event: u64) -> InvocationSummary {
    InvocationSummary {
        event_id: event.into(),
        install_id: install.into(),
        op: "on_manual_invoke".into(),
        status: "success".into(),
        skip_reason: None,
        outcome: json!({}),
        duration_ms: 0.0,
        fuel: 0,
        attempt: 1,
        error: None,
        logs: json!({}),
        queued_ms: 0,
        at_ms: event,
        latency_us: 0,
    }
}

/// Effects writing to agent 9, which no store here has.
fn on_unknown_agent() -> Effects {
    let write = AggregateWrite { channel: ch(9, "a"), data: json!({"x": 1}), mode: WriteMode::Merge };
    Effects { aggregates: vec![write], ..Effects::default() }
}

#[test]
fn a_batch_is_one_atomic_write_in_which_each_commit_has_its_own_verdict() {
    let store = store_with_agent_1();
    let mut rng = fastrand::Rng::with_seed(3);
    let queued = store.enqueue(&event(&mut rng, 1)).unwrap();
    let gone = event(&mut rng, 2);
    let claim = Claim { scope: "wh1".into(), key: "msg_1".into(), expires_ms: 100 };
    let (first, second, third) = (merge_n(1), merge_n(2), merge_n(3));
    let bad_agent = on_unknown_agent();
    let c = |ack, effects, claim| Commit { ack, claim, ..Commit::of(effects, 5) };
    let verdicts = store
        .commit_batch(&[
            c(Some(&queued), &first, Some(&claim)),
            c(None, &second, Some(&claim)),
            c(Some(&gone), &second, None),
            c(None, &bad_agent, None),
            c(Some(&queued), &second, None),
            c(None, &third, None),
        ])
        .unwrap();
    let shown: Vec<String> = verdicts.iter().map(|v| format!("{v:?}")).collect();
    assert!(verdicts[0].is_ok(), "{shown:?}");
    assert!(matches!(verdicts[1], Err(StoreError::Duplicate { .. })), "the claim made just before: {shown:?}");
    assert!(matches!(verdicts[2], Err(StoreError::NotQueued(_))), "{shown:?}");
    assert!(matches!(verdicts[3], Err(StoreError::UnknownAgent(_))), "{shown:?}");
    assert!(matches!(verdicts[4], Err(StoreError::NotQueued(_))), "acknowledged by the first: {shown:?}");
    assert!(verdicts[5].is_ok(), "{shown:?}");
    // Only the accepted commits wrote: n went 1 then 3, never 2.
    assert_eq!(store.get_aggregate(&ch(1, "a")).unwrap().unwrap().data, json!({ "n": 3 }));
    assert!(store.queued().unwrap().is_empty());
    assert!(store.is_claimed("wh1", "msg_1", 5).unwrap());
}

#[test]
fn the_feed_is_written_with_its_commit_in_order_and_pruned_by_count_and_age() {
    const ORG: u64 = 40;
    const TANK: u64 = 41;
    let store = Store::temporary().unwrap();
    let org = OrgId::from(ORG);
    let tank = Agent { id: TANK.into(), name: "t".into(), serial_number: None, group: None, metadata: json!({}) };
    store.put_agent(org, tank).unwrap();
    let msg = |n: u64| Message {
        id: MessageId::from(1000 + n),
        author_id: AgentId::from(TANK),
        channel: ch(TANK, "levels"),
        data: json!({"n": n}),
        timestamp: None,
        attachments: None,
    };
    for n in 0..5 {
        let effects = Effects { messages: vec![msg(n)], aggregates: Vec::new(), bytes: 0 };
        let fed = n % 2 == 0;
        store.commit(Commit { feed: fed, ..Commit::of(&effects, 1000 + n) }).unwrap();
    }
    let all = store.feed(org, 0, u64::MAX, 100).unwrap();
    let ns: Vec<u64> = all.iter().map(|e| e.body["data"]["n"].as_u64().unwrap()).collect();
    assert_eq!(ns, [0, 2, 4], "only commits that asked for the feed, in commit order");
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(store.feed(org, all[0].seq, u64::MAX, 100).unwrap().len(), 2, "after a cursor");
    assert_eq!(store.feed(OrgId::from(ORG + 1), 0, u64::MAX, 100).unwrap().len(), 0, "per organisation");
    let prune = |keep, older| store.remove_stale(&store.stale_feed(org, keep, older, 100).unwrap()).unwrap();
    assert_eq!(prune(2, 0), 1, "by count: the oldest goes");
    assert_eq!(prune(10, 1003), 1, "by age: committed before 1003");
    let left: Vec<u64> =
        store.feed(org, 0, u64::MAX, 100).unwrap().iter().map(|e| e.body["data"]["n"].as_u64().unwrap()).collect();
    assert_eq!(left, [4]);
}

#[test]
fn a_stale_heads_entry_is_repaired_by_the_pick_and_never_runs_out_of_line() {
    let store = Store::temporary().unwrap();
    let mut rng = fastrand::Rng::with_seed(3);
    let in_line = |id: u64, due_ms: u64, rng: &mut fastrand::Rng| QueuedEvent {
        organisation_id: OrgId::from(1),
        install_id: 7.into(),
        agent_id: AgentId::from(1),
        due_ms,
        ..event(rng, id)
    };
    let first = store.enqueue(&in_line(1, 5, &mut rng)).unwrap();
    let second = store.enqueue(&in_line(2, 1, &mut rng)).unwrap();
    let pick = || store.runnable_heads(OrgId::from(1), 10, 8, 64, |_, _| false).unwrap().events;
    assert_eq!(pick(), std::slice::from_ref(&first), "the line's first event, though the second is due earlier");

    // An update lost to a race: the index believes the second heads it.
    store.t().unwrap().heads().queued(&QueuedEvent { seq: 0, ..second.clone() });
    assert!(pick().is_empty(), "a head the line does not start with is not offered");
    assert_eq!(pick(), std::slice::from_ref(&first), "and the next pick has the repaired head");
    let t = store.t().unwrap();
    assert_eq!(*t.heads(), super::heads::Heads::build(&t.keyq).unwrap());
    drop(t);

    // A busy line offers nothing; once its head is gone, the next event.
    assert!(store.runnable_heads(OrgId::from(1), 10, 8, 64, |_, _| true).unwrap().events.is_empty());
    store.dead_letter(&first, "test", 6).unwrap();
    assert_eq!(pick(), [second]);
}

#[test]
fn a_chained_commit_applies_only_if_the_one_before_it_did() {
    let store = store_with_agent_1();
    let mut rng = fastrand::Rng::with_seed(5);
    let (one, two, three) = (event(&mut rng, 1), event(&mut rng, 2), event(&mut rng, 3));
    let queued: Vec<QueuedEvent> = [one, two, three].iter().map(|e| store.enqueue(e).unwrap()).collect();
    let (first, third, fourth) = (merge_n(1), merge_n(3), merge_n(4));
    let bad_agent = on_unknown_agent();
    let c = |ack, effects, chained| Commit { ack, chained, ..Commit::of(effects, 5) };
    let verdicts = store
        .commit_batch(&[
            c(Some(&queued[0]), &first, false),
            c(Some(&queued[1]), &bad_agent, true),
            c(Some(&queued[2]), &third, true),
            c(None, &fourth, false),
        ])
        .unwrap();
    let shown: Vec<String> = verdicts.iter().map(|v| format!("{v:?}")).collect();
    assert!(verdicts[0].is_ok(), "{shown:?}");
    assert!(matches!(verdicts[1], Err(StoreError::UnknownAgent(_))), "{shown:?}");
    assert!(matches!(verdicts[2], Err(StoreError::RunBroken)), "behind a refused commit: {shown:?}");
    assert!(verdicts[3].is_ok(), "a commit that is not chained stands alone: {shown:?}");
    assert_eq!(store.get_aggregate(&ch(1, "a")).unwrap().unwrap().data, json!({ "n": 4 }), "n was never 3");
    assert_eq!(unseq(store.queued().unwrap()), unseq(queued[1..].to_vec()), "the refused and the broken stay queued");
}

#[test]
fn a_lines_run_is_what_queues_behind_its_head_while_due() {
    let store = Store::temporary().unwrap();
    let mut rng = fastrand::Rng::with_seed(6);
    let on_line = |id: u64, agent: u64, due: u64, rng: &mut fastrand::Rng| QueuedEvent {
        organisation_id: 1.into(),
        install_id: 7.into(),
        agent_id: agent.into(),
        due_ms: due,
        ..event(rng, id)
    };
    let head = store.enqueue(&on_line(1, 1, 10, &mut rng)).unwrap();
    let second = store.enqueue(&on_line(2, 1, 5, &mut rng)).unwrap();
    store.enqueue(&on_line(3, 2, 5, &mut rng)).unwrap(); // another line
    let third = store.enqueue(&on_line(4, 1, 10, &mut rng)).unwrap();
    store.enqueue(&on_line(5, 1, 50, &mut rng)).unwrap(); // not due at 20
    store.enqueue(&on_line(6, 1, 10, &mut rng)).unwrap(); // behind one not due
    let ids = |run: Vec<QueuedEvent>| run.iter().map(|e| e.id.get()).collect::<Vec<_>>();
    assert_eq!(ids(store.line_after(&head, 20, 10).unwrap()), [second.id.get(), third.id.get()]);
    assert_eq!(ids(store.line_after(&head, 20, 1).unwrap()), [second.id.get()], "at most max");
    assert_eq!(ids(store.line_after(&third, 100, 10).unwrap()), [5, 6]);
    assert_eq!(ids(store.line_after(&head, 7, 10).unwrap()), [second.id.get()], "the one after is not due at 7");
    assert!(store.line_after(&head, 4, 10).unwrap().is_empty(), "the next is not due yet");
}

#[test]
fn a_placed_commit_queues_its_events_at_the_places_it_was_given() {
    let store = store_with_agent_1();
    let mut rng = fastrand::Rng::with_seed(3);
    // Two events of one line: the first placed before its commit, the
    // second placed by its commit.
    let mut first = event(&mut rng, 1);
    let second = QueuedEvent { id: EventId::from(2), ..first.clone() };
    store.place(std::slice::from_mut(&mut first)).unwrap();
    let commit = |downstream: &[QueuedEvent], placed| {
        store.commit(Commit { downstream, placed, ..Commit::of(&Effects::default(), 1) })
    };
    commit(std::slice::from_ref(&first), true).unwrap();
    commit(std::slice::from_ref(&second), false).unwrap();
    let queued = store.queued().unwrap();
    let place_of = |id: u64| queued.iter().find(|e| e.id == EventId::from(id)).map(|e| e.seq);
    assert_eq!(place_of(1), Some(first.seq));
    assert!(place_of(2) > Some(first.seq), "the commit drew the next place: {queued:?}");
}

#[test]
fn retention_removes_the_oldest_records_and_never_a_key_claimed_again_since_it_was_found() {
    let store = store_with_agent_1();
    let message = |n: u64| Message {
        id: MessageId::from(n),
        author_id: AgentId::from(1),
        channel: ch(1, "a"),
        data: json!({ "n": n }),
        timestamp: None,
        attachments: None,
    };
    let claim = |key: &str, expires_ms| Claim { scope: "wh1".into(), key: key.into(), expires_ms };
    let commit = |effects: &Effects, claim: Option<&Claim>, now_ms| {
        store.commit(Commit { claim, ..Commit::of(effects, now_ms) }).unwrap();
    };
    for n in 1..=5 {
        let effects = Effects { messages: vec![message(n)], ..Effects::default() };
        let key = format!("k{n}");
        commit(&effects, Some(&claim(&key, 100 * n)), n);
    }
    for event in 1..=4 {
        store.put_invocation(&summary(7, event)).unwrap();
    }

    assert_eq!(store.stale_messages(&ch(1, "a"), 2, 1).unwrap().len(), 1, "at most as many as asked");
    let stale = store.stale_messages(&ch(1, "a"), 2, 10).unwrap();
    assert_eq!(stale.len(), 3);
    assert_eq!(store.remove_stale(&stale).unwrap(), 3);
    let left: Vec<u64> = store.list_messages(&ch(1, "a"), None, 10).unwrap().iter().map(|m| m.id.get()).collect();
    assert_eq!(left, [5, 4], "the newest two");
    assert_eq!(store.remove_stale(&stale).unwrap(), 0, "removed already: nothing more");

    let parts = store.stale_summaries(7.into(), 1, 10).unwrap().split(2);
    assert_eq!(parts.iter().map(Stale::len).collect::<Vec<_>>(), [2, 1]);
    assert_eq!(parts.iter().map(|p| store.remove_stale(p).unwrap()).sum::<usize>(), 3);
    let left: Vec<u64> = store.invocations(7.into(), 10).unwrap().iter().map(|s| s.event_id.get()).collect();
    assert_eq!(left, [4]);

    // Found expired at 250: k1 and k2. Before the removal runs, k1 is
    // claimed again (with the message it guards): it must stay.
    let expired = store.expired_claims(250, 10).unwrap();
    assert_eq!(expired.len(), 2);
    let effects = Effects { messages: vec![message(6)], ..Effects::default() };
    commit(&effects, Some(&claim("k1", 900)), 260);
    assert_eq!(store.remove_stale(&expired).unwrap(), 1, "only k2");
    assert!(store.is_claimed("wh1", "k1", 300).unwrap(), "the new claim still guards");
    assert!(!store.is_claimed("wh1", "k2", 0).unwrap(), "k2 is gone");
    let later = store.expired_claims(1000, 10).unwrap();
    assert_eq!(store.remove_stale(&later).unwrap(), 4, "k1, k3, k4, k5");
}

#[test]
fn a_schedule_fire_planned_before_a_change_neither_fires_nor_undoes_it() {
    let store = Store::temporary().unwrap();
    let old = ScheduleState {
        id: 5.into(),
        install_id: 7.into(),
        name: "tick".into(),
        expression: "rate(1 minute)".into(),
        timezone: None,
        disabled: false,
        next_fire_ms: Some(100),
    };
    store.put_schedule(&old).unwrap();
    // Planned from `old`; then the app changed the schedule.
    let changed = ScheduleState { expression: "rate(1 hour)".into(), next_fire_ms: Some(3_600_000), ..old.clone() };
    store.put_schedule(&changed).unwrap();
    let mut rng = fastrand::Rng::with_seed(1);
    let queued = event(&mut rng, 1);
    assert!(!store.fire_schedule(&old, Some(&queued), Some(160)).unwrap());
    assert!(!store.fire_schedule(&old, None, Some(160)).unwrap(), "without the hook too");
    assert_eq!(store.get_schedule(7.into(), "tick").unwrap(), Some(changed.clone()));
    assert!(store.queued().unwrap().is_empty());
    // A fire planned from the current state moves it (and queues nothing
    // without an event).
    assert!(store.fire_schedule(&changed, None, Some(7_200_000)).unwrap());
    assert_eq!(store.get_schedule(7.into(), "tick").unwrap().unwrap().next_fire_ms, Some(7_200_000));
    assert!(store.queued().unwrap().is_empty());
}

#[test]
fn a_deleted_monitor_is_not_brought_back_by_an_update_read_before_the_delete() {
    let store = Store::temporary().unwrap();
    let rec = MonitorRecord {
        id: 0,
        org: OrgId::from(1),
        created_ms: 0,
        spec: MonitorSpec::new("DataPoint".into(), Transport::Tcp),
    };
    let id = store.create_monitor(rec.clone(), 0).unwrap();
    let read = MonitorRecord { id, ..rec };
    assert!(store.update_monitor(&read, &MonitorState::new(5)).unwrap());
    assert!(store.delete_monitor(id).unwrap());
    assert!(!store.update_monitor(&read, &MonitorState::new(7)).unwrap(), "gone: refused");
    assert!(store.monitor(id).unwrap().is_none() && store.monitor_state(id).unwrap().is_none());
}

#[test]
fn a_storage_failure_says_whether_it_was_the_disk_and_whether_it_was_full() {
    let full = StoreError::from(sled::Error::Io(std::io::Error::from(std::io::ErrorKind::StorageFull)));
    assert!(full.is_storage_full() && full.is_unwritable(), "{full}");
    let failed = StoreError::from(sled::Error::Io(std::io::Error::other("bad sector")));
    assert!(!failed.is_storage_full() && failed.is_unwritable(), "{failed}");
    assert!(failed.to_string().contains("bad sector"), "{failed}");
    let other = StoreError::from(sled::Error::Unsupported("no".into()));
    assert!(!other.is_storage_full() && !other.is_unwritable(), "not the disk: {other}");
}

#[test]
fn a_deleted_installation_takes_its_schedules_with_it() {
    let store = Store::temporary().unwrap();
    let rec = |id: u64, key: &str| InstallRecord {
        id: id.into(),
        app: "a".into(),
        organisation_id: OrgId::from(1),
        agent_id: AgentId::from(1),
        app_key: key.into(),
        display_name: "a".into(),
        config: json!({}),
        created_ms: 0,
    };
    let plan = |install: u64, name: &str| ScheduleState {
        id: 1.into(),
        install_id: install.into(),
        name: name.into(),
        expression: "rate(1 minute)".into(),
        timezone: None,
        disabled: false,
        next_fire_ms: Some(60_000),
    };
    store.put_install(&rec(7, "a")).unwrap();
    store.put_install(&rec(8, "b")).unwrap();
    for s in [plan(7, "tick"), plan(7, "tock"), plan(8, "tick")] {
        store.put_schedule(&s).unwrap();
    }
    assert!(store.delete_install(7.into()).unwrap());
    let left: Vec<(u64, String)> =
        store.schedules().unwrap().into_iter().map(|s| (s.install_id.get(), s.name)).collect();
    assert_eq!(left, [(8, "tick".to_string())], "only the other installation's");
    assert!(!store.delete_install(7.into()).unwrap(), "gone already");
}

#[test]
fn an_unreadable_queued_event_is_set_aside_with_its_bytes_and_its_line_goes_on() {
    let store = Store::temporary().unwrap();
    let mut rng = fastrand::Rng::with_seed(8);
    let on_line = |id: u64, agent: u64, rng: &mut fastrand::Rng| QueuedEvent {
        organisation_id: 1.into(),
        install_id: 7.into(),
        agent_id: agent.into(),
        due_ms: 5,
        ..event(rng, id)
    };
    let head = store.enqueue(&on_line(1, 1, &mut rng)).unwrap();
    let behind = store.enqueue(&on_line(2, 1, &mut rng)).unwrap();
    let third = store.enqueue(&on_line(3, 1, &mut rng)).unwrap();
    let other = store.enqueue(&on_line(4, 2, &mut rng)).unwrap();
    // What a newer version might have written: valid JSON this build
    // cannot decode as a queued event.
    let foreign = br#"{"id":2,"shape":"from a newer version"}"#;
    let t = store.t().unwrap();
    t.queue.insert(keys::queued(behind.organisation_id, behind.due_ms, behind.id), &foreign[..]).unwrap();
    drop(t);

    // A run stops before it; counting reads keys only.
    assert!(store.line_after(&head, 10, 10).unwrap().is_empty(), "the run stops before what it cannot read");
    assert_eq!(store.queued_counts().unwrap()[&OrgId::from(1)], 4);
    store.dead_letter(&head, "test", 6).unwrap();

    // The pick offers the other line and reports this one's head, instead
    // of failing for the whole organisation.
    let found = store.runnable_heads(OrgId::from(1), 10, 8, 64, |_, _| false).unwrap();
    assert_eq!(found.events, std::slice::from_ref(&other));
    let [unreadable] = found.unreadable.as_slice() else { panic!("{:?}", found.unreadable) };
    assert_eq!((unreadable.event_id, unreadable.seq, unreadable.agent_id), (behind.id, behind.seq, behind.agent_id));
    assert!(unreadable.reason.contains("queued event"), "{}", unreadable.reason);

    // Set aside: its bytes kept, its line goes on with the event behind it.
    assert!(store.set_aside(unreadable, 9).unwrap());
    let kept = store.unreadable_events(OrgId::from(1), 10).unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &kept[0].stored).unwrap(), foreign);
    assert_eq!((kept[0].event_id, kept[0].install_id, kept[0].set_aside_ms), (behind.id, behind.install_id, 9));
    assert!(store.unreadable_events(OrgId::from(2), 10).unwrap().is_empty(), "listed for its organisation only");
    assert_eq!(store.unreadable_count(), 1);
    let found = store.runnable_heads(OrgId::from(1), 10, 8, 64, |_, _| false).unwrap();
    assert!(found.unreadable.is_empty());
    let mut ids: Vec<u64> = found.events.iter().map(|e| e.id.get()).collect();
    ids.sort_unstable();
    assert_eq!(ids, [third.id.get(), other.id.get()]);
    assert_eq!(store.queued_counts().unwrap()[&OrgId::from(1)], 2);
    let t = store.t().unwrap();
    assert_eq!(*t.heads(), super::heads::Heads::build(&t.keyq).unwrap(), "heads index");
    drop(t);

    // Twice is once; a head that reads well is never set aside.
    assert!(!store.set_aside(unreadable, 10).unwrap());
    let readable = UnreadableHead { event_id: third.id, seq: third.seq, ..unreadable.clone() };
    assert!(!store.set_aside(&readable, 10).unwrap());
    assert_eq!((store.unreadable_count(), store.queued().unwrap().len()), (1, 2));
}

#[test]
fn a_stored_record_this_build_cannot_read_refuses_its_commit_alone_never_the_batch() {
    let store = store_with_agent_1();
    let agent = Agent { id: 2.into(), name: "b".into(), serial_number: None, group: None, metadata: json!({}) };
    store.put_agent(1.into(), agent).unwrap();
    let t = store.t().unwrap();
    // An aggregate, a claim and an agent as a newer version might store them.
    t.aggregates.insert(keys::aggregate(&ch(1, "a")), &br#"{"shape":"newer"}"#[..]).unwrap();
    t.seen.insert(keys::seen("wh1", "k"), &br#""soon""#[..]).unwrap();
    t.agents.insert(keys::agent(2.into()), &br#"{"shape":"newer"}"#[..]).unwrap();
    drop(t);
    let on = |agent: u64, name: &str| Effects {
        aggregates: vec![AggregateWrite { channel: ch(agent, name), data: json!({ "n": 1 }), mode: WriteMode::Merge }],
        ..Effects::default()
    };
    let (unreadable_aggregate, fine, on_agent_2) = (on(1, "a"), on(1, "b"), on(2, "a"));
    let claim = Claim { scope: "wh1".into(), key: "k".into(), expires_ms: 100 };
    let verdicts = store
        .commit_batch(&[
            Commit::of(&unreadable_aggregate, 5),
            Commit { claim: Some(&claim), ..Commit::of(&fine, 5) },
            Commit { feed: true, ..Commit::of(&on_agent_2, 5) },
            Commit::of(&fine, 6),
        ])
        .unwrap();
    let shown: Vec<String> = verdicts.iter().map(|v| format!("{v:?}")).collect();
    assert!(matches!(&verdicts[0], Err(StoreError::Corrupt { what: "aggregate", .. })), "{shown:?}");
    assert!(matches!(&verdicts[1], Err(StoreError::Corrupt { what: "idempotency key", .. })), "{shown:?}");
    assert!(matches!(&verdicts[2], Err(StoreError::Corrupt { what: "agent", .. })), "on the feed: {shown:?}");
    assert!(verdicts[3].is_ok(), "the batch's other commit applied: {shown:?}");
    assert_eq!(store.get_aggregate(&ch(1, "b")).unwrap().unwrap().last_updated, Some(6));
}

#[test]
fn a_scan_every_tenant_depends_on_skips_a_record_this_build_cannot_read() {
    let store = Store::temporary().unwrap();
    let org =
        |id: u64| OrgRecord { id: id.into(), name: format!("o{id}"), agent_id: (id + 100).into(), created_ms: id };
    store.put_org(&org(1)).unwrap();
    store.put_org(&org(3)).unwrap();
    let newer = &br#"{"shape":"newer"}"#[..];
    let t = store.t().unwrap();
    t.orgs.insert(2u64.to_be_bytes(), newer).unwrap();
    t.schedules.insert(keys::schedule(7.into(), "daily"), newer).unwrap();
    t.installs.insert(keys::install(7.into()), newer).unwrap();
    t.ingestions.insert(9u64.to_be_bytes(), newer).unwrap();
    drop(t);
    let names: Vec<String> = store.orgs().unwrap().into_iter().map(|o| o.name).collect();
    assert_eq!(names, ["o1", "o3"], "the readable ones, in order");
    assert!(store.schedules().unwrap().is_empty());
    assert!(store.installs().unwrap().is_empty());
    assert!(store.ingestions().unwrap().is_empty());
    // Read by its key, the record is still an error, not "absent".
    assert!(matches!(store.org(2.into()), Err(StoreError::Corrupt { what: "organisation", .. })));
}

#[test]
fn a_deleted_installations_summaries_are_swept_and_a_live_ones_never() {
    let store = Store::temporary().unwrap();
    for install in [6, 7, 8] {
        for event in 1..=3 {
            store.put_invocation(&summary(install, event)).unwrap();
        }
    }
    let live: std::collections::HashSet<crate::model::InstallId> = [7.into()].into();
    let stale = store.orphaned_summaries(&live, 100).unwrap();
    assert_eq!(stale.len(), 6, "installations 6 and 8, not 7");
    assert_eq!(store.orphaned_summaries(&live, 4).unwrap().len(), 4, "at most `most`");
    // Installation 8 is (re)made before the writer removes what was found:
    // its summaries stay.
    store.t().unwrap().installs.insert(keys::install(8.into()), &b"{}"[..]).unwrap();
    assert_eq!(store.remove_stale(&stale).unwrap(), 3);
    for (install, left) in [(6, 0), (7, 3), (8, 3)] {
        assert_eq!(store.invocations(install.into(), 10).unwrap().len(), left, "installation {install}");
    }
}

#[test]
fn dead_letters_of_earlier_versions_move_to_their_organisations_keys_when_the_store_opens() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = fastrand::Rng::with_seed(9);
    let letter = DeadLetter {
        event: QueuedEvent { organisation_id: 2.into(), ..event(&mut rng, 5) },
        reason: "old".into(),
        dead_ms: 1,
    };
    {
        // As an earlier version stored them: the event id alone as key
        // (and no mark that they were moved, which this version sets on
        // a new database at once).
        let store = Store::open(dir.path()).unwrap();
        let t = store.t().unwrap();
        t.db.remove(super::queue::DEAD_REKEYED).unwrap();
        t.dead.insert(5u64.to_be_bytes(), encode(&letter)).unwrap();
        t.dead.insert(6u64.to_be_bytes(), &br#"{"shape":"newer"}"#[..]).unwrap();
        drop(t);
        store.flush_blocking().unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.dead_letters_of(2.into(), 10).unwrap(), std::slice::from_ref(&letter));
    assert_eq!(store.dead_letter_of(2.into(), 5.into()).unwrap(), Some(letter.clone()));
    assert_eq!(store.dead_letter_count(), 2, "the unreadable one is kept too");
    let t = store.t().unwrap();
    assert!(t.dead.get(keys::dead(0.into(), 6.into())).unwrap().is_some(), "under organisation 0");
    assert!(t.dead.iter().keys().all(|k| k.unwrap().len() == 16), "no key of the earlier form is left");
    // Once moved, later opens do not scan again: a key of the earlier form
    // written now (no version writes one) stays where it is.
    t.dead.insert(7u64.to_be_bytes(), encode(&letter)).unwrap();
    drop(t);
    store.flush_blocking().unwrap();
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert!(store.t().unwrap().dead.get(7u64.to_be_bytes()).unwrap().is_some(), "not scanned again");
}

#[test]
fn an_event_set_aside_is_queued_again_when_a_build_that_reads_it_opens_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = fastrand::Rng::with_seed(10);
    let readable = QueuedEvent { organisation_id: 1.into(), due_ms: 5, attempt: 2, ..event(&mut rng, 41) };
    {
        let store = Store::open(dir.path()).unwrap();
        let queued = store.enqueue(&readable).unwrap();
        // What an earlier build that could not read it did: set it aside
        // (here, by overwriting it with foreign bytes, then putting the
        // readable bytes back in the record, as if set aside by a build
        // older than the one that wrote it).
        let t = store.t().unwrap();
        let key = keys::queued(queued.organisation_id, queued.due_ms, queued.id);
        t.queue.insert(key, &br#"{"shape":"newer"}"#[..]).unwrap();
        drop(t);
        let found = store.runnable_heads(1.into(), 10, 8, 64, |_, _| false).unwrap();
        assert!(store.set_aside(&found.unreadable[0], 9).unwrap());
        let t = store.t().unwrap();
        let mut record: UnreadableEvent = decode("unreadable event", &t.unreadable.get(key).unwrap().unwrap()).unwrap();
        record.stored = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, encode(&queued));
        t.unreadable.insert(key, encode(&record)).unwrap();
        drop(t);
        store.flush_blocking().unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.unreadable_count(), 0);
    let runnable = store.runnable_heads(1.into(), 10, 8, 64, |_, _| false).unwrap();
    assert_eq!(unseq(runnable.events), [QueuedEvent { seq: 0, ..readable }], "queued again, with its attempt");
}

#[test]
fn an_ingestion_endpoint_is_read_from_memory_until_it_changes_and_a_read_racing_a_change_keeps_nothing() {
    let store = Store::temporary().unwrap();
    let endpoint = |token: &str| IngestionRecord {
        id: 3.into(),
        organisation_id: 1.into(),
        install_id: 7.into(),
        token_sha256: token.into(),
        mini_token_sha256: None,
        allow_cidrs: Vec::new(),
        hmac_secret: None,
        webhook_secret: None,
        rate_per_s: 10,
        max_body_bytes: 1024,
        created_ms: 1,
    };
    store.put_ingestion(&endpoint("first")).unwrap();
    assert_eq!(store.ingestion(3.into()).unwrap(), Some(endpoint("first")));
    // Kept: the stored record changed behind the store's back is not seen.
    store.t().unwrap().ingestions.insert(3u64.to_be_bytes(), encode(&endpoint("behind"))).unwrap();
    assert_eq!(store.ingestion(3.into()).unwrap().unwrap().token_sha256, "first", "from memory");
    // A change through the store is seen at once: rotated, then deleted.
    store.put_ingestion(&endpoint("rotated")).unwrap();
    assert_eq!(store.ingestion(3.into()).unwrap().unwrap().token_sha256, "rotated");
    assert!(store.delete_ingestion(3.into()).unwrap());
    assert_eq!(store.ingestion(3.into()).unwrap(), None, "deleted means gone");
    // A read that looked before a change and read the store before it is
    // not kept after it.
    let t = store.t().unwrap();
    let Err(looked) = t.endpoints().get(&3.into()) else { panic!("nothing kept") };
    t.endpoints().changed(&3.into());
    t.endpoints().keep(looked, 3.into(), endpoint("from before the change"));
    assert!(t.endpoints().get(&3.into()).is_err());
}
