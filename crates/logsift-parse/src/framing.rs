//! RFC 6587 framing of a syslog TCP stream.
//!
//! Each connection gets one [`Framer`]. It decides the framing from the first bytes: octet
//! counting (`MSG-LEN SP <PRI>...`) when the stream starts with `[1-9][0-9]{0,8} <`, newline
//! framing otherwise. The framer owns no buffer: the caller keeps the unconsumed bytes, calls
//! [`Framer::next`] until it answers [`Step::NeedMore`], and drops `consumed` bytes after each
//! step. Oversized frames are reported once and skipped without buffering them.

use std::fmt;
use std::ops::Range;

use memchr::memchr;

/// How frames are delimited on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Non-transparent framing: LF ends a frame.
    Newline,
    /// `MSG-LEN SP MSG`.
    OctetCounting,
}

/// What [`Framer::next`] found. `consumed` always counts from the start of the buffer passed in
/// and includes any bytes the framer skipped before the frame or error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `buf[start..end]` is one frame (terminator, trailing CR and NUL padding removed).
    Frame {
        start: usize,
        end: usize,
        consumed: usize,
    },
    /// A bad frame was skipped (or is being skipped: the framer keeps discarding its rest).
    Error { error: FrameError, consumed: usize },
    /// No complete frame in the buffer; read more after dropping `consumed` bytes.
    NeedMore { consumed: usize },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    TooLarge { limit: usize },
    BadLength(String),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLarge { limit } => write!(f, "frame exceeds {limit} bytes"),
            FrameError::BadLength(why) => write!(f, "bad octet-counting length: {why}"),
        }
    }
}

impl std::error::Error for FrameError {}

/// The longest MSG-LEN we read: 9 digits, as in the detection rule. Anything longer is bad.
const MAX_LEN_DIGITS: usize = 9;

#[derive(Debug, Clone)]
pub struct Framer {
    max_frame_bytes: usize,
    mode: Option<Framing>,
    /// Dropping bytes up to and including the next LF (rest of an oversized newline frame, or
    /// resynchronising after a bad octet-counting header).
    skip_to_lf: bool,
    /// Bytes still to drop of an oversized octet-counted frame.
    skip_bytes: usize,
}

impl Framer {
    pub fn new(max_frame_bytes: usize) -> Self {
        Framer {
            max_frame_bytes,
            mode: None,
            skip_to_lf: false,
            skip_bytes: 0,
        }
    }

    /// The framing detected on this connection, once enough bytes have been seen.
    pub fn framing(&self) -> Option<Framing> {
        self.mode
    }

    /// Looks at `buf` (the unconsumed bytes from the socket). The caller drops `consumed` bytes
    /// from the front afterwards; `Frame`'s `start..end` index into `buf` as passed.
    pub fn next(&mut self, buf: &[u8]) -> Step {
        let mut pos = 0;
        if self.skip_bytes > 0 {
            let n = self.skip_bytes.min(buf.len());
            self.skip_bytes -= n;
            pos = n;
            if self.skip_bytes > 0 {
                return Step::NeedMore { consumed: pos };
            }
        }
        if self.skip_to_lf {
            match memchr(b'\n', &buf[pos..]) {
                Some(i) => {
                    self.skip_to_lf = false;
                    pos += i + 1;
                }
                None => {
                    return Step::NeedMore {
                        consumed: buf.len(),
                    }
                }
            }
        }
        let mode = match self.mode {
            Some(mode) => mode,
            None => match detect(&buf[pos..]) {
                Some(mode) => {
                    self.mode = Some(mode);
                    mode
                }
                None => return Step::NeedMore { consumed: pos },
            },
        };
        match mode {
            Framing::Newline => self.next_newline(buf, pos),
            Framing::OctetCounting => self.next_octet(buf, pos),
        }
    }

