//! Turning an event's signal into a tokio wake-up, without a completion port and without
//! polling.
//!
//! The channel does overlapped I/O with one event per operation (see `channel.rs` for why no
//! IOCP). To await such an event from async code, [`EventWaker::arm`] registers a one-shot
//! thread-pool wait on it (`RegisterWaitForSingleObject` with `WT_EXECUTEONLYONCE`); when the
//! event is signalled, a pool thread runs [`on_signal`], which wakes every task waiting on the
//! [`Notify`]. No thread of ours sleeps or loops: the system thread pool multiplexes all waits
//! (up to 63 per pool thread), so ten thousand idle channels cost no threads of their own.
//!
//! A registration outlives the future that made it if that future is dropped; it then fires
//! into a `Notify` nobody waits on, which is harmless. It is released (blocking until a running
//! callback returns) before the next one is made and when the waker is dropped, so the
//! callback never sees freed memory.

use std::ffi::c_void;
use std::fmt;
use std::io;
use std::os::windows::io::{AsRawHandle, BorrowedHandle};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use tokio::sync::Notify;
use windows_sys::Win32::Foundation::{HANDLE, INVALID_HANDLE_VALUE};
use windows_sys::Win32::System::Threading::{
    RegisterWaitForSingleObject, UnregisterWaitEx, INFINITE, WT_EXECUTEINWAITTHREAD,
    WT_EXECUTEONLYONCE,
};

/// What the thread-pool callback touches: kept at a fixed address (boxed) for as long as any
/// registration may call back.
#[derive(Debug, Default)]
struct Shared {
    /// Woken (all waiters) when the registered event is signalled.
    notify: Notify,
    /// A registration is live and has not fired yet.
    armed: AtomicBool,
}

/// A wait registration handle from `RegisterWaitForSingleObject`.
struct Registration(HANDLE);

// SAFETY: a wait handle is a process-wide identifier that any thread may pass to
// UnregisterWaitEx; we only do so under the waker's mutex.
unsafe impl Send for Registration {}

/// One direction's bridge from event signals to tokio wake-ups.
pub(crate) struct EventWaker {
    /// The callback's context.
    shared: Box<Shared>,
    /// The current registration, if any (fired or not).
    registration: Mutex<Option<Registration>>,
}

impl fmt::Debug for EventWaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventWaker")
            .field("armed", &self.shared.armed.load(Ordering::Relaxed))
            .finish()
    }
}

impl EventWaker {
    /// A waker with no registration.
    pub(crate) fn new() -> EventWaker {
        EventWaker {
            shared: Box::default(),
            registration: Mutex::new(None),
        }
    }

    /// The `Notify` that [`arm`](Self::arm)'s registration wakes (with `notify_waiters`: a
    /// waiter must be enabled before arming so that a signal in between is not lost).
    pub(crate) fn notify(&self) -> &Notify {
        &self.shared.notify
    }

    /// Makes sure that the next signal of `event` wakes the waiters of [`notify`](Self::notify).
    /// A registration that has not fired yet is kept (it waits on the same event: each channel
    /// direction always arms with the same event).
    ///
    /// The caller keeps `event` open until [`disarm`](Self::disarm) returns or the waker is
    /// dropped: closing an event with a wait registered on it is undefined.
    ///
    /// See `RegisterWaitForSingleObject`
    /// (learn.microsoft.com/windows/win32/api/winbase/nf-winbase-registerwaitforsingleobject).
    pub(crate) fn arm(&self, event: BorrowedHandle<'_>) -> io::Result<()> {
        let mut registration = self.registration.lock().unwrap_or_else(|e| e.into_inner());
        if self.shared.armed.load(Ordering::Acquire) {
            return Ok(());
        }
        if let Some(old) = registration.take() {
            unregister(old);
        }
        self.shared.armed.store(true, Ordering::Release);
        let mut wait: HANDLE = std::ptr::null_mut();
        let context: *const Shared = &*self.shared;
        // SAFETY: `context` points into our box, which lives until `drop` has unregistered
        // this wait (blocking until its callback has returned); `event` stays open as long as
        // the registration (the caller's promise). The callback only touches `Shared`.
        let ok = unsafe {
            RegisterWaitForSingleObject(
                &mut wait,
                event.as_raw_handle(),
                Some(on_signal),
                context.cast::<c_void>(),
                INFINITE,
                WT_EXECUTEONLYONCE | WT_EXECUTEINWAITTHREAD,
            )
        };
        if ok == 0 {
            self.shared.armed.store(false, Ordering::Release);
            return Err(io::Error::last_os_error());
        }
        *registration = Some(Registration(wait));
        Ok(())
    }

    /// Releases the registration, waiting for a callback that is running to return.
    pub(crate) fn disarm(&self) {
        let mut registration = self.registration.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = registration.take() {
            unregister(old);
        }
        self.shared.armed.store(false, Ordering::Release);
    }
}

impl Drop for EventWaker {
    fn drop(&mut self) {
        self.disarm();
    }
}

/// Cancels a wait registration and blocks until its callback, if running, has returned.
///
/// See `UnregisterWaitEx`
/// (learn.microsoft.com/windows/win32/api/winbase/nf-winbase-unregisterwaitex).
fn unregister(registration: Registration) {
    // SAFETY: the handle came from RegisterWaitForSingleObject and is unregistered once (it
    // was taken out of the mutex). INVALID_HANDLE_VALUE makes the call wait for callbacks; we
    // are never inside our own callback here. Failure leaves nothing for us to clean up.
    unsafe {
        UnregisterWaitEx(registration.0, INVALID_HANDLE_VALUE);
    }
}

/// The thread-pool callback: the event was signalled.
///
/// # Safety
///
/// `context` is the `Shared` of a live [`EventWaker`] (guaranteed by `arm` and `disarm`).
unsafe extern "system" fn on_signal(context: *mut c_void, _timed_out: bool) {
    // SAFETY: per this function's contract the box behind `context` outlives the callback.
    let shared = unsafe { &*context.cast::<Shared>() };
    shared.armed.store(false, Ordering::Release);
    shared.notify.notify_waiters();
}

#[cfg(test)]
mod tests {
    use super::super::handle;
    use super::*;
    use std::os::windows::io::AsHandle;
    use std::time::Duration;
    use windows_sys::Win32::System::Threading::SetEvent;

    #[test]
    fn a_signal_wakes_an_enabled_waiter_on_a_current_thread_runtime() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let event = handle::event().unwrap();
        let waker = EventWaker::new();
        rt.block_on(async {
            let notified = waker.notify().notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            waker.arm(event.as_handle()).unwrap();
            let raw = event.as_raw_handle() as usize;
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                // SAFETY: the event outlives this thread's use (the test waits for the wake).
                unsafe { SetEvent(raw as HANDLE) };
            });
            tokio::time::timeout(Duration::from_secs(10), notified)
                .await
                .expect("woken");
        });
    }

    #[test]
    fn rearming_after_a_signal_registers_again() {
        let event = handle::event().unwrap();
        let waker = EventWaker::new();
        waker.arm(event.as_handle()).unwrap();
        // SAFETY: the event is open.
        unsafe { SetEvent(event.as_raw_handle()) };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while waker.shared.armed.load(Ordering::Acquire) && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        assert!(
            !waker.shared.armed.load(Ordering::Acquire),
            "the callback ran"
        );
        waker.arm(event.as_handle()).unwrap();
        waker.disarm();
    }
}
