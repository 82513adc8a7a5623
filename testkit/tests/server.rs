//! The launcher itself against the real DTM: crash and restart on the same store, the
//! PostgreSQL store, a bad setting reported with DTM's own words, passwords kept out of
//! errors.

// Tests and their helpers: a panic is how they report a failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use dtm_testkit::{DtmServer, DtmServerConfig, Error, Store};

const WAIT: Duration = Duration::from_secs(30);

/// A saga whose only branch DTM cannot reach stays `submitted`; it is there after a crash
/// and a restart on the same ports and store.
async fn crash_keeps(store: Store) {
    let mut dtm = DtmServer::start_async(DtmServerConfig::default().with_store(store))
        .await
        .unwrap();
    let client = dtm.http_client().unwrap();
    let port = dtm_testkit::free_port().unwrap();
    let gid = client.new_gid().await.unwrap();
    let nowhere = format!("http://127.0.0.1:{port}/api/busi/TransOut");
    client
        .saga(&gid)
        .add(&nowhere, &nowhere, &1)
        .submit()
        .await
        .unwrap();
    let (http, grpc) = (dtm.http_port(), dtm.grpc_port());
    let pid = dtm.pid().expect("DTM runs");

    dtm.kill().unwrap();
    assert_eq!(dtm.pid(), None, "killed");
    assert!(dtm.query(&gid).await.is_err(), "nobody answers");
    dtm.restart().unwrap();
    assert_ne!(dtm.pid(), Some(pid), "a new process");
    assert_eq!((dtm.http_port(), dtm.grpc_port()), (http, grpc));
    let q = dtm
        .wait_until(&gid, WAIT, |q| q.transaction.is_some())
        .await
        .unwrap();
    assert_eq!(q.transaction.unwrap().status, "submitted");

    // A second crash and restart: the watchdogs of both restarts are cleaned up too.
    dtm.kill().unwrap();
    dtm.restart().unwrap();
    assert!(dtm.query(&gid).await.unwrap().transaction.is_some());
    let dir = dtm.dir().to_path_buf();
    dtm.stop().unwrap();
    assert!(!dir.exists(), "the scratch directory is removed");
}

#[tokio::test]
async fn crash_and_restart_on_boltdb() {
    crash_keeps(Store::Boltdb).await;
}

#[tokio::test]
async fn crash_and_restart_on_redis() {
    crash_keeps(Store::local_redis()).await;
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn two_servers_on_one_postgres_store() {
    let store = Store::local_postgres("dtm_testkit_store");
    let (first, second) = tokio::join!(store.prepare(), store.prepare());
    first.unwrap();
    second.unwrap();
    let config = DtmServerConfig::default().with_store(store);
    let a = DtmServer::start_async(config.clone()).await.unwrap();
    let b = DtmServer::start_async(config).await.unwrap();
    let client = a.http_client().unwrap();
    let gid = client.new_gid().await.unwrap();
    // No branch service: a saga without steps is done at once.
    client.saga(&gid).submit().await.unwrap();
    let q = b.wait_final(&gid, WAIT).await.unwrap();
    assert_eq!(q.transaction.unwrap().status, "succeed");
    crash_keeps(Store::local_postgres("dtm_testkit_store")).await;
}

#[tokio::test]
async fn a_setting_dtm_refuses_is_reported_with_its_log() {
    // DTM refuses RETRY_INTERVAL below 10 s and exits.
    let e = DtmServer::start_async(DtmServerConfig::default().with_env("RETRY_INTERVAL", "1"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Exited { .. }), "{e}");
    assert!(e.to_string().contains("RetryInterval"), "{e}");
}

#[tokio::test]
async fn the_store_password_stays_out_of_errors() {
    // Nothing listens on the port: DTM waits for its store and never answers. At log level
    // info it logs its whole configuration first, the password included.
    let port = dtm_testkit::free_port().unwrap();
    let store = Store::Redis {
        host: "127.0.0.1".into(),
        port,
        user: None,
        password: Some("hunter2-secret".into()),
        prefix: Store::unique_redis_prefix(),
    };
    let e = DtmServer::start_async(
        DtmServerConfig::default()
            .with_store(store.clone())
            .with_env("LOG_LEVEL", "info")
            .with_ready_timeout(Duration::from_secs(2)),
    )
    .await
    .unwrap_err();
    let Error::NotReady { log, .. } = &e else {
        panic!("expected NotReady: {e}");
    };
    assert!(log.contains(r#"\"Password\": \"***\""#), "redacted: {log}");
    let text = format!("{e} {e:?} {store:?}");
    assert!(!text.contains("hunter2-secret"), "{text}");
}
