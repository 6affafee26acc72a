//! [`BufferPool`]: shared buffers reused across messages instead of made, mapped and unmapped
//! for each one.
//!
//! # Why
//!
//! A [`SharedBuffer`] copies nothing, yet a fresh one is not free: the kernel allocates and
//! zeroes every page of the memfd, maps it in each process, then tears all of that down
//! again. For 64 MiB on a 2-vCPU VM that is ~3 ms to allocate and zero 32 huge pages (11 ms
//! for 16,384 small ones where the kernel refuses huge pages), around a 2 ms fill and a
//! 2.5 ms read: a new buffer per message runs at about half the speed of memcpy, a reused
//! one close to it.
//!
//! A pool keeps the memory *and the mappings*. Its buffers are writable (a frozen buffer is
//! sealed for good and cannot be written again), and they go back and forth: the owner takes
//! one, fills it and sends it; the receiver [`adopt`](BufferPool::adopt)s it, reads it and
//! sends it back; the owner [`put`](BufferPool::put)s it back for the next
//! [`take`](BufferPool::take). Sending a pooled buffer does not unmap it: the sender's
//! mapping is *parked* in the pool, where no code can reach it, and when the same memory comes
//! back the parked mapping is used again. A round trip then costs two descriptors, two `fstat`s
//! and two tiny mappings; filling and reading cost what touching the memory costs.
//!
//! The same memory is recognised by the memfd's inode on Linux, by the kernel's comparison
//! of two handles on Windows, and on macOS, where a shared memory object has neither, by
//! what it shows: a random value written into the buffer that came back appears in the
//! parked mapping of the same memory (`sys/unix/probe.rs`; the value is removed at once).
//! The parked mapping keeps the memory alive. Once recognised, the pool goes on with the
//! mapping *and descriptor* it parked and drops those that came back, so whatever a peer
//! sends, the memory a pool reuses is memory it made or adopted.
//!
//! # What stays true
//!
//! - A frozen buffer never changes, whoever held its memory before: freezing a buffer that
//!   another process still maps writable fails (`EBUSY`) instead of returning a buffer that
//!   could change. So a frozen buffer is never a pool's, and freezing one of a pool's takes
//!   it out of the pool for good. On Windows and macOS, which have no seal, a buffer that was
//!   lent (or arrived writable) cannot be frozen at all (`PermissionDenied`).
//! - A pool takes back only what it made: [`put`](BufferPool::put) refuses a buffer that this
//!   pool did not hand out (another process's memfd, or a buffer the pool has forgotten), so a
//!   peer cannot slip memory of its own into it.
//!
//! # What a pool cannot promise
//!
//! A pooled buffer is writable shared memory, and a process it was lent to can keep a way to
//! write to it (a duplicate descriptor, a mapping of its own, `/proc/self/fd` reopened): no
//! system call tells the owner that every other holder let go. So the contents of a pooled
//! buffer are only as trustworthy as every process it was lent to: lend a pool's buffers to
//! one peer (one pool per peer), and a misbehaving peer can spoil only what it is itself sent
//! and what it sends back, as it can with any message. Data a receiver must be able to trust
//! goes in a frozen buffer.
//!
//! # Platform-specific behavior
//!
//! On Windows a buffer that comes back is looked for among the parked ones by
//! `CompareObjectHandles`, one call per parked buffer (a few, as the limit bounds them). On
//! macOS it is looked for by a write into its first bytes (the first 8, or all of a shorter
//! one), put back as they were before `put` or `adopt` returns: a buffer of 0 bytes is never
//! recognised there (`put` refuses it, as one made elsewhere), and a process that still uses
//! a buffer it has sent back may see those bytes change for a moment, or lose what it writes
//! there.
//!
//! # Costs and limits
//!
//! A pool holds on to memory: idle buffers, and the parked mapping of every buffer that is
//! away, up to its limit (256 MiB unless told otherwise). A buffer parked while the pool
//! needs the room is forgotten (unmapped, and refused by `put` when it comes back). Reused
//! buffers are not zeroed: a buffer holds whatever its last user wrote.

