//! Shared buffers: large payloads handed over instead of copied, through the library's public
//! API only (`SharedBuffer`, `BufferPool`, `post_message_with_transfer`), against memcpy.
//!
//! - **Shared buffer, end to end** (`ours.shared.{first,reused}.<size>`, 64 KiB to 64 MiB):
//!   everything a producer and a consumer pay, timed together: get a buffer, fill it in
//!   place (`fill`, a memset), post it with `post_message_with_transfer`, and the child reads
//!   every byte (a sum) and answers with the sum. *First use*: `SharedBuffer::new`, filled,
//!   `freeze`d, posted; the child reads it after `BufferPool::adopt` (which, for a frozen
//!   buffer, only populates its mapping in one call). *Reused*: `BufferPool::take` (after
//!   a warm-up round, an idle buffer of the pool), filled, posted writable; the child
//!   `adopt`s it into its own pool, reads it and sends it back with the answer, and the
//!   parent `put`s it back (timed). First use and reuse run in loops of their own, as the
//!   memcpy floor copies in a loop of its own: alternating them would leave the reused buffer
//!   cold in the caches after each new buffer. Bandwidth of payload; floor `floor.memcpy`
//!   (memcpy reads and writes each byte once, as fill + read do).
//! - **Shared buffer, caches cold** (`ours.shared.reused-cold.64mib`): the reused 64 MiB
//!   round, one per sample, after the parent wrote 256 MiB elsewhere (untimed): what reuse
//!   costs when other work between two frames pushed the buffer out of the caches. Same floor
//!   (a warm memcpy: the ratio is the harsher for it).
//! - **Shared buffer hand-over** (`ours.shared.handover.{first,reused}`): 64 MiB, posted and
//!   answered as soon as the child holds the mapped buffer: a new frozen buffer (its fill not
//!   timed) that the child drops after answering, or a pool's buffer that the child adopts,
//!   answers, and then sends back (untimed) for the parent to put back. Averaged over 16
//!   back-to-back hand-overs; a round trip, so the floor is `floor.rtt`.

use std::time::Instant;

use utility_process::{
    fork_entry, BufferPool, Entry, Error, ForkOptions, ParentPort, SharedBuffer, Transferable,
    UtilityProcess,
};

use crate::floor;
use crate::ours::{end, expect_message, expect_spawn, Flavor, NO_ARGS, PAYLOAD_64MIB};
use crate::{size_name, Ctx, Kind, Result, Spec};

/// The sizes of the shared-buffer end-to-end rows.
const SHARED_SIZES: [usize; 4] = [64 << 10, 1 << 20, 16 << 20, 64 << 20];

/// The entry points of this module's children, for `main`'s `utility_process::init`.
pub fn entries() -> Vec<Entry> {
    vec![Entry::blocking("buffer-sink", buffer_sink)]
}

/// Runs every shared-buffer case.
pub fn run(ctx: &Ctx) {
    for size in SHARED_SIZES {
        let name = size_name(size);
        let id = name.replace(' ', "").to_lowercase();
        ctx.measure_many(
            vec![
                Spec::new(
                    format!("ours.shared.first.{id}"),
                    format!("ours: SharedBuffer end to end, {name}, first use (new, fill, freeze, post, child reads every byte)"),
                    Kind::Bandwidth,
                )
                .floor(floor::MEMCPY),
                Spec::new(
                    format!("ours.shared.reused.{id}"),
                    format!("ours: SharedBuffer end to end, {name}, reused (pool take, fill, post, child reads every byte and sends it back)"),
                    Kind::Bandwidth,
                )
                .floor(floor::MEMCPY),
            ],
            || shared(ctx, size),
        );
    }
    ctx.measure(
        Spec::new(
            "ours.shared.reused-cold.64mib",
            "ours: SharedBuffer end to end, 64 MiB, reused, caches cold (256 MiB written before each round, untimed)",
            Kind::Bandwidth,
        )
        .floor(floor::MEMCPY),
        || shared_cold(ctx),
    );
    ctx.measure_many(
        vec![
            Spec::new(
                "ours.shared.handover.first",
                "ours: SharedBuffer hand-over, 64 MiB, new, until the child has it mapped",
                Kind::Time,
            )
            .floor(floor::RTT),
            Spec::new(
                "ours.shared.handover.reused",
                "ours: SharedBuffer hand-over, 64 MiB, reused, until the child has it mapped",
                Kind::Time,
            )
            .floor(floor::RTT),
        ],
        || handover(ctx),
    );
}

