//! `strata tags REPOSITORY`

use anyhow::Context;
use strata_spec::Reference;

use crate::cli::{OutputFormat, TagsArgs};
use crate::open::Side;
use crate::output::{print_json, terminal_safe};

pub async fn run(a: TagsArgs) -> anyhow::Result<()> {
    let name = a
        .repository
        .strip_prefix("docker://")
        .unwrap_or(&a.repository);
    let repository: Reference = name
        .parse()
        .with_context(|| format!("repository name {:?}", a.repository))?;
    anyhow::ensure!(
        repository.digest().is_none(),
        "{}: name a repository, without a digest",
        a.repository
    );
    let side = Side::new(&a.registry, None, None, None);
    let tags = side
        .client()?
        .tags(&repository)
        .await
        .with_context(|| format!("listing tags of {}", repository.name()))?;
    match a.format {
        OutputFormat::Json => print_json(&serde_json::json!({
            "repository": repository.name(),
            "tags": tags,
        })),
        OutputFormat::Text => {
            for t in tags {
                outln!("{}", terminal_safe(&t));
            }
            Ok(())
        }
    }
}
