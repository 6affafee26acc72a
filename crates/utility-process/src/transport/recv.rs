//! Receiving: reads into the receive buffer, frames decoded from its front, descriptors
//! claimed by the frames that start where they came.

use super::*;

impl Endpoint {
    /// Decodes the next frame, reading the socket if the buffer holds none, without blocking.
    /// The peer closed its end with part of a frame still unread: the partial frame is
    /// dropped (never delivered), and the caller decides whether that was a violation.
    pub(crate) fn closed_mid_frame(&self) -> bool {
        let inbound = lock(&self.inbound);
        inbound.eof && inbound.head < inbound.buf.len()
    }

    pub(crate) fn try_recv(&self) -> Result<TryRecv, RecvError> {
        self.next_frame(Read::Now)
    }

    /// Decodes the next frame from what was already read, reading the socket only if `read`.
    fn next_frame(&self, read: Read) -> Result<TryRecv, RecvError> {
        let mut inbound = lock(&self.inbound);
        let inbound = &mut *inbound;
        loop {
            // The common case first: a whole message without attachments, with the same
            // checks as below and no `Frame` built.
            if let Some((payload, consumed)) =
                self.decoder.plain_message(&inbound.buf[inbound.head..])
            {
                if payload.len() > self.limits.max_message_size {
                    return Err(too_large(payload.len(), self.limits.max_message_size));
                }
                // Descriptors that arrived no later than this frame's end and that no frame
                // claims: this one declares none, so they are nobody's.
                if inbound
                    .batches
                    .front()
                    .is_some_and(|b| b.end <= inbound.decoded + consumed as u64)
                {
                    return Err(RecvError::Descriptors(
                        "descriptors arrived that no message claims",
                    ));
                }
                let frame = Incoming::Message {
                    payload: Payload::owned(Vec::new(), payload.len()),
                    attachments: Vec::new(),
                    objects: Vec::new(),
                };
                return Ok(TryRecv::Frame(take_frame(
                    inbound,
                    &self.spare,
                    frame,
                    consumed,
                )));
            }
            let needed = match self
                .decoder
                .decode(&inbound.buf[inbound.head..])
                .map_err(RecvError::Protocol)?
            {
                Decoded::Frame { frame, consumed } => {
                    // The frame limit leaves room for the envelope; the payload itself is held
                    // to the message limit, as the sender's is.
                    if let Frame::Message { payload, .. } = &frame {
                        if payload.len() > self.limits.max_message_size {
                            return Err(too_large(payload.len(), self.limits.max_message_size));
                        }
                    }
                    let at = inbound.decoded;
                    let claims_fds = matches!(
                        &frame,
                        Frame::Message { attachments, .. }
                            if !attachments.is_empty() && attachments.fd_count() > 0
                    );
                    // Descriptors that came before this frame, or with it when it declares
                    // none, belong to no frame: found now, not when the next frame comes.
                    let unclaimed_end = if claims_fds { at } else { at + consumed as u64 };
                    if inbound
                        .batches
                        .front()
                        .is_some_and(|b| b.end <= unclaimed_end)
                    {
                        return Err(RecvError::Descriptors(
                            "descriptors arrived that no message claims",
                        ));
                    }
                    let frame = match frame {
                        Frame::Hello(hello) => Incoming::Hello {
                            sandboxed: hello.flags & utility_process_wire::Hello::SANDBOXED != 0,
                        },
                        Frame::Panic(report) => Incoming::Panic(report),
                        Frame::Failure(report) => Incoming::Failure(report),
                        Frame::Message {
                            attachments,
                            payload,
                        } => {
                            let count = if attachments.is_empty() {
                                0
                            } else {
                                attachments.fd_count()
                            };
                            let objects = if count == 0 {
                                Vec::new()
                            } else {
                                match inbound.batches.front() {
                                    Some(b)
                                        if b.start <= at
                                            && at < b.end
                                            && b.objects.len() == count =>
                                    {
                                        inbound.queued_fds -= count;
                                        inbound
                                            .batches
                                            .pop_front()
                                            .map(|b| b.objects)
                                            .unwrap_or_default()
                                    }
                                    _ => {
                                        return Err(RecvError::Descriptors(
                                            "a message's descriptors are missing or miscounted",
                                        ))
                                    }
                                }
                            };
                            Incoming::Message {
                                // Filled in below, once the buffer is no longer borrowed.
                                payload: Payload::owned(Vec::new(), payload.len()),
                                attachments: if attachments.is_empty() {
                                    Vec::new()
                                } else {
                                    attachments.iter().collect()
                                },
                                objects,
                            }
                        }
                    };
                    return Ok(TryRecv::Frame(take_frame(
                        inbound,
                        &self.spare,
                        frame,
                        consumed,
                    )));
                }
                Decoded::Incomplete { needed } => needed,
            };
            if inbound.eof {
                return Ok(TryRecv::Closed);
            }
            if read == Read::No {
                return Ok(TryRecv::WouldBlock);
            }
            // Make room for the whole frame (its size is known and within the limit) or for a
            // read of a useful size, whichever is larger.
            let buf = inbound.compact();
            let want = needed.max(buf.len() + READ_CHUNK);
            let additional = want - buf.len();
            if buf.capacity() < want {
                // Into the buffer the last large message left, if there is one.
                if let Some(mut spare) = self.spare.take(want) {
                    spare.extend_from_slice(buf);
                    *buf = spare;
                }
            }
            reserve(buf, additional);
            // A large frame is read up to its last byte and no further: it then fills the
            // buffer exactly and leaves with it, with no copy and nothing left to move down.
            // Small frames are read many at a time. After a large frame, the next one is
            // likely large too: its header is read alone first, so that a read does not take
            // its start with the previous one (whose buffer leaves) and need a copy.
            let have = inbound.buf.len();
            let limit = if needed >= READ_CHUNK {
                needed - have
            } else if inbound.large_last && have < HEADER_LEN {
                HEADER_LEN - have
            } else {
                usize::MAX
            };
            match fill(inbound, &self.channel, limit)? {
                Fill::Read | Fill::PrefixEnded => {}
                Fill::Eof => inbound.eof = true,
                Fill::WouldBlock => return Ok(TryRecv::WouldBlock),
            }
        }
    }

