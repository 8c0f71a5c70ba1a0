//! The tokens file of `tests/golden/tokens/v1/` (format version 1, docs/formats.md § 7) is
//! read by every later build: a server upgraded in place must keep letting the same tokens in
//! and keep refusing the revoked ones. Saving it again must give the same bytes, so an edit by
//! a newer `logsift tokens` leaves a file an older server still reads.

use std::path::PathBuf;

use logsift_identity::{Authenticator, Refusal, Role, Tokens, Who};

/// The tokens whose hashes the golden file holds (made up for it; they open nothing).
const LIVE: &str =
    "lsft_0a1b2c3d4e5f_5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e";
const REVOKED: &str =
    "lsft_a1b2c3d4e5f6_c0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ff";

fn golden() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden/tokens/v1/tokens.json")
}

#[test]
fn golden_v1_tokens_file_is_read_and_written_back_unchanged() {
    let path = golden();
    let bytes = std::fs::read(&path).expect("the golden tokens file is part of the repository");
    let tokens = Tokens::load(&path).unwrap();
    assert_eq!(tokens.tokens.len(), 2);
    let live = &tokens.tokens[0];
    assert_eq!(live.name, "ci-shipper");
    assert_eq!(live.roles, [Role::Ingest, Role::Search]);
    assert_eq!(
        live.indexes.as_deref(),
        Some(&["web".to_string(), "_audit".to_string()][..])
    );
    assert_eq!(live.ingest_bytes_per_sec, Some(1 << 20));
    assert!(!live.is_revoked());
    assert!(tokens.tokens[1].is_revoked());

    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("tokens.json");
    tokens.save(&copy).unwrap();
    assert_eq!(
        String::from_utf8(std::fs::read(&copy).unwrap()).unwrap(),
        String::from_utf8(bytes).unwrap()
    );
}

#[test]
fn golden_v1_tokens_authenticate() {
    let auth = Authenticator::open(golden()).unwrap();
    assert!(auth.enabled());
    let p = auth
        .authenticate(Some(&format!("Bearer {LIVE}")), None)
        .unwrap();
    assert_eq!(
        p.who,
        Who::Token {
            id: "0a1b2c3d4e5f".into(),
            name: "ci-shipper".into()
        }
    );
    assert!(p.may(Role::Ingest, "web"));
    assert!(p.may(Role::Search, "_audit"));
    assert!(!p.may(Role::Search, "db"));
    assert!(!p.has_role(Role::Export));
    assert_eq!(
        auth.authenticate(Some(&format!("Bearer {REVOKED}")), None)
            .unwrap_err(),
        Refusal::Revoked {
            id: "a1b2c3d4e5f6".into()
        }
    );
}
