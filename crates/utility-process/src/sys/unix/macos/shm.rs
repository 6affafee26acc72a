//! Shared memory on macOS: POSIX shared memory objects, unlinked at once, mapped into each
//! process that holds one.
//!
//! macOS has neither `memfd_create` nor file seals. A buffer is made with `shm_open(2)` under
//! a random name, `O_CREAT | O_EXCL` (so no one else's object is ever opened), mode 0600;
//! the name is removed with `shm_unlink(2)` before `create` returns, so what is left is an
//! anonymous object reachable only through descriptors, as a memfd is. Its size is set with
//! `ftruncate(2)`.
//!
//! # What holds without seals
//!
//! - **The size cannot change.** XNU sizes a POSIX shared memory object once: a second
//!   `ftruncate` fails with `EINVAL` (`bsd/kern/posix_shm.c`, `pshm_truncate`: only an object
//!   not yet allocated may be sized). So no holder can shrink a buffer under another's
//!   mapping (the SIGBUS that Linux's `F_SEAL_SHRINK` prevents). The kernel rounds the size up
//!   to a whole page, so `fstat` reports the rounded size; `check` accepts exactly that.
//! - **A received descriptor is a shared memory object**, not a file or a pipe that a hostile
//!   sender could truncate: `fstat` on one reports no file type bits at all (`pshm_stat` sets
//!   `st_mode` to the object's permission bits only), which no file, pipe, socket or device
//!   does. This rests on XNU's source, not on a man page: Apple documents no way to tell a
//!   shared memory descriptor apart.
//! - **A frozen buffer is not sealed.** [`freeze`] cannot stop writes: the only guarantees are
//!   that the sender's own writable mapping is gone (the neutral layer drops it before
//!   freezing), that every process maps a frozen buffer `PROT_READ` only, and that the library
//!   never hands out a writable mapping of it again. A process that holds the descriptor
//!   (it is read-write) can still `mmap` it writable with its own code, and the bytes a
//!   receiver reads can then change under it. On macOS, "frozen" therefore protects against
//!   mistakes, not against a hostile holder: a receiver that must not trust the sender should
//!   copy the bytes out before checking them.
//! - **A buffer that comes back to a `BufferPool`** cannot be known by an identity: `fstat`
//!   reports neither device nor inode for a shared memory object. [`recognise`] knows it by
//!   what its memory shows instead (`sys/unix/probe.rs`).
//!
//! Every mapping is `minherit(2)` `VM_INHERIT_NONE`, macOS's `MADV_DONTFORK`: a fork made by
//! this process (the guardian, or a child before its exec) does not get it.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::sys::mapping::Mapping;
use crate::sys::unix::{cvt, probe};

/// Creates an unnamed shared memory object of `len` bytes, close-on-exec.
pub(crate) fn create(len: usize) -> io::Result<OwnedFd> {
    let size = libc::off_t::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "buffer too large"))?;
    let fd = open_unique()?;
    crate::sys::unix::set_cloexec(std::os::fd::AsFd::as_fd(&fd), true)?;
    if len > 0 {
        // SAFETY: ftruncate sizes the object behind a descriptor we own.
        cvt(unsafe { libc::ftruncate(fd.as_raw_fd(), size) })?;
    }
    Ok(fd)
}

/// `shm_open(2)` under a fresh random name with `O_CREAT | O_EXCL`, then `shm_unlink(2)` of
/// that name at once. Names are at most `PSHMNAMLEN` (31) bytes on macOS.
///
/// The name is 96 random bits (`getentropy(2)`), not something another process could
/// predict: between `shm_open` and `shm_unlink` the object can be opened by name, and a
/// process of the same user (a sandboxed child may open the library's names, see
/// `sandbox/seatbelt.rs`) must not be able to guess it in that moment.
fn open_unique() -> io::Result<OwnedFd> {
    for _ in 0..16 {
        let mut random = [0u8; 12];
        // SAFETY: getentropy writes at most `random.len()` (≤ 256) bytes into the array we own.
        cvt(unsafe { libc::getentropy(random.as_mut_ptr().cast(), random.len()) })?;
        // "/up" + 24 hex digits = 27 bytes.
        let name = random.iter().fold(String::from("/up"), |name, byte| {
            name + &format!("{byte:02x}")
        });
        let name = std::ffi::CString::new(name).map_err(io::Error::other)?;
        // SAFETY: `name` is a NUL-terminated string alive for the call; shm_open's variadic
        // mode is passed as the `unsigned int` its C prototype promotes `mode_t` to.
        let raw = unsafe {
            libc::shm_open(
                name.as_ptr(),
                libc::O_RDWR | libc::O_CREAT | libc::O_EXCL,
                0o600 as libc::c_uint,
            )
        };
        if raw < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EEXIST) {
                continue;
            }
            return Err(e);
        }
        // SAFETY: shm_open just returned this descriptor for us alone.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: removes the name we just created; the object lives on through `fd`.
        cvt(unsafe { libc::shm_unlink(name.as_ptr()) })?;
        return Ok(fd);
    }
    Err(io::Error::from_raw_os_error(libc::EEXIST))
}

