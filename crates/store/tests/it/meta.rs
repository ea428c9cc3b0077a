//! The MetaStore contract.

use std::sync::Arc;

use domain::audit::{AuditEvent, ChainVerifier};
use domain::auth::Role;
use domain::ids::{AccountName, CommitId, Digest, RepoKind, RepoName, RepoPath};
use domain::meta::{AccountKind, AccountStore as _, Charge, Deployment, EngineSettings, FileOperation, MetaStore, NewCommit, Quota, QuotaSubject, UsageGroup, UsageQuery, UsageRecord, UsageRow};
use domain::repo::{FileEntry, RefKind};
use domain::Error;
use store::SqlMetaStore;

fn event(action: &str) -> AuditEvent {
    AuditEvent::new("tester", action, "target", serde_json::json!({}))
}

fn name(text: &str) -> AccountName {
    AccountName::parse(text).unwrap()
}

fn file(path: &str, byte: char) -> FileEntry {
    FileEntry { path: RepoPath::parse(path).unwrap(), size: 3, sha256: Digest::parse(&byte.to_string().repeat(64)).unwrap(), git_oid: "0".repeat(40), lfs: false }
}

fn add(path: &str, byte: char) -> FileOperation {
    FileOperation::Add(file(path, byte))
}

fn new_commit(repo_id: i64, operations: Vec<FileOperation>, expected_parent: Option<CommitId>) -> NewCommit {
    NewCommit { repo_id, branch: "main".into(), expected_parent, operations, title: "t".into(), message: String::new(), author: "alice".into() }
}

/// A fresh PostgreSQL database per call, so suites never see each other's rows.
pub(crate) async fn postgres_url() -> Option<String> {
    let base = crate::needed("TEST_DATABASE_URL")?;
    sqlx::any::install_default_drivers();
    let db = format!("mantle_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&base).await.expect("connect to TEST_DATABASE_URL");
    sqlx::Executor::execute(&mut conn, format!("CREATE DATABASE {db}").as_str()).await.expect("create test database");
    let (prefix, _) = base.rsplit_once('/').expect("database url has a path");
    Some(format!("{prefix}/{db}"))
}

pub(crate) async fn sqlite() -> (SqlMetaStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("meta.db").display());
    (SqlMetaStore::connect(&url).await.unwrap(), dir)
}

async fn verify_chain(store: &dyn MetaStore) -> Result<u64, domain::audit::BrokenLink> {
    let mut verifier = ChainVerifier::default();
    for row in store.audit_after(0, 100_000).await.unwrap() {
        verifier.check(&row)?;
    }
    Ok(verifier.checked)
}

/// One port's contract, run on SQLite and (when `TEST_DATABASE_URL` is set) on PostgreSQL, each
/// on a fresh database.
macro_rules! contract {
    ($sqlite:ident, $postgres:ident, $check:ident) => {
        #[tokio::test]
        async fn $sqlite() {
            let (store, _dir) = sqlite().await;
            $check(Arc::new(store)).await;
        }

        #[tokio::test]
        async fn $postgres() {
            let Some(url) = postgres_url().await else { return };
            $check(Arc::new(SqlMetaStore::connect(&url).await.unwrap())).await;
        }
    };
}

contract!(sqlite_account_store, postgres_account_store, account_store);
contract!(sqlite_repo_store_and_blob_ledger, postgres_repo_store_and_blob_ledger, repo_store_and_blob_ledger);
contract!(sqlite_audit_store, postgres_audit_store, audit_store);
contract!(sqlite_scan_and_policy_stores, postgres_scan_and_policy_stores, scan_and_policy_stores);
contract!(sqlite_deployment_store, postgres_deployment_store, deployment_store);
contract!(sqlite_quota_store, postgres_quota_store, quota_store);
contract!(sqlite_xet_store, postgres_xet_store, xet_store);
contract!(sqlite_eval_store, postgres_eval_store, eval_store);
contract!(sqlite_route_store, postgres_route_store, route_store);
contract!(sqlite_webhook_store, postgres_webhook_store, webhook_store);
contract!(sqlite_pipeline_store, postgres_pipeline_store, pipeline_store);

/// The accounts most contracts start from: org `acme` with members `alice` and `bob`.
async fn seed_accounts(meta: &dyn MetaStore) {
    meta.create_account(&name("acme"), AccountKind::Org, None, event("org.create")).await.unwrap();
    meta.create_account(&name("alice"), AccountKind::User, Some(&name("acme")), event("user.create")).await.unwrap();
    meta.create_account(&name("bob"), AccountKind::User, Some(&name("acme")), event("user.create")).await.unwrap();
}

/// `AccountStore`: bootstrap, accounts and memberships, tokens and their revocation.
async fn account_store(store: Arc<SqlMetaStore>) {
    let meta: Arc<dyn MetaStore> = store.clone();
    // Bootstrap is idempotent and creates a site admin.
    assert!(meta.ensure_admin_token(&name("admin"), &"e".repeat(64), true).await.unwrap());
    assert!(meta.ensure_admin_token(&name("admin"), &"f".repeat(64), true).await.unwrap());
    assert!(!meta.ensure_admin_token(&name("admin"), &"f".repeat(64), true).await.unwrap());
    // Rotating the configured admin token revokes the one it replaces.
    assert!(meta.lookup_token(&"e".repeat(64)).await.unwrap().unwrap().token.revoked_at.is_some());
    let admin = meta.lookup_token(&"f".repeat(64)).await.unwrap().unwrap();
    assert!(admin.token.revoked_at.is_none());
    assert!(admin.is_admin);
    assert_eq!(admin.token.role, Role::Admin);

    // Accounts share one namespace.
    meta.create_account(&name("acme"), AccountKind::Org, None, event("org.create")).await.unwrap();
    let alice = meta.create_account(&name("alice"), AccountKind::User, Some(&name("acme")), event("user.create")).await.unwrap();
    assert_eq!(alice.kind, AccountKind::User);
    assert!(matches!(meta.create_account(&name("alice"), AccountKind::Org, None, event("x")).await, Err(Error::Conflict(_))));
    meta.create_account(&name("bob"), AccountKind::User, None, event("user.create")).await.unwrap();
    meta.add_member(&name("acme"), &name("bob"), event("org.add_member")).await.unwrap();
    assert!(matches!(meta.add_member(&name("acme"), &name("bob"), event("x")).await, Err(Error::Conflict(_))));
    assert!(matches!(meta.add_member(&name("nope"), &name("bob"), event("x")).await, Err(Error::NotFound(_))));
    assert_eq!(meta.orgs_of(&name("bob")).await.unwrap(), vec!["acme".to_owned()]);

    // Tokens: stored by hash, revocable once.
    let token = meta.create_token(domain::meta::NewToken { user: &name("alice"), name: "laptop", role: Role::Write, hash: &"a".repeat(64), expires_at: Some("2099-01-01T00:00:00.000Z".into()), parent: None }, event("token.create")).await.unwrap();
    let found = meta.lookup_token(&"a".repeat(64)).await.unwrap().unwrap();
    assert_eq!(found.token.id, token.id);
    assert_eq!(found.orgs, vec!["acme".to_owned()]);
    assert!(meta.lookup_token(&"b".repeat(64)).await.unwrap().is_none());
    let revoked = meta.revoke_token(token.id, event("token.revoke")).await.unwrap();
    assert!(revoked.revoked_at.is_some());
    assert!(matches!(meta.revoke_token(token.id, event("x")).await, Err(Error::Conflict(_))));
    assert!(matches!(meta.create_token(domain::meta::NewToken { user: &name("ghost"), name: "x", role: Role::Read, hash: &"c".repeat(64), expires_at: None, parent: None }, event("x")).await, Err(Error::NotFound(_))));
    // Tokens created through a token are revoked with it, transitively; others stay.
    let root = meta.create_token(domain::meta::NewToken { user: &name("alice"), name: "root", role: Role::Write, hash: &"1d".repeat(32), expires_at: None, parent: None }, event("token.create")).await.unwrap();
    let child = meta.create_token(domain::meta::NewToken { user: &name("alice"), name: "child", role: Role::Read, hash: &"1e".repeat(32), expires_at: None, parent: Some(root.id) }, event("token.create")).await.unwrap();
    let grandchild = meta.create_token(domain::meta::NewToken { user: &name("alice"), name: "grandchild", role: Role::Read, hash: &"1f".repeat(32), expires_at: None, parent: Some(child.id) }, event("token.create")).await.unwrap();
    let sibling = meta.create_token(domain::meta::NewToken { user: &name("alice"), name: "other", role: Role::Read, hash: &"10".repeat(32), expires_at: None, parent: None }, event("token.create")).await.unwrap();
    meta.revoke_token(root.id, event("token.revoke")).await.unwrap();
    for id in [child.id, grandchild.id] {
        assert!(meta.get_token(id).await.unwrap().unwrap().revoked_at.is_some(), "token {id}");
    }
    assert!(meta.get_token(sibling.id).await.unwrap().unwrap().revoked_at.is_none());
}