/// What the parent asks of `buffer-sink` with each shared buffer.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
enum Sink {
    /// Populate the buffer (`adopt`), sum every byte and answer with the sum; drop the
    /// buffer afterwards.
    Read,
    /// Answer at once; drop the buffer when the next order comes.
    Map,
    /// Adopt the buffer into the child's pool, sum every byte, answer with the sum and the
    /// buffer.
    ReadAndReturn,
    /// Adopt the buffer, answer at once, then send the buffer back in a second message.
    MapAndReturn,
}

/// Answers each shared buffer as its [`Sink`] order says.
fn buffer_sink(port: ParentPort) -> Result<(), Error> {
    let pool = BufferPool::new();
    let mut held = Vec::new();
    while let Some(mut message) = port.recv_blocking() {
        let order: Sink = message.data()?;
        let buffers = message.take_buffers();
        match order {
            Sink::Read => {
                // Populated in one call before the read (not a fault per page).
                let buffers: Vec<_> = buffers.into_iter().map(|b| pool.adopt(b)).collect();
                let sum: u64 = buffers.iter().map(|b| byte_sum(b)).sum();
                port.post_message(&sum)?;
                // Freeing the memory (the last reference to it) takes milliseconds: after the
                // answer.
                drop(buffers);
            }
            Sink::Map => {
                // Freed when the next order comes (a ping without buffers in the bench), so
                // that freeing 64 MiB (milliseconds, by whoever lets go last) is not part of
                // the hand-over on one CPU.
                drop(std::mem::take(&mut held));
                port.post_message(&0u64)?;
                held = buffers;
            }
            Sink::ReadAndReturn => {
                let buffers: Vec<_> = buffers.into_iter().map(|b| pool.adopt(b)).collect();
                let sum: u64 = buffers.iter().map(|b| byte_sum(b)).sum();
                let back = buffers.into_iter().map(Transferable::from).collect();
                port.post_message_with_transfer(&sum, back)?;
            }
            Sink::MapAndReturn => {
                let buffers: Vec<_> = buffers.into_iter().map(|b| pool.adopt(b)).collect();
                port.post_message(&0u64)?;
                let back = buffers.into_iter().map(Transferable::from).collect();
                port.post_message_with_transfer(&"back", back)?;
            }
        }
    }
    Ok(())
}

/// The sum of every byte: reads all of them at memory speed. Bytes are added into 32 lanes
/// of 16 bits (255 rounds cannot overflow one), which the compiler turns into vector adds; a
/// plain `iter().map(u64::from).sum()` runs at a fifth of that and would measure the loop,
/// not the buffer.
fn byte_sum(bytes: &[u8]) -> u64 {
    const LANES: usize = 32;
    let mut blocks = bytes.chunks_exact(LANES * 255);
    let mut sum = 0u64;
    for block in &mut blocks {
        let mut lanes = [0u16; LANES];
        for chunk in block.chunks_exact(LANES) {
            // A fixed length: no bounds check left in the loop (`unwrap_or` with a fallback
            // array made it twice as slow).
            let chunk: &[u8; LANES] = chunk.try_into().expect("chunks_exact gives LANES bytes");
            for i in 0..LANES {
                lanes[i] += u16::from(chunk[i]);
            }
        }
        sum += lanes.iter().map(|&lane| u64::from(lane)).sum::<u64>();
    }
    sum + blocks
        .remainder()
        .iter()
        .map(|&b| u64::from(b))
        .sum::<u64>()
}

/// A shared buffer of `size` bytes end to end, first use and reused (see the module docs),
/// each in a loop of its own; each sample averages enough buffers to take tens of
/// milliseconds.
fn shared(ctx: &Ctx, size: usize) -> Result<Vec<Vec<f64>>> {
    let per_sample = ((64 << 20) / size).clamp(1, 256);
    Flavor::CurrentThread.runtime()?.block_on(async {
        let mut child = fork_entry("buffer-sink", NO_ARGS, ForkOptions::default())?;
        expect_spawn(&mut child).await?;
        let pool = BufferPool::new();
        let mut rows = Vec::new();
        let mut byte = 0u8;
        for reuse in [false, true] {
            let mut rates = Vec::new();
            for round in 0..=ctx.samples() {
                let started = Instant::now();
                for _ in 0..per_sample {
                    byte = byte.wrapping_add(1);
                    shared_round(&mut child, &pool, size, reuse, byte).await?;
                }
                let elapsed = started.elapsed().as_secs_f64();
                if round > 0 {
                    rates.push((per_sample * size) as f64 / elapsed);
                }
            }
            rows.push(rates);
        }
        end(child).await?;
        Ok(rows)
    })
}

