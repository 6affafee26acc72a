//! Limits and the sandbox at the system-call level: Landlock rulesets, seccomp filters,
//! `no_new_privs`, and the report pipe through which a confined child tells its parent what
//! its limits and sandbox stopped.
//!
//! # The report pipe
//!
//! A confined child holds one more descriptor than the others: fd 4, the write end of a pipe
//! whose read end the parent's watcher reads. Two signal handlers write into it, with nothing
//! but `write(2)` (async-signal-safe) and never blocking (the pipe is non-blocking on the
//! child's side: a report that does not fit is dropped, never waited for):
//!
//! - SIGSYS, raised by the seccomp filter's `SECCOMP_RET_TRAP`: `'S'` and the call's number
//!   (4 bytes, little endian). The handler then makes the denied call return `-EPERM`, so
//!   the child goes on with an error where it tried to escape;
//! - SIGABRT after a failed allocation: `'M'`. An allocation that fails under the
//!   address-space limit makes a Rust program abort soon after `malloc` set `ENOMEM`; the
//!   handler checks that (or that the address space is all but full), returns, and `abort()`
//!   finishes the job. This is how the parent tells "out of memory under its limit" from any
//!   other abort.
//!
//! Landlock's constants are the kernel's `include/uapi/linux/landlock.h`; the `libc` crate
//! does not carry them.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::sys::unix::confine::{report, REPORT_FD, REPORT_OUT_OF_MEMORY, REPORT_SYSCALL};
use crate::sys::unix::cvt;

// Landlock access rights (`LANDLOCK_ACCESS_FS_*`), by ABI version.
pub(crate) const FS_EXECUTE: u64 = 1 << 0;
pub(crate) const FS_WRITE_FILE: u64 = 1 << 1;
pub(crate) const FS_READ_FILE: u64 = 1 << 2;
pub(crate) const FS_READ_DIR: u64 = 1 << 3;
/// ABI 1: the thirteen rights from `EXECUTE` to `MAKE_SYM`.
const FS_ABI1: u64 = (1 << 13) - 1;
const FS_REFER: u64 = 1 << 13; // ABI 2
const FS_TRUNCATE: u64 = 1 << 14; // ABI 3
const FS_IOCTL_DEV: u64 = 1 << 15; // ABI 5
/// The rights that can be granted on a file (not a directory).
pub(crate) const FS_FILE_RIGHTS: u64 =
    FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV;
// `LANDLOCK_ACCESS_NET_*` (ABI 4).
pub(crate) const NET_BIND_TCP: u64 = 1 << 0;
pub(crate) const NET_CONNECT_TCP: u64 = 1 << 1;
// `LANDLOCK_SCOPE_*` (ABI 6).
pub(crate) const SCOPE_ABSTRACT_UNIX_SOCKET: u64 = 1 << 0;
pub(crate) const SCOPE_SIGNAL: u64 = 1 << 1;

const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1 << 0;
const LANDLOCK_RULE_PATH_BENEATH: libc::c_int = 1;

/// Every filesystem right the kernel's Landlock `abi` knows.
pub(crate) fn fs_rights(abi: u32) -> u64 {
    let mut rights = FS_ABI1;
    if abi >= 2 {
        rights |= FS_REFER;
    }
    if abi >= 3 {
        rights |= FS_TRUNCATE;
    }
    if abi >= 5 {
        rights |= FS_IOCTL_DEV;
    }
    rights
}

/// The Landlock ABI version this kernel offers, 0 when it has none (not built, or not
/// enabled among the LSMs).
pub(crate) fn landlock_abi() -> u32 {
    // SAFETY: with a NULL attribute, size 0 and the VERSION flag, the call only returns a
    // number; it reads and writes no memory.
    let version = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    u32::try_from(version).unwrap_or(0)
}

/// `struct landlock_ruleset_attr`, all three fields (the kernel accepts a larger struct whose
/// unknown tail is zero).
#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
    handled_access_net: u64,
    scoped: u64,
}

/// `struct landlock_path_beneath_attr`, packed as in the kernel's header.
#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

/// A Landlock ruleset being built: what it restricts, and the exceptions.
#[derive(Debug)]
pub(crate) struct Ruleset {
    fd: OwnedFd,
    handled_fs: u64,
}

impl Ruleset {
    /// A ruleset that restricts `fs` and `net` rights and the `scoped` IPC.
    pub(crate) fn new(fs: u64, net: u64, scoped: u64) -> io::Result<Ruleset> {
        let attr = RulesetAttr {
            handled_access_fs: fs,
            handled_access_net: net,
            scoped,
        };
        // Older kernels reject a struct bigger than they know unless its tail is zero, and
        // the tail is only non-zero when the caller checked the ABI.
        let size = if scoped != 0 {
            24
        } else if net != 0 {
            16
        } else {
            8
        };
        // SAFETY: `attr` is a live, properly laid out `landlock_ruleset_attr` of at least
        // `size` bytes; the call returns a new descriptor or -1.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_landlock_create_ruleset,
                &attr as *const RulesetAttr,
                size as libc::size_t,
                0 as libc::c_uint,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the call succeeded: `fd` is a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        crate::sys::unix::set_cloexec(std::os::fd::AsFd::as_fd(&fd), true)?;
        Ok(Ruleset { fd, handled_fs: fs })
    }

