//! A real `paddock serve` process for the process-level tests (SIGKILL,
//! descriptor limits, a full disk), shared by path like `http.rs`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The `paddock` binary under test.
pub fn paddock() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_paddock"));
    command.env("PADDOCK_CACHE_DIR", std::env::temp_dir().join("paddock-test-cache"));
    command
}

/// Spawn `command` (a `paddock serve` with `--listen …:0`, possibly behind
/// a shell) and wait for the address it prints. Server errors and panics
/// are echoed to the test's output.
pub fn spawn(command: Command) -> (Child, SocketAddr) {
    let (child, addr, _) = spawn_with_push(command);
    (child, addr)
}

/// [`spawn`], also returning the monitor push listener's address if the
/// server has one.
pub fn spawn_with_push(mut command: Command) -> (Child, SocketAddr, Option<SocketAddr>) {
    let mut child = command.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (mut sent, mut push) = (false, None);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("paddock: monitor push listener on ") {
                push = addr.parse::<SocketAddr>().ok();
            } else if !sent && let Some(addr) = line.strip_prefix("paddock: listening on http://") {
                let _ = tx.send((addr.parse::<SocketAddr>().unwrap(), push));
                sent = true;
            } else if line.contains("ERROR") || line.contains("panicked") {
                eprintln!("server: {line}");
            }
        }
    });
    let (addr, push) = rx.recv_timeout(Duration::from_secs(60)).expect("paddock serve did not start");
    (child, addr, push)
}
