//! TLS against real servers, each started once for this file: a RabbitMQ node with an
//! amqps listener, a PostgreSQL server with `ssl=on`, and an https webhook receiver in
//! this process, all with a throwaway CA from deploy/tls/make-test-ca.sh.
//!
//! A gateway and a worker run a job over `amqps://`, the gateway's task store is on
//! PostgreSQL with `sslmode=verify-full`, and the job's https callback is delivered.
//! Then the refusals, each with its message and none falling back to plain: amqps to
//! the plain listener, amqps with the wrong CA, amqps to a name the certificate does
//! not hold, PostgreSQL verify-full with the wrong CA or a name not in the certificate,
//! and `sslmode=require` against a server without TLS.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, body::Bytes, extract::State, http::HeaderMap, routing::post};
use lapin::{ConnectionProperties, tcp::OwnedTLSConfig};
use pixmill_gateway::store::pg_tls;
use pixmill_tests::{
    GatewayProcess, TIMEOUT, backends, binary, broker::TestBroker, common, free_port,
    photos::photo, temp_dir,
};
use tokio::{net::TcpListener, process::Command};
use uuid::Uuid;

/// The plain AMQP port of this file's broker; its amqps listener is one below.
const BROKER_PORT: u16 = 5712;

/// Runs deploy/tls/make-test-ca.sh into `dir`.
fn make_ca(dir: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/tls/make-test-ca.sh");
    let status = std::process::Command::new("bash")
        .arg(script)
        .arg(dir)
        .status()
        .expect("run make-test-ca.sh");
    assert!(status.success(), "make-test-ca.sh failed");
}

/// A PostgreSQL server with `ssl=on`, started through deploy/postgres/ensure-postgres.sh
/// on its own port and folder, and stopped on drop.
struct TlsPostgres {
    port: u16,
    dir: PathBuf,
}

impl TlsPostgres {
    fn start(tls_dir: &Path) -> Self {
        let pg = Self {
            port: free_port().expect("port"),
            dir: temp_dir().join("postgres"),
        };
        let status = pg
            .script("start")
            .env("PIXMILL_PG_TLS_DIR", tls_dir)
            .stdout(Stdio::null())
            .status()
            .expect("run ensure-postgres.sh");
        assert!(status.success(), "ensure-postgres.sh start failed");
        pg
    }

