//! Handing a port over: what it had read and not delivered travels in a prefix channel.

use super::*;

impl Endpoint {
    /// Prepares this port to travel: what to announce and which descriptors to send.
    ///
    /// Bytes it had read but not delivered go into a new prefix socket, written by a flusher
    /// (the new holder reads them first); bytes it still has to write are written before its
    /// descriptor leaves (see `write_out`).
    pub(crate) fn hand_over(self: Arc<Self>) -> io::Result<(Attachment, Vec<Carried>)> {
        let channel = self.channel_id;
        let mut inbound = lock(&self.inbound);
        // A prefix we are still reading ourselves: take the rest of it now — within one
        // overall deadline and a byte budget, so that a previous holder that never stops
        // writing into it cannot hold this thread or grow this buffer without end.
        let deadline = Instant::now() + PREFIX_TIMEOUT;
        let budget = self.limits.max_frame_len as usize + self.limits.max_queued_bytes;
        while inbound.prefix.is_some() {
            if Instant::now() >= deadline || inbound.buf.len() - inbound.head > budget {
                // What it did not pass on in time is lost; the new holder sees a stream cut
                // short, which it reports as a protocol violation.
                inbound.prefix = None;
                break;
            }
            inbound.buf_mut().reserve(READ_CHUNK);
            match fill(&mut inbound, &self.channel, usize::MAX) {
                Ok(Fill::Read | Fill::PrefixEnded) => {}
                Ok(Fill::WouldBlock) => {
                    let prefix = inbound.prefix.clone();
                    let left = deadline.saturating_duration_since(Instant::now());
                    let ready = prefix.map(|p| p.wait(sys::Interest::Readable, Some(left)));
                    if !matches!(ready, Some(Ok(true))) {
                        // The previous holder stalls: what it did not pass on is lost.
                        inbound.prefix = None;
                    }
                }
                // Only the main socket can end; a broken prefix ends here.
                Ok(Fill::Eof) | Err(_) => inbound.prefix = None,
            }
        }
        // A unit of the channel's own that a receive left half read (a chunk on Windows) is
        // finished here, so that the next holder's stream starts where a unit does.
        if !inbound.eof {
            let mut rest = Vec::new();
            if self.channel.finish_chunk(&mut rest, deadline).is_ok() && !rest.is_empty() {
                inbound.buf_mut().extend_from_slice(&rest);
            }
        }
        let pending = &inbound.buf[inbound.head..];
        if pending.is_empty() && inbound.batches.is_empty() {
            drop(inbound);
            return Ok((Attachment::Port { channel }, vec![Carried::Port(self)]));
        }

        // Frame starts in the pending bytes, to attach each batch to the frame that claims it.
        let mut starts = Vec::new();
        let mut at = 0usize;
        // (A frame whose length field is cut short still starts here, and its descriptors,
        // which came with its first byte, belong to it.)
        while at < pending.len() {
            starts.push(at);
            let Some(len) = pending.get(at..at + 4) else {
                break;
            };
            let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]);
            at = at.saturating_add(4).saturating_add(len as usize);
        }
        let (ours, theirs) = Channel::pair_owned()?;
        let prefix = Endpoint::new(Channel::from_owned(ours)?, self.limits, 0);
        {
            let mut out = lock(&prefix.outbound);
            out.buf.extend_from_slice(pending);
            let decoded = inbound.decoded;
            for batch in inbound.batches.drain(..) {
                let claimed = starts.iter().find(|&&s| {
                    let s = decoded + s as u64;
                    batch.start <= s && s < batch.end
                });
                // A batch no frame claims is the peer's error; its descriptors close here.
                if let Some(&offset) = claimed {
                    out.queued_fds += batch.objects.len();
                    out.batches.push_back(OutBatch {
                        offset,
                        items: batch.objects.into_iter().map(Carried::Object).collect(),
                    });
                }
            }
        }
        inbound.buf = Arc::default();
        inbound.head = 0;
        inbound.queued_fds = 0;
        drop(inbound);
        // Write what fits now; a flusher writes the rest and then drops the prefix's last
        // reference, which closes it: the new holder reads end-of-file and moves on.
        let mut out = lock(&prefix.outbound);
        match prefix.write_out(&mut out) {
            Ok(Progress::Done) | Err(_) => {}
            Ok(_) => {
                out.flushing = true;
                drop(out);
                prefix.spawn_flusher();
            }
        }
        Ok((
            Attachment::PortWithPrefix { channel },
            vec![Carried::Object(theirs), Carried::Port(self)],
        ))
    }
}
