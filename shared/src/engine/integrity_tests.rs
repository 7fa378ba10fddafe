//! The promise that nothing is lost, stale or resurrected, tested against the in-memory S3
//! with faults injected: one regression test per way it was seen to break, and a model-based
//! property test that drives random operations, index loss, stale entries, outages and
//! failing removals, and checks every answer against a model.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_executor::block_on;
use http::{Method, StatusCode};
use proptest::prelude::*;

use super::tests::{backend, config, content_md5, tags, Answer, Harness, ENDPOINTS};
use crate::config::{BackendConfig, Config, KeyLayout, Strategy as Placement};
use crate::error::S3ErrorCode;
use crate::store::{MetadataStore, ObjectRecord};
use crate::testing::Fault;

/// Only the `{bucket}/{key}` bucket: a `{key}` layout bucket would adopt every key.
fn photos_only(strategy: Placement) -> Config {
    let mut c = config(strategy);
    c.virtual_buckets.retain(|b| b.name == "photos");
    c
}

fn bucket_of(i: usize) -> String {
    format!("real{}", i + 1)
}

impl Harness {
    fn holders_of(&self, key: &str) -> Vec<usize> {
        self.holders(&format!("photos/{key}"))
    }

    fn entry(&self, key: &str) -> Option<ObjectRecord> {
        block_on(self.engine.store().get_object("photos", key)).unwrap()
    }

    fn stale_copies(&self) -> usize {
        block_on(self.engine.store().list_stale_copies(10_000))
            .unwrap()
            .len()
    }

    fn maintain(&self) -> usize {
        block_on(self.engine.remove_stale_copies(10_000, self.now)).unwrap()
    }

    fn set_config(&self, change: impl FnOnce(&mut Config)) {
        let mut c = Config::clone(&self.engine.config());
        change(&mut c);
        self.engine.set_config(Arc::new(c));
    }

    /// Brings every backend up, clears faults and lets the health probe close the circuits.
    fn all_up(&self) {
        for e in ENDPOINTS {
            self.s3().set_down(e, false);
            self.s3().clear_faults(e);
        }
        let now = self.now;
        block_on(self.engine.check_health(&|| now)).unwrap();
    }
}

fn body(a: &Answer) -> String {
    a.text()
}

#[test]
fn an_overwrite_after_index_loss_stays_on_the_holder_and_a_delete_is_final() {
    // The drill: index lost, clients overwrite, DELETE, then GET returned old bytes.
    let h = Harness::with_config(photos_only(Placement::RoundRobin));
    for i in 0..9 {
        h.put(&format!("/photos/k{i}"), format!("old{i}").as_bytes());
    }
    h.engine.store().forget_objects();
    for i in 0..9 {
        let before = h.holders_of(&format!("k{i}"));
        assert_eq!(
            h.put(&format!("/photos/k{i}"), format!("new{i}").as_bytes())
                .status,
            StatusCode::OK
        );
        assert_eq!(
            h.holders_of(&format!("k{i}")),
            before,
            "k{i}: written where it was"
        );
        assert_eq!(body(&h.get(&format!("/photos/k{i}"))), format!("new{i}"));
    }
    h.engine.store().forget_objects();
    for i in 0..9 {
        assert_eq!(
            h.send(Method::DELETE, &format!("/photos/k{i}"), &[], b"")
                .status,
            StatusCode::NO_CONTENT
        );
        assert!(
            h.holders_of(&format!("k{i}")).is_empty(),
            "k{i}: no copy left anywhere"
        );
        assert_eq!(
            h.get(&format!("/photos/k{i}")).status,
            StatusCode::NOT_FOUND
        );
    }
}

fn set_pool(h: &Harness, names: &[&str]) {
    h.set_config(|c| c.virtual_buckets[0].backends = names.iter().map(|n| n.to_string()).collect());
}

/// A backend taken out of a bucket's pool without a drain keeps what it holds, and reads find
/// it through the index. An overwrite or a delete of such a key must remove that copy too: it
/// would come back (older, or deleted) when the backend rejoins the pool.
#[test]
fn a_copy_left_on_a_backend_out_of_the_pool_does_not_come_back_when_it_rejoins() {
    let h = Harness::with_config(photos_only(Placement::RoundRobin));
    set_pool(&h, &["b1"]);
    for key in ["over", "gone", "batch", "kept"] {
        assert_eq!(h.put(&path(key), key.as_bytes()).status, StatusCode::OK);
        assert_eq!(h.holders_of(key), vec![0]);
    }
    set_pool(&h, &["b3"]);
    assert_eq!(
        body(&h.get("/photos/gone")),
        "gone",
        "read through the index"
    );

    assert_eq!(h.put("/photos/over", b"v2").status, StatusCode::OK);
    assert_eq!(
        h.holders_of("over"),
        vec![2],
        "the copy out of the pool is removed"
    );
    let delete = h.send(Method::DELETE, "/photos/gone", &[], b"");
    assert_eq!(delete.status, StatusCode::NO_CONTENT);
    assert!(
        h.holders_of("gone").is_empty(),
        "deleted out of the pool too"
    );
    let batch = h.delete_keys("photos", &["batch"]);
    assert_eq!(
        tags(&batch.text(), "Key"),
        vec!["batch"],
        "{}",
        batch.text()
    );
    assert!(!batch.text().contains("<Error>"), "{}", batch.text());
    assert!(
        h.holders_of("batch").is_empty(),
        "batch-deleted out of the pool too"
    );
    // Reindex lists the pool only: it keeps the entry that still reaches the copy outside.
    block_on(h.engine.reindex(h.now + Duration::from_secs(10))).unwrap();
    assert_eq!(body(&h.get("/photos/kept")), "kept", "after reindex");

    set_pool(&h, &["b1", "b3"]);
    for when in ["rejoined", "rejoined, index lost"] {
        assert_eq!(body(&h.get("/photos/over")), "v2", "{when}");
        assert_eq!(
            h.get("/photos/gone").status,
            StatusCode::NOT_FOUND,
            "{when}"
        );
        assert_eq!(
            h.get("/photos/batch").status,
            StatusCode::NOT_FOUND,
            "{when}"
        );
        let list = h.get("/photos?list-type=2");
        assert_eq!(tags(&list.text(), "Key"), vec!["kept", "over"], "{when}");
        h.engine.store().forget_objects();
        block_on(h.engine.reindex(h.now)).unwrap();
    }
}

