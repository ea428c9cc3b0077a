//! `Hub`: Xet storage. Tokens stand for a `XetScope` (one repo, read or write, one tenant);
//! xorbs are validated while they stream in; shards are checked against stored xorbs (ranges,
//! lengths, the verification hash of every term, the file hash) and their files' sha256 is
//! computed from the bytes before anything becomes visible. Chunks and xorbs are offered for
//! reuse only within the tenant that uploaded them.

use std::collections::HashMap;
use std::ops::Range;

use bytes::Buf as _;
use futures::stream::{BoxStream, StreamExt as _, TryStreamExt as _};
use sha2::{Digest as _, Sha256};

use super::*;
use crate::xet::format::{self, ChunkParser, ShardFile, XorbIndexer};
use crate::xet::{parse_hash, Term, XetFile, XetScope, XorbIndex, XorbRecord};

/// The most xorbs one global-dedup answer lists.
const MAX_DEDUP_XORBS: i64 = 64;
/// The most chunks one shard's files may name in all: each is held in memory (40 bytes) while
/// the file hash is checked, and a hostile xorb of 1-byte chunks must not turn a 64 MiB shard
/// into gigabytes. A million 64 KiB chunks is 64 GiB of files, past the Hub's 50 GB per file.
const MAX_SHARD_CHUNKS: usize = 1 << 20;

/// One term of a reconstruction, narrowed to the chunks a byte range needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedTerm {
    pub xorb: String,
    pub chunks: Range<u32>,
    /// Bytes of the serialized xorb holding those chunks (end exclusive).
    pub bytes: Range<u64>,
    pub unpacked_len: u64,
}

/// How to rebuild a byte range of a file: terms in order, and how much of the first to skip.
#[derive(Clone, Debug)]
pub struct Reconstruction {
    pub offset_into_first_range: u64,
    /// Bytes of the range, taken from `offset_into_first_range` on.
    pub len: u64,
    pub terms: Vec<PlannedTerm>,
}

impl Hub {
    /// The scope a CAS token for `repo` at `revision` carries. Writing needs write rights;
    /// reading needs a visible repo and an existing revision (`None`: a new branch or a PR).
    pub async fn xet_scope(&self, principal: &Principal, kind: RepoKind, name: &RepoName, revision: Option<&str>, write: bool) -> Result<XetScope> {
        let repo = if write { self.writable_repo(principal, kind, name).await? } else { self.visible_repo(principal, kind, name).await? };
        if !write {
            self.resolve(&repo, revision.unwrap_or(DEFAULT_BRANCH)).await?;
        }
        let (user, namespaces) = match principal {
            Principal::User(user) => (user.name.clone(), std::iter::once(user.name.clone()).chain(user.orgs.iter().cloned()).collect()),
            Principal::Anonymous => ("anonymous".to_owned(), Vec::new()),
        };
        Ok(XetScope { repo_id: repo.id, repo_namespace: repo.name.namespace.to_string(), write, user, namespaces })
    }

    /// Stores a xorb streamed in: chunk records parsed and hashed as they arrive (each bounded),
    /// the xorb hash recomputed and compared with `hash`, and only then made visible. Uploading
    /// bytes that are already stored proves possession: the tenant may reuse them from now on.
    /// Returns whether it was new, and its size.
    pub async fn put_xorb<E: std::fmt::Display>(&self, scope: &XetScope, hash: &str, stream: BoxStream<'_, std::result::Result<Bytes, E>>) -> Result<(bool, u64)> {
        require_write(scope)?;
        let expected = parse_hash(hash)?;
        let mut parser = ChunkParser::default();
        let mut indexer = Some(XorbIndexer::default());
        let mut index: Option<XorbIndex> = None;
        let mut inspect = |piece: Option<&Bytes>| -> Result<()> {
            let Some(indexer_ref) = indexer.as_mut() else { return Err(Error::internal("xorb already finished")) };
            match piece {
                Some(piece) => {
                    parser.push(piece);
                    while let Some(record) = parser.next_record()? {
                        indexer_ref.add(&record)?;
                    }
                    Ok(())
                }
                None => {
                    parser.finish()?;
                    let built = indexer.take().map(XorbIndexer::finish).transpose()?.ok_or_else(|| Error::internal("xorb already finished"))?;
                    if built.hash != expected {
                        return Err(Error::invalid(format!("the xorb's contents hash to {}, not {hash}", built.hash)));
                    }
                    index = Some(built);
                    Ok(())
                }
            }
        };
        let size = self.blobs.put_xorb(hash, stream, format::MAX_XORB_UPLOAD, &mut inspect).await?;
        let index = index.ok_or_else(|| Error::internal("xorb validated without an index"))?;
        let dedup: Vec<String> = index.chunks.iter().filter(|c| format::dedup_eligible(&c.hash)).map(|c| c.hash.hex()).collect();
        let record = XorbRecord { hash: hash.to_owned(), size, chunks: index.encode() };
        let inserted = self.meta.put_xorb(&record, &scope.repo_namespace, &dedup).await?;
        // GC may have deleted the object between our write and our row: then upload again.
        if !self.blobs.xorb_exists(hash).await? {
            return Err(Error::conflict(format!("xorb {hash} was garbage-collected during the upload; upload it again")));
        }
        Ok((inserted, size))
    }