use std::fmt;

use std::sync::{Arc, Mutex, MutexGuard};

use crate::shm::{unmap_elsewhere, Writers};
use crate::sys::mapping::Mapping;
use crate::sys::shm;
use crate::{sys, Error, SharedBuffer};

/// The memory a pool holds on to unless told otherwise: 256 MiB.
pub const DEFAULT_POOL_LIMIT: usize = 256 << 20;

/// What the pool knows a buffer by: a memfd's device and inode numbers on Linux, a handle
/// compared by the kernel on Windows, a number of the process's own on macOS
/// (`sys::shm::Identity`; `sys::shm::recognise` finds a buffer that comes back).
type Key = shm::Identity;

/// Shared buffers reused across messages: fill, send, get back, fill again — without a new
/// memfd, mapping or page fault each time.
///
/// The owner [`take`](Self::take)s a writable buffer, fills it and sends it; the receiver
/// [`adopt`](Self::adopt)s it into a pool of its own, reads it, and sends it back; the owner
/// [`put`](Self::put)s it back. Both sides keep their mappings while the buffer is away, so a
/// 64 MiB buffer crosses in a few tens of microseconds and is read and written at memory
/// speed. Cloning a pool gives another handle to the same pool.
///
/// A pooled buffer stays writable shared memory: a process it was lent to can keep writing
/// to it, so its contents are only as trustworthy as that process (the README's "Shared
/// buffers" says what a pool promises and what it cannot). A receiver that must trust what
/// it reads wants a frozen buffer, which a pool does not reuse.
///
/// # Examples
///
/// The two sides of a frame pipeline (the owner, and a worker that sends each frame back once
/// it is done with it):
///
/// ```
/// use utility_process::{BufferPool, Error, Message, ParentPort, UtilityProcess};
///
/// fn send_frame(child: &UtilityProcess, frames: &BufferPool) -> Result<(), Error> {
///     let mut frame = frames.take(64 << 20)?;        // reused when one is idle
///     frame.as_mut_slice().unwrap().fill(0x5A);      // the producer fills it in place
///     child.post_message_with_transfer(&"frame", vec![frame.into()])
/// }
///
/// fn frame_done(mut reply: Message, frames: &BufferPool) {
///     for buffer in reply.take_buffers() {
///         let _ = frames.put(buffer);                // ready for the next `take`
///     }
/// }
///
/// fn worker(port: &ParentPort, lent: &BufferPool) -> Result<(), Error> {
///     while let Some(mut message) = port.recv_blocking() {
///         let frames: Vec<_> = message.take_buffers().into_iter().map(|b| lent.adopt(b)).collect();
///         let sum: u64 = frames.iter().flat_map(|f| f.iter()).map(|&b| u64::from(b)).sum();
///         port.post_message_with_transfer(&sum, frames.into_iter().map(Into::into).collect())?;
///     }
///     Ok(())
/// }
/// ```
///
/// Within one process:
///
/// ```
/// use utility_process::BufferPool;
///
/// let pool = BufferPool::new();
/// let mut buffer = pool.take(1 << 20)?;
/// buffer.as_mut_slice().unwrap()[0] = 42;
/// pool.put(buffer).unwrap();
/// assert_eq!(pool.idle(), 1);
/// let again = pool.take(1 << 20)?;                  // the same memory: not zeroed
/// assert_eq!(again[0], 42);
/// assert_eq!(pool.idle(), 0);
/// # Ok::<(), utility_process::Error>(())
/// ```
///
/// # Platform-specific behavior
///
/// A buffer that comes back is recognised by its memfd's inode on Linux and by
/// `CompareObjectHandles` on Windows. A shared memory object on macOS has no identity, so
/// there the pool writes a random value into the first bytes of the buffer that came back
/// (the first 8, or all of a shorter one), looks for it in the mappings it parked, and puts
/// the bytes back before `put` or `adopt` returns: a process that still uses a buffer it has
/// sent back may see those bytes change for a moment, or lose what it writes there, and a
/// buffer of 0 bytes is never taken back.
#[derive(Clone)]
pub struct BufferPool {
    inner: Arc<Inner>,
}