/// A pool's 64 MiB buffer end to end, as `ours.shared.reused.64mib`, but with the caches
/// cold: before each (timed) round, untimed, the parent writes a scratch area four times the
/// buffer's size, as other work between two frames would.
fn shared_cold(ctx: &Ctx) -> Result<Vec<f64>> {
    let mut scratch = vec![0u8; 4 * PAYLOAD_64MIB];
    Flavor::CurrentThread.runtime()?.block_on(async {
        let mut child = fork_entry("buffer-sink", NO_ARGS, ForkOptions::default())?;
        expect_spawn(&mut child).await?;
        let pool = BufferPool::new();
        let mut rates = Vec::new();
        for round in 0..=ctx.samples() {
            let byte = round as u8 + 1;
            scratch.fill(byte);
            std::hint::black_box(&mut scratch);
            let started = Instant::now();
            shared_round(&mut child, &pool, PAYLOAD_64MIB, true, byte).await?;
            let elapsed = started.elapsed().as_secs_f64();
            if round > 0 {
                rates.push(PAYLOAD_64MIB as f64 / elapsed);
            }
        }
        end(child).await?;
        Ok(rates)
    })
}

/// One buffer end to end: get it (new, or from `pool`), fill it with `byte`, post it (frozen
/// when new, writable when reused), and wait for the child's sum; a reused buffer comes back
/// with the answer and is put back into `pool`.
async fn shared_round(
    child: &mut UtilityProcess,
    pool: &BufferPool,
    size: usize,
    reuse: bool,
    byte: u8,
) -> Result<()> {
    let mut buffer = if reuse {
        pool.take(size)?
    } else {
        SharedBuffer::new(size)?
    };
    if let Some(bytes) = buffer.as_mut_slice() {
        bytes.fill(byte);
    }
    let order = if reuse {
        Sink::ReadAndReturn
    } else {
        buffer = buffer.freeze()?;
        Sink::Read
    };
    child.post_message_with_transfer(&order, vec![buffer.into()])?;
    let mut answer = expect_message(child).await?;
    for back in answer.take_buffers() {
        if pool.put(back).is_err() {
            return Err("the pool refused its own buffer".into());
        }
    }
    let sum: u64 = answer.data()?;
    if sum != u64::from(byte) * size as u64 {
        return Err(format!("the child summed {sum}").into());
    }
    Ok(())
}

/// 64 MiB handed over and answered at once: a new frozen buffer (filled before the clock
/// starts), or a pool's buffer that comes back after the answer. Only post-to-answer is
/// timed, averaged over back-to-back hand-overs (a pause would add the wake-up of an idle
/// CPU, tens of microseconds on a VM, to every one).
fn handover(ctx: &Ctx) -> Result<Vec<Vec<f64>>> {
    const PER_SAMPLE: usize = 16;
    Flavor::CurrentThread.runtime()?.block_on(async {
        let mut child = fork_entry("buffer-sink", NO_ARGS, ForkOptions::default())?;
        expect_spawn(&mut child).await?;
        let pool = BufferPool::new();
        let (mut first, mut reused) = (Vec::new(), Vec::new());
        for round in 0..=ctx.samples() {
            for reuse in [false, true] {
                let mut timed = 0.0;
                for _ in 0..PER_SAMPLE {
                    let (buffer, order) = if reuse {
                        (pool.take(PAYLOAD_64MIB)?, Sink::MapAndReturn)
                    } else {
                        let mut buffer = SharedBuffer::new(PAYLOAD_64MIB)?;
                        if let Some(bytes) = buffer.as_mut_slice() {
                            bytes.fill(0x5A);
                        }
                        (buffer.freeze()?, Sink::Map)
                    };
                    let started = Instant::now();
                    child.post_message_with_transfer(&order, vec![buffer.into()])?;
                    expect_message(&mut child).await?;
                    timed += started.elapsed().as_secs_f64();
                    if reuse {
                        let mut back = expect_message(&mut child).await?;
                        for buffer in back.take_buffers() {
                            if pool.put(buffer).is_err() {
                                return Err("the pool refused its own buffer".into());
                            }
                        }
                    } else {
                        // The child frees the buffer when this ping comes, outside the clock.
                        child.post_message(&Sink::Map)?;
                        expect_message(&mut child).await?;
                    }
                }
                if round > 0 {
                    if reuse { &mut reused } else { &mut first }.push(timed / PER_SAMPLE as f64);
                }
            }
        }
        end(child).await?;
        Ok(vec![first, reused])
    })
}
