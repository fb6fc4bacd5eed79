//! What the density bench's orchestrator, client processes and hub server agree on without
//! sharing a file: device ids and access keys derived from the run's seed.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// The MQTT user name of the per-process publisher in message mode: the hub's convention for an
/// app, whose password is then a bearer token (Mosquitto just has a user of that name).
pub const PUBLISHER_USER: &str = "oauth2";

/// The tenant and group the bench's devices are registered in on the hub.
pub const GROUP: &str = "bench/fleet";

/// The id of device `i`.
pub fn device_id(i: usize) -> String {
    format!("dev-{i:06}")
}

/// The device index in a device id made by [`device_id`].
pub fn device_index(id: &str) -> Option<usize> {
    id.strip_prefix("dev-")?.parse().ok()
}

/// The access key of device `i` in the hub's form `hk_<key id>_<secret>`: a 256-bit secret derived
/// from the run's seed.
pub fn access_key(seed: &str, i: usize) -> String {
    let secret = Sha256::new()
        .chain_update(seed.as_bytes())
        .chain_update(b"/device/")
        .chain_update(i.to_be_bytes())
        .finalize();
    format!("hk_k{i:06}_{}", URL_SAFE_NO_PAD.encode(secret))
}

/// The password (on the hub: the bearer token) of the message-mode publisher.
pub fn publisher_password(seed: &str) -> String {
    let secret = Sha256::new()
        .chain_update(seed.as_bytes())
        .chain_update(b"/publisher")
        .finalize();
    URL_SAFE_NO_PAD.encode(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_keys_have_the_hub_form_and_differ_per_device_and_run() {
        let key = access_key("seed", 7);
        let rest = key
            .strip_prefix("hk_k000007_")
            .expect("the hk_<key id>_ form");
        // 256 bits in base64url without padding.
        assert_eq!(URL_SAFE_NO_PAD.decode(rest).unwrap().len(), 32);
        assert_eq!(key, access_key("seed", 7));
        assert_ne!(key, access_key("seed", 8));
        assert_ne!(key, access_key("other", 7));
        assert_ne!(publisher_password("seed"), publisher_password("other"));
    }

    #[test]
    fn device_ids_map_back_to_their_index() {
        assert_eq!(device_id(7), "dev-000007");
        assert_eq!(device_index(&device_id(123_456)), Some(123_456));
        assert_eq!(device_index("pump-7"), None);
        assert!(device_id(7).parse::<hub_core::DeviceId>().is_ok());
    }
}
