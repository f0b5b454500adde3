//! Prefixed, sortable ids: `prj_`, `key_`, `adm_`, `tok_`, `aud_` followed by a lowercase ULID,
//! so ids sort by creation time and cursors can be plain ids.

use std::sync::Mutex;

static GENERATOR: Mutex<Option<ulid::Generator>> = Mutex::new(None);

/// A new id with `prefix` (without the underscore).
pub fn new_id(prefix: &str) -> String {
    // A monotonic generator keeps ids made in the same millisecond in order.
    let ulid = match GENERATOR.lock() {
        Ok(mut g) => g
            .get_or_insert_with(ulid::Generator::new)
            .generate()
            .unwrap_or_else(|_| ulid::Ulid::new()),
        Err(_) => ulid::Ulid::new(),
    };
    format!("{prefix}_{}", ulid.to_string().to_ascii_lowercase())
}
