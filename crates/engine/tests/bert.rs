//! The BERT encoder on the real all-MiniLM-L6-v2 (models from `scripts/fetch-models.sh` in
//! `$MANTLE_MODELS`; skipped with a message otherwise): unit vectors whose similarities follow
//! meaning, and the same vector for a sentence alone or inside a batch; its tokenizer against
//! Hugging Face's Python `tokenizers` (`$MANTLE_PYTHON`) on MiniLM's `tokenizer.json` and on
//! variants of it; the sentence-transformers pooling setups.

use std::path::{Path, PathBuf};

use engine::bert::{Bert, Pooling, SentenceSetup};
use engine::hf_tokenizer::HfTokenizer;
use engine::{EmbedderConfig, Tokenizer as _};

mod common;
use common::needed;

#[test]
fn minilm_embeds_by_meaning_alone_and_batched() {
    let Some(models) = needed("MANTLE_MODELS") else { return };
    let dir = std::path::Path::new(&models).join("all-MiniLM-L6-v2");
    let bert = Bert::load(&minilm(&dir)).unwrap();
    assert_eq!(bert.setup, SentenceSetup { pooling: Pooling::Mean, normalize: true, prompt: String::new() });
    let texts = ["a cat sat on the mat", "a kitten rested on the rug", "quarterly revenue grew"];
    let tokens: Vec<Vec<u32>> = texts.iter().map(|t| bert.tokenizer.encode(t)).collect();
    assert_eq!(tokens[0], vec![101, 1037, 4937, 2938, 2006, 1996, 13523, 102], "BERT ids of {:?}", texts[0]);
    let refs: Vec<&[u32]> = tokens.iter().map(Vec::as_slice).collect();
    let vectors = bert.embed(&refs).unwrap();
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    for v in &vectors {
        assert_eq!(v.len(), 384);
        assert!((dot(v, v) - 1.0).abs() < 1e-4);
    }
    assert!(dot(&vectors[0], &vectors[1]) > dot(&vectors[0], &vectors[2]) + 0.2);
    let alone = bert.embed(&refs[2..]).unwrap();
    assert!(dot(&alone[0], &vectors[2]) > 0.99999);

    let sentence = "The river carried quiet boats past the market while people measured the water and wrote a report about energy policy today.";
    let many: Vec<Vec<u32>> = (0..256).map(|i| bert.tokenizer.encode(&format!("{sentence} {i}"))).collect();
    let refs: Vec<&[u32]> = many.iter().map(Vec::as_slice).collect();
    let started = std::time::Instant::now();
    for chunk in refs.chunks(32) {
        bert.embed(chunk).unwrap();
    }
    println!("256 sentences of {} tokens: {:.1} sentences/s on 2 threads", many[0].len(), 256.0 / started.elapsed().as_secs_f64());
}

/// The default arithmetic (bfloat16 on the tile unit, where the CPU has one) stays within cosine
/// 0.9999 of f32 on every kind of text, short and long, and names itself in the backend.
#[test]
fn minilm_bfloat16_stays_within_cosine_of_f32() {
    let Some(models) = needed("MANTLE_MODELS") else { return };
    let dir = std::path::Path::new(&models).join("all-MiniLM-L6-v2");
    let fast = Bert::load(&minilm(&dir)).unwrap();
    let exact = Bert::load(&EmbedderConfig { precision: engine::Precision::F32, ..minilm(&dir) }).unwrap();
    assert_eq!(engine::EmbedRunner::backend(&exact), "mantle-bert");
    println!("default backend: {}", engine::EmbedRunner::backend(&fast));
    let long = TEXTS[7].repeat(6);
    let texts: Vec<&str> = TEXTS.iter().copied().chain([long.as_str()]).collect();
    let tokens: Vec<Vec<u32>> = texts.iter().map(|t| fast.tokenizer.encode(t)).collect();
    let refs: Vec<&[u32]> = tokens.iter().map(Vec::as_slice).collect();
    for (text, (a, b)) in texts.iter().zip(fast.embed(&refs).unwrap().iter().zip(exact.embed(&refs).unwrap())) {
        let cosine = a.iter().zip(&b).map(|(x, y)| x * y).sum::<f32>();
        assert!(cosine >= 0.9999, "cosine {cosine} for {text:?}");
    }
}

/// A config.json with an empty layer is refused at load, before any weights are read.
#[test]
fn empty_shapes_are_refused_at_load() {
    let dir = tempfile_dir();
    for (hidden, intermediate) in [(0, 1536), (384, 0)] {
        let config = serde_json::json!({"hidden_size": hidden, "num_hidden_layers": 1, "num_attention_heads": 1, "intermediate_size": intermediate, "max_position_embeddings": 8});
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
        let err = Bert::load(&minilm(&dir)).err().expect("refused");
        assert!(err.contains("unsupported shape"), "{err}");
    }
}

