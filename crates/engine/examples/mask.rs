//! Time per grammar mask over a real model's vocabulary (llguidance, via `Engine::constrain`):
//! each schema's answer is fed token by token, a mask computed before every token.
//! Usage: cargo run --release -p engine --features llama --example mask -- MODEL.gguf
use std::time::{Duration, Instant};

use engine::grammar::Grammar;

fn main() {
    let path = std::path::PathBuf::from(std::env::args().nth(1).expect("MODEL.gguf"));
    let config = engine::RunnerConfig { path, context: 1024, max_batch: 1, threads: 2, max_step_tokens: 512, derived_dir: std::env::temp_dir().join("mantle-derived"), expand_max_bytes: 0 };
    let engine = engine::Engine::start(engine::load_runner(&config).expect("load the model"), engine::EngineConfig { max_batch: 1, max_queue: 1, prefill_chunk: 256, max_step_tokens: 512 });
    let rows: String = (0..20).map(|i| format!("{{\"id\": {i}, \"score\": {}.5, \"ok\": {}}}", i * 3, i % 2 == 0)).collect::<Vec<_>>().join(", ");
    let cases = [
        ("json_object", Grammar::json_object(), r#"{"name": "Ada Lovelace", "born": 1815, "fields": ["mathematics", "computing"], "notes": {"first": true}}"#.to_owned()),
        ("one long string", Grammar::from_schema(&serde_json::json!({"type": "object", "properties": {"title": {"type": "string", "maxLength": 60}, "story": {"type": "string", "minLength": 50}}, "required": ["title", "story"], "additionalProperties": false})).unwrap(), format!("{{\"title\": \"The Dragon\", \"story\": \"{}\"}}", "Once upon a time a dragon learned to read the old books in the library. ".repeat(6))),
        ("mostly structure", Grammar::from_schema(&serde_json::json!({"type": "object", "properties": {"rows": {"type": "array", "items": {"type": "object", "properties": {"id": {"type": "integer"}, "score": {"type": "number"}, "ok": {"type": "boolean"}}, "required": ["id", "score", "ok"], "additionalProperties": false}}}, "required": ["rows"], "additionalProperties": false})).unwrap(), format!("{{\"rows\": [{rows}]}}")),
    ];
    let started = Instant::now();
    engine.constrain(&Grammar::json_object()).expect("the vocabulary index builds");
    println!("vocabulary index (first constrained request): {:.1} ms", started.elapsed().as_secs_f64() * 1e3);
    println!("{:<18} {:>8} {:>10} {:>12} {:>12}", "schema", "tokens", "compile ms", "mean mask us", "p99 mask us");
    for (name, grammar, answer) in cases {
        let started = Instant::now();
        let mut constraint = engine.constrain(&grammar).expect("compiles");
        let compile = started.elapsed();
        let tokens = engine.tokenize_pieces(&[(answer.as_str(), true)]);
        let mut times: Vec<Duration> = Vec::new();
        for token in tokens {
            let started = Instant::now();
            let mask = constraint.mask().expect("a mask");
            times.push(started.elapsed());
            if !mask.allows(token) {
                continue; // a BOS the tokenizer adds
            }
            assert!(constraint.advance(token), "{name}: the answer leaves the grammar");
        }
        times.sort();
        let mean = times.iter().sum::<Duration>().as_secs_f64() / times.len() as f64;
        println!("{name:<18} {:>8} {:>10.2} {:>12.1} {:>12.1}", times.len(), compile.as_secs_f64() * 1e3, mean * 1e6, times[times.len() * 99 / 100].as_secs_f64() * 1e6);
    }
}
