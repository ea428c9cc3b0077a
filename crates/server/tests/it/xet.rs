//! Xet: tokens, xorb and shard uploads (validated, nothing stored when refused), downloads
//! through reconstructions and through plain `resolve`, dedup within a tenant and never across.

use axum::http::StatusCode;
use domain::xet::testing::{self, Compression, TestFile, TestXorb};
use sha2::{Digest as _, Sha256};

use crate::harness::{header, TestServer, ADMIN};

fn chunk(seed: u32, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state % 61) as u8
        })
        .collect()
}

struct Cas {
    token: String,
}

async fn cas_token(server: &TestServer, user_token: &str, repo: &str, write: bool) -> (StatusCode, Option<Cas>, serde_json::Value) {
    let kind = if write { "write" } else { "read" };
    let reply = server.get(&format!("/api/models/{repo}/xet-{kind}-token/main"), Some(user_token)).await;
    let json = reply.json();
    let cas = (reply.status == StatusCode::OK).then(|| {
        assert_eq!(reply.header("x-xet-access-token").as_deref(), json["accessToken"].as_str());
        assert_eq!(reply.header("x-xet-cas-url"), Some(format!("http://mantle.test/xet/{}", repo.split('/').next().unwrap())));
        assert_eq!(reply.header("x-xet-token-expiration"), Some(json["exp"].to_string()));
        Cas { token: json["accessToken"].as_str().unwrap().to_owned() }
    });
    (reply.status, cas, json)
}

async fn post_xorb(server: &TestServer, cas: &Cas, hash: &str, bytes: Vec<u8>) -> crate::harness::Reply {
    let auth = format!("Bearer {}", cas.token);
    server.send_with("POST", &format!("/xet/alice/v1/xorbs/default/{hash}"), &[("authorization", &auth)], bytes).await
}

async fn post_shard(server: &TestServer, cas: &Cas, bytes: Vec<u8>) -> crate::harness::Reply {
    let auth = format!("Bearer {}", cas.token);
    server.send_with("POST", "/xet/alice/v1/shards", &[("authorization", &auth)], bytes).await
}

fn lfs_line(path: &str, sha256: &str, size: usize) -> serde_json::Value {
    serde_json::json!({ "key": "lfsFile", "value": { "path": path, "algo": "sha256", "oid": sha256, "size": size } })
}

struct Uploaded {
    xorb: TestXorb,
    content: Vec<u8>,
    sha256: String,
    file_hash: String,
}

/// Uploads one file of `n` chunks through Xet to `repo` and commits it as `path`.
async fn upload_file(server: &TestServer, token: &str, repo: &str, path: &str, seed: u32, n: u32) -> Uploaded {
    let chunks: Vec<Vec<u8>> = (0..n).map(|i| chunk(seed * 1000 + i, 20_000 + (i as usize * 777) % 9_000)).collect();
    upload_chunks(server, token, repo, path, &chunks).await
}

/// Uploads these chunks as one file through Xet to `repo` and commits it as `path`.
async fn upload_chunks(server: &TestServer, token: &str, repo: &str, path: &str, chunks: &[Vec<u8>]) -> Uploaded {
    let content = chunks.concat();
    let sha256 = hex::encode(Sha256::digest(&content));
    let xorb = testing::xorb(chunks, Compression::Lz4);
    let (_, cas, _) = cas_token(server, token, repo, true).await;
    let cas = cas.unwrap();
    let reply = post_xorb(server, &cas, &xorb.hash, xorb.bytes.clone()).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", String::from_utf8_lossy(&reply.body));
    let (shard, hashes) = testing::shard(&[TestFile { terms: vec![(&xorb.index, 0, chunks.len() as u32)], sha256: Some(sha256.clone()) }], |_, _| {});
    let reply = post_shard(server, &cas, shard).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.json()["result"], 1);
    let reply = server.commit(token, repo, &[header("xet upload"), lfs_line(path, &sha256, content.len())]).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    Uploaded { xorb, content, sha256, file_hash: hashes[0].clone() }
}

