//! The command line, in rabbitmq-perf-test's vocabulary (`-x -y -s -c -f -u -q -A -a -r -z -C -D`,
//! `--queue-args`, `--consumer-args`, `--message-properties`), the queue names it expands to and
//! the argument tables it declares and consumes with. Parsing only: nothing here connects.

use std::time::Duration;

use anyhow::{bail, Context};
use clap::{ArgAction, Parser, ValueEnum};
use lapin::types::{AMQPValue, FieldTable};

use crate::arguments;
use crate::properties::MessageProperties;

/// warren-perf: publishes and consumes through AMQP 0-9-1 (lapin) and reports rates and latency
/// percentiles, like rabbitmq-perf-test. Works against Warren and RabbitMQ alike.
///
/// Every producer and every consumer has a connection of its own; connections are spread over
/// the URIs given with -h/--uri in turn. Producer i publishes to queue i mod N through the default
/// exchange; consumer j consumes from queue j mod N. Progress goes to stderr once a second; the
/// summary goes to stdout (one JSON object with --json).
#[derive(Parser, Debug, Clone)]
#[command(
    name = "warren-perf",
    version,
    about,
    long_about,
    disable_help_flag = true
)]
pub(crate) struct Options {
    /// Print help.
    #[arg(long, action = ArgAction::Help)]
    help: Option<bool>,
    /// Broker URI; repeat to spread connections over the nodes of a cluster.
    #[arg(
        short = 'h',
        long = "uri",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    pub(crate) uris: Vec<String>,
    /// For `amqps://` URIs: the CA certificate (PEM) that signs the broker's certificate
    /// [default: the Mozilla roots].
    #[arg(long, value_name = "PEM_FILE")]
    pub(crate) tls_ca: Option<std::path::PathBuf>,
    /// A STOMP or MQTT listener, `stomp://USER:PASS@HOST:PORT[/VHOST]` or
    /// `mqtt://USER:PASS@HOST:PORT[/VHOST]`; repeat for the nodes of a cluster (all of one
    /// protocol). Producers and consumers then speak that protocol, spread over these URIs as over
    /// -h; queues are still declared and deleted over AMQP through -h. STOMP sends to and
    /// subscribes to `/amq/queue/NAME`, with a receipt per SEND as its confirm (-c); MQTT
    /// publishes to topic `perf/NAME` (QoS 1 with -c, else 0) and its consumers subscribe with a
    /// persistent session before any producer starts (no queue is declared over AMQP then).
    #[arg(long = "protocol-uri", value_name = "URI")]
    pub(crate) protocol_uris: Vec<String>,
    /// Number of producers (0: consume only).
    #[arg(short = 'x', long, default_value_t = 1)]
    pub(crate) producers: usize,
    /// Number of consumers (0: publish only).
    #[arg(short = 'y', long, default_value_t = 1)]
    pub(crate) consumers: usize,
    /// Message body size in bytes; the first 8 bytes carry the send time (end-to-end latency is
    /// measured only for bodies of 8 bytes or more).
    #[arg(short = 's', long, default_value_t = 12)]
    pub(crate) size: usize,
    /// Publisher confirms with at most N messages unconfirmed per producer (0: no confirms).
    #[arg(short = 'c', long = "confirm", default_value_t = 0)]
    pub(crate) confirm: usize,
    /// Message flag; `persistent` sets delivery-mode 2, `mandatory` sets the publish flag.
    #[arg(short = 'f', long = "flag")]
    pub(crate) flags: Vec<Flag>,
    /// `quorum` declares queues with x-queue-type=quorum (always durable); `classic` declares
    /// them without the argument.
    #[arg(long, value_enum, default_value_t = QueueType::Classic)]
    pub(crate) queue_type: QueueType,
    /// Queue name.
    #[arg(short = 'u', long, conflicts_with = "queue_pattern")]
    pub(crate) queue: Option<String>,
    /// Queue name pattern with `%d`, optionally followed by a range `FROM..TO` (inclusive), as
    /// in `--queue-pattern 'qq-%d' 1..100`.
    #[arg(long, num_args = 1..=2, value_names = ["PATTERN", "FROM..TO"])]
    pub(crate) queue_pattern: Option<Vec<String>>,
    /// First number of --queue-pattern (when no range follows the pattern).
    #[arg(long, default_value_t = 1)]
    pub(crate) queue_pattern_from: u32,
    /// Last number of --queue-pattern (when no range follows the pattern).
    #[arg(long, default_value_t = 1)]
    pub(crate) queue_pattern_to: u32,
    /// Queue arguments of queue.declare as `KEY=VALUE` pairs separated by commas, as
    /// rabbitmq-perf-test's -qa: `x-max-priority=10`, `x-queue-type=stream`; repeatable.
    /// `true`/`false` are booleans, integers longs, anything else strings. With --queue-type
    /// quorum, an x-queue-type here must be `quorum` too.
    #[arg(long = "queue-args", value_name = "KEY=VALUE,...")]
    pub(crate) queue_args: Vec<String>,
    /// Arguments of basic.consume, typed as --queue-args, as rabbitmq-perf-test's -ca:
    /// `x-stream-offset=first` (where a stream consumer starts), `x-priority=10`; repeatable.
    #[arg(long = "consumer-args", value_name = "KEY=VALUE,...")]
    pub(crate) consumer_args: Vec<String>,
    /// Message properties as `KEY=VALUE` pairs, rabbitmq-perf-test's -mp names: contentType,
    /// contentEncoding, deliveryMode, priority, correlationId, replyTo, expiration, messageId,
    /// timestamp (seconds since the epoch), type, userId, appId, clusterId; any other key is
    /// sent as a header (typed as --queue-args). Repeatable.
    #[arg(long = "message-properties", value_name = "KEY=VALUE,...")]
    pub(crate) message_properties: Vec<String>,
    /// Give each message a priority drawn uniformly from 0..=N (for a queue declared with
    /// `--queue-args x-max-priority=M`). With consumers, the summary counts deliveries that came
    /// after one of lower priority on the same consumer.
    #[arg(long, value_name = "N")]
    pub(crate) random_priority: Option<u8>,
    /// Declare queues durable (quorum queues always are).
    #[arg(long, default_value_t = true, action = ArgAction::Set)]
    pub(crate) durable: bool,
    /// Declare queues auto-delete (deleted by the broker when their last consumer goes).
    #[arg(long, default_value_t = false, action = ArgAction::Set)]
    pub(crate) auto_delete: bool,
    /// Delete the queues when the run ends.
    #[arg(long)]
    pub(crate) delete_queues: bool,
    /// Consumer prefetch (basic.qos); 0: unlimited.
    #[arg(short = 'q', long, default_value_t = 0)]
    pub(crate) qos: u16,
    /// Acknowledge with multiple=true every N deliveries (0 or 1: every delivery on its own).
    #[arg(short = 'A', long, default_value_t = 0)]
    pub(crate) multi_ack_every: u64,
    /// Consume with no-ack (automatic acknowledgement).
    #[arg(short = 'a', long)]
    pub(crate) autoack: bool,
    /// Publishing rate limit per producer, messages per second (0: unlimited).
    #[arg(short = 'r', long, default_value_t = 0.0)]
    pub(crate) rate: f64,
    /// Consuming rate limit per consumer, messages per second (0: unlimited), as
    /// rabbitmq-perf-test's: a consumer slower than its producers, for backlog and overload runs.
    #[arg(short = 'R', long, default_value_t = 0.0)]
    pub(crate) consumer_rate: f64,
    /// Run for this many seconds (0: until the message counts are reached, or Ctrl-C).
    #[arg(short = 'z', long = "time", default_value_t = 0.0)]
    pub(crate) time: f64,
    /// Messages each producer publishes, then stops (0: no limit).
    #[arg(short = 'C', long, default_value_t = 0)]
    pub(crate) pmessages: u64,
    /// Messages each consumer takes, then stops (0: no limit).
    #[arg(short = 'D', long, default_value_t = 0)]
    pub(crate) cmessages: u64,
    /// `empty`: consumers stop once they have taken as many messages as their queue held when
    /// the run started (to drain a backlog).
    #[arg(long, value_enum, default_value_t = ExitWhen::Never)]
    pub(crate) exit_when: ExitWhen,
    /// Print the final summary as one JSON object on stdout.
    #[arg(long)]
    pub(crate) json: bool,
    /// Seconds to wait for outstanding confirms and deliveries once the run ends.
    #[arg(long, default_value_t = 10.0)]
    pub(crate) grace: f64,
    /// Print this command's manual page (roff) and exit, for packaging.
    #[arg(long, hide = true)]
    pub(crate) man_page: bool,
}

