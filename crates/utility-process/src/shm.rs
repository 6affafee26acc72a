//! [`SharedBuffer`]: a block of memory that travels inside a message like a port.
//!
//! Electron users have asked for transferable `ArrayBuffer`s for years (electron/electron#37157,
//! #34905); here a large payload can skip the socket altogether. The buffer is a sealed memfd:
//! sending it moves its descriptor to the receiver, who maps the same pages. Nothing is
//! copied, however large it is: the producer fills it in place, and the hand-over costs a
//! descriptor and a mapping.
//!
//! Sending moves the buffer (the sender's mapping is gone), so the receiver holds it alone and
//! may write to it. [`SharedBuffer::freeze`] seals it against writes for good — in every
//! process — so that a receiver can trust that nobody changes what it reads.
//!
//! A buffer from a [`BufferPool`](crate::BufferPool) is the exception: sending it parks the
//! sender's mapping in the pool, out of reach of any code, so that when the buffer comes
//! back it is mapped and populated already (see `buffer_pool.rs` for why and what it costs).

use std::fmt;
use std::ops::Deref;

use crate::buffer_pool::Tag;
use crate::sys::mapping::Mapping;
use crate::sys::shm;
use crate::{sys, Error};

/// The largest buffer a process accepts from another (1 GiB); a larger one is a protocol
/// violation. Buffers this process creates may be larger.
pub const MAX_RECEIVED_BUFFER: u64 = 1 << 30;

/// Mappings at least this large are unmapped on the library's thread when sent.
const UNMAP_ELSEWHERE: usize = 1 << 20;

/// A block of shared memory that travels inside a message, without being copied.
///
/// # Examples
///
/// ```
/// use utility_process::SharedBuffer;
///
/// let mut buffer = SharedBuffer::new(4096)?;
/// buffer.as_mut_slice().unwrap()[..5].copy_from_slice(b"hello");
/// let frozen = buffer.freeze()?;          // read-only from now on, in every process
/// assert_eq!(&frozen[..5], b"hello");
/// assert!(frozen.is_read_only());
/// # Ok::<(), utility_process::Error>(())
/// ```
///
/// # Platform-specific behavior
///
/// On Linux a buffer is a sealed memfd. Each whole 2 MiB of a new buffer is a huge page
/// (`MADV_COLLAPSE`, Linux 6.1) unless the kernel refuses (`shmem_enabled` = `deny`, an older
/// kernel, no free huge page: then small pages, as before), and every process maps a buffer of
/// 2 MiB or more on a 2 MiB boundary, so that one page-table entry maps each huge page: a new
/// 64 MiB buffer is allocated, mapped by its receiver, unmapped and freed in a few
/// milliseconds instead of ~17. The memory cost is the same: huge pages are made only for
/// whole 2 MiB extents of the buffer.
///
/// On macOS a buffer is a POSIX shared memory object (`shm_open`, unlinked at once): its size
/// is fixed for good by the kernel, as the seals fix it on Linux, but macOS has no write
/// seal. There a frozen buffer guarantees less: every process maps it read-only and the
/// library never maps it writable again, but its descriptor is read-write, so a process that
/// holds it can still map it writable with its own code. "Frozen" protects against mistakes,
/// not against a hostile holder; a receiver that must not trust its sender copies the bytes
/// out before checking them. A [`BufferPool`](crate::BufferPool) there recognises a buffer
/// that comes back by what it shows (a shared memory object has no identity to know it by).
pub struct SharedBuffer {
    // Declared first: unmapped before the descriptor closes.
    map: Mapping,
    fd: sys::Object,
    writers: Writers,
    /// The pool this buffer belongs to or was adopted by, if any (never for a frozen one).
    pool: Option<Tag>,
}

/// Who may write a buffer's memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Writers {
    /// This process alone: a new buffer that never left it.
    Here,
    /// Perhaps another process too: the buffer arrived writable (sent by a peer, or back from
    /// a loan), and the peer may have kept a way to write it.
    Elsewhere,
    /// Nobody: frozen.
    Nobody,
}

impl SharedBuffer {
    /// A zero-filled, writable buffer of `len` bytes, its memory allocated and mapped at once
    /// (in bulk: filling it costs no page faults). On Linux, each whole 2 MiB of it is a huge
    /// page where the kernel will make one (see "Platform-specific behavior").
    ///
    /// To send buffers of the same size again and again, take them from a
    /// [`BufferPool`](crate::BufferPool): a new buffer costs more than filling it (the kernel
    /// allocates and zeroes every page: for 64 MiB about 1.5 fills in huge pages, 5 in small
    /// ones).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the system refuses the memory.
    pub fn new(len: usize) -> Result<SharedBuffer, Error> {
        let fd = shm::create(len).map_err(Error::io("creating a shared buffer"))?;
        let map = Mapping::new(sys::borrow(&fd), len, true, true)
            .map_err(Error::io("mapping a shared buffer"))?;
        Ok(SharedBuffer {
            map,
            fd,
            writers: Writers::Here,
            pool: None,
        })
    }

    /// Puts a buffer together from its parts (for the pool).
    pub(crate) fn from_parts(
        map: Mapping,
        fd: sys::Object,
        writers: Writers,
        pool: Option<Tag>,
    ) -> SharedBuffer {
        SharedBuffer {
            map,
            fd,
            writers,
            pool,
        }
    }

