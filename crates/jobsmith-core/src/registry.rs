//! Every job linked into the binary, registered at link time by `#[job]`,
//! and the `job` label of metrics, which only a registered name may take.

use crate::error::{Error, Result};
use crate::job::JobDef;
use std::collections::BTreeMap;
use std::sync::OnceLock;

/// A link-time registration; `#[job]` submits one per job.
#[derive(Debug)]
pub struct Registration(pub &'static JobDef);

inventory::collect!(Registration);

/// A set of jobs by name.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    jobs: BTreeMap<&'static str, &'static JobDef>,
}

impl Registry {
    /// Every job linked into this binary. Built once; an error if two jobs share a name.
    pub fn global() -> Result<&'static Registry> {
        static GLOBAL: OnceLock<std::result::Result<Registry, (String, String, String)>> =
            OnceLock::new();
        let built = GLOBAL.get_or_init(|| {
            Registry::from_defs(inventory::iter::<Registration>.into_iter().map(|r| r.0)).map_err(
                |e| match e {
                    Error::DuplicateJob {
                        name,
                        first,
                        second,
                    } => (name, first, second),
                    _ => unreachable!("from_defs fails only on duplicates"),
                },
            )
        });
        built
            .as_ref()
            .map_err(|(name, first, second)| Error::DuplicateJob {
                name: name.clone(),
                first: first.clone(),
                second: second.clone(),
            })
    }

    /// A registry of exactly these jobs; an error naming both if two share a name.
    pub fn from_defs(defs: impl IntoIterator<Item = &'static JobDef>) -> Result<Self> {
        let mut jobs: BTreeMap<&'static str, &'static JobDef> = BTreeMap::new();
        for def in defs {
            if let Some(prev) = jobs.insert(def.name, def) {
                let (first, second) = if prev.location <= def.location {
                    (prev.location, def.location)
                } else {
                    (def.location, prev.location)
                };
                return Err(Error::DuplicateJob {
                    name: def.name.to_owned(),
                    first: first.to_owned(),
                    second: second.to_owned(),
                });
            }
        }
        Ok(Self { jobs })
    }

    /// The registered name equal to `name`, if a job is registered under it:
    /// a label value that stays within the set of registered names.
    pub(crate) fn registered_name(&self, name: &str) -> Option<&'static str> {
        self.jobs.get(name).map(|def| def.name)
    }

    /// The job called `name`, or an error listing the known names.
    pub fn get(&self, name: &str) -> Result<&'static JobDef> {
        self.jobs
            .get(name)
            .copied()
            .ok_or_else(|| Error::UnknownJob {
                name: name.to_owned(),
                known: self.known(),
            })
    }

    /// The registered names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.jobs.keys().copied()
    }

    /// The registered jobs, sorted by name.
    pub fn defs(&self) -> impl Iterator<Item = &'static JobDef> + '_ {
        self.jobs.values().copied()
    }

    /// How many jobs are registered.
    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    /// Whether no job is registered.
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    fn known(&self) -> String {
        if self.jobs.is_empty() {
            "none (is the crate that defines them linked? add `use your_jobs_crate as _;`)"
                .to_owned()
        } else {
            self.names().collect::<Vec<_>>().join(", ")
        }
    }
}

/// The `job` label of a job whose name is not registered in the process
/// that counts it.
pub(crate) const UNREGISTERED: &str = "unregistered";

/// Counts one job of `queue` that a backend dropped unrun because its TTL
/// had passed, in `jobsmith_jobs_expired_total{queue, job}`: the series the
/// worker counts the jobs it expires itself in (through
/// [`Outcome::Expire`](crate::Outcome::Expire), which therefore does not call
/// this). A backend calls it for each job it drops on its own, at reserve or
/// when it finds one, with the envelope's `job`; a name not registered in
/// this process is labelled `unregistered`, so that foreign payloads cannot
/// grow the series without bound.
pub fn count_expired(queue: &str, job: &str) {
    let job = Registry::global()
        .ok()
        .and_then(|r| r.registered_name(job))
        .unwrap_or(UNREGISTERED);
    metrics::counter!("jobsmith_jobs_expired_total", "queue" => queue.to_owned(), "job" => job)
        .increment(1);
}
