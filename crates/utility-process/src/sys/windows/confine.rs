//! Confinement on Windows: the limits a child's job object enforces, and no sandbox yet.
//!
//! A `Sandbox` is refused before the child starts (`Missing::WindowsToken`, in `child.rs`):
//! the restricted token, low integrity level and AppContainer that Chromium's sandbox builds on
//! are not written yet, and a child that asked for a sandbox never runs unconfined.

use crate::{Backend, Limit};

/// What enforces `limit` on Windows (see `Limits::backend`): the child's job object, or
/// nothing.
///
/// See `JOBOBJECT_BASIC_LIMIT_INFORMATION`
/// (learn.microsoft.com/windows/win32/api/winnt/ns-winnt-jobobject_basic_limit_information).
pub(crate) fn backend(limit: Limit) -> Backend {
    match limit {
        Limit::Memory => Backend::JobObject("JOB_OBJECT_LIMIT_PROCESS_MEMORY"),
        Limit::CpuTime => Backend::JobObject("JOB_OBJECT_LIMIT_PROCESS_TIME"),
        Limit::Processes => Backend::JobObject("JOB_OBJECT_LIMIT_ACTIVE_PROCESS"),
        Limit::OpenFiles => Backend::Unavailable("Windows has no per-process limit on handles"),
        Limit::FileSize => Backend::Unavailable("Windows has no per-process limit on file size"),
    }
}

/// Nothing runs before `main` on Windows: there is no second sandbox stage to apply.
pub(crate) fn keep_constructor() {}
