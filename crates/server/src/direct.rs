//! Connections the node makes itself on an operator's behalf (the management API's publish, get,
//! purge and delete), like the direct connections of RabbitMQ's management plugin: no socket,
//! but the same path as a client's — login with the operator's credentials (so permissions apply
//! as to any client), and the same broker: this node's. One channel (1) per connection; each
//! call waits for its reply.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use warren_core::{AmqpError, ConnId, Effect, Input};
use warren_wire::{BasicProperties, BasicPublish, ChannelOpen, FieldTable, Method, ShortStr};

use crate::connection::{Incoming, Node, Registration};

/// How long a direct connection waits for any one reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a direct call failed.
#[derive(Debug, thiserror::Error)]
pub enum DirectError {
    /// The broker refused: the AMQP error (e.g. `NOT_FOUND - no queue 'x' in vhost '/'`).
    #[error("{0}")]
    Refused(AmqpError),
    #[error("the broker did not answer in time")]
    Timeout,
    #[error("the broker has stopped")]
    Stopped,
}

/// Opens direct connections; cheap to clone.
#[derive(Clone)]
pub struct DirectConnector {
    node: Node,
}

/// A message taken by `basic.get`.
#[derive(Clone, Debug)]
pub struct GotMessage {
    pub redelivered: bool,
    pub exchange: String,
    pub routing_key: String,
    /// Messages left in the queue.
    pub message_count: u32,
    pub properties: BasicProperties,
    pub body: Bytes,
    pub delivery_tag: u64,
}

/// One open direct connection with channel 1 open.
pub struct DirectConnection {
    conn: ConnId,
    /// `None` once closed.
    registration: Option<Registration>,
    incoming: Incoming,
    pending: std::collections::VecDeque<Effect>,
    /// The broker closed the connection.
    closed: bool,
    /// [`DirectConnection::close`] ran.
    finished: bool,
}

/// What came back on channel 1. Short-lived (one per call), so not boxed.
#[allow(clippy::large_enum_variant)]
enum Reply {
    Method(Method),
    Content(Method, BasicProperties, Bytes),
}

impl DirectConnector {
    pub(crate) fn new(node: Node) -> Self {
        DirectConnector { node }
    }

    /// Logs in as `user` (refused as a client would be: bad password, loopback-only user from
    /// afar, no access to the vhost) and opens channel 1 on `vhost`.
    pub async fn open(
        &self,
        user: &str,
        password: &str,
        peer_loopback: bool,
        vhost: &str,
    ) -> Result<DirectConnection, DirectError> {
        let conn = self.node.next_conn.fetch_add(1, Ordering::Relaxed);
        let (registration, incoming) = Registration::open(self.node.clone(), conn)
            .await
            .ok_or(DirectError::Stopped)?;
        let mut c = DirectConnection {
            conn,
            registration: Some(registration),
            incoming,
            pending: Default::default(),
            closed: false,
            finished: false,
        };
        let mut props = FieldTable::default();
        props.insert(
            warren_core::CONNECTION_NAME_PROPERTY,
            warren_wire::FieldValue::LongStr("management API (direct)".into()),
        );
        c.send(Input::Login {
            conn,
            mechanism: "PLAIN".into(),
            username: user.to_owned(),
            password: password.to_owned(),
            peer_loopback,
            client_properties: props,
        })
        .await?;
        c.wait(|e| matches!(e, Effect::Authenticated { .. }).then_some(()))
            .await?;
        c.send(Input::OpenVhost {
            conn,
            vhost: vhost.to_owned(),
        })
        .await?;
        c.wait(|e| match e {
            Effect::Send {
                method: Method::ConnectionOpenOk(_),
                ..
            } => Some(()),
            _ => None,
        })
        .await?;
        c.call(Method::ChannelOpen(ChannelOpen::default())).await?;
        Ok(c)
    }
}

impl DirectConnection {
    async fn send(&mut self, input: Input) -> Result<(), DirectError> {
        let Some(registration) = self.registration.as_mut() else {
            return Err(DirectError::Stopped);
        };
        if !registration.input(input).await {
            return Err(DirectError::Stopped);
        }
        Ok(())
    }

    /// The next effects from the broker.
    async fn receive(&mut self) -> Result<(), DirectError> {
        if self.registration.is_none() {
            return Err(DirectError::Stopped);
        }
        match self.incoming.effects.recv().await {
            Some(batch) => {
                self.pending.extend(batch.effects);
                Ok(())
            }
            None => Err(DirectError::Stopped),
        }
    }

