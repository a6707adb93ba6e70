//! `strata config [IMAGE|HOST]`: the effective configuration and where each setting comes from.

use std::path::PathBuf;

use serde::Serialize;
use serde_json::{Value, json};
use strata_registry::config::{CertDirs, RegistriesConf, Sourced};
use strata_registry::{RegistryOptions, TlsMode};
use strata_spec::Reference;

use crate::cli::{ConfigArgs, OutputFormat};
use crate::config::{self, Settings};
use crate::output;

pub const LONG_ABOUT: &str = "Show the effective configuration and the file each setting comes from.\n\n\
strata reads its own config file ($STRATA_CONFIG, else /etc/strata/config.toml and then\n\
${XDG_CONFIG_HOME:-~/.config}/strata/config.toml) for defaults of flags, and the containers\n\
tools' registries.conf ($CONTAINERS_REGISTRIES_CONF, else ~/.config/containers/registries.conf\n\
or /etc/containers/registries.conf, with their registries.conf.d drop-ins) for insecure and\n\
blocked registries, mirrors, location rewrites, aliases and search registries. CA and client\n\
certificates come from certs.d/HOST[:PORT] (~/.config/containers, /etc/containers, /etc/docker)\n\
or --cert-dir. Flags beat the files; the files beat the built-in defaults.\n\n\
With IMAGE (or a registry HOST[:PORT]), also show where a pull of it goes and how each host\n\
is reached: TLS verified or not, and why.";

/// A setting's value and where it came from (`default` for the built-in value).
#[derive(Serialize)]
struct Shown {
    value: Value,
    origin: String,
}

fn shown<T: Serialize>(s: Option<&Sourced<T>>, default: Value, default_origin: &str) -> Shown {
    match s {
        Some(s) => Shown {
            value: serde_json::to_value(&s.value).unwrap_or(Value::Null),
            origin: s.origin.display().to_string(),
        },
        None => Shown {
            value: default,
            origin: default_origin.to_string(),
        },
    }
}

/// How one host is reached.
#[derive(Serialize)]
struct HostReport {
    host: String,
    tls_verify: bool,
    /// Why TLS is not verified (or why it is forced), when configuration decided.
    because: Option<String>,
    cert_dir: Option<PathBuf>,
    ca_certs: Vec<PathBuf>,
    client_cert: Option<PathBuf>,
}

fn host_report(
    conf: &RegistriesConf,
    options: &RegistryOptions,
    host: &str,
) -> anyhow::Result<HostReport> {
    let certs = options.cert_dirs.host_certs(host)?;
    let because = conf.insecure_host(host).or_else(|| {
        conf.tls_verify
            .get(host)
            .map(|v| format!("tls-verify = true for {host} in {}", v.origin.display()))
    });
    Ok(HostReport {
        host: host.to_string(),
        tls_verify: !strata_registry::tls::host_insecure(options, host),
        because,
        cert_dir: certs.dir,
        ca_certs: certs.ca_certs,
        client_cert: certs.client_cert.map(|c| c.cert),
    })
}

fn looks_like_host(s: &str) -> bool {
    !s.contains('/') && (s.contains('.') || s.contains(':') || s == "localhost")
}

/// The IMAGE/HOST part of the report.
fn target_report(
    conf: &RegistriesConf,
    options: &RegistryOptions,
    target: &str,
) -> anyhow::Result<Value> {
    let target = target.strip_prefix("docker://").unwrap_or(target);
    if looks_like_host(target) {
        let entry = conf.find_name(target);
        return Ok(json!({
            "host": host_report(conf, options, target)?,
            "registry_entry": entry,
        }));
    }
    let reference: Reference = target.parse()?;
    let entry = conf.find(&reference);
    let sources = match conf.pull_sources(&reference) {
        Ok(s) => s,
        Err(e) => {
            return Ok(json!({
                "reference": reference.to_string(),
                "registry_entry": entry,
                "blocked": e.to_string(),
            }));
        }
    };
    let mut pulls = Vec::new();
    for s in &sources {
        pulls.push(json!({
            "reference": s.reference.to_string(),
            "mirror": s.mirror,
            "host": host_report(conf, options, s.reference.registry())?,
        }));
    }
    Ok(json!({
        "reference": reference.to_string(),
        "registry_entry": entry,
        "blocked": Value::Null,
        "pull_sources": pulls,
        "push": host_report(conf, options, reference.registry())?,
    }))
}

fn report(a: &ConfigArgs) -> anyhow::Result<Value> {
    let settings: &Settings = config::settings();
    let conf = config::registries()?;
    let mut options = RegistryOptions {
        tls: TlsMode::Verify,
        registries: conf.clone(),
        ..RegistryOptions::default()
    };
    if let Some(d) = &a.cert_dir {
        options.cert_dirs = CertDirs::Flat(d.clone());
    }
    let store_default = strata_store::default_store_path()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let mut out = json!({
        "files": {
            "strata": settings.files,
            "registries_conf": conf.files,
        },
        "settings": {
            "retry_times": shown(settings.retry_times.as_ref(), json!(config::DEFAULT_RETRY_TIMES), "default"),
            "jobs": shown(settings.jobs.as_ref(), json!(strata_copy::DEFAULT_CONCURRENCY), "default (build: one per CPU)"),
            "compression": shown(settings.compression.as_ref(), json!("gzip"), "default"),
            "platforms": shown(settings.platforms.as_ref(), json!([]), "default (the host's)"),
            "store": shown(settings.store.as_ref(), json!(store_default), "default ($XDG_DATA_HOME/strata or ~/.local/share/strata)"),
            "tls_verify": settings.tls_verify,
        },
        "registries_conf": {
            "unqualified_search_registries": conf.unqualified_search_registries,
            "short_name_mode": conf.short_name_mode,
            "aliases": conf.aliases,
            "registries": conf.registries,
        },
    });
    if let Some(t) = &a.image {
        out["image"] = target_report(&conf, &options, t)?;
    }
    Ok(out)
}