/// `RepoStore` and `BlobLedger`: repos, commits, refs, blob grants and GC tombstones.
async fn repo_store_and_blob_ledger(store: Arc<SqlMetaStore>) {
    let meta: Arc<dyn MetaStore> = store.clone();
    seed_accounts(meta.as_ref()).await;
    // Repos start with one commit on main.
    let repo_name = RepoName::parse("acme/bert").unwrap();
    let repo = meta.create_repo(RepoKind::Model, &repo_name, true, vec![file(".gitattributes", 'a')], "alice", event("repo.create")).await.unwrap();
    assert!(matches!(meta.create_repo(RepoKind::Model, &repo_name, false, vec![], "alice", event("x")).await, Err(Error::Conflict(_))));
    // The same name as a dataset is a different repo.
    meta.create_repo(RepoKind::Dataset, &repo_name, false, vec![], "alice", event("repo.create")).await.unwrap();
    let initial = meta.resolve(repo.id, "main").await.unwrap().unwrap();
    // Blob access: a grant is per repo; holders are the repos whose commits hold the blob.
    let gitattributes = file(".gitattributes", 'a').sha256;
    let access = meta.blob_access(repo.id, gitattributes.as_str()).await.unwrap();
    assert_eq!((access.granted, access.holders), (false, vec![("acme".to_owned(), true)]));
    meta.grant_blob(repo.id, &"9".repeat(64)).await.unwrap();
    meta.grant_blob(repo.id, &"9".repeat(64)).await.unwrap();
    assert!(meta.blob_access(repo.id, &"9".repeat(64)).await.unwrap().granted);
    assert!(!meta.blob_access(repo.id + 1, &"9".repeat(64)).await.unwrap().granted);
    // GC tombstones: a referenced blob is never claimed; a claimed one cannot be committed, a
    // live claim is not taken twice, a stale one (its GC died) is taken over.
    let long_ago = "2000-01-01T00:00:00.000Z";
    assert!(meta.condemn_blob(gitattributes.as_str(), long_ago).await.unwrap().is_none());
    let loose = "7".repeat(64);
    let claim = meta.condemn_blob(&loose, long_ago).await.unwrap().unwrap();
    assert!(meta.condemn_blob(&loose, long_ago).await.unwrap().is_none(), "GC already holds it");
    assert_eq!(meta.blob_tombstone(&loose).await.unwrap().as_ref(), Some(&claim));
    assert!(meta.blob_access(repo.id, &loose).await.unwrap().tombstoned);
    let head = meta.resolve(repo.id, "main").await.unwrap();
    let refused = meta.commit(new_commit(repo.id, vec![add("loose.bin", '7')], head), event("repo.commit")).await;
    assert!(matches!(refused, Err(Error::Conflict(_))), "{refused:?}");
    let taken_over = meta.condemn_blob(&loose, "9999-01-01T00:00:00.000Z").await.unwrap().unwrap();
    // The first claim's GC finishing late changes nothing; the new claim's deletion counts.
    meta.blob_deleted(&claim).await.unwrap();
    assert_eq!(meta.blob_tombstone(&loose).await.unwrap().unwrap().state, "deleting");
    meta.blob_deleted(&taken_over).await.unwrap();
    let deleted = meta.blob_tombstone(&loose).await.unwrap().unwrap();
    assert_eq!(deleted.state, "deleted");
    meta.clear_tombstone(&claim).await.unwrap();
    assert!(meta.blob_tombstone(&loose).await.unwrap().is_some(), "only the tombstone as read is cleared");
    meta.clear_tombstone(&deleted).await.unwrap();
    assert_eq!(meta.blob_tombstone(&loose).await.unwrap(), None);
    assert_eq!(initial.as_str().len(), 40);
    assert_eq!(meta.list_files(&initial).await.unwrap().len(), 1);

    // Commits apply on the head, atomically; a stale parent is a conflict and changes nothing.
    let c1 = meta.commit(new_commit(repo.id, vec![add("config.json", 'b'), add("w/model.bin", 'c')], Some(initial.clone())), event("repo.commit")).await.unwrap();
    assert_eq!(c1.parent.as_ref(), Some(&initial));
    let stale = meta.commit(new_commit(repo.id, vec![add("x", 'd')], Some(initial.clone())), event("repo.commit")).await;
    assert!(matches!(stale, Err(Error::Conflict(_))), "{stale:?}");
    let missing = meta.commit(new_commit(repo.id, vec![FileOperation::DeleteFile(RepoPath::parse("ghost").unwrap())], None), event("repo.commit")).await;
    assert!(matches!(missing, Err(Error::EntryNotFound { .. })), "{missing:?}");
    assert_eq!(meta.resolve(repo.id, "main").await.unwrap().unwrap(), c1.id);
    let c2 = meta.commit(new_commit(repo.id, vec![FileOperation::DeleteFolder(RepoPath::parse("w").unwrap())], None), event("repo.commit")).await.unwrap();
    let paths: Vec<String> = meta.list_files(&c2.id).await.unwrap().iter().map(|f| f.path.to_string()).collect();
    assert_eq!(paths, vec![".gitattributes", "config.json"]);
    // Old commits are immutable.
    assert_eq!(meta.list_files(&c1.id).await.unwrap().len(), 3);
    assert!(meta.get_file(&c1.id, &RepoPath::parse("w/model.bin").unwrap()).await.unwrap().is_some());
    let history: Vec<CommitId> = meta.list_commits(repo.id, &c2.id).await.unwrap().into_iter().map(|c| c.id).collect();
    assert_eq!(history, vec![c2.id.clone(), c1.id.clone(), initial.clone()]);

    // Refs: tags and branches; commit ids resolve only within their repo.
    meta.create_ref(repo.id, RefKind::Tag, "v1", &c1.id, event("tag.create")).await.unwrap();
    assert!(matches!(meta.create_ref(repo.id, RefKind::Tag, "v1", &c2.id, event("x")).await, Err(Error::Conflict(_))));
    assert_eq!(meta.resolve(repo.id, "v1").await.unwrap(), Some(c1.id.clone()));
    assert_eq!(meta.resolve(repo.id, c1.id.as_str()).await.unwrap(), Some(c1.id.clone()));
    let other = meta.create_repo(RepoKind::Model, &RepoName::parse("alice/other").unwrap(), false, vec![], "alice", event("repo.create")).await.unwrap();
    assert_eq!(meta.resolve(other.id, c1.id.as_str()).await.unwrap(), None);
    meta.delete_ref(repo.id, RefKind::Tag, "v1", event("tag.delete")).await.unwrap();
    assert!(matches!(meta.delete_ref(repo.id, RefKind::Tag, "v1", event("x")).await, Err(Error::RevisionNotFound(_))));

    // Blob references follow commits; deleting a repo drops them.
    assert!(!meta.blob_access(repo.id, &"c".repeat(64)).await.unwrap().holders.is_empty());
    meta.set_private(repo.id, false, event("repo.visibility")).await.unwrap();
    assert!(!meta.get_repo(RepoKind::Model, &repo_name).await.unwrap().unwrap().private);
    let moved = RepoName::parse("alice/bert2").unwrap();
    meta.rename_repo(repo.id, &moved, event("repo.move")).await.unwrap();
    assert!(meta.get_repo(RepoKind::Model, &repo_name).await.unwrap().is_none());
    meta.delete_repo(repo.id, event("repo.delete")).await.unwrap();
    assert!(meta.get_repo(RepoKind::Model, &moved).await.unwrap().is_none());
    assert!(meta.blob_access(repo.id, &"c".repeat(64)).await.unwrap().holders.is_empty());

    // Concurrent commits to one branch all land, in a single line of history.
    let busy = meta.create_repo(RepoKind::Model, &RepoName::parse("bob/busy").unwrap(), false, vec![], "bob", event("repo.create")).await.unwrap();
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let meta = meta.clone();
            tokio::spawn(async move { meta.commit(new_commit(busy.id, vec![add(&format!("f{i}"), 'e')], None), event("repo.commit")).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let head = meta.resolve(busy.id, "main").await.unwrap().unwrap();
    assert_eq!(meta.list_commits(busy.id, &head).await.unwrap().len(), 13);
    assert_eq!(meta.list_files(&head).await.unwrap().len(), 12);
}

/// `AuditStore`: the chain holds and a row edited behind the store's back is caught; secrets.
async fn audit_store(store: Arc<SqlMetaStore>) {
    let meta: Arc<dyn MetaStore> = store.clone();
    seed_accounts(meta.as_ref()).await;
    for i in 0..20 {
        meta.create_account(&name(&format!("user{i}")), AccountKind::User, None, event("user.create")).await.unwrap();
    }
    // The audit chain holds, and a row edited behind the store's back is caught at its seq.
    let checked = verify_chain(meta.as_ref()).await.unwrap();
    assert!(checked > 20, "{checked}");
    sqlx::query("UPDATE audit_log SET actor = 'mallory' WHERE seq = 5").execute(store.pool()).await.unwrap();
    assert_eq!(verify_chain(meta.as_ref()).await.unwrap_err().seq, 5);

    // Secrets are created once.
    assert_eq!(meta.secret("k", "one").await.unwrap(), "one");
    assert_eq!(meta.secret("k", "two").await.unwrap(), "one");
}

/// `ScanStore` and `PolicyStore`: commits queue scans, leases, retries, results; policies and overrides.
async fn scan_and_policy_stores(store: Arc<SqlMetaStore>) {
    let meta: Arc<dyn MetaStore> = store.clone();
    seed_accounts(meta.as_ref()).await;
    let repo = meta.create_repo(RepoKind::Model, &RepoName::parse("acme/bert").unwrap(), false, vec![file(".gitattributes", 'a')], "alice", event("repo.create")).await.unwrap();
    meta.commit(new_commit(repo.id, vec![add("config.json", 'b'), add("w/model.bin", 'c'), add("x", 'd')], None), event("repo.commit")).await.unwrap();
    check_scan_queue(meta.as_ref()).await;
}

/// `DeploymentStore`: by name, listed, a taken name is a conflict, removal is once.
async fn deployment_store(store: Arc<SqlMetaStore>) {
    let meta: Arc<dyn MetaStore> = store.clone();
    seed_accounts(meta.as_ref()).await;
    let repo_name = RepoName::parse("acme/bert").unwrap();
    let repo = meta.create_repo(RepoKind::Model, &repo_name, false, vec![file(".gitattributes", 'a')], "alice", event("repo.create")).await.unwrap();
    let c1 = meta.commit(new_commit(repo.id, vec![add("w/model.bin", 'c')], None), event("repo.commit")).await.unwrap();
    // Deployments: by name, listed, a taken name is a conflict, removal is once.
    let deployment = Deployment {
        name: "chat".into(),
        kind: RepoKind::Model,
        repo: repo_name.clone(),
        commit: c1.id.clone(),
        file_path: RepoPath::parse("w/model.bin").unwrap(),
        file_sha256: Digest::parse(&"c".repeat(64)).unwrap(),
        settings: EngineSettings {
            context: 2048,
            max_batch: 8,
            threads: 2,
            price_prompt_micros: 150_000,
            price_completion_micros: 600_000,
            keep_alive_max_secs: 300,
            sampling: domain::meta::SamplingDefaults { temperature: Some(0.25), top_k: Some(40), max_tokens: Some(512), ..Default::default() },
        },
        created_by: "admin".into(),
        created_at: "2026-11-27T00:00:00.000Z".into(),
    };
    meta.create_deployment(&deployment, event("deployment.create")).await.unwrap();
    assert!(matches!(meta.create_deployment(&deployment, event("x")).await, Err(Error::Conflict(_))));
    let found = meta.get_deployment("chat").await.unwrap().unwrap();
    assert_eq!((found.commit, found.settings, found.file_path), (deployment.commit.clone(), deployment.settings.clone(), deployment.file_path.clone()));
    assert!(meta.get_deployment("other").await.unwrap().is_none());
    assert_eq!(meta.list_deployments().await.unwrap().len(), 1);
    meta.delete_deployment("chat", event("deployment.delete")).await.unwrap();
    assert!(meta.get_deployment("chat").await.unwrap().is_none());
    assert!(matches!(meta.delete_deployment("chat", event("x")).await, Err(Error::NotFound(_))));
}

/// `QuotaStore`: usage records and reports, quotas, atomic counters, charges with usage.
async fn quota_store(store: Arc<SqlMetaStore>) {
    let meta: Arc<dyn MetaStore> = store.clone();
    seed_accounts(meta.as_ref()).await;
    // Usage: recorded in one go, grouped by day, deployment, account or token, filtered by time,
    // account and org membership (alice and bob are in acme; carol is not).
    meta.create_account(&name("carol"), AccountKind::User, None, event("user.create")).await.unwrap();
    let record = |at: &str, account: &str, token_id: i64, deployment: &str, outcome: &str, prompt: u64, completion: u64| UsageRecord {
        at: at.into(),
        account: account.into(),
        token_id,
        deployment: deployment.into(),
        api: "openai.chat".into(),
        outcome: outcome.into(),
        prompt_tokens: prompt,
        completion_tokens: completion,
        latency_ms: 10,
        ttft_ms: Some(4),
        cost_micros: (prompt * 150_000 + completion * 600_000) as f64 / 1e6,
    };
    meta.record_usage(
        &[
            record("2026-11-01T10:00:00.000Z", "alice", 1, "chat", "ok", 100, 20),
            record("2026-11-01T11:00:00.000Z", "bob", 2, "chat", "ok", 50, 10),
            record("2026-11-02T09:00:00.000Z", "alice", 1, "embed", "ok", 7, 0),
            record("2026-11-02T10:00:00.000Z", "carol", 3, "chat", "cancelled", 30, 0),
        ],
        &[],
    )
    .await
    .unwrap();
    meta.record_usage(&[], &[]).await.unwrap();
    let query = |group, since: Option<&str>, account: Option<&str>, org: Option<&str>| UsageQuery { since: since.map(str::to_owned), until: None, account: account.map(str::to_owned), org: org.map(str::to_owned), group };
    let summary = |rows: Vec<UsageRow>| rows.into_iter().map(|r| (r.key, r.requests, r.errors, r.prompt_tokens, r.completion_tokens)).collect::<Vec<_>>();
    assert_eq!(summary(meta.usage(&query(UsageGroup::Day, None, None, None)).await.unwrap()), [("2026-11-01".into(), 2, 0, 150, 30), ("2026-11-02".into(), 2, 1, 37, 0)]);
    assert_eq!(summary(meta.usage(&query(UsageGroup::Deployment, Some("2026-11-01T10:30:00Z"), None, None)).await.unwrap()), [("chat".into(), 2, 1, 80, 10), ("embed".into(), 1, 0, 7, 0)]);
    assert_eq!(summary(meta.usage(&query(UsageGroup::Account, None, None, Some("acme"))).await.unwrap()), [("alice".into(), 2, 0, 107, 20), ("bob".into(), 1, 0, 50, 10)]);
    assert_eq!(summary(meta.usage(&query(UsageGroup::Token, None, Some("alice"), None)).await.unwrap()), [("1".into(), 2, 0, 107, 20)]);
    let cost: f64 = meta.usage(&query(UsageGroup::Account, None, Some("bob"), None)).await.unwrap()[0].cost_micros;
    assert!((cost - (50.0 * 0.15 + 10.0 * 0.6)).abs() < 1e-9, "{cost}");
    assert!(meta.usage(&query(UsageGroup::Day, None, Some("nobody"), None)).await.unwrap().is_empty());

    // Quotas: set (replacing), listed, matched to a token and its user's orgs, removed once.
    let token_quota = Quota { subject: QuotaSubject::Token(7), requests_per_minute: Some(3), tokens_per_minute: None, tokens_per_month: Some(1000), updated_at: "t".into() };
    let org_quota = Quota { subject: QuotaSubject::Org("acme".into()), requests_per_minute: None, tokens_per_minute: Some(500), tokens_per_month: None, updated_at: "t".into() };
    meta.set_quota(&token_quota, event("quota.set")).await.unwrap();
    meta.set_quota(&Quota { requests_per_minute: Some(5), ..token_quota.clone() }, event("quota.set")).await.unwrap();
    meta.set_quota(&org_quota, event("quota.set")).await.unwrap();
    let listed = meta.list_quotas().await.unwrap();
    assert_eq!(listed.iter().map(|q| (q.subject.clone(), q.requests_per_minute, q.tokens_per_minute)).collect::<Vec<_>>(), [(QuotaSubject::Org("acme".into()), None, Some(500)), (QuotaSubject::Token(7), Some(5), None)]);
    // Counters add atomically, per subject and period, from any number of concurrent callers.
    let charge = |subject: QuotaSubject, period: &str, requests: i64, tokens: i64| Charge { subject, period: period.into(), requests, tokens };
    let token7 = || QuotaSubject::Token(7);
    let charges: Vec<Vec<Charge>> = (0..20).map(|_| vec![charge(token7(), "m:2026-11-27T10:00", 1, 10)]).collect();
    let results = futures::future::join_all(charges.iter().map(|c| meta.charge(c, &[]))).await;
    let mut seen: Vec<i64> = results.into_iter().map(|r| r.unwrap().0[0].0).collect();
    seen.sort();
    assert_eq!(seen, (1..=20).collect::<Vec<_>>(), "every caller sees a distinct count");
    let keys = [(token7(), "m:2026-11-27T10:00".to_owned()), (QuotaSubject::Org("acme".into()), "m:2026-11-27T10:00".to_owned()), (token7(), "M:2026-11".to_owned())];
    assert_eq!(meta.charge(&[], &keys).await.unwrap().1, [(20, 200), (0, 0), (0, 0)]);
    let both = meta.charge(&[charge(token7(), "m:2026-11-27T10:01", -1, 5), charge(token7(), "M:2026-11", 0, 7)], &keys[..1]).await.unwrap();
    assert_eq!(both, (vec![(-1, 5), (0, 7)], vec![(20, 200)]));
    // Usage records carry their token charges in the same transaction.
    meta.record_usage(&[], &[charge(token7(), "M:2026-11", 0, 3)]).await.unwrap();
    assert_eq!(meta.charge(&[], &keys[2..]).await.unwrap().1, [(0, 10)]);
    meta.delete_quota(&QuotaSubject::Org("acme".into()), event("quota.delete")).await.unwrap();
    assert!(matches!(meta.delete_quota(&QuotaSubject::Org("acme".into()), event("x")).await, Err(Error::NotFound(_))));
}

/// Two stores on one PostgreSQL database stand for two replicas: their concurrent writes keep one
/// unbroken audit chain and one line of history.
#[tokio::test]
async fn postgres_replicas_share_one_chain() {
    let Some(url) = postgres_url().await else { return };
    let a: Arc<dyn MetaStore> = Arc::new(SqlMetaStore::connect(&url).await.unwrap());
    let b: Arc<dyn MetaStore> = Arc::new(SqlMetaStore::connect(&url).await.unwrap());
    let repo = a.create_repo(RepoKind::Model, &RepoName::parse("team/shared").unwrap(), false, vec![], "x", event("repo.create")).await.unwrap();
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let meta = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { meta.commit(new_commit(repo.id, vec![add(&format!("f{i}"), 'e')], None), event("repo.commit")).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(verify_chain(b.as_ref()).await.unwrap(), 21);
    let head = b.resolve(repo.id, "main").await.unwrap().unwrap();
    assert_eq!(a.list_commits(repo.id, &head).await.unwrap().len(), 21);
}

/// Migrations run once, also when a second process opens the same database.
#[tokio::test]
async fn reopening_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("meta.db").display());
    let first = SqlMetaStore::connect(&url).await.unwrap();
    first.create_account(&name("carol"), AccountKind::User, None, event("user.create")).await.unwrap();
    drop(first);
    let second = SqlMetaStore::connect(&url).await.unwrap();
    assert!(second.get_account(&name("carol")).await.unwrap().is_some());
}

/// Regression (CI of stop 7, "database is locked"): a write waits for SQLite's write lock while
/// another connection (here a second process on the same file) holds it, instead of failing at once.
#[tokio::test]
async fn sqlite_writers_wait_for_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("meta.db").display());
    let store = SqlMetaStore::connect(&url).await.unwrap();
    let other = SqlMetaStore::connect(&url).await.unwrap();
    let mut holder = other.pool().begin_with("BEGIN IMMEDIATE").await.unwrap();
    sqlx::query("INSERT INTO settings (key, value) VALUES ('lock-holder', 'x')").execute(&mut *holder).await.unwrap();
    let release = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        holder.rollback().await.unwrap();
    });
    // Reads first, then writes: a deferred transaction would get SQLITE_BUSY here without waiting.
    store.create_account(&name("dora"), AccountKind::User, None, event("user.create")).await.unwrap();
    release.await.unwrap();
    assert!(store.get_account(&name("dora")).await.unwrap().is_some());
}

