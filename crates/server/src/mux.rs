//! One client connection spread over the two brokers that decide what it uses, as a sans-io
//! state machine: client inputs in, inputs for its sessions and effects for the client out.
//!
//! A client connection has a *leader session* on the leader's broker (relayed and resumed by the
//! router as before) and a *home session* on its own node's broker (see `docs/architecture.md`,
//! "Transient queues live on their home node"). Since issue 19's step 4 the leader session
//! keeps only the handshake, the channels' life and settings, and a stream's consumers: every
//! publish, declare, binding, purge, delete, consume and get goes to the home session, whose
//! broker proposes topology commands itself and drives the queues other brokers own with queue
//! commands. [`Mux`] decides where each method goes, opens channels on a session when first
//! needed (replaying qos and confirm/tx mode), hands the client exactly one reply per request,
//! in request order, gives deliveries the client's own delivery tags and maps acks back, and
//! passes on the home session's publisher confirms.
//!
//! It knows nothing of sockets, tasks or time. A session's next input waits until its broker
//! has applied the log as far as the replies the client has seen ([`Out::Barrier`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use warren_core::{AmqpError, ChannelId, ConnId, Effect, Input};

use crate::relay::image::{expects_reply, is_reply};
use warren_wire::{
    BasicAck, BasicConsume, BasicNack, BasicQos, ChannelClose, ChannelOpen, ConfirmSelect,
    FieldTable, FieldValue, Method, ShortStr, TxCommit, TxSelect,
};

/// A session of the client connection: on the leader's broker, or a home session on a node's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Sub {
    Leader,
    Home,
}

/// What the mux asks of its driver, in order.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Out {
    /// Send this input to that session.
    Input(Sub, Input),
    /// Before the next input to that session: it must have applied the log up to `index`.
    Barrier(Sub, u64),
    /// Hand this effect to the client's session (`Session::apply`).
    Client(Effect),
}

/// A request sent to one session whose reply is awaited.
#[derive(Debug)]
struct Request {
    sub: Sub,
    /// The order it was sent to `sub` in: a session answers its requests in that order.
    order: u64,
    /// The client gets the reply (otherwise it is the mux's own request: dropped).
    answer: bool,
    /// The reply, once it came, and the effects of the same session that followed it (they
    /// must not overtake it).
    reply: Option<Vec<Effect>>,
    /// A `tx.commit` on the client's own home: when it is answered the commit goes on to the
    /// other sessions (its replicated part went to the leader first).
    then_commit: bool,
    /// A `basic.get` with no-ack: its get-ok's tag needs no mapping.
    no_ack: bool,
    /// A `channel.close` on the client's own home: when it is answered the close goes on to
    /// the other sessions, the leader's answering.
    then_close: bool,
}

#[derive(Debug, Default)]
struct Chan {
    /// Sessions where the channel is open (or opening).
    open_on: BTreeSet<Sub>,
    prefetch_consumer: u16,
    prefetch_global: u16,
    confirm: bool,
    tx: bool,
    requests: VecDeque<Request>,
    next_tag: u64,
    /// The client's delivery tags still unacked, and whose they are.
    tags: BTreeMap<u64, (Sub, u64)>,
    /// Tags of a lost home session: an ack of one is ignored.
    stale: BTreeSet<u64>,
    /// Consumers by tag: their session, and whether they ack (a no-ack consumer's deliveries
    /// get no mapping).
    consumers: HashMap<ShortStr, (Sub, bool)>,
    /// Consumers whose `basic.consume` is on its way (the tag is known once consume-ok comes).
    consuming: VecDeque<(Sub, bool)>,
    /// Client confirm numbers: the next one, and those not confirmed yet (the own home
    /// session confirms every publish: it routes them all and logs their replicated part).
    next_seq: u64,
    confirms: BTreeSet<u64>,
    /// Tags acked or rejected in the open transaction: forgotten at its commit.
    tx_settled: Vec<u64>,
}

impl Chan {
    fn new() -> Chan {
        Chan {
            next_tag: 1,
            next_seq: 1,
            ..Chan::default()
        }
    }
}

/// One client connection's sessions (see the module docs).
pub(crate) struct Mux {
    client: ConnId,
    user: Option<String>,
    vhost: Option<String>,
    client_properties: FieldTable,
    cancel_notify: bool,
    /// `connection.open-ok` came from the leader: home sessions can be opened.
    open: bool,
    /// The home session on this node's broker, once opened: its connection id.
    home: Option<ConnId>,
    channels: BTreeMap<ChannelId, Chan>,
    /// `channel.close-ok`s the mux's own closes will bring, by session and channel; until it
    /// comes, what that session sends on the channel belongs to its closed incarnation.
    closing: HashMap<(Sub, ChannelId), u32>,
    /// Channels the mux failed: the leader's broker sends the `channel.close` the client gets.
    failing: BTreeSet<ChannelId>,
    /// A home session's `channel.close` for the client, held until the leader's channel is
    /// closed too.
    pending_close: HashMap<ChannelId, Effect>,
    /// Requests sent per session so far (see `Request::order`).
    sent: HashMap<Sub, u64>,
    /// The highest log index of a reply the client has seen, and the last barrier per session.
    seen: u64,
    barriers: HashMap<Sub, u64>,
    /// Publishes went to the own home since it last confirmed it had handled everything
    /// (their replicated part may still be on its way to the leader).
    unsynced: bool,
    /// A sync of the own home is under way (its token), and the client's inputs that wait for
    /// it, in order.
    syncing: Option<u64>,
    next_token: u64,
    held: VecDeque<Input>,
    out: Vec<Out>,
}