    fn next_newline(&mut self, buf: &[u8], mut pos: usize) -> Step {
        loop {
            let Some(i) = memchr(b'\n', &buf[pos..]) else {
                // Allow for a CR and a little NUL padding before calling a partial frame too big.
                if buf.len() - pos > self.max_frame_bytes + 2 {
                    self.skip_to_lf = true;
                    return self.too_large(buf.len());
                }
                return Step::NeedMore { consumed: pos };
            };
            let lf = pos + i;
            let end = trim_end(buf, pos, lf);
            // The same limits as for a partial frame above (raw bytes, with room for a CR and a
            // little padding), checked first: whether a frame is too large must not depend on
            // whether its LF arrived in the same read (found by the `framing` fuzz target).
            if lf - pos > self.max_frame_bytes + 2 || end - pos > self.max_frame_bytes {
                return self.too_large(lf + 1);
            }
            if end == pos {
                pos = lf + 1;
                continue;
            }
            return Step::Frame {
                start: pos,
                end,
                consumed: lf + 1,
            };
        }
    }

    fn next_octet(&mut self, buf: &[u8], mut pos: usize) -> Step {
        // Senders that end each counted frame with LF anyway, or pad with NULs, are tolerated.
        while matches!(buf.get(pos), Some(b'\n' | b'\r' | b' ' | 0)) {
            pos += 1;
        }
        let digits = buf[pos..]
            .iter()
            .take(MAX_LEN_DIGITS + 1)
            .take_while(|c| c.is_ascii_digit())
            .count();
        let header_end = pos + digits;
        match buf.get(header_end) {
            None if digits <= MAX_LEN_DIGITS => return Step::NeedMore { consumed: pos },
            Some(b' ') if digits > 0 && digits <= MAX_LEN_DIGITS && buf[pos] != b'0' => {}
            _ => {
                let why = if digits == 0 {
                    "expected a digit".to_string()
                } else if buf[pos] == b'0' {
                    "MSG-LEN starts with 0".to_string()
                } else if digits > MAX_LEN_DIGITS {
                    format!("MSG-LEN longer than {MAX_LEN_DIGITS} digits")
                } else {
                    "expected SP after MSG-LEN".to_string()
                };
                return self.bad_length(buf, pos, why);
            }
        }
        let len = buf[pos..header_end]
            .iter()
            .fold(0usize, |acc, &d| acc * 10 + usize::from(d - b'0'));
        let start = header_end + 1;
        let available = buf.len() - start;
        if len > self.max_frame_bytes {
            let n = len.min(available);
            self.skip_bytes = len - n;
            return self.too_large(start + n);
        }
        if available < len {
            return Step::NeedMore { consumed: pos };
        }
        Step::Frame {
            start,
            end: start + len,
            consumed: start + len,
        }
    }

    fn too_large(&self, consumed: usize) -> Step {
        Step::Error {
            error: FrameError::TooLarge {
                limit: self.max_frame_bytes,
            },
            consumed,
        }
    }

    /// Reports a bad header and resynchronises on the next LF, where a new frame most likely
    /// starts.
    fn bad_length(&mut self, buf: &[u8], pos: usize, why: String) -> Step {
        let consumed = match memchr(b'\n', &buf[pos..]) {
            Some(i) => pos + i + 1,
            None => {
                self.skip_to_lf = true;
                buf.len()
            }
        };
        Step::Error {
            error: FrameError::BadLength(why),
            consumed,
        }
    }

    /// At EOF: what is left in `buf` as a final frame, if anything. Only newline framing has
    /// such a frame (a last line without LF); an incomplete octet-counted frame is truncated
    /// and dropped.
    pub fn finish(&mut self, buf: &[u8]) -> Option<Range<usize>> {
        let skipping = self.skip_to_lf || self.skip_bytes > 0;
        self.skip_to_lf = false;
        self.skip_bytes = 0;
        if skipping || self.mode == Some(Framing::OctetCounting) {
            return None;
        }
        let end = trim_end(buf, 0, buf.len());
        (end > 0 && end <= self.max_frame_bytes).then_some(0..end)
    }
}

/// `None` until the first bytes decide: a digit run could still become `LEN SP <`.
fn detect(buf: &[u8]) -> Option<Framing> {
    let digits = buf
        .iter()
        .take(MAX_LEN_DIGITS + 1)
        .take_while(|c| c.is_ascii_digit())
        .count();
    if digits == 0 || buf[0] == b'0' || digits > MAX_LEN_DIGITS {
        return (!buf.is_empty()).then_some(Framing::Newline);
    }
    match (buf.get(digits), buf.get(digits + 1)) {
        (None, _) | (Some(b' '), None) => None,
        (Some(b' '), Some(b'<')) => Some(Framing::OctetCounting),
        _ => Some(Framing::Newline),
    }
}

