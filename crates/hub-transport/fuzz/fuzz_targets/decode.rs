//! Feeds arbitrary bytes to the MQTT decoder: no input may panic, and whatever decodes must
//! re-encode to the same packet.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hub_transport::codec::fuzz_decode(data);
});
