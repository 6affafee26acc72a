//! The addon's only `unsafe` code: JS buffers over shared memory, and writing the parent
//! port's descriptor directly for a `PANIC` frame.
#![allow(unsafe_code)]

use napi::{Env, JsUnknown, Result};
use utility_process::SharedBuffer;

/// Payloads up to this size are copied into a fresh JS buffer, which is cheaper than an
/// external buffer with a finalizer; larger ones hand their allocation over to JS.
const COPY_BELOW: usize = 4096;

/// A JS `Buffer` holding `bytes`.
pub(crate) fn buffer_from_vec(env: &Env, bytes: Vec<u8>) -> Result<JsUnknown> {
    let value = if bytes.len() < COPY_BELOW {
        env.create_buffer_copy(&bytes)?
    } else {
        env.create_buffer_with_data(bytes)?
    };
    Ok(value.into_raw().into_unknown())
}

/// A JS `Buffer` over a received shared buffer: the mapping itself when it is writable (JS
/// writes reach every holder; the mapping lives until the `Buffer` is collected), a copy when
/// it is read-only (a JS write into a read-only mapping would crash the process).
pub(crate) fn buffer_from_shared(env: &Env, mut buffer: SharedBuffer) -> Result<JsUnknown> {
    let Some(bytes) = buffer.as_mut_slice().filter(|b| !b.is_empty()) else {
        return Ok(env
            .create_buffer_copy(buffer.as_slice())?
            .into_raw()
            .into_unknown());
    };
    let (data, len) = (bytes.as_mut_ptr(), bytes.len());
    // SAFETY: `data` points to `len` writable bytes of `buffer`'s mapping, which stays mapped
    // for as long as `buffer` lives; the finalizer, which node runs once the JS `Buffer` is
    // unreachable, is what drops `buffer`. Moving `buffer` into the hint does not move the
    // mapping.
    let value = unsafe { env.create_buffer_with_borrowed_data(data, len, buffer, |b, _| drop(b)) }?;
    Ok(value.into_raw().into_unknown())
}

/// Writes all of `bytes` to descriptor `fd`, waiting while a non-blocking socket is full.
/// Gives up quietly on any other error: this is a best-effort report on the way out.
pub(crate) fn write_all(fd: i32, mut bytes: &[u8]) {
    // Only a socket can be the parent port: never write a report into a file or a terminal.
    // SAFETY: `stat` is plain data, and fstat only fills it.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat on any integer is safe; a closed descriptor only fails.
    if unsafe { libc::fstat(fd, &mut stat) } != 0 || stat.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return;
    }
    while !bytes.is_empty() {
        // SAFETY: `bytes` is valid for reads of its length; MSG_NOSIGNAL turns a gone parent
        // into EPIPE instead of SIGPIPE.
        let n = unsafe { libc::send(fd, bytes.as_ptr().cast(), bytes.len(), libc::MSG_NOSIGNAL) };
        if n >= 0 {
            bytes = &bytes[n as usize..];
            continue;
        }
        match std::io::Error::last_os_error().kind() {
            std::io::ErrorKind::Interrupted => {}
            std::io::ErrorKind::WouldBlock => {
                let mut poll = libc::pollfd {
                    fd,
                    events: libc::POLLOUT,
                    revents: 0,
                };
                // SAFETY: one valid pollfd; waits at most a second per turn.
                if unsafe { libc::poll(&mut poll, 1, 1000) } <= 0 {
                    return;
                }
            }
            _ => return,
        }
    }
}

// ---- the parent port, read on node's own thread ------------------------------------------

use std::ffi::c_void;
use std::os::raw::c_int;

use napi::sys as napi_sys;

extern "C" {
    // libuv, exported by the node binary that loads this addon.
    fn uv_handle_size(kind: c_int) -> usize;
    fn uv_poll_init(lp: *mut c_void, handle: *mut c_void, fd: c_int) -> c_int;
    fn uv_poll_start(
        handle: *mut c_void,
        events: c_int,
        cb: extern "C" fn(*mut c_void, c_int, c_int),
    ) -> c_int;
    fn uv_poll_stop(handle: *mut c_void) -> c_int;
}

/// `UV_POLL` in libuv's `uv_handle_type` (stable since libuv 1.0).
const UV_POLL: c_int = 8;
/// `UV_READABLE`.
const UV_READABLE: c_int = 1;

/// A libuv poll handle on one descriptor, on node's loop, calling `on_ready` on the JS thread
/// whenever the descriptor is readable (level-triggered) while started. It lives as long as
/// the process: node's loop may hold it until exit.
#[derive(Debug)]
pub(crate) struct Poll {
    handle: *mut c_void,
    started: bool,
}