    /// Allows `access` beneath `path` (on `path` itself when it is a file, where only the
    /// file rights apply). A path that does not exist is an error.
    pub(crate) fn allow_path(&self, path: &Path, access: u64) -> io::Result<()> {
        let c_path = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in a path"))?;
        // SAFETY: `c_path` is a NUL-terminated string alive for the call; O_PATH opens
        // nothing for reading or writing.
        let raw = cvt(unsafe { libc::open(c_path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) })?;
        // SAFETY: open succeeded: `raw` is a fresh descriptor nothing else owns.
        let parent = unsafe { OwnedFd::from_raw_fd(raw) };
        let is_dir = std::fs::metadata(path).map(|m| m.is_dir()).unwrap_or(false);
        let mut allowed = access & self.handled_fs;
        if !is_dir {
            allowed &= FS_FILE_RIGHTS;
        }
        if allowed == 0 {
            return Ok(());
        }
        let attr = PathBeneathAttr {
            allowed_access: allowed,
            parent_fd: parent.as_raw_fd(),
        };
        // SAFETY: `attr` is a live, packed `landlock_path_beneath_attr`; both descriptors
        // are open for the duration of the call.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_landlock_add_rule,
                self.fd.as_raw_fd(),
                LANDLOCK_RULE_PATH_BENEATH,
                &attr as *const PathBeneathAttr,
                0 as libc::c_uint,
            )
        };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The descriptor, for a child to restrict itself with between fork and exec.
    pub(crate) fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Restricts the calling thread (and every thread and process it starts later) to this
    /// ruleset. Needs `no_new_privs` (or CAP_SYS_ADMIN).
    pub(crate) fn restrict_self(&self) -> io::Result<()> {
        // SAFETY: the ruleset descriptor is open; flags 0.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_landlock_restrict_self,
                self.fd.as_raw_fd(),
                0 as libc::c_uint,
            )
        };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Sets `no_new_privs`: from now on `execve` can never grant privileges (set-user-ID bits and
/// file capabilities are ignored), which is what lets an unprivileged process install a
/// seccomp filter or a Landlock ruleset.
pub(crate) fn set_no_new_privs() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    cvt(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) }).map(drop)
}

/// Whether the kernel can filter system calls (`CONFIG_SECCOMP_FILTER`).
pub(crate) fn seccomp_available() -> bool {
    // SAFETY: PR_GET_SECCOMP reads the caller's mode; no memory is involved. EINVAL means
    // the kernel has no seccomp at all.
    unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) >= 0 }
}

/// Installs `program` as a seccomp filter on the calling process (every thread: TSYNC), on
/// top of any filter already there.
pub(crate) fn install_filter(program: &[libc::sock_filter]) -> io::Result<()> {
    let fprog = libc::sock_fprog {
        len: program.len() as libc::c_ushort,
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: `fprog` points into `program`, alive for the call; the kernel copies it.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_TSYNC,
            &fprog as *const libc::sock_fprog,
        )
    };
    if ret != 0 {
        // TSYNC returns the id of a thread it could not synchronise, as a positive number.
        return Err(if ret > 0 {
            io::Error::other("another thread could not take the filter")
        } else {
            io::Error::last_os_error()
        });
    }
    Ok(())
}

/// Takes the report pipe at fd 4 (close-on-exec and non-blocking from now on, so that a
/// program this child may exec does not inherit it and a full pipe never blocks a handler),
/// and installs the SIGSYS handler, and the SIGABRT one when `memory_limited`.
pub(crate) fn install_reporters(memory_limited: bool) -> io::Result<()> {
    // SAFETY: fd 4 is the report pipe the parent placed there for this child; we only change
    // its flags.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(REPORT_FD) };
    crate::sys::unix::set_cloexec(fd, true)?;
    crate::sys::unix::set_nonblocking(fd, true)?;
    install_handler(libc::SIGSYS, on_sigsys as *const () as usize)?;
    if memory_limited {
        install_handler(libc::SIGABRT, on_sigabrt as *const () as usize)?;
    }
    Ok(())
}

fn install_handler(signal: libc::c_int, handler: usize) -> io::Result<()> {
    // SAFETY: a zeroed sigaction is a valid starting point; the handler is an
    // `extern "C" fn(c_int, *mut siginfo_t, *mut c_void)` as SA_SIGINFO requires, and it
    // only makes async-signal-safe calls.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        cvt(libc::sigaction(signal, &action, std::ptr::null_mut())).map(drop)
    }
}