/// A backend taken out of the config altogether (without a drain) cannot be asked, so its
/// copies are treated as those of a backend that is down: a read of a key it holds answers 503
/// (not a false 404), a delete waits for it (503, nothing changes), and an overwrite goes into
/// the pool and records the copy left there. Configured again, it brings nothing back that
/// was overwritten or deleted: the maintenance task removes the recorded copy.
#[test]
fn a_copy_left_on_a_backend_taken_out_of_the_config_does_not_come_back() {
    let mut h = Harness::with_config(photos_only(Placement::RoundRobin));
    let full = Config::clone(&h.engine.config());
    set_pool(&h, &["b1"]);
    for key in ["over", "kept"] {
        assert_eq!(h.put(&path(key), key.as_bytes()).status, StatusCode::OK);
        assert_eq!(h.holders_of(key), vec![0]);
    }
    h.set_config(|c| {
        c.backends.retain(|b| b.name != "b1");
        c.virtual_buckets[0].backends = vec!["b2".into(), "b3".into()];
    });
    for key in ["over", "kept"] {
        let read = h.get(&path(key));
        assert_eq!(read.status, StatusCode::SERVICE_UNAVAILABLE, "{key}");
        assert!(read.text().contains("not configured"), "{}", read.text());
        let delete = h.send(Method::DELETE, &path(key), &[], b"");
        assert_eq!(delete.status, StatusCode::SERVICE_UNAVAILABLE, "{key}");
        let batch = h.delete_keys("photos", &[key]);
        assert!(batch.text().contains("<Error>"), "{}", batch.text());
        assert_eq!(h.holders_of(key), vec![0], "{key}: nothing deleted");
        assert!(h.entry(key).is_some(), "{key}: the entry stays");
    }
    // An overwrite lands in the pool; the copy left out of the config is recorded, and a
    // delete waits for it as long as it cannot be asked.
    assert_eq!(h.put("/photos/over", b"v2").status, StatusCode::OK);
    assert_eq!(body(&h.get("/photos/over")), "v2");
    assert_eq!(h.stale_copies(), 1);
    assert_eq!(h.maintain(), 0, "nothing to decide while b1 is unknown");
    assert_eq!(h.stale_copies(), 1, "the record stays");
    let delete = h.send(Method::DELETE, "/photos/over", &[], b"");
    assert_eq!(delete.status, StatusCode::SERVICE_UNAVAILABLE);

    h.engine.set_config(Arc::new(full));
    h.now += Duration::from_secs(1);
    assert_eq!(h.maintain(), 1);
    assert_eq!(h.holders_of("over").len(), 1, "the older copy is removed");
    assert_eq!(body(&h.get("/photos/over")), "v2");
    assert_eq!(body(&h.get("/photos/kept")), "kept", "configured again");
    let delete = h.send(Method::DELETE, "/photos/over", &[], b"");
    assert_eq!(delete.status, StatusCode::NO_CONTENT);
    assert!(h.holders_of("over").is_empty());
    h.engine.store().forget_objects();
    block_on(h.engine.reindex(h.now + Duration::from_secs(1))).unwrap();
    assert_eq!(h.get("/photos/over").status, StatusCode::NOT_FOUND);
    assert_eq!(body(&h.get("/photos/kept")), "kept");
}

/// Reindex goes by what configured backends hold: it forgets the entries and the records of
/// older copies that name a backend taken out of the config, which lets deletes through again.
#[test]
fn reindex_forgets_what_a_backend_taken_out_of_the_config_held() {
    let h = Harness::with_config(photos_only(Placement::RoundRobin));
    set_pool(&h, &["b1"]);
    for key in ["over", "kept"] {
        h.put(&path(key), key.as_bytes());
    }
    h.set_config(|c| {
        c.backends.retain(|b| b.name != "b1");
        c.virtual_buckets[0].backends = vec!["b2".into()];
    });
    assert_eq!(h.put("/photos/over", b"v2").status, StatusCode::OK);
    let report = block_on(h.engine.reindex(h.now + Duration::from_secs(1))).unwrap();
    assert_eq!(report.older_copies_forgotten, 1);
    assert_eq!(report.entries_dropped, 1, "kept's entry");
    assert_eq!(h.stale_copies(), 0);
    assert_eq!(h.get("/photos/kept").status, StatusCode::NOT_FOUND);
    for key in ["over", "kept"] {
        let delete = h.send(Method::DELETE, &path(key), &[], b"");
        assert_eq!(delete.status, StatusCode::NO_CONTENT, "{key}");
    }
}

/// Pool [b2, b3]; four stale-copy records of keys k0..k3 on `backend`, noted first, and behind
/// them a record that can be settled: key `dup` lives on one backend of the pool with an older
/// copy on the other. Returns the backend holding the live copy.
fn four_records_before_one_that_can_be_settled(h: &Harness, backend: &str) -> usize {
    set_pool(h, &["b2", "b3"]);
    let record = |key: &str, backend: &str, noted: u64| crate::store::StaleCopy {
        bucket: "photos".into(),
        key: key.into(),
        backend: backend.into(),
        etag: None,
        noted,
    };
    for i in 0..4u64 {
        let waiting = record(&format!("k{i}"), backend, i);
        block_on(h.engine.store().put_stale_copy(&waiting)).unwrap();
    }
    assert_eq!(h.put("/photos/dup", b"v1").status, StatusCode::OK);
    let live = h.holders_of("dup")[0];
    let other = if live == 1 { 2 } else { 1 };
    h.s3().put_direct(
        ENDPOINTS[other],
        &bucket_of(other),
        "photos/dup",
        &b"v0"[..],
    );
    let older = record("dup", &format!("b{}", other + 1), 100);
    block_on(h.engine.store().put_stale_copy(&older)).unwrap();
    live
}

/// Records on a backend taken out of the config stay, but they do not take the maintenance
/// task's budget: the records behind them are settled.
#[test]
fn records_on_a_backend_taken_out_of_the_config_do_not_starve_the_others() {
    let h = Harness::with_config(photos_only(Placement::RoundRobin));
    let live = four_records_before_one_that_can_be_settled(&h, "gone");
    let settled = block_on(h.engine.remove_stale_copies(2, h.now)).unwrap();
    assert_eq!(
        settled, 1,
        "the record behind the four that cannot be decided"
    );
    assert_eq!(h.holders_of("dup"), vec![live]);
    assert_eq!(body(&h.get("/photos/dup")), "v1");
    assert_eq!(
        h.stale_copies(),
        4,
        "those on the unconfigured backend stay"
    );
}

/// Records that wait on a backend that is down (here the older copies left on b1, out of the
/// pool) are listed first, being older: one of them is tried (the circuit's trial), the rest
/// are passed over, and the budget reaches the record behind them.
#[test]
fn records_waiting_on_a_down_backend_do_not_starve_the_others() {
    let h = Harness::with_config(photos_only(Placement::RoundRobin));
    let live = four_records_before_one_that_can_be_settled(&h, "b1");
    h.s3().set_down(ENDPOINTS[0], true);
    let now = h.now;
    block_on(h.engine.check_health(&|| now)).unwrap();
    let settled = block_on(h.engine.remove_stale_copies(2, h.now)).unwrap();
    assert_eq!(settled, 1, "the record behind the four waiting on b1");
    assert_eq!(h.holders_of("dup"), vec![live]);
    assert_eq!(body(&h.get("/photos/dup")), "v1");
    assert_eq!(h.stale_copies(), 4, "those waiting on b1 stay");
    // Back up, b1 is asked again: the four keys are nowhere, so their records are settled.
    h.all_up();
    let settled = block_on(h.engine.remove_stale_copies(10, h.now)).unwrap();
    assert_eq!(settled, 4);
    assert_eq!(h.stale_copies(), 0);
}

