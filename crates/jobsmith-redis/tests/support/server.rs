//! A private `redis-server` on a free port, killed when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` this test started.
pub struct Server {
    pub port: u16,
    pub dir: PathBuf,
    aof: bool,
    /// The password the server asks for (`--requirepass`), if any.
    password: Option<String>,
    child: Option<Child>,
}

impl Server {
    /// Starts one on a free port; with `aof`, every write is fsynced to an append-only file.
    pub async fn start(aof: bool) -> Server {
        Self::start_with(aof, None).await
    }

    /// Starts one that asks for `password` (`--requirepass`).
    pub async fn with_password(password: &str) -> Server {
        Self::start_with(false, Some(password.to_owned())).await
    }

    async fn start_with(aof: bool, password: Option<String>) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let dir =
            std::env::temp_dir().join(format!("jobsmith-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a data directory");
        let mut s = Server {
            port,
            dir,
            aof,
            password,
            child: None,
        };
        s.spawn().await;
        s
    }

    /// The URL of this server, with its password if it asks for one.
    pub fn url(&self) -> String {
        match &self.password {
            Some(pw) => format!("redis://:{pw}@127.0.0.1:{}", self.port),
            None => self.bare_url(),
        }
    }

    /// The URL of this server without a password.
    pub fn bare_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Changes the password the server asks for, and drops every client
    /// connected with the old one (Redis keeps those logged in otherwise).
    pub async fn change_password(&mut self, password: &str) {
        let client = redis::Client::open(self.url()).expect("redis URL");
        let mut c = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect with the old password");
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("requirepass")
            .arg(password)
            .exec_async(&mut c)
            .await
            .expect("CONFIG SET requirepass");
        self.password = Some(password.to_owned());
        // Every normal client, this one included: the server closes them.
        let _ = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("normal")
            .exec_async(&mut c)
            .await;
    }

    async fn spawn(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--save")
            .arg("")
            .arg("--dir")
            .arg(&self.dir)
            .args(
                self.password
                    .iter()
                    .flat_map(|pw| ["--requirepass", pw.as_str()]),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if self.aof {
            cmd.arg("--appendonly")
                .arg("yes")
                .arg("--appendfsync")
                .arg("always");
        } else {
            cmd.arg("--appendonly").arg("no");
        }
        self.child = Some(cmd.spawn().expect("redis-server is on PATH"));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(client) = redis::Client::open(self.url()) {
                if let Ok(mut c) = client.get_multiplexed_async_connection().await {
                    if redis::cmd("PING")
                        .query_async::<String>(&mut c)
                        .await
                        .is_ok()
                    {
                        return;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on port {}",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills the server with SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and data directory.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
