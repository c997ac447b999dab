//! The key codec: big-endian numbers, so that sled's byte order is numeric order.

use quaero_shared::JobPath;

pub(crate) fn manager_key(mgr: u64) -> [u8; 8] {
    mgr.to_be_bytes()
}

pub(crate) fn scope_key(mgr: u64, step: u32) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..8].copy_from_slice(&mgr.to_be_bytes());
    k[8..].copy_from_slice(&step.to_be_bytes());
    k
}

pub(crate) fn block_key(mgr: u64, step: u32, first_seq: u64) -> [u8; 20] {
    let mut k = [0u8; 20];
    k[..12].copy_from_slice(&scope_key(mgr, step));
    k[12..].copy_from_slice(&first_seq.to_be_bytes());
    k
}

pub(crate) fn child_key(p: JobPath) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..12].copy_from_slice(&scope_key(p.manager, p.step));
    k[12..].copy_from_slice(&p.child.to_be_bytes());
    k
}
