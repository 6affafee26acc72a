//! The Windows backend: the contract of `sys/mod.rs` on Win32, with `windows-sys`.
//!
//! - A port is one end of a **named pipe** (byte mode, overlapped, no completion port: a port
//!   handed to another process must not keep posting into ours), read pull-first and woken by
//!   thread-pool waits (`duplex`, `named_pipe`, `overlapped`, `wake`); every write is started
//!   by one long-lived thread (`issuer`), since a thread's exit cancels the I/O it started.
//!   What travels attached to a message is a **handle**, carried by a chunk layer and always
//!   duplicated by the parent, which holds each child's process handle (`chunk`: the broker).
//!   `channel` fits this to the contract.
//! - A child is started by `CreateProcessW` with an explicit handle list, suspended, put in a
//!   **job object** of its own (kill-on-close, the limits), then resumed (`spawn`, `inherit`,
//!   `job`, `cmdline`); `child` is the life the neutral layer sees.
//! - A shared buffer is a pagefile-backed **section**; a frozen one travels as a handle that
//!   can only map it read-only (`section`, fitted to the contract by `shm` and `mapping`).
//! - A sandboxed child starts in an **AppContainer** with no capabilities, its job gets UI
//!   and process limits, and the parent checks its token and job before it runs
//!   (`app_container`, `token`, `confine`; the story is in `sandbox/windows.rs`).
//!
//! Every Win32 call cites the Microsoft Learn page it relies on; every `unsafe` block says why
//! it is sound.

use std::io;
use std::os::windows::io::{AsHandle, BorrowedHandle, OwnedHandle};

mod app_container;
pub(crate) mod channel;
pub(crate) mod child;
mod chunk;
mod cmdline;
pub(crate) mod confine;
mod duplex;
mod exit;
pub(crate) mod guardian;
mod handle;
mod inherit;
mod issuer;
mod job;
pub(crate) mod mapping;
mod named_pipe;
mod overlapped;
pub(crate) mod process;
mod section;
pub(crate) mod shm;
mod spawn;
pub(crate) mod stdio;
mod stdio_pipe;
mod token;
mod wake;

/// The AppContainer profile name for children of the executable at a path (see
/// `app_container`).
pub(crate) use app_container::profile_name as app_container_name;

/// An OS object that travels between processes attached to a message: a handle.
pub(crate) type Object = OwnedHandle;

/// An [`Object`] borrowed for a send.
pub(crate) type BorrowedObject<'a> = BorrowedHandle<'a>;

/// Borrows `object` for a send.
pub(crate) fn borrow(object: &Object) -> BorrowedObject<'_> {
    object.as_handle()
}

/// What a channel's blocking wait waits for.
pub(crate) use duplex::Interest;

/// The environment variable that tells a child which inherited handle is its parent port
/// (`docs/PROTOCOL.md`, section 1): the handle's value, in decimal.
pub(crate) const PORT_ENV: &str = "UTILITY_PROCESS_PORT_HANDLE";

/// Takes the parent port this process inherited, once per process, no longer inheritable
/// (programs this child starts must not inherit it).
///
/// # Errors
///
/// Why this process is not a utility process: the variable is missing or no number, the
/// handle is already taken, or it is no pipe.
pub(crate) fn take_parent_port() -> Result<channel::Channel, String> {
    use std::sync::atomic::{AtomicBool, Ordering};
    static TAKEN: AtomicBool = AtomicBool::new(false);
    let value = match std::env::var(PORT_ENV) {
        Ok(value) => value,
        Err(_) => return Err(format!("{PORT_ENV} is not set")),
    };
    let Ok(value) = value.parse::<u64>() else {
        return Err(format!("{PORT_ENV} is {value:?}, not a handle's value"));
    };
    if TAKEN.swap(true, Ordering::SeqCst) {
        return Err("the parent port was already taken".into());
    }
    let handle = adopt_inherited(value).map_err(|e| format!("the parent port: {e}"))?;
    channel::Channel::parent_port(handle).map_err(|e| match e.kind() {
        io::ErrorKind::InvalidData => format!("handle {value} is not a pipe"),
        _ => format!("the parent port: {e}"),
    })
}

/// Takes the inherited handle whose value is `value` as this process's own, and stops it from
/// being inherited further.
///
/// See `GetHandleInformation` and `SetHandleInformation`
/// (learn.microsoft.com/windows/win32/api/handleapi/nf-handleapi-sethandleinformation).
fn adopt_inherited(value: u64) -> io::Result<OwnedHandle> {
    use std::os::windows::io::{FromRawHandle, RawHandle};
    use windows_sys::Win32::Foundation::{
        GetHandleInformation, SetHandleInformation, HANDLE_FLAG_INHERIT,
    };
    // A real handle's value is positive, below 2^31 and a multiple of 4 (not a pseudo handle).
    if value == 0 || value >= 1 << 31 || value % 4 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a handle's value",
        ));
    }
    let raw = value as usize as RawHandle;
    let mut flags = 0u32;
    // SAFETY: GetHandleInformation only reads the handle table; it fails for a closed value.
    if unsafe { GetHandleInformation(raw, &mut flags) } == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the value names an open handle of this process (checked just above), which the
    // protocol hands to this library, and `take_parent_port` wraps it only once.
    let handle = unsafe { OwnedHandle::from_raw_handle(raw) };
    // SAFETY: changes a flag of the handle we now own.
    if unsafe { SetHandleInformation(raw, HANDLE_FLAG_INHERIT, 0) } == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(handle)
}

/// Registers `f` to run when the process exits through `exit` (returning from `main`, or
/// `std::process::exit`): the C runtime's `atexit`, which both the GNU and the MSVC targets
/// link. See `atexit` (learn.microsoft.com/cpp/c-runtime-library/reference/atexit).
pub(crate) fn at_exit(f: extern "C" fn()) {
    extern "C" {
        fn atexit(f: extern "C" fn()) -> i32;
    }
    // SAFETY: `f` is a plain function with the signature atexit expects; it lives forever.
    unsafe { atexit(f) };
}

/// Huge pages need a privilege (`SeLockMemoryPrivilege`) a desktop application does not
/// have: receive buffers stay on normal pages.
pub(crate) fn advise_huge_pages(_buf: &mut Vec<u8>) {}