impl Mux {
    /// A client connection `client`.
    pub(crate) fn new(client: ConnId) -> Mux {
        Mux {
            client,
            user: None,
            vhost: None,
            client_properties: FieldTable::default(),
            cancel_notify: false,
            open: false,
            home: None,
            channels: BTreeMap::new(),
            closing: HashMap::new(),
            failing: BTreeSet::new(),
            pending_close: HashMap::new(),
            sent: HashMap::new(),
            seen: 0,
            barriers: HashMap::new(),
            unsynced: false,
            syncing: None,
            next_token: 0,
            held: VecDeque::new(),
            out: Vec::new(),
        }
    }

    /// What the mux asks for since the last call.
    pub(crate) fn take(&mut self) -> Vec<Out> {
        std::mem::take(&mut self.out)
    }

    /// The home session's connection id, once opened.
    pub(crate) fn home(&self) -> Option<ConnId> {
        self.home
    }

    fn emit(&mut self, sub: Sub, input: Input) {
        let last = self.barriers.get(&sub).copied().unwrap_or(0);
        if self.seen > last {
            self.barriers.insert(sub, self.seen);
            self.out.push(Out::Barrier(sub, self.seen));
        }
        self.out.push(Out::Input(sub, input));
    }

    fn conn_for(&self, sub: Sub) -> ConnId {
        match sub {
            Sub::Leader => self.client,
            Sub::Home => self.home.unwrap_or(self.client),
        }
    }

    /// Opens the home session if it is not open (once the connection is open); `alloc` gives
    /// its connection id.
    pub(crate) fn ensure_home(&mut self, alloc: &mut dyn FnMut() -> ConnId) -> bool {
        if self.home.is_some() {
            return true;
        }
        let (Some(user), Some(vhost), true) = (self.user.clone(), self.vhost.clone(), self.open)
        else {
            return false;
        };
        let conn = alloc();
        self.home = Some(conn);
        let client = self.client;
        let client_properties = self.client_properties.clone();
        self.emit(
            Sub::Home,
            Input::OpenHome {
                conn,
                client,
                user,
                vhost,
                client_properties,
            },
        );
        true
    }

    /// Opens channel `ch` on `sub` if it is not open there, replaying its settings.
    fn ensure_channel(&mut self, ch: ChannelId, sub: Sub, alloc: &mut dyn FnMut() -> ConnId) {
        if sub == Sub::Home && !self.ensure_home(alloc) {
            return;
        }
        let Some(c) = self.channels.get_mut(&ch) else {
            return;
        };
        if !c.open_on.insert(sub) {
            return;
        }
        let (pc, pg, confirm, tx) = (c.prefetch_consumer, c.prefetch_global, c.confirm, c.tx);
        self.request(ch, sub, Method::ChannelOpen(ChannelOpen::default()), false);
        if pc > 0 {
            self.request(ch, sub, qos(pc, false), false);
        }
        if pg > 0 {
            self.request(ch, sub, qos(pg, true), false);
        }
        if confirm {
            self.send_method(
                ch,
                sub,
                Method::ConfirmSelect(ConfirmSelect { nowait: true }),
            );
        }
        if tx {
            self.request(ch, sub, Method::TxSelect(TxSelect {}), false);
        }
    }

    /// Sends a method that gets a reply to `sub`, recording who gets the reply.
    fn request(&mut self, ch: ChannelId, sub: Sub, method: Method, answer: bool) {
        let order = self.next_order(sub);
        if let Some(c) = self.channels.get_mut(&ch) {
            c.requests.push_back(Request {
                sub,
                order,
                answer,
                reply: None,
                then_commit: false,
                no_ack: false,
                then_close: false,
            });
        }
        self.send_method(ch, sub, method);
    }

    fn next_order(&mut self, sub: Sub) -> u64 {
        let n = self.sent.entry(sub).or_default();
        *n += 1;
        *n
    }

    fn send_method(&mut self, channel: ChannelId, sub: Sub, method: Method) {
        let conn = self.conn_for(sub);
        self.emit(
            sub,
            Input::Method {
                conn,
                channel,
                method,
            },
        );
    }

    /// Handles one input from the client's session. `alloc` gives out connection ids for home
    /// sessions opened on the way.
    pub(crate) fn client_input(&mut self, input: Input, alloc: &mut dyn FnMut() -> ConnId) {
        // Behind inputs already waiting, in order.
        if self.syncing.is_some() || !self.held.is_empty() {
            self.held.push_back(input);
            return;
        }
        if self.start_sync(&input) {
            self.held.push_back(input);
            return;
        }
        self.dispatch(input, alloc);
    }

