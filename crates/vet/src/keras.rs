//! Keras models: `.keras` archives (a zip with `config.json`) and legacy `.h5` files. A `Lambda`
//! layer carries marshalled Python bytecode that runs on load, wherever it is nested.

use std::io::Read;

use crate::{Finding, Verdict};

/// The largest `config.json` parsed.
const MAX_CONFIG: u64 = 64 * 1024 * 1024;

/// Checks a Keras `config.json`: every `Lambda` layer, at any depth, is unsafe; classes from
/// modules outside Keras are suspicious (custom objects import user code).
pub fn check_config<R: Read>(reader: R) -> Vec<Finding> {
    let mut text = Vec::new();
    if reader.take(MAX_CONFIG + 1).read_to_end(&mut text).is_err() || text.len() as u64 > MAX_CONFIG {
        return vec![Finding::new(Verdict::Error, "keras.config_unreadable", None, "config.json", "config.json is unreadable or larger than 64 MiB")];
    }
    let config: serde_json::Value = match serde_json::from_slice(&text) {
        Ok(value) => value,
        Err(err) => return vec![Finding::new(Verdict::Error, "keras.config_invalid", None, "config.json", format!("config.json is not valid JSON: {err}"))],
    };
    let mut findings = Vec::new();
    walk(&config, "", &mut findings, 0);
    findings
}

fn walk(value: &serde_json::Value, path: &str, findings: &mut Vec<Finding>, depth: usize) {
    if depth > 256 || findings.len() > 200 {
        return;
    }
    match value {
        serde_json::Value::Object(map) => {
            let class = map.get("class_name").and_then(|c| c.as_str());
            let name = map.get("config").and_then(|c| c.get("name")).and_then(|n| n.as_str()).unwrap_or("");
            if class == Some("Lambda") {
                findings.push(Finding::new(Verdict::Unsafe, "keras.lambda", None, format!("{path}/{name}"), format!("Lambda layer {name:?} holds Python code that runs when the model is loaded")));
            }
            if let (Some(class), Some(module)) = (class, map.get("module").and_then(|m| m.as_str())) {
                if !(module.starts_with("keras") || module.starts_with("tf_keras") || module == "builtins") {
                    findings.push(Finding::new(Verdict::Suspicious, "keras.custom_object", None, format!("{module}.{class}"), format!("layer class {class} comes from module {module}, outside Keras: loading it imports that code")));
                }
            }
            for (key, child) in map {
                walk(child, &format!("{path}/{key}"), findings, depth + 1);
            }
        }
        serde_json::Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                walk(child, &format!("{path}/{i}"), findings, depth + 1);
            }
        }
        _ => {}
    }
}

/// Searches a legacy HDF5 Keras file for a Lambda layer in its embedded `model_config` JSON,
/// streaming with bounded memory.
pub fn check_h5<R: Read>(mut reader: R) -> Vec<Finding> {
    const NEEDLES: [&[u8]; 2] = [b"\"class_name\": \"Lambda\"", b"\"class_name\":\"Lambda\""];
    let keep = NEEDLES.iter().map(|n| n.len()).max().unwrap_or(0);
    let mut window: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut buf = vec![0u8; 1 << 20];
    let mut consumed: u64 = 0;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) => return vec![Finding::new(Verdict::Error, "keras.h5_unreadable", Some(consumed), "", format!("read failed: {err}"))],
        };
        window.extend_from_slice(&buf[..n]);
        for needle in NEEDLES {
            if let Some(at) = window.windows(needle.len()).position(|w| w == needle) {
                let offset = consumed + at as u64;
                return vec![Finding::new(Verdict::Unsafe, "keras.lambda", Some(offset), "model_config", "the embedded model config has a Lambda layer, whose Python code runs when the model is loaded")];
            }
        }
        let drop = window.len().saturating_sub(keep);
        consumed += drop as u64;
        window.drain(..drop);
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_lambdas_are_found() {
        let config = r#"{"class_name":"Functional","config":{"layers":[{"class_name":"Dense","module":"keras.layers","config":{"name":"d"}},
            {"class_name":"TimeDistributed","module":"keras.layers","config":{"name":"td","layer":{"class_name":"Lambda","module":"keras.layers","config":{"name":"inner","function":"4wEAAA..."}}}}]}}"#;
        let findings = check_config(config.as_bytes());
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert_eq!(findings[0].code, "keras.lambda");
        assert!(findings[0].subject.ends_with("inner"));
        let custom = r#"{"class_name":"Sequential","config":{"layers":[{"class_name":"MyLayer","module":"evil_pkg.layers","config":{"name":"x"}}]}}"#;
        assert_eq!(check_config(custom.as_bytes())[0].code, "keras.custom_object");
        assert_eq!(check_config(&b"{not json"[..])[0].code, "keras.config_invalid");
    }

    #[test]
    fn h5_search_spans_chunk_edges() {
        let mut bytes = vec![0u8; (1 << 20) - 10];
        bytes.extend(br#"{"class_name": "Lambda", "config": {}}"#);
        assert_eq!(check_h5(&bytes[..])[0].code, "keras.lambda");
        assert!(check_h5(&vec![7u8; 3 << 20][..]).is_empty());
    }
}
