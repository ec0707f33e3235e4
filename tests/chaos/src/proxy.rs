//! The loopback fallback's network: one TCP proxy per ordered pair of node slots (node A dials
//! node B's gRPC through the proxy for A→B, `warren --peer-address`). Each direction of each
//! link can be paused (bytes held, as a dropped packet is retransmitted until the path heals:
//! TCP sees silence, not a reset), delayed at random (loss: a 200 ms stall per chunk, as a
//! retransmission would) or rate-limited (a slow link). Client connections do not go through
//! proxies, as in the namespace mode they are never partitioned.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::addr;

/// One direction of a link.
#[derive(Default)]
struct Flow {
    paused: AtomicBool,
    /// Per mille of chunks stalled 200 ms.
    loss: AtomicU32,
    /// 0: unlimited.
    kbit: AtomicU32,
}

impl Flow {
    fn reset(&self) {
        self.paused.store(false, Ordering::Relaxed);
        self.loss.store(0, Ordering::Relaxed);
        self.kbit.store(0, Ordering::Relaxed);
    }
}

/// The link A→B: `up` carries A's bytes to B, `down` B's answers back to A.
#[derive(Default)]
struct Link {
    up: Flow,
    down: Flow,
}

pub struct Proxies {
    links: HashMap<(usize, usize), Arc<Link>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Proxies {
    pub async fn start(slots: usize) -> anyhow::Result<Proxies> {
        let mut links = HashMap::new();
        let mut tasks = Vec::new();
        for from in 1..=slots {
            for to in (1..=slots).filter(|t| *t != from) {
                let link = Arc::new(Link::default());
                let port = addr::link_port(from, to);
                let listener = TcpListener::bind(("127.0.0.1", port))
                    .await
                    .with_context(|| format!("binding the proxy for {from}->{to} on {port}"))?;
                let l = Arc::clone(&link);
                tasks.push(tokio::spawn(async move {
                    while let Ok((client, _)) = listener.accept().await {
                        let l = Arc::clone(&l);
                        tokio::spawn(async move {
                            let Ok(server) = TcpStream::connect(addr::grpc(to)).await else {
                                return;
                            };
                            let _ = client.set_nodelay(true);
                            let _ = server.set_nodelay(true);
                            let (cr, cw) = client.into_split();
                            let (sr, sw) = server.into_split();
                            let up = tokio::spawn(pump(cr, sw, Arc::clone(&l), true));
                            pump(sr, cw, l, false).await;
                            up.abort();
                        });
                    }
                }));
                links.insert((from, to), link);
            }
        }
        Ok(Proxies { links, tasks })
    }

    fn each<'a>(
        &'a self,
        pick: impl Fn(usize, usize) -> Option<bool> + 'a,
    ) -> impl Iterator<Item = &'a Flow> + 'a {
        self.links.iter().filter_map(move |((a, b), link)| {
            pick(*a, *b).map(|up| if up { &link.up } else { &link.down })
        })
    }

    /// Bytes from `from` to `to` are held (on both links between them).
    pub fn drop_packets(&self, from: usize, to: usize) {
        for flow in self.each(|a, b| {
            if (a, b) == (from, to) {
                Some(true)
            } else if (a, b) == (to, from) {
                Some(false)
            } else {
                None
            }
        }) {
            flow.paused.store(true, Ordering::Relaxed);
        }
    }

    pub fn cut(&self, a: usize, b: usize) {
        self.drop_packets(a, b);
        self.drop_packets(b, a);
    }

    /// A share `p` of the chunks `slot` receives from its peers is stalled 200 ms.
    pub fn lose(&self, slot: usize, p: f64) {
        let permille = (p * 1000.0) as u32;
        for flow in self.each(|a, b| {
            if b == slot {
                Some(true)
            } else if a == slot {
                Some(false)
            } else {
                None
            }
        }) {
            flow.loss.store(permille, Ordering::Relaxed);
        }
    }

    /// What `slot` sends to its peers goes at `kbit` kbit/s.
    pub fn slow(&self, slot: usize, kbit: u32) {
        for flow in self.each(|a, b| {
            if a == slot {
                Some(true)
            } else if b == slot {
                Some(false)
            } else {
                None
            }
        }) {
            flow.kbit.store(kbit, Ordering::Relaxed);
        }
    }

    pub fn heal(&self) {
        for link in self.links.values() {
            link.up.reset();
            link.down.reset();
        }
    }
}

impl Drop for Proxies {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    link: Arc<Link>,
    up: bool,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let f: &Flow = if up { &link.up } else { &link.down };
        while f.paused.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let loss = f.loss.load(Ordering::Relaxed);
        if loss > 0 && rand::thread_rng().gen_range(0..1000) < loss {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let kbit = u64::from(f.kbit.load(Ordering::Relaxed));
        if let Some(ms) = (n as u64 * 8).checked_div(kbit) {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