    /// A stored xorb's index, if the scope's tenant may use it (uploaded through one of its
    /// namespaces). To anyone else it looks exactly like a xorb never stored.
    async fn tenant_xorb(&self, scope: &XetScope, hash: &str) -> Result<Option<XorbIndex>> {
        let Some(record) = self.meta.xorb(hash).await? else { return Ok(None) };
        let owners = self.meta.xorb_owners(hash).await?;
        if !owners.iter().any(|owner| scope.in_tenant(owner) || *owner == scope.repo_namespace) {
            return Ok(None);
        }
        Ok(Some(XorbIndex::decode(parse_hash(hash)?, &record.chunks)?))
    }

    /// Registers the files of an uploaded shard. Every term must name a xorb the tenant may use,
    /// lie in its bounds, declare its true length and prove the chunk hashes; the file hash must
    /// match the chunks; the sha256 (the identity commits use) is computed from the bytes. Files
    /// become visible together, in one transaction. Returns how many files the shard held.
    pub async fn put_shard(&self, scope: &XetScope, body: &[u8]) -> Result<usize> {
        require_write(scope)?;
        let files = format::parse_shard(body).await?;
        let mut xorbs: HashMap<String, XorbIndex> = HashMap::new();
        let mut checked = Vec::with_capacity(files.len());
        let mut dedup = Vec::new();
        let mut budget = MAX_SHARD_CHUNKS;
        for file in &files {
            let (terms, first_chunk) = self.check_shard_file(scope, file, &mut xorbs, &mut budget).await?;
            let size: u64 = terms.iter().map(|t| t.len).sum();
            if size > self.config.max_lfs_file {
                return Err(Error::invalid(format!("file {} is {size} bytes, over the limit of {}", file.hash, self.config.max_lfs_file)));
            }
            if let Some(first) = first_chunk {
                dedup.push((first, terms[0].xorb.clone()));
            }
            checked.push(XetFile { hash: file.hash.hex(), sha256: String::new(), size, terms });
        }
        // Two files hash at once: each pass is one core's work (reading, then sha256).
        let passes: Vec<_> = checked.iter().map(|file| self.xet_sha256(file, &xorbs)).collect();
        let digests: Vec<String> = futures::stream::iter(passes).buffered(2).try_collect().await?;
        for ((file, declared), digest) in checked.iter_mut().zip(&files).zip(digests) {
            file.sha256 = digest;
            if let Some(declared) = &declared.sha256 {
                if *declared != file.sha256 && declared.bytes().any(|b| b != b'0') {
                    return Err(Error::invalid(format!("file {} declares sha256 {declared}, but its bytes hash to {}", file.hash, file.sha256)));
                }
            }
        }
        self.meta.put_xet_files(scope.repo_id, &checked, &dedup).await?;
        Ok(files.len())
    }

    async fn check_shard_file(&self, scope: &XetScope, file: &ShardFile, xorbs: &mut HashMap<String, XorbIndex>, budget: &mut usize) -> Result<(Vec<Term>, Option<String>)> {
        let Some(proofs) = &file.verification else {
            return Err(Error::invalid(format!("file {} carries no verification hashes; every term must prove its chunks", file.hash)));
        };
        let mut terms = Vec::with_capacity(file.terms.len());
        let mut all_chunks: Vec<(xet_core_structures::merklehash::MerkleHash, u64)> = Vec::new();
        for (i, ((xorb, start, end, declared_len), proof)) in file.terms.iter().zip(proofs).enumerate() {
            let key = xorb.hex();
            if !xorbs.contains_key(&key) {
                let Some(index) = self.tenant_xorb(scope, &key).await? else {
                    return Err(Error::invalid(format!("term {i} of file {} names xorb {key}, which is not stored (upload it before the shard)", file.hash)));
                };
                xorbs.insert(key.clone(), index);
            }
            let index = &xorbs[&key];
            let (_, len) = index.range(*start, *end).map_err(|err| Error::invalid(format!("term {i} of file {}: {err}", file.hash)))?;
            if len != u64::from(*declared_len) {
                return Err(Error::invalid(format!("term {i} of file {} declares {declared_len} bytes; its chunks hold {len}", file.hash)));
            }
            *budget = budget.checked_sub((end - start) as usize).ok_or_else(|| Error::invalid(format!("a shard may name at most {MAX_SHARD_CHUNKS} chunks in all; send its files in several shards")))?;
            let chunks = index.chunk_list(*start, *end);
            if format::range_hash(&chunks) != *proof {
                return Err(Error::invalid(format!("term {i} of file {} has a wrong verification hash for chunks [{start}, {end}) of xorb {key}", file.hash)));
            }
            all_chunks.extend_from_slice(&chunks);
            terms.push(Term { xorb: key, start: *start, end: *end, len });
        }
        if format::file_hash(&all_chunks) != file.hash {
            return Err(Error::invalid(format!("file hash {} does not match its chunks", file.hash)));
        }
        Ok((terms, all_chunks.first().map(|(h, _)| h.hex())))
    }

