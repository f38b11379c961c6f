//! Private brokers for tests: a throwaway CA and a server certificate for
//! 127.0.0.1 made with the `openssl` command ([`Certs`]), and a RabbitMQ node
//! of the test's own, listening for plain AMQP and for AMQP over TLS on free
//! ports ([`TlsRabbit`]): the one to restart or reconfigure in a test.
//!
//! The node never touches the shared broker: it has its own node name, ports,
//! data, logs, configuration, plugins file (empty: no management plugin
//! competing for port 15672) and Erlang cookie (a private `HOME`), all under
//! one temporary directory that is removed when the guard drops, also when
//! the test fails. The AMQP backend's tests and the CLI's use it. And a
//! `redis-server` of the test's own that speaks only TLS ([`TlsRedis`]).

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a private RabbitMQ node may take to open its TLS port: it takes
/// 10-30 s on a busy 2-core machine.
const RABBIT_START: Duration = Duration::from_secs(90);

/// A free loopback port (free when asked; the server binds it soon after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn listening(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
}

/// A fresh temporary directory named after `what`, this process and a random number.
pub fn temp_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "jobsmith-{what}-{}-{:08x}",
        std::process::id(),
        fastrand::u32(..)
    ));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    dir
}

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

/// Certificates in a directory: `ca.pem` (the CA that signed the server),
/// `other-ca.pem` (a CA that did not), and `server.pem` / `server.key` for
/// 127.0.0.1 and localhost.
#[derive(Debug)]
pub struct Certs {
    dir: PathBuf,
}

impl Certs {
    /// Makes them in `dir`.
    pub fn make(dir: &Path) -> Certs {
        make_ca(dir, "ca");
        make_ca(dir, "other-ca");
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n\
             basicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth\n",
        )
        .expect("write server.ext");
        openssl(
            dir,
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
            dir,
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
        Certs {
            dir: dir.to_owned(),
        }
    }

