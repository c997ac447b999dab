//! Per-scope change numbers for caches of read results.

use std::collections::HashMap;

use quaero_shared::JobPath;

/// When each scope's events last changed, for caches of read results: per live manager,
/// per step (0: the manager's own events), the highest seq handed out by the commit that
/// last added (or trimmed) events of that step, and the same for any scope of the manager.
/// The writer updates it after applying a batch and before announcing it.
///
/// Finished and deleted managers are forgotten, so it holds live jobs only: a scope it has
/// no entry for reads as `floor`, the writer's position when a manager was last forgotten,
/// which is at or above that scope's last change. (A page kept from before a forgotten
/// manager's last change has a lower version and is read again; one read after it is
/// served while nothing changes, and a finished job's events do not change.)
#[derive(Debug, Default)]
pub(crate) struct Versions {
    managers: HashMap<u64, ManagerVersions>,
    floor: u64,
}

#[derive(Debug, Default)]
struct ManagerVersions {
    any: u64,
    steps: HashMap<u32, u64>,
}

impl Versions {
    pub(crate) fn changed(&mut self, scope: JobPath, version: u64) {
        let m = self.managers.entry(scope.manager).or_default();
        m.any = version;
        m.steps.insert(scope.step, version);
    }

    /// `now`: the highest seq handed out so far.
    pub(crate) fn forget(&mut self, mgr: u64, now: u64) {
        self.managers.remove(&mgr);
        self.floor = self.floor.max(now);
    }

    pub(crate) fn get(&self, path: JobPath) -> u64 {
        let Some(m) = self.managers.get(&path.manager) else { return self.floor };
        if path.step == 0 { m.any } else { m.steps.get(&path.step).copied().unwrap_or(self.floor) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the page cache relies on: a page kept at the version read before it moves
    /// past that version with every later change of its scope, also when the change comes
    /// with the manager's end (and the manager is forgotten in the same commit).
    #[test]
    fn a_kept_page_is_outdated_by_every_later_change() {
        let mut v = Versions::default();
        let (s1, s2) = (JobPath::step(1, 1), JobPath::step(1, 2));
        assert_eq!(v.get(s1), 0);
        v.changed(s1, 10);
        let kept = v.get(s1);
        assert_eq!((kept, v.get(JobPath::manager(1)), v.get(JobPath::child(1, 1, 7))), (10, 10, 10));
        v.changed(s2, 15);
        assert_eq!(v.get(s1), kept, "another step's events leave this page current");
        assert_eq!(v.get(JobPath::manager(1)), 15, "the manager's page covers all its steps");
        // The last events and the end of the manager in one commit.
        v.changed(s1, 20);
        v.forget(1, 20);
        assert!(v.get(s1) > kept && v.get(JobPath::manager(1)) > 15);
        let reread = v.get(s1);
        // Other managers ending only ever move it up (one more read), never back.
        v.changed(JobPath::step(2, 1), 30);
        v.forget(2, 30);
        assert!(v.get(s1) >= reread);
        assert!(v.managers.is_empty(), "finished managers are not kept");
    }
}
