//! `strata login REGISTRY` and `strata logout REGISTRY`

use std::io::BufRead;

use anyhow::{Context, bail};
use strata_registry::{Credentials, auth};

use crate::cli::{LoginArgs, LogoutArgs, RegistryArgs};
use crate::open::Side;
use crate::terminal;

/// `docker.io` and its aliases are stored under Docker's legacy key, like `docker login`.
fn registry_host(given: &str) -> String {
    let host = given
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let host = host.split('/').next().unwrap_or(host);
    host.to_string()
}

fn auth_file(given: Option<std::path::PathBuf>) -> anyhow::Result<std::path::PathBuf> {
    match given {
        Some(p) => Ok(p),
        None => auth::default_auth_file()
            .context("no auth file location: set $REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR or $HOME, or pass --authfile"),
    }
}

pub async fn login(a: LoginArgs) -> anyhow::Result<()> {
    let registry = registry_host(&a.registry);
    if a.password.is_some() && a.password_stdin {
        bail!("--password and --password-stdin cannot be used together");
    }
    let username = match a.username {
        Some(u) => u,
        None if terminal::can_prompt() => terminal::read_line("Username: ")?,
        None => bail!("--username is required when standard input is not a terminal"),
    };
    let password = if a.password_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        line.trim_end_matches(['\n', '\r']).to_string()
    } else if let Some(p) = a.password {
        p
    } else if terminal::can_prompt() {
        terminal::read_secret("Password: ")?
    } else {
        bail!("no password: pass --password-stdin and pipe it in");
    };
    if username.is_empty() || password.is_empty() {
        bail!("user name and password must not be empty");
    }
    let path = auth_file(a.authfile)?;
    // Check the credentials before storing them, as `docker login` does.
    let side = Side {
        creds: Some(format!("{username}:{password}")),
        tls_verify: a.tls_verify,
        cert_dir: a.cert_dir.clone(),
        ..Side::new(&RegistryArgs::default(), None, None, None)
    };
    side.client()?
        .check_login(&registry)
        .await
        .with_context(|| format!("logging in to {registry} as {username}"))?;
    let credentials = Credentials { username, password };
    auth::login(
        &path,
        &registry,
        &credentials.username,
        &credentials.password,
    )
    .with_context(|| format!("writing {}", path.display()))?;
    eprintln!("Login Succeeded ({} in {})", registry, path.display());
    Ok(())
}

pub async fn logout(a: LogoutArgs) -> anyhow::Result<()> {
    let registry = registry_host(&a.registry);
    let path = auth_file(a.authfile)?;
    if auth::logout(&path, &registry).with_context(|| format!("updating {}", path.display()))? {
        eprintln!(
            "Removed login credentials for {registry} from {}",
            path.display()
        );
        Ok(())
    } else {
        bail!(
            "not logged in to {registry} (no entry in {})",
            path.display()
        )
    }
}
