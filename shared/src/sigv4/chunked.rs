//! Incremental decoder of `Content-Encoding: aws-chunked` bodies, signed per chunk or not,
//! with optional trailers (a checksum, and for the signed variant a trailer signature).
//!
//! <https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-streaming.html>
//! <https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-streaming-trailers.html>

use base64::Engine as _;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::canonical::{self, EMPTY_SHA256};
use super::verify::signature_mismatch;
use super::StreamingContext;
use crate::body::ByteFilter;
use crate::error::{S3Error, S3ErrorCode};

/// Largest chunk accepted: a signed chunk is held whole until its signature is checked.
pub const MAX_CHUNK: u64 = 16 * 1024 * 1024;
/// Longest framing line (chunk header or trailer line).
const MAX_LINE: usize = 4096;
/// Most trailer lines.
const MAX_TRAILERS: usize = 16;

fn framing(detail: &str) -> S3Error {
    S3Error::new(
        S3ErrorCode::InvalidRequest,
        format!("Invalid aws-chunked body: {detail}"),
    )
}

fn incomplete() -> S3Error {
    S3Error::new(
        S3ErrorCode::IncompleteBody,
        "The request body terminated unexpectedly",
    )
}

/// A trailing checksum algorithm, named by `x-amz-trailer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumAlgorithm {
    Crc32,
    Crc32c,
    Crc64Nvme,
    Sha1,
    Sha256,
}

static CRC32: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);
static CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);
static CRC64NVME: crc::Crc<u64> = crc::Crc::<u64>::new(&crc::CRC_64_NVME);

impl ChecksumAlgorithm {
    /// From a header name such as `x-amz-checksum-crc32c`.
    pub fn from_header(name: &str) -> Option<Self> {
        Some(match name.trim().to_ascii_lowercase().as_str() {
            "x-amz-checksum-crc32" => Self::Crc32,
            "x-amz-checksum-crc32c" => Self::Crc32c,
            "x-amz-checksum-crc64nvme" => Self::Crc64Nvme,
            "x-amz-checksum-sha1" => Self::Sha1,
            "x-amz-checksum-sha256" => Self::Sha256,
            _ => return None,
        })
    }

    pub fn header(self) -> &'static str {
        match self {
            Self::Crc32 => "x-amz-checksum-crc32",
            Self::Crc32c => "x-amz-checksum-crc32c",
            Self::Crc64Nvme => "x-amz-checksum-crc64nvme",
            Self::Sha1 => "x-amz-checksum-sha1",
            Self::Sha256 => "x-amz-checksum-sha256",
        }
    }

    /// The name AWS uses in messages.
    pub fn label(self) -> &'static str {
        match self {
            Self::Crc32 => "CRC32",
            Self::Crc32c => "CRC32C",
            Self::Crc64Nvme => "CRC64NVME",
            Self::Sha1 => "SHA1",
            Self::Sha256 => "SHA256",
        }
    }

    pub fn hasher(self) -> Checksum {
        match self {
            Self::Crc32 => Checksum::Crc32(CRC32.digest()),
            Self::Crc32c => Checksum::Crc32c(CRC32C.digest()),
            Self::Crc64Nvme => Checksum::Crc64Nvme(CRC64NVME.digest()),
            Self::Sha1 => Checksum::Sha1(<sha1::Sha1 as Digest>::new()),
            Self::Sha256 => Checksum::Sha256(Sha256::new()),
        }
    }
}

