//! Named queues: each has its own worker slots (`[queue] concurrency` for `default`,
//! `[queues.<name>] concurrency` for the others). A unit of work (a step without children,
//! or a child) takes a slot of its run's queue while it runs. A paused queue starts nothing
//! new: a run on it stays pending, and no unit takes a slot until it resumes; what runs
//! goes on. Within a queue, a unit of a run with a higher `priority` gets the next free
//! slot first; units of one priority get slots in the order they asked.

use std::collections::{BinaryHeap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quaero_shared::QueueInfo;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The queue every run without a `queue` goes to; it always exists.
pub const DEFAULT: &str = "default";

pub struct Queue {
    pub name: String,
    pub concurrency: usize,
    slots: Arc<Slots>,
    paused: watch::Sender<bool>,
    /// Runs and units waiting on this queue (for it to resume, or for a slot).
    waiting: AtomicU64,
    /// When units ended, for the last minute.
    ended: Mutex<VecDeque<Instant>>,
}

/// Counts a waiter for as long as it waits.
struct Waiting<'a>(&'a AtomicU64);

impl<'a> Waiting<'a> {
    fn new(n: &'a AtomicU64) -> Self {
        n.fetch_add(1, Ordering::Relaxed);
        Waiting(n)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Queue {
    pub fn new(name: &str, concurrency: usize, paused: bool) -> Arc<Queue> {
        Arc::new(Queue {
            name: name.to_string(),
            concurrency,
            slots: Arc::new(Slots {
                state: Mutex::new(SlotState { free: concurrency, waiters: BinaryHeap::new(), seq: 0, paused }),
            }),
            paused: watch::Sender::new(paused),
            waiting: AtomicU64::new(0),
            ended: Mutex::new(VecDeque::new()),
        })
    }

    pub fn is_paused(&self) -> bool {
        *self.paused.borrow()
    }

    pub fn set_paused(&self, paused: bool) {
        self.slots.set_paused(paused);
        self.paused.send_replace(paused);
    }

    /// Waits while the queue is paused (counted as pending); false when cancelled first.
    pub async fn until_resumed(&self, cancel: &CancellationToken) -> bool {
        if !self.is_paused() {
            return true;
        }
        let _w = Waiting::new(&self.waiting);
        self.resumed(cancel).await
    }

    async fn resumed(&self, cancel: &CancellationToken) -> bool {
        let mut rx = self.paused.subscribe();
        tokio::select! {
            r = rx.wait_for(|p| !*p) => r.is_ok(),
            _ = cancel.cancelled() => false,
        }
    }

    /// A worker slot, once the queue is not paused and one is free; None when cancelled
    /// first. A unit that gets one gives it back by dropping it. Units wait in one line,
    /// by priority then order of asking, also while the queue is paused.
    pub async fn slot(&self, priority: i32, cancel: &CancellationToken) -> Option<Slot> {
        let _w = Waiting::new(&self.waiting);
        tokio::select! {
            p = self.slots.acquire(priority) => Some(p),
            _ = cancel.cancelled() => None,
        }
    }

    /// A unit of work ended (whatever its outcome).
    pub fn unit_ended(&self) {
        let now = Instant::now();
        let mut e = self.ended.lock().expect("ended");
        e.push_back(now);
        Self::prune(&mut e, now);
    }

    fn prune(e: &mut VecDeque<Instant>, now: Instant) {
        while e.front().is_some_and(|t| now.duration_since(*t) > Duration::from_secs(60)) {
            e.pop_front();
        }
    }

    /// Units running now.
    pub fn running(&self) -> u64 {
        self.concurrency.saturating_sub(self.slots.free()) as u64
    }

    pub fn info(&self) -> QueueInfo {
        let completed_last_minute = {
            let mut e = self.ended.lock().expect("ended");
            Self::prune(&mut e, Instant::now());
            e.len() as u64
        };
        QueueInfo {
            name: self.name.clone(),
            concurrency: self.concurrency as u64,
            paused: self.is_paused(),
            // A unit waiting inside `slot` for a resume counts once.
            pending: self.waiting.load(Ordering::Relaxed),
            running: self.running(),
            completed_last_minute,
        }
    }
}

/// Worker slots handed out by priority, then in order of asking.
struct Slots {
    state: Mutex<SlotState>,
}

struct SlotState {
    free: usize,
    /// While paused, no slot is handed out: a slot given back stays free.
    paused: bool,
    waiters: BinaryHeap<Waiter>,
    /// Order of asking, so that equal priorities are served first come, first served.
    seq: u64,
}

struct Waiter {
    priority: i32,
    seq: u64,
    tx: oneshot::Sender<()>,
}

impl PartialEq for Waiter {
    fn eq(&self, o: &Self) -> bool {
        (self.priority, self.seq) == (o.priority, o.seq)
    }
}
impl Eq for Waiter {}
impl PartialOrd for Waiter {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Waiter {
    /// The heap's greatest first: the highest priority, then the earliest asked.
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.priority.cmp(&o.priority).then(o.seq.cmp(&self.seq))
    }
}

/// A worker slot; given back when dropped.
pub struct Slot {
    slots: Arc<Slots>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.release();
    }
}

/// A wait for a slot: if it is dropped after a slot was handed to it but before it was
/// taken, the slot goes back.
struct Asking {
    rx: oneshot::Receiver<()>,
    slots: Arc<Slots>,
    taken: bool,
}

impl Drop for Asking {
    fn drop(&mut self) {
        if self.taken {
            return;
        }
        // Closed first: a `release` racing with this drop then finds the waiter gone and
        // hands the slot on, rather than sending it into a receiver about to be dropped.
        self.rx.close();
        if self.rx.try_recv().is_ok() {
            self.slots.release();
        }
    }
}

impl Slots {
    fn free(&self) -> usize {
        self.state.lock().expect("slots").free
    }