struct Inner {
    limit: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Buffers of this pool ready for `take`.
    idle: Vec<Idle>,
    /// The mappings of buffers that are away (a few: the limit bounds them), found by the
    /// identity of their memory.
    parked: Vec<Parked>,
    /// Bytes held: idle buffers and parked mappings.
    bytes: usize,
    /// Ticks for parking order (the oldest parked mapping is forgotten first).
    clock: u64,
}

struct Idle {
    map: Mapping,
    fd: sys::Object,
    key: Key,
    writers: Writers,
}

struct Parked {
    key: Key,
    map: Mapping,
    /// Keeps the memory, and so its identity, alive while the buffer is away; the buffer's
    /// descriptor again when it comes back.
    fd: sys::Object,
    /// Made by this pool (`put` takes it back) or only adopted (`put` refuses it).
    owned: bool,
    since: u64,
}

/// What a pooled [`SharedBuffer`] carries: its pool, its memory's identity, and whether the
/// pool made it.
pub(crate) struct Tag {
    pool: Arc<Inner>,
    key: Key,
    owned: bool,
}

impl Tag {
    /// Parks the mapping of a buffer being sent, until the same memory comes back.
    pub(crate) fn park(self, map: Mapping, fd: sys::BorrowedObject<'_>) {
        let Ok(fd) = fd.try_clone_to_owned() else {
            return unmap_elsewhere(map);
        };
        let len = map.as_slice().len();
        let mut forgotten = Vec::new();
        {
            let mut state = self.pool.lock();
            state.clock += 1;
            let since = state.clock;
            if let Some(at) = state.parked.iter().position(|old| old.key == self.key) {
                let old = state.parked.swap_remove(at);
                state.bytes -= old.map.as_slice().len();
                forgotten.push(old.map);
            }
            state.parked.push(Parked {
                key: self.key,
                map,
                fd,
                owned: self.owned,
                since,
            });
            state.bytes += len;
            forgotten.extend(state.make_room(self.pool.limit, Some(since)));
        }
        forgotten.into_iter().for_each(unmap_elsewhere);
    }
}

impl State {
    /// Forgets idle buffers, then the oldest parked mappings (never the one parked at tick
    /// `keep`), until the pool holds no more than `limit`; returns the mappings to drop
    /// outside the lock.
    fn make_room(&mut self, limit: usize, keep: Option<u64>) -> Vec<Mapping> {
        let mut forgotten = Vec::new();
        while self.bytes > limit {
            if let Some(idle) = self.idle.pop() {
                self.bytes -= idle.map.as_slice().len();
                forgotten.push(idle.map);
                continue;
            }
            let oldest = self
                .parked
                .iter()
                .enumerate()
                .filter(|(_, parked)| Some(parked.since) != keep)
                .min_by_key(|(_, parked)| parked.since)
                .map(|(at, _)| at);
            let Some(parked) = oldest.map(|at| self.parked.swap_remove(at)) else {
                break;
            };
            self.bytes -= parked.map.as_slice().len();
            forgotten.push(parked.map);
        }
        forgotten
    }
}

impl BufferPool {
    /// An empty pool that holds on to at most [`DEFAULT_POOL_LIMIT`] bytes.
    pub fn new() -> BufferPool {
        BufferPool::with_limit(DEFAULT_POOL_LIMIT)
    }