async fn check_scan_queue(meta: &dyn MetaStore) {
    use domain::vetting::{Finding, Level, Override, Policy, ScanResult};
    // Commits queued scans for every added file (earlier commits in this suite added some).
    let mut claimed = Vec::new();
    while let Some(job) = meta.claim_scan_job(60).await.unwrap() {
        assert_eq!(job.attempts, 1);
        claimed.push(job);
    }
    assert!(claimed.len() >= 3, "{claimed:?}");
    // Leased jobs are not handed out twice.
    assert!(meta.claim_scan_job(60).await.unwrap().is_none());
    let first = &claimed[0];
    let result = ScanResult {
        sha256: first.sha256.clone(),
        hint: first.hint.clone(),
        scanner_version: "v1".into(),
        format: "pickle".into(),
        findings: vec![Finding { level: Level::Unsafe, code: "pickle.dangerous_global".into(), offset: Some(2), member: None, subject: "os.system".into(), reason: "r".into() }],
        scanned_at: domain::now_rfc3339(),
    };
    meta.finish_scan_job(first.id, &result, event("scan.completed")).await.unwrap();
    let stored = meta.scan_results(&[first.sha256.to_string()], "v1").await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].findings, result.findings);
    assert!(meta.scan_results(&[first.sha256.to_string()], "v2").await.unwrap().is_empty());
    // A failed attempt comes back after its backoff; a final failure is reported.
    let second = &claimed[1];
    meta.retry_scan_job(second.id, "boom", Some("2000-01-01T00:00:00.000Z".into())).await.unwrap();
    let again = meta.claim_scan_job(60).await.unwrap().unwrap();
    assert_eq!((again.id, again.attempts), (second.id, 2));
    meta.retry_scan_job(again.id, "gave up", None).await.unwrap();
    let failed = meta.failed_scans(&[second.sha256.to_string()]).await.unwrap();
    assert_eq!(failed[0].2, "gave up");
    // Re-enqueueing what is queued is a no-op; new pairs queue.
    meta.enqueue_scans(&[(first.sha256.to_string(), "other".into())]).await.unwrap();
    let other = meta.claim_scan_job(60).await.unwrap().unwrap();
    assert_eq!(other.hint, "other");
    // A running scan renews its lease; once another worker took the job over (the lease had
    // lapsed), the first one's renewal says it lost the job.
    assert!(meta.renew_scan_job(other.id, other.attempts, 60).await.unwrap());
    assert!(meta.renew_scan_job(other.id, other.attempts, -1).await.unwrap());
    let taken = meta.claim_scan_job(60).await.unwrap().unwrap();
    assert_eq!((taken.id, taken.attempts), (other.id, other.attempts + 1));
    assert!(!meta.renew_scan_job(other.id, other.attempts, 60).await.unwrap());
    assert!(meta.renew_scan_job(taken.id, taken.attempts, 60).await.unwrap());

    // Policies and overrides, audited.
    assert!(meta.get_policy("acme").await.unwrap().is_none());
    let policy = Policy { allow_pickle: false, allowed_licenses: Some(vec!["mit".into(), "apache-2.0".into()]), suspicious_blocks: true };
    meta.set_policy("acme", &policy, event("policy.set")).await.unwrap();
    assert_eq!(meta.get_policy("acme").await.unwrap(), Some(policy));
    let item = Override { id: 0, namespace: "acme".into(), sha256: first.sha256.clone(), code: "pickle.dangerous_global".into(), subject: "os.system".into(), justification: "test fixture".into(), author: "root".into(), created_at: String::new() };
    let saved = meta.add_override(&item, event("override.add")).await.unwrap();
    assert!(saved.id > 0);
    assert_eq!(meta.list_overrides("acme").await.unwrap(), vec![saved]);
}

