//! The Lua scripts, one per state move; each runs atomically on the server.
//!
//! Every script starts with `lua/common.lua` (key names and helpers) and
//! touches only the keys of one queue. Each bounds how much it does per call
//! and never `unpack`s a list, so a backlog of any size cannot make it fail.

use redis::Script;
use std::sync::OnceLock;

macro_rules! script {
    ($file:literal) => {
        concat!(
            include_str!("lua/common.lua"),
            "\n",
            include_str!(concat!("lua/", $file))
        )
    };
}

/// Most jobs, leases or ids handed to one script call.
pub(crate) const CHUNK: usize = 500;

/// Most due jobs or expired leases one script call moves back to ready.
pub(crate) const SETTLE_LIMIT: usize = 1000;

/// The scripts, loaded (hashed) once per process.
pub(crate) struct Scripts {
    pub(crate) enqueue: Script,
    pub(crate) reserve: Script,
    pub(crate) ack: Script,
    pub(crate) retry: Script,
    pub(crate) release: Script,
    pub(crate) bury: Script,
    pub(crate) expire: Script,
    pub(crate) extend: Script,
    pub(crate) dead_read: Script,
    pub(crate) requeue: Script,
    pub(crate) purge: Script,
    pub(crate) stats: Script,
    pub(crate) take: Script,
    pub(crate) remove: Script,
    pub(crate) import: Script,
    pub(crate) import_dead: Script,
    pub(crate) dead_delete: Script,
}

impl Scripts {
    pub(crate) fn get() -> &'static Scripts {
        static SCRIPTS: OnceLock<Scripts> = OnceLock::new();
        SCRIPTS.get_or_init(|| Scripts {
            enqueue: Script::new(script!("enqueue.lua")),
            reserve: Script::new(script!("reserve.lua")),
            ack: Script::new(script!("ack.lua")),
            retry: Script::new(script!("retry.lua")),
            release: Script::new(script!("release.lua")),
            bury: Script::new(script!("bury.lua")),
            expire: Script::new(script!("expire.lua")),
            extend: Script::new(script!("extend.lua")),
            dead_read: Script::new(script!("dead_read.lua")),
            requeue: Script::new(script!("requeue.lua")),
            purge: Script::new(script!("purge.lua")),
            stats: Script::new(script!("stats.lua")),
            take: Script::new(script!("take.lua")),
            remove: Script::new(script!("remove.lua")),
            import: Script::new(script!("import.lua")),
            import_dead: Script::new(script!("import_dead.lua")),
            dead_delete: Script::new(script!("dead_delete.lua")),
        })
    }
}
