//! A test server: state on a temp folder, an admin token, helpers to send requests.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use base64::Engine as _;
use server::{AppState, Config, FlagOverrides, RawConfig};
use tower::ServiceExt as _;

pub(crate) const ADMIN: &str = "test-admin-token-0123456789";

/// Deployments run on the engine's deterministic mocks, whatever their files hold: the mock
/// generator (a byte tokenizer) and the mock embedder (16 dimensions, at most 64 tokens).
struct MockBackends;

impl server::runtime::Loader for MockBackends {
    fn generator(&self, config: &engine::RunnerConfig) -> Result<Box<dyn engine::ModelRunner>, String> {
        let mut runner = engine::mock::MockRunner::new(4096);
        // A size tests can choose per deployment, through its context setting.
        runner.memory_bytes = u64::from(config.context) * 1_000;
        // Fault injection: a deployment with a context of 777 fails every request.
        runner.fail = config.context == 777;
        Ok(Box::new(runner))
    }
    fn embedder(&self, config: &engine::EmbedderConfig) -> Result<Box<dyn engine::EmbedRunner>, String> {
        // A revision's config.json may give another width (`hidden_size`), so tests can tell
        // one revision's vectors from another's.
        let dims = std::fs::read(&config.config).ok().and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok()).and_then(|c| c["hidden_size"].as_u64()).unwrap_or(16) as usize;
        Ok(Box::new(engine::embed::MockEmbedder { dims, max_tokens: 64, calls: Default::default() }))
    }
}

pub(crate) struct TestServer {
    pub(crate) router: Router,
    pub(crate) state: AppState,
    dir: std::sync::Arc<tempfile::TempDir>,
}

pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: axum::http::HeaderMap,
    pub(crate) body: Vec<u8>,
}

impl Reply {
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
    pub(crate) fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
    }
}

impl TestServer {
    pub(crate) async fn new() -> Self {
        Self::with(|_| {}).await
    }

    pub(crate) async fn with(tweak: impl FnOnce(&mut RawConfig)) -> Self {
        Self::open(std::sync::Arc::new(tempfile::tempdir().unwrap()), tweak).await
    }

    /// A second server on the same data folder, as after a restart.
    pub(crate) async fn restart(&self) -> Self {
        Self::open(self.dir.clone(), |_| {}).await
    }

    async fn open(dir: std::sync::Arc<tempfile::TempDir>, tweak: impl FnOnce(&mut RawConfig)) -> Self {
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, ADMIN).unwrap();
        let flags = FlagOverrides { addr: Some("127.0.0.1:0".into()), data_dir: Some(dir.path().join("data").display().to_string()), admin_token_file: Some(token_file.display().to_string()), ..Default::default() };
        let mut raw = RawConfig::load(None, &flags).unwrap();
        tweak(&mut raw);
        let mut state = server::build_state(Config::from_raw(raw).unwrap()).await.unwrap();
        state.runtime = server::runtime::Runtime::new(state.config.runtime.clone(), std::sync::Arc::new(MockBackends));
        server::bootstrap::admin_token(&state).await.unwrap();
        TestServer { router: server::router(state.clone()), state, dir }
    }

    pub(crate) async fn send(&self, method: &str, uri: &str, token: Option<&str>, content_type: Option<&str>, body: Vec<u8>) -> Reply {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = Vec::new();
        if let Some(auth) = &auth {
            headers.push(("authorization", auth.as_str()));
        }
        if let Some(content_type) = content_type {
            headers.push(("content-type", content_type));
        }
        self.send_with(method, uri, &headers, body).await
    }

    /// Sends a request with these headers (besides Host).
    pub(crate) async fn send_with(&self, method: &str, uri: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Reply {
        let mut request = Request::builder().method(method).uri(uri).header("host", "mantle.test");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = self.router.clone().oneshot(request.body(Body::from(body)).unwrap()).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap().to_vec();
        Reply { status, headers, body }
    }

    /// Sends a request and returns the response with its body unread (a stream the test holds).
    pub(crate) async fn open_stream(&self, uri: &str, token: &str, body: serde_json::Value) -> axum::response::Response {
        let request = Request::builder().method("POST").uri(uri).header("host", "mantle.test").header("authorization", format!("Bearer {token}")).header("content-type", "application/json");
        self.router.clone().oneshot(request.body(Body::from(serde_json::to_vec(&body).unwrap())).unwrap()).await.unwrap()
    }

    pub(crate) async fn json(&self, method: &str, uri: &str, token: Option<&str>, body: serde_json::Value) -> Reply {
        self.send(method, uri, token, Some("application/json"), serde_json::to_vec(&body).unwrap()).await
    }

    pub(crate) async fn get(&self, uri: &str, token: Option<&str>) -> Reply {
        self.send("GET", uri, token, None, Vec::new()).await
    }

    /// Creates a user and returns a token of the given role for them.
    pub(crate) async fn user(&self, name: &str, org: Option<&str>, role: &str) -> String {
        let reply = self.json("POST", "/api/admin/users", Some(ADMIN), serde_json::json!({ "name": name, "org": org })).await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
        self.token(name, role).await
    }

    pub(crate) async fn token(&self, name: &str, role: &str) -> String {
        let reply = self.json("POST", "/api/admin/tokens", Some(ADMIN), serde_json::json!({ "user": name, "role": role })).await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
        reply.json()["token"].as_str().unwrap().to_owned()
    }

    pub(crate) async fn create_repo(&self, token: &str, name: &str, private: bool) -> Reply {
        self.json("POST", "/api/repos/create", Some(token), serde_json::json!({ "name": name, "private": private })).await
    }

    pub(crate) async fn commit(&self, token: &str, repo: &str, lines: &[serde_json::Value]) -> Reply {
        let mut body = Vec::new();
        for line in lines {
            body.extend(serde_json::to_vec(line).unwrap());
            body.push(b'\n');
        }
        self.send("POST", &format!("/api/models/{repo}/commit/main"), Some(token), Some("application/x-ndjson"), body).await
    }

    pub(crate) async fn head(&self, repo: &str, token: &str) -> String {
        self.get(&format!("/api/models/{repo}"), Some(token)).await.json()["sha"].as_str().unwrap().to_owned()
    }

    pub(crate) async fn audit_actions(&self) -> Vec<String> {
        let reply = self.get("/api/admin/audit?limit=10000", Some(ADMIN)).await;
        reply.json().as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap().to_owned()).collect()
    }
}

pub(crate) fn header(summary: &str) -> serde_json::Value {
    serde_json::json!({ "key": "header", "value": { "summary": summary, "description": "" } })
}

pub(crate) fn file(path: &str, content: &[u8]) -> serde_json::Value {
    serde_json::json!({ "key": "file", "value": { "path": path, "content": base64::engine::general_purpose::STANDARD.encode(content), "encoding": "base64" } })
}