/// The denied calls already reported, one bit per number (numbers past the table share its
/// last bit): a child reports each call once, so that an honest child's reports stay far
/// below what the parent accepts from one child in its life.
static REPORTED: [std::sync::atomic::AtomicU64; 16] =
    [const { std::sync::atomic::AtomicU64::new(0) }; 16];

/// Whether `nr` is reported for the first time (and marks it). Async-signal-safe: one
/// atomic operation.
fn first_report_of(nr: i32) -> bool {
    let bit = usize::try_from(nr).unwrap_or(usize::MAX).min(16 * 64 - 1);
    let mask = 1u64 << (bit % 64);
    REPORTED[bit / 64].fetch_or(mask, std::sync::atomic::Ordering::Relaxed) & mask == 0
}

/// SIGSYS from the seccomp filter: report the call (once), make it fail with EPERM.
extern "C" fn on_sigsys(
    _signal: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    // SAFETY: the kernel passes a valid siginfo and ucontext to an SA_SIGINFO handler. For
    // SIGSYS the union holds `struct { void *_call_addr; int _syscall; unsigned _arch; }`,
    // which starts after the three ints and the padding of the header: `_syscall` is at
    // byte 24 on every 64-bit Linux. The saved RAX is what the interrupted call returns.
    unsafe {
        let nr = info.cast::<u8>().add(24).cast::<i32>().read_unaligned();
        if first_report_of(nr) {
            let mut bytes = [REPORT_SYSCALL, 0, 0, 0, 0];
            bytes[1..].copy_from_slice(&nr.to_le_bytes());
            report(&bytes);
        }
        #[cfg(target_arch = "x86_64")]
        {
            let context = context.cast::<libc::ucontext_t>();
            (*context).uc_mcontext.gregs[libc::REG_RAX as usize] = -(libc::EPERM as i64);
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = context;
    }
}

/// SIGABRT: when the abort follows a failed allocation, say so; `abort()` then goes on.
///
/// Two signs, either enough: `errno` is still `ENOMEM` from the failed `malloc` (unless
/// something in between — printing a backtrace, say — changed it), or the address space is
/// so nearly full that a [`HEADROOM_PROBE`] mapping fails too.
extern "C" fn on_sigabrt(
    _signal: libc::c_int,
    _info: *mut libc::siginfo_t,
    _context: *mut libc::c_void,
) {
    // SAFETY: errno is this thread's — the aborting thread, whose last failed call set it.
    // mmap and munmap are system calls (async-signal-safe); the probe maps fresh anonymous
    // memory nothing else sees, and unmaps it at once.
    unsafe {
        let mut exhausted = *libc::__errno_location() == libc::ENOMEM;
        if !exhausted {
            let probe = libc::mmap(
                std::ptr::null_mut(),
                HEADROOM_PROBE,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            );
            if probe == libc::MAP_FAILED {
                exhausted = true;
            } else {
                libc::munmap(probe, HEADROOM_PROBE);
            }
        }
        if exhausted {
            report(&[REPORT_OUT_OF_MEMORY]);
        }
    }
}

/// An abort with less address space than this left under the memory limit is taken for one
/// the limit caused.
/// The address-space limit: `RLIMIT_AS`, which Linux enforces on every mapping.
pub(crate) const ADDRESS_SPACE_LIMIT: Result<&str, &str> = Ok("RLIMIT_AS");

/// Why `RLIMIT_NPROC` would not bind a child of this process, if it would not.
pub(crate) fn process_limit_unavailable() -> Option<&'static str> {
    ignores_process_limit().then_some(
        "RLIMIT_NPROC does not bind a process with CAP_SYS_ADMIN or CAP_SYS_RESOURCE (this one \
         has them), and no delegated cgroup is used",
    )
}

/// The effective capabilities of this process include CAP_SYS_ADMIN or CAP_SYS_RESOURCE, the
/// two that make the kernel ignore RLIMIT_NPROC.
fn ignores_process_limit() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let caps = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok());
    match caps {
        Some(caps) => caps & (CAP_SYS_ADMIN_AND_RESOURCE) != 0,
        // SAFETY: geteuid has no preconditions.
        None => (unsafe { libc::geteuid() }) == 0,
    }
}

/// `CAP_SYS_ADMIN` (21) and `CAP_SYS_RESOURCE` (24), as bits of a capability set.
const CAP_SYS_ADMIN_AND_RESOURCE: u64 = (1 << 21) | (1 << 24);

/// An abort with less address space than this left under the memory limit is taken for one
/// the limit caused.
const HEADROOM_PROBE: usize = 16 << 20;

/// This process's pid, for filters that let a child signal only itself.
pub(crate) fn own_pid() -> u32 {
    std::process::id()
}
