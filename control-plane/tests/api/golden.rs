//! The control plane's signing path agrees byte for byte with the shared crate's golden vectors
//! (`shared/testdata/snapshot/`): a signing key stored the way the control plane stores it, loaded
//! through its keyring, signs the golden manifest into exactly `snapshot.json`, with the same
//! shards, key id and public key the edge is configured with.

use std::fs;
use std::path::PathBuf;

use keygate_control_plane::keyring::Keyring;
use keygate_shared::snapshot::{build_shards, verify_snapshot, Manifest, FORMAT_VERSION};
use keygate_shared::{KeyRecord, ProjectPolicy, SnapshotSigner, TrustedKeys};
use serde_json::Value;

fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata/snapshot")
}

#[test]
fn control_plane_signing_matches_the_golden_snapshot() {
    let dir = testdata();
    let input: Value = serde_json::from_slice(&fs::read(dir.join("input.json")).unwrap()).unwrap();
    let seed_hex = input["signing_key_seed_hex"].as_str().unwrap();
    let mut seed = [0u8; 32];
    hex::decode_to_slice(seed_hex, &mut seed).unwrap();
    let key_id = SnapshotSigner::from_seed(&seed).key_id().to_owned();

    // Store the key as the control plane does: <data>/signing-keys/<key_id>.key and `active`.
    let data = tempfile::tempdir().unwrap();
    let keys = data.path().join("signing-keys");
    fs::create_dir_all(&keys).unwrap();
    fs::write(keys.join(format!("{key_id}.key")), seed).unwrap();
    fs::write(keys.join("active"), &key_id).unwrap();
    let keyring = Keyring::load(data.path()).unwrap();
    let signer = keyring.active();

    let public: Value =
        serde_json::from_slice(&fs::read(dir.join("public_key.json")).unwrap()).unwrap();
    assert_eq!(signer.key_id(), public["key_id"].as_str().unwrap());
    assert_eq!(
        signer.public_key_base64url(),
        public["public_key"].as_str().unwrap()
    );
    let listed = keyring.public_keys(0);
    assert!(listed
        .iter()
        .any(|k| k.active && k.public_key == public["public_key"].as_str().unwrap()));

    let records: Vec<KeyRecord> = serde_json::from_value(input["records"].clone()).unwrap();
    let projects: Vec<ProjectPolicy> = serde_json::from_value(input["projects"].clone()).unwrap();
    let shard_bits = u8::try_from(input["shard_bits"].as_u64().unwrap()).unwrap();
    let built = build_shards(records, Some(shard_bits)).unwrap();
    let manifest = Manifest {
        format: FORMAT_VERSION,
        version: input["version"].as_u64().unwrap(),
        issued_at_ms: input["issued_at_ms"].as_i64().unwrap(),
        valid_until_ms: input["valid_until_ms"].as_i64().unwrap(),
        shard_bits: built.shard_bits,
        key_count: built.key_count,
        shard_digests: built.digests(),
        projects,
    };
    let wire = signer.sign(&manifest).unwrap();
    let golden = fs::read(dir.join("snapshot.json")).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&wire),
        String::from_utf8_lossy(&golden),
        "the control plane's signed snapshot drifted from the golden vector"
    );
    for shard in &built.shards {
        let path = dir
            .join("shards")
            .join(format!("{}.bin", shard.digest.to_hex()));
        assert_eq!(fs::read(&path).unwrap(), shard.bytes, "{}", path.display());
    }

    // And the edge side accepts it with the public key the control plane publishes.
    let trusted = TrustedKeys::from_base64url_list(&listed[0].public_key).unwrap();
    let verified = verify_snapshot(&wire, &trusted, None, manifest.issued_at_ms + 1).unwrap();
    assert_eq!(verified.version(), manifest.version);
}
