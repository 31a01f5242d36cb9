//! The armored files that travel by e-mail and paper: signed certificates, participant
//! lists and QR seal texts.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = kp_protocol::portable::from_armored(&text);
    let _ = kp_protocol::registry::list_from_armored(&text);
    let _ = kp_protocol::seal::from_qr_text(&text);
});