    /// An empty pool that holds on to at most `limit` bytes of idle buffers and of parked
    /// mappings of buffers that are away (buffers in use are not counted).
    pub fn with_limit(limit: usize) -> BufferPool {
        BufferPool {
            inner: Arc::new(Inner {
                limit,
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// A writable buffer of exactly `len` bytes: an idle one of this pool if there is one
    /// (mapped and populated already; its bytes are what its last user left), otherwise a
    /// new, zero-filled one, as [`SharedBuffer::new`].
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when a new buffer is needed and the system refuses the memory.
    pub fn take(&self, len: usize) -> Result<SharedBuffer, Error> {
        let reused = {
            let mut state = self.inner.lock();
            let found = state
                .idle
                .iter()
                .rposition(|idle| idle.map.as_slice().len() == len);
            found.map(|at| {
                let idle = state.idle.swap_remove(at);
                state.bytes -= len;
                idle
            })
        };
        if let Some(Idle {
            map,
            fd,
            key,
            writers,
        }) = reused
        {
            return Ok(SharedBuffer::from_parts(
                map,
                fd,
                writers,
                Some(self.tag(key, true)),
            ));
        }
        let buffer = SharedBuffer::new(len)?;
        let key = shm::identity(buffer.fd()).map_err(Error::io("inspecting a shared buffer"))?;
        let (map, fd, writers, _) = buffer.split();
        Ok(SharedBuffer::from_parts(
            map,
            fd,
            writers,
            Some(self.tag(key, true)),
        ))
    }

    /// Gives a buffer back for a later [`take`](Self::take): one this pool handed out, still
    /// in this process or sent away and received back. Its mapping is the one the pool kept
    /// (nothing is mapped or faulted again).
    ///
    /// When the pool is full the buffer is dropped instead (and `Ok` returned).
    ///
    /// # Errors
    ///
    /// The buffer itself, untouched, when it is not this pool's: made elsewhere (by
    /// [`SharedBuffer::new`], by another pool or by another process), frozen, or forgotten
    /// by the pool while it was away.
    pub fn put(&self, buffer: SharedBuffer) -> Result<(), SharedBuffer> {
        let (map, fd, key, writers) = self.adopt_existing(buffer)?;
        let len = map.as_slice().len();
        let mut forgotten = Vec::new();
        {
            let mut state = self.inner.lock();
            state.idle.push(Idle {
                map,
                fd,
                key,
                writers,
            });
            state.bytes += len;
            forgotten.extend(state.make_room(self.inner.limit, None));
        }
        forgotten.into_iter().for_each(unmap_elsewhere);
        Ok(())
    }

    /// Takes a received buffer into this pool, to read or write it at memory speed and send it
    /// back cheaply: if this pool parked a mapping of the same memory when it was last sent,
    /// that mapping is used again; otherwise the new mapping is populated in one system call
    /// (rather than a page fault per 4 KiB page), and sending the buffer will park it. The
    /// bytes are the same either way.
    ///
    /// A frozen buffer is only populated (it cannot be reused for writing). A buffer this
    /// pool made comes back as its own (so [`put`](Self::put) takes it); any other stays
    /// the sender's: `put` refuses it.
    ///
    /// Populating allocates every page the sender left unallocated: adopt buffers from
    /// senders you would also let fill them.
    pub fn adopt(&self, buffer: SharedBuffer) -> SharedBuffer {
        if buffer.is_read_only() {
            buffer.populate();
            return buffer;
        }
        if let Some(tag) = buffer.tag() {
            if Arc::ptr_eq(&tag.pool, &self.inner) {
                return buffer;
            }
        }
        let (mut map, fd, writers, _) = buffer.split();
        let parked = self
            .inner
            .lock()
            .take_parked(sys::borrow(&fd), &mut map, false);
        if let Some(parked) = parked {
            drop((map, fd)); // a fresh mapping, barely touched: cheap to drop
            let tag = self.tag(parked.key, parked.owned);
            return SharedBuffer::from_parts(parked.map, parked.fd, writers, Some(tag));
        }
        let Ok(key) = shm::identity(sys::borrow(&fd)) else {
            return SharedBuffer::from_parts(map, fd, writers, None);
        };
        let buffer = SharedBuffer::from_parts(map, fd, writers, Some(self.tag(key, false)));
        buffer.populate();
        buffer
    }

    /// How many buffers wait for [`take`](Self::take).
    pub fn idle(&self) -> usize {
        self.inner.lock().idle.len()
    }

    /// How many buffers are away with their mapping parked here, waiting to come back.
    pub fn lent(&self) -> usize {
        self.inner.lock().parked.len()
    }

    /// The parts of a buffer this pool made (its mapping, object, identity and writers), if
    /// it is one; the buffer itself otherwise.
    fn adopt_existing(
        &self,
        buffer: SharedBuffer,
    ) -> Result<(Mapping, sys::Object, Key, Writers), SharedBuffer> {
        if buffer.is_read_only() {
            return Err(buffer);
        }
        let (map, fd, writers, tag) = buffer.split();
        let buffer = match tag {
            Some(tag) if Arc::ptr_eq(&tag.pool, &self.inner) && tag.owned => {
                return Ok((map, fd, tag.key, writers));
            }
            tag => SharedBuffer::from_parts(map, fd, writers, tag),
        };
        if buffer.tag().is_some() {
            return Err(buffer);
        }
        let (mut map, fd, writers, _) = buffer.split();
        let parked = self
            .inner
            .lock()
            .take_parked(sys::borrow(&fd), &mut map, true);
        let Some(parked) = parked else {
            return Err(SharedBuffer::from_parts(map, fd, writers, None));
        };
        drop((map, fd));
        Ok((parked.map, parked.fd, parked.key, writers))
    }

    fn tag(&self, key: Key, owned: bool) -> Tag {
        Tag {
            pool: Arc::clone(&self.inner),
            key,
            owned,
        }
    }
}

impl State {
    /// The parked mapping of the memory that has come back as `fd`, mapped afresh at `back`
    /// (only among those this pool made, if `only_owned`), taken out of the parked list. It has
    /// `back`'s length (always, as no holder can resize a buffer; checked all the same).
    fn take_parked(
        &mut self,
        fd: sys::BorrowedObject<'_>,
        back: &mut Mapping,
        only_owned: bool,
    ) -> Option<Parked> {
        let parked = self.parked.iter().map(|parked| (&parked.key, &parked.map));
        let at = shm::recognise(fd, back, parked)?;
        let found = &self.parked[at];
        if found.map.as_slice().len() != back.as_slice().len() || (only_owned && !found.owned) {
            return None;
        }
        let parked = self.parked.swap_remove(at);
        self.bytes -= parked.map.as_slice().len();
        Some(parked)
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Default for BufferPool {
    fn default() -> BufferPool {
        BufferPool::new()
    }
}

impl fmt::Debug for BufferPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.inner.lock();
        f.debug_struct("BufferPool")
            .field("limit", &self.inner.limit)
            .field("idle", &state.idle.len())
            .field("lent", &state.parked.len())
            .field("bytes", &state.bytes)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends a buffer to ourselves: the descriptor goes through `into_parts` and `receive`
    /// as it would through a socket.
    fn round_trip(buffer: SharedBuffer) -> SharedBuffer {
        let (attachment, fd) = buffer.into_parts();
        let utility_process_wire::Attachment::Buffer { len, read_only } = attachment else {
            panic!("a buffer's attachment");
        };
        SharedBuffer::receive(fd, len, read_only).expect("our own buffer passes the checks")
    }

    /// Runs `test` as this OS recognises a buffer that comes back, and on Linux once more as
    /// macOS does, by what its memory shows (`sys/unix/probe.rs`), which nothing else here
    /// would run.
    fn each_way_of_recognising(test: fn()) {
        test();
        #[cfg(target_os = "linux")]
        {
            shm::RECOGNISE_BY_CONTENT.set(true);
            test();
            shm::RECOGNISE_BY_CONTENT.set(false);
        }
    }

    #[test]
    fn a_buffer_that_comes_back_is_mapped_where_it_was_and_taken_again() {
        each_way_of_recognising(a_buffer_comes_back_to_where_it_was);
    }

    fn a_buffer_comes_back_to_where_it_was() {
        let pool = BufferPool::new();
        let mut buffer = pool.take(1 << 20).unwrap();
        buffer.as_mut_slice().unwrap().fill(7);
        let address = buffer.as_ptr();
        let back = round_trip(buffer);
        assert_eq!(pool.lent(), 1);
        pool.put(back).unwrap();
        assert_eq!((pool.lent(), pool.idle()), (0, 1));
        let again = pool.take(1 << 20).unwrap();
        assert_eq!(again.as_ptr(), address, "the parked mapping is used again");
        assert!(again.iter().all(|&b| b == 7));
    }

    /// What came back is dropped once recognised: the pool goes on with the descriptor it
    /// kept, so nothing a peer sent (a lookalike that passed for the pool's buffer on macOS)
    /// stays in the pool.
    #[cfg(unix)]
    #[test]
    fn a_buffer_that_comes_back_goes_on_with_the_descriptor_the_pool_kept() {
        use std::os::fd::AsRawFd;
        each_way_of_recognising(|| {
            let owner = BufferPool::new();
            let receiver = BufferPool::new();
            // The receiver parks a mapping of its own when it sends the buffer back.
            owner
                .put(round_trip(
                    receiver.adopt(round_trip(owner.take(4096).unwrap())),
                ))
                .unwrap();
            let back = round_trip(owner.take(4096).unwrap());
            let arrived = back.fd().as_raw_fd();
            let adopted = receiver.adopt(back);
            assert_ne!(
                adopted.fd().as_raw_fd(),
                arrived,
                "adopt: the receiver's own"
            );
            let back = round_trip(adopted);
            let arrived = back.fd().as_raw_fd();
            owner.put(back).unwrap();
            let again = owner.take(4096).unwrap();
            assert_ne!(again.fd().as_raw_fd(), arrived, "put: not the pool's own");
        });
    }

    #[test]
    fn several_buffers_away_at_once_each_come_back_to_their_own_mapping() {
        each_way_of_recognising(|| {
            let pool = BufferPool::new();
            let buffers: Vec<_> = (0..4u8)
                .map(|byte| {
                    let mut buffer = pool.take(64 << 10).unwrap();
                    buffer.as_mut_slice().unwrap().fill(byte);
                    (buffer.as_ptr(), round_trip(buffer))
                })
                .collect();
            assert_eq!(pool.lent(), 4);
            for (address, back) in buffers.into_iter().rev() {
                let byte = back[0];
                pool.put(back).unwrap();
                let again = pool.take(64 << 10).unwrap();
                assert_eq!(again.as_ptr(), address, "buffer {byte}");
                assert!(again.iter().all(|&b| b == byte), "buffer {byte}");
            }
            assert_eq!(pool.lent(), 0);
        });
    }

    #[test]
    fn a_receiver_that_adopts_keeps_its_mapping_for_the_next_time() {
        each_way_of_recognising(a_receiver_keeps_its_mapping);
    }

    fn a_receiver_keeps_its_mapping() {
        let owner = BufferPool::new();
        let receiver = BufferPool::new();
        let buffer = owner.take(64 << 10).unwrap();
        let adopted = receiver.adopt(round_trip(buffer));
        let address = adopted.as_ptr();
        // Back to the owner, then to the receiver again.
        owner.put(round_trip(adopted)).unwrap();
        assert_eq!(receiver.lent(), 1);
        let again = receiver.adopt(round_trip(owner.take(64 << 10).unwrap()));
        assert_eq!(again.as_ptr(), address);
        assert_eq!(receiver.lent(), 0);
    }

    #[test]
    fn put_refuses_a_buffer_the_pool_did_not_make() {
        each_way_of_recognising(put_refuses_strangers);
    }

    fn put_refuses_strangers() {
        let pool = BufferPool::new();
        let other = BufferPool::new();
        // One of the pool's own is away meanwhile: no stranger may pass for it.
        let away = round_trip(pool.take(4096).unwrap());
        assert!(pool.put(SharedBuffer::new(4096).unwrap()).is_err());
        assert!(pool
            .put(round_trip(SharedBuffer::new(4096).unwrap()))
            .is_err());
        assert!(pool.put(other.take(4096).unwrap()).is_err());
        // Adopted from elsewhere is not made here either.
        let adopted = pool.adopt(round_trip(other.take(4096).unwrap()));
        assert!(pool.put(round_trip(adopted)).is_err());
        let frozen = pool.take(4096).unwrap().freeze().unwrap();
        assert!(pool.put(frozen).is_err());
        assert_eq!(pool.idle(), 0);
        pool.put(away)
            .expect("the pool's own buffer is still known");
    }

    #[test]
    fn take_reuses_only_a_buffer_of_the_same_length() {
        let pool = BufferPool::new();
        pool.put(pool.take(4096).unwrap()).unwrap();
        let other = pool.take(8192).unwrap();
        assert_eq!((other.len(), pool.idle()), (8192, 1));
        assert_eq!(pool.take(4096).unwrap().len(), 4096);
        assert_eq!(pool.idle(), 0);
    }

    #[test]
    fn the_pool_holds_no_more_than_its_limit_and_forgets_the_oldest_lent_buffer() {
        each_way_of_recognising(the_pool_keeps_to_its_limit);
    }

    fn the_pool_keeps_to_its_limit() {
        let pool = BufferPool::with_limit(3 << 16);
        let first = round_trip(pool.take(1 << 16).unwrap());
        let second = round_trip(pool.take(1 << 16).unwrap());
        let third = round_trip(pool.take(1 << 16).unwrap());
        let fourth = round_trip(pool.take(1 << 16).unwrap());
        assert_eq!(pool.lent(), 3);
        assert!(pool.put(first).is_err(), "forgotten to make room");
        for buffer in [second, third, fourth] {
            pool.put(buffer).unwrap();
        }
        pool.put(pool.take(1 << 16).unwrap()).unwrap();
        pool.put(pool.take(1 << 17).unwrap()).unwrap(); // over the limit: dropped or room made
        let state = pool.inner.lock();
        assert!(state.bytes <= 3 << 16, "{} bytes held", state.bytes);
    }

    #[test]
    fn a_buffer_someone_else_maps_writable_cannot_be_frozen() {
        let owner = BufferPool::new();
        let receiver = BufferPool::new();
        // The receiver parks a writable mapping when it sends the buffer back.
        let adopted = receiver.adopt(round_trip(owner.take(4096).unwrap()));
        let back = round_trip(adopted);
        assert!(back.freeze().is_err(), "a frozen buffer must never change");
    }

    #[test]
    fn a_buffer_that_arrived_writable_is_frozen_only_where_a_seal_binds_every_holder() {
        let pool = BufferPool::new();
        assert!(pool.take(4096).unwrap().freeze().is_ok(), "never lent");
        let arrived = round_trip(SharedBuffer::new(4096).unwrap()).freeze();
        if cfg!(target_os = "linux") {
            // Nobody maps it writable any more: the seal is added, and binds every descriptor.
            assert!(arrived.is_ok(), "{arrived:?}");
        } else {
            let Err(Error::Io { source, .. }) = arrived else {
                panic!("a buffer another process had writable was frozen: {arrived:?}");
            };
            assert_eq!(source.kind(), std::io::ErrorKind::PermissionDenied);
        }
    }
}
