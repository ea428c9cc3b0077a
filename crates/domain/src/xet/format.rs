//! Xet wire formats, on `xet-core-structures` for hashing and shard parsing: chunk records read
//! incrementally from a stream (bounded per chunk, whatever a header declares), bounded
//! decompression, the per-xorb chunk index Mantle keeps, and shards (parsed under a byte budget;
//! built for the global-dedup answer).

use std::io::Read as _;

use bytes::{Buf as _, Bytes, BytesMut};
use xet_core_structures::merklehash::{self, MerkleHash};
use xet_core_structures::metadata_shard::file_structs::MDBFileInfoView;
use xet_core_structures::metadata_shard::shard_in_memory::MDBInMemoryShard;
use xet_core_structures::metadata_shard::streaming_shard::MDBMinimalShard;
use xet_core_structures::metadata_shard::xorb_structs::{MDBXorbInfo, XorbChunkSequenceEntry, XorbChunkSequenceHeader};
use xet_core_structures::xorb_object::byte_grouping::bg4::bg4_regroup;
use xet_core_structures::xorb_object::XORB_CHUNK_HEADER_LENGTH;

pub(crate) use crate::{Error, Result};

/// The most chunk bytes (uncompressed) one xorb may hold: the protocol's 64 MiB.
pub const MAX_XORB_BYTES: u64 = 64 * 1024 * 1024;
/// The most chunks one xorb may hold.
pub const MAX_XORB_CHUNKS: usize = 8192;
/// The largest upload body accepted for a xorb: its chunks uncompressed plus an 8-byte header
/// each (incompressible chunks are stored as they are), and room for the storage footer some
/// writers append (per chunk a hash and two offsets).
pub const MAX_XORB_UPLOAD: u64 = MAX_XORB_BYTES + MAX_XORB_CHUNKS as u64 * (8 + 48) + 4096;
/// The largest chunk (uncompressed) the chunker produces: twice the 64 KiB target.
pub const MAX_CHUNK_BYTES: usize = 128 * 1024;
/// The largest compressed chunk record accepted: LZ4 framing can make incompressible data a
/// little larger, never twice as large.
const MAX_COMPRESSED_BYTES: usize = 2 * MAX_CHUNK_BYTES;
/// A storage footer some writers append after the chunk records starts with this.
const FOOTER_IDENT: &[u8; 7] = b"XETBLOB";
/// Bytes per chunk in the stored index: hash, packed end, unpacked end.
const INDEX_ENTRY: usize = 32 + 4 + 4;

/// Parses a hash as the protocol writes it in URLs and JSON (64 lowercase hex characters).
pub fn parse_hash(text: &str) -> Result<MerkleHash> {
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(Error::invalid(format!("{text:?} is not a Xet hash (64 lowercase hex characters)")));
    }
    MerkleHash::from_hex(text).map_err(|err| Error::invalid(format!("{text:?} is not a Xet hash: {err}")))
}

/// One chunk of a stored xorb.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkMeta {
    pub hash: MerkleHash,
    /// End of the chunk's record (header + compressed bytes) in the serialized xorb.
    pub packed_end: u32,
    /// End of the chunk's bytes in the xorb's uncompressed contents.
    pub unpacked_end: u32,
}

/// What Mantle keeps about a stored xorb: its chunks, recomputed from its bytes at upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XorbIndex {
    pub hash: MerkleHash,
    pub chunks: Vec<ChunkMeta>,
}

