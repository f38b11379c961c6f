//! `rediss://` against a real TLS Redis: each test makes a throwaway CA and a
//! server certificate for 127.0.0.1 with the `openssl` command, and starts a
//! `redis-server` of its own that speaks only TLS, on a free port.
//!
//! A round trip with `tls_ca=` trusting that CA; a CA that did not sign the
//! server's certificate (and the system roots) refused promptly, naming the
//! certificate; `#insecure` connecting without checks (feature `tls-insecure`),
//! and refused at connect, naming that feature, without it.
#![cfg(feature = "tls")]

mod support;

use jobsmith_core::{Backend, Envelope, Error, LeaseStatus};
use jobsmith_core::{Inspect, SettleExt};
use jobsmith_redis::{RedisBackend, RedisConfig};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::fresh_prefix;

/// Longest a connection attempt may take, success or failure, before the test calls it a hang.
const PROMPT: Duration = Duration::from_secs(15);

/// Runs `openssl` with `args` in `dir`, failing the test with its output if it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the `openssl` command is on PATH");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes a self-signed CA: `<name>.pem` and `<name>.key` in `dir`.
fn make_ca(dir: &Path, name: &str) {
    let (pem, key, subj) = (
        format!("{name}.pem"),
        format!("{name}.key"),
        format!("/CN=jobsmith test {name}"),
    );
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &subj,
            "-keyout",
            &key,
            "-out",
            &pem,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

/// A private `redis-server` that speaks only TLS, with a certificate for
/// 127.0.0.1 and localhost signed by `ca.pem`; killed, and its files removed, when dropped.
struct TlsServer {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl TlsServer {
    fn start() -> TlsServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let dir =
            std::env::temp_dir().join(format!("jobsmith-redis-tls-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        // The guard exists before anything can fail, so the directory is always removed.
        let mut server = TlsServer {
            port,
            dir,
            child: None,
        };
        let dir = server.dir.clone();
        make_ca(&dir, "ca");
        make_ca(&dir, "other-ca");
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n\
             basicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth\n",
        )
        .expect("write server.ext");
        openssl(
            &dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-subj",
                "/CN=localhost",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
            ],
        );
        openssl(
            &dir,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "server.ext",
                "-out",
                "server.pem",
            ],
        );
        let child = Command::new("redis-server")
            .arg("--port")
            .arg("0")
            .arg("--tls-port")
            .arg(port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--tls-cert-file")
            .arg(dir.join("server.pem"))
            .arg("--tls-key-file")
            .arg(dir.join("server.key"))
            .arg("--tls-ca-cert-file")
            .arg(dir.join("ca.pem"))
            .arg("--tls-auth-clients")
            .arg("no")
            .arg("--save")
            .arg("")
            .arg("--appendonly")
            .arg("no")
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("redis-server is on PATH");
        server.child = Some(child);
        server.wait_listening();
        server
    }

    /// Waits until the TLS port accepts connections, failing if the server exits first.
    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let child = self.child.as_mut().expect("started");
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                panic!("redis-server exited ({status}); is it built with TLS? {err}");
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not listen on TLS port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn file(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// `rediss://127.0.0.1:<port>?prefix=<fresh>`, then `extra` (`&k=v` or `#insecure`).
    fn url(&self, extra: &str) -> String {
        format!(
            "rediss://127.0.0.1:{}?prefix={}{extra}",
            self.port,
            fresh_prefix()
        )
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Connects, or fails the test if neither success nor failure comes promptly.
async fn connect(url: &str) -> jobsmith_core::Result<RedisBackend> {
    let started = Instant::now();
    let res = tokio::time::timeout(PROMPT, RedisBackend::connect(url))
        .await
        .unwrap_or_else(|_| panic!("connecting to {url} hung for {PROMPT:?}"));
    eprintln!("connect to {url}: {:?}", started.elapsed());
    res
}

/// An error and all its causes, `: `-separated.
fn chain(e: &Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// Enqueue, a blocking reserve woken by an enqueue, ack and stats, all over TLS.
async fn round_trip(b: &RedisBackend) {
    let queues = vec!["tls".to_owned()];
    let job = |n: u32| Envelope::with_args("noop", "tls", &serde_json::json!({ "n": n })).unwrap();
    b.enqueue(vec![job(1)]).await.expect("enqueue over TLS");
    let stats = b.stats(&queues).await.expect("stats");
    assert_eq!((stats[0].ready, stats[0].in_flight), (1, 0));

    let got = b
        .reserve(&queues, 10, Duration::from_secs(60), Duration::from_secs(1))
        .await
        .expect("reserve");
    assert_eq!(got.len(), 1);
    let env = got[0].envelope.as_ref().expect("an envelope");
    assert_eq!((env.job.as_str(), env.args.get()), ("noop", r#"{"n":1}"#));
    assert_eq!(b.stats(&queues).await.expect("stats")[0].in_flight, 1);
    let acked = b.ack(&[got[0].lease.clone()]).await.expect("ack");
    assert_eq!(acked, vec![LeaseStatus::Held]);

    // An idle reserve blocks on a connection of its own (also TLS) until an enqueue wakes it.
    let waiter = {
        let (b, queues) = (b.clone(), queues.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let got = b
                .reserve(
                    &queues,
                    10,
                    Duration::from_secs(60),
                    Duration::from_secs(10),
                )
                .await
                .expect("blocking reserve");
            (got, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    b.enqueue(vec![job(2)]).await.expect("enqueue");
    let (got, waited) = waiter.await.expect("the waiter");
    assert_eq!(got.len(), 1, "woken with the job");
    assert!(
        waited < Duration::from_secs(5),
        "woken, not timed out: {waited:?}"
    );
    let acked = b.ack(&[got[0].lease.clone()]).await.expect("ack");
    assert_eq!(acked, vec![LeaseStatus::Held]);

    let s = &b.stats(&queues).await.expect("stats")[0];
    assert_eq!(
        (s.ready, s.scheduled, s.in_flight, s.dead),
        (0, 0, 0, 0),
        "{s:?}"
    );
}

#[tokio::test]
async fn trusting_the_servers_ca_gives_a_round_trip() {
    let server = TlsServer::start();
    let url = server.url(&format!("&tls_ca={}", server.file("ca.pem")));
    let b = connect(&url).await.expect("connect over TLS");
    round_trip(&b).await;
}

#[tokio::test]
async fn a_ca_that_did_not_sign_the_server_is_refused_promptly() {
    let server = TlsServer::start();
    for extra in [
        format!("&tls_ca={}", server.file("other-ca.pem")),
        String::new(),
    ] {
        let url = server.url(&extra);
        let e = connect(&url)
            .await
            .expect_err("an unknown issuer is refused");
        let text = chain(&e);
        assert!(
            text.to_lowercase().contains("certificate"),
            "the error names the certificate problem: {text}"
        );
        eprintln!("{url}: {text}");
    }
}

#[cfg(feature = "tls-insecure")]
#[tokio::test]
async fn insecure_connects_without_verification() {
    let server = TlsServer::start();
    let b = connect(&server.url("#insecure"))
        .await
        .expect("connect with #insecure");
    round_trip(&b).await;
}

/// Without the `tls-insecure` feature, `#insecure` is refused before any
/// connection is tried, even to a server whose certificate would pass.
#[cfg(not(feature = "tls-insecure"))]
#[tokio::test]
async fn insecure_without_its_feature_is_refused_at_connect() {
    let server = TlsServer::start();
    let url = server.url(&format!("&tls_ca={}#insecure", server.file("ca.pem")));
    let e = connect(&url).await.expect_err("no tls-insecure feature");
    assert!(matches!(e, Error::Config(_)), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("`tls-insecure` feature of jobsmith-redis")
            && text.contains("`redis-tls-insecure`")
            && text.contains("tls_ca="),
        "the error names the feature and the secure alternative: {text}"
    );
}

#[tokio::test]
async fn a_bad_ca_file_is_a_configuration_error() {
    let dir = std::env::temp_dir().join(format!("jobsmith-redis-tls-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let not_pem = dir.join("not.pem");
    std::fs::write(&not_pem, "hello").expect("write");
    let missing = dir.join("missing.pem");
    for path in [&missing, &not_pem] {
        let config = RedisConfig::from_url("rediss://127.0.0.1:1")
            .expect("valid")
            .with_tls_ca(path);
        let e = RedisBackend::connect_with(config)
            .await
            .expect_err("no usable CA");
        assert!(matches!(e, Error::Config(_)), "{e:?}");
        assert!(e.to_string().contains(&*path.to_string_lossy()), "{e}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