/// Objects in a folder of the blob store (0 when it does not exist).
fn objects(server: &TestServer, folder: &str) -> usize {
    std::fs::read_dir(server.state.config.data_dir.join("blobs").join(folder)).map(|d| d.count()).unwrap_or(0)
}

#[tokio::test]
async fn r13_a_file_uploaded_through_xet_downloads_both_ways_byte_identical() {
    let server = TestServer::new().await;
    let alice = server.user("alice", None, "write").await;
    assert_eq!(server.create_repo(&alice, "alice/m", false).await.status, StatusCode::OK);
    let up = upload_file(&server, &alice, "alice/m", "weights.bin", 1, 12).await;

    // A second upload of the same xorb is accepted and reports it was already there.
    let (_, cas, _) = cas_token(&server, &alice, "alice/m", true).await;
    let again = post_xorb(&server, &cas.unwrap(), &up.xorb.hash, up.xorb.bytes.clone()).await;
    assert_eq!(again.json()["was_inserted"], false);

    // HEAD names the Xet hash and where a read token comes from; tree listings carry xetHash.
    let head = server.send("HEAD", "/alice/m/resolve/main/weights.bin", None, None, Vec::new()).await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.header("x-xet-hash").as_deref(), Some(up.file_hash.as_str()));
    assert_eq!(head.header("x-linked-etag"), Some(format!("\"{}\"", up.sha256)));
    let commit = head.header("x-repo-commit").unwrap();
    assert_eq!(head.header("link"), Some(format!("<http://mantle.test/api/models/alice/m/xet-read-token/{commit}>; rel=\"xet-auth\"")));
    let tree = server.get("/api/models/alice/m/tree/main", None).await.json();
    let entry = tree.as_array().unwrap().iter().find(|e| e["path"] == "weights.bin").unwrap().clone();
    assert_eq!(entry["xetHash"], up.file_hash.as_str());

    // Plain GET rebuilds the bytes; ranges too.
    let whole = server.get("/alice/m/resolve/main/weights.bin", None).await;
    assert_eq!(whole.status, StatusCode::OK);
    assert!(whole.body == up.content, "reconstructed bytes differ");
    let part = server.send_with("GET", "/alice/m/resolve/main/weights.bin", &[("range", "bytes=30000-120000")], Vec::new()).await;
    assert_eq!(part.status, StatusCode::PARTIAL_CONTENT);
    assert!(part.body == up.content[30_000..=120_000]);

    // The reconstruction API: terms and signed fetch URLs that work without credentials, for
    // exactly the bytes they were signed for.
    let (status, read, _) = cas_token(&server, &alice, "alice/m", false).await;
    assert_eq!(status, StatusCode::OK);
    let auth = format!("Bearer {}", read.unwrap().token);
    let rec = server.send_with("GET", &format!("/xet/alice/v1/reconstructions/{}", up.file_hash), &[("authorization", &auth), ("range", "bytes=50000-60000")], Vec::new()).await;
    assert_eq!(rec.status, StatusCode::OK, "{}", String::from_utf8_lossy(&rec.body));
    let rec = rec.json();
    let term = &rec["terms"][0];
    let info = &rec["fetch_info"][up.xorb.hash.as_str()][0];
    assert_eq!(info["range"], term["range"]);
    let url = info["url"].as_str().unwrap().strip_prefix("http://mantle.test").unwrap().to_owned();
    let (start, end) = (info["url_range"]["start"].as_u64().unwrap(), info["url_range"]["end"].as_u64().unwrap());
    let range = format!("bytes={start}-{end}");
    let fetched = server.send_with("GET", &url, &[("range", &range)], Vec::new()).await;
    assert_eq!(fetched.status, StatusCode::PARTIAL_CONTENT);
    assert!(fetched.body == up.xorb.bytes[start as usize..=end as usize]);
    let beyond = format!("bytes={start}-{}", end + 1);
    assert_eq!(server.send_with("GET", &url, &[("range", &beyond)], Vec::new()).await.status, StatusCode::FORBIDDEN);
    let forged = url.replace("range=", "range=0");
    assert_eq!(server.get(&forged, None).await.status, StatusCode::FORBIDDEN);
    let past = server.send_with("GET", &format!("/xet/alice/v1/reconstructions/{}", up.file_hash), &[("authorization", &auth), ("range", "bytes=99999999-99999999")], Vec::new()).await;
    assert_eq!(past.status, StatusCode::RANGE_NOT_SATISFIABLE);
}

