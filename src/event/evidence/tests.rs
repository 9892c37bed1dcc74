use chrono::Duration;
use serde_json::json;

use super::*;
use crate::event::chain::{ChainLink, GENESIS_HASH};
use crate::event::checkpoint::{CheckpointSigner, Statement};
use crate::event::{AuditEvent, NewEvent};

const SOURCE: &str = "0192d1c4-0000-7000-8000-0000000000aa";

/// Builds a chain of `n` custom events with a checkpoint after every
/// `every` events, one second apart, signed by `signer`.
fn signed_chain(signer: &CheckpointSigner, n: usize, every: usize) -> Vec<EventRecord> {
    let start = crate::event::now();
    let mut out: Vec<AuditEvent> = Vec::new();
    let mut prev = GENESIS_HASH.to_owned();
    let mut written = 0;
    let mut clock = 0i64;
    let mut first = true;
    let push = |event: NewEvent, out: &mut Vec<AuditEvent>, prev: &mut String| {
        let sealed = event.seal(out.len() as i64 + 1, prev);
        prev.clone_from(&sealed.hash);
        out.push(sealed);
    };
    while written < n {
        clock += 1;
        let mut e = NewEvent::new(EventType::Custom, format!("event {written}"))
            .with_metadata(json!({"n": written}));
        e.timestamp = start + Duration::seconds(clock);
        push(e, &mut out, &mut prev);
        written += 1;
        if written % every == 0 || written == n {
            let reason = if std::mem::take(&mut first) {
                Reason::Start
            } else if written == n {
                Reason::Stop
            } else {
                Reason::Events
            };
            let last = &out[out.len() - 1];
            let checkpoint = signer.sign(Statement {
                source_id: SOURCE.into(),
                seq: last.seq,
                hash: last.hash.clone(),
                time: start + Duration::seconds(clock),
                key_id: signer.key_id().into(),
                reason,
                interval_ms: 60_000,
            });
            let mut c = NewEvent::new(EventType::Checkpoint, "Checkpoint")
                .with_metadata(checkpoint.to_metadata());
            c.timestamp = start + Duration::seconds(clock);
            push(c, &mut out, &mut prev);
        }
    }
    out.into_iter()
        .map(|e| EventRecord::try_from(e).unwrap())
        .collect()
}

fn keys(signer: &CheckpointSigner) -> Expectations {
    let mut keys = TrustedKeys::new();
    keys.add(signer.public_key());
    Expectations {
        keys,
        ..Expectations::default()
    }
}

fn walk(records: &[EventRecord], expect: Expectations) -> EvidenceReport {
    let mut v = EvidenceVerifier::new(expect);
    for r in records {
        v.push(Item::Event(r));
    }
    v.finish()
}

fn fault_of(records: &[EventRecord], expect: Expectations) -> (FaultKind, i64) {
    let f = walk(records, expect).fault.expect("a fault");
    (f.kind, f.seq)
}

/// Re-seals every record from `from` on (index) after its predecessor, as
/// someone with write access but without the key would.
fn rebuild(records: &mut [EventRecord], from: usize) {
    for i in from..records.len() {
        let prev = if i == 0 {
            GENESIS_HASH.to_owned()
        } else {
            records[i - 1].hash.clone()
        };
        let r = &mut records[i];
        r.prev_hash = prev;
        let event: AuditEvent = r.clone().into_event().unwrap();
        r.hash = crate::event::chain::event_hash(&event);
    }
}

#[test]
fn an_intact_signed_chain_verifies() {
    let signer = CheckpointSigner::generate().unwrap();
    let records = signed_chain(&signer, 20, 5);
    let report = walk(&records, keys(&signer));
    assert_eq!(report.fault, None);
    assert_eq!(report.checkpoints.checked, 4);
    assert_eq!(report.checkpoints.signatures_ok, Some(true));
    assert_eq!(report.checkpoints.unsigned_tail, 0);
    assert_eq!(report.checkpoints.key_ids, vec![signer.key_id().to_owned()]);
    assert_eq!(report.checkpoints.latest.unwrap().reason, "stop");
}

