//! Recognising a shared buffer by what it shows, where the kernel gives shared memory no
//! identity: on macOS, `fstat` of a POSIX shared memory object reports neither device nor
//! inode (`pshm_stat` in XNU's `bsd/kern/posix_shm.c` fills in mode, owner and size only).
//!
//! A buffer that comes back to a `BufferPool` arrives as a descriptor, mapped afresh
//! (`back`); the pool holds the mappings it parked when its buffers went away. Two shared
//! mappings of the same memory see each other's writes at once, so [`find`] writes a random
//! value into `back` and looks for the parked mapping that shows it; then it puts `back`'s
//! bytes back as they were. The value is 64 random bits (written in several rounds into a
//! buffer shorter than 8 bytes), so another parked buffer that its holder happens to be
//! writing at that moment shows it by chance once in 2^64.
//!
//! What a hostile peer can do: one that holds two of a pool's buffers can copy the value from
//! the one it sends back into the other in the moment between the write and the read, and so
//! get the other recognised (or, if both show it, neither). The pool makes that harmless: on
//! recognising a buffer it goes on with its own parked mapping *and descriptor* and drops
//! what came back, so the memory it reuses is always memory it made or adopted; the peer only
//! gets one of the buffers it was lent counted as returned, which it could write to anyway.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{fence, Ordering};

use super::mapping::Mapping;

/// How many random bits a mapping must show to be recognised.
const EVIDENCE_BITS: usize = 64;

/// Which of `parked` maps the same memory as `back` (a writable mapping of a buffer that has
/// just come back), by its position among them: the one mapping of `back`'s length that shows
/// every value written into `back`. `None` when none does, when more than one does (a peer
/// copying values around), or when `back` is empty or read-only. `back`'s bytes are as they
/// were when this returns.
pub(crate) fn find<'a>(
    back: &mut Mapping,
    parked: impl Iterator<Item = &'a Mapping>,
) -> Option<usize> {
    let len = back.as_slice().len();
    let width = len.min(8);
    let target = back.as_mut_slice().filter(|_| width > 0)?.as_mut_ptr();
    let mut candidates: Vec<(usize, *const u8)> = parked
        .enumerate()
        .filter(|(_, map)| map.as_slice().len() == len)
        .map(|(at, map)| (at, map.as_slice().as_ptr()))
        .collect();
    if candidates.is_empty() {
        return None;
    }
    let random = RandomState::new();
    let mask = u64::MAX >> (64 - 8 * width);
    // SAFETY: (here and for every `load` and `store` below) `target` points at the first
    // `width` ≤ `len` bytes of `back`, a live writable mapping borrowed mutably for this call,
    // and every candidate at the first `width` bytes of a live mapping of the same length
    // borrowed for this call. Other processes may write the same memory at any time, hence
    // volatile accesses of plain bytes, for which any value is valid.
    let saved = unsafe { load(target, width) };
    let mut shown = saved;
    let (mut evidence, mut draws) = (0, 0u64);
    while evidence < EVIDENCE_BITS && !candidates.is_empty() {
        let value = loop {
            draws += 1;
            let value = random.hash_one(draws) & mask;
            if value != shown {
                break value;
            }
        };
        // SAFETY: see `saved`.
        unsafe { store(target, width, value) };
        // The write through one address before the reads through others, on every CPU.
        fence(Ordering::SeqCst);
        // SAFETY: see `saved`.
        candidates.retain(|&(_, at)| unsafe { load(at, width) } == value);
        shown = value;
        evidence += 8 * width;
    }
    // SAFETY: see `saved`.
    unsafe { store(target, width, saved) };
    match candidates[..] {
        [(at, _)] => Some(at),
        _ => None,
    }
}

/// The `width` (≤ 8) bytes at `at`, little-endian.
///
/// # Safety
///
/// `at` points at `width` readable bytes.
unsafe fn load(at: *const u8, width: usize) -> u64 {
    (0..width).fold(0, |value, i| {
        // SAFETY: within the `width` bytes the caller vouches for.
        value | u64::from(unsafe { at.add(i).read_volatile() }) << (8 * i)
    })
}

