//! Drives the engine directly (no HTTP) with N concurrent generations, to profile the runner.
//! Usage: cargo run --release -p engine --features llama --example batch -- MODEL.gguf STREAMS REQUESTS
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = std::path::PathBuf::from(&args[1]);
    let streams: usize = args[2].parse().unwrap();
    let requests: usize = args[3].parse().unwrap();
    let config = engine::RunnerConfig { path, context: 1024, max_batch: 16, threads: 2, max_step_tokens: 512, derived_dir: "/tmp/derived".into(), expand_max_bytes: std::env::var("EXPAND_MAX").map(|v| v.parse().unwrap()).unwrap_or(0) };
    let runner = engine::load_runner(&config).unwrap();
    let engine = engine::Engine::start(runner, engine::EngineConfig { max_batch: 16, max_queue: 64, prefill_chunk: 256, max_step_tokens: 512 });
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let started = Instant::now();
        let queue = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..streams {
            let engine = engine.clone();
            let queue = queue.clone();
            tasks.push(tokio::spawn(async move {
                let mut out = Vec::new();
                loop {
                    let i = queue.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if i >= requests {
                        break;
                    }
                    let text = format!("<|im_start|>user\nRequest {i}: {}<|im_end|>\n<|im_start|>assistant\n", "summarize the field notes about birds and rivers and weather ".repeat(16));
                    let prompt = engine.tokenize(&text);
                    let t0 = Instant::now();
                    let mut first = None;
                    let request = engine::GenerateRequest { prompt, params: engine::SamplingParams { temperature: 0.0, ignore_eos: true, ..Default::default() }, max_tokens: 128, stop: vec![], logprobs: None, constraint: None, prompt_logprobs: None };
                    let mut generation = engine.generate(request).unwrap();
                    let mut done = 0;
                    while let Some(event) = generation.next().await {
                        match event {
                            engine::Event::Text(_) => {
                                first.get_or_insert(t0.elapsed());
                            }
                            engine::Event::Done { completion_tokens, .. } => {
                                done = completion_tokens;
                                break;
                            }
                            _ => {}
                        }
                    }
                    out.push((first.unwrap().as_secs_f64(), done));
                }
                out
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        let wall = started.elapsed().as_secs_f64();
        let tokens: usize = all.iter().map(|x| x.1).sum();
        let mut ttft: Vec<f64> = all.iter().map(|x| x.0).collect();
        ttft.sort_by(f64::total_cmp);
        println!("streams {streams} requests {requests}: {:.1} tok/s, wall {wall:.2}s, ttft p50 {:.2} max {:.2}", tokens as f64 / wall, ttft[ttft.len() / 2], ttft[ttft.len() - 1]);
    });
}
