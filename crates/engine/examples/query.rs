//! Times one short query through the BERT encoder, as a search embeds it (no HTTP), to profile
//! single-query latency, and batches of 32 sentences, as ingestion embeds them. Usage:
//! cargo run --release -p engine --example query -- MODEL_DIR [THREADS] [ROUNDS]
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(&args[1]);
    let threads: u32 = args.get(2).map_or(2, |t| t.parse().unwrap());
    let rounds: usize = args.get(3).map_or(200, |r| r.parse().unwrap());
    let config = engine::EmbedderConfig {
        weights: dir.join("model.safetensors"),
        config: dir.join("config.json"),
        tokenizer: dir.join("tokenizer.json"),
        sentence_config: Some(dir.join("sentence_bert_config.json")),
        modules: Some(dir.join("modules.json")),
        pooling: Some(dir.join("1_Pooling/config.json")),
        st_config: Some(dir.join("config_sentence_transformers.json")),
        threads,
        precision: engine::Precision::Auto,
    };
    // PRECISION=f32 times the f32 encoder; the default is the fastest this CPU has.
    let precision = if std::env::var("PRECISION").is_ok_and(|p| p == "f32") { engine::Precision::F32 } else { engine::Precision::Auto };
    let bert = engine::bert::Bert::load(&engine::EmbedderConfig { precision, ..config.clone() }).unwrap();
    println!("backend {}", engine::EmbedRunner::backend(&bert));
    let queries = ["Why does a cat purr?", "stock prices and bond yields", "0-dimensional biomaterials show inductive properties.", "magma and lava"];
    for query in queries {
        let tokens = engine::Tokenizer::encode(bert.tokenizer.as_ref(), query);
        let mut times: Vec<f64> = (0..rounds)
            .map(|_| {
                let t0 = Instant::now();
                std::hint::black_box(bert.embed(&[&tokens]).unwrap());
                t0.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        times.sort_by(f64::total_cmp);
        println!("{:>3} tokens  p50 {:6.2} ms  p99 {:6.2} ms  ({query})", tokens.len(), times[rounds / 2], times[rounds * 99 / 100]);
    }
    let sentence = "The river carried quiet boats past the market while people measured the water and wrote a report about energy policy today.";
    // REPEAT=8 makes each sentence about 200 tokens, as ingested chunks are.
    let repeat: usize = std::env::var("REPEAT").map_or(1, |r| r.parse().unwrap());
    let batch: Vec<Vec<u32>> = (0..32).map(|i| engine::Tokenizer::encode(bert.tokenizer.as_ref(), &format!("{} {i}", sentence.repeat(repeat)))).collect();
    let refs: Vec<&[u32]> = batch.iter().map(Vec::as_slice).collect();
    let tokens: usize = batch.iter().map(Vec::len).sum();
    let rounds = std::env::var("BATCH_ROUNDS").map_or((rounds / 10).max(3), |r| r.parse().unwrap());
    let t0 = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(bert.embed(&refs).unwrap());
    }
    let seconds = t0.elapsed().as_secs_f64();
    println!("batch of 32 ({tokens} tokens): {:.1} sentences/s, {:.0} tokens/s", 32.0 * rounds as f64 / seconds, (tokens * rounds) as f64 / seconds);
    // The lowest cosine between these vectors and the f32 encoder's, over the batch and queries.
    let exact = engine::bert::Bert::load(&engine::EmbedderConfig { precision: engine::Precision::F32, ..config }).unwrap();
    let mut inputs = refs.clone();
    let query_tokens: Vec<Vec<u32>> = queries.iter().map(|q| engine::Tokenizer::encode(bert.tokenizer.as_ref(), q)).collect();
    inputs.extend(query_tokens.iter().map(Vec::as_slice));
    let (ours, theirs) = (bert.embed(&inputs).unwrap(), exact.embed(&inputs).unwrap());
    let cosine = ours.iter().zip(&theirs).map(|(a, b)| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>()).fold(1.0f32, f32::min);
    println!("lowest cosine to the f32 encoder: {cosine:.6}");
}