/// A running checksum.
pub enum Checksum {
    Crc32(crc::Digest<'static, u32>),
    Crc32c(crc::Digest<'static, u32>),
    Crc64Nvme(crc::Digest<'static, u64>),
    Sha1(sha1::Sha1),
    Sha256(Sha256),
}

impl Checksum {
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Self::Crc32(d) | Self::Crc32c(d) => d.update(data),
            Self::Crc64Nvme(d) => d.update(data),
            Self::Sha1(d) => Digest::update(d, data),
            Self::Sha256(d) => Digest::update(d, data),
        }
    }

    /// The digest bytes (big-endian for CRCs), as the base64 header value encodes them.
    pub fn finalize(self) -> Vec<u8> {
        match self {
            Self::Crc32(d) | Self::Crc32c(d) => d.finalize().to_be_bytes().to_vec(),
            Self::Crc64Nvme(d) => d.finalize().to_be_bytes().to_vec(),
            Self::Sha1(d) => d.finalize().to_vec(),
            Self::Sha256(d) => d.finalize().to_vec(),
        }
    }
}

/// Where the decoder is in the framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading `hex-size[;chunk-signature=...]\r\n`.
    ChunkHeader,
    /// Reading chunk data.
    Data {
        remaining: u64,
    },
    /// Reading the `\r\n` after chunk data.
    DataEnd,
    /// After the final chunk: trailer lines up to an empty line.
    Trailer,
    Done,
}

/// The aws-chunked [`ByteFilter`].
pub struct ChunkedDecoder {
    /// `None`: unsigned chunks (`STREAMING-UNSIGNED-PAYLOAD-TRAILER`).
    signing: Option<StreamingContext>,
    /// The signature of the previous chunk (the seed signature at first).
    previous_signature: String,
    /// The running checksum named by `x-amz-trailer`.
    checksum: Option<(ChecksumAlgorithm, Checksum)>,
    /// `x-amz-decoded-content-length`, when sent.
    expected_len: Option<u64>,
    decoded_len: u64,
    state: State,
    line: Vec<u8>,
    /// The signature the current chunk's header announced.
    chunk_signature: String,
    /// Data of the current (signed) chunk, not yet verified.
    pending: Vec<Bytes>,
    pending_hash: Sha256,
    /// Data already checked but held back so that the backend never sees the whole body
    /// before the end of the stream (last chunk, trailer) is verified.
    held: Vec<Bytes>,
    trailers: Vec<(String, String)>,
    failed: Option<S3Error>,
}

impl ChunkedDecoder {
    /// `signing` is `None` for unsigned chunks. `trailer` is the checksum `x-amz-trailer` names.
    pub fn new(
        signing: Option<StreamingContext>,
        trailer: Option<ChecksumAlgorithm>,
        expected_len: Option<u64>,
    ) -> Self {
        let previous_signature = signing
            .as_ref()
            .map(|s| s.seed_signature.clone())
            .unwrap_or_default();
        Self {
            signing,
            previous_signature,
            checksum: trailer.map(|a| (a, a.hasher())),
            expected_len,
            decoded_len: 0,
            state: State::ChunkHeader,
            line: Vec::new(),
            chunk_signature: String::new(),
            pending: Vec::new(),
            pending_hash: Sha256::new(),
            held: Vec::new(),
            trailers: Vec::new(),
            failed: None,
        }
    }

    /// Takes bytes of a `\r\n`-terminated line from `input`; returns the line (without
    /// `\r\n`) once complete.
    fn take_line(&mut self, input: &mut Bytes) -> Result<Option<Vec<u8>>, S3Error> {
        match input.iter().position(|&b| b == b'\n') {
            Some(pos) => {
                self.line.extend_from_slice(&input.split_to(pos + 1));
                if self.line.len() > MAX_LINE + 2 {
                    return Err(framing("line too long"));
                }
                let mut line = std::mem::take(&mut self.line);
                line.pop();
                if line.pop() != Some(b'\r') {
                    return Err(framing("lines must end with CRLF"));
                }
                Ok(Some(line))
            }
            None => {
                self.line.extend_from_slice(input);
                input.clear();
                if self.line.len() > MAX_LINE + 2 {
                    return Err(framing("line too long"));
                }
                Ok(None)
            }
        }
    }

    fn chunk_string_to_sign(&self, ctx: &StreamingContext, data_hash: &str) -> String {
        format!(
            "AWS4-HMAC-SHA256-PAYLOAD\n{}\n{}\n{}\n{EMPTY_SHA256}\n{data_hash}",
            ctx.amz_date, ctx.scope, self.previous_signature
        )
    }

