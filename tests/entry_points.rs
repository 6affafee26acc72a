//! Same-binary entry points inside a test binary: `harness = false`, so this `main` can call
//! `utility_process::init` before anything else, then run the tests with libtest-mimic.

use libtest_mimic::{Arguments, Trial};
use utility_process::{init, Entry, ParentPort};

async fn echo(port: ParentPort) -> Result<(), utility_process::Error> {
    while let Some(message) = port.recv().await {
        port.post_bytes(message.bytes())?;
    }
    Ok(())
}

fn main() {
    init([Entry::new("echo", echo)]);
    let args = Arguments::from_args();
    let tests = vec![Trial::test("placeholder_until_the_suite_is_written", || Ok(()))];
    libtest_mimic::run(&args, tests).exit();
}
