//! Hashing memory stays bounded whatever the file size. In its own test binary so
//! the process's peak RSS reflects this test alone.

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

#[test]
fn hashing_a_1_gib_sparse_file_keeps_peak_rss_under_64_mib() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sparse.bin");
    let len: u64 = 1 << 30;
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(len).unwrap();
    drop(f);

    let ob = shoal_store::hash_file(&path, &|_| {}).unwrap();
    assert_eq!(ob.layout().len(), len);
    // The BLAKE3 of 1 GiB of zeros, as b3sum prints it.
    let mut hasher = blake3::Hasher::new();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..1024 {
        hasher.update(&zeros);
    }
    assert_eq!(ob.root(), hasher.finalize().into());

    let peak = peak_rss_kib();
    println!("peak RSS {peak} KiB");
    assert!(peak < 64 * 1024, "peak RSS {peak} KiB is over 64 MiB");
}
