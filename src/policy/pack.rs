//! Policy packs: ready-made lists of `[[policies]]`. The shipped ones are
//! built into the binary; a pack can also be any TOML file of the same
//! shape.

use serde::Deserialize;

use super::{PolicyDef, PolicyError};

/// The shipped packs, by name.
pub const PACK_NAMES: &[&str] = &["pci", "pii-basic", "secrets"];

const SHIPPED: &[(&str, &str)] = &[
    ("pci", include_str!("../../config/policy-packs/pci.toml")),
    (
        "pii-basic",
        include_str!("../../config/policy-packs/pii-basic.toml"),
    ),
    (
        "secrets",
        include_str!("../../config/policy-packs/secrets.toml"),
    ),
];

/// A pack file: only `[[policies]]` tables.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PackFile {
    #[serde(default)]
    policies: Vec<PolicyDef>,
}

/// The policies of a shipped pack (`pci`, `pii-basic`, `secrets`) or of the
/// TOML file at `name_or_path`. A shipped name wins over a file of the same
/// name; write `./pci` for a local file. Errors are keyed `policy_packs`
/// and name the pack; the caller may re-key them (`policy_packs[1]`).
pub fn load_pack(name_or_path: &str) -> Result<Vec<PolicyDef>, PolicyError> {
    let err = |message: String| PolicyError {
        key: "policy_packs".into(),
        message,
    };
    let (label, text) = match SHIPPED.iter().find(|(n, _)| *n == name_or_path) {
        Some((name, text)) => (format!("shipped pack {name:?}"), (*text).to_owned()),
        None => {
            let text = std::fs::read_to_string(name_or_path).map_err(|e| {
                err(format!(
                    "{name_or_path:?} is neither a shipped pack ({}) nor a readable file: {e}",
                    PACK_NAMES.join(", ")
                ))
            })?;
            (format!("pack file {name_or_path:?}"), text)
        }
    };
    let pack: PackFile =
        toml::from_str(&text).map_err(|e| err(format!("{label} is not a valid pack: {e}")))?;
    if pack.policies.is_empty() {
        return Err(err(format!("{label} holds no [[policies]]")));
    }
    Ok(pack.policies)
}
