//! Fuzzes the safetensors structure check.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = vet::safetensors::scan(&mut std::io::Cursor::new(data));
});
