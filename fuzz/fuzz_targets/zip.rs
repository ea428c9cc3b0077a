//! Fuzzes the zip, PyTorch-archive and npy scanners (with small limits, so bombs stay cheap).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let limits = vet::Limits { max_member_bytes: 1 << 20, max_archive_entries: 1000, max_compression_ratio: 200 };
    let _ = vet::archive::scan_zip(&mut std::io::Cursor::new(data), "fuzz.pt", &limits);
    let _ = vet::archive::scan_npy(&mut &data[..], None, &limits);
});
