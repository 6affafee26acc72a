//! An uncaught JS exception, reported to the parent as a Rust child reports a panic.
//!
//! The core's panic hook writes its `PANIC` frame through the parent port's endpoint, which
//! is not public. So this module first flushes every queued message (after which nothing else
//! writes to the port: the JS thread is here, and the delivery thread only reads), then writes
//! the frame to descriptor 3 itself: the parent port keeps the descriptor number it was
//! inherited with. A core `ParentPort::report_panic` would make this unnecessary.

use utility_process_wire::{FrameEncoder, PanicReport, ENVELOPE_ROOM};

/// The parent port's descriptor (`docs/PROTOCOL.md`, section 1).
const PORT_FD: i32 = 3;

/// The largest report this sends: within the smallest frame limit a parent can set (its
/// envelope room), so it is never a protocol violation.
const MAX_REPORT: u32 = ENVELOPE_ROOM;

/// How much of a message or file name is kept.
const MAX_TEXT: usize = 1024;

pub(crate) fn report(message: String, file: String, line: u32, column: u32) {
    let Ok(port) = utility_process::parent_port() else {
        return;
    };
    port.flush();
    let report = PanicReport {
        message: truncate(message),
        file: truncate(file),
        line,
        column,
        thread: Some("main".to_owned()),
    };
    let mut frame = Vec::new();
    if FrameEncoder::new(MAX_REPORT)
        .panic(&mut frame, &report)
        .is_ok()
    {
        crate::sys::write_all(PORT_FD, &frame);
    }
}

/// `text` cut to at most [`MAX_TEXT`] bytes, at a character boundary.
fn truncate(mut text: String) -> String {
    if text.len() > MAX_TEXT {
        let mut end = MAX_TEXT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}
