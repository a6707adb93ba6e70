//! A Bearer token server whose JWTs the real registry verifies.

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;

const SERVICE: &str = "strata-test-registry";
const ISSUER: &str = "strata-testkit";

/// One request the token server answered. Never holds a secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRequest {
    pub method: String,
    pub service: Option<String>,
    pub scopes: Vec<String>,
    /// `Basic` when credentials came in an `Authorization` header.
    pub auth_scheme: Option<String>,
    /// `refresh_token` / `password` for the OAuth2 POST flow.
    pub grant_type: Option<String>,
    pub status: u16,
}

struct State {
    port: u16,
    users: Vec<(String, String)>,
    refresh: Mutex<HashMap<String, String>>,
    ttl: Mutex<u64>,
    log: Mutex<Vec<TokenRequest>>,
    key: PathBuf,
    leaf_der_b64: String,
}

/// The token endpoint; stops when dropped.
pub struct TokenServer {
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
    dir: tempfile::TempDir,
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(crate) fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (Debian package openssl) must be installed");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TokenServer {
    /// Start with these users (name, password). Keys and certificates are made with openssl.
    pub async fn start(users: &[(&str, &str)]) -> TokenServer {
        let dir = tempfile::Builder::new()
            .prefix("strata-tokens-")
            .tempdir()
            .expect("temp dir");
        let d = dir.path();
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "3",
                "-subj",
                "/CN=strata-testkit-ca",
            ],
        );
        openssl(
            d,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "leaf.key",
                "-out",
                "leaf.csr",
                "-subj",
                "/CN=strata-testkit-token",
            ],
        );
        std::fs::write(
            d.join("ext"),
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n",
        )
        .expect("ext file");
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "leaf.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "leaf.pem",
                "-days",
                "3",
                "-extfile",
                "ext",
            ],
        );
        openssl(
            d,
            &[
                "x509", "-in", "leaf.pem", "-outform", "DER", "-out", "leaf.der",
            ],
        );
        let der = std::fs::read(d.join("leaf.der")).expect("leaf.der");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind token server");
        let port = listener.local_addr().expect("addr").port();
        let state = Arc::new(State {
            port,
            users: users
                .iter()
                .map(|(u, p)| (u.to_string(), p.to_string()))
                .collect(),
            refresh: Mutex::new(HashMap::new()),
            ttl: Mutex::new(300),
            log: Mutex::new(Vec::new()),
            key: d.join("leaf.key"),
            leaf_der_b64: base64::engine::general_purpose::STANDARD.encode(der),
        });
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| handle(st.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        TokenServer { state, task, dir }
    }

    /// `http://127.0.0.1:PORT/token`.
    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.state.port)
    }
    pub fn service(&self) -> &'static str {
        SERVICE
    }
    pub fn issuer(&self) -> &'static str {
        ISSUER
    }
    /// The CA certificate the registry trusts (`rootcertbundle`).
    pub fn root_cert(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
    /// Lifetime of tokens issued from now on (`expires_in`).
    pub fn set_ttl(&self, seconds: u64) {
        *self.state.ttl.lock().expect("ttl") = seconds;
    }
    /// Accept `token` as an OAuth2 refresh token (docker's `identitytoken`) for `user`.
    pub fn add_refresh_token(&self, token: &str, user: &str) {
        self.state
            .refresh
            .lock()
            .expect("refresh")
            .insert(token.into(), user.into());
    }
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.state.log.lock().expect("log").clone()
    }
}

fn reply(status: u16, body: serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            serde_json::to_vec(&body).unwrap_or_default(),
        )))
        .expect("response")
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

