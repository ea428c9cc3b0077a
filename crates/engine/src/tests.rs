//! Engine behaviour on the mock runner.

use std::time::Duration;

use crate::mock::{ByteTokenizer, MockRunner};
use crate::{Engine, EngineConfig, Event, FinishReason, GenerateRequest, InferError, SamplingParams, Tokenizer as _};

fn engine(max_batch: usize, max_queue: usize) -> (Engine, std::sync::Arc<std::sync::Mutex<Vec<usize>>>) {
    let runner = MockRunner::new(4096);
    let steps = runner.steps.clone();
    (Engine::start(Box::new(runner), EngineConfig { max_batch, max_queue, prefill_chunk: 64, max_step_tokens: 128 }), steps)
}

fn request(prompt: &str, max_tokens: usize, params: SamplingParams) -> GenerateRequest {
    GenerateRequest { prompt: ByteTokenizer.encode(prompt), params, max_tokens, stop: Vec::new(), logprobs: None, constraint: None, prompt_logprobs: None }
}

async fn collect(mut generation: crate::Generation) -> (String, Event) {
    let mut text = String::new();
    while let Some(event) = generation.next().await {
        match event {
            Event::Text(piece) => text.push_str(&piece),
            Event::Logprobs(_) => {}
            done => return (text, done),
        }
    }
    panic!("stream ended without Done");
}

#[tokio::test]
async fn seeded_output_is_the_same_alone_and_in_a_batch() {
    let (engine, steps) = engine(16, 16);
    let params = SamplingParams { temperature: 0.9, seed: Some(42), ..Default::default() };
    let alone = collect(engine.generate(request("hello there", 48, params.clone())).unwrap()).await;
    let streams: Vec<_> = (0..16).map(|i| engine.generate(request(if i == 5 { "hello there" } else { "another prompt" }, 48, if i == 5 { params.clone() } else { SamplingParams::default() })).unwrap()).collect();
    let mut results = Vec::new();
    for stream in streams {
        results.push(collect(stream).await);
    }
    assert_eq!(results[5], alone);
    assert!(steps.lock().unwrap().iter().any(|n| *n > 1), "requests were batched together");
    for (_, done) in &results {
        assert!(matches!(done, Event::Done { completion_tokens, .. } if *completion_tokens <= 48));
    }
}

#[tokio::test]
async fn a_full_queue_answers_overloaded_and_a_dropped_stream_frees_capacity() {
    let (engine, _) = engine(1, 1);
    let long = SamplingParams { temperature: 0.0, ..Default::default() };
    let first = engine.generate(request("a", 2000, long.clone())).unwrap();
    let second = engine.generate(request("b", 2000, long.clone())).unwrap();
    assert!(matches!(engine.generate(request("c", 5, long.clone())), Err(InferError::Overloaded)));
    drop(first);
    drop(second);
    // Capacity comes back as soon as the streams are dropped; the runner frees the slot on its next round.
    let mut next = None;
    for _ in 0..500 {
        match engine.generate(request("c", 5, long.clone())) {
            Ok(generation) => {
                next = Some(generation);
                break;
            }
            Err(InferError::Overloaded) => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(other) => panic!("{other}"),
        }
    }
    let (_, done) = collect(next.expect("capacity came back")).await;
    assert!(matches!(done, Event::Done { .. }));
}

#[tokio::test]
async fn stops_lengths_and_bad_requests() {
    let (engine, _) = engine(4, 4);
    let greedy = SamplingParams { temperature: 0.0, ..Default::default() };
    let (full, _) = collect(engine.generate(request("stop test", 30, greedy.clone())).unwrap()).await;
    let cut = full.chars().nth(5).unwrap().to_string();
    let mut with_stop = request("stop test", 30, greedy.clone());
    with_stop.stop = vec![cut.clone()];
    let (text, done) = collect(engine.generate(with_stop).unwrap()).await;
    assert!(!text.contains(&cut) && full.starts_with(&text), "{full:?} / {text:?}");
    assert!(matches!(done, Event::Done { finish_reason: FinishReason::Stop, .. }));
    let (_, done) = collect(engine.generate(request("x", 3, greedy.clone())).unwrap()).await;
    assert!(matches!(done, Event::Done { finish_reason: FinishReason::Length, completion_tokens: 3, prompt_tokens: 1 }));
    assert!(matches!(engine.generate(request("", 3, greedy.clone())), Err(InferError::Invalid(_))));
    assert!(matches!(engine.generate(request("x", 5000, greedy)), Err(InferError::Invalid(_))));
}

