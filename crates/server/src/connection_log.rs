//! The lines a client connection leaves in the node's log, worded as RabbitMQ's: one when the
//! connection is accepted, one when its user is let into a vhost, one when it closes (with the
//! reason), so that an operator who greps a RabbitMQ log for `accepting AMQP connection` or
//! `closing AMQP connection` finds Warren's too. What a connection learns (user, vhost, the
//! protocol a translated client speaks) is gathered here from its inputs; the lines are made
//! here and logged by the connection task.

use std::net::SocketAddr;

use warren_core::{Input, CONNECTION_PROTOCOL_PROPERTY};
use warren_wire::FieldValue;

/// Why a connection ended, as its closing line says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ending {
    /// `connection.close` from the client, answered.
    ClosedByClient,
    /// The node closed it (`connection.close` with an error, already logged with its code).
    ClosedByServer,
    /// The socket ended or broke without the close handshake.
    SocketClosed,
    /// The node is shutting down.
    Shutdown,
}

/// What one connection's log lines say.
#[derive(Debug)]
pub(crate) struct ConnectionLog {
    /// `peer -> local`, RabbitMQ's connection name.
    name: String,
    /// `AMQP`, or the protocol a translated client speaks (`STOMP`, `MQTT`), once known.
    protocol: String,
    user: Option<String>,
    vhost: Option<String>,
    /// The "granted access" line was written.
    opened: bool,
}

impl ConnectionLog {
    /// A connection from `peer` to the node's `local` address; `translated`: its protocol is
    /// named by its login (STOMP, MQTT), else AMQP.
    pub(crate) fn new(peer: SocketAddr, local: &str, translated: bool) -> ConnectionLog {
        ConnectionLog {
            name: format!("{peer} -> {local}"),
            protocol: if translated { "client" } else { "AMQP" }.to_owned(),
            user: None,
            vhost: None,
            opened: false,
        }
    }

    /// `accepting AMQP connection 127.0.0.1:5000 -> 127.0.0.1:5672`.
    pub(crate) fn accepting(&self) -> String {
        format!("accepting {} connection {}", self.protocol, self.name)
    }

    /// Notes the user, vhost and protocol an input names.
    pub(crate) fn note(&mut self, input: &Input) {
        match input {
            Input::Login {
                username,
                client_properties,
                ..
            } => {
                self.user = Some(username.clone());
                // `STOMP 1.2`, `MQTT 3.1.1`: the protocol's name.
                if let Some(FieldValue::LongStr(p)) =
                    client_properties.get(CONNECTION_PROTOCOL_PROPERTY)
                {
                    let p = String::from_utf8_lossy(p.as_bytes());
                    if let Some(name) = p.split_whitespace().next() {
                        self.protocol = name.to_owned();
                    }
                }
            }
            Input::OpenVhost { vhost, .. } => self.vhost = Some(vhost.clone()),
            _ => {}
        }
    }

    /// The "granted access" line, the first time the connection is open (`None` otherwise).
    pub(crate) fn opened(&mut self, open: bool) -> Option<String> {
        if !open || self.opened {
            return None;
        }
        self.opened = true;
        Some(format!(
            "{} connection {}: user '{}' authenticated and granted access to vhost '{}'",
            self.protocol,
            self.name,
            self.user.as_deref().unwrap_or(""),
            self.vhost.as_deref().unwrap_or("")
        ))
    }

    /// Whether the connection got as far as a vhost (RabbitMQ logs closing lines for those;
    /// one refused earlier is logged with its refusal).
    pub(crate) fn was_open(&self) -> bool {
        self.opened
    }

    /// The closing line.
    pub(crate) fn closing(&self, ending: Ending) -> String {
        let why = match ending {
            Ending::ClosedByClient => "closed by the client",
            Ending::ClosedByServer => "closed by the node",
            Ending::SocketClosed => "client unexpectedly closed TCP connection",
            Ending::Shutdown => "the node is shutting down",
        };
        format!(
            "closing {} connection {} (vhost: '{}', user: '{}'): {why}",
            self.protocol,
            self.name,
            self.vhost.as_deref().unwrap_or(""),
            self.user.as_deref().unwrap_or("")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_wire::FieldTable;

    fn login(user: &str, protocol: Option<&str>) -> Input {
        let mut client_properties = FieldTable::default();
        if let Some(p) = protocol {
            client_properties.insert(CONNECTION_PROTOCOL_PROPERTY, FieldValue::LongStr(p.into()));
        }
        Input::Login {
            conn: 1,
            mechanism: "PLAIN".into(),
            username: user.into(),
            password: String::new(),
            peer_loopback: true,
            client_properties,
        }
    }

    #[test]
    fn an_amqp_connection_is_accepted_let_in_and_closed_in_rabbitmqs_words() {
        let peer: SocketAddr = "127.0.0.1:50000".parse().unwrap();
        let mut log = ConnectionLog::new(peer, "127.0.0.1:5672", false);
        assert_eq!(
            log.accepting(),
            "accepting AMQP connection 127.0.0.1:50000 -> 127.0.0.1:5672"
        );
        log.note(&login("guest", None));
        assert_eq!(log.opened(false), None, "not open yet");
        log.note(&Input::OpenVhost {
            conn: 1,
            vhost: "/".into(),
        });
        assert_eq!(
            log.opened(true).as_deref(),
            Some("AMQP connection 127.0.0.1:50000 -> 127.0.0.1:5672: user 'guest' authenticated and granted access to vhost '/'")
        );
        assert_eq!(log.opened(true), None, "once");
        assert!(log.was_open());
        assert_eq!(
            log.closing(Ending::SocketClosed),
            "closing AMQP connection 127.0.0.1:50000 -> 127.0.0.1:5672 (vhost: '/', user: 'guest'): client unexpectedly closed TCP connection"
        );
    }

    #[test]
    fn a_translated_client_is_named_by_its_protocol() {
        let peer: SocketAddr = "[::1]:7".parse().unwrap();
        let mut log = ConnectionLog::new(peer, "[::1]:1883", true);
        log.note(&login("dev", Some("MQTT 3.1.1")));
        log.note(&Input::OpenVhost {
            conn: 1,
            vhost: "iot".into(),
        });
        assert!(log
            .opened(true)
            .is_some_and(|l| l.starts_with("MQTT connection [::1]:7 -> [::1]:1883: user 'dev'")));
        assert_eq!(
            log.closing(Ending::ClosedByClient),
            "closing MQTT connection [::1]:7 -> [::1]:1883 (vhost: 'iot', user: 'dev'): closed by the client"
        );
    }
}