async fn sign(key: &Path, input: &[u8]) -> Option<Vec<u8>> {
    let mut child = tokio::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let mut stdin = child.stdin.take()?;
    stdin.write_all(input).await.ok()?;
    drop(stdin);
    let out = child.wait_with_output().await.ok()?;
    out.status.success().then_some(out.stdout)
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let params: Vec<(String, String)> = if method == "POST" {
        url::form_urlencoded::parse(&body).into_owned().collect()
    } else {
        url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect()
    };
    let get = |k: &str| params.iter().find(|(x, _)| x == k).map(|(_, v)| v.clone());
    let service = get("service");
    let scopes: Vec<String> = params
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' ').map(str::to_string).collect::<Vec<_>>())
        .filter(|s| !s.is_empty())
        .collect();
    let grant_type = get("grant_type");
    let mut record = TokenRequest {
        method: method.clone(),
        service: service.clone(),
        scopes: scopes.clone(),
        auth_scheme: auth
            .as_deref()
            .map(|a| a.split_whitespace().next().unwrap_or_default().to_string()),
        grant_type: grant_type.clone(),
        status: 0,
    };
    let check_user =
        |user: &str, pass: &str| state.users.iter().any(|(u, p)| u == user && p == pass);
    // Who is asking?
    let subject: Result<Option<String>, &str> = if method == "POST" {
        match grant_type.as_deref() {
            Some("refresh_token") => {
                let t = get("refresh_token").unwrap_or_default();
                match state.refresh.lock().expect("refresh").get(&t) {
                    Some(u) => Ok(Some(u.clone())),
                    None => Err("unknown refresh token"),
                }
            }
            Some("password") => {
                let u = get("username").unwrap_or_default();
                if check_user(&u, &get("password").unwrap_or_default()) {
                    Ok(Some(u))
                } else {
                    Err("bad user name or password")
                }
            }
            _ => Err("unsupported grant_type"),
        }
    } else {
        match auth.as_deref().and_then(|a| a.strip_prefix("Basic ")) {
            Some(b) => {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(b.trim())
                    .ok()
                    .and_then(|d| String::from_utf8(d).ok())
                    .unwrap_or_default();
                let (u, p) = decoded.split_once(':').unwrap_or(("", ""));
                if check_user(u, p) {
                    Ok(Some(u.to_string()))
                } else {
                    Err("bad user name or password")
                }
            }
            None => Ok(None),
        }
    };
    let response = match subject {
        Err(why) => {
            record.status = 401;
            reply(401, serde_json::json!({"details": why}))
        }
        Ok(subject) => {
            // Users get what they ask for; anonymous callers get nothing.
            let access: Vec<serde_json::Value> = if subject.is_some() {
                scopes
                    .iter()
                    .filter_map(|s| {
                        let (kind, rest) = s.split_once(':')?;
                        let (name, actions) = rest.rsplit_once(':')?;
                        Some(serde_json::json!({
                            "type": kind,
                            "name": name,
                            "actions": actions.split(',').collect::<Vec<_>>(),
                        }))
                    })
                    .collect()
            } else {
                Vec::new()
            };
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let ttl = *state.ttl.lock().expect("ttl");
            let header =
                serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [state.leaf_der_b64]});
            let claims = serde_json::json!({
                "iss": ISSUER,
                "sub": subject.clone().unwrap_or_default(),
                "aud": service.clone().unwrap_or_else(|| SERVICE.into()),
                "exp": now + ttl,
                "nbf": now.saturating_sub(10),
                "iat": now.saturating_sub(10),
                "jti": format!("{now}-{}", rand::random::<u64>()),
                "access": access,
            });
            let signing_input = format!(
                "{}.{}",
                b64url(&serde_json::to_vec(&header).unwrap_or_default()),
                b64url(&serde_json::to_vec(&claims).unwrap_or_default())
            );
            match sign(&state.key, signing_input.as_bytes()).await {
                Some(sig) => {
                    let jwt = format!("{signing_input}.{}", b64url(&sig));
                    record.status = 200;
                    reply(
                        200,
                        serde_json::json!({"token": jwt, "access_token": jwt, "expires_in": ttl}),
                    )
                }
                None => {
                    record.status = 500;
                    reply(500, serde_json::json!({"details": "signing failed"}))
                }
            }
        }
    };
    state.log.lock().expect("log").push(record);
    Ok(response)
}
