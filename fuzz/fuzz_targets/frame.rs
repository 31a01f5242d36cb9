//! Wire frames from a peer: the length prefix, then the bincode frame.
#![no_main]

use kp_protocol::frame::{decode_frame, decode_frame_with_id, encode_frame, DEFAULT_MAX_FRAME_BYTES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let plain = decode_frame(data, DEFAULT_MAX_FRAME_BYTES);
    let with_id = decode_frame_with_id(data, DEFAULT_MAX_FRAME_BYTES);
    if let Ok(Some((frame, used))) = plain {
        // Both readers agree, and a decoded frame survives a round trip.
        let Ok(Some((again, used_again, _))) = with_id else { panic!("the readers disagree") };
        assert_eq!(used, used_again);
        assert_eq!(format!("{frame:?}"), format!("{again:?}"));
        let mut out = Vec::new();
        encode_frame(&frame, DEFAULT_MAX_FRAME_BYTES, &mut out).expect("a decoded frame encodes");
        let (back, _) = decode_frame(&out, DEFAULT_MAX_FRAME_BYTES).expect("decodes").expect("whole");
        assert_eq!(format!("{frame:?}"), format!("{back:?}"));
    }
});
