//! Frames parsed and written per second: a stream of `basic.publish` messages (method, header,
//! one body frame) as a client sends them, and `basic.deliver` messages as the server writes them.

use bytes::{Buf, Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use warren_wire::{
    BasicDeliver, BasicProperties, BasicPublish, Frame, FrameDecoder, Method, OutBuf,
};

const MESSAGES: usize = 1000;

fn publish_stream(body_size: usize) -> Bytes {
    let mut out = OutBuf::new();
    let publish = Method::BasicPublish(BasicPublish {
        exchange: "amq.topic".into(),
        routing_key: "orders.eu.new".into(),
        ..Default::default()
    });
    let props = BasicProperties {
        delivery_mode: Some(2),
        content_type: Some("application/json".into()),
        ..Default::default()
    };
    let body = Bytes::from(vec![b'x'; body_size]);
    for _ in 0..MESSAGES {
        out.push_delivery(1, &publish, &props, body.clone(), 131_072);
    }
    let mut bytes = BytesMut::new();
    while out.has_remaining() {
        let c = out.chunk();
        bytes.extend_from_slice(c);
        let n = c.len();
        out.advance(n);
    }
    bytes.freeze()
}

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse publishes");
    for size in [16usize, 1024, 65_536] {
        let stream = publish_stream(size);
        group.throughput(Throughput::Elements((MESSAGES * 3) as u64));
        group.bench_function(format!("{size} B bodies (frames)"), |b| {
            let decoder = FrameDecoder::new(131_072);
            b.iter_batched(
                || BytesMut::from(&stream[..]),
                |mut buf| {
                    let mut frames = 0usize;
                    while let Ok(Some(frame)) = decoder.decode(&mut buf) {
                        if let Frame::Body { payload, .. } = &frame {
                            std::hint::black_box(payload.len());
                        }
                        frames += 1;
                    }
                    assert_eq!(frames, MESSAGES * 3);
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

fn write(c: &mut Criterion) {
    let mut group = c.benchmark_group("write deliveries");
    for size in [16usize, 1024, 65_536] {
        let body = Bytes::from(vec![b'x'; size]);
        let props = BasicProperties {
            delivery_mode: Some(2),
            ..Default::default()
        };
        group.throughput(Throughput::Elements((MESSAGES * 3) as u64));
        group.bench_function(format!("{size} B bodies (frames)"), |b| {
            b.iter(|| {
                let mut out = OutBuf::new();
                for tag in 0..MESSAGES as u64 {
                    let deliver = Method::BasicDeliver(BasicDeliver {
                        consumer_tag: "amq.ctag-bench".into(),
                        delivery_tag: tag,
                        redelivered: false,
                        exchange: "amq.topic".into(),
                        routing_key: "orders.eu.new".into(),
                    });
                    out.push_delivery(1, &deliver, &props, body.clone(), 131_072);
                }
                std::hint::black_box(out.len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, parse, write);
criterion_main!(benches);
