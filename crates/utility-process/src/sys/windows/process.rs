//! How a Windows child's end is read, and its name.

use std::io;

/// A child's exit code, as `GetExitCodeProcess` gives it.
pub(crate) type RawExit = u32;

pub(crate) use super::exit::{classify, Exit};

/// The service name is the child's `STARTUPINFOW.lpTitle` already (see `spawn.rs`): nothing
/// to set from inside.
pub(crate) fn set_process_name(_name: &str) -> io::Result<()> {
    Ok(())
}
