//! Zero-copy proof: the number of heap allocations made while parsing a line does not depend on
//! how many fields the line has. A counting global allocator counts, per thread (tests run in
//! parallel), the allocations made inside `parse`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use logsift_core::{FieldValue, Format};
use logsift_parse::{parse, ParseOptions};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn bump() {
    // `try_with`: the allocator can be called while a thread's locals are being torn down.
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        bump();
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        bump();
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // A growing Vec or String reallocates: that is an allocation too.
        bump();
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const OPTS: ParseOptions = ParseOptions {
    received_at_ns: 1_700_000_000_000_000_000,
    default_offset_secs: 0,
    logfmt: false,
};

/// Allocations made by parsing `line` (the record is dropped outside the counted region), and
/// the number of fields it got.
fn count(format: Format, line: &[u8]) -> (usize, usize) {
    let before = ALLOCATIONS.with(Cell::get);
    let record = parse(format, line, &OPTS);
    let after = ALLOCATIONS.with(Cell::get);
    assert_eq!(
        record.parse_error,
        None,
        "{}",
        String::from_utf8_lossy(line)
    );
    // Every field name is composed, and every value borrowed from the line.
    for (name, value) in record.fields() {
        assert!(name.contains('.'), "{name}");
        assert!(
            matches!(
                value,
                FieldValue::Str(std::borrow::Cow::Borrowed(_)) | FieldValue::Number(_)
            ),
            "{name}: {value:?}"
        );
    }
    (after - before, record.fields.len())
}

fn sd_line(params: usize) -> String {
    let sd: String = (0..params)
        .map(|i| format!(" p{i}=\"value {i}\""))
        .collect();
    format!("<165>1 2003-10-11T22:14:15.003Z host.example.com app 42 ID47 [origin@32473{sd}] the message")
}

fn json_line(fields: usize) -> String {
    let inner: Vec<String> = (0..fields).map(|i| format!("\"k{i}\":{i}")).collect();
    format!(
        "{{\"ts\":\"2024-01-02T03:04:05Z\",\"level\":\"info\",\"msg\":\"hello\",\"req\":{{\"h\":{{{}}}}}}}",
        inner.join(",")
    )
}

#[test]
fn rfc5424_sd_allocations_do_not_grow_with_params() {
    let (one, n1) = count(Format::Syslog, sd_line(1).as_bytes());
    let (twenty, n20) = count(Format::Syslog, sd_line(20).as_bytes());
    assert_eq!((n1, n20), (1, 20));
    assert_eq!(
        one, twenty,
        "1 param: {one} allocations, 20 params: {twenty}"
    );
    // One Vec for the entries and one String for the composed names.
    assert!(twenty <= 2, "{twenty} allocations");
    // Many SD elements behave the same.
    let many: String = (0..20).map(|i| format!("[e{i} a=\"{i}\"]")).collect();
    let line = format!("<13>1 - h a - - {many} m");
    assert_eq!(count(Format::Syslog, line.as_bytes()).0, one);
}

#[test]
fn nested_json_allocations_do_not_grow_with_fields() {
    let (one, n1) = count(Format::Json, json_line(1).as_bytes());
    let (twenty, n20) = count(Format::Json, json_line(20).as_bytes());
    assert_eq!((n1, n20), (1, 20));
    assert_eq!(
        one, twenty,
        "1 field: {one} allocations, 20 fields: {twenty}"
    );
    let (hundred, _) = count(Format::Auto, json_line(100).as_bytes());
    assert_eq!(one, hundred);
    // Entries, names, and the scratch path for nested names.
    assert!(twenty <= 3, "{twenty} allocations");
}

#[test]
fn a_line_without_fields_allocates_nothing() {
    let lines: [&[u8]; 3] = [
        b"<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - 'su root' failed",
        b"<13>Feb  5 17:32:18 10.0.0.99 sshd[42]: Use the BFG!",
        b"{\"ts\":1716723772.6014807,\"level\":30,\"msg\":\"hi\"}",
    ];
    for line in lines {
        let before = ALLOCATIONS.with(Cell::get);
        let record = parse(Format::Auto, line, &OPTS);
        let after = ALLOCATIONS.with(Cell::get);
        assert!(record.fields.is_empty());
        // JSON pre-sizes its entries from the `:` count, which includes the mapped keys.
        let allowed = usize::from(line[0] == b'{');
        assert!(
            after - before <= allowed,
            "{}: {}",
            String::from_utf8_lossy(line),
            after - before
        );
    }
}