/// Two replicas claiming from one queue never get the same job.
#[tokio::test]
async fn postgres_replicas_claim_each_job_once() {
    let Some(url) = postgres_url().await else { return };
    let a: Arc<dyn MetaStore> = Arc::new(SqlMetaStore::connect(&url).await.unwrap());
    let b: Arc<dyn MetaStore> = Arc::new(SqlMetaStore::connect(&url).await.unwrap());
    let keys: Vec<(String, String)> = (0..40).map(|i| (format!("{i:064x}"), "bin".to_owned())).collect();
    a.enqueue_scans(&keys).await.unwrap();
    let claimers: Vec<_> = [a, b]
        .into_iter()
        .map(|meta| {
            tokio::spawn(async move {
                let mut got = Vec::new();
                while let Some(job) = meta.claim_scan_job(600).await.unwrap() {
                    got.push(job.id);
                }
                got
            })
        })
        .collect();
    let mut all = Vec::new();
    for claimer in claimers {
        all.extend(claimer.await.unwrap());
    }
    let count = all.len();
    all.sort();
    all.dedup();
    assert_eq!((count, all.len()), (40, 40));
}

/// `XetStore`: xorbs and their owners, files and their grants, dedup chunks, GC claims that a
/// shard naming the xorb afterwards (or a re-upload meanwhile) cannot slip past.
async fn xet_store(store: Arc<SqlMetaStore>) {
    use domain::xet::{Term, XetFile, XorbRecord};
    let meta: Arc<dyn MetaStore> = store.clone();
    seed_accounts(meta.as_ref()).await;
    let repo = meta.create_repo(RepoKind::Model, &RepoName::parse("acme/m").unwrap(), true, vec![], "alice", event("repo.create")).await.unwrap();
    let (x1, x2) = ("1".repeat(64), "2".repeat(64));
    let record = |hash: &str| XorbRecord { hash: hash.to_owned(), size: 100, chunks: vec![7; 40] };
    assert!(meta.put_xorb(&record(&x1), "acme", &["c".repeat(64)]).await.unwrap());
    assert!(!meta.put_xorb(&record(&x1), "bob", &[]).await.unwrap(), "a second upload is not new");
    let mut owners = meta.xorb_owners(&x1).await.unwrap();
    owners.sort();
    assert_eq!(owners, vec!["acme".to_owned(), "bob".to_owned()]);
    assert_eq!(meta.xorb(&x1).await.unwrap().unwrap().chunks, vec![7; 40]);
    assert_eq!(meta.xorbs_with_chunk(&"c".repeat(64)).await.unwrap(), vec![x1.clone()]);
    assert!(meta.put_xorb(&record(&x2), "acme", &[]).await.unwrap());

    let sha = "5".repeat(64);
    let file = XetFile { hash: "f".repeat(64), sha256: sha.clone(), size: 30, terms: vec![Term { xorb: x1.clone(), start: 0, end: 2, len: 30 }] };
    meta.put_xet_files(repo.id, std::slice::from_ref(&file), &[("d".repeat(64), x1.clone())]).await.unwrap();
    meta.put_xet_files(repo.id, std::slice::from_ref(&file), &[]).await.unwrap();
    assert_eq!(meta.xet_file(&file.hash).await.unwrap(), Some(file.clone()));
    assert_eq!(meta.xet_file_by_sha256(&sha).await.unwrap(), Some(file.clone()));
    assert_eq!(meta.xet_hashes(&[sha.clone(), "6".repeat(64)]).await.unwrap().into_iter().collect::<Vec<_>>(), vec![(sha.clone(), file.hash.clone())]);
    assert!(meta.repo_has_file(repo.id, &sha).await.unwrap(), "the upload granted it");
    assert!(!meta.repo_has_file(repo.id + 1, &sha).await.unwrap());
    assert_eq!(meta.related_xorbs(&x1, 10).await.unwrap(), vec![x1.clone()]);

    // GC: nothing young is claimed; a xorb a file uses never is; an unused old one is, once.
    let future = "9999-01-01T00:00:00.000Z";
    assert!(meta.unreferenced_xorbs("2000-01-01T00:00:00.000Z").await.unwrap().is_empty());
    assert_eq!(meta.unreferenced_xorbs(future).await.unwrap(), vec![x2.clone()]);
    assert!(!meta.condemn_xorb(&x1, future).await.unwrap());
    assert!(meta.condemn_xorb(&x2, future).await.unwrap());
    assert!(!meta.condemn_xorb(&x2, future).await.unwrap());
    assert!(meta.xorb(&x2).await.unwrap().is_none());
    // A re-upload while GC is deleting the object is told to retry; once deleted, it lands.
    assert!(matches!(meta.put_xorb(&record(&x2), "acme", &[]).await, Err(Error::Conflict(_))));
    meta.xorb_deleted(&x2).await.unwrap();
    assert!(meta.put_xorb(&record(&x2), "acme", &[]).await.unwrap());
    // A shard naming a xorb GC removed fails in its own transaction (the foreign key).
    assert!(meta.condemn_xorb(&x2, future).await.unwrap());
    let late = XetFile { hash: "e".repeat(64), sha256: "4".repeat(64), size: 1, terms: vec![Term { xorb: x2.clone(), start: 0, end: 1, len: 1 }] };
    assert!(meta.put_xet_files(repo.id, &[late], &[]).await.is_err());

    // Files: an uncommitted file with a fresh grant is kept; without one it goes, and leaves a
    // tombstone that a commit naming it meets; registering it again lifts the tombstone.
    assert!(meta.unreferenced_xet_files("2000-01-01T00:00:00.000Z").await.unwrap().is_empty());
    assert!(!meta.delete_xet_file(&file.hash, "2000-01-01T00:00:00.000Z").await.unwrap());
    assert_eq!(meta.unreferenced_xet_files(future).await.unwrap(), vec![file.hash.clone()]);
    assert!(meta.delete_xet_file(&file.hash, future).await.unwrap());
    assert!(meta.xet_file(&file.hash).await.unwrap().is_none());
    assert!(meta.blob_tombstone(&sha).await.unwrap().is_some());
    let committed = FileEntry { path: RepoPath::parse("w.bin").unwrap(), size: 30, sha256: Digest::parse(&sha).unwrap(), git_oid: "0".repeat(40), lfs: true };
    assert!(matches!(meta.commit(new_commit(repo.id, vec![FileOperation::Add(committed.clone())], None), event("repo.commit")).await, Err(Error::Conflict(_))));
    meta.put_xet_files(repo.id, std::slice::from_ref(&file), &[]).await.unwrap();
    assert!(meta.blob_tombstone(&sha).await.unwrap().is_none());
    meta.commit(new_commit(repo.id, vec![FileOperation::Add(committed)], None), event("repo.commit")).await.unwrap();
    assert!(meta.unreferenced_xet_files(future).await.unwrap().is_empty(), "a committed file is referenced");
}

