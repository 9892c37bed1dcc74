//! What signed checkpoints cost: signing one, checking one, and walking a
//! signed chain of ~1 KB events (chain and signatures), plus the chain
//! links of a range export. Run with `cargo bench --bench evidence`.

#![expect(
    clippy::disallowed_methods,
    reason = "a benchmark measures wall time with std's clock; no tokio runtime here"
)]
#![expect(clippy::print_stdout, reason = "the benchmark's report")]
#![expect(
    clippy::unwrap_used,
    reason = "a failed setup should stop the benchmark"
)]

use std::hint::black_box;
use std::time::Instant;

use llm_audit_proxy::event::chain::{ChainLink, GENESIS_HASH};
use llm_audit_proxy::event::checkpoint::{CheckpointSigner, Reason, Statement, TrustedKeys};
use llm_audit_proxy::event::evidence::{EvidenceVerifier, Expectations, Item};
use llm_audit_proxy::event::{now, EventRecord, EventType, NewEvent};
use serde_json::json;

const EVENTS: usize = 100_000;
const EVERY: usize = 1000;

fn main() {
    let signer = CheckpointSigner::generate().unwrap();
    let statement = Statement {
        source_id: "0192d1c4-0000-7000-8000-000000000001".into(),
        seq: 41,
        hash: "ab".repeat(32),
        time: now(),
        key_id: signer.key_id().into(),
        reason: Reason::Events,
        interval_ms: 60_000,
    };
    let mut keys = TrustedKeys::new();
    keys.add(signer.public_key());

    let n = 2000;
    let started = Instant::now();
    for _ in 0..n {
        black_box(signer.sign(black_box(statement.clone())));
    }
    let sign_us = started.elapsed().as_secs_f64() * 1e6 / f64::from(n);
    let checkpoint = signer.sign(statement);
    let started = Instant::now();
    for _ in 0..n {
        black_box(checkpoint.verify(&keys)).unwrap();
    }
    let check_us = started.elapsed().as_secs_f64() * 1e6 / f64::from(n);

    // A signed chain of ~1 KB events with a checkpoint every EVERY.
    let body = "x".repeat(900);
    let mut prev = GENESIS_HASH.to_owned();
    let mut records = Vec::with_capacity(EVENTS + EVENTS / EVERY);
    for i in 0..EVENTS {
        let seq = records.len() as i64 + 1;
        let e = NewEvent::new(EventType::Request, "Request")
            .with_metadata(json!({"request_data": {"content": body, "i": i}}))
            .seal(seq, &prev);
        prev.clone_from(&e.hash);
        records.push(EventRecord::try_from(e).unwrap());
        if (i + 1) % EVERY == 0 {
            let c = signer.sign(Statement {
                source_id: "s".into(),
                seq,
                hash: prev.clone(),
                time: now(),
                key_id: signer.key_id().into(),
                reason: Reason::Events,
                interval_ms: 60_000,
            });
            let e = NewEvent::new(EventType::Checkpoint, "Checkpoint")
                .with_metadata(c.to_metadata())
                .seal(seq + 1, &prev);
            prev.clone_from(&e.hash);
            records.push(EventRecord::try_from(e).unwrap());
        }
    }
    let started = Instant::now();
    let mut verifier = EvidenceVerifier::new(Expectations {
        keys,
        ..Expectations::default()
    });
    for r in &records {
        verifier.push(Item::Event(r));
    }
    let report = verifier.finish();
    assert!(report.fault.is_none());
    let walk = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let links: Vec<ChainLink> = records.iter().map(ChainLink::of_record).collect();
    let link_us = started.elapsed().as_secs_f64() * 1e6 / links.len() as f64;
    let started = Instant::now();
    for (link, r) in links.iter().zip(&records) {
        black_box(link.hash_after(&r.prev_hash));
    }
    let finish_us = started.elapsed().as_secs_f64() * 1e6 / links.len() as f64;

    println!("sign one checkpoint          {sign_us:8.1} µs");
    println!("check one signature          {check_us:8.1} µs");
    println!(
        "verify a signed chain        {:8.0} events/s ({} events, checkpoint every {EVERY})",
        records.len() as f64 / walk,
        records.len()
    );
    println!("make one chain link          {link_us:8.2} µs");
    println!("finish one chain link        {finish_us:8.2} µs");
}