impl Poll {
    /// A poll handle on `fd`, on the loop of `env`.
    pub(crate) fn new(env: &Env, fd: i32) -> Result<Poll> {
        let lp = env.get_uv_event_loop()?;
        // SAFETY: uv_handle_size only reads its argument.
        let size = unsafe { uv_handle_size(UV_POLL) };
        // Leaked on purpose: libuv keeps a pointer to the handle in its loop until it is
        // closed, and this one is never closed (it is needed until the process ends).
        let handle = Box::leak(vec![0u64; size.div_ceil(8)].into_boxed_slice())
            .as_mut_ptr()
            .cast::<c_void>();
        // SAFETY: `handle` is zeroed memory of the size libuv says a poll handle needs, aligned
        // to 8, never freed; `lp` is node's loop, and this runs on its thread.
        let status = unsafe { uv_poll_init(lp.cast(), handle, fd) };
        if status != 0 {
            return Err(napi::Error::from_reason(format!(
                "uv_poll_init failed ({status})"
            )));
        }
        Ok(Poll {
            handle,
            started: false,
        })
    }

    pub(crate) fn start(&mut self, on_ready: extern "C" fn(*mut c_void, c_int, c_int)) {
        if !self.started {
            // SAFETY: an initialised poll handle, on the loop's thread.
            self.started = unsafe { uv_poll_start(self.handle, UV_READABLE, on_ready) } == 0;
        }
    }

    pub(crate) fn stop(&mut self) {
        if self.started {
            // SAFETY: an initialised poll handle, on the loop's thread.
            unsafe { uv_poll_stop(self.handle) };
            self.started = false;
        }
    }
}

/// A JS function to call from a libuv callback (no JS on the stack), through
/// `napi_make_callback` so that `process.nextTick` callbacks and promise jobs run after it, as
/// they do after any of node's own I/O callbacks.
#[derive(Debug)]
pub(crate) struct Callback {
    env: napi_sys::napi_env,
    function: napi_sys::napi_ref,
    context: napi_sys::napi_async_context,
}

impl Callback {
    pub(crate) fn new(env: &Env, function: &napi::JsFunction) -> Result<Callback> {
        use napi::NapiRaw;
        let raw = env.raw();
        let mut function_ref = std::ptr::null_mut();
        let mut name = std::ptr::null_mut();
        let mut context = std::ptr::null_mut();
        let mut resource = std::ptr::null_mut();
        // SAFETY: valid env and values on the JS thread; out-pointers to locals.
        unsafe {
            check(napi_sys::napi_create_reference(
                raw,
                function.raw(),
                1,
                &mut function_ref,
            ))?;
            check(napi_sys::napi_create_string_utf8(
                raw,
                c"utility-process".as_ptr(),
                15,
                &mut name,
            ))?;
            // Node 20 refuses a null resource, whatever its documentation says.
            check(napi_sys::napi_create_object(raw, &mut resource))?;
            check(napi_sys::napi_async_init(raw, resource, name, &mut context))?;
        }
        Ok(Callback {
            env: raw,
            function: function_ref,
            context,
        })
    }

    /// Calls the function with the arguments `args` builds, from a libuv callback on the JS
    /// thread. An exception it throws is handed to node as uncaught.
    pub(crate) fn call(&self, args: impl FnOnce(&Env) -> Result<Vec<JsUnknown>>) {
        use napi::NapiRaw;
        let raw = self.env;
        // SAFETY: `raw` is the env of node's main thread, on which libuv runs this; the handle
        // scope frees the values made here when it closes.
        unsafe {
            let mut scope = std::ptr::null_mut();
            if napi_sys::napi_open_handle_scope(raw, &mut scope) != napi_sys::Status::napi_ok {
                return;
            }
            let env = Env::from_raw(raw);
            let mut function = std::ptr::null_mut();
            let mut recv = std::ptr::null_mut();
            if let (Ok(args), napi_sys::Status::napi_ok, napi_sys::Status::napi_ok) = (
                args(&env),
                napi_sys::napi_get_reference_value(raw, self.function, &mut function),
                // make_callback wants an object as `this`: node's own callbacks get one too.
                napi_sys::napi_get_global(raw, &mut recv),
            ) {
                let argv: Vec<napi_sys::napi_value> = args.iter().map(|a| a.raw()).collect();
                let mut result = std::ptr::null_mut();
                let status = napi_sys::napi_make_callback(
                    raw,
                    self.context,
                    recv,
                    function,
                    argv.len(),
                    argv.as_ptr(),
                    &mut result,
                );
                if status == napi_sys::Status::napi_pending_exception {
                    let mut error = std::ptr::null_mut();
                    napi_sys::napi_get_and_clear_last_exception(raw, &mut error);
                    napi_sys::napi_fatal_exception(raw, error);
                }
            }
            napi_sys::napi_close_handle_scope(raw, scope);
        }
    }
}

fn check(status: napi_sys::napi_status) -> Result<()> {
    if status == napi_sys::Status::napi_ok {
        Ok(())
    } else {
        Err(napi::Error::from_reason(format!(
            "Node-API call failed ({status})"
        )))
    }
}