async fn eval_store(store: Arc<SqlMetaStore>) {
    use domain::evals::{Eval, EvalRun, OutputItem, RunStatus};
    use serde_json::json;
    let meta: Arc<dyn MetaStore> = store.clone();
    let eval = Eval {
        id: "eval_1".into(),
        owner: "alice".into(),
        name: "qa".into(),
        data_source_config: json!({ "type": "custom" }),
        testing_criteria: json!([{ "type": "string_check" }]),
        metadata: json!({ "k": "v" }),
        created_at: "2026-01-01T00:00:00.000Z".into(),
    };
    meta.create_eval(&eval, event("eval.create")).await.unwrap();
    assert_eq!(meta.get_eval("eval_1").await.unwrap().unwrap(), eval);
    assert_eq!(meta.list_evals(Some("alice")).await.unwrap().len(), 1);
    assert!(meta.list_evals(Some("bob")).await.unwrap().is_empty());
    let run = |id: &str, at: &str| EvalRun { id: id.into(), eval_id: "eval_1".into(), owner: "alice".into(), token_id: 7, name: "r".into(), status: RunStatus::Queued, spec: json!({ "data_source": {} }), summary: json!({}), created_at: at.into() };
    meta.create_run(&run("run_a", "2026-01-01T00:00:01.000Z"), event("eval.run.create")).await.unwrap();
    meta.create_run(&run("run_b", "2026-01-01T00:00:02.000Z"), event("eval.run.create")).await.unwrap();
    let orphan = EvalRun { eval_id: "eval_missing".into(), ..run("run_c", "2026-01-01T00:00:03.000Z") };
    assert!(matches!(meta.create_run(&orphan, event("eval.run.create")).await, Err(Error::NotFound(_))));

    // Oldest first; a claimed run is not claimed again while its lease holds.
    let claimed = meta.claim_run("2026-01-01T00:01:00.000Z", "2026-01-01T00:02:00.000Z").await.unwrap().unwrap();
    assert_eq!((claimed.id.as_str(), claimed.status), ("run_a", RunStatus::InProgress));
    assert_eq!(meta.claim_run("2026-01-01T00:01:30.000Z", "2026-01-01T00:02:30.000Z").await.unwrap().unwrap().id, "run_b");
    assert!(meta.claim_run("2026-01-01T00:01:40.000Z", "2026-01-01T00:02:40.000Z").await.unwrap().is_none());
    let item = |index: i64| OutputItem { run_id: "run_a".into(), index, id: format!("item_{index}"), status: "pass".into(), body: json!({ "n": index }), created_at: "2026-01-01T00:01:01.000Z".into() };
    meta.put_output_item(&item(1)).await.unwrap();
    meta.put_output_item(&item(0)).await.unwrap();
    meta.put_output_item(&item(1)).await.unwrap();
    assert_eq!(meta.output_items("run_a").await.unwrap().iter().map(|i| i.index).collect::<Vec<_>>(), vec![0, 1]);
    // Its worker died: once the lease is past, another takes it over, items kept.
    let taken = meta.claim_run("2026-01-01T00:02:01.000Z", "2026-01-01T00:03:01.000Z").await.unwrap().unwrap();
    assert_eq!(taken.id, "run_a");
    assert!(meta.renew_run("run_a", "2026-01-01T00:04:00.000Z", &json!({ "result_counts": { "total": 2 } })).await.unwrap());
    assert_eq!(meta.get_run("run_a").await.unwrap().unwrap().summary["result_counts"]["total"], 2);
    assert!(meta.finish_run("run_a", RunStatus::Completed, &json!({ "done": true }), event("eval.run.succeeded")).await.unwrap());
    assert!(!meta.finish_run("run_a", RunStatus::Failed, &json!({}), event("eval.run.failed")).await.unwrap(), "an ended run stays ended");
    assert!(!meta.cancel_run("run_a", event("eval.run.cancel")).await.unwrap());
    assert!(matches!(meta.put_output_item(&item(2)).await, Err(Error::Conflict(_))), "an ended run takes no items");
    // A canceled run stops its worker.
    assert!(meta.cancel_run("run_b", event("eval.run.cancel")).await.unwrap());
    assert!(!meta.renew_run("run_b", "2026-01-01T00:09:00.000Z", &json!({})).await.unwrap());
    assert_eq!(meta.get_run("run_b").await.unwrap().unwrap().status, RunStatus::Canceled);
    assert_eq!(meta.list_runs("eval_1").await.unwrap().len(), 2);
    meta.delete_eval("eval_1", event("eval.delete")).await.unwrap();
    assert!(meta.get_run("run_a").await.unwrap().is_none());
    assert!(meta.output_items("run_a").await.unwrap().is_empty());
    assert!(matches!(meta.delete_eval("eval_1", event("eval.delete")).await, Err(Error::NotFound(_))));
}