    /// Checks the current chunk's signature over data hashing to `data_hash`.
    fn verify_chunk(&mut self, data_hash: &str) -> Result<(), S3Error> {
        let Some(ctx) = &self.signing else {
            return Ok(());
        };
        let computed =
            canonical::signature(&ctx.signing_key, &self.chunk_string_to_sign(ctx, data_hash));
        if !bool::from(computed.as_bytes().ct_eq(self.chunk_signature.as_bytes())) {
            return Err(signature_mismatch());
        }
        self.previous_signature = computed;
        Ok(())
    }

    fn on_chunk_header(&mut self, line: &[u8]) -> Result<(), S3Error> {
        let line = std::str::from_utf8(line).map_err(|_| framing("chunk header is not text"))?;
        let (size, ext) = line.split_once(';').unwrap_or((line, ""));
        if size.is_empty() || size.len() > 16 || !size.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(framing("invalid chunk size"));
        }
        let size = u64::from_str_radix(size, 16).map_err(|_| framing("invalid chunk size"))?;
        if size > MAX_CHUNK {
            return Err(framing("chunk larger than 16 MiB"));
        }
        if self.signing.is_some() {
            let sig = ext
                .strip_prefix("chunk-signature=")
                .filter(|s| {
                    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                })
                .ok_or_else(|| framing("missing or malformed chunk-signature"))?;
            self.chunk_signature = sig.to_owned();
        }
        if size == 0 {
            self.verify_chunk(EMPTY_SHA256)?;
            self.state = State::Trailer;
        } else {
            if self
                .expected_len
                .is_some_and(|e| self.decoded_len + size > e)
            {
                return Err(framing("chunks longer than x-amz-decoded-content-length"));
            }
            // Another data chunk follows, so the held one is not the last: release it.
            self.state = State::Data { remaining: size };
        }
        Ok(())
    }

    fn on_data(&mut self, piece: Bytes, out: &mut Vec<Bytes>) {
        self.decoded_len += piece.len() as u64;
        if let Some((_, c)) = &mut self.checksum {
            c.update(&piece);
        }
        if self.signing.is_some() {
            self.pending_hash.update(&piece);
            self.pending.push(piece);
        } else {
            // Unsigned: release as it comes, holding back the latest piece until the end.
            out.append(&mut self.held);
            self.held.push(piece);
        }
    }

    fn on_data_complete(&mut self, out: &mut Vec<Bytes>) -> Result<(), S3Error> {
        if self.signing.is_some() {
            let hash = hex::encode(std::mem::take(&mut self.pending_hash).finalize());
            self.verify_chunk(&hash)?;
            out.append(&mut self.held);
            self.held = std::mem::take(&mut self.pending);
        }
        Ok(())
    }

    fn on_trailer_line(&mut self, line: &[u8]) -> Result<(), S3Error> {
        let line = std::str::from_utf8(line).map_err(|_| framing("trailer is not text"))?;
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| framing("malformed trailer"))?;
        if self.trailers.len() >= MAX_TRAILERS {
            return Err(framing("too many trailers"));
        }
        self.trailers
            .push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        Ok(())
    }

    /// The end of the stream: checks the trailer signature, the checksum and the length.
    fn complete(&mut self) -> Result<Vec<Bytes>, S3Error> {
        let signature = match self
            .trailers
            .iter()
            .position(|(n, _)| n == "x-amz-trailer-signature")
        {
            Some(i) => Some(self.trailers.remove(i).1),
            None => None,
        };
        match &self.signing {
            Some(ctx) if ctx.signed_trailer => {
                let signature =
                    signature.ok_or_else(|| framing("missing x-amz-trailer-signature"))?;
                let mut sorted: Vec<&(String, String)> = self.trailers.iter().collect();
                sorted.sort();
                let canonical: String = sorted.iter().map(|(n, v)| format!("{n}:{v}\n")).collect();
                let sts = format!(
                    "AWS4-HMAC-SHA256-TRAILER\n{}\n{}\n{}\n{}",
                    ctx.amz_date,
                    ctx.scope,
                    self.previous_signature,
                    canonical::sha256_hex(canonical.as_bytes())
                );
                let computed = canonical::signature(&ctx.signing_key, &sts);
                if !bool::from(computed.as_bytes().ct_eq(signature.as_bytes())) {
                    return Err(signature_mismatch());
                }
            }
            Some(_) if signature.is_some() || !self.trailers.is_empty() => {
                // Trailers would be unsigned data in a signed stream.
                return Err(framing(
                    "unexpected trailer in a stream without signed trailers",
                ));
            }
            _ if signature.is_some() => return Err(framing("unexpected x-amz-trailer-signature")),
            _ => {}
        }
        if let Some((algorithm, checksum)) = self.checksum.take() {
            let sent = self
                .trailers
                .iter()
                .find(|(n, _)| n == algorithm.header())
                .ok_or_else(|| {
                    framing(&format!(
                        "missing the {} trailer named by x-amz-trailer",
                        algorithm.header()
                    ))
                })?;
            let sent = base64::engine::general_purpose::STANDARD
                .decode(&sent.1)
                .map_err(|_| {
                    S3Error::new(
                        S3ErrorCode::InvalidRequest,
                        format!(
                            "Value for {} trailing header is invalid.",
                            algorithm.header()
                        ),
                    )
                })?;
            if !bool::from(checksum.finalize().ct_eq(&sent)) {
                return Err(S3Error::new(
                    S3ErrorCode::BadDigest,
                    format!(
                        "The {} you specified did not match the calculated checksum.",
                        algorithm.label()
                    ),
                ));
            }
        }
        if self.expected_len.is_some_and(|e| e != self.decoded_len) {
            return Err(S3Error::new(
                S3ErrorCode::IncompleteBody,
                "You did not provide the number of bytes specified by the x-amz-decoded-content-length HTTP header",
            ));
        }
        self.state = State::Done;
        Ok(std::mem::take(&mut self.held))
    }

    fn run(&mut self, mut input: Bytes, out: &mut Vec<Bytes>) -> Result<(), S3Error> {
        while !input.is_empty() {
            match self.state {
                State::ChunkHeader => {
                    if let Some(line) = self.take_line(&mut input)? {
                        self.on_chunk_header(&line)?;
                        if matches!(self.state, State::Data { .. }) && self.signing.is_some() {
                            out.append(&mut self.held);
                        }
                    }
                }
                State::Data { remaining } => {
                    let n = remaining.min(input.len() as u64) as usize;
                    self.on_data(input.split_to(n), out);
                    let remaining = remaining - n as u64;
                    self.state = State::Data { remaining };
                    if remaining == 0 {
                        self.on_data_complete(out)?;
                        self.state = State::DataEnd;
                    }
                }
                State::DataEnd => {
                    if let Some(line) = self.take_line(&mut input)? {
                        if !line.is_empty() {
                            return Err(framing("chunk data longer than its size"));
                        }
                        self.state = State::ChunkHeader;
                    }
                }
                State::Trailer => {
                    if let Some(line) = self.take_line(&mut input)? {
                        if line.is_empty() {
                            let rest = self.complete()?;
                            out.extend(rest);
                        } else {
                            self.on_trailer_line(&line)?;
                        }
                    }
                }
                State::Done => return Err(framing("data after the final chunk")),
            }
        }
        Ok(())
    }
}

impl ByteFilter for ChunkedDecoder {
    fn push(&mut self, input: Bytes) -> Result<Vec<Bytes>, S3Error> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let mut out = Vec::new();
        match self.run(input, &mut out) {
            Ok(()) => Ok(out),
            Err(e) => {
                self.failed = Some(e.clone());
                self.held.clear();
                self.pending.clear();
                Err(e)
            }
        }
    }

    fn finish(&mut self) -> Result<Vec<Bytes>, S3Error> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let result = match self.state {
            State::Done => Ok(Vec::new()),
            // Some clients end the stream right after the last trailer line (or the final
            // chunk) without the closing empty line; everything is still checked.
            State::Trailer if self.line.is_empty() => self.complete(),
            _ => Err(incomplete()),
        };
        if let Err(e) = &result {
            self.failed = Some(e.clone());
            self.held.clear();
        }
        result
    }
}
