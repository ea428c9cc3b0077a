//! The scanners on real model files, fetched by `scripts/fetch-models.sh` into `$MANTLE_MODELS`
//! (skipped with a message when that is unset): no false alarms on ordinary checkpoints.

use std::path::PathBuf;

/// The real models' folder; without it the checks are skipped, except under CI (`CI` set),
/// where they must fail rather than pass unseen.
fn models() -> Option<PathBuf> {
    let dir = std::env::var("MANTLE_MODELS").ok();
    assert!(dir.is_some() || std::env::var_os("CI").is_none(), "MANTLE_MODELS is not set, and CI is: run scripts/fetch-models.sh");
    if dir.is_none() {
        eprintln!("MANTLE_MODELS not set: real-model checks skipped (run scripts/fetch-models.sh)");
    }
    dir.map(PathBuf::from)
}

#[test]
fn smollm2_gguf_is_safe_and_its_template_renders() {
    let Some(dir) = models() else { return };
    let path = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    let mut file = std::fs::File::open(&path).expect("fetched model");
    let report = vet::scan_file(path.to_str().unwrap(), &mut file, &vet::Limits::default()).unwrap();
    assert_eq!(report.format, vet::Format::Gguf);
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
    let chat = vet::gguf::chat_templates(&mut std::fs::File::open(&path).unwrap()).unwrap();
    let (key, source) = &chat.templates[0];
    assert_eq!(key, "tokenizer.chat_template");
    let rendered = vet::template::render_sample(source, &chat.bos_token, &chat.eos_token).unwrap();
    assert!(rendered.contains("<|im_start|>user\nWhat is the capital of France?<|im_end|>"), "{rendered}");
    assert!(rendered.ends_with("<|im_start|>assistant\n"), "{rendered}");
}

#[test]
fn minilm_safetensors_is_safe() {
    let Some(dir) = models() else { return };
    let path = dir.join("all-MiniLM-L6-v2/model.safetensors");
    let mut file = std::fs::File::open(&path).expect("fetched model");
    let report = vet::scan_file(path.to_str().unwrap(), &mut file, &vet::Limits::default()).unwrap();
    assert_eq!(report.format, vet::Format::Safetensors);
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
}