async fn route_store(store: Arc<SqlMetaStore>) {
    use domain::routes::{Route, RouteChange};
    use serde_json::json;
    let meta: Arc<dyn MetaStore> = store.clone();
    let change = |action: &str| RouteChange {
        route: "chat".into(),
        at: "2026-01-01T00:00:00.000Z".into(),
        actor: "admin".into(),
        action: action.into(),
        from: json!(null),
        to: json!({ "stable": { "deployment": "a" } }),
        reason: "why".into(),
        evidence: json!({ "eval_runs": [] }),
    };
    let first = Route { name: "chat".into(), stable: "a".into(), canary: None, shadow: None, rollout: None, updated_at: "2026-01-01T00:00:00.000Z".into() };
    meta.put_route(&first, None, &change("create"), event("route.create")).await.unwrap();
    // Creating again without reading it is a conflict; so is a stale read.
    assert!(matches!(meta.put_route(&first, None, &change("create"), event("route.create")).await, Err(Error::Conflict(_))));
    let second = Route { canary: Some(("b".into(), 25)), shadow: Some(("c".into(), 10)), updated_at: "2026-01-01T00:00:01.000Z".into(), ..first.clone() };
    assert!(matches!(meta.put_route(&second, Some("2025-01-01T00:00:00.000Z"), &change("canary"), event("route.canary")).await, Err(Error::Conflict(_))));
    meta.put_route(&second, Some(&first.updated_at), &change("canary"), event("route.canary")).await.unwrap();
    assert_eq!(meta.get_route("chat").await.unwrap().unwrap(), second);
    assert_eq!(meta.list_routes().await.unwrap(), vec![second.clone()]);
    meta.delete_route("chat", &change("delete"), event("route.delete")).await.unwrap();
    assert!(meta.get_route("chat").await.unwrap().is_none());
    let history = meta.route_history("chat").await.unwrap();
    assert_eq!(history.iter().map(|c| c.action.as_str()).collect::<Vec<_>>(), ["create", "canary", "delete"]);
    assert_eq!(history[0].to["stable"]["deployment"], "a");
    assert!(matches!(meta.delete_route("chat", &change("delete"), event("route.delete")).await, Err(Error::NotFound(_))));
}