    /// Waits for the next frame. `Ok(None)`: the peer closed its end.
    ///
    /// Must be called within a tokio runtime; the socket is registered with the runtime of the
    /// first call.
    pub(crate) async fn recv(&self) -> Result<Option<Incoming>, RecvError> {
        self.recv_after(false).await
    }

    /// [`recv`](Self::recv) for a caller that has just tried [`try_recv`](Self::try_recv)
    /// itself (`tried`) and found nothing: it does not read the socket again at once.
    ///
    /// The caller's own `try_recv` is the fast path: a frame already there costs no future.
    pub(crate) async fn recv_after(&self, tried: bool) -> Result<Option<Incoming>, RecvError> {
        let mut retried = false;
        let mut skip = tried;
        loop {
            if !std::mem::take(&mut skip) {
                match self.try_recv()? {
                    TryRecv::Frame(frame) => return Ok(Some(frame)),
                    TryRecv::Closed => return Ok(None),
                    TryRecv::WouldBlock => {}
                }
            }
            match self.spin()? {
                TryRecv::Frame(frame) => return Ok(Some(frame)),
                TryRecv::Closed => return Ok(None),
                TryRecv::WouldBlock => {}
            }
            let registration = self.readiness().map_err(RecvError::Io)?;
            let ready = match registration.readable().await {
                Ok(ready) => ready,
                Err(e) if retried => return Err(RecvError::Io(e)),
                Err(_) => {
                    // The runtime it was registered with is gone (a port used by one
                    // `#[tokio::main]` after another's): register anew, once.
                    retried = true;
                    lock(&self.readiness).take();
                    continue;
                }
            };
            match self.try_recv()? {
                TryRecv::Frame(frame) => return Ok(Some(frame)),
                TryRecv::Closed => return Ok(None),
                TryRecv::WouldBlock => ready.retry(),
            }
        }
    }