#[test]
fn tamper_matrix_names_each_case_and_its_first_seq() {
    let signer = CheckpointSigner::generate().unwrap();
    let base = signed_chain(&signer, 12, 4);
    // Layout: 1-4 events, 5 checkpoint, 6-9, 10 cp, 11-14, 15 cp (stop).

    let mut edited = base.clone();
    edited[6].message.push('!');
    assert_eq!(fault_of(&edited, keys(&signer)), (FaultKind::Edited, 7));

    let mut deleted = base.clone();
    deleted.remove(6);
    assert_eq!(fault_of(&deleted, keys(&signer)), (FaultKind::Deleted, 7));

    // An event slipped in after seq 6 with a valid hash, the rest renumbered.
    let mut inserted = base.clone();
    let forged = NewEvent::new(EventType::Custom, "forged").seal(7, &base[5].hash);
    inserted.insert(6, EventRecord::try_from(forged).unwrap());
    for (i, r) in inserted.iter_mut().enumerate().skip(7) {
        r.seq = i as i64 + 1;
        let event: AuditEvent = r.clone().into_event().unwrap();
        r.hash = crate::event::chain::event_hash(&event);
    }
    assert_eq!(fault_of(&inserted, keys(&signer)), (FaultKind::Inserted, 7));

    // Two events swapped, seq numbers kept with their rows.
    let mut swapped = base.clone();
    swapped.swap(6, 7);
    assert_eq!(fault_of(&swapped, keys(&signer)), (FaultKind::Reordered, 7));
    // Two events swapped with their seq numbers exchanged too.
    let mut renumbered = base.clone();
    renumbered.swap(6, 7);
    renumbered[6].seq = 7;
    renumbered[7].seq = 8;
    assert_eq!(
        fault_of(&renumbered, keys(&signer)),
        (FaultKind::Reordered, 7)
    );

    // The tail cut, final checkpoint and all: the store's own record of its
    // latest checkpoint (or one given) is no longer reached.
    let truncated = base[..12].to_vec();
    let mut expect = keys(&signer);
    expect.checkpoints = vec![(15, base[14].hash.clone())];
    assert_eq!(fault_of(&truncated, expect), (FaultKind::Truncated, 13));

    // An edit with the whole chain rebuilt without the key.
    let mut rebuilt = base.clone();
    rebuilt[6].message.push('!');
    rebuild(&mut rebuilt, 6);
    assert_eq!(fault_of(&rebuilt, keys(&signer)), (FaultKind::Rebuilt, 6));

    // ... and with the checkpoints re-signed by another key.
    let other = CheckpointSigner::generate().unwrap();
    let resigned = signed_chain(&other, 12, 4);
    let (kind, seq) = fault_of(&resigned, keys(&signer));
    assert_eq!((kind, seq), (FaultKind::Signature, 5));

    // ... and with every checkpoint removed.
    let mut stripped: Vec<EventRecord> = base
        .iter()
        .filter(|r| r.event_type != EventType::Checkpoint)
        .cloned()
        .collect();
    for (i, r) in stripped.iter_mut().enumerate() {
        r.seq = i as i64 + 1;
    }
    rebuild(&mut stripped, 0);
    assert_eq!(
        fault_of(&stripped, keys(&signer)),
        (FaultKind::Signature, 1)
    );
}

#[test]
fn a_time_gap_without_a_checkpoint_is_named() {
    let signer = CheckpointSigner::generate().unwrap();
    let mut records = signed_chain(&signer, 8, 4);
    // Rewrite the last checkpoint as signed 10 minutes later (a genuine
    // signature, so only the gap is wrong).
    let last = records.len() - 1;
    let meta: Value = serde_json::from_str(records[last].metadata.get()).unwrap();
    let mut st = Checkpoint::from_metadata(&meta).unwrap().statement;
    st.time += Duration::minutes(10);
    let signed = signer.sign(st).to_metadata();
    records[last].metadata = serde_json::value::RawValue::from_string(signed.to_string()).unwrap();
    rebuild(&mut records, last);
    assert_eq!(fault_of(&records, keys(&signer)), (FaultKind::TimeGap, 6));

    // Events running past the last checkpoint's heartbeat, with none after.
    let mut tail = signed_chain(&signer, 8, 4)[..9].to_vec();
    tail[8].timestamp = format_timestamp(&(crate::event::now() + Duration::minutes(30)));
    rebuild(&mut tail, 8);
    assert_eq!(fault_of(&tail, keys(&signer)), (FaultKind::TimeGap, 6));
}

