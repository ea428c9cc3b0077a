//! Wire-format tests against xet-core-structures' own serializers.

use super::format::{self, ChunkParser, XorbIndex, XorbIndexer};
use super::testing::{self, Compression};
use crate::hub::plan;
use crate::xet::Term;

fn chunk(seed: u8, len: usize) -> Vec<u8> {
    // Compressible but not constant: LZ4 and byte grouping both have work to do.
    (0..len).map(|i| (i as u8 / 7).wrapping_mul(seed) ^ (i % 13) as u8).collect()
}

fn index_of(bytes: &[u8], piece: usize) -> format::Result<XorbIndex> {
    let mut parser = ChunkParser::default();
    let mut indexer = XorbIndexer::default();
    for part in bytes.chunks(piece) {
        parser.push(part);
        while let Some(record) = parser.next_record()? {
            indexer.add(&record)?;
        }
    }
    parser.finish()?;
    indexer.finish()
}

#[test]
fn xorbs_parse_to_the_hash_hf_xet_computes_whatever_the_compression_and_the_pieces() {
    let chunks: Vec<Vec<u8>> = (1..6).map(|i| chunk(i, 1000 + 3000 * usize::from(i))).collect();
    for compression in [Compression::None, Compression::Lz4, Compression::ByteGrouping4Lz4] {
        let built = testing::xorb(&chunks, compression);
        for piece in [1, 7, 4096, built.bytes.len()] {
            let index = index_of(&built.bytes, piece).unwrap();
            assert_eq!(index, built.index, "{compression:?} in pieces of {piece}");
        }
        let decoded = XorbIndex::decode(built.index.hash, &built.index.encode()).unwrap();
        assert_eq!(decoded, built.index);
        assert_eq!(built.index.unpacked_len(), chunks.iter().map(|c| c.len() as u64).sum::<u64>());
    }
}

#[test]
fn truncated_corrupt_and_oversized_xorbs_are_refused() {
    let built = testing::xorb(&[chunk(3, 5000), chunk(5, 7000)], Compression::Lz4);
    let truncated = &built.bytes[..built.bytes.len() - 1];
    assert!(index_of(truncated, 64).unwrap_err().to_string().contains("ends inside"));
    // A flipped data byte changes a chunk (or breaks its LZ4 frame): the hash no longer matches.
    let mut flipped = built.bytes.clone();
    let at = flipped.len() - 10;
    flipped[at] ^= 0x55;
    assert!(index_of(&flipped, 64).is_err_and(|e| !e.to_string().is_empty()) || index_of(&flipped, 64).unwrap().hash != built.index.hash);
    // A header declaring more than a chunk may hold is refused before anything is buffered.
    let mut huge = vec![0u8, 0xff, 0xff, 0xff, 0, 0xff, 0xff, 0xff];
    huge.extend_from_slice(&[0; 16]);
    assert!(index_of(&huge, 8).unwrap_err().to_string().contains("declares"));
    // An LZ4 frame that expands past its declared size stops at the declared size.
    let bomb = lz4_flex::frame::FrameEncoder::new(Vec::new());
    let mut bomb = bomb;
    std::io::Write::write_all(&mut bomb, &vec![0u8; 4 << 20]).unwrap();
    let frame = bomb.finish().unwrap();
    let mut record = vec![0u8];
    record.extend_from_slice(&(frame.len() as u32).to_le_bytes()[..3]);
    record.push(1);
    record.extend_from_slice(&1000u32.to_le_bytes()[..3]);
    record.extend_from_slice(&frame);
    assert!(index_of(&record, 4096).unwrap_err().to_string().contains("declares 1000"));
    // An empty body holds no chunk.
    assert!(index_of(&[], 1).is_err());
}

#[test]
fn shards_round_trip_and_plans_narrow_to_the_chunks_a_range_needs() {
    let chunks: Vec<Vec<u8>> = (1..9).map(|i| chunk(i, 10_000)).collect();
    let built = testing::xorb(&chunks, Compression::Lz4);
    let (bytes, hashes) = testing::shard(&[testing::TestFile { terms: vec![(&built.index, 0, 4), (&built.index, 4, 8)], sha256: None }], |_, _| {});
    let files = futures::executor::block_on(format::parse_shard(&bytes)).unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].hash.hex(), hashes[0]);
    assert_eq!(files[0].terms.len(), 2);
    assert!(files[0].verification.as_ref().is_some_and(|v| v.len() == 2));

    let terms = vec![Term { xorb: built.hash.clone(), start: 0, end: 4, len: 40_000 }, Term { xorb: built.hash.clone(), start: 4, end: 8, len: 40_000 }];
    let xorbs = std::collections::HashMap::from([(built.hash.clone(), built.index.clone())]);
    let whole = plan(&terms, &xorbs, 0..80_000).unwrap();
    assert_eq!((whole.offset_into_first_range, whole.len, whole.terms.len()), (0, 80_000, 2));
    // Bytes 25_000..45_000 live in chunks 2..=4: the first term narrows to [2, 4), the second to [4, 5).
    let part = plan(&terms, &xorbs, 25_000..45_000).unwrap();
    assert_eq!(part.offset_into_first_range, 5_000);
    assert_eq!(part.terms.iter().map(|t| t.chunks.clone()).collect::<Vec<_>>(), vec![2..4, 4..5]);
    assert_eq!(part.terms[0].unpacked_len + part.terms[1].unpacked_len, 30_000);
}

#[test]
fn a_hostile_shard_cannot_make_the_parser_allocate_what_it_declares() {
    let built = testing::xorb(&[chunk(1, 4000)], Compression::None);
    let (mut bytes, _) = testing::shard(&[testing::TestFile { terms: vec![(&built.index, 0, 1)], sha256: None }], |_, _| {});
    // The first file header sits right after the 48-byte shard header; its entry count is at +36.
    bytes[48 + 36..48 + 40].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(futures::executor::block_on(format::parse_shard(&bytes)).is_err());
    assert!(futures::executor::block_on(format::parse_shard(&bytes[..20])).is_err());
}