    /// Waits for the first effect `pick` accepts; a connection or channel close is an error.
    async fn wait<T>(&mut self, pick: impl Fn(&Effect) -> Option<T>) -> Result<T, DirectError> {
        let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
        loop {
            while let Some(e) = self.pending.pop_front() {
                match e {
                    Effect::CloseConnection { error, .. } => {
                        self.closed = true;
                        return Err(DirectError::Refused(error));
                    }
                    Effect::CloseChannel { error, .. } => {
                        // The channel is gone: reopen one so the connection stays usable.
                        self.send(Input::Method {
                            conn: self.conn,
                            channel: 1,
                            method: Method::ChannelCloseOk(Default::default()),
                        })
                        .await?;
                        return Err(DirectError::Refused(error));
                    }
                    Effect::AwaitWritable { .. } => {
                        self.send(Input::Writable {
                            conn: self.conn,
                            writable: true,
                        })
                        .await?;
                    }
                    other => {
                        if let Some(t) = pick(&other) {
                            return Ok(t);
                        }
                    }
                }
            }
            match tokio::time::timeout_at(deadline, self.receive()).await {
                Err(_) => return Err(DirectError::Timeout),
                Ok(result) => result?,
            }
        }
    }

    async fn call_reply(&mut self, method: Method) -> Result<Reply, DirectError> {
        self.send(Input::Method {
            conn: self.conn,
            channel: 1,
            method,
        })
        .await?;
        self.wait(|e| match e {
            Effect::Send {
                channel: 1, method, ..
            } => Some(Reply::Method(method.clone())),
            Effect::SendContent {
                channel: 1,
                method,
                properties,
                body,
                ..
            } => Some(Reply::Content(
                method.clone(),
                properties.clone(),
                body.clone(),
            )),
            _ => None,
        })
        .await
    }

    /// Sends a synchronous method on channel 1 and returns its reply.
    pub async fn call(&mut self, method: Method) -> Result<Method, DirectError> {
        match self.call_reply(method).await? {
            Reply::Method(m) | Reply::Content(m, _, _) => Ok(m),
        }
    }

    /// Publishes with confirms and `mandatory`; returns whether the message reached a queue.
    pub async fn publish(
        &mut self,
        exchange: &str,
        routing_key: &str,
        properties: BasicProperties,
        body: Bytes,
    ) -> Result<bool, DirectError> {
        self.call(Method::ConfirmSelect(Default::default())).await?;
        self.send(Input::Publish {
            conn: self.conn,
            channel: 1,
            publish: BasicPublish {
                ticket: 0,
                exchange: ShortStr::from(exchange),
                routing_key: ShortStr::from(routing_key),
                mandatory: true,
                immediate: false,
            },
            properties,
            body,
        })
        .await?;
        let mut routed = true;
        loop {
            let reply = self
                .wait(|e| match e {
                    Effect::Send {
                        channel: 1, method, ..
                    }
                    | Effect::SendContent {
                        channel: 1, method, ..
                    } => Some(method.clone()),
                    _ => None,
                })
                .await?;
            match reply {
                Method::BasicReturn(_) => routed = false,
                Method::BasicAck(_) => return Ok(routed),
                Method::BasicNack(_) => return Ok(false),
                _ => {}
            }
        }
    }

    /// `basic.get` (with acks): `None` when the queue is empty. Settle the message with
    /// [`DirectConnection::settle`].
    pub async fn get(&mut self, queue: &str) -> Result<Option<GotMessage>, DirectError> {
        let reply = self
            .call_reply(Method::BasicGet(warren_wire::BasicGet {
                ticket: 0,
                queue: ShortStr::from(queue),
                no_ack: false,
            }))
            .await?;
        match reply {
            Reply::Content(Method::BasicGetOk(ok), properties, body) => Ok(Some(GotMessage {
                redelivered: ok.redelivered,
                exchange: ok.exchange.to_string(),
                routing_key: ok.routing_key.to_string(),
                message_count: ok.message_count,
                properties,
                body,
                delivery_tag: ok.delivery_tag,
            })),
            _ => Ok(None),
        }
    }

    /// Acks (`requeue: None`) or rejects a message taken with [`DirectConnection::get`].
    pub async fn settle(
        &mut self,
        delivery_tag: u64,
        requeue: Option<bool>,
    ) -> Result<(), DirectError> {
        let method = match requeue {
            None => Method::BasicAck(warren_wire::BasicAck {
                delivery_tag,
                multiple: false,
            }),
            Some(requeue) => Method::BasicReject(warren_wire::BasicReject {
                delivery_tag,
                requeue,
            }),
        };
        self.send(Input::Method {
            conn: self.conn,
            channel: 1,
            method,
        })
        .await
    }

    /// Closes the connection (requeueing anything unacked) and forgets it.
    pub async fn close(mut self) {
        if let Some(mut registration) = self.registration.take() {
            registration.close(!self.closed, &mut self.incoming).await;
        }
        self.finished = true;
    }
}

impl Drop for DirectConnection {
    /// A connection dropped without [`DirectConnection::close`] (an HTTP request cut short) is
    /// still closed, in a task of its own.
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let known = !self.closed;
        if let (Some(mut registration), Ok(runtime)) = (
            self.registration.take(),
            tokio::runtime::Handle::try_current(),
        ) {
            let mut incoming = std::mem::replace(&mut self.incoming, Incoming::none());
            runtime.spawn(async move { registration.close(known, &mut incoming).await });
        }
    }
}
