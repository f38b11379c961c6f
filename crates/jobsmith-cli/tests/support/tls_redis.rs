//! A `redis-server` of the test's own that speaks only TLS, on a free port,
//! with a certificate for 127.0.0.1 signed by a throwaway CA ([`Certs`]).

use jobsmith_conformance::tls::{free_port, temp_dir, Certs};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The server; killed, and its directory removed, when dropped.
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
    /// Starts one and waits until its TLS port listens.
    pub fn start() -> TlsRedis {
        let dir = temp_dir("redis-tls");
        let certs = Certs::make(&dir);
        let mut server = TlsRedis {
            port: free_port(),
            certs,
            dir,
            child: None,
        };
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
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is on PATH");
        server.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", server.port)).is_err() {
            let exited = server
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "redis-server did not listen on TLS port {} ({exited:?}); is it built with TLS?",
                server.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// `rediss://127.0.0.1:<port>?prefix=<fresh>`, then `extra` (`&k=v`).
    pub fn url(&self, extra: &str) -> String {
        format!(
            "rediss://127.0.0.1:{}?prefix=jscli{:012x}{extra}",
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
