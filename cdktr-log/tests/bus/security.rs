//! CURVE on the log and live sockets: who gets in, who does not.

use std::path::Path;

use cdktr_log::curve::{self, Authorizer, ClientKeys, KeyPair, Role};
use cdktr_log::Error;

use super::*;

/// A principal's pair, and a directory allowing `agent` (publisher) and
/// `watcher` (reader); returns the clients' keys too.
struct Keys {
    server: KeyPair,
    dir: tempfile::TempDir,
    agent: ClientKeys,
    watcher: ClientKeys,
}

fn keys() -> Keys {
    let server = KeyPair::generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let private = tempfile::tempdir().unwrap();
    let client = |name: &str, role: Role| {
        let pair = KeyPair::generate().unwrap();
        let (_, public) = pair.write(private.path(), name, Some(role)).unwrap();
        std::fs::copy(&public, dir.path().join(format!("{name}.pub"))).unwrap();
        ClientKeys {
            pair,
            server: server.public,
        }
    };
    let (agent, watcher) = (client("agent", Role::Publisher), client("watcher", Role::Reader));
    Keys {
        server,
        dir,
        agent,
        watcher,
    }
}

fn stranger(server: &KeyPair) -> ClientKeys {
    ClientKeys {
        pair: KeyPair::generate().unwrap(),
        server: server.public,
    }
}

fn secure_manager(keys: &Keys) -> (LogManager, Receiver<Line>, Authorizer) {
    let auth = Authorizer::new(keys.server.clone(), keys.dir.path()).unwrap();
    let (tx, rx) = bounded(10_000);
    let manager = LogManager::builder(&any_ports())
        .sink(tx)
        .curve(auth.clone())
        .start()
        .unwrap();
    (manager, rx, auth)
}

#[test]
fn this_builds_libzmq_has_curve() {
    assert!(
        curve::available(),
        "libzmq was built without CURVE: is .cargo/config.toml's zmq table applied?"
    );
}

#[test]
fn a_key_pair_written_to_files_reads_back_and_its_secret_file_is_private() {
    let dir = tempfile::tempdir().unwrap();
    let pair = KeyPair::generate().unwrap();
    let (secret, public) = pair.write(dir.path(), "agent-7", Some(Role::Publisher)).unwrap();
    assert_eq!(KeyPair::read(&secret).unwrap().public, pair.public);
    let cert = curve::Certificate::read(&public).unwrap();
    assert_eq!(
        (cert.public, cert.name.as_deref(), cert.role),
        (pair.public, Some("agent-7"), Some(Role::Publisher))
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777, 0o600);
    }
    // Never overwritten; a public file is no secret key; names are plain.
    assert!(matches!(
        pair.write(dir.path(), "agent-7", None),
        Err(Error::Key { .. })
    ));
    assert!(matches!(KeyPair::read(&public), Err(Error::Key { reason, .. }) if reason.contains("no secret-key")));
    assert!(matches!(
        pair.write(dir.path(), "../escape", None),
        Err(Error::Key { .. })
    ));
    assert!(matches!(
        KeyPair::read(Path::new("/nonexistent/x.key")),
        Err(Error::Key { .. })
    ));
}

#[test]
fn an_allowed_publisher_key_delivers_and_a_stranger_or_a_plain_client_gets_nothing_through() {
    let keys = keys();
    let (manager, rx, auth) = secure_manager(&keys);
    let config = manager.config().clone();
    let stranger = LogPublisher::builder(&config)
        .curve(stranger(&keys.server))
        .start()
        .unwrap();
    let plain = LogPublisher::builder(&config).start().unwrap();
    stranger.publish(msg("wf-stranger", "in?")).unwrap();
    plain.publish(msg("wf-plain", "in?")).unwrap();
    assert!(
        wait_until(|| auth.refused() >= 1),
        "the stranger's handshake was not refused"
    );

    let agent = LogPublisher::builder(&config)
        .curve(keys.agent.clone())
        .start()
        .unwrap();
    agent.publish(msg("wf-agent", "in")).unwrap();
    let got = take(&rx, 1);
    assert_eq!(got[0].message.workflow_id, "wf-agent");
    // Whatever else comes in a while is not theirs.
    while let Ok(e) = rx.recv_timeout(Duration::from_millis(500)) {
        assert_eq!(e.workflow_id(), "wf-agent", "{e:?}");
    }
    assert_eq!(manager.stats().received, 1);
}

/// A secure manager with the agent publishing on `wf-live` and the
/// watcher following it.
struct Live {
    keys: Keys,
    manager: LogManager,
    auth: Authorizer,
    agent: LogPublisher,
    reader: LogSubscriber,
    _sink: Receiver<Line>,
}