    /// The path of one of the files, as a string for a URL.
    pub fn file(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

/// A `redis-server` of the test's own that speaks only TLS, on a free port,
/// with a certificate for 127.0.0.1 and localhost signed by [`Certs`]'
/// `ca.pem`. Killed, and its directory removed, when dropped. The Redis
/// backend's TLS tests and the CLI's use it.
#[derive(Debug)]
pub struct TlsRedis {
    /// The TLS port.
    pub port: u16,
    /// `ca.pem` (signed the server), `other-ca.pem` (did not).
    pub certs: Certs,
    dir: PathBuf,
    child: Option<Child>,
}

impl TlsRedis {
    /// Starts one and waits until its TLS port listens, failing the test
    /// with the server's error output if it exits first.
    pub fn start() -> TlsRedis {
        let dir = temp_dir("redis-tls");
        // The guard exists before anything can fail, so the directory is always removed.
        let mut server = TlsRedis {
            port: free_port(),
            certs: Certs { dir: dir.clone() },
            dir,
            child: None,
        };
        server.certs = Certs::make(&server.dir);
        let child = Command::new("redis-server")
            .args(["--port", "0", "--bind", "127.0.0.1"])
            .arg("--tls-port")
            .arg(server.port.to_string())
            .arg("--tls-cert-file")
            .arg(server.dir.join("server.pem"))
            .arg("--tls-key-file")
            .arg(server.dir.join("server.key"))
            .arg("--tls-ca-cert-file")
            .arg(server.dir.join("ca.pem"))
            .args([
                "--tls-auth-clients",
                "no",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(&server.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("redis-server is on PATH");
        let child = server.child.insert(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !listening(server.port) {
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
                server.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// `rediss://127.0.0.1:<port>?prefix=<fresh>`, then `extra` (`&k=v` or `#insecure`).
    pub fn url(&self, extra: &str) -> String {
        format!(
            "rediss://127.0.0.1:{}?prefix=jstls{:012x}{extra}",
            self.port,
            fastrand::u64(..) >> 16
        )
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A RabbitMQ node of the test's own, `jstls-<random>@localhost`, that
/// listens for AMQP over TLS on 127.0.0.1 with a certificate signed by
/// [`Certs`]' `ca.pem`. Stopped, and its directory removed, when dropped.
#[derive(Debug)]
pub struct TlsRabbit {
    /// The TLS port.
    pub port: u16,
    /// The plain AMQP port.
    pub plain_port: u16,
    /// The node's name.
    pub node: String,
    /// The certificates, in the node's directory.
    pub certs: Certs,
    dir: PathBuf,
    /// A `bash` that runs `rabbitmq-server` and stops it when its stdin,
    /// a pipe from this process, closes ([`KEEPER`]).
    child: Option<Child>,
}

/// Runs `$0` (the `rabbitmq-server` script) in the background; when stdin
/// closes, stops it (SIGTERM: the script stops the VM cleanly), waits for it
/// and removes the directory `$1`. Stdin is a pipe from the test, so this
/// happens when the guard drops and also when the test process dies without
/// dropping it (killed on a timeout): no node outlives its test. Exits
/// without removing anything when the node exits by itself, so that its log
/// can be read.
const KEEPER: &str = r#""$0" & node=$!
while kill -0 $node 2>/dev/null; do
  read -r -t 1 _; [ $? -gt 128 ] && continue
  kill -TERM $node; wait $node; rm -rf "$1"; exit 0
done"#;

impl TlsRabbit {
    /// Starts one and waits until its TLS port listens; fails the test with
    /// the node's log if it does not within 90 s.
    pub fn start() -> TlsRabbit {
        Self::start_with("")
    }

    /// [`TlsRabbit::start`], with `advanced` as the node's `advanced.config`
    /// (Erlang terms, such as `[{rabbit, [{consumer_timeout, 5000}]}].`).
    pub fn start_with(advanced: &str) -> TlsRabbit {
        let dir = temp_dir("rabbit-tls");
        // The guard exists before anything can fail, so the directory is always removed.
        let mut node = TlsRabbit {
            port: free_port(),
            plain_port: free_port(),
            node: format!("jstls-{:08x}@localhost", fastrand::u32(..)),
            certs: Certs { dir: dir.clone() },
            dir,
            child: None,
        };
        node.certs = Certs::make(&node.dir);
        let (plain, dist) = (node.plain_port, free_port());
        if !advanced.is_empty() {
            std::fs::write(node.dir.join("advanced.config"), advanced)
                .expect("write advanced.config");
        }
        let d = |name: &str| node.dir.join(name);
        std::fs::write(
            d("rabbitmq.conf"),
            format!(
                "listeners.tcp.1 = 127.0.0.1:{plain}\n\
                 listeners.ssl.1 = 127.0.0.1:{tls}\n\
                 ssl_options.cacertfile = {ca}\n\
                 ssl_options.certfile = {cert}\n\
                 ssl_options.keyfile = {key}\n\
                 ssl_options.verify = verify_none\n\
                 ssl_options.fail_if_no_peer_cert = false\n",
                tls = node.port,
                ca = d("ca.pem").display(),
                cert = d("server.pem").display(),
                key = d("server.key").display(),
            ),
        )
        .expect("write rabbitmq.conf");
        // Empty: no plugins, and none of /etc/rabbitmq's environment.
        std::fs::write(d("enabled_plugins"), "[].\n").expect("write enabled_plugins");
        std::fs::write(d("rabbitmq-env.conf"), "").expect("write rabbitmq-env.conf");
        std::fs::create_dir_all(d("home")).expect("a HOME");
        // The package's script, not /usr/sbin's wrapper, which would switch
        // to the `rabbitmq` user and its HOME (the shared broker's cookie).
        let script = ["/usr/lib/rabbitmq/bin/rabbitmq-server", "rabbitmq-server"]
            .into_iter()
            .find(|p| !p.starts_with('/') || Path::new(p).exists())
            .expect("a candidate");
        let child = Command::new("bash")
            .args(["-c", KEEPER, script])
            .arg(&node.dir)
            .env("HOME", d("home"))
            .env("RABBITMQ_CONF_ENV_FILE", d("rabbitmq-env.conf"))
            .env("RABBITMQ_NODENAME", &node.node)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", plain.to_string())
            .env("RABBITMQ_DIST_PORT", dist.to_string())
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "-kernel inet_dist_use_interface {127,0,0,1}",
            )
            .env("RABBITMQ_CONFIG_FILE", d("rabbitmq.conf"))
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", d("advanced.config"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d("enabled_plugins"))
            .env("RABBITMQ_FEATURE_FLAGS_FILE", d("feature_flags"))
            .env("RABBITMQ_MNESIA_BASE", d("mnesia"))
            .env("RABBITMQ_LOG_BASE", d("log"))
            .env("RABBITMQ_PID_FILE", d("pid"))
            .current_dir(&node.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("rabbitmq-server starts (apt-get install -y rabbitmq-server)");
        node.child = Some(child);
        node.wait_listening();
        node
    }

    fn wait_listening(&mut self) {
        let started = Instant::now();
        loop {
            if listening(self.port) {
                eprintln!(
                    "RabbitMQ node {} listens for TLS on {} after {:?}",
                    self.node,
                    self.port,
                    started.elapsed()
                );
                return;
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || started.elapsed() > RABBIT_START {
                panic!(
                    "RabbitMQ node {} did not listen on TLS port {} ({}); its log:\n{}",
                    self.node,
                    self.port,
                    exited.map_or_else(
                        || format!("still starting after {RABBIT_START:?}"),
                        |s| format!("exited: {s}")
                    ),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The node's log files, concatenated.
    pub fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(entries) = std::fs::read_dir(self.dir.join("log")) {
            for e in entries.flatten() {
                text.push_str(&format!("== {}\n", e.path().display()));
                text.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
        text
    }

    /// `amqps://guest:guest@127.0.0.1:<port>/%2f?prefix=<fresh>&expires=10m`, then `extra` (`&k=v`).
    pub fn url(&self, extra: &str) -> String {
        format!(
            "amqps://guest:guest@127.0.0.1:{}/%2f?prefix=jstls{:016x}&expires=10m{extra}",
            self.port,
            fastrand::u64(..)
        )
    }

    /// `amqp://guest:guest@127.0.0.1:<plain port>/%2f?prefix=<fresh>&expires=10m`, then `extra` (`&k=v`).
    pub fn amqp_url(&self, extra: &str) -> String {
        format!(
            "amqp://guest:guest@127.0.0.1:{}/%2f?prefix=jsnode{:016x}&expires=10m{extra}",
            self.plain_port,
            fastrand::u64(..)
        )
    }

    /// Runs `rabbitmqctl args` against this node (never the shared one);
    /// its output if it succeeds.
    pub fn rabbitmqctl(&self, args: &[&str]) -> Option<String> {
        let ctl = ["/usr/lib/rabbitmq/bin/rabbitmqctl", "rabbitmqctl"]
            .into_iter()
            .find(|p| !p.starts_with('/') || Path::new(p).exists())
            .expect("a candidate");
        let out = Command::new(ctl)
            .args(["-n", &self.node])
            .args(args)
            .env("HOME", self.dir.join("home"))
            .env("RABBITMQ_CONF_ENV_FILE", self.dir.join("rabbitmq-env.conf"))
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Whether the node's plain AMQP port listens.
    pub fn plain_listening(&self) -> bool {
        listening(self.plain_port)
    }

    /// The VM's PID, from the node's pid file.
    fn vm_pid(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.join("pid"))
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    }
}

impl Drop for TlsRabbit {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Closing the keeper's stdin stops the node cleanly; it exits once the node has.
            drop(child.stdin.take());
            let deadline = Instant::now() + Duration::from_secs(30);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            if child.try_wait().ok().flatten().is_none() {
                if let Some(pid) = self.vm_pid() {
                    let _ = Command::new("kill").args(["-KILL", &pid]).status();
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