/// The protocol producers and consumers speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Amqp,
    Stomp,
    Mqtt,
}

/// A `--protocol-uri`: where a STOMP or MQTT client connects and who it logs in as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProtocolUri {
    pub(crate) protocol: Protocol,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) user: String,
    pub(crate) password: String,
    pub(crate) vhost: String,
}

impl ProtocolUri {
    /// `stomp://USER:PASS@HOST:PORT[/VHOST]` or `mqtt://…` (the vhost percent-encoded as in an
    /// AMQP URI; `/` when absent; guest/guest when no user is given).
    pub(crate) fn parse(uri: &str) -> anyhow::Result<ProtocolUri> {
        let (scheme, rest) = uri
            .split_once("://")
            .with_context(|| format!("{uri}: no scheme"))?;
        let protocol = match scheme {
            "stomp" => Protocol::Stomp,
            "mqtt" => Protocol::Mqtt,
            other => bail!("{uri}: the scheme is stomp or mqtt, not {other}"),
        };
        let (authority, vhost) = match rest.split_once('/') {
            Some((a, v)) if !v.is_empty() => (a, v.replace("%2f", "/").replace("%2F", "/")),
            Some((a, _)) => (a, "/".to_owned()),
            None => (rest, "/".to_owned()),
        };
        let (login, address) = match authority.rsplit_once('@') {
            Some((l, a)) => (Some(l), a),
            None => (None, authority),
        };
        let (user, password) = match login {
            Some(l) => l
                .split_once(':')
                .map(|(u, p)| (u.to_owned(), p.to_owned()))
                .unwrap_or((l.to_owned(), String::new())),
            None => ("guest".to_owned(), "guest".to_owned()),
        };
        let (host, port) = address
            .rsplit_once(':')
            .with_context(|| format!("{uri}: no port"))?;
        Ok(ProtocolUri {
            protocol,
            host: host.trim_matches(['[', ']']).to_owned(),
            port: port
                .parse()
                .with_context(|| format!("{uri}: bad port {port}"))?,
            user,
            password,
            vhost,
        })
    }
}