#[tokio::test]
async fn r13_hostile_xet_uploads_are_refused_with_a_4xx_and_store_nothing() {
    let server = TestServer::new().await;
    let alice = server.user("alice", None, "write").await;
    let reader = server.token("alice", "read").await;
    assert_eq!(server.create_repo(&alice, "alice/m", true).await.status, StatusCode::OK);
    let (_, cas, _) = cas_token(&server, &alice, "alice/m", true).await;
    let cas = cas.unwrap();
    let good = testing::xorb(&[chunk(1, 30_000), chunk(2, 30_000), chunk(3, 30_000)], Compression::Lz4);

    // A read-only user token gets no write token; a write token's scope is its repo.
    let (status, _, _) = cas_token(&server, &reader, "alice/m", true).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = cas_token(&server, "not-a-token", "alice/m", false).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Bodies whose hash is not the path's, truncated, or with a flipped byte.
    let mut flipped = good.bytes.clone();
    let at = flipped.len() / 2;
    flipped[at] ^= 1;
    let other = testing::xorb(&[chunk(9, 1000)], Compression::None);
    for (why, hash, body) in [("wrong hash", &other.hash, good.bytes.clone()), ("truncated", &good.hash, good.bytes[..good.bytes.len() - 3].to_vec()), ("flipped", &good.hash, flipped), ("empty", &good.hash, Vec::new())] {
        let reply = post_xorb(&server, &cas, hash, body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{why}: {}", String::from_utf8_lossy(&reply.body));
    }
    // Malformed hash, unknown prefix, declared size over the limit, tokens read-only,
    // tampered, missing or expired.
    assert_eq!(post_xorb(&server, &cas, "ZZ", good.bytes.clone()).await.status, StatusCode::BAD_REQUEST);
    let auth = format!("Bearer {}", cas.token);
    assert_eq!(server.send_with("POST", &format!("/xet/alice/v1/xorbs/other/{}", good.hash), &[("authorization", &auth)], good.bytes.clone()).await.status, StatusCode::BAD_REQUEST);
    let big = server.send_with("POST", &format!("/xet/alice/v1/xorbs/default/{}", good.hash), &[("authorization", &auth), ("content-length", "999999999")], Vec::new()).await;
    assert_eq!(big.status, StatusCode::BAD_REQUEST);
    // A body past the limit without a declared length is cut off while it streams; a shard past
    // its limit likewise.
    let endless = good.bytes.repeat(domain::xet::format::MAX_XORB_UPLOAD as usize / good.bytes.len() + 1);
    let reply = post_xorb(&server, &cas, &good.hash, endless).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let why = String::from_utf8_lossy(&reply.body);
    assert!(why.contains("allowed size") || why.contains("at most"), "{why}");
    assert_eq!(post_shard(&server, &cas, vec![0u8; 64 * 1024 * 1024 + 1]).await.status, StatusCode::BAD_REQUEST);
    let (_, read, _) = cas_token(&server, &alice, "alice/m", false).await;
    assert_eq!(post_xorb(&server, &read.unwrap(), &good.hash, good.bytes.clone()).await.status, StatusCode::FORBIDDEN);
    let mut tampered = cas.token.clone();
    tampered.insert(10, 'x');
    assert_eq!(post_xorb(&server, &Cas { token: tampered }, &good.hash, good.bytes.clone()).await.status, StatusCode::UNAUTHORIZED);
    let scope = server::read_xet_token(&server.state.signer, &cas.token).unwrap();
    let expired = server::xet_token(&server.state.signer, &scope, chrono::Utc::now().timestamp() - 1);
    assert_eq!(post_xorb(&server, &Cas { token: expired }, &good.hash, good.bytes.clone()).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(server.send("POST", &format!("/xet/alice/v1/xorbs/default/{}", good.hash), None, None, good.bytes.clone()).await.status, StatusCode::UNAUTHORIZED);
    // None of that stored a xorb or left a temporary object (the count of 1 after the good
    // upload below shows where xorbs live).
    assert_eq!(objects(&server, "xet/xorbs"), 0, "a refused xorb left an object behind");
    assert_eq!(objects(&server, "tmp"), 0, "a refused xorb left a temporary object behind");

    // Shards: a missing xorb, ranges out of bounds, a wrong verification hash, a lying length,
    // a wrong file hash, a wrong sha256, garbage.
    assert_eq!(post_xorb(&server, &cas, &good.hash, good.bytes.clone()).await.status, StatusCode::OK);
    assert_eq!(objects(&server, "xet/xorbs"), 1);
    let content: Vec<u8> = [chunk(1, 30_000), chunk(2, 30_000), chunk(3, 30_000)].concat();
    let sha = hex::encode(Sha256::digest(&content));
    let file = |terms| TestFile { terms, sha256: Some(sha.clone()) };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("missing xorb", testing::shard(&[file(vec![(&other.index, 0, 1)])], |_, _| {}).0),
        ("out of range", testing::shard(&[file(vec![(&good.index, 0, 3)])], |_, info| info.segments[0].chunk_index_end = 4).0),
        ("empty range", testing::shard(&[file(vec![(&good.index, 0, 3)])], |_, info| info.segments[0].chunk_index_start = 3).0),
        ("wrong verification", testing::shard(&[file(vec![(&good.index, 0, 3)])], |_, info| info.verification[0].range_hash = other.index.hash).0),
        (
            "no verification",
            testing::shard(&[file(vec![(&good.index, 0, 3)])], |_, info| {
                info.verification.clear();
                info.metadata = xet_core_structures::metadata_shard::file_structs::FileDataSequenceHeader::new(info.metadata.file_hash, 1, false, true);
            })
            .0,
        ),
        ("wrong length", testing::shard(&[file(vec![(&good.index, 0, 3)])], |_, info| info.segments[0].unpacked_segment_bytes += 1).0),
        ("wrong file hash", testing::shard(&[file(vec![(&good.index, 0, 3)])], |_, info| info.metadata.file_hash = other.index.hash).0),
        ("wrong sha256", testing::shard(&[TestFile { terms: vec![(&good.index, 0, 3)], sha256: Some("ab".repeat(32)) }], |_, _| {}).0),
        ("garbage", b"not a shard at all".to_vec()),
    ];
    for (why, body) in cases {
        let reply = post_shard(&server, &cas, body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{why}: {}", String::from_utf8_lossy(&reply.body));
    }
    // Nothing registered: a commit naming the content is refused.
    let reply = server.commit(&alice, "alice/m", &[header("x"), lfs_line("w.bin", &sha, content.len())]).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{:?}", reply.json());
    let (good_shard, _) = testing::shard(&[file(vec![(&good.index, 0, 3)])], |_, _| {});
    assert_eq!(post_shard(&server, &cas, good_shard).await.status, StatusCode::OK);
    let reply = server.commit(&alice, "alice/m", &[header("x"), lfs_line("w.bin", &sha, content.len())]).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
}

#[tokio::test]
async fn r13_dedup_stays_inside_a_tenant_and_another_tenant_cannot_learn_or_obtain_chunks() {
    let server = TestServer::new().await;
    let alice = server.user("alice", None, "write").await;
    let bob = server.user("bob", None, "write").await;
    for (token, repo) in [(&alice, "alice/base"), (&alice, "alice/tuned"), (&bob, "bob/m")] {
        assert_eq!(server.create_repo(token, repo, true).await.status, StatusCode::OK);
    }
    let up = upload_file(&server, &alice, "alice/base", "w.bin", 7, 10).await;
    let first_chunk = up.xorb.index.chunks[0].hash.hex();

    // Alice, pushing another repo of hers, learns of the xorb by its first chunk and reuses it
    // without uploading it again.
    let (_, tuned, _) = cas_token(&server, &alice, "alice/tuned", true).await;
    let tuned = tuned.unwrap();
    let auth = format!("Bearer {}", tuned.token);
    let dedup = server.send_with("GET", &format!("/xet/alice/v1/chunks/default-merkledb/{first_chunk}"), &[("authorization", &auth)], Vec::new()).await;
    assert_eq!(dedup.status, StatusCode::OK);
    let listed = xet_core_structures::metadata_shard::shard_in_memory::MDBInMemoryShard::from_reader(&mut std::io::Cursor::new(&dedup.body)).unwrap();
    assert_eq!(listed.num_xorb_entries(), 1);
    let (shard, _) = testing::shard(&[TestFile { terms: vec![(&up.xorb.index, 2, 8)], sha256: None }], |_, _| {});
    assert_eq!(post_shard(&server, &tuned, shard).await.status, StatusCode::OK);

    // Bob knows the chunk hash, the xorb hash, the file hash and the sha256: none of it helps.
    let (_, bob_cas, _) = cas_token(&server, &bob, "bob/m", true).await;
    let bob_cas = bob_cas.unwrap();
    let auth = format!("Bearer {}", bob_cas.token);
    let dedup = server.send_with("GET", &format!("/xet/alice/v1/chunks/default-merkledb/{first_chunk}"), &[("authorization", &auth)], Vec::new()).await;
    assert_eq!(dedup.status, StatusCode::NOT_FOUND);
    let (shard, _) = testing::shard(&[TestFile { terms: vec![(&up.xorb.index, 0, 10)], sha256: None }], |_, _| {});
    let refused = post_shard(&server, &bob_cas, shard.clone()).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&refused.body).contains("not stored"));
    let rec = server.send_with("GET", &format!("/xet/alice/v1/reconstructions/{}", up.file_hash), &[("authorization", &auth)], Vec::new()).await;
    assert_eq!(rec.status, StatusCode::NOT_FOUND);
    let reply = server.commit(&bob, "bob/m", &[header("steal"), lfs_line("w.bin", &up.sha256, up.content.len())]).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    // Alice's private file is invisible through Bob's own repo, and Alice's repo is invisible to him.
    assert_eq!(server.get("/bob/m/resolve/main/w.bin", Some(&bob)).await.status, StatusCode::NOT_FOUND);
    assert_eq!(server.get("/api/models/alice/base/xet-read-token/main", Some(&bob)).await.status, StatusCode::NOT_FOUND);

    // Uploading the bytes himself proves possession: then Bob may use them.
    assert_eq!(post_xorb(&server, &bob_cas, &up.xorb.hash, up.xorb.bytes.clone()).await.json()["was_inserted"], false);
    assert_eq!(post_shard(&server, &bob_cas, shard).await.status, StatusCode::OK);
    let reply = server.commit(&bob, "bob/m", &[header("own"), lfs_line("w.bin", &up.sha256, up.content.len())]).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    assert!(server.get("/bob/m/resolve/main/w.bin", Some(&bob)).await.body == up.content);
}

