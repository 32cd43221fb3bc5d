//! Arbitrary text as a configuration fragment: parsed and validated, or rejected with an error.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = rhel_node_agent::config::check_fragment("fuzz.toml", text);
    }
});
