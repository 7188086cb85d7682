//! `Manifest::parse` on arbitrary text: never panics, and what parses is valid.
#![no_main]

use libfuzzer_sys::fuzz_target;
use par_package::manifest::{Manifest, RUNTIMES};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(m) = Manifest::parse(text, "agent.yaml") {
        assert!(m.name.starts_with(|c: char| c.is_ascii_lowercase()));
        assert!(RUNTIMES.contains(&m.runtime.as_str()));
        assert!(text.len() <= par_package::manifest::limits::MAX_MANIFEST_BYTES);
        let _ = m.package_id();
        let _ = m.surfaces();
    }
});