#[tokio::test]
async fn r13_gc_removes_xorbs_no_file_uses_and_keeps_committed_ones() {
    let server = TestServer::new().await;
    let alice = server.user("alice", None, "write").await;
    assert_eq!(server.create_repo(&alice, "alice/m", false).await.status, StatusCode::OK);
    let kept = upload_file(&server, &alice, "alice/m", "w.bin", 3, 6).await;
    let (_, cas, _) = cas_token(&server, &alice, "alice/m", true).await;
    let loose = testing::xorb(&[chunk(77, 40_000)], Compression::None);
    assert_eq!(post_xorb(&server, &cas.unwrap(), &loose.hash, loose.bytes.clone()).await.status, StatusCode::OK);
    let report = server.json("POST", "/api/admin/gc", Some(ADMIN), serde_json::json!({ "min_age_secs": 0 })).await;
    assert_eq!(report.status, StatusCode::OK, "{:?}", report.json());
    assert_eq!(report.json()["xorbs_deleted"], 1, "{:?}", report.json());
    let xorbs = server.state.config.data_dir.join("blobs/xet/xorbs");
    assert!(!xorbs.join(&loose.hash).exists());
    assert!(xorbs.join(&kept.xorb.hash).exists());
    assert!(server.get("/alice/m/resolve/main/w.bin", None).await.body == kept.content);
}

