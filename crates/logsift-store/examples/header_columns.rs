//! Which columns of block headers cost what: re-encodes each column of every block of the
//! given segments as the writer does (varint deltas) and compresses it alone per block at zstd
//! 9. `cargo run --release -p logsift-store --example header_columns -- SEGMENT.lsseg...`
use logsift_store::blocks::{BlockSegment, DecodedBlock};
use logsift_store::segment::BundleDirectory;

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zz(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn main() {
    let names = ["ts", "id", "recv", "len", "pattern", "sev+format+source"];
    let mut totals = [0u64; 6];
    let mut records = 0u64;
    for path in std::env::args().skip(1) {
        let path = std::path::PathBuf::from(path);
        let Ok(dir) = BundleDirectory::open(&path) else {
            continue;
        };
        let Ok(seg) = BlockSegment::open_in(dir, &path) else {
            continue;
        };
        let mut block = DecodedBlock::default();
        for ord in 0..seg.blocks.len() {
            if seg.read_header(ord, &mut block).is_err() {
                continue;
            }
            let mut cols: [Vec<u8>; 6] = Default::default();
            let (mut t, mut i, mut r) = (0i64, 0u64, 0i64);
            for (k, m) in block.records.iter().enumerate() {
                if k > 0 {
                    varint(&mut cols[0], zz(m.timestamp - t));
                    varint(&mut cols[1], zz(m.id.wrapping_sub(i) as i64));
                    varint(&mut cols[2], zz(m.received_at - r));
                }
                t = m.timestamp;
                i = m.id;
                r = m.received_at;
                varint(&mut cols[3], m.raw.len() as u64);
                varint(&mut cols[4], u64::from(m.pattern));
                cols[5].push(m.severity.unwrap_or(8));
                cols[5].push(m.format.code());
                varint(&mut cols[5], m.source as u64);
                records += 1;
            }
            for (c, col) in cols.iter().enumerate() {
                totals[c] += zstd::bulk::compress(col, 9).map_or(0, |z| z.len() as u64);
            }
        }
    }
    for (n, t) in names.iter().zip(totals) {
        println!(
            "{n:>20}: {:.2} bytes per record",
            t as f64 / records.max(1) as f64
        );
    }
}
