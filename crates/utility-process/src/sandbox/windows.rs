//! The Windows sandbox: an AppContainer with no capabilities and a locked-down job, checked
//! by the parent in the suspended child before its first instruction. What a process without
//! administrator rights can have, as Chromium's sandbox builds it.
//!
//! # The layers
//!
//! 1. **An AppContainer** (Windows 8 and later). The child starts in this executable's
//!    AppContainer profile (`PROC_THREAD_ATTRIBUTE_SECURITY_CAPABILITIES` in the attribute
//!    list of its `CreateProcessW`), with no capabilities. That implies low integrity (it can
//!    write nothing of the user's), no network (outbound connections, listening and loopback
//!    are all closed), and no access to any file, registry key, named object or process
//!    whose access list does not name its container or `ALL APPLICATION PACKAGES` — none of
//!    the user's files do. [`Sandbox::allow_network`] adds the `internetClient` and
//!    `privateNetworkClientServer` capabilities, and nothing else.
//! 2. **The job's limits** (the job every child already has, kill-on-close): the UI limits
//!    (no other desktop, display settings, logging off, global atoms, USER handles of outside
//!    processes, clipboard read or write, system parameters) and one active process — the
//!    child cannot start another — unless [`Sandbox::allow_exec`] (best effort only, below).
//!    [`Limits::processes`](crate::Limits::processes) still applies under it.
//! 3. **The check.** The child is created suspended and put in its job; before its first
//!    thread runs, the parent opens the child's token (`OpenProcessToken` on the process
//!    handle) and reads it: `TokenIsAppContainer`, the container's SID (this profile's), the
//!    integrity level (low or below), the capabilities (exactly those asked), and reads the
//!    job's UI and process limits back. If anything does not hold, the child is terminated
//!    without having run and the fork fails with [`Missing::WindowsUnverified`] saying what
//!    was found. The child's [`status`](super::status) reads its own token and job the same
//!    way.
//!
//! # The profile
//!
//! One AppContainer profile per parent executable, named `utility-process.<hash of the
//! executable's path>` ([`app_container_name`]), created by the first sandboxed fork and
//! reused after; the library never deletes it (another instance of the application may have
//! children in it). An uninstaller deletes it with `DeleteAppContainerProfile`.
//!
//! # Files: what is refused, and what to grant
//!
//! An AppContainer opens a file only if the file's access list grants the container's SID or
//! `ALL APPLICATION PACKAGES` (S-1-15-2-1). The library changes no access list: an access
//! control entry written on a user's files outlives the child (and a crash of the parent),
//! is shared by every child of the profile, and removing it races with other children using
//! the same path. So [`Sandbox::allow_read`] and [`Sandbox::allow_write`] are refused on
//! Windows, best effort or not ([`Missing::AppContainerPaths`]), rather than ignored: grant
//! the access at installation, where it belongs, and leave the paths out.
//!
//! The same holds for **the program itself**: an AppContainer child can start only if it can
//! read and execute its program (and the DLLs beside it, and its working directory).
//! Installers grant `ALL APPLICATION PACKAGES` read and execute on the installation directory
//! (`icacls DIR /grant *S-1-15-2-1:(OI)(CI)RX`); Windows' own directories already are. A
//! program the container cannot open makes `CreateProcessW` fail with access denied, which
//! the fork reports as [`Missing::AppContainerAccess`] naming the program and the grant. A
//! DLL beside it that the container cannot read shows up later, as the child's exit
//! (`STATUS_DLL_NOT_FOUND`).
//!
//! # Ports and handles
//!
//! The child never opens anything by name: its parent port is inherited, and every port,
//! pipe or shared-memory section that travels to it is duplicated into it by the parent
//! (`DuplicateHandle`, which checks no access list). A handle keeps the access it was
//! duplicated with, so what the parent pushes into an AppContainer child stays usable there.
//! A port the child creates itself (`MessageChannel::new` in the child) is a named pipe the
//! child creates and opens; that is not verified on real Windows yet.
//!
//! # Best effort
//!
//! [`Sandbox::best_effort`] applies what can be applied and the fork goes on: where there is
//! no AppContainer (before Windows 8, under Wine) the child gets a restricted copy of the
//! parent's token instead (`CreateRestrictedToken` with `DISABLE_MAX_PRIVILEGE`, integrity
//! lowered to low, started by `CreateProcessAsUserW`): it can write nothing of medium
//! integrity but can read what the user can and use the network. `allow_exec` lifts the
//! process limit (any program may then start, inside the same token and job). The same
//! check runs; what did not hold is logged, and the child's `status()` reports what holds.
//!
//! # Wine
//!
//! Wine (8.0) has no AppContainer (its `CreateAppContainerProfile` is a stub that aborts the
//! caller, so the library never calls it there) and ignores a token's integrity level (a
//! child started with the low-integrity token runs at the parent's, 0x3000). So under Wine
//! a sandbox that is not best effort is refused ([`Missing::AppContainer`]) and a best-effort
//! one runs with what holds — which the check finds to be nothing.

use std::sync::OnceLock;

use super::{Enforcement, Support};

/// What Windows offers that this library can enforce: none of the Linux layers (the
/// Windows ones are reported by `status()` in the child).
pub(super) fn support() -> Support {
    Support {
        seccomp: false,
        landlock_abi: 0,
    }
}

/// What holds in this process, if its parent sandboxed it (the parent sets [`super::ENV`]):
/// read once from the process's own token and job.
pub(super) fn status() -> Option<Enforcement> {
    static STATUS: OnceLock<Option<Enforcement>> = OnceLock::new();
    *STATUS.get_or_init(|| {
        std::env::var_os(super::ENV)
            .is_some_and(|v| v == "windows")
            .then(crate::sys::confine::own_status)
    })
}

/// The name of the AppContainer profile that sandboxed children of this executable run in
/// (Windows only), for an uninstaller's `DeleteAppContainerProfile`: `utility-process.`
/// followed by 16 hexadecimal digits, a hash of the executable's full path. `None` if the
/// executable's path cannot be found.
///
/// # Examples
///
/// ```
/// if let Some(name) = utility_process::sandbox::app_container_name() {
///     assert!(name.starts_with("utility-process."));
/// }
/// ```
pub fn app_container_name() -> Option<String> {
    let exe = std::env::current_exe().ok()?;
    Some(crate::sys::app_container_name(&exe))
}
