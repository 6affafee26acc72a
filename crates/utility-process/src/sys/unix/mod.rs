//! What every Unix backend shares — descriptors, polling, the socket pair with its
//! SCM_RIGHTS batches, the guardian, the output relay, the report pipe — and the one place
//! that picks the OS module (`linux` or `macos`) for what differs: starting and reaping a
//! child, shared memory, and the sandbox's kernel layers.
//!
//! Each OS module provides the same names (checked by the compiler when the other one is
//! built): `process::{spawn, Spawned, Pidfd, set_process_name}` (and re-exports the plan
//! types every Unix shares from `spawn`: `SpawnPlan`, `PreExec`, `ChildFd`, `SpawnStep`,
//! `Reaped`, `RawExit`, `kill_process_group`), `shm::{create, freeze, check, Identity, identity,
//! recognise, keep_from_forks, alignment, populate_new, populate}` (the shared `mapping::Mapping` uses
//! the last four), `confine::{install_reporters, ignores_process_limit, unavailable_limit}`, and
//! at its root `RlimitResource`, `pipe`, `errno_location`, `socket_flags`, `recv_flags`,
//! `after_socketpair`, `after_recv`, `is_unix_domain`, `advise_huge_pages`,
//! `close_all_but`, `name_guardian` and `signal_name`.

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
use linux as os;
#[cfg(target_os = "macos")]
mod macos;
#[cfg(target_os = "macos")]
use macos as os;

pub(crate) mod channel;
pub(crate) mod child;
pub(crate) mod confine;
pub(crate) mod guardian;
pub(crate) mod mapping;
#[cfg(any(target_os = "macos", test))]
mod probe;
pub(crate) mod reactor;
pub(crate) mod relay;
pub(crate) mod socket;
pub(crate) mod spawn;
pub(crate) mod stdio;

pub(crate) use os::{advise_huge_pages, pipe, process, shm, signal_name, RlimitResource};

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// An OS object that travels between processes attached to a message: a descriptor.
pub(crate) type Object = OwnedFd;

/// An [`Object`] borrowed for a send.
pub(crate) type BorrowedObject<'a> = BorrowedFd<'a>;

/// Borrows `object` for a send.
pub(crate) fn borrow(object: &Object) -> BorrowedObject<'_> {
    object.as_fd()
}

/// Turns a `-1` return into the thread's `errno`.
pub(crate) fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Runs `f` until it fails with something other than `EINTR`.
pub(crate) fn retry<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// `/dev/null`, opened for reading and writing, close-on-exec.
pub(crate) fn open_dev_null() -> io::Result<OwnedFd> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    Ok(OwnedFd::from(file))
}

/// The VM page size (`sysconf(3)` `_SC_PAGESIZE`: 4 KiB on x86_64, 4, 16 or 64 KiB on
/// aarch64 Linux, 16 KiB on Apple silicon).
pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096).max(1)
}

/// Sets or clears `FD_CLOEXEC` on `fd`.
pub(crate) fn set_cloexec(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    update_flag(fd, libc::F_GETFD, libc::F_SETFD, libc::FD_CLOEXEC, on)
}

/// Sets or clears `O_NONBLOCK` on the open file description behind `fd`.
pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    update_flag(fd, libc::F_GETFL, libc::F_SETFL, libc::O_NONBLOCK, on)
}

/// Sets or clears one bit of a descriptor's flags (`F_GETFD`/`F_SETFD`) or status flags
/// (`F_GETFL`/`F_SETFL`), writing only if it changes.
fn update_flag(
    fd: BorrowedFd<'_>,
    get: libc::c_int,
    set: libc::c_int,
    bit: libc::c_int,
    on: bool,
) -> io::Result<()> {
    let raw = fd.as_raw_fd();
    // SAFETY: these fcntl commands only read and write the flags of a descriptor we borrow.
    unsafe {
        let flags = cvt(libc::fcntl(raw, get))?;
        let new = if on { flags | bit } else { flags & !bit };
        if new != flags {
            cvt(libc::fcntl(raw, set, new))?;
        }
    }
    Ok(())
}

/// What [`wait_fd`] waits for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Interest {
    Readable,
    Writable,
}