impl XorbIndex {
    /// The stored form: one fixed-size entry per chunk.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.chunks.len() * INDEX_ENTRY);
        for chunk in &self.chunks {
            out.extend_from_slice(chunk.hash.as_bytes());
            out.extend_from_slice(&chunk.packed_end.to_le_bytes());
            out.extend_from_slice(&chunk.unpacked_end.to_le_bytes());
        }
        out
    }

    /// Reads the stored form back.
    pub fn decode(hash: MerkleHash, bytes: &[u8]) -> Result<Self> {
        if !bytes.len().is_multiple_of(INDEX_ENTRY) {
            return Err(Error::internal(format!("the chunk index of xorb {hash} is corrupt")));
        }
        let chunks = bytes
            .chunks_exact(INDEX_ENTRY)
            .map(|entry| {
                let hash = MerkleHash::from_slice(&entry[..32]).map_err(Error::internal)?;
                let word = |at: usize| u32::from_le_bytes([entry[at], entry[at + 1], entry[at + 2], entry[at + 3]]);
                Ok(ChunkMeta { hash, packed_end: word(32), unpacked_end: word(36) })
            })
            .collect::<Result<_>>()?;
        Ok(XorbIndex { hash, chunks })
    }

    /// Serialized length of the chunk records.
    pub fn packed_len(&self) -> u64 {
        self.chunks.last().map_or(0, |c| u64::from(c.packed_end))
    }

    /// Uncompressed length of all chunks.
    pub fn unpacked_len(&self) -> u64 {
        self.chunks.last().map_or(0, |c| u64::from(c.unpacked_end))
    }

    fn start(&self, index: usize) -> (u32, u32) {
        match index.checked_sub(1) {
            None => (0, 0),
            Some(prev) => (self.chunks[prev].packed_end, self.chunks[prev].unpacked_end),
        }
    }

    /// Checks a chunk range `[start, end)` and returns its serialized byte range (end exclusive)
    /// and its uncompressed length.
    pub fn range(&self, start: u32, end: u32) -> Result<(std::ops::Range<u64>, u64)> {
        let (start, end) = (start as usize, end as usize);
        if start >= end || end > self.chunks.len() {
            return Err(Error::invalid(format!("chunk range [{start}, {end}) is outside xorb {} of {} chunks", self.hash, self.chunks.len())));
        }
        let (packed_start, unpacked_start) = self.start(start);
        let last = self.chunks[end - 1];
        Ok((u64::from(packed_start)..u64::from(last.packed_end), u64::from(last.unpacked_end - unpacked_start)))
    }

    /// `(hash, length)` of the chunks in `[start, end)` (checked by `range` first).
    pub fn chunk_list(&self, start: u32, end: u32) -> Vec<(MerkleHash, u64)> {
        (start as usize..end as usize)
            .map(|i| {
                let (_, unpacked_start) = self.start(i);
                (self.chunks[i].hash, u64::from(self.chunks[i].unpacked_end - unpacked_start))
            })
            .collect()
    }

    /// The shard block that describes this xorb to a client.
    fn shard_block(&self) -> MDBXorbInfo {
        let chunks: Vec<XorbChunkSequenceEntry> = (0..self.chunks.len())
            .map(|i| {
                let (_, unpacked_start) = self.start(i);
                XorbChunkSequenceEntry::new(self.chunks[i].hash, self.chunks[i].unpacked_end - unpacked_start, unpacked_start)
            })
            .collect();
        let unpacked = u32::try_from(self.unpacked_len()).unwrap_or(u32::MAX);
        let packed = u32::try_from(self.packed_len()).unwrap_or(u32::MAX);
        let mut metadata = XorbChunkSequenceHeader::new(self.hash, chunks.len() as u32, unpacked);
        metadata.num_bytes_on_disk = packed;
        MDBXorbInfo { metadata, chunks }
    }
}

/// One chunk record read from serialized xorb bytes.
pub struct ChunkRecord {
    scheme: u8,
    uncompressed_len: usize,
    data: Bytes,
    /// Header plus compressed bytes.
    pub packed_len: usize,
}

impl ChunkRecord {
    /// The chunk's bytes, decompressed under the declared length (never more memory than that;
    /// stored chunks are not copied).
    pub fn decompress(&self) -> Result<Bytes> {
        let expect = self.uncompressed_len;
        let out = match self.scheme {
            0 => self.data.clone(),
            1 | 2 => {
                let mut out = Vec::with_capacity(expect);
                lz4_flex::frame::FrameDecoder::new(&self.data[..]).take(expect as u64 + 1).read_to_end(&mut out).map_err(|err| Error::invalid(format!("a chunk does not decompress: {err}")))?;
                Bytes::from(if self.scheme == 2 { bg4_regroup(&out) } else { out })
            }
            other => return Err(Error::invalid(format!("unknown chunk compression scheme {other}"))),
        };
        if out.len() != expect {
            return Err(Error::invalid(format!("a chunk decompresses to {} bytes, but its header declares {expect}", out.len())));
        }
        Ok(out)
    }
}