    async fn acquire(self: &Arc<Self>, priority: i32) -> Slot {
        let rx = {
            let mut st = self.state.lock().expect("slots");
            if st.free > 0 && !st.paused && st.waiters.is_empty() {
                st.free -= 1;
                return Slot { slots: self.clone() };
            }
            let (tx, rx) = oneshot::channel();
            st.seq += 1;
            let seq = st.seq;
            st.waiters.push(Waiter { priority, seq, tx });
            rx
        };
        let mut asking = Asking { rx, slots: self.clone(), taken: false };
        // The sender is only dropped after a send or with the whole `Slots`.
        let _ = (&mut asking.rx).await;
        asking.taken = true;
        Slot { slots: self.clone() }
    }

    /// A slot comes back: to the first waiter still waiting, else to the free ones.
    fn release(&self) {
        let mut st = self.state.lock().expect("slots");
        st.free += 1;
        Self::hand_out(&mut st);
    }

    /// Gives free slots to the first waiters, unless paused.
    fn hand_out(st: &mut SlotState) {
        while st.free > 0 && !st.paused {
            let Some(w) = st.waiters.pop() else { return };
            if w.tx.send(()).is_ok() {
                st.free -= 1;
            }
        }
    }

    fn set_paused(&self, paused: bool) {
        let mut st = self.state.lock().expect("slots");
        st.paused = paused;
        Self::hand_out(&mut st);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_free_slot_goes_to_the_highest_priority_then_the_first_to_ask() {
        let q = Queue::new("batch", 1, false);
        let cancel = CancellationToken::new();
        let held = q.slot(0, &cancel).await.unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (name, prio) in [("low-1", 0), ("high", 5), ("low-2", 0), ("gone", 9), ("mid", 2)] {
            let (q, c, order) = (q.clone(), cancel.clone(), order.clone());
            let c = if name == "gone" { CancellationToken::new() } else { c };
            let gone = c.clone();
            tasks.push(tokio::spawn(async move {
                let s = q.slot(prio, &c).await;
                if s.is_some() {
                    order.lock().unwrap().push(name);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }));
            tokio::time::sleep(Duration::from_millis(10)).await;
            if name == "gone" {
                gone.cancel();
            }
        }
        drop(held);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), ["high", "mid", "low-1", "low-2"], "a cancelled waiter takes no slot");
        assert_eq!(q.info().running, 0, "every slot came back");
    }

    #[tokio::test(start_paused = true)]
    async fn priority_holds_across_a_pause_and_a_cancelled_waiter_loses_no_slot() {
        let q = Queue::new("batch", 1, true);
        let cancel = CancellationToken::new();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (name, prio) in [("low", 0), ("gone", 7), ("high", 5)] {
            let (q, order) = (q.clone(), order.clone());
            let c = if name == "gone" { CancellationToken::new() } else { cancel.clone() };
            let gone = c.clone();
            tasks.push(tokio::spawn(async move {
                if q.slot(prio, &c).await.is_some() {
                    order.lock().unwrap().push(name);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }));
            tokio::time::sleep(Duration::from_millis(10)).await;
            if name == "gone" {
                gone.cancel();
            }
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(order.lock().unwrap().is_empty(), "nothing while paused");
        assert_eq!(q.info().pending, 2);
        q.set_paused(false);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), ["high", "low"], "the higher priority first, though it asked later");
        assert_eq!(q.info().running, 0);
        // The slot is still there.
        assert!(q.slot(0, &cancel).await.is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_paused_queue_gives_no_slot_until_it_resumes() {
        let q = Queue::new("batch", 1, true);
        let cancel = CancellationToken::new();
        let waiter = {
            let (q, c) = (q.clone(), cancel.clone());
            tokio::spawn(async move { q.slot(0, &c).await.is_some() })
        };
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!waiter.is_finished(), "no slot while paused");
        assert_eq!(q.info().pending, 1);
        q.set_paused(false);
        assert!(waiter.await.unwrap());
        assert_eq!((q.info().pending, q.info().running), (0, 0), "the slot was dropped with the task");

        let held = q.slot(0, &cancel).await.unwrap();
        assert_eq!(q.info().running, 1);
        let blocked = {
            let (q, c) = (q.clone(), cancel.clone());
            tokio::spawn(async move { q.slot(0, &c).await.is_some() })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        cancel.cancel();
        assert!(!blocked.await.unwrap(), "cancelled while waiting for a slot");
        drop(held);
        q.unit_ended();
        assert_eq!(q.info().completed_last_minute, 1);
        tokio::time::sleep(Duration::from_secs(61)).await;
        assert_eq!(q.info().completed_last_minute, 0);
    }
}