    /// Takes a buffer apart (for the pool).
    pub(crate) fn split(self) -> (Mapping, sys::Object, Writers, Option<Tag>) {
        (self.map, self.fd, self.writers, self.pool)
    }

    /// The pool this buffer belongs to or was adopted by.
    pub(crate) fn tag(&self) -> Option<&Tag> {
        self.pool.as_ref()
    }

    /// The buffer's descriptor.
    pub(crate) fn fd(&self) -> sys::BorrowedObject<'_> {
        sys::borrow(&self.fd)
    }

    /// Pre-faults the whole mapping in one system call (best effort).
    pub(crate) fn populate(&self) {
        self.map.populate();
    }

    /// A buffer holding a copy of `bytes`.
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    pub fn from_slice(bytes: &[u8]) -> Result<SharedBuffer, Error> {
        let mut buffer = SharedBuffer::new(bytes.len())?;
        if let Some(target) = buffer.map.as_mut_slice() {
            target.copy_from_slice(bytes);
        }
        Ok(buffer)
    }

    /// Seals the buffer against writes, for good and in every process, and maps it read-only.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the kernel refuses the seal: another process still has the memory
    /// mapped writable (possible only for a buffer received from a sender that kept a
    /// mapping of its own, or for a [`BufferPool`](crate::BufferPool)'s buffer that a pool
    /// on the other side keeps mapped). The seal is all or nothing: a buffer that could still
    /// change is never returned frozen.
    ///
    /// A frozen buffer leaves its pool: it can never be written again.
    ///
    /// # Platform-specific behavior
    ///
    /// Windows and macOS have no seals: freezing drops the writable mapping and the
    /// writable handle (Windows) or maps the buffer read-only in every process the library
    /// runs in (macOS). What another process holds cannot be taken back, so there a buffer
    /// that arrived writable from another process (sent by a peer, or a pool's buffer back
    /// from a loan) is refused with [`Error::Io`] of kind `PermissionDenied`: freeze a new
    /// buffer instead. On macOS a process that receives the frozen buffer holds a read-write
    /// descriptor and could still map it writable with its own code (see [`SharedBuffer`]).
    pub fn freeze(self) -> Result<SharedBuffer, Error> {
        if self.writers == Writers::Nobody {
            return Ok(self);
        }
        let SharedBuffer {
            map, fd, writers, ..
        } = self;
        let len = map.as_slice().len();
        drop(map);
        let fd = shm::freeze(fd, writers == Writers::Elsewhere)
            .map_err(Error::io("sealing a shared buffer"))?;
        let map = Mapping::new(sys::borrow(&fd), len, false, false)
            .map_err(Error::io("mapping a shared buffer"))?;
        Ok(SharedBuffer {
            map,
            fd,
            writers: Writers::Nobody,
            pool: None,
        })
    }

    /// Whether the buffer is sealed against writes.
    pub fn is_read_only(&self) -> bool {
        self.writers == Writers::Nobody
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        self.map.as_slice()
    }

    /// The bytes, writable; `None` once the buffer is frozen.
    pub fn as_mut_slice(&mut self) -> Option<&mut [u8]> {
        self.map.as_mut_slice()
    }

    /// Turns a received descriptor into a buffer, after checking it is what the sender said.
    pub(crate) fn receive(
        fd: sys::Object,
        len: u64,
        read_only: bool,
    ) -> Result<SharedBuffer, &'static str> {
        if len > MAX_RECEIVED_BUFFER {
            return Err("a shared buffer larger than 1 GiB");
        }
        shm::check(sys::borrow(&fd), len, read_only)?;
        // Not pre-faulted: the hand-over stays a descriptor and an mmap (well under a
        // millisecond for 64 MiB), and the receiver pays only for the pages it reads — and
        // never for pages a sender left unallocated.
        let map = Mapping::new(sys::borrow(&fd), len as usize, !read_only, false)
            .map_err(|_| "a shared buffer that cannot be mapped")?;
        Ok(SharedBuffer {
            map,
            fd,
            writers: if read_only {
                Writers::Nobody
            } else {
                Writers::Elsewhere
            },
            pool: None,
        })
    }

    /// What goes in the envelope, and the descriptor that goes beside it.
    ///
    /// The sender's mapping goes away — parked in its pool, for a pooled buffer. Unmapping a
    /// large one takes milliseconds (the kernel tears down a page-table entry per page), so
    /// that happens on the library's thread, not in the caller's `post`.
    pub(crate) fn into_parts(self) -> (utility_process_wire::Attachment, sys::Object) {
        let attachment = utility_process_wire::Attachment::Buffer {
            len: self.map.as_slice().len() as u64,
            read_only: self.is_read_only(),
        };
        let SharedBuffer { map, fd, pool, .. } = self;
        match pool {
            Some(tag) => tag.park(map, sys::borrow(&fd)),
            None => unmap_elsewhere(map),
        }
        (attachment, fd)
    }
}

/// Drops a mapping; a large one on the library's thread (see
/// [`SharedBuffer::into_parts`]).
pub(crate) fn unmap_elsewhere(map: Mapping) {
    if map.as_slice().len() >= UNMAP_ELSEWHERE {
        if let Ok(driver) = crate::driver::driver() {
            driver.handle().spawn_blocking(move || drop(map));
        }
    }
}

impl Deref for SharedBuffer {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl fmt::Debug for SharedBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedBuffer")
            .field("len", &self.len())
            .field("read_only", &self.is_read_only())
            .finish()
    }
}