async fn webhook_store(store: Arc<SqlMetaStore>) {
    use domain::webhooks::{Endpoint, NewDelivery};
    let meta: Arc<dyn MetaStore> = store.clone();
    let endpoint = Endpoint {
        id: "we_1".into(),
        owner: "alice".into(),
        name: "ci".into(),
        url: "http://10.0.0.1/hook".into(),
        event_types: vec!["repo.push".into()],
        secrets: vec![("whsec_new".into(), None), ("whsec_old".into(), Some("2030-01-01T00:00:00.000Z".into()))],
        created_at: "2026-01-01T00:00:00.000Z".into(),
        updated_at: "2026-01-01T00:00:00.000Z".into(),
        created_seq: 0,
    };
    meta.create_endpoint(&endpoint, event("webhook.create")).await.unwrap();
    let stored = meta.get_endpoint("we_1").await.unwrap().unwrap();
    // Its sequence is that of its own audit row.
    assert_eq!(stored.created_seq, meta.audit_head().await.unwrap().unwrap().seq);
    assert_eq!(stored, Endpoint { created_seq: stored.created_seq, ..endpoint.clone() });
    assert_eq!(meta.webhook_cursor().await.unwrap(), None);
    assert_eq!(meta.list_endpoints(Some("alice")).await.unwrap().len(), 1);
    // The cursor starts at the log's head; one holder at a time until its lease expires.
    let head = meta.audit_head().await.unwrap().map_or(0, |r| r.seq);
    assert_eq!(meta.claim_webhook_cursor("a", "2026-01-01T00:00:00.000Z", "2026-01-01T00:01:00.000Z").await.unwrap(), Some(head));
    assert_eq!(meta.claim_webhook_cursor("b", "2026-01-01T00:00:30.000Z", "2026-01-01T00:01:30.000Z").await.unwrap(), None);
    let new = |n: u8| NewDelivery { endpoint_id: "we_1".into(), event_id: format!("evt_{n}"), event_type: "repo.push".into(), payload: "{}".into() };
    assert!(!meta.enqueue_deliveries("b", &[new(0)], head + 1, "2026-01-01T00:00:31.000Z").await.unwrap(), "not the holder");
    assert!(meta.enqueue_deliveries("a", &[new(1), new(2)], head + 1, "2026-01-01T00:00:31.000Z").await.unwrap());
    assert!(!meta.enqueue_deliveries("a", &[new(3)], head + 1, "2026-01-01T00:00:32.000Z").await.unwrap(), "the cursor only moves forward");
    assert_eq!(meta.claim_webhook_cursor("b", "2026-01-01T00:02:00.000Z", "2026-01-01T00:03:00.000Z").await.unwrap(), Some(head + 1));
    assert_eq!(meta.webhook_cursor().await.unwrap(), Some(head + 1));
    // Due deliveries are held while they are sent.
    let due = meta.due_deliveries("2026-01-01T00:00:40.000Z", "2026-01-01T00:01:10.000Z", 10).await.unwrap();
    assert_eq!(due.iter().map(|d| d.event_id.as_str()).collect::<Vec<_>>(), ["evt_1", "evt_2"]);
    assert!(meta.due_deliveries("2026-01-01T00:00:41.000Z", "2026-01-01T00:01:11.000Z", 10).await.unwrap().is_empty());
    meta.record_attempt(due[0].id, true, Some(200), "", None).await.unwrap();
    meta.record_attempt(due[1].id, false, Some(500), "the endpoint answered 500", Some("2026-01-01T00:05:00.000Z")).await.unwrap();
    let log = meta.deliveries("we_1", 10).await.unwrap();
    assert_eq!((log[0].status.as_str(), log[0].attempts, log[0].last_status, log[0].next_at.as_str()), ("pending", 1, Some(500), "2026-01-01T00:05:00.000Z"));
    assert_eq!(log[1].status, "delivered");
    meta.delete_endpoint("we_1", event("webhook.delete")).await.unwrap();
    assert!(meta.deliveries("we_1", 10).await.unwrap().is_empty());
}

