//! A slow network link for the remote-build tests, as `ssh`'s
//! `ProxyCommand`: relays stdin/stdout to a TCP port on 127.0.0.1 in small
//! pieces at a limited rate.
//!
//! `slow-link PORT BYTES_PER_SECOND [STALL_AFTER]`: with `STALL_AFTER`,
//! nothing more comes back from the port once that many bytes have (the
//! connection stays open: a link that stops carrying anything).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The largest piece relayed at once.
const PIECE: usize = 1024;

/// Copies `from` to `to` at `rate` bytes a second; after `stall_after`
/// bytes, reads on but relays nothing.
fn relay(mut from: impl Read, mut to: impl Write, rate: u64, stall_after: Option<u64>) {
    let began = Instant::now();
    let mut sent: u64 = 0;
    let mut buf = [0u8; PIECE];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if stall_after.is_some_and(|limit| sent >= limit) {
            continue;
        }
        // Not ahead of the rate: wait until these bytes are due.
        let due = Duration::from_secs_f64((sent + n as u64) as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(began.elapsed()) {
            std::thread::sleep(wait);
        }
        if to.write_all(&buf[..n]).and_then(|()| to.flush()).is_err() {
            return;
        }
        sent += n as u64;
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (port, rate, stall_after) = match &args[1..] {
        [port, rate] => (port, rate, None),
        [port, rate, stall] => (port, rate, Some(stall.parse().expect("a byte count"))),
        _ => {
            eprintln!("usage: slow-link PORT BYTES_PER_SECOND [STALL_AFTER]");
            std::process::exit(2);
        }
    };
    let port: u16 = port.parse().expect("a port");
    let rate: u64 = rate.parse().expect("a rate");
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the port");
    let back = stream.try_clone().expect("a second handle on the socket");
    std::thread::spawn(move || {
        relay(std::io::stdin(), &stream, rate, None);
        // ssh went away: so does the connection, and this relay with it.
        let _ = stream.shutdown(std::net::Shutdown::Both);
    });
    relay(back, std::io::stdout(), rate, stall_after);
}
