//! The one naming scheme of problem types, for the control plane's API and the edge alike
//! (RFC 9457 `type`): `urn:keygate:problem:<code>`, where `<code>` is the stable `code` member of
//! the same body. A URN, because the project owns no domain to host pages under, and a client
//! should branch on `code` anyway (docs/edge.md and docs/control-plane.md list them).

/// The prefix of every problem `type`.
pub const PROBLEM_TYPE_PREFIX: &str = "urn:keygate:problem:";

/// The problem `type` of the stable code `code`.
pub fn problem_type(code: &str) -> String {
    let mut t = String::with_capacity(PROBLEM_TYPE_PREFIX.len() + code.len());
    t.push_str(PROBLEM_TYPE_PREFIX);
    t.push_str(code);
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_type_names_the_code() {
        assert_eq!(
            problem_type("revoked_key"),
            "urn:keygate:problem:revoked_key"
        );
    }
}
