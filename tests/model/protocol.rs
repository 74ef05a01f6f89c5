//! Parser and codec checks on arbitrary bytes.

use bytes::BytesMut;
use stalkd::protocol::parse::{parse_line, Parsed};
use stalkd::protocol::{Codec, Command, Frame, PutBody, MAX_LINE};
use tokio_util::codec::Decoder;

/// `parse_line` must not panic; a parsed command, re-encoded in canonical
/// form, must parse back to itself; and the codec must frame `line\r\n` as
/// the parser reads `line`.
pub fn check_parse_line(line: &[u8]) {
    let parsed = parse_line(line);
    if line.iter().any(|&b| b == 0 || b == b'\r') {
        assert_eq!(
            parsed,
            Parsed::Error(stalkd::protocol::Reply::BadFormat),
            "NUL or CR must be BAD_FORMAT"
        );
    }
    if let Some(canonical) = encode(&parsed) {
        assert_eq!(
            parse_line(&canonical),
            parsed,
            "{:?} re-encoded as {:?}",
            String::from_utf8_lossy(line),
            String::from_utf8_lossy(&canonical)
        );
    }
    if line.len() + 2 <= MAX_LINE && !line.windows(2).any(|w| w == b"\r\n") {
        let mut input = line.to_vec();
        input.extend_from_slice(b"\r\n");
        let max = stalkd::protocol::DEFAULT_MAX_JOB_SIZE;
        let want = match parsed.clone() {
            Parsed::Command(c) => vec![Frame::Command(c)],
            Parsed::Error(r) => vec![Frame::Error(r)],
            Parsed::PutHeader { bytes, .. } if bytes > max => vec![],
            Parsed::PutHeader {
                pri,
                delay,
                ttr,
                trailing_text: true,
                ..
            } => vec![Frame::Command(Command::Put {
                pri,
                delay,
                ttr,
                body: PutBody::TrailingText,
            })],
            // Waiting for a body that never comes.
            Parsed::PutHeader { .. } => vec![],
        };
        assert_eq!(decode_chunks(max, &[&input]), want, "codec vs parser");
    }
}

/// The canonical text of a parsed line, when there is one.
fn encode(parsed: &Parsed) -> Option<Vec<u8>> {
    let text = match parsed {
        Parsed::Error(_) => return None,
        Parsed::PutHeader {
            pri,
            delay,
            ttr,
            bytes,
            trailing_text,
        } => {
            let tail = if *trailing_text { " x" } else { "" };
            format!("put {pri} {delay} {ttr} {bytes}{tail}")
        }
        Parsed::Command(Command::Put { .. } | Command::PauseTubeBadName) => return None,
        Parsed::Command(cmd) => cmd.to_string(),
    };
    Some(text.into_bytes())
}

/// Feeds `chunks` to a fresh codec as a `FramedRead` would: decode until
/// `None` after each chunk, then `decode_eof` until `None`.
pub fn decode_chunks(max_job_size: u32, chunks: &[&[u8]]) -> Vec<Frame> {
    let mut codec = Codec::new(max_job_size);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        while let Some(frame) = codec.decode(&mut buf).expect("decode never fails") {
            out.push(frame);
        }
    }
    while let Some(frame) = codec.decode_eof(&mut buf).expect("decode_eof never fails") {
        out.push(frame);
    }
    assert!(buf.is_empty(), "decode_eof leaves input behind");
    out
}

/// Input layout: `[size][n][n chunk lengths][stream...]`. `size` picks the
/// max job size (small ones exercise JOB_TOO_BIG); the chunk lengths
/// (0..=63, cycled) cut the stream. Whole, chunked and byte-by-byte
/// decodings must agree.
pub fn check_codec_chunks(data: &[u8]) {
    let Some((&size, rest)) = data.split_first() else {
        return;
    };
    let max_job_size = match size {
        0..=63 => u32::from(size),
        64..=127 => u32::from(size) * 37,
        _ => stalkd::protocol::DEFAULT_MAX_JOB_SIZE,
    };
    let Some((&n, rest)) = rest.split_first() else {
        return;
    };
    let n = usize::from(n % 32).min(rest.len());
    let (lengths, stream) = rest.split_at(n);
    let whole = decode_chunks(max_job_size, &[stream]);

    let mut chunks: Vec<&[u8]> = Vec::new();
    let mut pos = 0;
    let mut i = 0;
    while pos < stream.len() {
        let len = if lengths.is_empty() {
            1
        } else {
            usize::from(lengths[i % lengths.len()] % 64)
        };
        let end = (pos + len).min(stream.len());
        chunks.push(&stream[pos..end]);
        pos = end;
        i += 1;
        if i > 4 * stream.len() + 64 {
            // Only empty chunks: finish in one go.
            chunks.push(&stream[pos..]);
            break;
        }
    }
    let chunked = decode_chunks(max_job_size, &chunks);
    assert_eq!(chunked, whole, "chunked {:?}", chunk_lengths(&chunks));

    if stream.len() <= 4096 {
        let bytewise: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(decode_chunks(max_job_size, &bytewise), whole, "bytewise");
    }
}

fn chunk_lengths(chunks: &[&[u8]]) -> Vec<usize> {
    chunks.iter().map(|c| c.len()).collect()
}