/// A delete must reach the copy out of the pool: while that backend is down it fails and
/// changes nothing, as it does for a backend of the pool.
#[test]
fn a_delete_waits_for_a_backend_out_of_the_pool_that_holds_the_key() {
    let h = Harness::with_config(photos_only(Placement::RoundRobin));
    set_pool(&h, &["b1"]);
    h.put("/photos/k", b"v1");
    set_pool(&h, &["b3"]);
    h.s3().set_down(ENDPOINTS[0], true);
    let now = h.now;
    block_on(h.engine.check_health(&|| now)).unwrap();
    for answer in [
        h.send(Method::DELETE, "/photos/k", &[], b""),
        h.delete_keys("photos", &["k"]),
    ] {
        assert!(
            answer.status == StatusCode::SERVICE_UNAVAILABLE
                || answer.text().contains("<Code>ServiceUnavailable</Code>"),
            "{} {}",
            answer.status,
            answer.text()
        );
    }
    assert!(h.entry("k").is_some(), "the index entry stays");
    h.all_up();
    assert_eq!(h.holders_of("k"), vec![0]);
    assert_eq!(body(&h.get("/photos/k")), "v1");
    let delete = h.send(Method::DELETE, "/photos/k", &[], b"");
    assert_eq!(delete.status, StatusCode::NO_CONTENT);
    assert!(h.holders_of("k").is_empty());
}

/// With a pool of b1 and b2: `k` written ("live"), and an older copy ("older", written later
/// behind the gateway's back, as a write that landed late) on the other one, recorded as a
/// stale copy. Returns the two backends' positions.
fn live_and_recorded_older_copy(h: &Harness) -> (usize, usize) {
    set_pool(h, &["b1", "b2"]);
    h.put("/photos/k", b"live");
    let live = h.holders_of("k")[0];
    let older = 1 - live;
    h.s3()
        .put_direct(ENDPOINTS[older], &bucket_of(older), "photos/k", "older");
    let record = crate::store::StaleCopy {
        bucket: "photos".into(),
        key: "k".into(),
        backend: format!("b{}", older + 1),
        etag: None,
        noted: crate::time::unix_secs(h.now),
    };
    block_on(h.engine.store().put_stale_copy(&record)).unwrap();
    (live, older)
}

/// An older copy recorded on a backend that has since left the pool is removed by the
/// maintenance task, not forgotten: forgotten, it would come back when the backend rejoins.
#[test]
fn an_older_copy_recorded_out_of_the_pool_is_removed_by_maintenance() {
    let mut h = Harness::with_config(photos_only(Placement::RoundRobin));
    let (live, _) = live_and_recorded_older_copy(&h);
    set_pool(&h, &[&format!("b{}", live + 1)]);
    h.now += Duration::from_secs(1);
    assert_eq!(h.maintain(), 1);
    assert_eq!(h.stale_copies(), 0);
    assert_eq!(h.holders_of("k"), vec![live], "the older copy is removed");
    set_pool(&h, &["b1", "b2"]);
    h.engine.store().forget_objects();
    assert_eq!(body(&h.get("/photos/k")), "live");
}

/// Reindex lists the pool only. A key whose live copy is on a backend out of the pool (the
/// index says so) while the pool holds an older one, even with a later Last-Modified (a
/// write that landed late), keeps its live copy.
#[test]
fn reindex_keeps_the_live_copy_out_of_the_pool_over_an_older_one_in_it() {
    let h = Harness::with_config(photos_only(Placement::RoundRobin));
    let (live, older) = live_and_recorded_older_copy(&h);
    set_pool(&h, &[&format!("b{}", older + 1)]);
    block_on(h.engine.reindex(h.now + Duration::from_secs(10))).unwrap();
    assert_eq!(body(&h.get("/photos/k")), "live");
    assert_eq!(h.holders_of("k"), vec![live], "the older copy is removed");
}

/// Backends that honour `If-Match` on PutObject (`conditional_writes`).
fn conditional(mut c: Config) -> Config {
    for b in &mut c.backends {
        b.conditional_writes = true;
    }
    c
}

#[test]
fn an_overwrite_on_a_conditional_backend_is_confirmed_by_the_put_itself() {
    let h = Harness::with_config(conditional(photos_only(Placement::RoundRobin)));
    h.put("/photos/k", b"v1");
    let holder = h.holders_of("k");
    h.s3().clear_requests();
    assert_eq!(h.put("/photos/k", b"v2").status, StatusCode::OK);
    let sent = h.s3().requests();
    assert!(
        sent.iter().all(|(m, _)| *m != Method::HEAD),
        "no HEAD before the overwrite: {sent:?}"
    );
    assert_eq!(sent.len(), 1, "one backend request: {sent:?}");
    assert_eq!(h.holders_of("k"), holder);
    assert_eq!(body(&h.get("/photos/k")), "v2");

    // The same without conditional writes: a HEAD confirms the entry first.
    h.set_config(|c| {
        c.backends
            .iter_mut()
            .for_each(|b| b.conditional_writes = false)
    });
    h.s3().clear_requests();
    assert_eq!(h.put("/photos/k", b"v3").status, StatusCode::OK);
    let methods: Vec<Method> = h.s3().requests().into_iter().map(|(m, _)| m).collect();
    assert_eq!(methods, [Method::HEAD, Method::PUT]);
}

/// A backend marked `conditional_writes` that refuses `If-Match` after all (`NotImplemented`,
/// as AWS did before November 2024) or reports a concurrent conditional write
/// (`ConditionalRequestConflict`) stored nothing: the overwrite is planned in full and sent
/// again without it, instead of failing.
#[test]
fn an_overwrite_refused_for_its_if_match_is_sent_again_after_the_full_plan() {
    for code in [
        S3ErrorCode::NotImplemented,
        S3ErrorCode::ConditionalRequestConflict,
    ] {
        let h = Harness::with_config(conditional(photos_only(Placement::RoundRobin)));
        h.put("/photos/k", b"v1");
        let holder = h.holders_of("k");
        for e in ENDPOINTS {
            h.s3().add_fault(e, Fault::FailIfMatch(code));
        }
        let put = h.put("/photos/k", b"v2");
        assert_eq!(put.status, StatusCode::OK, "{code}: {}", put.text());
        assert_eq!(h.holders_of("k"), holder, "{code}");
        assert_eq!(body(&h.get("/photos/k")), "v2", "{code}");
    }
}

/// A backend's own error codes reach the client with their status (not as 500), such as a
/// client's conditional write that lost a race.
#[test]
fn a_clients_conditional_write_that_conflicts_answers_409_as_the_backend_did() {
    let h = Harness::with_config(photos_only(Placement::RoundRobin));
    h.put("/photos/k", b"v1");
    let etag = h.get("/photos/k").header("etag").unwrap().to_owned();
    for e in ENDPOINTS {
        h.s3().add_fault(
            e,
            Fault::FailIfMatch(S3ErrorCode::ConditionalRequestConflict),
        );
    }
    let put = h.send(Method::PUT, "/photos/k", &[("if-match", &etag)], b"v2");
    assert_eq!(put.status, StatusCode::CONFLICT, "{}", put.text());
    assert!(put
        .text()
        .contains("<Code>ConditionalRequestConflict</Code>"));
    for e in ENDPOINTS {
        h.s3().clear_faults(e);
    }
    assert_eq!(body(&h.get("/photos/k")), "v1");
}