/// Blocks until `fd` is ready for `interest`, hung up, or `timeout` passes (`None`: forever).
///
/// Returns `false` on timeout. A hang-up or error condition counts as ready: the next read
/// or write reports it.
pub(crate) fn wait_fd(
    fd: BorrowedFd<'_>,
    interest: Interest,
    timeout: Option<Duration>,
) -> io::Result<bool> {
    let events = match interest {
        Interest::Readable => libc::POLLIN,
        Interest::Writable => libc::POLLOUT,
    };
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    };
    let ms = match timeout {
        None => -1,
        Some(t) => t.as_millis().min(i32::MAX as u128) as libc::c_int,
    };
    // SAFETY: `pfd` is one valid pollfd, and we pass a count of 1.
    let n = retry(|| cvt(unsafe { libc::poll(&mut pfd, 1, ms) }))?;
    Ok(n > 0)
}

/// Blocks until `readable` has data (or hangs up), `other` is readable, or `timeout` passes
/// (`None`: forever). Either descriptor may be absent. Returns whether `other` is readable.
pub(crate) fn wait_any(
    readable: Option<BorrowedFd<'_>>,
    other: Option<BorrowedFd<'_>>,
    timeout: Option<Duration>,
) -> io::Result<bool> {
    let mut pfds = [libc::pollfd {
        fd: -1,
        events: libc::POLLIN,
        revents: 0,
    }; 2];
    let mut count = 0;
    for fd in [readable, other].into_iter().flatten() {
        pfds[count].fd = fd.as_raw_fd();
        count += 1;
    }
    let ms = match timeout {
        None => -1,
        Some(t) => t.as_millis().clamp(1, i32::MAX as u128) as libc::c_int,
    };
    // SAFETY: `pfds` holds at least `count` valid pollfds for poll to fill in.
    retry(|| cvt(unsafe { libc::poll(pfds.as_mut_ptr(), count as libc::nfds_t, ms) }))?;
    // `other` sits last when it was given.
    Ok(other.is_some() && pfds[count - 1].revents != 0)
}

/// The environment variable that tells a child where its parent port is (PROTOCOL.md §1).
pub(crate) const PORT_ENV: &str = "UTILITY_PROCESS_PORT_FD";

/// Where a forked child finds its parent port: always descriptor 3 on Unix.
pub(crate) const PORT_FD: RawFd = 3;

/// Takes the parent port this process inherited, once per process, close-on-exec from now on
/// (programs this child starts must not inherit it).
///
/// # Errors
///
/// Why this process is not a utility process: the variable is missing or names another
/// descriptor, descriptor 3 is closed, already taken, or not a Unix stream socket.
pub(crate) fn take_parent_port() -> Result<channel::Channel, String> {
    use std::sync::atomic::{AtomicBool, Ordering};
    static TAKEN: AtomicBool = AtomicBool::new(false);
    match std::env::var(PORT_ENV) {
        Ok(fd) if fd == PORT_FD.to_string() => {}
        Ok(other) => return Err(format!("{PORT_ENV} is {other:?}, not \"3\"")),
        Err(_) => return Err(format!("{PORT_ENV} is not set")),
    }
    // SAFETY: F_GETFD only asks whether the descriptor is open.
    if cvt(unsafe { libc::fcntl(PORT_FD, libc::F_GETFD) }).is_err() {
        return Err("descriptor 3 is not open".into());
    }
    if TAKEN.swap(true, Ordering::SeqCst) {
        return Err("descriptor 3 was already taken".into());
    }
    // SAFETY: the descriptor is open, the protocol hands it to this library, and the flag
    // above makes sure it is wrapped (owned) only once in this process.
    let fd = unsafe { OwnedFd::from_raw_fd(PORT_FD) };
    set_cloexec(fd.as_fd(), true).map_err(|e| format!("descriptor 3: {e}"))?;
    channel::Channel::from_owned(fd).map_err(|e| match e.kind() {
        io::ErrorKind::InvalidData => "descriptor 3 is not a Unix stream socket".into(),
        _ => format!("descriptor 3: {e}"),
    })
}

/// Registers `f` to run when the process exits through `exit` (returning from `main`, or
/// `std::process::exit`), but not on a signal or `_exit`.
pub(crate) fn at_exit(f: extern "C" fn()) {
    // SAFETY: `f` is a plain function with the signature atexit expects; it lives forever.
    unsafe { libc::atexit(f) };
}