/// Splits serialized xorb bytes, fed in pieces of any size, into chunk records. Each record is
/// bounded (`MAX_COMPRESSED_BYTES`), so memory stays small whatever a header declares.
#[derive(Default)]
pub struct ChunkParser {
    buf: BytesMut,
    /// A storage footer was reached: everything after it is ignored.
    footer: bool,
}

impl ChunkParser {
    pub fn push(&mut self, bytes: &[u8]) {
        if !self.footer {
            self.buf.extend_from_slice(bytes);
        }
    }

    /// The next complete record, or `None` until more bytes arrive.
    pub fn next_record(&mut self) -> Result<Option<ChunkRecord>> {
        if self.footer || self.buf.len() < XORB_CHUNK_HEADER_LENGTH {
            return Ok(None);
        }
        if self.buf.starts_with(FOOTER_IDENT) {
            self.footer = true;
            self.buf.clear();
            return Ok(None);
        }
        let header = &self.buf[..XORB_CHUNK_HEADER_LENGTH];
        let (version, compressed, scheme, uncompressed) = (header[0], u24(&header[1..4]), header[4], u24(&header[5..8]));
        if version != 0 {
            return Err(Error::invalid(format!("chunk header version {version} is not supported")));
        }
        if scheme > 2 {
            return Err(Error::invalid(format!("unknown chunk compression scheme {scheme}")));
        }
        if uncompressed == 0 || uncompressed > MAX_CHUNK_BYTES || compressed == 0 || compressed > MAX_COMPRESSED_BYTES || (scheme == 0 && compressed != uncompressed) {
            return Err(Error::invalid(format!("a chunk header declares {compressed} stored and {uncompressed} uncompressed bytes (chunks hold 1 to {MAX_CHUNK_BYTES} bytes)")));
        }
        let packed_len = XORB_CHUNK_HEADER_LENGTH + compressed;
        if self.buf.len() < packed_len {
            return Ok(None);
        }
        let mut record = self.buf.split_to(packed_len).freeze();
        record.advance(XORB_CHUNK_HEADER_LENGTH);
        Ok(Some(ChunkRecord { scheme, uncompressed_len: uncompressed, data: record, packed_len }))
    }

    /// At the end of the input: bytes left over mean a truncated record.
    pub fn finish(&self) -> Result<()> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(Error::invalid(format!("the xorb ends inside a chunk record ({} bytes left over)", self.buf.len())))
        }
    }
}

fn u24(bytes: &[u8]) -> usize {
    usize::from(bytes[0]) | usize::from(bytes[1]) << 8 | usize::from(bytes[2]) << 16
}

/// Builds a xorb's index from its records as they are read, checking the protocol's limits.
#[derive(Default)]
pub struct XorbIndexer {
    chunks: Vec<ChunkMeta>,
    packed: u64,
    unpacked: u64,
}

impl XorbIndexer {
    /// Adds one record (decompressed and hashed here).
    pub fn add(&mut self, record: &ChunkRecord) -> Result<()> {
        let data = record.decompress()?;
        self.add_decompressed(&data, record.packed_len)
    }

    /// Adds one chunk whose bytes are already decompressed.
    pub fn add_decompressed(&mut self, data: &[u8], packed_len: usize) -> Result<()> {
        if self.chunks.len() >= MAX_XORB_CHUNKS {
            return Err(Error::invalid(format!("a xorb holds at most {MAX_XORB_CHUNKS} chunks")));
        }
        self.packed += packed_len as u64;
        self.unpacked += data.len() as u64;
        if self.unpacked > MAX_XORB_BYTES {
            return Err(Error::invalid(format!("a xorb holds at most {MAX_XORB_BYTES} bytes of chunks")));
        }
        let hash = merklehash::compute_data_hash(data);
        self.chunks.push(ChunkMeta { hash, packed_end: self.packed as u32, unpacked_end: u32::try_from(self.unpacked).map_err(|_| Error::invalid("a xorb's contents exceed 4 GiB"))? });
        Ok(())
    }