#[test]
fn a_misdirected_or_outdated_entry_is_refused_by_the_backend_and_the_key_stays_single() {
    let h = Harness::with_config(conditional(photos_only(Placement::RoundRobin)));
    h.put("/photos/k", b"v1");
    let holder = h.holders_of("k")[0];
    let elsewhere = (holder + 1) % 3;
    // The entry points at a backend that holds nothing (a lagging or repaired index): that
    // backend answers 404 to the conditional PUT and stores nothing.
    let mut entry = h.entry("k").unwrap();
    entry.backend = format!("b{}", elsewhere + 1);
    block_on(h.engine.store().put_object("photos", "k", &entry)).unwrap();
    assert_eq!(h.put("/photos/k", b"v2").status, StatusCode::OK);
    assert_eq!(
        h.holders_of("k"),
        [holder],
        "written where the copy is, once"
    );
    assert_eq!(body(&h.get("/photos/k")), "v2");
    assert_eq!(h.entry("k").unwrap().backend, format!("b{}", holder + 1));

    // The entry points at the holder, but the copy there changed behind the index: 412,
    // then the full plan, still one copy.
    h.s3().put_direct(
        ENDPOINTS[holder],
        &bucket_of(holder),
        "photos/k",
        &b"out of band"[..],
    );
    assert_eq!(h.put("/photos/k", b"v3").status, StatusCode::OK);
    assert_eq!(h.holders_of("k"), [holder]);
    assert_eq!(body(&h.get("/photos/k")), "v3");

    // A client's own conditional write goes to the backend as it is, not replaced by ours.
    let answer = h.send(Method::PUT, "/photos/k", &[("if-match", "\"nope\"")], b"v4");
    assert_eq!(answer.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(body(&h.get("/photos/k")), "v3");
}

#[test]
fn a_key_on_a_backend_that_stops_taking_writes_moves_and_the_old_copy_goes() {
    let h = Harness::with_config(photos_only(Placement::RoundRobin));
    h.put("/photos/k", b"v1");
    let from = h.holders_of("k")[0];
    h.set_config(|c| c.backends[from].read_only = true);
    assert_eq!(h.put("/photos/k", b"v2").status, StatusCode::OK);
    let now_on = h.holders_of("k");
    assert_eq!(now_on.len(), 1, "one live copy");
    assert_ne!(now_on[0], from, "moved off the read-only backend");
    assert_eq!(body(&h.get("/photos/k")), "v2");
    // And again with the index lost: the move still finds and removes the old copy.
    h.set_config(|c| {
        c.backends[from].read_only = false;
        c.backends[now_on[0]].read_only = true;
    });
    h.engine.store().forget_objects();
    assert_eq!(h.put("/photos/k", b"v3").status, StatusCode::OK);
    assert_eq!(h.holders_of("k").len(), 1);
    assert_eq!(body(&h.get("/photos/k")), "v3");
}

#[test]
fn an_old_copy_that_cannot_be_removed_is_recorded_and_settled_later() {
    let h = Harness::with_config(photos_only(Placement::RoundRobin));
    h.put("/photos/k", b"v1");
    let from = h.holders_of("k")[0];
    h.set_config(|c| c.backends[from].read_only = true);
    h.s3().add_fault(
        ENDPOINTS[from],
        Fault::Fail(Method::DELETE, S3ErrorCode::InternalError),
    );
    assert_eq!(h.put("/photos/k", b"v2").status, StatusCode::OK);
    assert_eq!(h.holders_of("k").len(), 2, "the removal failed");
    assert_eq!(h.stale_copies(), 1, "and was recorded, not dropped");
    assert_eq!(body(&h.get("/photos/k")), "v2", "reads go to the live copy");
    // Even with the index lost, the newest copy wins.
    h.engine.store().forget_objects();
    assert_eq!(body(&h.get("/photos/k")), "v2");
    assert_eq!(h.maintain(), 0, "still failing: the record stays");
    assert_eq!(h.stale_copies(), 1);
    h.s3().clear_faults(ENDPOINTS[from]);
    assert_eq!(h.maintain(), 1);
    assert_eq!(h.stale_copies(), 0);
    assert_eq!(h.holders_of("k").len(), 1);
    assert_eq!(body(&h.get("/photos/k")), "v2");
}

#[test]
fn a_read_that_finds_two_copies_serves_the_newest_and_records_the_other() {
    let h = Harness::with_config(photos_only(Placement::RoundRobin));
    h.put("/photos/k", b"new");
    // An older copy on another backend, as an earlier failure could leave.
    let live = h.holders_of("k")[0];
    let other = (live + 1) % 3;
    h.s3()
        .set_time(SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000));
    h.s3()
        .put_direct(ENDPOINTS[other], &bucket_of(other), "photos/k", "old");
    assert_eq!(h.holders_of("k").len(), 2);
    h.engine.store().forget_objects();
    assert_eq!(body(&h.get("/photos/k")), "new");
    assert_eq!(h.stale_copies(), 1);
    let list = h.get("/photos?list-type=2");
    assert_eq!(tags(&list.text(), "Key"), ["k"], "listed once");
    h.maintain();
    assert_eq!(h.holders_of("k"), [live]);
    assert_eq!(body(&h.get("/photos/k")), "new");
}

#[test]
fn a_delete_that_cannot_reach_every_backend_fails_rather_than_leave_a_copy() {
    let h = Harness::with_config(photos_only(Placement::RoundRobin));
    h.put("/photos/k", b"v1");
    let holder = h.holders_of("k")[0];
    let other = (holder + 1) % 3;
    h.engine.store().forget_objects();
    h.s3().set_down(ENDPOINTS[other], true);
    let r = h.send(Method::DELETE, "/photos/k", &[], b"");
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    h.all_up();
    assert_eq!(
        h.send(Method::DELETE, "/photos/k", &[], b"").status,
        StatusCode::NO_CONTENT
    );
    assert!(h.holders_of("k").is_empty());
    assert_eq!(h.get("/photos/k").status, StatusCode::NOT_FOUND);
}

#[test]
fn upload_ids_are_bound_to_their_bucket_and_key() {
    let h = Harness::new(Placement::RoundRobin);
    let created = h.send(Method::POST, "/photos/owner.bin?uploads", &[], b"");
    let id = tags(&created.text(), "UploadId").remove(0);
    let part = h.send(
        Method::PUT,
        &format!("/photos/owner.bin?partNumber=1&uploadId={id}"),
        &[],
        b"owner bytes",
    );
    assert_eq!(part.status, StatusCode::OK);
    // The same id under another bucket or key: NoSuchUpload, nothing touched.
    for target in [
        format!("/plain/owner.bin?partNumber=1&uploadId={id}"),
        format!("/photos/other.bin?partNumber=1&uploadId={id}"),
    ] {
        let r = h.send(Method::PUT, &target, &[], b"attacker bytes");
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{target}: {}", r.text());
        assert!(r.text().contains("<Code>NoSuchUpload</Code>"));
    }
    let complete_xml = format!(
        "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>{}</ETag></Part></CompleteMultipartUpload>",
        part.header("etag").unwrap()
    );
    let r = h.send(
        Method::POST,
        &format!("/plain/owner.bin?uploadId={id}"),
        &[],
        complete_xml.as_bytes(),
    );
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = h.send(
        Method::DELETE,
        &format!("/photos/other.bin?uploadId={id}"),
        &[],
        b"",
    );
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = h.send(
        Method::GET,
        &format!("/plain/owner.bin?uploadId={id}"),
        &[],
        b"",
    );
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // The owner's upload is intact.
    let r = h.send(
        Method::POST,
        &format!("/photos/owner.bin?uploadId={id}"),
        &[],
        complete_xml.as_bytes(),
    );
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(body(&h.get("/photos/owner.bin")), "owner bytes");
    assert_eq!(h.get("/plain/owner.bin").status, StatusCode::NOT_FOUND);
}

