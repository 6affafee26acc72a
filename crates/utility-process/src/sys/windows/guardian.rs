//! No guardian on Windows: each child's job object is killed when the parent's handle to it
//! closes, however the parent ends (kill-on-close), which is what the Unix guardian process
//! gives. The type exists so that the driver reads the same on every OS; it has no value.

use std::io;

/// A guardian that cannot exist on Windows.
#[derive(Debug)]
pub(crate) enum Guardian {}

impl Guardian {
    /// Always `Unsupported`: see the module documentation.
    pub(crate) fn start() -> io::Result<Guardian> {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }
}
