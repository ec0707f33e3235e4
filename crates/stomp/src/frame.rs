//! A STOMP frame: its command, its headers in order, its body.

use bytes::Bytes;

/// A protocol version, as negotiated by CONNECT's `accept-version` and CONNECTED's `version`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    V1_0,
    V1_1,
    V1_2,
}

impl Version {
    /// Whether header names and values are escaped in frames other than CONNECT/CONNECTED.
    pub fn escapes_headers(self) -> bool {
        self >= Version::V1_1
    }

    /// The version as the `version` header writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V1_0 => "1.0",
            Version::V1_1 => "1.1",
            Version::V1_2 => "1.2",
        }
    }
}

/// A frame's command: the client's, the server's, or one the specification does not name
/// (answered with an ERROR frame by the server).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Connect,
    Stomp,
    Send,
    Subscribe,
    Unsubscribe,
    Begin,
    Commit,
    Abort,
    Ack,
    Nack,
    Disconnect,
    Connected,
    Message,
    Receipt,
    Error,
    Unknown(String),
}

impl Command {
    /// The command of a command line.
    pub fn parse(line: &str) -> Command {
        match line {
            "CONNECT" => Command::Connect,
            "STOMP" => Command::Stomp,
            "SEND" => Command::Send,
            "SUBSCRIBE" => Command::Subscribe,
            "UNSUBSCRIBE" => Command::Unsubscribe,
            "BEGIN" => Command::Begin,
            "COMMIT" => Command::Commit,
            "ABORT" => Command::Abort,
            "ACK" => Command::Ack,
            "NACK" => Command::Nack,
            "DISCONNECT" => Command::Disconnect,
            "CONNECTED" => Command::Connected,
            "MESSAGE" => Command::Message,
            "RECEIPT" => Command::Receipt,
            "ERROR" => Command::Error,
            other => Command::Unknown(other.to_owned()),
        }
    }

    /// The command line's text.
    pub fn as_str(&self) -> &str {
        match self {
            Command::Connect => "CONNECT",
            Command::Stomp => "STOMP",
            Command::Send => "SEND",
            Command::Subscribe => "SUBSCRIBE",
            Command::Unsubscribe => "UNSUBSCRIBE",
            Command::Begin => "BEGIN",
            Command::Commit => "COMMIT",
            Command::Abort => "ABORT",
            Command::Ack => "ACK",
            Command::Nack => "NACK",
            Command::Disconnect => "DISCONNECT",
            Command::Connected => "CONNECTED",
            Command::Message => "MESSAGE",
            Command::Receipt => "RECEIPT",
            Command::Error => "ERROR",
            Command::Unknown(s) => s,
        }
    }

    /// CONNECT, STOMP and CONNECTED never escape their headers (1.0 clients must read them).
    pub fn escapes_headers(&self, version: Version) -> bool {
        version.escapes_headers()
            && !matches!(self, Command::Connect | Command::Stomp | Command::Connected)
    }
}

/// One frame. Headers keep their order and repeats; [`Frame::header`] gives the first of a
/// name, as STOMP 1.2 says a repeated header's first value is the one that counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub command: Command,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Frame {
    /// A frame with no headers and no body.
    pub fn new(command: Command) -> Frame {
        Frame {
            command,
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    /// Adds a header (after the ones already there).
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Frame {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body.
    pub fn with_body(mut self, body: impl Into<Bytes>) -> Frame {
        self.body = body.into();
        self
    }

    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}
