//! Fuzzes the symbolic pickle machine: any bytes must give findings, never a panic or a hang.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = vet::pickle::scan_bytes(data);
});