/// A `-f` flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Flag {
    Persistent,
    Mandatory,
}

/// The `--queue-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum QueueType {
    Classic,
    Quorum,
}

/// When consumers stop on their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ExitWhen {
    Never,
    Empty,
}

impl Options {
    /// The queue names, in order: `-u`, the expanded `--queue-pattern`, or `warren-perf`.
    pub(crate) fn queues(&self) -> anyhow::Result<Vec<String>> {
        if let Some(q) = &self.queue {
            return Ok(vec![q.clone()]);
        }
        let Some(pattern) = &self.queue_pattern else {
            return Ok(vec!["warren-perf".to_string()]);
        };
        let (from, to) = match pattern.get(1) {
            Some(range) => parse_range(range)?,
            None => (self.queue_pattern_from, self.queue_pattern_to),
        };
        if !pattern[0].contains("%d") {
            bail!("--queue-pattern needs %d: {}", pattern[0]);
        }
        if from > to {
            bail!("--queue-pattern range is empty: {from}..{to}");
        }
        Ok((from..=to)
            .map(|i| pattern[0].replace("%d", &i.to_string()))
            .collect())
    }

    /// The arguments of queue.declare: x-queue-type of --queue-type, then the --queue-args.
    pub(crate) fn queue_arguments(&self) -> anyhow::Result<FieldTable> {
        let mut base = FieldTable::default();
        if self.queue_type == QueueType::Quorum {
            base.insert(
                "x-queue-type".into(),
                AMQPValue::LongString("quorum".into()),
            );
        }
        arguments::table(base, &self.queue_args).context("--queue-args")
    }

