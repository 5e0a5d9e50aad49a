//! Opens connections to a daemon's socket and holds them, for the tests of
//! the daemon's connection limits (run as an ordinary user under setpriv).
//!
//! `hold-connections SOCKET N greet`: greets on each as a protocol 1.34
//! client and prints, per connection, `served`, `refused: MESSAGE` or
//! `hung up`; then `held` and waits until stdin closes.
//!
//! `hold-connections SOCKET N silent`: says nothing on each and prints,
//! per connection, `closed after S s` once the daemon hangs up (at most 60
//! seconds), or `still open`.

use std::io::{BufRead, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, socket, count, mode] = &args[..] else {
        eprintln!("usage: hold-connections SOCKET N greet|silent");
        std::process::exit(2);
    };
    let count: usize = count.parse().expect("a number of connections");
    let mut held = Vec::new();
    for _ in 0..count {
        let mut stream = match UnixStream::connect(socket) {
            Ok(stream) => stream,
            Err(e) => {
                println!("cannot connect: {e}");
                continue;
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        if mode == "greet" {
            println!("{}", greet(&mut stream));
        }
        held.push(stream);
    }
    if mode == "silent" {
        let started = Instant::now();
        for mut stream in held.drain(..) {
            let mut byte = [0u8; 1];
            match stream.read(&mut byte) {
                Ok(0) => println!("closed after {} s", started.elapsed().as_secs()),
                _ => println!("still open"),
            }
        }
    }
    println!("held");
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
}

/// Greets as a protocol 1.34 client: what the daemon answered.
fn greet(stream: &mut UnixStream) -> String {
    let sent = [0x6e69_7863u64, (1 << 8) | 34, 0, 0]
        .iter()
        .try_for_each(|n| stream.write_all(&n.to_le_bytes()));
    if sent.is_err() {
        return "hung up".into();
    }
    let greeted = read_u64(stream)
        .and(read_u64(stream))
        .and(read_string(stream));
    if greeted.is_none() {
        return "hung up".into();
    }
    match read_u64(stream) {
        Some(0x616c_7473) => "served".into(),
        Some(0x6378_7470) => {
            // type, level, name, message
            let _ = read_string(stream);
            let _ = read_u64(stream);
            let _ = read_string(stream);
            let message = read_string(stream).unwrap_or_default();
            format!("refused: {message}")
        }
        _ => "hung up".into(),
    }
}

/// Reads one protocol number.
fn read_u64(stream: &mut UnixStream) -> Option<u64> {
    let mut buf = [0u8; 8];
    stream.read_exact(&mut buf).ok()?;
    Some(u64::from_le_bytes(buf))
}

/// Reads one protocol string.
fn read_string(stream: &mut UnixStream) -> Option<String> {
    let len = read_u64(stream)? as usize;
    let mut buf = vec![0u8; len + (8 - len % 8) % 8];
    stream.read_exact(&mut buf).ok()?;
    buf.truncate(len);
    Some(String::from_utf8_lossy(&buf).into_owned())
}
