//! Sending: frames into the send buffer, written from the caller's thread, the rest by a
//! flusher on the library's thread.

use super::*;

impl Endpoint {
    /// Appends a frame built by `build`, with `carried` to go with its first byte, and writes
    /// it now if nothing is waiting before it.
    ///
    /// `build` appends one whole frame to the buffer, or leaves it as it was and fails. On any
    /// error the carried descriptors are dropped (closed).
    pub(crate) fn send_frame<F>(
        self: &Arc<Self>,
        build: F,
        carried: Vec<Carried>,
    ) -> Result<(), SendError>
    where
        F: FnOnce(&FrameEncoder, &mut Vec<u8>) -> Result<(), utility_process_wire::Error>,
    {
        let mut out = lock(&self.outbound);
        if out.closed {
            return Err(SendError::Closed);
        }
        let queued = out.buf.len() - out.sent;
        if queued >= self.limits.max_queued_bytes {
            return Err(SendError::QueueFull {
                queued,
                limit: self.limits.max_queued_bytes,
            });
        }
        // Refused before anything is queued: the port stays as it was.
        if !carried.is_empty() && !self.channel.carries_attachments() {
            return Err(SendError::Unsupported);
        }
        if !carried.is_empty() && out.queued_fds + carried.len() > MAX_QUEUED_FDS {
            return Err(SendError::TooManyFds {
                queued: out.queued_fds,
                limit: MAX_QUEUED_FDS,
            });
        }
        // A `Serialize` impl that panics must not leave half a frame in the buffer: that would
        // corrupt every frame after it.
        let mark = out.buf.len();
        let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            build(&self.encoder, &mut out.buf)
        }));
        out.posts += 1;
        match built {
            Ok(result) => result.map_err(SendError::Frame)?,
            Err(panic) => {
                out.buf.truncate(mark);
                drop(out);
                std::panic::resume_unwind(panic);
            }
        }
        if !carried.is_empty() {
            out.queued_fds += carried.len();
            out.batches.push_back(OutBatch {
                offset: mark,
                items: carried,
            });
        }
        if out.flushing {
            return Ok(());
        }
        let now = Instant::now();
        let burst = out
            .last_post
            .is_some_and(|last| now.saturating_duration_since(last) < BURST_GAP);
        out.last_post = Some(now);
        if burst {
            out.flushing = true;
            drop(out);
            self.spawn_flusher();
            return Ok(());
        }
        match self.write_out(&mut out) {
            Ok(Progress::Done) => Ok(()),
            Ok(Progress::WouldBlock | Progress::WaitingFor(_)) => {
                out.flushing = true;
                drop(out);
                self.spawn_flusher();
                Ok(())
            }
            Err(_) => {
                // The peer is gone: this frame and anything behind it can never arrive.
                out.discard();
                Err(SendError::Closed)
            }
        }
    }

    /// Writes as much of the send buffer as the socket takes.
    pub(super) fn write_out(&self, out: &mut Outbound) -> io::Result<Progress> {
        while out.sent < out.buf.len() {
            let sent = out.sent;
            let written = match out.batches.front() {
                Some(batch) if batch.offset == sent => {
                    for item in &batch.items {
                        if let Carried::Port(port) = item {
                            if !port.is_drained() {
                                return Ok(Progress::WaitingFor(Arc::clone(port)));
                            }
                        }
                    }
                    // Never reach into the next frame that carries descriptors.
                    let end = out.batches.get(1).map_or(out.buf.len(), |next| next.offset);
                    let objects: Vec<sys::BorrowedObject<'_>> =
                        batch.items.iter().map(Carried::as_object).collect();
                    self.channel.send(&out.buf[sent..end], &objects)
                }
                next => {
                    let end = next.map_or(out.buf.len(), |batch| batch.offset);
                    self.channel.send(&out.buf[sent..end], &[])
                }
            };
            match written {
                Ok(n) => {
                    if out.batches.front().is_some_and(|b| b.offset == sent) {
                        // The descriptors are in the kernel's hands now: close ours. A port
                        // sent away is gone from this process.
                        if let Some(batch) = out.batches.pop_front() {
                            out.queued_fds -= batch.items.len();
                        }
                    }
                    out.sent += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Progress::WouldBlock),
                Err(e) => return Err(e),
            }
        }
        out.buf.clear();
        out.sent = 0;
        if out.buf.capacity() > KEEP_CAPACITY && !out.release_armed {
            // Kept for the next burst or large message (refilling fresh memory costs more than
            // the copy), until a round of SPARE_IDLE passes without a post.
            out.release_armed = true;
            self.arm_release(out);
        }
        Ok(Progress::Done)
    }

    /// Starts the timer that frees the large empty send buffer once posts stop; without the
    /// library's thread, frees it now.
    fn arm_release(&self, out: &mut Outbound) {
        let Ok(driver) = crate::driver::driver() else {
            out.buf = Vec::new();
            out.release_armed = false;
            return;
        };
        let me = self.me.clone();
        let mut seen = out.posts;
        driver.handle().spawn(async move {
            loop {
                tokio::time::sleep(SPARE_IDLE).await;
                let Some(endpoint) = me.upgrade() else {
                    return;
                };
                let mut out = lock(&endpoint.outbound);
                if out.buf.capacity() <= KEEP_CAPACITY {
                    out.release_armed = false;
                    return;
                }
                if out.posts == seen && out.buf.is_empty() {
                    let idle = std::mem::take(&mut out.buf);
                    out.release_armed = false;
                    drop(out);
                    // Unmapping a large buffer takes a while: not under the lock.
                    drop(idle);
                    return;
                }
                seen = out.posts;
            }
        });
    }

    /// Whether nothing waits to be written (or nothing ever will be: the port is closed).
    pub(super) fn is_drained(&self) -> bool {
        let out = lock(&self.outbound);
        out.closed || out.sent == out.buf.len()
    }

    /// Waits until the send queue has been written out (or the port is closed): room for a
    /// post that found the queue full.
    pub(crate) async fn drained(&self) {
        let drained = self.drained.notified();
        tokio::pin!(drained);
        drained.as_mut().enable();
        if !self.is_drained() {
            drained.await;
        }
    }

    /// Starts a task on the library's thread that writes the waiting bytes as room appears.
    pub(super) fn spawn_flusher(self: &Arc<Self>) {
        let endpoint = Arc::clone(self);
        let driver = match crate::driver::driver() {
            Ok(driver) => driver,
            Err(_) => {
                // No thread to flush from: fall back to flushing on this one.
                endpoint.flush_blocking();
                return;
            }
        };
        driver.handle().spawn(async move {
            let registration = match endpoint.channel.register(sys::Interest::Writable) {
                Ok(registration) => registration,
                Err(_) => {
                    endpoint.flush_blocking();
                    return;
                }
            };
            loop {
                let progress = {
                    let mut out = lock(&endpoint.outbound);
                    match endpoint.write_out(&mut out) {
                        Ok(Progress::Done) => {
                            out.flushing = false;
                            drop(out);
                            endpoint.drained.notify_waiters();
                            return;
                        }
                        Ok(progress) => progress,
                        Err(_) => {
                            out.discard();
                            out.flushing = false;
                            drop(out);
                            endpoint.drained.notify_waiters();
                            return;
                        }
                    }
                };
                match progress {
                    Progress::WaitingFor(port) => {
                        let drained = port.drained.notified();
                        tokio::pin!(drained);
                        drained.as_mut().enable();
                        if !port.is_drained() {
                            drained.await;
                        }
                    }
                    _ => match registration.writable().await {
                        Ok(ready) => ready.retry(),
                        Err(_) => {
                            lock(&endpoint.outbound).flushing = false;
                            endpoint.flush_blocking();
                            return;
                        }
                    },
                }
            }
        });
    }

    /// Writes every waiting byte, blocking this thread until the socket has taken them all or
    /// the peer is gone. Used when a process is about to exit.
    pub(crate) fn flush_blocking(&self) {
        loop {
            let mut out = lock(&self.outbound);
            match self.write_out(&mut out) {
                Ok(Progress::Done) => {
                    drop(out);
                    // Handed over is not yet sent where writes complete later (Windows): a
                    // process that exits now would cancel the last write.
                    self.channel.wait_sent();
                    return;
                }
                Ok(Progress::WouldBlock) => {
                    drop(out);
                    if self.channel.wait(sys::Interest::Writable, None).is_err() {
                        return;
                    }
                }
                Ok(Progress::WaitingFor(port)) => {
                    drop(out);
                    port.flush_blocking();
                }
                Err(_) => {
                    out.discard();
                    return;
                }
            }
        }
    }

    /// Appends a last frame behind everything waiting and writes it all, blocking for up to
    /// five seconds per stall. For a panic hook: it never waits for a lock this thread may
    /// hold already, and gives up rather than hang a dying process.
    pub(crate) fn send_last_words<F>(&self, append: F)
    where
        F: FnOnce(&FrameEncoder, &mut Vec<u8>),
    {
        let mut out = match self.outbound.try_lock() {
            Ok(out) => out,
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {
                // Another thread is mid-send; give it a moment, then go ahead only if it is done.
                std::thread::sleep(Duration::from_millis(10));
                match self.outbound.try_lock() {
                    Ok(out) => out,
                    Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
                    Err(std::sync::TryLockError::WouldBlock) => return,
                }
            }
        };
        if out.closed {
            return;
        }
        append(&self.encoder, &mut out.buf);
        loop {
            match self.write_out(&mut out) {
                Ok(Progress::WouldBlock) => {
                    let ready = self
                        .channel
                        .wait(sys::Interest::Writable, Some(Duration::from_secs(5)));
                    if !matches!(ready, Ok(true)) {
                        return;
                    }
                }
                _ => return,
            }
        }
    }

    /// Closes the port: the peer reads end-of-file, and sends and receives here end.
    pub(crate) fn close(&self) {
        lock(&self.outbound).discard();
        self.spare.release();
        let mut inbound = lock(&self.inbound);
        inbound.eof = true;
        inbound.batches.clear();
        inbound.prefix = None;
        inbound.buf = Arc::default();
        inbound.head = 0;
        drop(inbound);
        self.channel.shutdown();
        // What the peer had already written stays in the socket until the last holder of the
        // descriptor closes it, ports inside it included: read it out and drop it now, so that
        // those ports close and their peers see it.
        let mut scratch = Vec::with_capacity(READ_CHUNK);
        loop {
            scratch.clear();
            let mut objects = Vec::new();
            match self.channel.recv(&mut scratch, usize::MAX, &mut objects) {
                Ok(received) if received > 0 => {}
                _ => break,
            }
        }
    }
}
