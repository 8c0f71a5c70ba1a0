//! Where a block segment's bytes go: `cargo run --release -p logsift-store --example
//! block_sizes -- SEGMENT.lsseg...` prints, per segment and in all, the compressed bytes of
//! block headers and of lines, the plain bytes of each, and the records.
use logsift_store::blocks::BlockSegment;
use logsift_store::segment::BundleDirectory;

fn main() {
    let (mut head_z, mut head_p, mut lines_z, mut lines_p, mut records) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    for path in std::env::args().skip(1) {
        let path = std::path::PathBuf::from(path);
        let dir = match BundleDirectory::open(&path) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("{}: {e}", path.display());
                continue;
            }
        };
        let seg = match BlockSegment::open_in(dir, &path) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{}: {e}", path.display());
                continue;
            }
        };
        let (hz, hp, lz, lp) = seg.frame_bytes();
        head_z += hz;
        head_p += hp;
        lines_z += lz;
        lines_p += lp;
        records += seg.num_records();
        let (index, body, filters) = seg.sizes();
        println!(
            "{}: index {index} body {body} filters {filters} blocks {}",
            path.display(),
            seg.blocks.len()
        );
    }
    println!(
        "records {records}: headers {head_z} bytes ({:.2} per record, plain {head_p}), lines {lines_z} bytes (plain {lines_p}, {:.2} per record)",
        head_z as f64 / records.max(1) as f64,
        lines_z as f64 / records.max(1) as f64
    );
}