fn live() -> Live {
    let keys = keys();
    let (manager, sink, auth) = secure_manager(&keys);
    let agent = LogPublisher::builder(manager.config())
        .curve(keys.agent.clone())
        .start()
        .unwrap();
    let mut reader = LogSubscriber::builder(manager.config())
        .curve(keys.watcher.clone())
        .connect()
        .unwrap();
    join(&mut reader, &agent, "wf-live");
    Live {
        keys,
        manager,
        auth,
        agent,
        reader,
        _sink: sink,
    }
}

#[test]
fn a_reader_key_follows_the_live_stream_and_a_publisher_key_cannot() {
    let mut l = live();

    let before = l.auth.refused();
    let mut wrong = LogSubscriber::builder(l.manager.config())
        .curve(l.keys.agent.clone())
        .connect()
        .unwrap();
    assert!(
        wait_until(|| l.auth.refused() > before),
        "a publisher key was let onto the live port"
    );
    l.agent.publish(msg("wf-live", "after")).unwrap();
    let e = l
        .reader
        .recv_timeout(WAIT)
        .unwrap()
        .expect("the l.reader gets the line");
    assert_eq!(e.message.payload, "after");
    assert!(wrong.recv_timeout(Duration::from_millis(500)).unwrap().is_none());
}

#[test]
fn a_reader_key_cannot_push_log_lines() {
    let keys = keys();
    let (manager, rx, auth) = secure_manager(&keys);
    let reader = LogPublisher::builder(manager.config())
        .curve(keys.watcher.clone())
        .start()
        .unwrap();
    reader.publish(msg("wf-reader", "in?")).unwrap();
    assert!(
        wait_until(|| auth.refused() >= 1),
        "a reader key was let onto the log port"
    );
    assert!(rx.recv_timeout(Duration::from_millis(500)).is_err());
}

#[test]
fn a_key_added_at_runtime_gets_in_and_once_removed_its_connections_are_closed() {
    let keys = keys();

    let (manager, rx, auth) = secure_manager(&keys);
    let config = manager.config().clone();
    let private = tempfile::tempdir().unwrap();
    let late_pair = KeyPair::generate().unwrap();
    let (_, late_pub) = late_pair.write(private.path(), "late", Some(Role::Admin)).unwrap();
    let late_keys = ClientKeys {
        pair: late_pair,
        server: keys.server.public,
    };
    let late = LogPublisher::builder(&config).curve(late_keys.clone()).start().unwrap();
    late.publish(msg("wf-late", "queued while refused")).unwrap();
    assert!(wait_until(|| auth.refused() >= 1), "an unknown key was let in");

    // Allowed within seconds, no restart: what it queued arrives.
    let allowed = keys.dir.path().join("late.pub");
    std::fs::copy(&late_pub, &allowed).unwrap();
    let got = take(&rx, 1);
    assert_eq!(got[0].message.payload, "queued while refused");
    let mut live = LogSubscriber::builder(&config).curve(late_keys).connect().unwrap();
    join(&mut live, &late, "wf-late");
    // The sink has the probes too.
    while rx.recv_timeout(WAIT).expect("the join's lines are stored").payload() != "joined" {}

    // Removed: every connection is closed, and it cannot come back.
    let removals = auth.removals();
    let refused = auth.refused();
    std::fs::remove_file(&allowed).unwrap();
    assert!(wait_until(|| auth.removals() > removals), "the removal was not noticed");
    assert!(
        wait_until(|| auth.refused() > refused),
        "the removed key was not refused on reconnecting"
    );
    late.publish(msg("wf-late", "after removal")).unwrap();
    let agent = LogPublisher::builder(&config)
        .curve(keys.agent.clone())
        .start()
        .unwrap();
    agent.publish(msg("wf-late", "from an allowed key")).unwrap();
    let got = take(&rx, 1);
    assert_eq!(got[0].message.payload, "from an allowed key");
    assert!(rx.recv_timeout(Duration::from_millis(500)).is_err());
    // The removed key's subscription went with its connection.
    while let Some(e) = live.recv_timeout(Duration::from_millis(500)).unwrap() {
        assert_ne!(
            e.message.payload, "from an allowed key",
            "a removed key still follows the stream"
        );
    }
}

#[test]
fn a_stranger_or_a_plain_client_gets_nothing_from_the_live_port() {
    let mut l = live();
    let mut stranger = LogSubscriber::builder(l.manager.config())
        .curve(stranger(&l.keys.server))
        .connect()
        .unwrap();
    let mut plain = LogSubscriber::builder(l.manager.config()).connect().unwrap();
    assert!(
        wait_until(|| l.auth.refused() >= 1),
        "a stranger's key was let onto the live port"
    );
    l.agent.publish(msg("wf-live", "secret")).unwrap();
    assert_eq!(
        l.reader
            .recv_timeout(WAIT)
            .unwrap()
            .expect("the l.reader gets it")
            .message
            .payload,
        "secret"
    );
    assert!(stranger.recv_timeout(Duration::from_millis(300)).unwrap().is_none());
    assert!(plain.recv_timeout(Duration::from_millis(300)).unwrap().is_none());
}
