//! Job counts by status, kept as records are written.

use quaero_shared::{JobStatus, Stats};

use super::ManagerRecord;

/// Status counts of every job, kept by the writer as it commits records (new status in,
/// previously stored status out), so stats are O(1) to read however many jobs exist.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub stats: Stats,
}

impl Counters {
    pub(crate) fn replace(&mut self, old: Option<JobStatus>, new: Option<JobStatus>) {
        if old == new {
            return;
        }
        if let Some(o) = old {
            self.stats.add(o, -1);
        }
        if let Some(n) = new {
            self.stats.add(n, 1);
        }
    }
}

/// Statuses of a manager and its steps, in order.
pub(crate) fn manager_statuses(m: &ManagerRecord) -> impl Iterator<Item = JobStatus> + '_ {
    std::iter::once(m.status).chain(m.steps.iter().map(|s| s.status))
}