/// MiniLM's files, as the runtime hands them over.
fn minilm(dir: &Path) -> EmbedderConfig {
    EmbedderConfig {
        weights: dir.join("model.safetensors"),
        config: dir.join("config.json"),
        tokenizer: dir.join("tokenizer.json"),
        sentence_config: Some(dir.join("sentence_bert_config.json")),
        modules: Some(dir.join("modules.json")),
        pooling: Some(dir.join("1_Pooling/config.json")),
        st_config: Some(dir.join("config_sentence_transformers.json")),
        threads: 2,
        precision: engine::Precision::Auto,
    }
}

const TEXTS: &[&str] = &[
    "a cat sat on the mat",
    "Héllo, Wörld! Ünïcödé text with punctuation: (brackets) & symbols — dashes…",
    "The CAFÉ's naïve résumé, in UPPER and lower CaSe",
    "日本語のテキストも少し and emoji 🚀🚀 and Ελληνικά",
    "New York <ent> is big; new york <ENT> is too",
    "zero\u{200b}width soft\u{00ad}hyphen, a tab\there and a\nnewline",
    "x",
    "The river carried quiet boats past the market while people measured the water and wrote a long report about energy policy, trade, weather and the price of bread in every town along the coast.",
];

/// Token ids of every text under every tokenizer file, from Python's `tokenizers` with padding
/// off and, where given, truncation at a length (as sentence-transformers calls it).
fn python_ids(python: &str, variants: &[(PathBuf, Option<usize>)]) -> Vec<Vec<Vec<u32>>> {
    let script = r#"
import json, sys
from tokenizers import Tokenizer
variants, texts = json.loads(sys.stdin.read())
out = []
for path, limit in variants:
    tok = Tokenizer.from_file(path)
    tok.no_padding()
    if limit is not None:
        t = tok.truncation or {}
        tok.enable_truncation(limit, strategy=t.get("strategy", "longest_first"), direction=t.get("direction", "right"))
    out.append([tok.encode(text).ids for text in texts])
print(json.dumps(out))
"#;
    let input = serde_json::json!([variants.iter().map(|(p, l)| serde_json::json!([p.display().to_string(), l])).collect::<Vec<_>>(), TEXTS]);
    let mut child = std::process::Command::new(python).args(["-c", script]).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().expect("run MANTLE_PYTHON");
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(input.to_string().as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "python tokenizers failed");
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn r12_tokenizer_matches_python_tokenizers_on_minilm_and_variants() {
    let (Some(models), Some(python)) = (needed("MANTLE_MODELS"), needed("MANTLE_PYTHON")) else { return };
    let original: serde_json::Value = serde_json::from_slice(&std::fs::read(Path::new(&models).join("all-MiniLM-L6-v2/tokenizer.json")).unwrap()).unwrap();
    let dir = tempfile_dir();
    let mut variants: Vec<(String, serde_json::Value, Option<usize>)> = vec![("minilm".into(), original.clone(), Some(256))];
    // Added tokens: a special one (never split, not normalized) and a normal multi-word one.
    let mut added = original.clone();
    let next = original["model"]["vocab"].as_object().unwrap().len();
    added["added_tokens"].as_array_mut().unwrap().push(serde_json::json!({"id": next, "content": "<ent>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}));
    added["added_tokens"].as_array_mut().unwrap().push(serde_json::json!({"id": next + 1, "content": "new york", "single_word": true, "lstrip": false, "rstrip": false, "normalized": true, "special": false}));
    variants.push(("added".into(), added, Some(256)));
    let mut cased = original.clone();
    cased["normalizer"]["lowercase"] = serde_json::json!(false);
    variants.push(("cased".into(), cased, Some(256)));
    let mut accents = original.clone();
    accents["normalizer"]["strip_accents"] = serde_json::json!(false);
    variants.push(("accents".into(), accents, Some(256)));
    // The file's own truncation (no max_seq_length given), right and left.
    let mut short = original.clone();
    short["truncation"] = serde_json::json!({"direction": "Right", "max_length": 12, "strategy": "LongestFirst", "stride": 0});
    variants.push(("short".into(), short, None));
    let mut left = original.clone();
    left["truncation"] = serde_json::json!({"direction": "Left", "max_length": 9, "strategy": "LongestFirst", "stride": 0});
    variants.push(("left".into(), left, None));

    let files: Vec<(PathBuf, Option<usize>)> = variants
        .iter()
        .map(|(name, json, limit)| {
            let path = dir.join(format!("{name}.json"));
            std::fs::write(&path, json.to_string()).unwrap();
            (path, *limit)
        })
        .collect();
    let expected = python_ids(&python, &files);
    for ((name, json, limit), expected) in variants.iter().zip(&expected) {
        let tokenizer = HfTokenizer::from_json(json.to_string().as_bytes(), *limit, 512, String::new()).unwrap();
        for (text, ids) in TEXTS.iter().zip(expected) {
            assert_eq!(&tokenizer.encode(text), ids, "{name}: {text:?}");
        }
    }
    // The variants differ where they should (the comparison would catch a tokenizer that ignores them).
    let differs = |a: usize, b: usize| expected[a].iter().zip(&expected[b]).any(|(x, y)| x != y);
    assert!(differs(0, 1) && differs(0, 2) && differs(0, 3) && differs(0, 4) && differs(4, 5));
    assert!(expected[4].iter().all(|ids| ids.len() <= 12) && expected[5].iter().all(|ids| ids.len() <= 9));
    // Truncation is reported, so a caller that must not truncate can refuse.
    let short = HfTokenizer::from_json(variants[4].1.to_string().as_bytes(), None, 512, String::new()).unwrap();
    assert_eq!(short.encode_truncating(TEXTS[7], 12), (expected[4][7].clone(), true));
    assert_eq!(short.encode_truncating(TEXTS[0], 12), (expected[4][0].clone(), false));
}

#[test]
fn r12_sentence_transformers_setups_are_read_or_refused() {
    let read = |modules: Option<&str>, pooling: Option<&str>, st: Option<&str>| SentenceSetup::read(modules.map(str::as_bytes), pooling.map(str::as_bytes), st.map(str::as_bytes), 384);
    let modules = |normalize: bool| {
        let mut list = vec![r#"{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"}"#, r#"{"idx":1,"name":"1","path":"1_Pooling","type":"sentence_transformers.models.Pooling"}"#];
        if normalize {
            list.push(r#"{"idx":2,"name":"2","path":"2_Normalize","type":"sentence_transformers.models.Normalize"}"#);
        }
        format!("[{}]", list.join(","))
    };
    assert_eq!(read(None, None, None).unwrap(), SentenceSetup { pooling: Pooling::Mean, normalize: true, prompt: String::new() });
    let cls = r#"{"word_embedding_dimension": 384, "pooling_mode_cls_token": true, "pooling_mode_mean_tokens": false}"#;
    assert_eq!(read(Some(&modules(false)), Some(cls), None).unwrap(), SentenceSetup { pooling: Pooling::Cls, normalize: false, prompt: String::new() });
    let prompts = r#"{"prompts": {"query": "query: ", "document": "passage: "}, "default_prompt_name": "query"}"#;
    assert_eq!(read(Some(&modules(true)), Some(r#"{"pooling_mode_max_tokens": true}"#), Some(prompts)).unwrap().prompt, "query: ");
    assert_eq!(engine::bert::companion_files(modules(true).as_bytes()).unwrap(), vec!["1_Pooling/config.json".to_owned()]);
    // What this encoder cannot do is an error, not skipped.
    assert!(read(Some(r#"[{"type": "sentence_transformers.models.Dense", "path": "2_Dense"}]"#), None, None).is_err());
    assert!(read(None, Some(r#"{"pooling_mode_mean_tokens": true, "pooling_mode_max_tokens": true}"#), None).is_err());
    assert!(read(None, Some(r#"{"word_embedding_dimension": 768, "pooling_mode_mean_tokens": true}"#), None).is_err());
    assert!(read(None, None, Some(r#"{"prompts": {}, "default_prompt_name": "query"}"#)).is_err());
    assert!(engine::bert::companion_files(br#"[{"type": "sentence_transformers.models.Pooling", "path": "../up"}]"#).is_err());
}

#[test]
fn r12_pooling_modes_and_prompts_change_the_vectors_as_configured() {
    let Some(models) = needed("MANTLE_MODELS") else { return };
    let dir = Path::new(&models).join("all-MiniLM-L6-v2");
    let scratch = tempfile_dir();
    let mean = Bert::load(&minilm(&dir)).unwrap();
    let text = "a cat sat on the mat";
    let ids = mean.tokenizer.encode(text);
    let base = mean.embed(&[&ids]).unwrap().remove(0);
    // CLS pooling without normalisation: the first token's vector as it is.
    let modules = scratch.join("modules.json");
    std::fs::write(&modules, r#"[{"type": "sentence_transformers.models.Transformer", "path": ""}, {"type": "sentence_transformers.models.Pooling", "path": "1_Pooling"}]"#).unwrap();
    let pooling = scratch.join("pooling.json");
    std::fs::write(&pooling, r#"{"word_embedding_dimension": 384, "pooling_mode_cls_token": true}"#).unwrap();
    let cls = Bert::load(&EmbedderConfig { modules: Some(modules.clone()), pooling: Some(pooling.clone()), ..minilm(&dir) }).unwrap();
    let first = cls.embed(&[&ids]).unwrap().remove(0);
    let norm = first.iter().map(|v| v * v).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() > 0.1, "not normalised: {norm}");
    assert!(first.iter().zip(&base).any(|(a, b)| (a - b).abs() > 1e-3));
    // A default prompt goes before every text.
    let st = scratch.join("st.json");
    std::fs::write(&st, r#"{"prompts": {"query": "query: "}, "default_prompt_name": "query"}"#).unwrap();
    let prompted = Bert::load(&EmbedderConfig { st_config: Some(st), ..minilm(&dir) }).unwrap();
    assert_eq!(prompted.tokenizer.encode(text), mean.tokenizer.encode(&format!("query: {text}")));
}

fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mantle-bert-{}-{}", std::process::id(), std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