    /// A request (or the end) after publishes: the own home must have handed their replicated
    /// part to the leader first, so that the request sees them. Starts a sync of the own home
    /// if `input` must wait for one (the caller holds it).
    fn start_sync(&mut self, input: &Input) -> bool {
        if !self.unsynced || !needs_sync(input) {
            return false;
        }
        let Some(own) = self.home else {
            return false;
        };
        self.next_token += 1;
        let token = self.next_token;
        self.syncing = Some(token);
        self.emit(Sub::Home, Input::Sync { conn: own, token });
        true
    }

    /// Whether client inputs wait for a sync of the own home.
    pub(crate) fn is_holding(&self) -> bool {
        !self.held.is_empty()
    }

    /// After a sync completed: the held inputs go on (until one needs another sync).
    pub(crate) fn resume_held(&mut self, alloc: &mut dyn FnMut() -> ConnId) {
        while self.syncing.is_none() {
            let Some(input) = self.held.pop_front() else {
                return;
            };
            if self.start_sync(&input) {
                self.held.push_front(input);
                return;
            }
            self.dispatch(input, alloc);
        }
    }

    fn dispatch(&mut self, input: Input, alloc: &mut dyn FnMut() -> ConnId) {
        match input {
            Input::Login {
                ref username,
                ref client_properties,
                ..
            } => {
                self.user = Some(username.clone());
                self.client_properties = client_properties.clone();
                self.cancel_notify = cancel_notify(client_properties);
                self.emit(Sub::Leader, input);
            }
            Input::OpenVhost { ref vhost, .. } => {
                self.vhost = Some(vhost.clone());
                self.emit(Sub::Leader, input);
            }
            Input::Method {
                channel, method, ..
            } => self.method(channel, method, alloc),
            Input::Publish {
                channel,
                publish,
                properties,
                body,
                ..
            } => {
                let own = Sub::Home;
                self.ensure_channel(channel, own, alloc);
                if self.home.is_none() {
                    // No home session (the connection is not open): the leader's broker refuses.
                    let conn = self.client;
                    self.emit(
                        Sub::Leader,
                        Input::Publish {
                            conn,
                            channel,
                            publish,
                            properties,
                            body,
                        },
                    );
                    return;
                }
                if let Some(c) = self.channels.get_mut(&channel) {
                    if c.confirm {
                        let seq = c.next_seq;
                        c.next_seq += 1;
                        c.confirms.insert(seq);
                    }
                }
                self.unsynced = true;
                let conn = self.conn_for(own);
                self.emit(
                    own,
                    Input::Publish {
                        conn,
                        channel,
                        publish,
                        properties,
                        body,
                    },
                );
            }
            Input::Writable { writable, .. } => {
                for sub in self.subs() {
                    let conn = self.conn_for(sub);
                    self.emit(sub, Input::Writable { conn, writable });
                }
            }
            Input::ConnectionClosed { .. } => {
                for sub in self.subs() {
                    let conn = self.conn_for(sub);
                    self.emit(sub, Input::ConnectionClosed { conn });
                }
            }
            Input::ChannelError { channel, error, .. } => self.fail_channel(channel, error),
            // The driver's own business; nothing else comes from a client.
            other => self.emit(Sub::Leader, other),
        }
    }

    /// Every session: the leader's and the home session if open.
    fn subs(&self) -> Vec<Sub> {
        std::iter::once(Sub::Leader)
            .chain(self.home.map(|_| Sub::Home))
            .collect()
    }

    /// The session that serves the channel's exchange, queue, binding and consumer methods:
    /// the client's own home session once the connection is open (issue 19, step 4: its
    /// broker proposes topology commands itself and drives queues other brokers own with
    /// queue commands; a `basic.get` of a replicated queue while no leader is known comes back
    /// from it as a redirect to the leader session).
    fn own(&self) -> Sub {
        if self.open {
            Sub::Home
        } else {
            Sub::Leader
        }
    }

