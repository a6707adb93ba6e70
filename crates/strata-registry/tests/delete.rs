//! `Client::delete_manifest` against the real distribution registry: by tag and by digest,
//! with Bearer token auth, and on a registry whose deletion is switched off.

mod common;

use common::*;
use strata_registry::{Client, CredentialSource, Credentials, RegistryError};
use strata_testkit::{TestRegistry, TokenServer, random_image};

const USER: &str = "bob";
const PASSWORD: &str = "del-Pa55";

fn with_creds() -> Client {
    let mut o = options();
    o.credentials = CredentialSource::Explicit(Credentials {
        username: USER.into(),
        password: PASSWORD.into(),
    });
    Client::new(o).unwrap()
}

#[tokio::test]
async fn delete_by_tag_resolves_the_digest_and_needs_delete_rights() {
    let tokens = TokenServer::start(&[(USER, PASSWORD)]).await;
    let server = TestRegistry::start_with_token_auth(&tokens);
    let host = server.host();
    let client = with_creds();
    let image = random_image(61, &[1500]);
    let r = reference(&host, "del/app:v1");
    push(&client.sink(&r).await.unwrap(), &image, "v1").await;

    // Without credentials the registry refuses, naming the registry.
    let anonymous = Client::new(options()).unwrap();
    let e = anonymous.delete_manifest(&r).await.unwrap_err();
    assert!(
        matches!(e, RegistryError::Unauthorized { ref registry, .. } if *registry == host),
        "{e}"
    );

    let digest = client.delete_manifest(&r).await.unwrap();
    assert_eq!(digest, image.digest());
    let source = client.source(&r).await.unwrap();
    assert!(source.head_manifest(Some(&digest)).await.unwrap().is_none());
    assert!(source.head_manifest(None).await.unwrap().is_none());
    assert!(
        tokens
            .requests()
            .iter()
            .any(|t| t.scopes.iter().any(|s| s == "repository:del/app:*")),
        "DELETE asks for every action, as containers/image does: {:#?}",
        tokens.requests()
    );
    // Gone: by tag and by digest it is NotFound.
    let e = client.delete_manifest(&r).await.unwrap_err();
    assert!(e.is_not_found(), "{e}");
    let by_digest = r.with_digest(digest.clone());
    let e = client.delete_manifest(&by_digest).await.unwrap_err();
    assert!(e.is_not_found(), "{e}");
    assert!(e.to_string().contains(&host), "{e}");
}

#[tokio::test]
async fn delete_on_a_registry_that_forbids_it_is_delete_disabled() {
    let registry = TestRegistry::start_with_delete_disabled();
    let client = client();
    let image = random_image(62, &[700]);
    let r = reference(&registry.host(), "keep/app:v1");
    push(&client.sink(&r).await.unwrap(), &image, "v1").await;
    let e = client.delete_manifest(&r).await.unwrap_err();
    match &e {
        RegistryError::DeleteDisabled {
            registry: host,
            repository,
        } => {
            assert_eq!(host, &registry.host());
            assert_eq!(repository, "keep/app");
        }
        other => panic!("expected DeleteDisabled, got {other:?}"),
    }
    assert_eq!(e.status(), Some(405));
    assert!(e.to_string().contains("storage.delete.enabled"), "{e}");
    // Still there.
    let source = client.source(&r).await.unwrap();
    assert!(source.head_manifest(None).await.unwrap().is_some());
}