#[tokio::test]
async fn r13_vetting_reads_a_xet_file_from_its_chunks_and_finds_what_the_last_chunk_hides() {
    let server = TestServer::new().await;
    let alice = server.user("alice", None, "write").await;
    assert_eq!(server.create_repo(&alice, "alice/m", false).await.status, StatusCode::OK);
    // A pickle whose first 200 kB are one harmless string; the call sits in the last chunk.
    let padding = 200_000usize;
    let mut pickle = b"\x80\x02T".to_vec();
    pickle.extend_from_slice(&(padding as u32).to_le_bytes());
    pickle.extend(std::iter::repeat_n(b'a', padding));
    pickle.extend_from_slice(b"0cos\nsystem\nX\x02\x00\x00\x00id\x85R.");
    let call_at = pickle.len() - 21;
    let chunks: Vec<Vec<u8>> = pickle.chunks(60_000).map(<[u8]>::to_vec).collect();
    upload_chunks(&server, &alice, "alice/m", "model.pkl", &chunks).await;
    server::scanner::scan_pending(&server.state).await.unwrap();
    let verdict = server.get("/api/models/alice/m/vetting/main", Some(&alice)).await.json();
    let file = verdict["files"].as_array().unwrap().iter().find(|f| f["path"] == "model.pkl").unwrap().clone();
    assert_eq!(file["status"], "unsafe", "{verdict}");
    assert_eq!(file["findings"][0]["subject"], "os.system");
    assert_eq!(file["findings"][0]["offset"], call_at as u64, "{file}");
}

#[tokio::test]
async fn r13_a_shard_naming_millions_of_tiny_chunks_is_refused_before_they_are_held() {
    let server = TestServer::new().await;
    let alice = server.user("alice", None, "write").await;
    assert_eq!(server.create_repo(&alice, "alice/m", false).await.status, StatusCode::OK);
    // 8192 one-byte chunks, and one file naming them 130 times over: 1,064,960 chunks.
    let tiny: Vec<Vec<u8>> = (0..8192u32).map(|i| vec![i as u8]).collect();
    let xorb = testing::xorb(&tiny, Compression::None);
    let (_, cas, _) = cas_token(&server, &alice, "alice/m", true).await;
    let cas = cas.unwrap();
    assert_eq!(post_xorb(&server, &cas, &xorb.hash, xorb.bytes.clone()).await.status, StatusCode::OK);
    let (shard, _) = testing::shard(&[TestFile { terms: vec![(&xorb.index, 0, 8192); 130], sha256: None }], |_, _| {});
    let reply = post_shard(&server, &cas, shard).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&reply.body).contains("at most 1048576 chunks"), "{}", String::from_utf8_lossy(&reply.body));
}
