//! Topic routes per second with 10 000 bindings (the trie walks only matching branches), and
//! direct routes for comparison.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use warren_core::routing::{BindingTable, ExchangeKind};
use warren_wire::FieldTable;

const BINDINGS: u32 = 10_000;

fn topic(c: &mut Criterion) {
    let mut table = BindingTable::new(ExchangeKind::Topic);
    let none = FieldTable::default();
    let regions = ["eu", "us", "ap", "sa"];
    for i in 0..BINDINGS {
        let pattern = match i % 4 {
            0 => format!("orders.{}.{}", regions[(i / 4 % 4) as usize], i),
            1 => format!("orders.*.{i}"),
            2 => format!("logs.{i}.#"),
            _ => format!("#.audit.{i}"),
        };
        table.bind(i, &pattern, &none);
    }
    let keys: Vec<String> = (0..1000u32)
        .map(|i| match i % 3 {
            0 => format!("orders.eu.{}", i * 4 + 1),
            1 => format!("logs.{}.app.error", i * 4 + 2),
            _ => format!("billing.audit.{}", i * 4 + 3),
        })
        .collect();
    let mut group = c.benchmark_group("route");
    group.throughput(Throughput::Elements(keys.len() as u64));
    group.bench_function("topic, 10000 bindings", |b| {
        let mut out = Vec::new();
        b.iter(|| {
            for key in &keys {
                out.clear();
                table.route(key, None, &mut out);
                assert!(!out.is_empty());
            }
        })
    });
    let mut direct = BindingTable::new(ExchangeKind::Direct);
    for i in 0..BINDINGS {
        direct.bind(i, &format!("key-{i}"), &none);
    }
    let direct_keys: Vec<String> = (0..1000u32).map(|i| format!("key-{}", i * 7)).collect();
    group.bench_function("direct, 10000 bindings", |b| {
        let mut out = Vec::new();
        b.iter(|| {
            for key in &direct_keys {
                out.clear();
                direct.route(key, None, &mut out);
                assert_eq!(out.len(), 1);
            }
        })
    });
    group.finish();
}

criterion_group!(benches, topic);
criterion_main!(benches);