    /// Waits for the next frame, blocking this thread.
    ///
    /// (A read that waits in the kernel would save the `poll`, but measured slower on one
    /// CPU: 12.2 µs against 10.8 µs per round trip pinned, and no better with two.)
    pub(crate) fn recv_blocking(&self) -> Result<Option<Incoming>, RecvError> {
        loop {
            match self.try_recv_blocking_step()? {
                TryRecv::Frame(frame) => return Ok(Some(frame)),
                TryRecv::Closed => return Ok(None),
                TryRecv::WouldBlock => {}
            }
            let source = self.source();
            source
                .wait(sys::Interest::Readable, None)
                .map_err(RecvError::Io)?;
            match self.try_recv()? {
                TryRecv::Frame(frame) => return Ok(Some(frame)),
                TryRecv::Closed => return Ok(None),
                TryRecv::WouldBlock => {}
            }
        }
    }

    /// One step of a blocking receive: a frame already read, else (in low-latency mode) a
    /// spin, else `WouldBlock` — without the read that would most often find the socket
    /// empty. The caller then waits with `poll`, which is level-triggered (it returns at once
    /// if bytes are waiting), and reads: two system calls per message where a plain blocking
    /// read takes one, instead of three.
    pub(crate) fn try_recv_blocking_step(&self) -> Result<TryRecv, RecvError> {
        match self.next_frame(Read::No)? {
            TryRecv::WouldBlock => self.spin(),
            found => Ok(found),
        }
    }

    /// Sets low-latency mode: a receive that would park spins first, for up to `spin`.
    ///
    /// A process allowed only one CPU does not spin: there, spinning only keeps the peer
    /// (which needs that CPU to answer) from running.
    pub(crate) fn set_spin(&self, spin: Option<Duration>) {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let spin = spin.filter(|_| cpus > 1);
        let nanos = spin.map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        self.spin_max.store(nanos, Ordering::Relaxed);
        self.spin_budget.store(nanos, Ordering::Relaxed);
    }

    /// In low-latency mode, polls the socket for up to the current budget before the caller
    /// parks: an answer that comes within it costs no wake-up (on a VM, a wake-up across CPUs
    /// costs tens of microseconds). The budget adapts: halved (to a sixteenth of the maximum
    /// at least) after a spin that found nothing, so a quiet port soon spins little; back to
    /// the maximum after one that found a frame. A parked receiver uses no CPU.
    fn spin(&self) -> Result<TryRecv, RecvError> {
        let max = self.spin_max.load(Ordering::Relaxed);
        if max == 0 {
            return Ok(TryRecv::WouldBlock);
        }
        let budget = Duration::from_nanos(self.spin_budget.load(Ordering::Relaxed));
        let started = Instant::now();
        while started.elapsed() < budget {
            std::hint::spin_loop();
            match self.try_recv()? {
                TryRecv::WouldBlock => continue,
                found => {
                    self.spin_budget.store(max, Ordering::Relaxed);
                    return Ok(found);
                }
            }
        }
        let halved = (budget.as_nanos() as u64 / 2).max(max / 16);
        self.spin_budget.store(halved, Ordering::Relaxed);
        Ok(TryRecv::WouldBlock)
    }

    /// The socket reads come from now: the prefix while there is one, then the port.
    pub(crate) fn source(&self) -> Channel {
        lock(&self.inbound)
            .prefix
            .clone()
            .unwrap_or_else(|| self.channel.clone())
    }

    /// The current source's registration with the current runtime, made on first use.
    fn readiness(&self) -> io::Result<Arc<Registration>> {
        let source = self.source();
        let mut slot = lock(&self.readiness);
        if let Some(registration) = &*slot {
            if registration.is_for(&source) {
                return Ok(Arc::clone(registration));
            }
        }
        // Release the old registration before making the new one.
        slot.take();
        let registration = Arc::new(source.register(sys::Interest::Readable)?);
        *slot = Some(Arc::clone(&registration));
        Ok(registration)
    }
}

/// The error for a payload over the message size limit.
pub(super) fn too_large(len: usize, max: usize) -> RecvError {
    RecvError::Protocol(utility_process_wire::Error::FrameTooLarge {
        len: len as u64,
        max: max as u32,
    })
}

/// Whether decoding the next frame may read the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Read {
    /// Only what was already read.
    No,
    /// What the socket holds now.
    Now,
}

/// What one read into the receive buffer did.
pub(super) enum Fill {
    Read,
    /// The prefix ended: reads go to the port from now on.
    PrefixEnded,
    Eof,
    WouldBlock,
}