    fn method(&mut self, ch: ChannelId, method: Method, alloc: &mut dyn FnMut() -> ConnId) {
        if let Method::ChannelOpen(_) = method {
            let mut c = Chan::new();
            c.open_on.insert(Sub::Leader);
            self.channels.insert(ch, c);
            self.request(ch, Sub::Leader, method, true);
            let own = Sub::Home;
            self.ensure_channel(ch, own, alloc);
            return;
        }
        if !self.channels.contains_key(&ch) {
            // A method on a channel the mux already closed (racing our close): the leader's
            // broker answers as the spec says.
            self.send_method(ch, Sub::Leader, method);
            return;
        }
        match method {
            Method::ChannelClose(_) => {
                // The own home first: what it routed goes to the leader before the leader's
                // channel closes (see `answer`).
                let own = Sub::Home;
                if self.open_subs(ch).contains(&own) {
                    self.request(ch, own, method, false);
                    if let Some(r) = self
                        .channels
                        .get_mut(&ch)
                        .and_then(|c| c.requests.back_mut())
                    {
                        r.then_close = true;
                    }
                } else {
                    self.close_elsewhere(ch, Sub::Leader);
                    self.request(ch, Sub::Leader, method, true);
                }
            }
            Method::ChannelCloseOk(_) => {}
            Method::BasicQos(m) => {
                if let Some(c) = self.channels.get_mut(&ch) {
                    if m.global {
                        c.prefetch_global = m.prefetch_count;
                    } else {
                        c.prefetch_consumer = m.prefetch_count;
                    }
                }
                self.everywhere(ch, Method::BasicQos(m));
            }
            Method::ChannelFlow(_) | Method::BasicRecover(_) => self.everywhere(ch, method),
            Method::BasicRecoverAsync(_) => {
                for sub in self.open_subs(ch) {
                    self.send_method(ch, sub, method.clone());
                }
            }
            Method::TxSelect(_) => {
                if let Some(c) = self.channels.get_mut(&ch) {
                    c.tx = true;
                }
                self.everywhere(ch, method);
            }
            Method::ConfirmSelect(m) => {
                let was = self.channels.get(&ch).is_some_and(|c| c.confirm);
                if let Some(c) = self.channels.get_mut(&ch) {
                    c.confirm = true;
                }
                // The leader logs it (the channel's numbers start afresh); the client's own
                // home, which numbers every publish, answers.
                let own = Sub::Home;
                for sub in self.open_subs(ch) {
                    if sub == own && !m.nowait {
                        self.request(ch, sub, Method::ConfirmSelect(m.clone()), true);
                    } else if !was || sub == own {
                        let quiet = ConfirmSelect { nowait: true };
                        self.send_method(ch, sub, Method::ConfirmSelect(quiet));
                    }
                }
            }
            Method::TxRollback(_) => {
                if let Some(c) = self.channels.get_mut(&ch) {
                    c.tx_settled.clear();
                }
                self.everywhere(ch, method);
            }
            Method::TxCommit(_) => {
                if let Some(c) = self.channels.get_mut(&ch) {
                    for t in std::mem::take(&mut c.tx_settled) {
                        c.tags.remove(&t);
                    }
                }
                // The client's own home first: it routes what the transaction published and
                // sends the replicated part to the leader, which must have it before its commit.
                let own = Sub::Home;
                self.request(ch, own, Method::TxCommit(TxCommit {}), false);
                if let Some(r) = self
                    .channels
                    .get_mut(&ch)
                    .and_then(|c| c.requests.back_mut())
                {
                    r.then_commit = true;
                }
            }
            Method::QueueDeclare(ref m) => {
                let sub = self.own();
                self.ensure_channel(ch, sub, alloc);
                if m.nowait {
                    self.send_method(ch, sub, method);
                } else {
                    self.request(ch, sub, method, true);
                }
            }
            Method::QueuePurge(ref m) => {
                let sub = self.own();
                self.send_to_queue(ch, sub, m.nowait, method, alloc);
            }
            Method::QueueDelete(ref m) => {
                let sub = self.own();
                self.send_to_queue(ch, sub, m.nowait, method, alloc);
            }
            Method::BasicGet(ref m) => {
                let sub = self.own();
                let no_ack = m.no_ack;
                self.send_to_queue(ch, sub, false, method, alloc);
                if let Some(r) = self
                    .channels
                    .get_mut(&ch)
                    .and_then(|c| c.requests.back_mut())
                {
                    r.no_ack = no_ack;
                }
            }
            Method::BasicConsume(m) => self.consume(ch, m, alloc),
            Method::BasicCancel(m) => {
                let sub = self
                    .channels
                    .get(&ch)
                    .and_then(|c| c.consumers.get(&m.consumer_tag).map(|(s, _)| *s))
                    .unwrap_or(Sub::Leader);
                if m.nowait {
                    if let Some(c) = self.channels.get_mut(&ch) {
                        c.consumers.remove(&m.consumer_tag);
                    }
                    self.send_method(ch, sub, Method::BasicCancel(m));
                } else {
                    self.request(ch, sub, Method::BasicCancel(m), true);
                }
            }
            Method::BasicAck(m) => self.settle(ch, m.delivery_tag, m.multiple, None),
            Method::BasicNack(m) => self.settle(ch, m.delivery_tag, m.multiple, Some(m.requeue)),
            Method::BasicReject(m) => self.settle(ch, m.delivery_tag, false, Some(m.requeue)),
            // Exchanges, bindings, access.request and anything else: the own home.
            other => {
                let sub = self.own();
                self.ensure_channel(ch, sub, alloc);
                if expects_reply(&other) {
                    self.request(ch, sub, other, true);
                } else {
                    self.send_method(ch, sub, other);
                }
            }
        }
    }

    fn send_to_queue(
        &mut self,
        ch: ChannelId,
        sub: Sub,
        nowait: bool,
        method: Method,
        alloc: &mut dyn FnMut() -> ConnId,
    ) {
        self.ensure_channel(ch, sub, alloc);
        if nowait {
            self.send_method(ch, sub, method);
        } else {
            self.request(ch, sub, method, true);
        }
    }

    fn consume(&mut self, ch: ChannelId, m: BasicConsume, alloc: &mut dyn FnMut() -> ConnId) {
        let sub = self.own();
        if !m.consumer_tag.is_empty()
            && self
                .channels
                .get(&ch)
                .is_some_and(|c| c.consumers.contains_key(&m.consumer_tag))
        {
            let error = AmqpError::not_allowed(format!(
                "attempt to reuse consumer tag '{}'",
                m.consumer_tag
            ))
            .caused_by(60, 20);
            self.fail_channel(ch, error);
            return;
        }
        self.ensure_channel(ch, sub, alloc);
        if let Some(c) = self.channels.get_mut(&ch) {
            if !m.consumer_tag.is_empty() {
                c.consumers.insert(m.consumer_tag.clone(), (sub, m.no_ack));
            } else {
                c.consuming.push_back((sub, m.no_ack));
            }
        }
        if m.nowait {
            self.send_method(ch, sub, Method::BasicConsume(m));
        } else {
            self.request(ch, sub, Method::BasicConsume(m), true);
        }
    }

