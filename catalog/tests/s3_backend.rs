//! The backend conformance suite, and the S3-only guarantees (conditional
//! manifest replacement, the lock object), against a real S3-protocol
//! server (moto) on 127.0.0.1. Skipped, with a message, when moto is not
//! installed (see `.ci/run`).
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use stratum_catalog::backend::Backend;
use stratum_catalog::backend_s3::S3Backend;
use stratum_catalog::lock::{LockEvent, LockOptions, ObjectLock};
use stratum_catalog::testing::{conformance, S3TestServer};
use stratum_catalog::Error;

fn backend(server: &S3TestServer, prefix: &str) -> S3Backend {
    S3Backend::open(&server.location(prefix), &server.options()).unwrap()
}

#[test]
fn s3_conformance_with_and_without_prefix() {
    let Some(server) = S3TestServer::start("conformance") else {
        return;
    };
    conformance(&backend(&server, "some/prefix"));
    // The bucket's root, beside the prefix: the keys do not mix.
    let root = backend(&server, "");
    assert!(root.list("data/").unwrap().is_empty());
    conformance(&root);
    assert!(root.exists("some/prefix/data/cd/y").unwrap());
    // From inside an async runtime too (the CLI's other commands use one).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let b = backend(&server, "some/prefix");
        assert_eq!(b.get("data/cd/y").unwrap().unwrap(), b"y");
    });
}

#[test]
fn s3_manifest_replace_is_conditional() {
    let Some(server) = S3TestServer::start("conditional") else {
        return;
    };
    let a = backend(&server, "repo");
    let b = backend(&server, "repo");
    // Both find no manifest; only the first to create it wins.
    assert_eq!(a.get(".stratum/manifest").unwrap(), None);
    assert_eq!(b.get(".stratum/manifest").unwrap(), None);
    a.replace(".stratum/manifest", b"rev1 by a").unwrap();
    let e = b.replace(".stratum/manifest", b"rev1 by b").unwrap_err();
    assert!(matches!(e, Error::Conflict { .. }), "{e}");
    // Both read revision 1; a commits revision 2; b's revision 2, based on
    // the stale revision 1, must not overwrite it.
    assert_eq!(b.get(".stratum/manifest").unwrap().unwrap(), b"rev1 by a");
    a.replace(".stratum/manifest", b"rev2 by a").unwrap();
    let e = b.replace(".stratum/manifest", b"rev2 by b").unwrap_err();
    assert!(matches!(e, Error::Conflict { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("s3://conditional/repo/.stratum/manifest"),
        "{e}"
    );
    assert_eq!(a.get(".stratum/manifest").unwrap().unwrap(), b"rev2 by a");
    // After reading again, b may go on.
    b.get(".stratum/manifest").unwrap();
    b.replace(".stratum/manifest", b"rev3 by b").unwrap();
    assert_eq!(a.get(".stratum/manifest").unwrap().unwrap(), b"rev3 by b");
    // A fresh backend that never read the path overwrites (the repair of
    // an object left incomplete, or `replace` of a writer's own marker).
    backend(&server, "repo")
        .replace(".stratum/manifest", b"rev4")
        .unwrap();
}

#[test]
fn s3_lock_excludes_waits_and_breaks_stale_locks() {
    let Some(server) = S3TestServer::start("locking") else {
        return;
    };
    let opts = LockOptions {
        stale_after: Duration::from_secs(3),
        refresh_every: Duration::from_millis(500),
        poll: Duration::from_millis(100),
    };
    let b1: Arc<dyn Backend> = Arc::new(backend(&server, "repo"));
    let b2: Arc<dyn Backend> = Arc::new(backend(&server, "repo"));
    let lock = ObjectLock::acquire(b1.clone(), ".stratum/lock", &opts, &mut |_| {}).unwrap();
    assert!(b1.exists(".stratum/lock").unwrap());
    // A second writer waits while the holder refreshes its lock (well past
    // stale_after), and gets it once released.
    let waiter = {
        let (b2, opts) = (b2.clone(), opts.clone());
        std::thread::spawn(move || {
            let mut events = Vec::new();
            let started = std::time::Instant::now();
            let l = ObjectLock::acquire(b2, ".stratum/lock", &opts, &mut |e| {
                events.push(match e {
                    LockEvent::Waiting(i) => format!("waiting for pid {}", i.pid),
                    LockEvent::BrokeStale(i) => format!("broke pid {}", i.pid),
                })
            })
            .unwrap();
            (l, events, started.elapsed())
        })
    };
    std::thread::sleep(Duration::from_secs(5));
    assert!(!lock.lost());
    lock.release().unwrap();
    let (l2, events, waited) = waiter.join().unwrap();
    assert_eq!(
        events,
        vec![format!("waiting for pid {}", std::process::id())]
    );
    assert!(waited >= Duration::from_secs(4), "{waited:?}");
    drop(l2);
    assert!(!b1.exists(".stratum/lock").unwrap());
    // A holder that stopped refreshing (a crashed writer: its lock object
    // stays) is broken after stale_after, with a message.
    let stale = serde_json::json!({
        "host": "gone", "pid": 999_999, "token": "t",
        "acquired": 1_000_000, "refreshed": 1_000_000,
    });
    assert!(b2
        .put_if_absent(".stratum/lock", stale.to_string().as_bytes())
        .unwrap());
    let mut events = Vec::new();
    let l3 = ObjectLock::acquire(b1.clone(), ".stratum/lock", &opts, &mut |e| {
        events.push(match e {
            LockEvent::Waiting(i) => format!("waiting for pid {}", i.pid),
            LockEvent::BrokeStale(i) => format!("broke pid {}", i.pid),
        })
    })
    .unwrap();
    assert_eq!(events, vec!["broke pid 999999"]);
    // A holder whose lock another writer broke notices at its next refresh.
    let b3 = backend(&server, "repo");
    b3.get(".stratum/lock").unwrap();
    b3.replace(".stratum/lock", b"{}").unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert!(l3.lost());
    drop(l3);
    // Not its lock any more: left in place.
    assert_eq!(b1.get(".stratum/lock").unwrap().unwrap(), b"{}");
}
