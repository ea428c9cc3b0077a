//! The BERT encoder on the real all-MiniLM-L6-v2 (models from `scripts/fetch-models.sh` in
//! `$MANTLE_MODELS`; skipped with a message otherwise): unit vectors whose similarities follow
//! meaning, and the same vector for a sentence alone or inside a batch.

use engine::bert::Bert;
use engine::Tokenizer as _;

mod common;
use common::needed;

#[test]
fn minilm_embeds_by_meaning_alone_and_batched() {
    let Some(models) = needed("MANTLE_MODELS") else { return };
    let dir = std::path::Path::new(&models).join("all-MiniLM-L6-v2");
    let bert = Bert::load(&dir.join("model.safetensors"), &dir.join("config.json"), &dir.join("tokenizer.json"), Some(&dir.join("sentence_bert_config.json")), 2).unwrap();
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