    fn script(&self, verb: &str) -> std::process::Command {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/postgres/ensure-postgres.sh");
        let mut command = std::process::Command::new("bash");
        command
            .arg(script)
            .arg(verb)
            .env("PIXMILL_PG_PORT", self.port.to_string())
            .env("PIXMILL_PG_DIR", &self.dir);
        command
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        let _ = self.script("stop").status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Accepts TLS connections with the test server certificate, for axum.
struct TlsListener {
    tcp: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            match self.acceptor.accept(tcp).await {
                Ok(tls) => return (tls, addr),
                Err(e) => eprintln!("tls: receiver handshake with {addr} failed: {e}"),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

fn acceptor(tls_dir: &Path) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let certs = CertificateDer::pem_file_iter(tls_dir.join("server.pem"))
        .expect("server.pem")
        .collect::<Result<Vec<_>, _>>()
        .expect("server.pem parses");
    let key = PrivateKeyDer::from_pem_file(tls_dir.join("server.key")).expect("server.key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("server certificate");
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

type Received = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

async fn hook(State(received): State<Received>, headers: HeaderMap, body: Bytes) {
    received.lock().expect("lock").push((headers, body));
}

/// Forwards every connection to 127.0.0.2:<port> on to `to`: the same server, reached
/// under an address its certificate does not name.
async fn forwarder(to: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.2:0")
        .await
        .expect("bind 127.0.0.2");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    addr
}

/// The error of an amqps connection that must fail, within a bound.
async fn amqps_refused(url: &str, ca_pem: Option<String>) -> String {
    let tls = OwnedTLSConfig {
        identity: None,
        cert_chain: ca_pem,
    };
    let attempt = tokio::time::timeout(
        Duration::from_secs(20),
        pixmill_shared::amqp::connect_url_with(url, ConnectionProperties::default(), tls),
    )
    .await
    .unwrap_or_else(|_| panic!("{url}: neither connected nor failed within 20 s"));
    match attempt {
        Ok(_) => panic!("{url}: connected, but must have been refused"),
        Err(e) => e.to_string(),
    }
}

/// The error of a PostgreSQL connection that must fail.
async fn postgres_refused(url: &str, ca_file: Option<&Path>) -> String {
    let (config, tls) = pg_tls::config(url, ca_file).expect("config");
    match config.connect(tls).await {
        Ok(_) => panic!("{url}: connected, but must have been refused"),
        Err(e) => pg_tls::error_chain(&e),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_run_over_tls_and_tls_failures_never_fall_back_to_plain() {
    let Some(plain_pg_admin) = backends::postgres_admin() else {
        return;
    };
    let tls_dir = temp_dir().join("tls");
    make_ca(&tls_dir);
    let ca = tls_dir.join("ca.pem");
    let other_ca = tls_dir.join("other-ca.pem");
    let ca_pem = std::fs::read_to_string(&ca).expect("ca.pem");
    let other_ca_pem = std::fs::read_to_string(&other_ca).expect("other-ca.pem");

    // The servers, once each.
    let broker = TestBroker::start_tls(BROKER_PORT, &tls_dir).expect("TLS broker");
    let pg = TlsPostgres::start(&tls_dir);
    let received: Received = Arc::default();
    let receiver = TlsListener {
        tcp: TcpListener::bind("127.0.0.1:0").await.expect("bind"),
        acceptor: acceptor(&tls_dir),
    };
    let receiver_port = receiver.tcp.local_addr().expect("addr").port();
    let app = Router::new()
        .route("/hook", post(hook))
        .with_state(received.clone());
    tokio::spawn(async move { axum::serve(receiver, app).await });

    // The task store: a fresh database on the TLS server, reached with verify-full.
    let db = format!("pixmill_tls_{}", Uuid::new_v4().simple());
    let admin = format!(
        "postgres://pixmill@127.0.0.1:{}/pixmill?sslmode=require",
        pg.port
    );
    let db_url = pixmill_gateway::store::postgres::create_database(&admin, &db)
        .await
        .expect("create the database over TLS");
    let db_url = db_url.replace("sslmode=require", "sslmode=verify-full");
    assert!(db_url.ends_with("?sslmode=verify-full"), "{db_url}");

    // A gateway and a worker over amqps://, the gateway on verify-full PostgreSQL.
    let mut common = common(&format!("tls-{}", Uuid::new_v4().simple()), &temp_dir());
    common.amqp_url = broker.tls_url("127.0.0.1");
    std::fs::create_dir_all(&common.data_dir).expect("data dir");
    let ca_str = ca.to_str().expect("utf-8 path");
    let allow = format!("localhost:{receiver_port}");
    let port = free_port().expect("port");
    let gateway = GatewayProcess::start_with(
        &common,
        port,
        &[
            ("PIXMILL_AMQP_CA_FILE", ca_str),
            ("PIXMILL_DATABASE_URL", &db_url),
            ("PIXMILL_DATABASE_CA_FILE", ca_str),
            ("PIXMILL_WEBHOOK_SECRET", "a-test-secret-for-tls-webhooks"),
            ("PIXMILL_WEBHOOK_ALLOW", &allow),
            ("PIXMILL_WEBHOOK_CA_FILE", ca_str),
            ("PIXMILL_SWEEP_INTERVAL_SECS", "1"),
        ],
    )
    .await
    .expect("gateway");
    let t = &common.topology;
    let worker_log = std::fs::File::create(common.data_dir.join("worker.log")).expect("log");
    let _worker = Command::new(binary("pixmill-worker").expect("worker binary"))
        .env("PIXMILL_AMQP_URL", &common.amqp_url)
        .env("PIXMILL_AMQP_CA_FILE", &ca)
        .env("PIXMILL_DATA_DIR", &common.data_dir)
        .env("PIXMILL_BLOB_URL", common.blob_url.to_string())
        .env("PIXMILL_QUEUE_PREFIX", t.jobs.trim_end_matches(".jobs"))
        .env("PIXMILL_WORKER_NAME", "tls-worker")
        .env("PIXMILL_WORKER_CONCURRENCY", "1")
        .env("RUST_LOG", "info,lapin=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(worker_log)
        .kill_on_drop(true)
        .spawn()
        .expect("worker");

    let hook_url = format!("https://localhost:{receiver_port}/hook");
    let client = gateway.client.clone();
    let id = client
        .submit_ok(
            &photo("flower.jpg"),
            &[("op", "grayscale"), ("callback_url", &hook_url)],
        )
        .await
        .expect("submit over amqps");
    let job = client.wait_terminal(&id).await.expect("job ends");
    assert_eq!(job["state"], "succeeded", "{job}");

    // The https callback arrives, through the pinned address, verified by the test CA.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        if let Some((headers, body)) = received.lock().expect("lock").first().cloned() {
            let delivered: serde_json::Value = serde_json::from_slice(&body).expect("json");
            assert_eq!(delivered["id"], id.as_str(), "{delivered}");
            assert!(headers.contains_key("pixmill-signature"), "{headers:?}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no https delivery arrived: {}",
            client
                .get(&format!("/v1/jobs/{id}"))
                .await
                .map(|r| String::from_utf8_lossy(&r.body).into_owned())
                .unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("tls: job {id} ran over amqps, stored over verify-full, called back over https");

    // Every connection the gateway holds to PostgreSQL is TLS.
    let (check, tls) = pg_tls::config(&db_url, Some(&ca)).expect("config");
    let (pg_client, connection) = check.connect(tls).await.expect("verify-full connects");
    tokio::spawn(connection);
    let rows = pg_client
        .query(
            "SELECT s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s ON s.pid = a.pid \
             WHERE a.application_name = 'pixmill-gateway' AND a.datname = $1",
            &[&db],
        )
        .await
        .expect("pg_stat_ssl");
    assert!(!rows.is_empty(), "the gateway holds no connection to {db}");
    assert!(
        rows.iter().all(|r| r.get::<_, bool>(0)),
        "a gateway connection is not TLS"
    );
    // And so are the broker connections (RabbitMQ names the listener's protocol).
    // (Checked below from the other side: the plain listener refuses TLS clients.)

    // amqps:// to the plain listener: the TLS handshake fails; no plain session.
    let plain_port = format!("amqps://guest:guest@127.0.0.1:{BROKER_PORT}/%2f");
    let err = amqps_refused(&plain_port, Some(ca_pem.clone())).await;
    println!("tls: amqps to the plain listener: {err}");
    assert!(
        err.contains("TLS connection to the broker at 127.0.0.1:5712 failed"),
        "{err}"
    );
    assert!(err.contains("never falls back to plain"), "{err}");
    assert!(err.contains("is that port a TLS listener?"), "{err}");

    // amqps:// with a CA that did not sign the broker's certificate.
    let err = amqps_refused(&broker.tls_url("127.0.0.1"), Some(other_ca_pem.clone())).await;
    println!("tls: amqps with the wrong CA: {err}");
    assert!(err.contains("TLS connection to the broker"), "{err}");
    assert!(err.contains("UnknownIssuer"), "{err}");

    // amqps:// to an address the certificate does not name (127.0.0.2, forwarded to
    // the same listener), with the right CA.
    let via = forwarder(SocketAddr::from(([127, 0, 0, 1], BROKER_PORT - 1))).await;
    let err = amqps_refused(
        &format!("amqps://guest:guest@{via}/%2f"),
        Some(ca_pem.clone()),
    )
    .await;
    println!("tls: amqps to a name not in the certificate: {err}");
    assert!(err.contains("TLS connection to the broker"), "{err}");
    assert!(
        err.contains("certificate not valid for name \"127.0.0.2\""),
        "{err}"
    );

    // A worker with the wrong CA says why in its log and never connects.
    let bad_log = common.data_dir.join("bad-worker.log");
    let mut bad_worker = Command::new(binary("pixmill-worker").expect("worker binary"))
        .env("PIXMILL_AMQP_URL", &common.amqp_url)
        .env("PIXMILL_AMQP_CA_FILE", &other_ca)
        .env("PIXMILL_DATA_DIR", &common.data_dir)
        .env("PIXMILL_BLOB_URL", common.blob_url.to_string())
        .env("PIXMILL_QUEUE_PREFIX", t.jobs.trim_end_matches(".jobs"))
        .env("PIXMILL_WORKER_NAME", "wrong-ca-worker")
        .env("RUST_LOG", "info,lapin=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&bad_log).expect("log"))
        .kill_on_drop(true)
        .spawn()
        .expect("worker");
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let log = loop {
        let log = std::fs::read_to_string(&bad_log).unwrap_or_default();
        if log.contains("UnknownIssuer") {
            break log;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the wrong-CA worker did not report the certificate: {log}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(log.contains("never falls back to plain"), "{log}");
    assert!(
        !log.contains("connected to the broker"),
        "the wrong-CA worker connected: {log}"
    );
    let _ = bad_worker.start_kill();

    // PostgreSQL verify-full with the wrong CA.
    let err = postgres_refused(&db_url, Some(&other_ca)).await;
    println!("tls: postgres verify-full with the wrong CA: {err}");
    assert!(err.contains("UnknownIssuer"), "{err}");

    // PostgreSQL verify-full under a name the certificate does not hold.
    let via = forwarder(SocketAddr::from(([127, 0, 0, 1], pg.port))).await;
    let renamed = db_url.replace(&format!("127.0.0.1:{}", pg.port), &via.to_string());
    let err = postgres_refused(&renamed, Some(&ca)).await;
    println!("tls: postgres verify-full under another name: {err}");
    assert!(
        err.contains("certificate not valid for name \"127.0.0.2\""),
        "{err}"
    );

    // sslmode=require against the test services' server, which has no TLS.
    let (base, _) = plain_pg_admin
        .split_once('?')
        .unwrap_or((&plain_pg_admin, ""));
    let err = postgres_refused(&format!("{base}?sslmode=require"), None).await;
    println!("tls: sslmode=require without TLS on the server: {err}");
    assert!(err.contains("server does not support TLS"), "{err}");

    drop(gateway);
    drop(broker);
    drop(pg);
}