/// End of `buf[start..end]` without trailing CR and NUL bytes.
fn trim_end(buf: &[u8], start: usize, mut end: usize) -> usize {
    while end > start && matches!(buf[end - 1], b'\r' | 0) {
        end -= 1;
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Eq)]
    enum Out {
        Frame(Vec<u8>),
        Err(FrameError),
    }

    /// Feeds `stream` in chunks of the given sizes (cycled), like a socket would, keeping the
    /// caller's buffer the way a listener does.
    fn run(max: usize, stream: &[u8], chunks: &[usize]) -> (Vec<Out>, usize) {
        let mut framer = Framer::new(max);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        let mut peak = 0;
        let mut fed = 0;
        let mut sizes = chunks.iter().cycle();
        while fed < stream.len() {
            let n = (*sizes.next().unwrap_or(&1)).max(1).min(stream.len() - fed);
            buf.extend_from_slice(&stream[fed..fed + n]);
            fed += n;
            peak = peak.max(buf.len());
            loop {
                let consumed = match framer.next(&buf) {
                    Step::Frame {
                        start,
                        end,
                        consumed,
                    } => {
                        out.push(Out::Frame(buf[start..end].to_vec()));
                        consumed
                    }
                    Step::Error { error, consumed } => {
                        out.push(Out::Err(error));
                        consumed
                    }
                    Step::NeedMore { consumed } => {
                        buf.drain(..consumed);
                        break;
                    }
                };
                buf.drain(..consumed);
            }
        }
        if let Some(r) = framer.finish(&buf) {
            out.push(Out::Frame(buf[r].to_vec()));
        }
        (out, peak)
    }

    fn frames(list: &[&str]) -> Vec<Out> {
        list.iter()
            .map(|f| Out::Frame(f.as_bytes().to_vec()))
            .collect()
    }

    fn octet(msgs: &[&str]) -> Vec<u8> {
        msgs.iter()
            .flat_map(|m| format!("{} {m}", m.len()).into_bytes())
            .collect()
    }

    #[test]
    fn newline_frames_with_crlf_nul_and_blank_lines() {
        let stream = b"<1>1 - - - - - - a\r\n\n\0\n<2>b\0\r\nlast";
        let (out, _) = run(100, stream, &[1000]);
        assert_eq!(out, frames(&["<1>1 - - - - - - a", "<2>b", "last"]));
    }

    /// Found by the `framing` fuzz target: a line of NUL padding longer than the limit was
    /// skipped silently when its LF came in the same read, but reported as too large when
    /// read byte by byte. Now both report it.
    #[test]
    fn oversized_padding_is_too_large_however_it_is_read() {
        let stream = b"\0\0\0\0\0\nok\n";
        let whole = run(2, stream, &[stream.len()]).0;
        assert_eq!(whole, run(2, stream, &[1]).0);
        assert_eq!(
            whole,
            [
                Out::Err(FrameError::TooLarge { limit: 2 }),
                Out::Frame(b"ok".to_vec())
            ]
        );
    }

    #[test]
    fn detection() {
        assert_eq!(detect(b""), None);
        assert_eq!(detect(b"12"), None);
        assert_eq!(detect(b"12 "), None);
        assert_eq!(detect(b"12 <"), Some(Framing::OctetCounting));
        assert_eq!(detect(b"12 x"), Some(Framing::Newline));
        assert_eq!(detect(b"012 <"), Some(Framing::Newline));
        assert_eq!(detect(b"1234567890 <"), Some(Framing::Newline));
        assert_eq!(detect(b"<13>"), Some(Framing::Newline));
        assert_eq!(detect(b"2024-01-01"), Some(Framing::Newline));
    }

    #[test]
    fn octet_counting_split_at_every_position() {
        let msgs = [
            "<1>1 2003-10-11T22:14:15.003Z host.local - - - -",
            "<3>1 - host.local - - - -",
            "<2>1 - host.local su - - - κόσμε\n",
            "<5>x",
        ];
        let stream = octet(&msgs);
        let want = frames(&msgs);
        for split in 0..=stream.len() {
            let mut framer = Framer::new(1000);
            let mut got = Vec::new();
            let mut buf = stream[..split].to_vec();
            let mut rest = &stream[split..];
            loop {
                match framer.next(&buf) {
                    Step::Frame {
                        start,
                        end,
                        consumed,
                    } => {
                        got.push(Out::Frame(buf[start..end].to_vec()));
                        buf.drain(..consumed);
                    }
                    Step::Error { error, .. } => panic!("{error}"),
                    Step::NeedMore { consumed } => {
                        buf.drain(..consumed);
                        if rest.is_empty() {
                            break;
                        }
                        buf.extend_from_slice(rest);
                        rest = &[];
                    }
                }
            }
            assert_eq!(got, want, "split at {split}");
            assert_eq!(framer.framing(), Some(Framing::OctetCounting));
        }
        for chunks in [&[1][..], &[2, 3], &[7], &[5, 1, 13]] {
            assert_eq!(run(1000, &stream, chunks).0, want, "{chunks:?}");
        }
    }

    #[test]
    fn oversized_octet_frame_keeps_sync() {
        let big = format!("<1>{}", "x".repeat(100));
        let stream = octet(&["<1>ok", &big, "<2>after"]);
        for chunks in [&[1][..], &[3], &[1000]] {
            let (out, peak) = run(20, &stream, chunks);
            let mut want = frames(&["<1>ok"]);
            want.push(Out::Err(FrameError::TooLarge { limit: 20 }));
            want.extend(frames(&["<2>after"]));
            assert_eq!(out, want, "{chunks:?}");
            if chunks[0] < 10 {
                assert!(peak < 40, "buffered {peak} bytes");
            }
        }
    }

    #[test]
    fn oversized_newline_frame_keeps_sync_and_bounds_memory() {
        let stream = format!("<1>ok\n<1>{}\n<2>after\n", "y".repeat(500));
        for chunks in [&[1][..], &[7], &[64], &[10_000]] {
            let (out, peak) = run(20, stream.as_bytes(), chunks);
            let mut want = frames(&["<1>ok"]);
            want.push(Out::Err(FrameError::TooLarge { limit: 20 }));
            want.extend(frames(&["<2>after"]));
            assert_eq!(out, want, "{chunks:?}");
            if chunks[0] < 20 {
                assert!(peak <= 20 + 2 + chunks[0], "buffered {peak} bytes");
            }
        }
        // A frame of exactly the limit, with CRLF, is fine.
        let (out, _) = run(5, b"12345\r\n123456\n", &[1]);
        assert_eq!(
            out,
            vec![
                Out::Frame(b"12345".to_vec()),
                Out::Err(FrameError::TooLarge { limit: 5 })
            ]
        );
    }

    #[test]
    fn bad_length_resyncs_on_lf() {
        // go-syslog framing case: 16 bytes of frame, then garbage where a MSG-LEN should be.
        let (out, _) = run(100, b"16 <1>1 - - - - - -xaaa\n5 <1>ok", &[1]);
        assert_eq!(out.len(), 3, "{out:?}");
        assert_eq!(out[0], Out::Frame(b"<1>1 - - - - - -".to_vec()));
        assert!(matches!(&out[1], Out::Err(FrameError::BadLength(_))));
        assert_eq!(out[2], Out::Frame(b"<1>ok".to_vec()));
        let (out, _) = run(100, b"3 <1>0 <1>", &[100]);
        assert!(matches!(&out[1], Out::Err(FrameError::BadLength(m)) if m.contains("0")));
    }

    #[test]
    fn truncated_octet_frame_at_eof_is_dropped() {
        let (out, _) = run(100, b"16 <1>1", &[100]);
        assert!(out.is_empty());
    }

    #[test]
    fn garbage_never_panics() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut rand = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet = b"0123456789 <>\n\r\0x";
        for _ in 0..2000 {
            let len = (rand() % 64) as usize;
            let stream: Vec<u8> = (0..len)
                .map(|_| alphabet[(rand() % alphabet.len() as u64) as usize])
                .collect();
            let chunk = (rand() % 8) as usize + 1;
            let (out, peak) = run(16, &stream, &[chunk]);
            assert!(peak <= 16 + 12 + chunk, "buffered {peak}");
            for o in out {
                if let Out::Frame(f) = o {
                    assert!(f.len() <= 16);
                }
            }
        }
    }
}