    /// sha256 of a file, computed from its reconstructed bytes. A file registered before (same
    /// Xet hash, so the same chunks, checked above) already had its bytes hashed.
    async fn xet_sha256(&self, file: &XetFile, xorbs: &HashMap<String, XorbIndex>) -> Result<String> {
        if let Some(known) = self.meta.xet_file(&file.hash).await? {
            if known.size == file.size {
                return Ok(known.sha256);
            }
        }
        let plan = plan(&file.terms, xorbs, 0..file.size)?;
        let mut stream = self.read_planned(plan);
        let mut hasher = Sha256::new();
        while let Some(piece) = stream.next().await {
            hasher.update(&piece?);
        }
        Ok(hex::encode(hasher.finalize()))
    }

    /// The reconstruction of a file (a byte range of it) readable through the scope's repo: a
    /// commit of it holds the file, or an upload to it registered the file.
    /// `None` when the range starts past the end of the file.
    pub async fn xet_reconstruction(&self, scope: &XetScope, file_hash: &str, range: Option<Range<u64>>) -> Result<Option<Reconstruction>> {
        parse_hash(file_hash)?;
        let not_found = || Error::NotFound(format!("file {file_hash} not found"));
        let file = self.meta.xet_file(file_hash).await?.ok_or_else(not_found)?;
        if !self.meta.repo_has_file(scope.repo_id, &file.sha256).await? {
            return Err(not_found());
        }
        let range = match range {
            None => 0..file.size,
            Some(r) if r.start < file.size => r.start..r.end.min(file.size),
            Some(_) => return Ok(None),
        };
        let xorbs = self.file_xorbs(&file).await?;
        plan(&file.terms, &xorbs, range).map(Some)
    }

    async fn file_xorbs(&self, file: &XetFile) -> Result<HashMap<String, XorbIndex>> {
        let mut xorbs = HashMap::new();
        for term in &file.terms {
            if !xorbs.contains_key(&term.xorb) {
                let record = self.meta.xorb(&term.xorb).await?.ok_or_else(|| Error::internal(format!("xorb {} of file {} has no row", term.xorb, file.hash)))?;
                xorbs.insert(term.xorb.clone(), XorbIndex::decode(parse_hash(&term.xorb)?, &record.chunks)?);
            }
        }
        Ok(xorbs)
    }

    /// The global-dedup answer for a chunk: a shard listing the xorbs that hold it and the rest
    /// of the files using them, restricted to the tenant's own xorbs. `None` when there is none.
    pub async fn xet_dedup_shard(&self, scope: &XetScope, chunk_hash: &str) -> Result<Option<Vec<u8>>> {
        parse_hash(chunk_hash)?;
        // Each xorb's rights are checked once: the chunk's own xorbs, then the rest of their files.
        let mut checked: HashMap<String, Option<XorbIndex>> = HashMap::new();
        let mut wanted: Vec<String> = Vec::new();
        for xorb in self.meta.xorbs_with_chunk(chunk_hash).await? {
            let allowed = self.tenant_xorb(scope, &xorb).await?;
            let usable = allowed.is_some();
            checked.insert(xorb.clone(), allowed);
            if !usable {
                continue;
            }
            for related in std::iter::once(xorb.clone()).chain(self.meta.related_xorbs(&xorb, MAX_DEDUP_XORBS).await?) {
                if !wanted.contains(&related) && wanted.len() < MAX_DEDUP_XORBS as usize {
                    wanted.push(related);
                }
            }
        }
        let mut indexes = Vec::new();
        for xorb in wanted {
            let index = match checked.remove(&xorb) {
                Some(known) => known,
                None => self.tenant_xorb(scope, &xorb).await?,
            };
            indexes.extend(index);
        }
        if indexes.is_empty() {
            return Ok(None);
        }
        format::dedup_shard(&indexes).map(Some)
    }