/// Reads once from the current source into the spare capacity of the receive buffer, noting
/// any descriptors that came with the bytes.
pub(super) fn fill(inbound: &mut Inbound, main: &Channel, limit: usize) -> Result<Fill, RecvError> {
    let source = inbound.prefix.clone();
    let channel = source.as_ref().unwrap_or(main);
    let before = inbound.buf_mut().len();
    let mut objects = Vec::new();
    let received = match channel.recv(inbound.buf_mut(), limit, &mut objects) {
        Ok(received) => received,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Fill::WouldBlock),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            let refused = e.get_ref().and_then(|e| e.downcast_ref::<Refused>());
            return Err(RecvError::Descriptors(refused.map_or(
                "the objects sent with a message broke the rules",
                |refused| refused.0,
            )));
        }
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
            return Ok(if source.is_some() {
                inbound.prefix = None;
                Fill::PrefixEnded
            } else {
                Fill::Eof
            })
        }
        Err(e) => return Err(RecvError::Io(e)),
    };
    if received == 0 {
        return Ok(if source.is_some() {
            inbound.prefix = None;
            Fill::PrefixEnded
        } else {
            Fill::Eof
        });
    }
    if !objects.is_empty() {
        inbound.queued_fds += objects.len();
        if inbound.queued_fds > MAX_QUEUED_FDS {
            return Err(RecvError::Descriptors(
                "more descriptors arrived than messages claim",
            ));
        }
        let start = inbound.decoded + (before - inbound.head) as u64;
        inbound.batches.push_back(InBatch {
            start,
            end: start + received as u64,
            objects,
        });
    }
    Ok(Fill::Read)
}

/// Consumes the frame of `consumed` bytes at the front of the buffer; for a message, gives
/// it its payload (whose length the placeholder's `start` holds): see [`Payload`].
pub(super) fn take_frame(
    inbound: &mut Inbound,
    spare: &Arc<Spare>,
    mut frame: Incoming,
    consumed: usize,
) -> Incoming {
    let end = inbound.head + consumed;
    let mut moved_rest = false;
    inbound.large_last = false;
    if let Incoming::Message { payload, .. } = &mut frame {
        let len = payload.start;
        inbound.large_last = len >= READ_CHUNK;
        let rest = inbound.buf.len() - end;
        // A large payload takes the buffer it was read into (unless messages share it, or
        // the buffer is much larger than the payload); the few bytes read after it, if any,
        // move to a buffer of their own. It goes back to the port's spare when dropped.
        let handed_over =
            if len >= READ_CHUNK && rest <= READ_CHUNK && inbound.buf.capacity() / 4 <= len {
                Arc::get_mut(&mut inbound.buf).map(|buf| {
                    if rest == 0 {
                        return std::mem::take(buf);
                    }
                    let room = rest + READ_CHUNK;
                    let mut next = spare.take(room).unwrap_or_else(|| Vec::with_capacity(room));
                    next.extend_from_slice(&buf[end..]);
                    let mut whole = std::mem::replace(buf, next);
                    whole.truncate(end);
                    moved_rest = true;
                    whole
                })
            } else {
                None
            };
        *payload = if let Some(buf) = handed_over {
            Payload {
                start: end - len,
                end,
                data: Data::Owned(buf),
                home: Some(Arc::downgrade(spare)),
            }
        } else if len <= SHARE_MAX && shareable(&inbound.buf) {
            Payload {
                start: end - len,
                end,
                data: Data::Shared(Arc::clone(&inbound.buf)),
                home: None,
            }
        } else {
            Payload::owned(inbound.buf[end - len..end].to_vec(), 0)
        };
    }
    inbound.decoded += consumed as u64;
    if moved_rest {
        // The buffer now holds only what followed the frame.
        inbound.head = 0;
        return frame;
    }
    inbound.head = end;
    if inbound.head >= inbound.buf.len() {
        // Everything read is decoded. A buffer still shared (with the message just decoded,
        // most often) is left as it is: by the next read its messages are usually gone, and
        // that read reuses it.
        if let Some(buf) = Arc::get_mut(&mut inbound.buf) {
            inbound.head = 0;
            buf.clear();
            if buf.capacity() > KEEP_CAPACITY {
                *buf = Vec::new();
            }
        }
    }
    frame
}
