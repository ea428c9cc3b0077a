//! A small HTTP client for Mantle's APIs, turning error bodies into readable errors.

use anyhow::Context as _;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Talks to one server with one token.
#[derive(Clone)]
pub(crate) struct Client {
    pub(crate) base: String,
    pub(crate) http: reqwest::Client,
    token: Option<String>,
}

/// Percent-encodes one path segment.
pub(crate) fn encode(segment: &str) -> String {
    percent_encoding::utf8_percent_encode(segment, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Percent-encodes a repo path, keeping its slashes.
pub(crate) fn encode_path(path: &str) -> String {
    path.split('/').map(encode).collect::<Vec<_>>().join("/")
}

impl Client {
    pub(crate) fn new(base: &str, token: Option<String>) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder().build().context("build the HTTP client")?;
        Ok(Client { base: base.trim_end_matches('/').to_owned(), http, token })
    }

    pub(crate) fn request(&self, method: reqwest::Method, path_or_url: &str) -> reqwest::RequestBuilder {
        let url = if path_or_url.starts_with("http://") || path_or_url.starts_with("https://") { path_or_url.to_owned() } else { format!("{}{path_or_url}", self.base) };
        let builder = self.http.request(method, url);
        match &self.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    pub(crate) async fn send(&self, builder: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let response = builder.send().await.context("send the request")?;
        check(response).await
    }

    pub(crate) async fn get_json<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let response = self.send(self.request(reqwest::Method::GET, path)).await?;
        response.json().await.context("read the JSON response")
    }

    pub(crate) async fn post_json<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> anyhow::Result<T> {
        let response = self.send(self.request(reqwest::Method::POST, path).json(body)).await?;
        response.json().await.context("read the JSON response")
    }

    pub(crate) async fn put_json<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> anyhow::Result<T> {
        let response = self.send(self.request(reqwest::Method::PUT, path).json(body)).await?;
        response.json().await.context("read the JSON response")
    }

    pub(crate) async fn delete_json<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let response = self.send(self.request(reqwest::Method::DELETE, path)).await?;
        response.json().await.context("read the JSON response")
    }

    pub(crate) async fn delete_json_with<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> anyhow::Result<T> {
        let response = self.send(self.request(reqwest::Method::DELETE, path).json(body)).await?;
        response.json().await.context("read the JSON response")
    }
}

/// Turns a non-success response into an error carrying the server's message.
pub(crate) async fn check(response: reqwest::Response) -> anyhow::Result<reqwest::Response> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let url = response.url().clone();
    let text = response.text().await.unwrap_or_default();
    let message = serde_json::from_str::<api::ErrorBody>(&text).map(|b| b.error).unwrap_or(text);
    anyhow::bail!("{status} from {}: {message}", url.path())
}
