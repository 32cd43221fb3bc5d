//! Arbitrary bytes as a policy file: the parser must return objects or an error, never panic or hang,
//! and whatever it accepts must validate or be rejected cleanly.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rhel_node_agent::core::mirrors::{merge, PolicySet, Style};

fuzz_target!(|data: &[u8]| {
    let mut set = PolicySet::default();
    if set.add_text("fuzz.yaml", data).is_ok() {
        for style in [Style::Current, Style::Legacy] {
            if merge::validate(&set, style).is_ok() {
                let _ = merge::merge(&set);
            }
        }
    }
});