#[test]
fn links_stand_in_for_left_out_events() {
    let signer = CheckpointSigner::generate().unwrap();
    let records = signed_chain(&signer, 12, 4);
    // Keep events 2 and 3 in full, link 4 and the ones up to the checkpoint
    // at 5; then nothing more.
    let links: Vec<ChainLink> = records.iter().map(ChainLink::of_record).collect();
    let mut expect = keys(&signer);
    expect.require_covered = true;
    let mut v = EvidenceVerifier::new(expect.clone());
    v.push(Item::Event(&records[1]));
    v.push(Item::Event(&records[2]));
    v.push(Item::Link(&links[3]));
    v.push(Item::Event(&records[4]));
    let report = v.finish();
    assert_eq!(report.fault, None);
    assert_eq!(report.checkpoints.checked, 1);

    // An edited event in the range no longer reaches the checkpoint.
    let mut edited = records[2].clone();
    edited.message.push('!');
    let event: AuditEvent = edited.clone().into_event().unwrap();
    edited.hash = crate::event::chain::event_hash(&event);
    let mut v = EvidenceVerifier::new(expect.clone());
    v.push(Item::Event(&records[1]));
    v.push(Item::Event(&edited));
    v.push(Item::Link(&links[3]));
    v.push(Item::Event(&records[4]));
    assert_eq!(v.finish().fault.unwrap().kind, FaultKind::Deleted);

    // The covering checkpoint cut off: the range is not covered.
    let mut v = EvidenceVerifier::new(expect);
    v.push(Item::Event(&records[1]));
    v.push(Item::Event(&records[2]));
    let f = v.finish().fault.unwrap();
    assert_eq!((f.kind, f.seq), (FaultKind::Truncated, 2));
}

#[test]
fn rotated_keys_verify_with_both_and_fail_with_one() {
    let old = CheckpointSigner::generate().unwrap();
    let new = CheckpointSigner::generate().unwrap();
    let mut records = signed_chain(&old, 4, 4);
    // A second process with the new key continues the chain.
    let more = signed_chain(&new, 4, 4);
    let offset = records.len() as i64;
    for mut r in more {
        r.seq += offset;
        records.push(r);
    }
    let len = records.len();
    // Re-sign the new part's checkpoints for their new positions.
    for i in offset as usize..len {
        let prev = records[i - 1].clone();
        if records[i].event_type == EventType::Checkpoint {
            let meta: Value = serde_json::from_str(records[i].metadata.get()).unwrap();
            let mut st = Checkpoint::from_metadata(&meta).unwrap().statement;
            st.seq = prev.seq;
            st.hash = prev.hash.clone();
            st.reason = Reason::Start;
            let signed = new.sign(st).to_metadata();
            records[i].metadata =
                serde_json::value::RawValue::from_string(signed.to_string()).unwrap();
        }
        records[i].prev_hash = prev.hash;
        let event: AuditEvent = records[i].clone().into_event().unwrap();
        records[i].hash = crate::event::chain::event_hash(&event);
    }
    let mut both = keys(&old);
    both.keys.add(new.public_key());
    let report = walk(&records, both);
    assert_eq!(report.fault, None);
    assert_eq!(
        report.checkpoints.key_ids,
        vec![old.key_id().to_owned(), new.key_id().to_owned()]
    );
    assert_eq!(fault_of(&records, keys(&old)), (FaultKind::Signature, 10));
}
