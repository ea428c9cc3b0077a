//! Builders for tests: xorbs and shards as hf_xet writes them, through xet-core-structures'
//! own serializers (so tests exercise the real wire format, including hostile variants).

use xet_core_structures::merklehash::MerkleHash;
use xet_core_structures::metadata_shard::file_structs::{FileDataSequenceEntry, FileDataSequenceHeader, FileMetadataExt, FileVerificationEntry, MDBFileInfo};
use xet_core_structures::metadata_shard::shard_in_memory::MDBInMemoryShard;
use xet_core_structures::xorb_object::{serialize_chunk, CompressionScheme};

use super::format::{file_hash, range_hash, XorbIndex, XorbIndexer};

/// Compression of the chunks of a test xorb.
#[derive(Clone, Copy, Debug)]
pub enum Compression {
    None,
    Lz4,
    ByteGrouping4Lz4,
}

/// A serialized xorb (no footer), its index and its hash in hex.
pub struct TestXorb {
    pub bytes: Vec<u8>,
    pub index: XorbIndex,
    pub hash: String,
}

/// Serializes chunks into a xorb.
pub fn xorb(chunks: &[Vec<u8>], compression: Compression) -> TestXorb {
    let scheme = match compression {
        Compression::None => CompressionScheme::None,
        Compression::Lz4 => CompressionScheme::LZ4,
        Compression::ByteGrouping4Lz4 => CompressionScheme::ByteGrouping4LZ4,
    };
    let mut bytes = Vec::new();
    let mut indexer = XorbIndexer::default();
    for chunk in chunks {
        let written = serialize_chunk(chunk, &mut bytes, scheme).expect("serialize a chunk");
        indexer.add_decompressed(chunk, written).expect("index a chunk");
    }
    let index = indexer.finish().expect("a xorb of at least one chunk");
    TestXorb { bytes, hash: index.hash.hex(), index }
}

/// One file of a test shard: terms `(xorb, start, end)` and the sha256 to declare.
pub struct TestFile<'a> {
    pub terms: Vec<(&'a XorbIndex, u32, u32)>,
    pub sha256: Option<String>,
}

/// A shard describing `files` (with verification hashes, as hf_xet sends), and the Xet hash of
/// each file. `tamper` may change a file's info before serialization.
pub fn shard(files: &[TestFile<'_>], tamper: impl Fn(usize, &mut MDBFileInfo)) -> (Vec<u8>, Vec<String>) {
    let mut shard = MDBInMemoryShard::default();
    let mut hashes = Vec::new();
    for (i, file) in files.iter().enumerate() {
        let mut all = Vec::new();
        let mut segments = Vec::new();
        let mut verification = Vec::new();
        for (index, start, end) in &file.terms {
            let chunks = index.chunk_list(*start, *end);
            let len: u64 = chunks.iter().map(|(_, l)| l).sum();
            segments.push(FileDataSequenceEntry::new(index.hash, len as u32, *start, *end));
            verification.push(FileVerificationEntry::new(range_hash(&chunks)));
            all.extend(chunks);
        }
        let hash = file_hash(&all);
        hashes.push(hash.hex());
        let metadata_ext = file.sha256.as_ref().map(|s| FileMetadataExt::new(MerkleHash::from_hex(s).expect("sha256 hex")));
        let mut info = MDBFileInfo { metadata: FileDataSequenceHeader::new(hash, segments.len(), true, metadata_ext.is_some()), segments, verification, metadata_ext };
        tamper(i, &mut info);
        shard.add_file_reconstruction_info(info).expect("add a file");
    }
    (shard.to_bytes().expect("serialize a shard"), hashes)
}