#[tokio::test]
async fn long_prompts_prefill_in_chunks_without_stalling_others() {
    let (engine, steps) = engine(4, 4);
    let greedy = SamplingParams { temperature: 0.0, ..Default::default() };
    let running = engine.generate(request("short", 40, greedy.clone())).unwrap();
    let long_prompt = "word ".repeat(400);
    let long = engine.generate(request(&long_prompt, 5, greedy)).unwrap();
    let ((short_text, _), (_, long_done)) = tokio::join!(collect(running), collect(long));
    assert!(!short_text.is_empty());
    assert!(matches!(long_done, Event::Done { prompt_tokens: 2000, .. }));
    // 2000 prompt tokens at 64 per step: at least 32 steps, shared with the running stream.
    assert!(steps.lock().unwrap().len() >= 32);
}

#[tokio::test]
async fn ignore_eos_runs_to_max_tokens() {
    let (engine, _) = engine(2, 2);
    // The mock's end token wins after a few hundred tokens of greedy decoding.
    let greedy = SamplingParams { temperature: 0.0, ..Default::default() };
    let (_, done) = collect(engine.generate(request("x", 600, greedy.clone())).unwrap()).await;
    assert!(matches!(done, Event::Done { finish_reason: FinishReason::Stop, .. }), "{done:?}");
    let (text, done) = collect(engine.generate(request("x", 600, SamplingParams { ignore_eos: true, ..greedy })).unwrap()).await;
    assert_eq!(done, Event::Done { finish_reason: FinishReason::Length, prompt_tokens: 1, completion_tokens: 600 });
    assert_eq!(text.len(), 600);
}