    /// A method every open session of the channel gets; the leader's reply is the client's.
    fn everywhere(&mut self, ch: ChannelId, method: Method) {
        for sub in self.open_subs(ch) {
            self.request(ch, sub, method.clone(), sub == Sub::Leader);
        }
    }

    fn open_subs(&self, ch: ChannelId) -> Vec<Sub> {
        self.channels
            .get(&ch)
            .map(|c| c.open_on.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Closes channel `ch` on every session but `except`, dropping their close-oks.
    fn close_elsewhere(&mut self, ch: ChannelId, except: Sub) {
        self.close_elsewhere_but(ch, &[except]);
    }

    fn close_elsewhere_but(&mut self, ch: ChannelId, except: &[Sub]) {
        for sub in self.open_subs(ch) {
            if except.contains(&sub) {
                continue;
            }
            *self.closing.entry((sub, ch)).or_default() += 1;
            let close = ChannelClose {
                reply_code: 200,
                reply_text: "closed".into(),
                class_id: 0,
                method_id: 0,
            };
            self.send_method(ch, sub, Method::ChannelClose(close));
        }
    }

    /// The mux itself refuses a method: the channel closes everywhere and the client gets
    /// `channel.close` with `error`.
    fn fail_channel(&mut self, ch: ChannelId, error: AmqpError) {
        self.close_elsewhere(ch, Sub::Leader);
        self.failing.insert(ch);
        let conn = self.client;
        // The leader's broker drops its channel state and sends the close the client gets.
        self.emit(
            Sub::Leader,
            Input::ChannelError {
                conn,
                channel: ch,
                error,
            },
        );
        self.channels.remove(&ch);
    }

    /// `basic.ack` (`requeue` None), `basic.nack` or `basic.reject` of the client's tag(s).
    fn settle(&mut self, ch: ChannelId, tag: u64, multiple: bool, requeue: Option<bool>) {
        let Some(c) = self.channels.get_mut(&ch) else {
            return;
        };
        let mut by_sub: BTreeMap<Sub, (u64, bool)> = BTreeMap::new();
        // In a transaction the tags stay until the commit (a rollback keeps them unacked).
        let tx = c.tx;
        if multiple {
            let upto = if tag == 0 { u64::MAX } else { tag };
            if tag != 0 && !c.tags.contains_key(&tag) && !c.stale.contains(&tag) {
                return self.unknown_tag(ch, tag, requeue);
            }
            let taken: Vec<(u64, (Sub, u64))> =
                c.tags.range(..=upto).map(|(t, v)| (*t, *v)).collect();
            for (client_tag, (sub, t)) in taken {
                by_sub.insert(sub, (t, true));
                if tx {
                    c.tx_settled.push(client_tag);
                } else {
                    c.tags.remove(&client_tag);
                }
            }
            c.stale = c.stale.split_off(&upto.saturating_add(1));
        } else if let Some(&(sub, t)) = c.tags.get(&tag) {
            by_sub.insert(sub, (t, false));
            if tx {
                c.tx_settled.push(tag);
            } else {
                c.tags.remove(&tag);
            }
        } else if c.stale.remove(&tag) {
            return;
        } else {
            return self.unknown_tag(ch, tag, requeue);
        }
        for (sub, (delivery_tag, multiple)) in by_sub {
            let method = match requeue {
                None => Method::BasicAck(BasicAck {
                    delivery_tag,
                    multiple,
                }),
                Some(requeue) => Method::BasicNack(BasicNack {
                    delivery_tag,
                    multiple,
                    requeue,
                }),
            };
            self.send_method(ch, sub, method);
        }
    }

    fn unknown_tag(&mut self, ch: ChannelId, tag: u64, requeue: Option<bool>) {
        let method_id = if requeue.is_some() { 120 } else { 80 };
        let error = AmqpError::precondition_failed(format!("unknown delivery tag {tag}"))
            .caused_by(60, method_id);
        self.fail_channel(ch, error);
    }

    /// The log index a session's broker had applied when it sent `effects`: if any of them is
    /// a reply, the client has now seen that state.
    pub(crate) fn observe_index(&mut self, index: u64, effects: &[Effect]) {
        if index > self.seen && effects.iter().any(is_reply_effect) {
            self.seen = index;
        }
    }

    /// Handles one effect from session `sub`.
    pub(crate) fn session_effect(&mut self, sub: Sub, effect: Effect) {
        let client = self.client;
        let effect = with_conn(effect, client);
        if let Some(ch) = channel_of(&effect) {
            let closing_here = self.closing.contains_key(&(sub, ch));
            let close_ok = matches!(
                effect,
                Effect::Send {
                    method: Method::ChannelCloseOk(_),
                    ..
                }
            );
            if closing_here && !close_ok {
                // From the incarnation of the channel the mux closed there.
                return;
            }
        }
        match &effect {
            Effect::Authenticated { .. } => self.out.push(Out::Client(effect)),
            Effect::Send {
                channel: 0,
                method: Method::ConnectionOpenOk(_),
                ..
            } => {
                self.open = true;
                self.out.push(Out::Client(effect));
            }
            // A connection error in any session (the client's fault, or a refused session)
            // ends the client's connection; the driver closes the other sessions with it.
            Effect::CloseConnection { .. } => self.out.push(Out::Client(effect)),
            Effect::AwaitWritable { .. } => self.out.push(Out::Client(effect)),
            // Credit flow of the client's publishes, which only its own node's home takes.
            Effect::Flow { .. } if sub == Sub::Home => {
                self.out.push(Out::Client(effect));
            }
            Effect::Flow { .. } => {}
            Effect::CloseChannel { channel, .. } => {
                let ch = *channel;
                if sub == Sub::Leader && self.failing.remove(&ch) {
                    self.out.push(Out::Client(effect));
                } else if self.channels.contains_key(&ch) {
                    self.release_all(ch);
                    self.close_elsewhere(ch, sub);
                    self.channels.remove(&ch);
                    if sub != Sub::Leader && self.closing.contains_key(&(Sub::Leader, ch)) {
                        // The client learns of it once the leader's channel is closed too, so
                        // that it cannot reopen the channel before.
                        self.pending_close.insert(ch, effect);
                    } else {
                        self.out.push(Out::Client(effect));
                    }
                }
            }
            Effect::Send {
                channel, method, ..
            } => {
                let ch = *channel;
                match method {
                    Method::ChannelCloseOk(_) => {
                        if let Some(n) = self.closing.get_mut(&(sub, ch)) {
                            *n -= 1;
                            if *n == 0 {
                                self.closing.remove(&(sub, ch));
                                if sub == Sub::Leader {
                                    if let Some(close) = self.pending_close.remove(&ch) {
                                        self.out.push(Out::Client(close));
                                    }
                                }
                            }
                            return;
                        }
                        self.reply(ch, sub, effect);
                    }
                    Method::BasicAck(m) => {
                        let (tag, multiple) = (m.delivery_tag, m.multiple);
                        self.confirmed(ch, sub, tag, multiple, true);
                    }
                    Method::BasicNack(m) => {
                        let (tag, multiple) = (m.delivery_tag, m.multiple);
                        self.confirmed(ch, sub, tag, multiple, false);
                    }
                    Method::BasicCancel(m) => {
                        if let Some(c) = self.channels.get_mut(&ch) {
                            c.consumers.remove(&m.consumer_tag);
                        }
                        self.unsolicited(ch, sub, effect);
                    }
                    m if is_reply(m) => self.reply(ch, sub, effect),
                    _ => self.unsolicited(ch, sub, effect),
                }
            }
            Effect::SendContent {
                channel, method, ..
            } => {
                let ch = *channel;
                match method {
                    Method::BasicGetOk(_) => self.reply(ch, sub, effect),
                    _ => self.unsolicited(ch, sub, effect),
                }
            }
            Effect::Synced { token, .. } => {
                if self.syncing == Some(*token) {
                    self.syncing = None;
                    self.unsynced = false;
                }
            }
            Effect::Redirect {
                channel, method, ..
            } => self.redirect(sub, *channel, method.clone()),
            // Handled by the broker task of the node that made them; never addressed here.
            Effect::Propose { .. }
            | Effect::Forward { .. }
            | Effect::ForwardRefused { .. }
            | Effect::ToOwner { .. }
            | Effect::ToChannel { .. } => {}
        }
    }

    /// A home session sent a queue method back (it does not hold the queue): the leader's
    /// broker gets it, in the same place of the channel's replies.
    fn redirect(&mut self, sub: Sub, ch: ChannelId, method: Method) {
        let order = self.next_order(Sub::Leader);
        let Some(c) = self.channels.get_mut(&ch) else {
            return;
        };
        let pending = c
            .requests
            .iter_mut()
            .filter(|r| r.sub == sub && r.reply.is_none())
            .min_by_key(|r| r.order);
        let Some(r) = pending else {
            // A nowait method: nothing waits for its answer.
            self.send_method(ch, Sub::Leader, method);
            return;
        };
        r.sub = Sub::Leader;
        r.order = order;
        if let Method::BasicConsume(m) = &method {
            if let Some(entry) = c.consumers.get_mut(&m.consumer_tag) {
                entry.0 = Sub::Leader;
            } else if let Some(entry) = c.consuming.iter_mut().find(|(s, _)| *s == sub) {
                entry.0 = Sub::Leader;
            }
        }
        self.send_method(ch, Sub::Leader, method);
    }

    /// The reply to the oldest request sent to `sub` on `ch`.
    fn reply(&mut self, ch: ChannelId, sub: Sub, effect: Effect) {
        let Some(c) = self.channels.get_mut(&ch) else {
            return;
        };
        let Some(r) = c
            .requests
            .iter_mut()
            .filter(|r| r.sub == sub && r.reply.is_none())
            .min_by_key(|r| r.order)
        else {
            // A reply nobody asked for (its request went with a close): drop it.
            return;
        };
        r.reply = Some(vec![effect]);
        self.release(ch);
    }

    /// An effect that is not a reply: it follows the replies of its session it came after.
    /// A delivery gets the client's delivery tag when it is handed to the client, so that the
    /// client sees its tags grow.
    fn unsolicited(&mut self, ch: ChannelId, sub: Sub, effect: Effect) {
        let Some(c) = self.channels.get_mut(&ch) else {
            if ch == 0 {
                self.out.push(Out::Client(effect));
            }
            return;
        };
        if let Some(r) = c
            .requests
            .iter_mut()
            .rev()
            .find(|r| r.sub == sub && r.reply.is_some())
        {
            if let Some(list) = r.reply.as_mut() {
                list.push(effect);
                return;
            }
        }
        let effect = self.give_tag(ch, sub, effect);
        self.out.push(Out::Client(effect));
    }

    /// Sends the client what can go, in request order.
    fn release(&mut self, ch: ChannelId) {
        loop {
            let Some(c) = self.channels.get_mut(&ch) else {
                return;
            };
            if c.requests.front().is_none_or(|r| r.reply.is_none()) {
                return;
            }
            let Some(mut r) = c.requests.pop_front() else {
                return;
            };
            let mut effects = r.reply.take().unwrap_or_default().into_iter();
            if let Some(reply) = effects.next() {
                self.answer(ch, &r, reply);
            }
            for e in effects {
                let e = self.give_tag(ch, r.sub, e);
                self.out.push(Out::Client(e));
            }
        }
    }

    /// Everything held on `ch` goes (the channel is closing).
    fn release_all(&mut self, ch: ChannelId) {
        let Some(c) = self.channels.get_mut(&ch) else {
            return;
        };
        let requests = std::mem::take(&mut c.requests);
        for r in requests {
            let Some(list) = r.reply else {
                continue;
            };
            let mut effects = list.into_iter();
            if let (Some(reply), true) = (effects.next(), r.answer) {
                self.out.push(Out::Client(reply));
            }
            for e in effects {
                let e = self.give_tag(ch, r.sub, e);
                self.out.push(Out::Client(e));
            }
        }
    }

    /// A reply whose turn has come.
    fn answer(&mut self, ch: ChannelId, r: &Request, reply: Effect) {
        let (sub, answer, then_commit) = (r.sub, r.answer, r.then_commit);
        let reply = if r.no_ack {
            self.number_only(ch, reply)
        } else {
            self.give_tag(ch, sub, reply)
        };
        match &reply {
            Effect::Send {
                method: Method::BasicConsumeOk(ok),
                ..
            } => {
                if let Some(c) = self.channels.get_mut(&ch) {
                    if !c.consumers.contains_key(&ok.consumer_tag) {
                        if let Some(pos) = c.consuming.iter().position(|(s, _)| *s == sub) {
                            if let Some(entry) = c.consuming.remove(pos) {
                                c.consumers.insert(ok.consumer_tag.clone(), entry);
                            }
                        }
                    }
                }
            }
            Effect::Send {
                method: Method::BasicCancelOk(ok),
                ..
            } => {
                if let Some(c) = self.channels.get_mut(&ch) {
                    c.consumers.remove(&ok.consumer_tag);
                }
            }
            Effect::Send {
                method: Method::ChannelCloseOk(_),
                ..
            } if answer => {
                self.channels.remove(&ch);
                self.out.push(Out::Client(reply));
                return;
            }
            _ => {}
        }
        if r.then_close {
            let close = match &reply {
                Effect::Send { .. } => Method::ChannelClose(ChannelClose {
                    reply_code: 200,
                    reply_text: "closed".into(),
                    class_id: 0,
                    method_id: 0,
                }),
                _ => return,
            };
            self.close_elsewhere_but(ch, &[sub, Sub::Leader]);
            self.request(ch, Sub::Leader, close, true);
            return;
        }
        if then_commit {
            // The home's part is committed; now the leader's, which answers.
            for other in self.open_subs(ch) {
                if other != sub {
                    let commit = Method::TxCommit(TxCommit {});
                    self.request(ch, other, commit, other == Sub::Leader);
                }
            }
            return;
        }
        if answer {
            self.out.push(Out::Client(reply));
        }
    }

    /// Gives a delivery or get-ok from `sub` the client's next delivery tag.
    fn give_tag(&mut self, ch: ChannelId, sub: Sub, effect: Effect) -> Effect {
        let Effect::SendContent {
            conn,
            channel,
            method,
            properties,
            body,
        } = effect
        else {
            return effect;
        };
        let Some(c) = self.channels.get_mut(&ch) else {
            return Effect::SendContent {
                conn,
                channel,
                method,
                properties,
                body,
            };
        };
        let method = match method {
            Method::BasicDeliver(mut d) => {
                let tag = c.next_tag;
                c.next_tag += 1;
                let acks = c
                    .consumers
                    .get(&d.consumer_tag)
                    .is_none_or(|(_, no_ack)| !no_ack);
                if acks {
                    c.tags.insert(tag, (sub, d.delivery_tag));
                }
                d.delivery_tag = tag;
                Method::BasicDeliver(d)
            }
            Method::BasicGetOk(mut g) => {
                // Only reached for a get that acks (see `answer`).
                let tag = c.next_tag;
                c.next_tag += 1;
                c.tags.insert(tag, (sub, g.delivery_tag));
                g.delivery_tag = tag;
                Method::BasicGetOk(g)
            }
            other => other,
        };
        Effect::SendContent {
            conn,
            channel,
            method,
            properties,
            body,
        }
    }

    /// A no-ack get-ok: the client's next delivery tag, and no mapping (it is never acked).
    fn number_only(&mut self, ch: ChannelId, effect: Effect) -> Effect {
        match effect {
            Effect::SendContent {
                conn,
                channel,
                method: Method::BasicGetOk(mut g),
                properties,
                body,
            } => {
                if let Some(c) = self.channels.get_mut(&ch) {
                    g.delivery_tag = c.next_tag;
                    c.next_tag += 1;
                }
                Effect::SendContent {
                    conn,
                    channel,
                    method: Method::BasicGetOk(g),
                    properties,
                    body,
                }
            }
            other => other,
        }
    }

    /// A confirm (`ack` or `nack`) from `sub` for its publish number `tag`: only the client's
    /// own home session confirms publishes (it numbers them as the client does).
    fn confirmed(&mut self, ch: ChannelId, sub: Sub, tag: u64, multiple: bool, ack: bool) {
        if sub != Sub::Home {
            return;
        }
        let Some(c) = self.channels.get_mut(&ch) else {
            return;
        };
        let seqs: Vec<u64> = if multiple {
            let keep = c.confirms.split_off(&tag.saturating_add(1));
            std::mem::replace(&mut c.confirms, keep)
                .into_iter()
                .collect()
        } else if c.confirms.remove(&tag) {
            vec![tag]
        } else {
            Vec::new()
        };
        let client = self.client;
        for seq in seqs {
            let method = if ack {
                Method::BasicAck(BasicAck {
                    delivery_tag: seq,
                    multiple: false,
                })
            } else {
                Method::BasicNack(BasicNack {
                    delivery_tag: seq,
                    multiple: false,
                    requeue: false,
                })
            };
            let effect = Effect::Send {
                conn: client,
                channel: ch,
                method,
            };
            self.unsolicited(ch, sub, effect);
        }
    }
}

fn qos(prefetch_count: u16, global: bool) -> Method {
    Method::BasicQos(BasicQos {
        prefetch_size: 0,
        prefetch_count,
        global,
    })
}

fn cancel_notify(props: &FieldTable) -> bool {
    match props.get("capabilities") {
        Some(FieldValue::Table(caps)) => caps
            .get("consumer_cancel_notify")
            .and_then(FieldValue::as_bool)
            .unwrap_or(false),
        _ => false,
    }
}

/// The same effect addressed to connection `conn`.
fn with_conn(effect: Effect, conn: ConnId) -> Effect {
    match effect {
        Effect::Send {
            channel, method, ..
        } => Effect::Send {
            conn,
            channel,
            method,
        },
        Effect::SendContent {
            channel,
            method,
            properties,
            body,
            ..
        } => Effect::SendContent {
            conn,
            channel,
            method,
            properties,
            body,
        },
        Effect::Authenticated { user, .. } => Effect::Authenticated { conn, user },
        Effect::CloseChannel { channel, error, .. } => Effect::CloseChannel {
            conn,
            channel,
            error,
        },
        Effect::CloseConnection { error, .. } => Effect::CloseConnection { conn, error },
        Effect::AwaitWritable { .. } => Effect::AwaitWritable { conn },
        Effect::Flow { paused, .. } => Effect::Flow { conn, paused },
        other => other,
    }
}

/// The channel an effect is for, if any (not channel 0).
fn channel_of(e: &Effect) -> Option<ChannelId> {
    match e {
        Effect::Send { channel, .. }
        | Effect::SendContent { channel, .. }
        | Effect::CloseChannel { channel, .. }
        | Effect::Redirect { channel, .. } => (*channel != 0).then_some(*channel),
        _ => None,
    }
}

/// Whether an effect is a reply (the client has seen the state it was sent from). A sync's
/// answer counts: the request it held must see at least the state the own home had when its
/// publishes were applied there — on a leader that lags that node's apply too (seen after a
/// failover: a passive declare through the new leader counted 2 967 of 3 000 messages the
/// client's node had applied).
fn is_reply_effect(e: &Effect) -> bool {
    match e {
        Effect::Synced { .. } => true,
        Effect::Send { method, .. } => is_reply(method),
        Effect::SendContent {
            method: Method::BasicGetOk(_),
            ..
        } => true,
        Effect::CloseChannel { .. } | Effect::Redirect { .. } => true,
        _ => false,
    }
}

/// Whether a client input must not overtake the client's earlier publishes (see
/// [`Mux::client_input`]): the connection's end (the leader session must have what the own
/// home routed before it closes). Since issue 19's step 4 no request the leader session
/// answers reads what a publish changed: declares, gets and consumes go to the own home,
/// whose channel orders them after its publishes, and a method the home sends back to the
/// leader ([`Effect::Redirect`]) carries the home's log index as a barrier.
fn needs_sync(input: &Input) -> bool {
    matches!(input, Input::ConnectionClosed { .. })
}

#[cfg(test)]
mod tests;