    /// The finished index; its hash is recomputed from the chunk hashes.
    pub fn finish(self) -> Result<XorbIndex> {
        if self.chunks.is_empty() {
            return Err(Error::invalid("a xorb must hold at least one chunk"));
        }
        let list: Vec<(MerkleHash, u64)> = self
            .chunks
            .iter()
            .scan(0u32, |start, c| {
                let len = c.unpacked_end - *start;
                *start = c.unpacked_end;
                Some((c.hash, u64::from(len)))
            })
            .collect();
        Ok(XorbIndex { hash: merklehash::xorb_hash(&list), chunks: self.chunks })
    }
}

/// One term of a file: chunks `[start, end)` of a xorb.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Term {
    pub xorb: String,
    pub start: u32,
    pub end: u32,
    /// Uncompressed bytes the term contributes.
    pub len: u64,
}

/// A file as an uploaded shard describes it (not yet checked against stored xorbs).
#[derive(Clone, Debug)]
pub struct ShardFile {
    pub hash: MerkleHash,
    pub terms: Vec<(MerkleHash, u32, u32, u32)>,
    /// Per term: the range hash proving the uploader knew the chunk hashes.
    pub verification: Option<Vec<MerkleHash>>,
    /// The sha256 the uploader declares (hex), if the shard carries one.
    pub sha256: Option<String>,
}

/// Parses an uploaded shard (header, file section, xorb section; a footer, if any, is ignored)
/// without allocating more than `body.len()` for any declared count.
pub async fn parse_shard(body: &[u8]) -> Result<Vec<ShardFile>> {
    let mut reader = futures::io::Cursor::new(body);
    let shard = MDBMinimalShard::from_reader_async(&mut reader, true, false, Some(body.len() as u64)).await.map_err(|err| Error::invalid(format!("the shard is malformed: {err}")))?;
    let mut files = Vec::with_capacity(shard.num_files());
    for i in 0..shard.num_files() {
        let Some(view) = shard.file(i) else { break };
        files.push(shard_file(view));
    }
    Ok(files)
}

fn shard_file(view: &MDBFileInfoView) -> ShardFile {
    let terms = (0..view.num_entries())
        .map(|j| {
            let entry = view.entry(j);
            (entry.xorb_hash, entry.chunk_index_start, entry.chunk_index_end, entry.unpacked_segment_bytes)
        })
        .collect();
    let verification = view.contains_verification().then(|| (0..view.num_entries()).map(|j| view.verification(j).range_hash).collect());
    ShardFile { hash: view.file_hash(), terms, verification, sha256: view.metadata_ext().map(|ext| ext.sha256.hex()) }
}

/// The proof a shard gives for a term: the keyed hash of its chunk hashes.
pub fn range_hash(chunks: &[(MerkleHash, u64)]) -> MerkleHash {
    let hashes: Vec<MerkleHash> = chunks.iter().map(|(h, _)| *h).collect();
    xet_core_structures::metadata_shard::chunk_verification::range_hash_from_chunks(&hashes)
}

/// The file hash over all chunks of a file, in order.
pub fn file_hash(chunks: &[(MerkleHash, u64)]) -> MerkleHash {
    merklehash::file_hash(chunks)
}

/// Whether clients ask the global-dedup API about this chunk (besides the first of each file).
pub fn dedup_eligible(hash: &MerkleHash) -> bool {
    xet_core_structures::metadata_shard::hash_is_global_dedup_eligible(hash)
}

/// A complete shard (with lookup tables and footer, as clients load them) listing these xorbs.
pub fn dedup_shard(xorbs: &[XorbIndex]) -> Result<Vec<u8>> {
    let mut shard = MDBInMemoryShard::default();
    for xorb in xorbs {
        shard.add_xorb_block(xorb.shard_block()).map_err(Error::internal)?;
    }
    shard.to_bytes().map_err(Error::internal)
}