    /// The arguments of basic.consume (--consumer-args).
    pub(crate) fn consumer_arguments(&self) -> anyhow::Result<FieldTable> {
        arguments::table(FieldTable::default(), &self.consumer_args).context("--consumer-args")
    }

    /// The x-queue-type the queues are declared with: `--queue-args x-queue-type=…`, else
    /// `quorum` for --queue-type quorum; `None` for RabbitMQ's default, classic.
    pub(crate) fn x_queue_type(&self) -> anyhow::Result<Option<String>> {
        let given = arguments::last(&self.queue_args, "x-queue-type").context("--queue-args")?;
        Ok(given.or_else(|| (self.queue_type == QueueType::Quorum).then(|| "quorum".into())))
    }

    /// Whether the queues are quorum queues or streams, which are always durable.
    pub(crate) fn replicated(&self) -> anyhow::Result<bool> {
        Ok(matches!(
            self.x_queue_type()?.as_deref(),
            Some("quorum" | "stream")
        ))
    }

    /// The properties producers give their messages (-f persistent, --message-properties,
    /// --random-priority).
    pub(crate) fn message_properties(&self) -> anyhow::Result<MessageProperties> {
        MessageProperties::new(
            self.persistent(),
            &self.message_properties,
            self.random_priority,
        )
    }

    /// Whether messages are published with delivery-mode 2.
    pub(crate) fn persistent(&self) -> bool {
        self.flags.contains(&Flag::Persistent)
    }

    /// Whether publishes carry the mandatory flag.
    pub(crate) fn mandatory(&self) -> bool {
        self.flags.contains(&Flag::Mandatory)
    }

    /// The run's length, if -z was given.
    pub(crate) fn duration(&self) -> Option<Duration> {
        (self.time > 0.0).then(|| Duration::from_secs_f64(self.time))
    }

