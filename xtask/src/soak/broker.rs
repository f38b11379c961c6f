//! The soak's own broker instances, which it may kill and restart: a
//! `redis-server` with every write fsynced to its append-only file, and a
//! RabbitMQ node of its own. Both listen on free loopback ports and keep their
//! data in a directory of their own; neither touches the shared services.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A broker the soak started.
#[derive(Debug)]
pub(crate) enum Broker {
    /// A private `redis-server`.
    Redis(PrivateRedis),
    /// A private RabbitMQ node.
    Rabbit(PrivateRabbit),
}

impl Broker {
    /// The URL to reach it at, without query settings.
    pub(crate) fn url(&self) -> String {
        match self {
            Broker::Redis(r) => format!("redis://127.0.0.1:{}", r.port),
            Broker::Rabbit(r) => format!("amqp://guest:guest@127.0.0.1:{}/%2f", r.port),
        }
    }

    /// Kills it with SIGKILL and starts it again on the same port and data.
    pub(crate) fn restart(&mut self) -> Result<(), String> {
        match self {
            Broker::Redis(r) => {
                r.kill();
                r.spawn()
            }
            Broker::Rabbit(r) => {
                r.kill();
                r.spawn()
            }
        }
    }

    /// Stops it for good and removes its data.
    pub(crate) fn stop(&mut self) {
        match self {
            Broker::Redis(r) => r.kill(),
            Broker::Rabbit(r) => r.stop(),
        }
    }
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

fn listening(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
}

fn wait_listening(what: &str, port: u16, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    while !listening(port) {
        if Instant::now() > deadline {
            return Err(format!(
                "{what} did not listen on 127.0.0.1:{port} within {limit:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn data_dir(what: &str, port: u16) -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("jobsmith-soak-{what}-{port}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

/// A `redis-server` with `appendfsync always`.
#[derive(Debug)]
pub(crate) struct PrivateRedis {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl PrivateRedis {
    /// Starts one on a free port.
    pub(crate) fn start() -> Result<Broker, String> {
        let port = free_port()?;
        let mut r = PrivateRedis {
            port,
            dir: data_dir("redis", port)?,
            child: None,
        };
        r.spawn()?;
        Ok(Broker::Redis(r))
    }

    fn spawn(&mut self) -> Result<(), String> {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!("cannot start redis-server ({e}): install it with `apt-get install -y redis-server`")
            })?;
        self.child = Some(child);
        wait_listening(
            "the soak's redis-server",
            self.port,
            Duration::from_secs(30),
        )?;
        // Listening comes before the append-only file is loaded: wait for PING.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let pong = Command::new("redis-cli")
                .args(["-p", &self.port.to_string(), "PING"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).contains("PONG"))
                .unwrap_or(false);
            if pong {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err("the soak's redis-server did not answer PING within 60 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A RabbitMQ node of the soak's own, `jobsmith-soak-<port>@localhost`.
#[derive(Debug)]
pub(crate) struct PrivateRabbit {
    port: u16,
    node: String,
    dir: PathBuf,
}

impl PrivateRabbit {
    /// Starts one on a free port (its distribution port is a second free port).
    pub(crate) fn start() -> Result<Broker, String> {
        let port = free_port()?;
        let dir = data_dir("rabbitmq", port)?;
        // rabbitmq-server drops to the `rabbitmq` user when started as root.
        let _ = Command::new("chown")
            .args(["-R", "rabbitmq:rabbitmq"])
            .arg(&dir)
            .status();
        let r = PrivateRabbit {
            port,
            node: format!("jobsmith-soak-{port}@localhost"),
            dir,
        };
        r.spawn()?;
        Ok(Broker::Rabbit(r))
    }

    fn spawn(&self) -> Result<(), String> {
        let dist = free_port()?;
        let d = |name: &str| self.dir.join(name);
        Command::new("rabbitmq-server")
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", dist.to_string())
            .env("RABBITMQ_MNESIA_BASE", d("mnesia"))
            .env("RABBITMQ_LOG_BASE", d("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d("plugins"))
            .env("RABBITMQ_FEATURE_FLAGS_FILE", d("feature_flags"))
            .env("RABBITMQ_CONFIG_FILE", d("none"))
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", d("advanced.config"))
            .env("RABBITMQ_PID_FILE", d("pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start rabbitmq-server ({e}): install it with `apt-get install -y rabbitmq-server`"))?;
        wait_listening(
            &format!("the soak's RabbitMQ node {}", self.node),
            self.port,
            Duration::from_secs(120),
        )
    }

    fn pid(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.join("pid"))
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    }

    /// SIGKILLs the node's VM: no clean shutdown, as a crash would be.
    fn kill(&self) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while listening(self.port) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            // The VM can be gone before its port is released; give it a moment.
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    fn stop(&self) {
        let ok = Command::new("rabbitmqctl")
            .args(["-n", &self.node, "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            self.kill();
        }
    }
}

impl Drop for PrivateRabbit {
    fn drop(&mut self) {
        if listening(self.port) {
            self.stop();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