fn origin_of(v: &Value) -> String {
    v["origin"].as_str().unwrap_or("default").to_string()
}

fn print_host(h: &Value, indent: &str) {
    let verify = h["tls_verify"].as_bool().unwrap_or(true);
    outln!(
        "{indent}{}: TLS {}{}",
        h["host"].as_str().unwrap_or_default(),
        if verify {
            "verified"
        } else {
            "not verified, plain HTTP allowed"
        },
        h["because"]
            .as_str()
            .map(|b| format!(" ({b})"))
            .unwrap_or_default()
    );
    if let Some(d) = h["cert_dir"].as_str() {
        let cas: Vec<&str> = h["ca_certs"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        outln!(
            "{indent}  certificates from {d}: CA {}; client certificate {}",
            if cas.is_empty() {
                "none".to_string()
            } else {
                cas.join(", ")
            },
            h["client_cert"].as_str().unwrap_or("none")
        );
    }
}

fn print_text(r: &Value) {
    let list = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    let joined = |v: &Value| {
        let items = list(v);
        if items.is_empty() {
            "none".to_string()
        } else {
            items.join(", ")
        }
    };
    outln!("strata config files: {}", joined(&r["files"]["strata"]));
    outln!(
        "registries.conf files: {}",
        joined(&r["files"]["registries_conf"])
    );
    outln!("settings:");
    for key in ["retry_times", "jobs", "compression", "platforms", "store"] {
        let s = &r["settings"][key];
        let value = match &s["value"] {
            Value::Array(a) if a.is_empty() => "-".to_string(),
            Value::Array(a) => a
                .iter()
                .map(|v| v.as_str().unwrap_or_default())
                .collect::<Vec<_>>()
                .join(","),
            Value::String(v) => v.clone(),
            v => v.to_string(),
        };
        outln!(
            "  {:<12} {value:<24} {}",
            key.replace('_', "-"),
            origin_of(s)
        );
    }
    if let Some(map) = r["settings"]["tls_verify"].as_object() {
        for (host, v) in map {
            outln!("  tls-verify   {host} = {}   {}", v["value"], origin_of(v));
        }
    }
    let rc = &r["registries_conf"];
    let search = &rc["unqualified_search_registries"];
    outln!(
        "unqualified-search-registries: {}   {}",
        joined(&search["value"]),
        origin_of(search)
    );
    let mode = &rc["short_name_mode"];
    outln!(
        "short-name-mode: {}   {}",
        mode["value"].as_str().unwrap_or("permissive"),
        origin_of(mode)
    );
    outln!(
        "aliases: {} (listed by --format json)",
        rc["aliases"].as_object().map(|m| m.len()).unwrap_or(0)
    );
    let empty = Vec::new();
    let registries = rc["registries"].as_array().unwrap_or(&empty);
    outln!("[[registry]] entries: {}", registries.len());
    for e in registries {
        let mut flags = Vec::new();
        if e["insecure"] == true {
            flags.push("insecure".to_string());
        }
        if e["blocked"] == true {
            flags.push("blocked".to_string());
        }
        if e["mirror_by_digest_only"] == true {
            flags.push("mirror-by-digest-only".to_string());
        }
        for m in e["mirrors"].as_array().unwrap_or(&empty) {
            flags.push(format!(
                "mirror {}{}{}",
                m["location"].as_str().unwrap_or_default(),
                if m["insecure"] == true {
                    " (insecure)"
                } else {
                    ""
                },
                match m["pull_from_mirror"].as_str() {
                    Some("all") | None => String::new(),
                    Some(p) => format!(" ({p})"),
                }
            ));
        }
        outln!(
            "  {} -> {}{}   {}",
            e["prefix"].as_str().unwrap_or_default(),
            e["location"]
                .as_str()
                .filter(|l| !l.is_empty())
                .unwrap_or("(as named)"),
            if flags.is_empty() {
                String::new()
            } else {
                format!(" [{}]", flags.join(", "))
            },
            e["origin"].as_str().unwrap_or_default()
        );
    }
    let image = &r["image"];
    if image.is_null() {
        return;
    }
    if let Some(h) = image.get("host") {
        outln!("registry host:");
        print_host(h, "  ");
        return;
    }
    outln!("image {}:", image["reference"].as_str().unwrap_or_default());
    if let Some(b) = image["blocked"].as_str() {
        outln!("  pull refused: {b}");
        return;
    }
    outln!("  pulls try, in order:");
    for (i, p) in image["pull_sources"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .enumerate()
    {
        outln!(
            "  {}. {}{}",
            i + 1,
            p["reference"].as_str().unwrap_or_default(),
            if p["mirror"] == true { " (mirror)" } else { "" }
        );
        print_host(&p["host"], "     ");
    }
    outln!("  pushes go to:");
    print_host(&image["push"], "     ");
}

pub async fn run(a: ConfigArgs) -> anyhow::Result<()> {
    let r = report(&a)?;
    match a.format {
        OutputFormat::Json => output::print_json(&r)?,
        OutputFormat::Text => print_text(&r),
    }
    Ok(())
}