    /// The TLS settings of `amqps://` connections: the CA of `--tls-ca`, if given.
    pub(crate) fn tls(&self) -> anyhow::Result<lapin::tcp::OwnedTLSConfig> {
        let cert_chain = match &self.tls_ca {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("--tls-ca {}: {e}", path.display()))?,
            ),
            None => None,
        };
        Ok(lapin::tcp::OwnedTLSConfig {
            identity: None,
            cert_chain,
        })
    }

    /// The `--protocol-uri`s, parsed (empty: AMQP).
    pub(crate) fn protocol_uris(&self) -> anyhow::Result<Vec<ProtocolUri>> {
        self.protocol_uris
            .iter()
            .map(|u| ProtocolUri::parse(u))
            .collect()
    }

    /// The protocol producers and consumers speak: that of the `--protocol-uri`s, else AMQP.
    pub(crate) fn protocol(&self) -> anyhow::Result<Protocol> {
        let uris = self.protocol_uris()?;
        let Some(first) = uris.first() else {
            return Ok(Protocol::Amqp);
        };
        if uris.iter().any(|u| u.protocol != first.protocol) {
            bail!("every --protocol-uri is of one protocol");
        }
        Ok(first.protocol)
    }

    /// Checks combinations that cannot work.
    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        let protocol = self.protocol()?;
        if protocol != Protocol::Amqp
            && (self.mandatory()
                || !self.message_properties.is_empty()
                || self.random_priority.is_some()
                || !self.consumer_args.is_empty())
        {
            bail!("-f mandatory, --message-properties, --random-priority and --consumer-args are AMQP's");
        }
        if protocol == Protocol::Mqtt && self.exit_when == ExitWhen::Empty {
            bail!(
                "--exit-when empty needs a queue declared over AMQP; MQTT consumers have their own"
            );
        }
        if self.producers == 0 && self.consumers == 0 {
            bail!("nothing to do: -x 0 and -y 0");
        }
        if self.queue_type == QueueType::Quorum && (!self.durable || self.auto_delete) {
            bail!("quorum queues are durable and not auto-delete");
        }
        let x_queue_type = self.x_queue_type()?;
        if self.queue_type == QueueType::Quorum && x_queue_type.as_deref() != Some("quorum") {
            bail!(
                "--queue-type quorum and --queue-args x-queue-type={} disagree",
                x_queue_type.unwrap_or_default()
            );
        }
        if x_queue_type.as_deref() == Some("stream") {
            if !self.durable || self.auto_delete {
                bail!("streams are durable and not auto-delete");
            }
            if self.consumers > 0 && (self.qos == 0 || self.autoack) {
                bail!("stream consumers need a prefetch (-q) and manual acks (no -a)");
            }
            if self.exit_when == ExitWhen::Empty {
                bail!("a stream never empties: stop its consumers with -D (messages each)");
            }
        }
        self.queue_arguments()?;
        self.consumer_arguments()?;
        self.message_properties()?;
        if self.time <= 0.0
            && self.pmessages == 0
            && self.cmessages == 0
            && self.exit_when == ExitWhen::Never
        {
            tracing::info!("no -z, -C, -D or --exit-when: running until Ctrl-C");
        }
        if !(self.rate >= 0.0 && self.time >= 0.0 && self.grace >= 0.0) {
            bail!("-r, -z and --grace are not negative");
        }
        self.queues().map(|_| ())
    }
}