#[test]
fn a_garbled_delete_result_deletes_nothing() {
    let h = Harness::with_config(photos_only(Placement::RoundRobin));
    for k in ["a", "b", "c"] {
        h.put(&format!("/photos/{k}"), k.as_bytes());
    }
    for e in ENDPOINTS {
        h.s3().add_fault(e, Fault::Garble(Method::POST));
    }
    let r = h.delete_keys("photos", &["a", "b", "c"]);
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(tags(&r.text(), "Deleted").is_empty(), "{}", r.text());
    assert_eq!(tags(&r.text(), "Code"), ["InternalError"; 3]);
    for k in ["a", "b", "c"] {
        assert!(
            h.entry(k).is_some(),
            "{k}: index entry kept: nothing is known deleted"
        );
    }
    // The client retries once the backends answer properly.
    h.all_up();
    let r = h.delete_keys("photos", &["a", "b", "c"]);
    assert_eq!(tags(&r.text(), "Deleted").len(), 3, "{}", r.text());
    for k in ["a", "b", "c"] {
        assert!(h.entry(k).is_none());
        assert_eq!(h.get(&format!("/photos/{k}")).status, StatusCode::NOT_FOUND);
    }
}

#[test]
fn delete_objects_checks_every_key_and_the_body_digest() {
    let h = Harness::with_config(photos_only(Placement::RoundRobin));
    h.put("/photos/ok", b"x");
    let xml = "<Delete><Object><Key>ok</Key></Object></Delete>";
    let r = h.send(Method::POST, "/photos?delete", &[], xml.as_bytes());
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.text().contains("<Code>InvalidRequest</Code>"),
        "{}",
        r.text()
    );
    let r = h.send(
        Method::POST,
        "/photos?delete",
        &[("content-md5", &content_md5(b"other"))],
        xml.as_bytes(),
    );
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.text().contains("<Code>BadDigest</Code>"));
    let r = h.send(
        Method::POST,
        "/photos?delete",
        &[("x-amz-checksum-crc32", "AAAAAA==")],
        xml.as_bytes(),
    );
    assert!(r.text().contains("<Code>BadDigest</Code>"), "{}", r.text());
    assert_eq!(
        body(&h.get("/photos/ok")),
        "x",
        "nothing deleted by refused requests"
    );
    let long = "k".repeat(1024 - "photos/".len() + 1);
    let r = h.delete_keys("photos", &["ok", "h/../x", &long]);
    assert_eq!(r.status, StatusCode::OK);
    let text = r.text();
    assert_eq!(tags(&text, "Deleted").len(), 1, "{text}");
    assert!(text.contains("<Code>InvalidArgument</Code>"), "{text}");
    assert!(text.contains("<Code>KeyTooLongError</Code>"), "{text}");
    assert_eq!(h.get("/photos/ok").status, StatusCode::NOT_FOUND);
}

#[test]
fn keys_too_long_for_the_backend_are_refused() {
    let h = Harness::with_config(photos_only(Placement::RoundRobin));
    let fits = "k".repeat(1024 - "photos/".len());
    assert_eq!(
        h.put(&format!("/photos/{fits}"), b"x").status,
        StatusCode::OK
    );
    let r = h.put(&format!("/photos/{fits}k"), b"x");
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.text().contains("<Code>KeyTooLongError</Code>"));
}

