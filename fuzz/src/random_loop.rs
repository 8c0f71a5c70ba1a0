//! The fuzz targets' checks on random inputs for a bounded time, for toolchains where
//! cargo-fuzz cannot run: `cargo run --release --no-default-features --features random-loop
//! --bin random-loop -- SECONDS [TARGET...]`. Inputs mix random bytes with fragments that
//! steer into each grammar; a failing input is printed (as an escaped byte string) before the
//! panic propagates.

use std::time::{Duration, Instant};

type Check = fn(&[u8]);

const TARGETS: &[(&str, Check)] = &[
    ("syslog", logsift_fuzz::syslog),
    ("json", logsift_fuzz::json),
    ("framing", logsift_fuzz::framing),
    ("auto", logsift_fuzz::auto),
    ("es_bulk", logsift_fuzz::es_bulk),
    ("loki", logsift_fuzz::loki),
    ("otlp", logsift_fuzz::otlp),
    ("query", logsift_fuzz::query),
    ("entry", logsift_fuzz::entry),
    ("wal", logsift_fuzz::wal),
    ("segment", logsift_fuzz::segment),
];

const PIECES: &[&[u8]] = &[
    b"<13>",
    b"<191>1 ",
    b"1 ",
    b"- ",
    b"2003-10-11T22:14:15.003Z ",
    b"Nov  3 12:00:00 ",
    b"[id a=\"",
    b"\\",
    b"\"",
    b"]",
    b" ",
    b"host ",
    b"app[1]: ",
    b":",
    b"{",
    b"}",
    b"\"k\":",
    b"[",
    b",",
    b"1e999",
    b"-0.5",
    b"\xef\xbb\xbf",
    b"\xff",
    b"\0",
    b"\r\n",
    b"\n",
    b"\"ts\":1e30",
    b"\"level\":60",
    b"\\ud800",
    b"a=b ",
    b"k=\"v w\" ",
    b"12 ",
    b"0 ",
    b"99999999999 ",
    b"{\"a\":{\"b\":{\"c\":",
    b"true",
    b"null",
    b"\"\\u00e9\"",
    b"{\"index\":{\"_index\":\"a.b\"}}\n",
    b"{\"delete\":{}}\n",
    b"{\"streams\":[{\"stream\":{\"host\":\"h\"},\"values\":[[\"1\",\"",
    b"{\"resourceLogs\":[{\"scopeLogs\":[{\"logRecords\":[{\"body\":{\"kvlistValue\":{\"values\":[",
    b"\"intValue\":\"9\"",
    b"\"traceId\":\"0a\"",
    b"{host=\"a\", ",
    b"\x0a\x05",
    b"\x12\x03",
    b"\x09\x01\x00\x00\x00\x00\x00\x00\x00",
    b"\x2a\x02\x0a\x00",
    b"(",
    b")",
    b" AND ",
    b" OR ",
    b"NOT ",
    b"host:",
    b"fields.a.b:",
    b"[1 TO 9]",
    b"{a TO *}",
    b"severity:<=",
    b"*",
    b"now-15m",
    b"LSFTSEG\0",
    b"\x01\x00\x00\x00",
    b"\xff\xff\xff\xff\xff\xff\xff\xff",
];

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(10);
    let wanted: Vec<String> = args.collect();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    for &(name, check) in TARGETS {
        if !wanted.is_empty() && !wanted.iter().any(|w| w == name) {
            continue;
        }
        let mut rng = XorShift(seed);
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let mut runs = 0u64;
        let mut input = Vec::new();
        while Instant::now() < deadline {
            for _ in 0..256 {
                input.clear();
                for _ in 0..rng.next() % 24 {
                    match rng.next() % 4 {
                        0 => input.push(rng.next() as u8),
                        1 => input.push(b"0123456789 <>\"=[]{}:\\\n"[rng.next() as usize % 22]),
                        _ => input.extend_from_slice(PIECES[rng.next() as usize % PIECES.len()]),
                    }
                }
                let outcome = std::panic::catch_unwind(|| check(&input));
                if let Err(panic) = outcome {
                    eprintln!(
                        "{name}: failing input (seed {seed}): {:?}",
                        input.escape_ascii().to_string()
                    );
                    std::panic::resume_unwind(panic);
                }
                runs += 1;
            }
        }
        println!("{name}: {runs} random inputs in {seconds} s, no failure (seed {seed})");
    }
}
