//! The command line, as clap parses it.

use clap::{Args, Parser, Subcommand};

/// Operate jobsmith queues on any backend: stats, dead letters, enqueue by name, migrate.
#[derive(Debug, Parser)]
#[command(name = "jobsmith", version)]
pub struct Cli {
    /// The backend: redis://…, amqp://…, sqs://…, memory://
    #[arg(long, env = "JOBSMITH_URL", global = true, hide_env_values = true)]
    pub url: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Per queue: ready, scheduled, in flight, dead, oldest ready age, processed and failed rates.
    Stats(StatsArgs),
    /// Review and replay dead-lettered jobs.
    #[command(subcommand)]
    Dead(DeadCommand),
    /// Enqueue a job by name, with the defaults and the argument schema its
    /// workers published (an unknown name is refused unless --force).
    Enqueue(EnqueueArgs),
    /// Move ready, scheduled and dead jobs from one backend to another.
    Migrate(MigrateArgs),
    /// Periodic schedules: each one's next and previous fire times and the
    /// id of the last job it enqueued, as the workers recorded them.
    Schedules,
    /// Event subscriptions, as the workers registered them: list them, or remove one.
    Subscriptions {
        /// `remove JOB`; without it, the list.
        #[command(subcommand)]
        command: Option<SubscriptionsCommand>,
    },
    /// Publish an event by name: one job for each subscription it matches.
    Publish(PublishArgs),
}

/// `jobsmith subscriptions …`.
#[derive(Debug, Subcommand)]
pub enum SubscriptionsCommand {
    /// Remove the subscription of a job: publishes stop reaching it within a
    /// second; its jobs already queued stay. A worker that runs the job
    /// registers it again when it starts.
    Remove {
        /// The subscribing job's name, as the list shows it.
        job: String,
    },
}

/// `jobsmith publish`.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The event's name, such as `user.signed_up`.
    pub name: String,
    /// The event's payload as JSON, as the event type serializes, e.g. `{"user_id": 7}`.
    #[arg(value_name = "JSON")]
    pub payload: String,
    /// Publish under this event id (to try again a publish whose answer was
    /// lost: no subscription gets a second job); a new id by default.
    #[arg(long, value_name = "ID")]
    pub id: Option<String>,
}

/// `jobsmith stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Only these queues (repeat the flag); all known queues by default.
    #[arg(long = "queue", short = 'q', value_name = "QUEUE")]
    pub queues: Vec<String>,
    /// Refresh every SECS seconds (2 by default) until interrupted.
    #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "2")]
    pub watch: Option<f64>,
}

/// Which dead jobs a `dead` command acts on.
#[derive(Debug, Args, Clone, Default)]
pub struct DeadFilter {
    /// Only these queues (repeat the flag); all known queues by default.
    #[arg(long = "queue", short = 'q', value_name = "QUEUE")]
    pub queues: Vec<String>,
    /// Only jobs with this job name.
    #[arg(long = "job", value_name = "NAME")]
    pub job: Option<String>,
    /// Only jobs that died longer ago than this (`1h`, `7d`).
    #[arg(long, value_name = "AGE")]
    pub older_than: Option<String>,
    /// Only jobs that died less long ago than this (`30m`).
    #[arg(long, value_name = "AGE")]
    pub newer_than: Option<String>,
}

/// `jobsmith dead …`.
#[derive(Debug, Subcommand)]
pub enum DeadCommand {
    /// List dead jobs, newest first.
    List {
        /// Which jobs.
        #[command(flatten)]
        filter: DeadFilter,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Print one dead job: why it died and its whole envelope.
    Show {
        /// The job id.
        id: String,
        /// The queue to look in; all known queues by default.
        #[arg(long = "queue", short = 'q')]
        queue: Option<String>,
    },
    /// Put dead jobs back in their queues, ready now, attempts reset.
    Retry {
        /// These job ids…
        ids: Vec<String>,
        /// …or every dead job the filters match.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        /// Which jobs (with --all, or to narrow the ids).
        #[command(flatten)]
        filter: DeadFilter,
    },
    /// Delete dead jobs for good.
    Purge {
        /// These job ids…
        ids: Vec<String>,
        /// …or every dead job the filters match.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        /// Which jobs (with --all, or to narrow the ids).
        #[command(flatten)]
        filter: DeadFilter,
    },
}

/// `jobsmith enqueue`.
#[derive(Debug, Args)]
pub struct EnqueueArgs {
    /// The job's registered name (the fn name, or its `name = "..."`).
    pub name: String,
    /// The arguments as a JSON object keyed by parameter name, e.g. `{"user_id": 7}`.
    #[arg(long, value_name = "JSON", default_value = "{}")]
    pub args: String,
    /// The queue; by default the job's own, from the record its workers publish.
    #[arg(long, short = 'q')]
    pub queue: Option<String>,
    /// When to run: RFC 3339 (`2026-11-29T18:00:00Z`) or from now (`+10m`, `in 2h`).
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// Priority: higher runs first; by default the job's own.
    #[arg(long, allow_negative_numbers = true)]
    pub priority: Option<i32>,
    /// Idempotency key: an equal key already queued, running or recently done makes this a no-op.
    #[arg(long, value_name = "KEY")]
    pub key: Option<String>,
    /// Attempts allowed in all; by default the job's own `retries` + 1.
    #[arg(long)]
    pub max_attempts: Option<u32>,
    /// Drop the job unrun if it has not started within this long (`1h`); by
    /// default the job's own `ttl`.
    #[arg(long, value_name = "AGE")]
    pub ttl: Option<String>,
    /// Enqueue without the published record's checks: a job no worker has
    /// published (queue `default`, 4 attempts, unless given), or arguments
    /// that do not fit its parameters.
    #[arg(long)]
    pub force: bool,
}

/// `jobsmith migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The backend to move jobs out of.
    #[arg(long, value_name = "URL")]
    pub from: String,
    /// The backend to move jobs into.
    #[arg(long, value_name = "URL")]
    pub to: String,
    /// Only these queues (comma-separated or repeated); all of the source's by default.
    #[arg(long, value_delimiter = ',', value_name = "QUEUE")]
    pub queues: Vec<String>,
    /// Count what would move, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Jobs per page: taken, copied, then deleted together.
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// How long a page stays held in the source; a killed run's page comes
    /// back after this long (`30s`, `5m`).
    #[arg(long, default_value = "60s", value_name = "AGE")]
    pub hold: String,
}
