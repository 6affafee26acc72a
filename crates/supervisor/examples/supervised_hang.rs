//! A supervised worker goes through a hang: its heartbeats go unanswered, the supervisor kills
//! it and starts it again. The code of `examples/tour.rs`'s supervision chapter
//! (`TOUR_CHAPTER.md`), runnable on its own:
//!
//! ```text
//! cargo run -p utility-process-supervisor --example supervised_hang
//! ```

use std::error::Error as StdError;
use std::time::{Duration, Instant};

use utility_process::{init, Entry, ParentPort};
use utility_process_supervisor::{
    child, ChildSpec, Heartbeat, Supervisor, SupervisorEvent, SupervisorOptions,
};

fn main() -> Result<(), Box<dyn StdError>> {
    init([Entry::new("supervised", supervised)]);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(supervision_chapter())
}

fn chapter(title: &str) {
    println!("\n{title}");
}

// ---- from here on: the chapter, as in TOUR_CHAPTER.md ----------------------------------

/// Answers greetings; on "hang" it spins without ever yielding, so it cannot answer its
/// supervisor's heartbeats either (they are answered from this same runtime thread).
async fn supervised(port: ParentPort) -> Result<(), Box<dyn StdError + Send + Sync>> {
    let link = child::attach(&port).await?;
    link.ready()?;
    while let Some(message) = port.recv().await {
        match message.data::<String>()?.as_str() {
            "hang" => loop {
                std::hint::spin_loop()
            },
            greeting => port.post_message(&format!(
                "{greeting} (restarts so far: {})",
                link.restarts()
            ))?,
        }
    }
    Ok(())
}

async fn supervision_chapter() -> Result<(), Box<dyn StdError>> {
    chapter("9. A supervised worker hangs: missed heartbeats, a kill, a restart");
    let mut supervisor = Supervisor::new(SupervisorOptions::default());
    let mut events = supervisor.events();
    let spec = ChildSpec::entry("tour-supervised", "supervised")
        .heartbeat(Heartbeat::new(Duration::from_millis(200)).misses(3));
    let pid = supervisor.start_child(spec).await?;
    println!("   ready as pid {pid}; told to hang in a busy loop");
    supervisor.post_message("tour-supervised", "hang").await?;
    let hung_at = Instant::now();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(30), events.recv()).await?;
        match event.ok_or("the supervisor is gone")? {
            SupervisorEvent::HeartbeatMissed {
                missed, allowed, ..
            } => {
                println!("   heartbeat missed ({missed} of {allowed} allowed)")
            }
            SupervisorEvent::Exited { reason, status, .. } => {
                let (status, after) = (status.ok_or("no status")?, hung_at.elapsed());
                println!("   {after:.1?} after the hang, pid {pid} ended: {reason} ({status})")
            }
            SupervisorEvent::Restarting { attempt, delay, .. } => {
                println!("   restart #{attempt} in {delay:.0?}")
            }
            SupervisorEvent::Ready { pid: new, .. } if new != pid => {
                println!("   ready again as pid {new}");
                break;
            }
            _ => {}
        }
    }
    supervisor.post_message("tour-supervised", "hello").await?;
    let reply = supervisor.recv_message().await.ok_or("no reply")?;
    println!("   it answers: {}", reply.message.data::<String>()?);
    supervisor.shutdown().await;
    println!("   shut down: SIGTERM, reaped");
    Ok(())
}
