//! What a received message's bytes are, and the spare buffer a port keeps for large ones.

use super::*;

/// The bytes of a received message.
///
/// Three shapes, chosen by the receiver so that no message costs an allocation of its own in
/// the steady state:
///
/// - a small message read in a batch with others **shares** the read buffer (a reference
///   count, no copy): a stream of small messages is decoded without allocating;
/// - a large message **takes over** the read buffer (it was read into a buffer of exactly its
///   size); a very large one goes back to its port when dropped (see [`Spare`]), so the next
///   large message lands in memory that is already mapped;
/// - otherwise (a lone small message: a request, a reply) it is **copied** out.
#[derive(Debug)]
pub(crate) struct Payload {
    pub(super) data: Data,
    pub(super) start: usize,
    pub(super) end: usize,
    pub(super) home: Option<Weak<Spare>>,
}

/// Where a payload's bytes live.
#[derive(Debug)]
pub(super) enum Data {
    Owned(Vec<u8>),
    Shared(Arc<Vec<u8>>),
}

impl Payload {
    /// A payload of `buf[start..]`, owned outright.
    #[inline]
    pub(crate) fn owned(buf: Vec<u8>, start: usize) -> Payload {
        Payload {
            start,
            end: buf.len(),
            data: Data::Owned(buf),
            home: None,
        }
    }

    /// The payload's bytes.
    #[inline]
    pub(crate) fn bytes(&self) -> &[u8] {
        let buf = match &self.data {
            Data::Owned(buf) => buf,
            Data::Shared(chunk) => &**chunk,
        };
        &buf[self.start..self.end]
    }

    /// The payload's bytes, as a vector of their own; its buffer no longer goes back to the
    /// port.
    pub(crate) fn into_vec(mut self) -> Vec<u8> {
        self.home = None;
        match std::mem::replace(&mut self.data, Data::Owned(Vec::new())) {
            Data::Owned(mut buf) => {
                buf.truncate(self.end);
                buf.drain(..self.start);
                buf
            }
            Data::Shared(chunk) => chunk[self.start..self.end].to_vec(),
        }
    }
}

impl Drop for Payload {
    #[inline]
    fn drop(&mut self) {
        if let Some(spare) = self.home.take().and_then(|home| home.upgrade()) {
            if let Data::Owned(buf) = &mut self.data {
                spare.put(std::mem::take(buf));
            }
        }
    }
}

/// One receive buffer a port keeps for its next large message.
///
/// A large message (at least [`READ_CHUNK`]) is read into a buffer of its own size, which
/// becomes its payload. Without a spare, every one is read into fresh memory: an allocation,
/// and for big ones the kernel must find, zero and map every page first (for 64 MiB that
/// costs more than the copy out of the socket). When such a message is dropped its buffer
/// comes back here and the next read that needs room uses it.
///
/// The spare is given back to the allocator once it has not been used for a whole
/// [`SPARE_IDLE`] (a timer on the library's thread), and when the port closes; so a port
/// holds at most one buffer of at most its message size limit, and only while large
/// messages keep coming.
#[derive(Debug, Default)]
pub(crate) struct Spare {
    pub(super) slot: Mutex<SpareSlot>,
}

#[derive(Debug, Default)]
pub(super) struct SpareSlot {
    pub(super) buf: Option<Vec<u8>>,
    /// Bumped whenever a buffer is put or taken: the release timer leaves a spare that was
    /// used since it last looked for another round.
    pub(super) generation: u64,
    /// A release timer is running.
    pub(super) timer: bool,
}

impl Spare {
    pub(super) fn put(self: Arc<Self>, mut buf: Vec<u8>) {
        if buf.capacity() < READ_CHUNK {
            return;
        }
        buf.clear();
        let seen = {
            let mut slot = lock(&self.slot);
            if slot
                .buf
                .as_ref()
                .is_some_and(|kept| kept.capacity() >= buf.capacity())
            {
                return;
            }
            slot.buf = Some(buf);
            slot.generation += 1;
            if slot.timer {
                return;
            }
            slot.timer = true;
            slot.generation
        };
        // Release it once a whole round of SPARE_IDLE passes without it being used.
        let weak = Arc::downgrade(&self);
        let Ok(driver) = crate::driver::driver() else {
            let mut slot = lock(&self.slot);
            slot.buf = None;
            slot.timer = false;
            return;
        };
        driver.handle().spawn(async move {
            let mut seen = seen;
            loop {
                tokio::time::sleep(SPARE_IDLE).await;
                let Some(spare) = weak.upgrade() else {
                    return;
                };
                let mut slot = lock(&spare.slot);
                if slot.buf.is_none() || slot.generation == seen {
                    let idle = slot.buf.take();
                    slot.timer = false;
                    drop(slot);
                    // Unmapping a large buffer takes a while: not under the lock.
                    drop(idle);
                    return;
                }
                seen = slot.generation;
            }
        });
    }

    /// The spare buffer, if it holds at least `capacity` bytes and not many times more (a
    /// buffer kept for 64 MiB messages is not spent on a small read).
    #[inline]
    pub(super) fn take(&self, capacity: usize) -> Option<Vec<u8>> {
        let mut slot = lock(&self.slot);
        let fits = |kept: &Vec<u8>| {
            kept.capacity() >= capacity && kept.capacity() / 4 <= capacity.max(READ_CHUNK)
        };
        if slot.buf.as_ref().is_some_and(fits) {
            slot.generation += 1;
            slot.buf.take()
        } else {
            None
        }
    }

    /// Gives the spare back to the allocator.
    pub(crate) fn release(&self) {
        let mut slot = lock(&self.slot);
        if slot.buf.is_some() {
            slot.buf = None;
            slot.generation += 1;
        }
    }
}

/// How long a port keeps a spare buffer that no frame uses (between one and two of these).
/// Longer in this crate's unit tests, which check that a spare is kept between two messages
/// and would otherwise fail whenever a loaded machine (Wine on two busy cores) stalls the
/// test thread for half a second between them.
pub(super) const SPARE_IDLE: Duration = if cfg!(test) {
    Duration::from_secs(3)
} else {
    Duration::from_millis(500)
};