    /// Bytes of a stored xorb, for a signed fetch URL (the signature is the authorization).
    pub async fn xorb_bytes(&self, hash: &str, range: Range<u64>) -> Result<BoxStream<'static, Result<Bytes>>> {
        parse_hash(hash)?;
        self.blobs.get_xorb(hash, range).await
    }

    /// A file's bytes (a range of them) by sha256: the whole blob when it was stored whole, else
    /// rebuilt from its xorbs, streaming with bounded memory.
    pub(crate) async fn xet_stream(&self, sha256: &Digest, range: Option<Range<u64>>) -> Result<Option<BoxStream<'static, Result<Bytes>>>> {
        let Some(file) = self.meta.xet_file_by_sha256(sha256.as_str()).await? else { return Ok(None) };
        let xorbs = self.file_xorbs(&file).await?;
        let range = range.unwrap_or(0..file.size);
        let plan = plan(&file.terms, &xorbs, range.start.min(file.size)..range.end.min(file.size))?;
        Ok(Some(self.read_planned(plan)))
    }

    /// The size of a file stored through Xet, by sha256.
    pub(crate) async fn xet_size(&self, sha256: &Digest) -> Result<Option<u64>> {
        Ok(self.meta.xet_file_by_sha256(sha256.as_str()).await?.map(|f| f.size))
    }

    /// Xet hashes of files stored through Xet, by sha256.
    pub async fn xet_hashes(&self, sha256s: &[String]) -> Result<HashMap<String, String>> {
        self.meta.xet_hashes(sha256s).await
    }

    /// Streams a planned reconstruction: each term's bytes fetched as one range, its chunk
    /// records decompressed one at a time.
    fn read_planned(&self, plan: Reconstruction) -> BoxStream<'static, Result<Bytes>> {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes>>(4);
        let blobs = self.blobs.clone();
        tokio::spawn(async move {
            if let Err(err) = send_planned(&blobs, plan, &tx).await {
                let _ = tx.send(Err(err)).await;
            }
        });
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) }).boxed()
    }
}

async fn send_planned(blobs: &crate::blobs::BlobStore, plan: Reconstruction, tx: &tokio::sync::mpsc::Sender<Result<Bytes>>) -> Result<()> {
    let mut skip = plan.offset_into_first_range;
    let mut remaining = plan.len;
    for term in plan.terms {
        let mut stream = blobs.get_xorb(&term.xorb, term.bytes.clone()).await?;
        let mut parser = ChunkParser::default();
        let mut chunks_left = term.chunks.end - term.chunks.start;
        while chunks_left > 0 && remaining > 0 {
            let Some(bytes) = stream.next().await.transpose()? else {
                return Err(Error::internal(format!("xorb {} ended before its chunks", term.xorb)));
            };
            parser.push(&bytes);
            while let Some(record) = parser.next_record()? {
                chunks_left = chunks_left.saturating_sub(1);
                let mut data = record.decompress()?;
                let from = skip.min(data.len() as u64);
                skip -= from;
                data.advance(from as usize);
                data.truncate(remaining.min(data.len() as u64) as usize);
                remaining -= data.len() as u64;
                // A receiver that went away (the client left) ends the task.
                if !data.is_empty() && tx.send(Ok(data)).await.is_err() {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

fn require_write(scope: &XetScope) -> Result<()> {
    if scope.write {
        Ok(())
    } else {
        Err(Error::forbidden("this Xet token is read-only; ask for a write token"))
    }
}

/// Narrows a file's terms to the chunks that hold `range` (end exclusive).
pub fn plan(terms: &[Term], xorbs: &HashMap<String, XorbIndex>, range: Range<u64>) -> Result<Reconstruction> {
    let mut out = Vec::new();
    let mut offset_into_first_range = 0;
    let mut at = 0u64;
    for term in terms {
        let (term_start, term_end) = (at, at + term.len);
        at = term_end;
        if term_end <= range.start || term_start >= range.end {
            continue;
        }
        let index = xorbs.get(&term.xorb).ok_or_else(|| Error::internal(format!("xorb {} missing from the plan", term.xorb)))?;
        let chunks = index.chunk_list(term.start, term.end);
        // First chunk ending past range.start, last chunk starting before range.end.
        let mut first = term.start;
        let mut pos = term_start;
        let mut first_pos = term_start;
        let mut last = term.start;
        for (i, (_, len)) in chunks.iter().enumerate() {
            let chunk = term.start + i as u32;
            if pos + len <= range.start {
                first = chunk + 1;
                first_pos = pos + len;
            }
            if pos < range.end {
                last = chunk;
            }
            pos += len;
        }
        if out.is_empty() {
            offset_into_first_range = range.start.saturating_sub(first_pos);
        }
        let (bytes, unpacked_len) = index.range(first, last + 1)?;
        out.push(PlannedTerm { xorb: term.xorb.clone(), chunks: first..last + 1, bytes, unpacked_len });
    }
    Ok(Reconstruction { offset_into_first_range, len: range.end.saturating_sub(range.start), terms: out })
}
