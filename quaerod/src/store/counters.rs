//! What job counts are made of.

use quaero_shared::JobStatus;

use super::ManagerRecord;

/// Statuses of a manager and its steps, in order: each is one job of the counts.
pub(crate) fn manager_statuses(m: &ManagerRecord) -> impl Iterator<Item = JobStatus> + '_ {
    std::iter::once(m.status).chain(m.steps.iter().map(|s| s.status))
}
