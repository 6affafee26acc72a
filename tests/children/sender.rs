//! `sender COUNT SIZE`: posts COUNT messages of SIZE bytes (at least 8) and returns from `main`
//! at once, to show that messages still queued at exit are flushed, not lost.
//!
//! Message `seq` (from 0) holds `seq` as a little-endian `u64` in its first 8 bytes, then the
//! bytes of [`pattern`]`(seq, i)` — the integration tests check both.

use utility_process::parent_port;

/// Byte `i` (counted from the start of the message, `i >= 8`) of message `seq`.
fn pattern(seq: u64, i: usize) -> u8 {
    (seq as usize).wrapping_mul(31).wrapping_add(i) as u8
}

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<u64>().ok());
    let (Some(Some(count)), Some(Some(size))) = (args.next(), args.next()) else {
        panic!("usage: sender COUNT SIZE");
    };
    let size = usize::try_from(size).expect("SIZE fits in memory").max(8);
    let port = parent_port().expect("started by fork");
    let mut message = vec![0u8; size];
    for seq in 0..count {
        message[..8].copy_from_slice(&seq.to_le_bytes());
        for (i, byte) in message.iter_mut().enumerate().skip(8) {
            *byte = pattern(seq, i);
        }
        port.post_bytes(&message).expect("post");
    }
}
