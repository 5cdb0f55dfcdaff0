//! Decodes arbitrary bytes as a manifest. Whatever decodes must be canonical:
//! re-encoding gives back the very same bytes, and `Manifest::with_empty_folders`
//! accepts the same entries and empty folders and builds the same manifest. The check a download makes
//! before writing (names one file system would merge) never panics, and a
//! pair it reports are two different paths of the manifest or their folders.
#![no_main]
use libfuzzer_sys::fuzz_target;
use shoal_core::manifest::Manifest;

fuzz_target!(|data: &[u8]| {
    let Ok(manifest) = Manifest::decode(data) else {
        return;
    };
    let encoded = manifest.encode();
    assert_eq!(encoded, data, "decode accepted a non-canonical encoding");
    assert_eq!(manifest.encoded_len(), data.len());
    assert_eq!(Manifest::decode(&encoded).ok().as_ref(), Some(&manifest));
    assert_eq!(
        Manifest::with_empty_folders(
            manifest.entries().to_vec(),
            manifest.empty_folders().map(str::to_owned).collect(),
        )
        .ok()
        .as_ref(),
        Some(&manifest),
        "new and decode disagree"
    );
    if let Some((a, b)) = manifest.case_collision() {
        assert_ne!(a, b, "a path collides with itself");
    }
});