/// Freezes the buffer behind `fd`: on macOS, nothing at the kernel level (no seals exist).
/// See the module documentation for exactly what a frozen buffer guarantees here. A buffer
/// that another process had writable (`shared`) is refused: nothing can take its write
/// access back.
pub(crate) fn freeze(fd: OwnedFd, shared: bool) -> io::Result<OwnedFd> {
    if shared {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "another process had this buffer writable, and macOS has no seal to stop it \
             writing: freeze a new buffer instead",
        ));
    }
    Ok(fd)
}

/// Checks a received descriptor before it is mapped: a POSIX shared memory object, of the
/// announced size (rounded up to a page, as the kernel rounds it). `frozen` adds nothing on
/// macOS: there is no seal to check.
pub(crate) fn check(fd: BorrowedFd<'_>, len: u64, _frozen: bool) -> Result<(), &'static str> {
    // SAFETY: fstat fills a zeroed stat struct we own, for a descriptor we borrow.
    let stat = unsafe {
        let mut stat: libc::stat = std::mem::zeroed();
        if libc::fstat(fd.as_raw_fd(), &mut stat) != 0 {
            return Err("a shared buffer that cannot be inspected");
        }
        stat
    };
    if stat.st_mode & libc::S_IFMT != 0 {
        return Err("a shared buffer that is not a shared memory object");
    }
    let size = u64::try_from(stat.st_size).map_err(|_| "a shared buffer of negative size")?;
    let page = crate::sys::unix::page_size() as u64;
    let expected = len.div_ceil(page) * page;
    if size != expected {
        return Err("a shared buffer whose size is not the announced one");
    }
    Ok(())
}

/// What a pool knows a buffer by while it is away: a number this process gives each buffer it
/// pools, since the kernel gives a shared memory object none (see [`recognise`]).
pub(crate) type Identity = u64;

/// A new number for the buffer behind `_fd`, never given before in this process.
pub(crate) fn identity(_fd: BorrowedFd<'_>) -> io::Result<Identity> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    Ok(NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Which of the `parked` buffers (their numbers and mappings) is the memory of a buffer that
/// has just come back, mapped at `back`: the one whose mapping shows what is written into
/// `back` (`sys/unix/probe.rs` says how, and why a peer gains nothing by fooling it).
pub(crate) fn recognise<'a>(
    _fd: BorrowedFd<'_>,
    back: &mut Mapping,
    parked: impl Iterator<Item = (&'a Identity, &'a Mapping)>,
) -> Option<usize> {
    probe::find(back, parked.map(|(_, map)| map))
}

/// Keeps a mapping out of every process this one forks (`minherit(2)` `VM_INHERIT_NONE`,
/// macOS's `MADV_DONTFORK`).
///
/// # Safety
///
/// `ptr` and `len` are a mapping this process made and still holds.
pub(crate) unsafe fn keep_from_forks(ptr: *mut libc::c_void, len: usize) {
    // SAFETY: changes only whether a future fork inherits a region the caller vouches for;
    // no byte of it changes.
    unsafe { libc::minherit(ptr, len, libc::VM_INHERIT_NONE) };
}

/// Where a mapping should start: wherever the kernel likes (`1`). macOS backs shared memory
/// with its own page size and offers no huge pages to it.
pub(crate) fn alignment(_len: usize) -> usize {
    1
}

/// Gives a new buffer its memory in bulk: not possible on macOS (no `MADV_POPULATE_*`, no
/// huge pages for shared memory); the pages fault in as they are filled. Returns `false`.
///
/// # Safety
///
/// As [`keep_from_forks`].
pub(crate) unsafe fn populate_new(_ptr: *mut libc::c_void, _len: usize) -> bool {
    false
}

/// Bulk population does not exist on macOS (no `MADV_POPULATE_*`): the pages are faulted in
/// on use. Returns `false`, as a kernel that refused would.
///
/// # Safety
///
/// As [`keep_from_forks`].
pub(crate) unsafe fn populate(_ptr: *mut libc::c_void, _len: usize, _writable: bool) -> bool {
    false
}
