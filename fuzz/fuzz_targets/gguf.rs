//! Fuzzes the GGUF parser and the chat-template checks it runs.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = vet::gguf::scan(&mut std::io::Cursor::new(data));
});