/// `FROM..TO`.
fn parse_range(s: &str) -> anyhow::Result<(u32, u32)> {
    let (a, b) = s
        .split_once("..")
        .with_context(|| format!("a queue range is FROM..TO, not {s}"))?;
    Ok((
        a.trim()
            .parse()
            .with_context(|| format!("range start {a}"))?,
        b.trim().parse().with_context(|| format!("range end {b}"))?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Options {
        Options::try_parse_from(std::iter::once("warren-perf").chain(args.iter().copied()))
            .expect("valid options")
    }

    #[test]
    fn protocol_uris_name_their_listener_login_and_vhost() {
        let u = ProtocolUri::parse("stomp://bob:pw@127.0.0.1:61613/%2f").unwrap();
        assert_eq!(
            u,
            ProtocolUri {
                protocol: Protocol::Stomp,
                host: "127.0.0.1".into(),
                port: 61613,
                user: "bob".into(),
                password: "pw".into(),
                vhost: "/".into(),
            }
        );
        let u = ProtocolUri::parse("mqtt://[::1]:1883/perf").unwrap();
        assert_eq!(
            (
                u.protocol,
                u.host.as_str(),
                u.port,
                u.user.as_str(),
                u.vhost.as_str()
            ),
            (Protocol::Mqtt, "::1", 1883, "guest", "perf")
        );
        assert!(ProtocolUri::parse("amqp://h:1").is_err());
        assert!(ProtocolUri::parse("mqtt://h").is_err());
        let o = parse(&[
            "--protocol-uri",
            "stomp://h:1",
            "--protocol-uri",
            "mqtt://h:2",
        ]);
        assert!(o.protocol().is_err(), "one protocol per run");
        assert_eq!(parse(&[]).protocol().unwrap(), Protocol::Amqp);
    }

    #[test]
    fn perf_test_short_flags_parse() {
        let o = parse(&[
            "-x1",
            "-y2",
            "-s1000",
            "--queue-type",
            "quorum",
            "-c1000",
            "-q1000",
            "-A100",
            "-z",
            "30",
            "-f",
            "persistent",
        ]);
        assert_eq!((o.producers, o.consumers, o.size), (1, 2, 1000));
        assert_eq!((o.confirm, o.qos, o.multi_ack_every), (1000, 1000, 100));
        assert_eq!(o.queue_type, QueueType::Quorum);
        assert!(o.persistent());
        assert_eq!(o.duration(), Some(Duration::from_secs(30)));
    }

    #[test]
    fn a_queue_pattern_with_a_range_expands_inclusively() {
        let o = parse(&["--queue-pattern", "qq-%d", "1..100"]);
        let q = o.queues().expect("queues");
        assert_eq!(q.len(), 100);
        assert_eq!((q[0].as_str(), q[99].as_str()), ("qq-1", "qq-100"));
        let o = parse(&[
            "--queue-pattern",
            "q%d",
            "--queue-pattern-from",
            "3",
            "--queue-pattern-to",
            "4",
        ]);
        assert_eq!(o.queues().expect("queues"), ["q3", "q4"]);
    }

    #[test]
    fn uris_repeat_and_h_is_the_uri() {
        let o = parse(&["-h", "amqp://a", "--uri", "amqp://b"]);
        assert_eq!(o.uris, ["amqp://a", "amqp://b"]);
    }

    #[test]
    fn queue_args_come_after_the_queue_type_and_the_last_x_queue_type_wins() {
        let o = parse(&[
            "--queue-args",
            "x-max-priority=10",
            "--queue-type",
            "quorum",
        ]);
        let t = o.queue_arguments().expect("valid arguments");
        assert_eq!(
            t.inner().get("x-max-priority"),
            Some(&AMQPValue::LongLongInt(10))
        );
        assert_eq!(o.x_queue_type().expect("valid").as_deref(), Some("quorum"));
        o.validate()
            .expect("a quorum priority queue is a valid request");
        let o = parse(&["--queue-args", "x-queue-type=stream", "-q100", "-D", "50"]);
        assert_eq!(
            o.queue_arguments()
                .expect("valid")
                .inner()
                .get("x-queue-type"),
            Some(&AMQPValue::LongString("stream".into()))
        );
        assert!(o.replicated().expect("valid"));
        o.validate()
            .expect("a stream with a prefetch is a valid request");
        let c = parse(&["--consumer-args", "x-stream-offset=first,x-priority=3"]);
        let t = c.consumer_arguments().expect("valid");
        assert_eq!(
            t.inner().get("x-stream-offset"),
            Some(&AMQPValue::LongString("first".into()))
        );
    }

    #[test]
    fn stream_consumers_need_a_prefetch_manual_acks_and_a_count_not_exit_when_empty() {
        let stream = ["--queue-args", "x-queue-type=stream"];
        for extra in [
            &["-q0"][..],
            &["-q10", "-a"],
            &["-q10", "--exit-when", "empty"],
        ] {
            let o = parse(&[&stream[..], extra].concat());
            assert!(o.validate().is_err(), "{extra:?}");
        }
        let o = parse(&[&stream[..], &["--queue-type", "quorum", "-q10"]].concat());
        assert!(o.validate().is_err(), "two queue types");
    }

    #[test]
    fn random_priority_is_at_most_255_and_excludes_a_fixed_priority() {
        assert!(Options::try_parse_from(["warren-perf", "--random-priority", "256"]).is_err());
        let o = parse(&[
            "--random-priority",
            "9",
            "--message-properties",
            "priority=5",
        ]);
        assert!(o.validate().is_err());
        let o = parse(&["--random-priority", "9", "-f", "persistent"]);
        let p = o
            .message_properties()
            .expect("valid")
            .for_producer(0)
            .next();
        assert!(p.priority().is_some_and(|p| p <= 9));
        assert_eq!(*p.delivery_mode(), Some(2));
    }

    #[test]
    fn quorum_queues_cannot_be_transient() {
        let o = parse(&["--queue-type", "quorum", "--durable", "false"]);
        assert!(o.validate().is_err());
    }
}
