//! Deleting manifests (`strata rm docker://…`, like `skopeo delete`).

use reqwest::{Method, StatusCode};
use strata_spec::{Digest, Reference};

use crate::client::{Request, error_from};
use crate::source::manifest_url;
use crate::{Client, RegistryError};

impl Client {
    /// Delete the manifest `reference` names from its repository and return its digest. A tag
    /// is first resolved to its digest with `HEAD` (the distribution API deletes manifests by
    /// digest only), so every tag pointing at that manifest goes with it, as with `skopeo
    /// delete`. The blobs stay until the registry's own garbage collection.
    ///
    /// Errors: [`RegistryError::NotFound`] when there is no such manifest,
    /// [`RegistryError::DeleteDisabled`] when the registry answers 405 (deletion is switched
    /// off in its configuration), [`RegistryError::Unauthorized`] / [`RegistryError::Denied`]
    /// when the credentials do not allow it.
    pub async fn delete_manifest(&self, reference: &Reference) -> Result<Digest, RegistryError> {
        let source = self.source(reference).await?;
        let host = self.inner.host(reference.registry()).await?;
        let repository = reference.repository();
        let digest = match reference.digest() {
            Some(d) => d.clone(),
            None => match source.head_manifest(None).await? {
                Some(descriptor) => descriptor.digest,
                None => {
                    return Err(RegistryError::NotFound {
                        host: host.host_port(),
                        what: format!("manifest {repository}:{}", reference.selector()),
                    });
                }
            },
        };
        let what = format!("deleting manifest {repository}@{digest}");
        let url = manifest_url(&host, repository, &digest.to_string())?;
        // containers/image asks for every action ("*"): registries such as Harbor want more
        // than a `delete` scope; a 401 challenge adds whatever else the registry names.
        let scopes = vec![format!("repository:{repository}:*")];
        let answer = self
            .inner
            .send(
                &host,
                Request::new(Method::DELETE, url, scopes, what.clone()),
            )
            .await?;
        let status = answer.response.status();
        if status.is_success() {
            return Ok(digest);
        }
        if status == StatusCode::METHOD_NOT_ALLOWED {
            return Err(RegistryError::DeleteDisabled {
                registry: host.host_port(),
                repository: repository.to_string(),
            });
        }
        Err(error_from(answer, &host.host_port(), &what, 1).await)
    }
}