#[test]
fn a_write_that_times_out_moves_on_and_the_maybe_written_copy_is_settled() {
    let h = Harness::with_config(photos_only(Placement::RoundRobin));
    // Round-robin's next pick is b1: make its PUTs time out after they landed.
    h.s3()
        .add_fault(ENDPOINTS[0], Fault::TimeoutAfter(Method::PUT));
    for i in 0..3 {
        let r = h.put(&format!("/photos/t{i}"), b"data");
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    assert!(
        h.stale_copies() >= 1,
        "the backend that timed out may hold a copy"
    );
    h.all_up();
    h.maintain();
    assert_eq!(h.stale_copies(), 0);
    for i in 0..3 {
        assert_eq!(h.holders_of(&format!("t{i}")).len(), 1, "t{i}");
        assert_eq!(body(&h.get(&format!("/photos/t{i}"))), "data");
    }
}

#[test]
fn a_write_that_lands_late_on_a_resumed_backend_never_replaces_a_later_acknowledged_one() {
    let h = Harness::with_config(photos_only(Placement::RoundRobin));
    // b1 takes the PUT but its answer never comes: the gateway moves the new object on.
    h.s3()
        .add_fault(ENDPOINTS[0], Fault::TimeoutAfter(Method::PUT));
    assert_eq!(h.put("/photos/late", b"v1").status, StatusCode::OK);
    let holder = h.entry("late").unwrap().backend;
    assert_ne!(holder, "b1", "moved off the backend that timed out");
    assert!(h.stale_copies() >= 1, "b1 may hold the attempt");
    // The client overwrites the key; the index sends it to the holder.
    h.s3().clear_faults(ENDPOINTS[0]);
    assert_eq!(h.put("/photos/late", b"v2").status, StatusCode::OK);
    // b1 was hung, not dead: the first attempt lands only when it resumes, so its copy is
    // the newest by Last-Modified (as a SIGSTOPped provider did in tests/test_hostile.py).
    h.s3()
        .put_direct(ENDPOINTS[0], &bucket_of(0), "photos/late", "v1");
    h.all_up();
    h.maintain();
    assert_eq!(h.stale_copies(), 0);
    assert_eq!(
        body(&h.get("/photos/late")),
        "v2",
        "the acknowledged write stays"
    );
    assert_eq!(h.holders_of("late").len(), 1, "and the late copy is gone");
    assert_eq!(h.entry("late").unwrap().backend, holder);
}

#[test]
fn a_backend_that_keeps_failing_is_not_waited_on() {
    let h = Harness::with_config(photos_only(Placement::ConsistentHash));
    for i in 0..30 {
        h.put(&format!("/photos/c{i}"), b"x");
    }
    let on_b1: Vec<usize> = (0..30)
        .filter(|i| h.holders_of(&format!("c{i}")) == [0])
        .collect();
    assert!(on_b1.len() > 3);
    h.s3().set_down(ENDPOINTS[0], true);
    h.s3().clear_requests();
    for i in &on_b1 {
        assert_eq!(
            h.get(&format!("/photos/c{i}")).status,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
    let sent_to_b1 = h
        .s3()
        .requests()
        .iter()
        .filter(|(_, uri)| uri.starts_with(ENDPOINTS[0]))
        .count();
    assert_eq!(
        sent_to_b1, 3,
        "after 3 failures in a row the circuit is open"
    );
    // New objects go elsewhere at once.
    assert_eq!(h.put("/photos/new", b"x").status, StatusCode::OK);
    assert!(!h.holders_of("new").contains(&0));
    h.all_up();
    assert_eq!(
        h.get(&format!("/photos/c{}", on_b1[0])).status,
        StatusCode::OK
    );
}

#[test]
fn clients_whose_uploads_break_off_do_not_mark_a_backend_down() {
    let h = Harness::with_config(photos_only(Placement::ConsistentHash));
    for i in 0..6 {
        let request = http::Request::builder()
            .method(Method::PUT)
            .uri(format!("/photos/broken{i}"))
            .header("host", "gateway.test:8080")
            .header("content-length", "10")
            .body(crate::testing::MemBody::failed(crate::S3Error::new(
                S3ErrorCode::IncompleteBody,
                "client went away",
            )))
            .unwrap();
        let ctx = super::RequestContext {
            now: h.now,
            request_id: "R".into(),
            random: 0,
        };
        let response = block_on(h.engine.handle(request, &ctx));
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    }
    // Every backend still takes requests at once.
    for i in 0..6 {
        assert_eq!(
            h.put(&format!("/photos/ok{i}"), b"x").status,
            StatusCode::OK
        );
    }
    assert!(block_on(h.engine.check_health(&|| h.now))
        .unwrap()
        .backends
        .values()
        .all(|b| b.healthy));
}

#[test]
fn reindex_keeps_newer_entries_removes_older_copies_and_reports_on_a_dry_run() {
    let mut h = Harness::with_config(photos_only(Placement::RoundRobin));
    for i in 0..20 {
        h.put(&format!("/photos/r{i:02}"), format!("v{i}").as_bytes());
    }
    // An older duplicate of r05 on another backend than its live copy.
    let live = h.holders_of("r05")[0];
    let other = (live + 1) % 3;
    h.s3()
        .set_time(SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000));
    h.s3()
        .put_direct(ENDPOINTS[other], &bucket_of(other), "photos/r05", "stale");
    h.engine.store().forget_objects();

    let dry = block_on(async {
        let mut c = h.engine.reindex_start(h.now, true, false).await.unwrap();
        while h.engine.reindex_step(&mut c, h.now).await.unwrap() {}
        c.report
    });
    assert_eq!(
        (dry.objects, dry.duplicates, dry.older_copies_removed),
        (20, 1, 1)
    );
    assert_eq!(dry.duplicate_keys[0].1, "r05");
    assert_eq!(h.holders_of("r05").len(), 2, "a dry run removes nothing");
    assert!(h.entry("r00").is_none(), "and writes no entry");

    // A reindex starts; a client overwrites r10 while it runs.
    let mut cursor = block_on(h.engine.reindex_start(h.now, false, false)).unwrap();
    h.now += Duration::from_secs(5);
    h.put("/photos/r10", b"written during the reindex");
    let written = h.entry("r10").unwrap();
    while block_on(h.engine.reindex_step(&mut cursor, h.now)).unwrap() {}
    let report = cursor.report;
    assert_eq!(report.objects, 20);
    assert_eq!(report.duplicates, 1);
    assert_eq!(report.older_copies_removed, 1);
    assert_eq!(report.entries_kept_newer, 1, "{report:?}");
    assert_eq!(
        h.entry("r10").unwrap(),
        written,
        "never replaced by what the listing saw"
    );
    assert_eq!(h.holders_of("r05"), [live]);
    assert_eq!(body(&h.get("/photos/r05")), "v5");
    assert_eq!(body(&h.get("/photos/r10")), "written during the reindex");
    // Entries of keys that no backend holds are dropped.
    block_on(h.engine.store().put_object(
        "photos",
        "ghost",
        &ObjectRecord {
            backend: "b1".into(),
            size: 1,
            etag: "\"g\"".into(),
            last_modified: 1,
        },
    ))
    .unwrap();
    let report = block_on(h.engine.reindex(h.now + Duration::from_secs(1))).unwrap();
    assert_eq!(report.entries_dropped, 1);
    assert!(h.entry("ghost").is_none());
}

#[test]
fn a_reindex_with_a_backend_down_skips_its_buckets_instead_of_guessing() {
    let h = Harness::with_config(photos_only(Placement::RoundRobin));
    for i in 0..6 {
        h.put(&format!("/photos/d{i}"), b"x");
    }
    h.s3().set_down(ENDPOINTS[1], true);
    let report = block_on(h.engine.reindex(h.now)).unwrap();
    assert_eq!(report.backends_failed, ["b2"]);
    assert_eq!(
        report.entries_dropped, 0,
        "no entry dropped on a partial view"
    );
    for i in 0..6 {
        assert!(h.entry(&format!("d{i}")).is_some());
    }
    let err = block_on(async {
        let mut c = h.engine.reindex_start(h.now, false, false).await.unwrap();
        h.engine.reindex_step(&mut c, h.now).await
    });
    assert!(
        matches!(err, Err(super::ReindexError::Backend { ref backend, .. }) if backend == "b2"),
        "{err:?}"
    );
}

#[test]
fn a_killed_reindex_resumes_from_its_cursor() {
    let h = Harness::with_config(photos_only(Placement::RoundRobin));
    // Over 1,000 keys per backend: a step covers one page of each.
    for i in 0..3300 {
        h.put(&format!("/photos/p{i:04}"), b"x");
    }
    h.engine.store().forget_objects();
    block_on(async {
        let mut first = h.engine.reindex_start(h.now, false, false).await.unwrap();
        assert!(h.engine.reindex_step(&mut first, h.now).await.unwrap());
        let done_first = first.report.objects;
        assert!(done_first > 0 && done_first < 3300, "{done_first}");
        drop(first); // killed
        let mut resumed = h.engine.reindex_start(h.now, false, true).await.unwrap();
        assert!(!resumed.after.is_empty(), "resumed where it stopped");
        while h.engine.reindex_step(&mut resumed, h.now).await.unwrap() {}
        assert_eq!(resumed.report.objects, 3300);
        let fresh = h.engine.reindex_start(h.now, false, true).await.unwrap();
        assert!(
            fresh.after.is_empty() && fresh.bucket == 0,
            "a finished reindex is not resumed"
        );
    });
    assert!(h.entry("p3299").is_some());
    let _ = backend(0);
}

// ---------------------------------------------------------------------------------------
// The model-based test.

const KEYS: [&str; 5] = ["a", "b", "c", "d/e", "f g"];

#[derive(Debug, Clone)]
enum Step {
    Put(usize),
    Get(usize),
    Delete(usize),
    DeleteMany(Vec<usize>),
    Copy(usize, usize),
    Multipart(usize),
    LoseIndex,
    StaleEntry(usize, usize),
    Down(usize),
    Up,
    FailDeletes(usize),
    TimeoutPuts(usize),
    ReadOnly(usize, bool),
    Strategy(usize),
    Maintain,
    Reindex,
    /// The config takes a backend out of the pool (no drain), or out of the config
    /// altogether, or puts every one back.
    Leave(usize),
    Unconfigure(usize),
    Rejoin,
}

fn step() -> impl proptest::strategy::Strategy<Value = Step> {
    let k = 0..KEYS.len();
    prop_oneof![
        6 => k.clone().prop_map(Step::Put),
        4 => k.clone().prop_map(Step::Get),
        3 => k.clone().prop_map(Step::Delete),
        1 => proptest::collection::vec(0..KEYS.len(), 1..4).prop_map(Step::DeleteMany),
        2 => (k.clone(), k.clone()).prop_map(|(a, b)| Step::Copy(a, b)),
        1 => k.clone().prop_map(Step::Multipart),
        1 => Just(Step::LoseIndex),
        1 => (k.clone(), 0..3usize).prop_map(|(a, b)| Step::StaleEntry(a, b)),
        1 => (0..3usize).prop_map(Step::Down),
        2 => Just(Step::Up),
        1 => (0..3usize).prop_map(Step::FailDeletes),
        1 => (0..3usize).prop_map(Step::TimeoutPuts),
        1 => (0..3usize, any::<bool>()).prop_map(|(b, on)| Step::ReadOnly(b, on)),
        1 => (0..4usize).prop_map(Step::Strategy),
        1 => Just(Step::Maintain),
        1 => Just(Step::Reindex),
        1 => (0..3usize).prop_map(Step::Leave),
        1 => (0..3usize).prop_map(Step::Unconfigure),
        1 => Just(Step::Rejoin),
    ]
}

/// What a key may hold: `current`, the values a read may return now (more than one after an
/// answer that does not say whether a change happened), and `pending`, values of writes and
/// deletes that failed without saying whether they landed: such an operation never completed,
/// so it may take effect at any later time (as on S3 itself), until an acknowledged write or
/// delete supersedes it. A read narrows `current` to what it saw.
#[derive(Debug, Clone)]
struct Possible {
    current: BTreeSet<Option<String>>,
    pending: BTreeSet<Option<String>>,
}

struct Model {
    keys: BTreeMap<&'static str, Possible>,
}

impl Model {
    fn new() -> Self {
        Self {
            keys: KEYS
                .iter()
                .map(|k| {
                    (
                        *k,
                        Possible {
                            current: BTreeSet::from([None]),
                            pending: BTreeSet::new(),
                        },
                    )
                })
                .collect(),
        }
    }
    /// An acknowledged write or delete.
    fn set(&mut self, key: &'static str, v: Option<String>) {
        self.keys.insert(
            key,
            Possible {
                current: BTreeSet::from([v]),
                pending: BTreeSet::new(),
            },
        );
    }
    /// A write or delete that failed and may have landed.
    fn maybe(&mut self, key: &'static str, v: Option<String>) {
        self.keys.get_mut(key).unwrap().pending.insert(v);
    }
    /// The values a read may return now.
    fn readable(&self, key: &str) -> BTreeSet<Option<String>> {
        let p = &self.keys[key];
        p.current.union(&p.pending).cloned().collect()
    }
    fn observe(&mut self, key: &'static str, v: Option<String>, context: &str) {
        let readable = self.readable(key);
        assert!(
            readable.contains(&v),
            "{context}: {key} read {v:?}, model allows {readable:?}"
        );
        self.keys.get_mut(key).unwrap().current = BTreeSet::from([v]);
    }
}

fn path(key: &str) -> String {
    format!("/photos/{}", key.replace(' ', "%20"))
}

/// `conditional`: which of the three backends honour `If-Match` on PutObject.
fn run_model(steps: Vec<Step>, conditional: [bool; 3]) {
    let mut c = photos_only(Placement::RoundRobin);
    c.balancer.retry_attempts = 2;
    for (b, on) in c.backends.iter_mut().zip(conditional) {
        b.conditional_writes = on;
    }
    let mut h = Harness::with_config(c);
    let mut model = Model::new();
    let mut down: BTreeSet<usize> = BTreeSet::new();
    // The backend out of the pool, if any. Meanwhile the index is neither lost nor made
    // stale: it is how a copy out of the pool is reached (a documented limit).
    let mut out: Option<usize> = None;
    // The config of the backend taken out of the config too, to put back. Meanwhile no
    // reindex runs (it forgets what that backend holds, by design) and reads of its keys
    // may answer 503, as for a backend that is down.
    let mut unconfigured: Option<BackendConfig> = None;
    let rejoin = |h: &Harness, unconfigured: &mut Option<BackendConfig>| {
        let back = unconfigured.take();
        h.set_config(|c| {
            if let Some(b) = back {
                let at = c.backends.iter().position(|x| x.name > b.name);
                c.backends.insert(at.unwrap_or(c.backends.len()), b);
            }
            c.virtual_buckets[0].backends.clear();
        });
    };
    for (n, step) in steps.into_iter().enumerate() {
        h.now += Duration::from_secs(1);
        let ctx = format!("step {n} {step:?}");
        match step {
            Step::Put(k) => {
                let v = format!("{}#{n}", KEYS[k]);
                let r = h.put(&path(KEYS[k]), v.as_bytes());
                match r.status {
                    StatusCode::OK => model.set(KEYS[k], Some(v)),
                    // A write that timed out may have landed.
                    StatusCode::SERVICE_UNAVAILABLE => model.maybe(KEYS[k], Some(v)),
                    StatusCode::INSUFFICIENT_STORAGE => {}
                    s => panic!("{ctx}: PUT {s} {}", r.text()),
                }
            }
            Step::Get(k) => {
                let r = h.get(&path(KEYS[k]));
                match r.status {
                    StatusCode::OK => model.observe(KEYS[k], Some(r.text()), &ctx),
                    StatusCode::NOT_FOUND => model.observe(KEYS[k], None, &ctx),
                    StatusCode::SERVICE_UNAVAILABLE => assert!(
                        !down.is_empty() || unconfigured.is_some(),
                        "{ctx}: 503 with every backend up"
                    ),
                    s => panic!("{ctx}: GET {s} {}", r.text()),
                }
            }
            Step::Delete(k) => {
                let r = h.send(Method::DELETE, &path(KEYS[k]), &[], b"");
                match r.status {
                    StatusCode::NO_CONTENT => model.set(KEYS[k], None),
                    StatusCode::SERVICE_UNAVAILABLE | StatusCode::INTERNAL_SERVER_ERROR => {
                        model.maybe(KEYS[k], None)
                    }
                    s => panic!("{ctx}: DELETE {s} {}", r.text()),
                }
            }
            Step::DeleteMany(ks) => {
                let keys: Vec<&str> = ks.iter().map(|k| KEYS[*k]).collect();
                let r = h.delete_keys("photos", &keys);
                assert_eq!(r.status, StatusCode::OK, "{ctx}: {}", r.text());
                let text = r.text();
                let deleted: BTreeSet<String> = text
                    .split("<Deleted>")
                    .skip(1)
                    .map(|d| tags(d, "Key")[0].clone())
                    .collect();
                for k in &ks {
                    if deleted.contains(KEYS[*k]) {
                        model.set(KEYS[*k], None);
                    } else {
                        model.maybe(KEYS[*k], None);
                    }
                }
            }
            Step::Copy(from, to) => {
                let source = format!("/photos/{}", KEYS[from].replace(' ', "%20"));
                // Copying a key onto itself needs REPLACE (AWS refuses it otherwise).
                let r = h.send(
                    Method::PUT,
                    &path(KEYS[to]),
                    &[
                        ("x-amz-copy-source", &source),
                        ("x-amz-metadata-directive", "REPLACE"),
                    ],
                    b"",
                );
                match r.status {
                    StatusCode::OK => {
                        // The copy read one of the source's readable values.
                        let src: BTreeSet<Option<String>> = model
                            .readable(KEYS[from])
                            .into_iter()
                            .filter(Option::is_some)
                            .collect();
                        model.keys.insert(
                            KEYS[to],
                            Possible {
                                current: src,
                                pending: BTreeSet::new(),
                            },
                        );
                    }
                    StatusCode::NOT_FOUND => model.observe(KEYS[from], None, &ctx),
                    StatusCode::SERVICE_UNAVAILABLE => {
                        // A copy across backends that timed out may have landed.
                        for v in model.readable(KEYS[from]).into_iter().flatten() {
                            model.maybe(KEYS[to], Some(v));
                        }
                    }
                    StatusCode::INSUFFICIENT_STORAGE => {}
                    s => panic!("{ctx}: COPY {s} {}", r.text()),
                }
            }
            Step::Multipart(k) => {
                let v = format!("{}#mp{n}", KEYS[k]);
                let created = h.send(
                    Method::POST,
                    &format!("{}?uploads", path(KEYS[k])),
                    &[],
                    b"",
                );
                if created.status != StatusCode::OK {
                    continue;
                }
                let id = tags(&created.text(), "UploadId").remove(0);
                let part = h.send(
                    Method::PUT,
                    &format!("{}?partNumber=1&uploadId={id}", path(KEYS[k])),
                    &[],
                    v.as_bytes(),
                );
                if part.status != StatusCode::OK {
                    continue;
                }
                let xml = format!(
                    "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>{}</ETag></Part></CompleteMultipartUpload>",
                    part.header("etag").unwrap()
                );
                let r = h.send(
                    Method::POST,
                    &format!("{}?uploadId={id}", path(KEYS[k])),
                    &[],
                    xml.as_bytes(),
                );
                match r.status {
                    StatusCode::OK => model.set(KEYS[k], Some(v)),
                    StatusCode::SERVICE_UNAVAILABLE => {}
                    s => panic!("{ctx}: Complete {s} {}", r.text()),
                }
            }
            Step::LoseIndex | Step::StaleEntry(..) if out.is_some() => {}
            Step::LoseIndex => h.engine.store().forget_objects(),
            Step::StaleEntry(k, b) => {
                let rec = ObjectRecord {
                    backend: format!("b{}", b + 1),
                    size: 1,
                    etag: "\"stale\"".into(),
                    last_modified: 1,
                };
                block_on(h.engine.store().put_object("photos", KEYS[k], &rec)).unwrap();
            }
            Step::Down(b) => {
                h.s3().set_down(ENDPOINTS[b], true);
                down.insert(b);
            }
            Step::Up => {
                h.all_up();
                down.clear();
            }
            Step::FailDeletes(b) => {
                h.s3().add_fault(
                    ENDPOINTS[b],
                    Fault::Fail(Method::DELETE, S3ErrorCode::InternalError),
                );
            }
            Step::TimeoutPuts(b) => {
                h.s3()
                    .add_fault(ENDPOINTS[b], Fault::TimeoutAfter(Method::PUT));
            }
            Step::ReadOnly(b, on) => h.set_config(|c| {
                let name = format!("b{}", b + 1);
                if let Some(b) = c.backends.iter_mut().find(|x| x.name == name) {
                    b.read_only = on;
                }
            }),
            Step::Strategy(s) => h.set_config(|c| {
                c.balancer.strategy = [
                    Placement::RoundRobin,
                    Placement::LeastSpace,
                    Placement::Weighted,
                    Placement::ConsistentHash,
                ][s]
            }),
            Step::Maintain => {
                block_on(h.engine.remove_stale_copies(1000, h.now)).unwrap();
            }
            Step::Reindex if unconfigured.is_some() => {}
            Step::Reindex => {
                block_on(h.engine.reindex(h.now)).unwrap();
            }
            Step::Leave(b) => {
                if out.is_none() && down.is_empty() {
                    // Every key is read first, which repairs the index of every key.
                    check_reads(&h, &mut model, &ctx, true);
                    let pool = (0..3).filter(|i| *i != b).map(|i| format!("b{}", i + 1));
                    h.set_config(|c| c.virtual_buckets[0].backends = pool.collect());
                    out = Some(b);
                }
            }
            Step::Unconfigure(b) => {
                if out.is_none() && down.is_empty() {
                    check_reads(&h, &mut model, &ctx, true);
                    let name = format!("b{}", b + 1);
                    h.set_config(|c| {
                        let at = c.backends.iter().position(|x| x.name == name).unwrap();
                        unconfigured = Some(c.backends.remove(at));
                        c.virtual_buckets[0].backends =
                            c.backends.iter().map(|x| x.name.clone()).collect();
                    });
                    out = Some(b);
                }
            }
            Step::Rejoin => {
                rejoin(&h, &mut unconfigured);
                out = None;
            }
        }
        if std::env::var("MODEL_DEBUG").is_ok() {
            let holders: Vec<(&str, Vec<usize>)> =
                KEYS.iter().map(|k| (*k, h.holders_of(k))).collect();
            eprintln!("{ctx}: holders {holders:?} stale {}", h.stale_copies());
        }
        // Reads must be right whenever every backend is up, failing removals or not.
        // Listings leave out what is outside the pool.
        if down.is_empty() && unconfigured.is_none() {
            check_reads(&h, &mut model, &ctx, out.is_none());
        }
    }
    rejoin(&h, &mut unconfigured);
    // Settle everything with all backends up: one copy per key, the model's value.
    h.all_up();
    h.now += Duration::from_secs(1);
    h.maintain();
    check_reads(&h, &mut model, "end", true);
    for key in KEYS {
        let holders = h.holders_of(key);
        assert!(holders.len() <= 1, "end: {key} held by {holders:?}");
    }
    block_on(h.engine.reindex(h.now + Duration::from_secs(1))).unwrap();
    check_reads(&h, &mut model, "after reindex", true);
    for key in KEYS {
        assert!(h.holders_of(key).len() <= 1, "after reindex: {key}");
    }
}

/// Every key reads as the model allows, and (`listing`) the listing shows exactly the keys
/// that exist.
fn check_reads(h: &Harness, model: &mut Model, ctx: &str, listing: bool) {
    for key in KEYS {
        let r = h.get(&path(key));
        match r.status {
            StatusCode::OK => model.observe(key, Some(r.text()), ctx),
            StatusCode::NOT_FOUND => model.observe(key, None, ctx),
            s => panic!("{ctx}: check GET {key}: {s} {}", r.text()),
        }
    }
    if !listing {
        return;
    }
    let list = h.get("/photos?list-type=2");
    assert_eq!(list.status, StatusCode::OK, "{ctx}: {}", list.text());
    let listed: BTreeSet<String> = tags(&list.text(), "Key").into_iter().collect();
    // Every key was just read: its current value is the one seen.
    let expected: BTreeSet<String> = model
        .keys
        .iter()
        .filter(|(_, p)| p.current.iter().next().is_some_and(Option::is_some))
        .map(|(k, _)| k.to_string())
        .collect();
    assert_eq!(listed, expected, "{ctx}: listing");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, .. ProptestConfig::default() })]
    #[test]
    fn nothing_is_lost_stale_or_resurrected(
        steps in proptest::collection::vec(step(), 1..60),
        conditional in proptest::array::uniform3(any::<bool>()),
    ) {
        run_model(steps, conditional);
    }
}

#[test]
fn model_smoke() {
    for conditional in [[false; 3], [true; 3]] {
        run_model(smoke_steps(), conditional);
    }
    let _ = KeyLayout::Plain;
}

fn smoke_steps() -> Vec<Step> {
    vec![
        Step::Put(0),
        Step::LoseIndex,
        Step::Put(0),
        Step::Down(1),
        Step::Put(1),
        Step::Delete(0),
        Step::Up,
        Step::ReadOnly(0, true),
        Step::Put(1),
        Step::Copy(1, 2),
        Step::Multipart(3),
        Step::Reindex,
        Step::Get(1),
    ]
}