/// Writes the low `width` (≤ 8) bytes of `value` at `at`, little-endian.
///
/// # Safety
///
/// `at` points at `width` writable bytes.
unsafe fn store(at: *mut u8, width: usize, value: u64) {
    for i in 0..width {
        // SAFETY: within the `width` bytes the caller vouches for.
        unsafe { at.add(i).write_volatile((value >> (8 * i)) as u8) };
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::{AsFd, OwnedFd};
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    use super::*;
    use crate::sys::shm;

    /// A new buffer of `len` bytes filled with `byte`, and its descriptor to map again.
    fn buffer(len: usize, byte: u8) -> (OwnedFd, Mapping) {
        let fd = shm::create(len).unwrap();
        let mut map = Mapping::new(fd.as_fd(), len, true, false).unwrap();
        if let Some(bytes) = map.as_mut_slice() {
            bytes.fill(byte);
        }
        (fd, map)
    }

    /// Another mapping of the same memory, as a buffer that came back is mapped.
    fn again(fd: &OwnedFd, len: usize) -> Mapping {
        Mapping::new(fd.as_fd(), len, true, false).unwrap()
    }

    #[test]
    fn the_parked_mapping_of_the_same_memory_is_found_among_others() {
        for len in [4096, 1 << 20, 8, 3, 1] {
            let parked: Vec<_> = (0..5u8).map(|byte| buffer(len, byte)).collect();
            let mut back = again(&parked[3].0, len);
            let maps = parked.iter().map(|(_, map)| map);
            assert_eq!(find(&mut back, maps), Some(3), "{len} bytes");
        }
    }

    #[test]
    fn the_bytes_are_as_they_were_after_looking() {
        let (fd, parked) = buffer(4096, 0xA5);
        let mut back = again(&fd, 4096);
        assert_eq!(find(&mut back, [&parked].into_iter()), Some(0));
        assert!(back.as_slice().iter().all(|&b| b == 0xA5));
        let (_, other) = buffer(4096, 0x3C);
        let mut stranger = buffer(4096, 0x77).1;
        assert_eq!(find(&mut stranger, [&other].into_iter()), None);
        assert!(stranger.as_slice().iter().all(|&b| b == 0x77));
        assert!(other.as_slice().iter().all(|&b| b == 0x3C));
    }

    #[test]
    fn memory_with_the_same_bytes_is_not_the_same_memory() {
        let parked: Vec<_> = (0..3).map(|_| buffer(4096, 0)).collect();
        let mut lookalike = buffer(4096, 0).1;
        assert_eq!(
            find(&mut lookalike, parked.iter().map(|(_, map)| map)),
            None
        );
    }

    #[test]
    fn only_a_mapping_of_the_same_length_is_a_candidate() {
        let (fd, _) = buffer(8192, 1);
        let shorter = Mapping::new(fd.as_fd(), 4096, true, false).unwrap();
        let mut back = again(&fd, 8192);
        assert_eq!(find(&mut back, [&shorter].into_iter()), None);
    }

    #[test]
    fn an_empty_or_read_only_buffer_is_never_recognised() {
        let (fd, parked) = buffer(0, 0);
        assert_eq!(find(&mut again(&fd, 0), [&parked].into_iter()), None);
        let (fd, parked) = buffer(4096, 0);
        let mut read_only = Mapping::new(fd.as_fd(), 4096, false, false).unwrap();
        assert_eq!(find(&mut read_only, [&parked].into_iter()), None);
    }

    /// Runs `find` for the buffer `sent` 1000 times among `[other, sent]` while a thread keeps
    /// writing `other` with `write(sent's first 8 bytes, round)`, and counts the answers:
    /// `[sent, other, none]`.
    fn find_while_writing(write: fn(u64, u64) -> u64) -> [usize; 3] {
        let (sent_fd, sent) = buffer(4096, 0);
        let (other_fd, other) = buffer(4096, 0);
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (from, mut to) = (again(&sent_fd, 4096), again(&other_fd, 4096));
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let target = to.as_mut_slice().unwrap().as_mut_ptr();
                let mut round = 0;
                while !stop.load(Ordering::Relaxed) {
                    round += 1;
                    // SAFETY: both mappings are this thread's own, 4096 bytes each.
                    unsafe { store(target, 8, write(load(from.as_slice().as_ptr(), 8), round)) };
                }
            })
        };
        let mut answers = [0; 3];
        for _ in 0..1000 {
            let mut back = again(&sent_fd, 4096);
            answers[match find(&mut back, [&other, &sent].into_iter()) {
                Some(1) => 0,
                Some(_) => 1,
                None => 2,
            }] += 1;
            assert!(sent.as_slice().iter().all(|&b| b == 0), "restored");
        }
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
        answers
    }

    /// The holder of another buffer writing it all the time (here a counter, and the values
    /// a predictable probe would pick) does not make it look like the buffer that came back.
    #[test]
    fn a_buffer_written_elsewhere_meanwhile_is_not_mistaken_for_the_one_that_came_back() {
        assert_eq!(find_while_writing(|_, round| round), [1000, 0, 0]);
        assert_eq!(find_while_writing(|_, round| round % 3), [1000, 0, 0]);
    }

    /// A peer that copies the first bytes of the buffer it sent back into another one it holds
    /// can get the other recognised, or neither; the bytes of the one sent back are restored
    /// each time. (The pool then goes on with its own mapping and descriptor: see the module
    /// documentation.)
    #[test]
    fn a_peer_copying_the_probe_around_gets_at_most_its_own_buffers_confused() {
        find_while_writing(|value, _| value);
    }
}