#[tokio::test]
async fn no_part_of_a_stop_sequence_is_ever_sent() {
    let (engine, _) = engine(2, 2);
    let greedy = SamplingParams { temperature: 0.0, ..Default::default() };
    let (full, _) = collect(engine.generate(request("stop test", 40, greedy.clone())).unwrap()).await;
    // A three-byte stop taken from the middle of the output arrives over three tokens (pieces).
    let stop = full[10..13].to_owned();
    let mut with_stop = request("stop test", 40, greedy.clone());
    with_stop.stop = vec![stop.clone(), "never-seen".into()];
    let mut generation = engine.generate(with_stop).unwrap();
    let mut pieces = Vec::new();
    while let Some(event) = generation.next().await {
        match event {
            Event::Text(piece) => pieces.push(piece),
            Event::Done { finish_reason, .. } => {
                assert_eq!(finish_reason, FinishReason::Stop);
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    let text: String = pieces.concat();
    assert_eq!(text, full[..full.find(&stop).unwrap()], "{pieces:?}");
    // A stop prefix that turns out not to be one is sent in the end, also at the length limit.
    let mut partial = request("stop test", 12, greedy);
    partial.stop = vec![format!("{}\u{1}", &full[11..12])];
    let (text, _) = collect(engine.generate(partial).unwrap()).await;
    assert_eq!(text, full[..12]);
}

#[tokio::test]
async fn logprobs_cover_each_sampled_token() {
    let (engine, _) = engine(2, 2);
    let mut asked = request("hello", 6, SamplingParams { temperature: 0.0, ..Default::default() });
    asked.logprobs = Some(3);
    let mut generation = engine.generate(asked).unwrap();
    let (mut text, mut entries) = (String::new(), Vec::new());
    while let Some(event) = generation.next().await {
        match event {
            Event::Text(piece) => text.push_str(&piece),
            Event::Logprobs(list) => entries.extend(list),
            Event::Done { .. } => break,
            Event::Failed(err) => panic!("{err}"),
            Event::PromptLogprobs { .. } => panic!("the prompt was not asked for"),
        }
    }
    assert_eq!(entries.len(), 6);
    let bytes: Vec<u8> = entries.iter().flat_map(|e| e.bytes.clone()).collect();
    assert_eq!(bytes, text.as_bytes());
    for entry in &entries {
        assert_eq!(entry.top.len(), 3);
        // Greedy picks the likeliest token, so it heads the alternatives; log probabilities are <= 0 and sorted.
        assert_eq!(entry.top[0].token, entry.token);
        assert!((entry.top[0].logprob - entry.logprob).abs() < 1e-6);
        assert!(entry.top.windows(2).all(|w| w[0].logprob >= w[1].logprob) && entry.logprob <= 0.0);
    }
}

/// The prompt's scores and everything after them, from a request that asked for them.
async fn scored(engine: &Engine, prompt: &str, max_tokens: usize) -> (Vec<u8>, Vec<crate::TokenLogprob>, Vec<crate::TokenLogprob>, Event) {
    let mut asked = request(prompt, max_tokens, SamplingParams { temperature: 0.0, seed: Some(1), ..Default::default() });
    asked.logprobs = Some(2);
    asked.prompt_logprobs = Some(2);
    let mut generation = engine.generate(asked).unwrap();
    let (mut first, mut prompt_scores, mut generated) = (None, Vec::new(), Vec::new());
    loop {
        match generation.next().await.unwrap() {
            Event::PromptLogprobs { first: bytes, scored } => {
                assert!(first.is_none() && generated.is_empty(), "one prompt event, before anything generated");
                first = Some(bytes);
                prompt_scores = scored;
            }
            Event::Logprobs(list) => generated.extend(list),
            Event::Text(_) => {}
            end => return (first.expect("the prompt was scored"), prompt_scores, generated, end),
        }
    }
}

#[tokio::test]
async fn a_scored_prompt_gets_every_tokens_logprob_across_prefill_chunks() {
    let (engine, _) = engine(2, 2);
    // 150 bytes: three prefill chunks of 64.
    let prompt: String = "the quick brown fox jumps over the lazy dog ".repeat(4)[..150].to_owned();
    for _ in 0..2 {
        // The second time, the slot caches the prompt: scoring must not take the cached prefix.
        let (first, scores, generated, end) = scored(&engine, &prompt, 1).await;
        assert_eq!(first, prompt.as_bytes()[..1]);
        assert_eq!(scores.len(), prompt.len() - 1);
        let tokens = ByteTokenizer.encode(&prompt);
        for (i, entry) in scores.iter().enumerate() {
            assert_eq!(entry.token, tokens[i + 1]);
            let logits = crate::mock::logits_after(&tokens[..=i]);
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let norm = max + logits.iter().map(|l| (l - max).exp()).sum::<f32>().ln();
            assert!((entry.logprob - (logits[tokens[i + 1] as usize] - norm)).abs() < 1e-5, "token {i}");
            assert_eq!(entry.top.len(), 2);
        }
        assert_eq!(generated.len(), 1);
        assert!(matches!(end, Event::Done { completion_tokens: 1, prompt_tokens: 150, .. }), "{end:?}");
    }
}

#[tokio::test]
async fn max_tokens_zero_scores_the_prompt_only_and_an_end_token_is_reported_when_scoring() {
    let (engine, _) = engine(2, 2);
    let (_, scores, generated, end) = scored(&engine, "hello there", 0).await;
    assert_eq!((scores.len(), generated.len()), (10, 0));
    assert_eq!(end, Event::Done { finish_reason: crate::FinishReason::Length, prompt_tokens: 11, completion_tokens: 0 });
    // The mock's `[[say:]]` hook ends at once after `assistant\n`: the end token is the one generated.
    let (_, _, generated, end) = scored(&engine, "[[say:]] assistant\n", 1).await;
    assert_eq!(generated.iter().map(|e| e.token).collect::<Vec<_>>(), [crate::mock::EOS]);
    assert!(matches!(end, Event::Done { finish_reason: crate::FinishReason::Stop, completion_tokens: 1, .. }), "{end:?}");
}

#[tokio::test]
async fn the_runner_is_dropped_when_the_last_handle_goes() {
    let (engine, steps) = engine(2, 2);
    let generation = engine.generate(request("bye", 4, SamplingParams::default())).unwrap();
    let clone = engine.clone();
    drop(engine);
    // A live handle and a running request keep the runner; then it ends and frees the model.
    collect(generation).await;
    assert!(std::sync::Arc::strong_count(&steps) > 1);
    drop(clone);
    for _ in 0..200 {
        if std::sync::Arc::strong_count(&steps) == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the runner thread kept its runner after every handle was dropped");
}

#[tokio::test]
async fn a_burst_of_long_prompts_prefills_within_the_step_budget() {
    let runner = MockRunner::new(4096);
    let tokens = runner.step_tokens.clone();
    let engine = Engine::start(Box::new(runner), EngineConfig { max_batch: 8, max_queue: 8, prefill_chunk: 64, max_step_tokens: 100 });
    let greedy = SamplingParams { temperature: 0.0, ..Default::default() };
    let first = engine.generate(request("short", 40, greedy.clone())).unwrap();
    let burst: Vec<_> = (0..6).map(|i| engine.generate(request(&format!("{i}{}", "long prompt ".repeat(30)), 4, greedy.clone())).unwrap()).collect();
    collect(first).await;
    for generation in burst {
        collect(generation).await;
    }
    // At most 100 tokens per step, decoding ones included.
    let steps = tokens.lock().unwrap().clone();
    assert!(steps.iter().all(|n| *n <= 100), "{steps:?}");
    assert!(steps.iter().any(|n| *n > 64), "the budget is shared between prompts: {steps:?}");
}

#[tokio::test]
async fn sequences_keep_their_batch_order_when_others_finish() {
    let runner = MockRunner::new(4096);
    let slots = runner.step_slots.clone();
    let engine = Engine::start(Box::new(runner), EngineConfig { max_batch: 6, max_queue: 6, prefill_chunk: 64, max_step_tokens: 512 });
    let greedy = SamplingParams { temperature: 0.0, ignore_eos: true, ..Default::default() };
    let generations: Vec<_> = [30, 5, 20, 10, 25, 15].iter().enumerate().map(|(i, n)| engine.generate(request(&format!("p{i}"), *n, greedy.clone())).unwrap()).collect();
    for generation in generations {
        collect(generation).await;
    }
    // Whatever finished, the sequences still running keep their relative order (llama.cpp then
    // reuses its compute graph).
    let steps = slots.lock().unwrap().clone();
    for pair in steps.windows(2) {
        let kept: Vec<usize> = pair[0].iter().copied().filter(|s| pair[1].contains(s)).collect();
        let next: Vec<usize> = pair[1].iter().copied().filter(|s| pair[0].contains(s)).collect();
        assert_eq!(kept, next, "{pair:?}");
    }
    assert!(steps.iter().any(|s| s.len() == 6) && steps.iter().any(|s| s.len() < 6));
}

#[tokio::test]
async fn a_shared_prompt_prefix_is_not_prefilled_again() {
    let runner = MockRunner::new(4096);
    let tokens = runner.step_tokens.clone();
    let engine = Engine::start(Box::new(runner), EngineConfig { max_batch: 2, max_queue: 2, prefill_chunk: 64, max_step_tokens: 512 });
    let greedy = SamplingParams { temperature: 0.0, ignore_eos: true, ..Default::default() };
    let system = "You are a helpful assistant. Answer briefly and kindly. ";
    let first = collect(engine.generate(request(&format!("{system}Question one?"), 5, greedy.clone())).unwrap()).await;
    let steps_before = tokens.lock().unwrap().len();
    // The same prompt again: everything but its last token comes from the slot's cache, and the
    // answer is the same as when it was computed from scratch.
    let again = collect(engine.generate(request(&format!("{system}Question one?"), 5, greedy.clone())).unwrap()).await;
    assert_eq!(again, first);
    assert_eq!(tokens.lock().unwrap()[steps_before], 1, "only the last prompt token is fed");
    // A prompt sharing the system text feeds only what differs.
    let steps_before = tokens.lock().unwrap().len();
    let other = format!("{system}Another one?");
    let fresh = {
        let reference = Engine::start(Box::new(MockRunner::new(4096)), EngineConfig { max_batch: 2, max_queue: 2, prefill_chunk: 64, max_step_tokens: 512 });
        collect(reference.generate(request(&other, 5, greedy.clone())).unwrap()).await
    };
    let reused = collect(engine.generate(request(&other, 5, greedy)).unwrap()).await;
    assert_eq!(reused, fresh);
    assert_eq!(tokens.lock().unwrap()[steps_before], other.len() - system.len());
}

#[tokio::test]
async fn a_seeded_request_prefills_its_whole_prompt() {
    let runner = MockRunner::new(4096);
    let tokens = runner.step_tokens.clone();
    let engine = Engine::start(Box::new(runner), EngineConfig { max_batch: 2, max_queue: 2, prefill_chunk: 64, max_step_tokens: 512 });
    let prompt = "You are a helpful assistant. Question one?";
    let seeded = SamplingParams { temperature: 0.9, seed: Some(7), ignore_eos: true, ..Default::default() };
    let first = collect(engine.generate(request(prompt, 5, seeded.clone())).unwrap()).await;
    let steps_before = tokens.lock().unwrap().len();
    let again = collect(engine.generate(request(prompt, 5, seeded)).unwrap()).await;
    assert_eq!(again, first);
    assert_eq!(tokens.lock().unwrap()[steps_before], prompt.len(), "the whole prompt is fed again");
}

#[tokio::test]
async fn grammars_constrain_the_mock_and_end_when_complete() {
    let (engine, _) = engine(4, 4);
    let schema = serde_json::json!({"type": "object", "properties": {"word": {"type": "string", "maxLength": 8}, "n": {"type": "integer"}, "tags": {"type": "array", "items": {"enum": ["x", "y"]}, "maxItems": 2}}, "required": ["word", "n", "tags"], "additionalProperties": false});
    let grammar = crate::grammar::Grammar::from_schema(&schema).unwrap();
    let constraint = engine.constrain(&grammar).unwrap();
    for (seed, temperature) in [(None, 0.0), (Some(1), 1.0), (Some(2), 1.5)] {
        let mut req = request("json please", 1000, SamplingParams { temperature, seed, ..Default::default() });
        req.constraint = Some(constraint.clone());
        let (text, done) = collect(engine.generate(req).unwrap()).await;
        let value: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|err| panic!("{text:?}: {err}"));
        assert!(value["word"].as_str().is_some_and(|w| w.chars().count() <= 8), "{text}");
        // An integer, possibly written "-0" (valid JSON and a valid JSON Schema integer).
        assert!(value["n"].as_f64().is_some_and(|n| n.fract() == 0.0), "{text}");
        assert!(value["tags"].as_array().is_some_and(|t| t.len() <= 2 && t.iter().all(|x| x == "x" || x == "y")), "{text}");
        assert!(matches!(done, Event::Done { finish_reason: FinishReason::Stop, .. }), "{done:?}");
    }
}

#[tokio::test]
async fn r11_stop_sequences_of_any_unicode_text_work() {
    let (engine, _) = engine(4, 4);
    let greedy = SamplingParams { temperature: 0.0, ..Default::default() };
    let said = |stop: &[&str]| {
        let mut asked = request("[[say:ab。cd 😀 ef]]assistant\n", 40, greedy.clone());
        asked.stop = stop.iter().map(|s| (*s).to_owned()).collect();
        engine.generate(asked).unwrap()
    };
    // A stop that never matches, one that matches, one that starts like the text and then differs.
    assert_eq!(collect(said(&["。x"])).await, ("ab。cd 😀 ef".to_owned(), Event::Done { finish_reason: FinishReason::Stop, prompt_tokens: 33, completion_tokens: 15 }));
    assert_eq!(collect(said(&["。"])).await.0, "ab");
    assert_eq!(collect(said(&["😀", "é"])).await.0, "ab。cd ");
    assert_eq!(collect(said(&["d 😀 e"])).await.0, "ab。c");
    // The engine still serves after all of them.
    assert!(matches!(collect(said(&[])).await.1, Event::Done { .. }));
}

#[test]
fn partial_stops_end_at_character_boundaries() {
    assert_eq!(super::partial_stop_suffix("ab", "。"), 0);
    assert_eq!(super::partial_stop_suffix("ab。", "。c"), "。".len());
    assert_eq!(super::partial_stop_suffix("x😀", "😀😀"), "😀".len());
    assert_eq!(super::partial_stop_suffix("xa", "ab"), 1);
}

#[tokio::test]
async fn r11_a_runner_panic_fails_every_stream_and_marks_the_engine_failed() {
    let (engine, _) = engine(4, 4);
    let mut health = engine.watch_health();
    let bystander = engine.generate(request("a long answer", 2000, SamplingParams { ignore_eos: true, ..Default::default() })).unwrap();
    let crashing = engine.generate(request("please [[panic]]", 10, SamplingParams::default())).unwrap();
    let (_, end) = collect(crashing).await;
    assert!(matches!(end, Event::Failed(_)), "{end:?}");
    // The stream batched with it ends with an error, never a quiet end that reads as a stop.
    let (_, end) = collect(bystander).await;
    assert!(matches!(end, Event::Failed(_)), "{end:?}");
    health.wait_for(|h| matches!(h, crate::Health::Failed(_))).await.unwrap();
    assert!(matches!(engine.generate(request("after", 5, SamplingParams::default())), Err(InferError::Unavailable(_))));
}

#[tokio::test]
async fn r11_progress_counts_work_of_a_cancelled_request() {
    let (engine, _) = engine(2, 2);
    let mut generation = engine.generate(request("count me", 2000, SamplingParams { ignore_eos: true, ..Default::default() })).unwrap();
    let progress = generation.progress();
    let mut pieces = 0;
    while pieces < 5 {
        if let Some(Event::Text(_)) = generation.next().await {
            pieces += 1;
        }
    }
    drop(generation);
    assert_eq!(progress.prefilled(), 8);
    assert!(progress.generated() >= 5);
}
