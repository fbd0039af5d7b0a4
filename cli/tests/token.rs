//! `cafe token`: a token for a local caller verifies against the JWKS the command
//! leaves under the state dir; bad flags exit 2 and mint nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use cafe_producers::auth::token::Verifier;
use cafe_producers::auth::{Caller, Role};
use common::Sandbox;

#[test]
fn a_token_verifies_against_the_local_jwks_and_bad_flags_exit_2() {
    let sandbox = Sandbox::new();
    let auth = sandbox.config().auth_dir();
    for args in [
        vec!["token", "--role", "staff", "--sub", "barista-9"],
        vec!["token", "--role", "admin", "--sub", "someone"],
        vec!["token", "--role", "customer", "--sub", ""],
        vec!["token", "--role", "customer", "--sub", "cust-1", "--valid", "0s"],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cafe"))
            .args(&args)
            .envs(sandbox.env())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty() && out.stdout.is_empty(), "{args:?}");
    }
    assert!(!auth.exists(), "a refused command creates no key");

    let mint = |args: &[&str]| {
        let out = sandbox.cafe(&[&["token"], args].concat());
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let staff = mint(&["--role", "staff", "--sub", "barista-9", "--store", "store-00001"]);
    let customer = mint(&["--role", "customer", "--sub", "cust-1", "--valid", "10m"]);
    let verifier = Verifier::local(&auth).unwrap();
    assert_eq!(
        verifier.verify(&staff).unwrap(),
        Caller {
            subject: "barista-9".into(),
            role: Role::Staff {
                store: "store-00001".into()
            }
        }
    );
    // Minted after the first, with the key kept from it: the same JWKS verifies both.
    assert_eq!(
        verifier.verify(&customer).unwrap(),
        Caller {
            subject: "cust-1".into(),
            role: Role::Customer
        }
    );
}