async fn pipeline_store(store: Arc<SqlMetaStore>) {
    use domain::pipelines::{Binding, PipelineRun, PipelineStatus};
    use domain::routes::{Route, RouteChange};
    use serde_json::json;
    let meta: Arc<dyn MetaStore> = store.clone();
    let binding = |route: &str| Binding { route: route.into(), repo_kind: "model".into(), repo: "acme/m".into(), branch: "main".into(), spec: None, token_id: 1, bound_by: "admin".into(), bound_at: "2026-01-01T00:00:00.000Z".into() };
    assert!(matches!(meta.set_binding("chat", Some(&binding("chat")), event("route.pipeline.set")).await, Err(Error::NotFound(_))), "no such route");
    let route = Route { name: "chat".into(), stable: "a".into(), canary: None, shadow: None, rollout: None, updated_at: "2026-01-01T00:00:00.000Z".into() };
    let change = RouteChange { route: "chat".into(), at: route.updated_at.clone(), actor: "admin".into(), action: "create".into(), from: json!(null), to: json!({}), reason: String::new(), evidence: json!({}) };
    meta.put_route(&route, None, &change, event("route.create")).await.unwrap();
    meta.set_binding("chat", Some(&binding("chat")), event("route.pipeline.set")).await.unwrap();
    assert_eq!(meta.bindings().await.unwrap(), vec![binding("chat")]);
    // The cursor starts just before the first binding.
    let bound_seq = meta.audit_head().await.unwrap().unwrap().seq;
    assert_eq!(meta.claim_pipeline_cursor("a", "2026-01-01T00:00:00.000Z", "2026-01-01T00:01:00.000Z").await.unwrap(), Some(bound_seq - 1));
    assert_eq!(meta.claim_pipeline_cursor("b", "2026-01-01T00:00:10.000Z", "2026-01-01T00:01:10.000Z").await.unwrap(), None);
    let run = |id: &str, seq: i64| PipelineRun {
        id: id.into(),
        route: "chat".into(),
        repo_kind: "model".into(),
        repo: "acme/m".into(),
        branch: "main".into(),
        commit: "c".repeat(40),
        pusher: "alice".into(),
        status: PipelineStatus::Running,
        stage: "vet".into(),
        state: json!({ "push_seq": seq, "log": [] }),
        created_at: "2026-01-01T00:00:00.000Z".into(),
        updated_at: "2026-01-01T00:00:00.000Z".into(),
    };
    assert!(!meta.enqueue_pipeline_runs("b", &[run("pipe_0", 1)], vec![], bound_seq).await.unwrap(), "not the holder");
    assert!(meta.enqueue_pipeline_runs("a", &[run("pipe_1", 10), run("pipe_2", 11)], vec![event("pipeline.run.create"), event("pipeline.run.create")], bound_seq).await.unwrap());
    assert_eq!(meta.pipeline_cursor().await.unwrap(), Some(bound_seq));
    // Runs of one route go one at a time, oldest push first, each under a lease.
    let claimed = meta.claim_pipeline_run("2026-01-01T00:00:01.000Z", "2026-01-01T00:02:00.000Z").await.unwrap().unwrap();
    assert_eq!(claimed.id, "pipe_1");
    assert!(meta.claim_pipeline_run("2026-01-01T00:00:02.000Z", "2026-01-01T00:02:00.000Z").await.unwrap().is_none(), "pipe_2 waits for pipe_1");
    let stepped = PipelineRun { stage: "deploy".into(), state: json!({ "push_seq": 10, "candidate": "x" }), ..claimed.clone() };
    assert!(meta.update_pipeline_run(&stepped, "2026-01-01T00:00:05.000Z", Some(event("pipeline.run.stage"))).await.unwrap());
    assert!(meta.claim_pipeline_run("2026-01-01T00:00:03.000Z", "2026-01-01T00:02:00.000Z").await.unwrap().is_none(), "not due yet");
    let again = meta.claim_pipeline_run("2026-01-01T00:00:06.000Z", "2026-01-01T00:02:00.000Z").await.unwrap().unwrap();
    assert_eq!((again.id.as_str(), again.stage.as_str(), again.state["candidate"].as_str()), ("pipe_1", "deploy", Some("x")));
    assert!(meta.cancel_pipeline_run("pipe_1", event("pipeline.run.cancel")).await.unwrap());
    assert!(!meta.cancel_pipeline_run("pipe_1", event("pipeline.run.cancel")).await.unwrap());
    assert!(!meta.update_pipeline_run(&again, "2026-01-01T00:00:07.000Z", None).await.unwrap(), "a canceled run takes no more steps");
    assert_eq!(meta.get_pipeline_run("pipe_1").await.unwrap().unwrap().status, PipelineStatus::Canceled);
    assert_eq!(meta.claim_pipeline_run("2026-01-01T00:00:08.000Z", "2026-01-01T00:02:00.000Z").await.unwrap().unwrap().id, "pipe_2");
    assert_eq!(meta.list_pipeline_runs(Some("chat"), 10).await.unwrap().iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["pipe_2", "pipe_1"]);
    // Deleting the route takes its binding with it.
    meta.delete_route("chat", &RouteChange { action: "delete".into(), ..change }, event("route.delete")).await.unwrap();
    assert!(meta.bindings().await.unwrap().is_empty());
}
