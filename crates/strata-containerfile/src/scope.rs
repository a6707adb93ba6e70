//! Docker's ARG/ENV scoping (see [`Scope`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::{ArgDecl, Containerfile, ExpandError, Instruction, InstructionKind, expand};

/// Build args Docker accepts without an `ARG` declaration: passed to RUN steps, never
/// expanded in the Containerfile's words, never recorded in history.
pub const PROXY_ARGS: [&str; 10] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// Args BuildKit defines itself (from the build and target platforms).
pub const PREDEFINED_ARGS: [&str; 8] = [
    "TARGETPLATFORM",
    "TARGETOS",
    "TARGETARCH",
    "TARGETVARIANT",
    "BUILDPLATFORM",
    "BUILDOS",
    "BUILDARCH",
    "BUILDVARIANT",
];

/// ARG/ENV scope of one stage, with Docker's rules:
/// - global ARGs (before the first FROM) are visible in FROM lines only; inside a stage a
///   name must be redeclared (`ARG NAME`, no default → the global value);
/// - a `--build-arg` overrides a declared ARG's default (the build arg's value is taken
///   literally, a default is expanded in the scope so far); undeclared build args are not
///   visible (but are reported by [`Scope::unused_build_args`]);
/// - ENV shadows ARG of the same name; the base image's ENV starts the stage's env;
/// - predefined args (`TARGETPLATFORM`, `TARGETOS`, `TARGETARCH`, `TARGETVARIANT`,
///   `BUILDPLATFORM`, `BUILDOS`, `BUILDARCH`, `BUILDVARIANT`) are visible in the global scope
///   and must be declared inside a stage, like any ARG; proxy args (`HTTP_PROXY`, …) are
///   accepted as build args without a declaration, reach RUN steps through
///   [`Scope::run_env`], and are never recorded in history.
///
/// ```
/// use std::collections::BTreeMap;
/// use strata_containerfile::{parse, Scope};
///
/// let file = parse("ARG BASE=alpine\nARG V=1\nFROM $BASE\nARG V\nENV PATH=/x:$V\n").unwrap();
/// let build_args = BTreeMap::from([("V".to_string(), "2".to_string())]);
/// let global = Scope::global(&file.global_args, &build_args, &BTreeMap::new(), '\\').unwrap();
/// assert_eq!(global.expand("$BASE", '\\').unwrap(), "alpine");
/// let mut stage = Scope::stage(&global, &["PATH=/bin".to_string()]);
/// assert_eq!(stage.lookup("V"), None); // not declared in the stage yet
/// ```
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// Declared ARGs that have a value.
    pub(crate) args: BTreeMap<String, String>,
    /// ENV in image-config order, keys unique.
    pub(crate) env: Vec<(String, String)>,
    /// Position of each key in `env`: set and look up in constant time, so a file of
    /// 100,000 ENV lines is not quadratic.
    pub(crate) env_index: HashMap<String, usize>,
    /// Proxy build args (undeclared; for RUN only).
    pub(crate) proxy: BTreeMap<String, String>,
}

impl Scope {
    /// The scope FROM lines are expanded in: predefined args, then the global ARGs in order
    /// (build arg > expanded default > predefined value).
    pub fn global(
        global_args: &[Instruction],
        build_args: &BTreeMap<String, String>,
        predefined: &BTreeMap<String, String>,
        escape: char,
    ) -> Result<Scope, ExpandError> {
        let mut scope = Scope {
            args: predefined.clone(),
            env: Vec::new(),
            env_index: HashMap::new(),
            proxy: build_args
                .iter()
                .filter(|(k, _)| PROXY_ARGS.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        for instruction in global_args {
            if let InstructionKind::Arg(decls) = &instruction.kind {
                for decl in decls {
                    let value = match (build_args.get(&decl.name), &decl.default) {
                        (Some(value), _) => Some(value.clone()),
                        (None, Some(default)) => Some(scope.expand(default, escape)?),
                        (None, None) => None,
                    };
                    if let Some(value) = value {
                        scope.args.insert(decl.name.clone(), value);
                    }
                }
            }
        }
        Ok(scope)
    }

    /// A new stage's scope: no ARGs declared yet, ENV from the base image config
    /// (`KEY=VALUE` strings).
    pub fn stage(global: &Scope, base_env: &[String]) -> Scope {
        let mut scope = Scope {
            args: BTreeMap::new(),
            env: Vec::with_capacity(base_env.len()),
            env_index: HashMap::with_capacity(base_env.len()),
            proxy: global.proxy.clone(),
        };
        for entry in base_env {
            let (key, value) = entry.split_once('=').unwrap_or((entry.as_str(), ""));
            scope.set_env(key, value);
        }
        scope
    }

    /// Apply an `ARG` declaration: build arg > default (expanded here) > global value. A
    /// declaration with none of these leaves the name without a value (unset).
    pub fn declare_arg(
        &mut self,
        decl: &ArgDecl,
        global: &Scope,
        build_args: &BTreeMap<String, String>,
        escape: char,
    ) -> Result<(), ExpandError> {
        let value = match (build_args.get(&decl.name), &decl.default) {
            (Some(value), _) => Some(value.clone()),
            (None, Some(default)) => Some(self.expand(default, escape)?),
            (None, None) => global.args.get(&decl.name).cloned(),
        };
        if let Some(value) = value {
            self.args.insert(decl.name.clone(), value);
        }
        Ok(())
    }

    /// Apply an `ENV` pair (value already expanded). A key set again keeps its place.
    /// Returns that place (the index in [`Scope::env`]) and the value replaced.
    pub fn set_env(&mut self, key: &str, value: &str) -> (usize, Option<String>) {
        match self.env_index.get(key) {
            Some(&at) => {
                let old = std::mem::replace(&mut self.env[at].1, value.to_string());
                (at, Some(old))
            }
            None => {
                let at = self.env.len();
                self.env.push((key.to_string(), value.to_string()));
                self.env_index.insert(key.to_string(), at);
                (at, None)
            }
        }
    }

    /// `KEY=VALUE` of the ENV entry at `at` (an index [`Scope::set_env`] returned).
    pub fn env_entry(&self, at: usize) -> Option<String> {
        self.env.get(at).map(|(k, v)| format!("{k}={v}"))
    }

    /// Number of ENV entries.
    pub fn env_len(&self) -> usize {
        self.env.len()
    }

    /// The value a `$NAME` has here (ENV first, then ARG).
    pub fn lookup(&self, name: &str) -> Option<String> {
        self.env_index
            .get(name)
            .map(|&at| self.env[at].1.clone())
            .or_else(|| self.args.get(name).cloned())
    }

    /// Expand a word in this scope.
    pub fn expand(&self, word: &str, escape: char) -> Result<String, ExpandError> {
        expand(word, &|n| self.lookup(n), escape)
    }

    /// Expand and split a list of words in this scope.
    pub fn expand_words(&self, text: &str, escape: char) -> Result<Vec<String>, ExpandError> {
        crate::expand_words(text, &|n| self.lookup(n), escape)
    }

    /// The image config env (`KEY=VALUE`, in order).
    pub fn env(&self) -> Vec<String> {
        self.env.iter().map(|(k, v)| format!("{k}={v}")).collect()
    }

    /// The environment a RUN step sees: ENV, then declared ARGs not shadowed by ENV, then
    /// proxy build args neither declared nor shadowed.
    pub fn run_env(&self) -> Vec<(String, String)> {
        let mut out = self.env.clone();
        let shadowed: BTreeSet<&str> = self.env.iter().map(|(k, _)| k.as_str()).collect();
        for (k, v) in &self.args {
            if !shadowed.contains(k.as_str()) {
                out.push((k.clone(), v.clone()));
            }
        }
        for (k, v) in &self.proxy {
            if !shadowed.contains(k.as_str()) && !self.args.contains_key(k) {
                out.push((k.clone(), v.clone()));
            }
        }
        out
    }

    /// Declared ARG values (for cache keys and RUN history). Proxy args are not included.
    pub fn args(&self) -> &BTreeMap<String, String> {
        &self.args
    }

    /// Build args that no `ARG` in the file declares (Docker warns "build-args … were not
    /// consumed"). Proxy and predefined args never count as unused.
    pub fn unused_build_args(
        file: &Containerfile,
        build_args: &BTreeMap<String, String>,
    ) -> Vec<String> {
        let mut declared = BTreeSet::new();
        let all = file
            .global_args
            .iter()
            .chain(file.stages.iter().flat_map(|s| s.instructions.iter()));
        for instruction in all {
            if let InstructionKind::Arg(decls) = &instruction.kind {
                declared.extend(decls.iter().map(|d| d.name.as_str()));
            }
        }
        build_args
            .keys()
            .filter(|k| {
                !declared.contains(k.as_str())
                    && !PROXY_ARGS.contains(&k.as_str())
                    && !PREDEFINED_ARGS.contains(&k.as_str())
            })
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn predefined() -> BTreeMap<String, String> {
        map(&[
            ("TARGETPLATFORM", "linux/arm64"),
            ("TARGETOS", "linux"),
            ("TARGETARCH", "arm64"),
            ("BUILDPLATFORM", "linux/amd64"),
        ])
    }

    /// Run a stage's ARG/ENV instructions through a scope, the way the build engine does.
    fn stage_scope(text: &str, build_args: &[(&str, &str)], base_env: &[&str]) -> Scope {
        let file = parse(text).unwrap();
        let build_args = map(build_args);
        let global = Scope::global(&file.global_args, &build_args, &predefined(), '\\').unwrap();
        let base_env: Vec<String> = base_env.iter().map(|s| s.to_string()).collect();
        let mut scope = Scope::stage(&global, &base_env);
        for instruction in &file.stages[0].instructions {
            match &instruction.kind {
                InstructionKind::Arg(decls) => {
                    for decl in decls {
                        scope.declare_arg(decl, &global, &build_args, '\\').unwrap();
                    }
                }
                InstructionKind::Env(pairs) => {
                    for pair in pairs {
                        let key = scope.expand(&pair.key, '\\').unwrap();
                        let value = scope.expand(&pair.value, '\\').unwrap();
                        scope.set_env(&key, &value);
                    }
                }
                _ => {}
            }
        }
        scope
    }

    #[test]
    fn global_scope_for_from_lines() {
        let file = parse(
            "ARG REGISTRY=docker.io\nARG IMAGE=${REGISTRY}/library/alpine\nARG TAG\nARG TARGETARCH\nARG UNSET\nFROM $IMAGE:${TAG:-latest}\n",
        )
        .unwrap();
        let build_args = map(&[("TAG", "3.20"), ("UNDECLARED", "x")]);
        let global = Scope::global(&file.global_args, &build_args, &predefined(), '\\').unwrap();
        let from = &file.stages[0].from.image;
        assert_eq!(
            global.expand(from, '\\').unwrap(),
            "docker.io/library/alpine:3.20"
        );
        assert_eq!(global.lookup("TARGETARCH").as_deref(), Some("arm64"));
        assert_eq!(global.lookup("TARGETOS").as_deref(), Some("linux"));
        assert_eq!(global.lookup("UNDECLARED"), None);
        assert_eq!(global.lookup("UNSET"), None);
        // A build arg overrides the default, and later defaults see it.
        let build_args = map(&[("REGISTRY", "quay.io")]);
        let global = Scope::global(&file.global_args, &build_args, &predefined(), '\\').unwrap();
        assert_eq!(
            global.lookup("IMAGE").as_deref(),
            Some("quay.io/library/alpine")
        );
    }

    #[test]
    fn build_arg_values_are_taken_literally() {
        let file = parse("ARG A\nFROM x\n").unwrap();
        let build_args = map(&[("A", "$HOME '")]);
        let global = Scope::global(&file.global_args, &build_args, &BTreeMap::new(), '\\').unwrap();
        assert_eq!(global.lookup("A").as_deref(), Some("$HOME '"));
    }

    #[test]
    fn global_args_must_be_redeclared_in_a_stage() {
        let text = "ARG V=1\nARG W=2\nFROM x\nARG V\nARG TARGETARCH\n";
        let scope = stage_scope(text, &[], &[]);
        assert_eq!(scope.lookup("V").as_deref(), Some("1"));
        assert_eq!(scope.lookup("W"), None, "not redeclared");
        assert_eq!(scope.lookup("TARGETARCH").as_deref(), Some("arm64"));
        assert_eq!(scope.lookup("TARGETOS"), None, "predefined, not declared");
        assert_eq!(scope.args(), &map(&[("TARGETARCH", "arm64"), ("V", "1")]));
    }

    #[test]
    fn arg_value_precedence() {
        // (stage body, build args, expected V)
        type Pairs = &'static [(&'static str, &'static str)];
        let cases: &[(&str, Pairs, Option<&str>)] = &[
            ("ARG V", &[], Some("global")),
            ("ARG V", &[("V", "cli")], Some("cli")),
            ("ARG V=stage", &[], Some("stage")),
            ("ARG V=stage", &[("V", "cli")], Some("cli")),
            ("ARG V=\"a b\"", &[], Some("a b")),
            ("ARG U", &[], None),
            ("ARG U", &[("U", "")], Some("")),
            ("ENV E=env\nARG V=${E}-x", &[], Some("env-x")),
            // BuildKit: a bare redeclaration takes the global value again.
            ("ARG V=1\nARG V", &[], Some("global")),
            ("ARG U=1\nARG U", &[], Some("1")),
        ];
        for (body, build_args, expected) in cases {
            let text = format!("ARG V=global\nFROM x\n{body}\n");
            let scope = stage_scope(&text, build_args, &[]);
            // `U` has no global declaration; `V` has one.
            let name = if body.contains("ARG U") { "U" } else { "V" };
            assert_eq!(
                scope.lookup(name).as_deref(),
                *expected,
                "{body:?} {build_args:?}"
            );
        }
    }

    #[test]
    fn env_shadows_arg() {
        let scope = stage_scope("FROM x\nARG V=arg\nENV V=env\nARG W=w\n", &[], &[]);
        assert_eq!(scope.lookup("V").as_deref(), Some("env"));
        assert_eq!(scope.expand("$V-$W", '\\').unwrap(), "env-w");
        // Declaring the ARG after the ENV does not change what `$V` is.
        let scope = stage_scope("FROM x\nENV V=env\nARG V=arg\n", &[("V", "cli")], &[]);
        assert_eq!(scope.lookup("V").as_deref(), Some("env"));
        assert_eq!(
            scope.run_env(),
            vec![("V".to_string(), "env".to_string())],
            "the shadowed ARG does not reach RUN"
        );
    }

    #[test]
    fn base_image_env_starts_the_stage() {
        let scope = stage_scope(
            "FROM x\nENV PATH=/opt/bin:$PATH LANG=C.UTF-8\nENV HOME=/root\n",
            &[],
            &["PATH=/usr/bin:/bin", "HOME=/home/app", "EMPTY"],
        );
        assert_eq!(
            scope.env(),
            vec![
                "PATH=/opt/bin:/usr/bin:/bin",
                "HOME=/root",
                "EMPTY=",
                "LANG=C.UTF-8"
            ]
        );
    }

    #[test]
    fn run_env_and_proxy_args() {
        let scope = stage_scope(
            "FROM x\nARG A=1\nENV E=2\nARG https_proxy\n",
            &[
                ("HTTP_PROXY", "http://proxy:3128"),
                ("https_proxy", "http://declared:3128"),
                ("NOT_DECLARED", "x"),
            ],
            &["BASE=0"],
        );
        let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            scope.run_env(),
            pairs(&[
                ("BASE", "0"),
                ("E", "2"),
                ("A", "1"),
                ("https_proxy", "http://declared:3128"),
                ("HTTP_PROXY", "http://proxy:3128"),
            ])
        );
        // Undeclared proxy args reach RUN but are not Containerfile variables or ARGs.
        assert_eq!(scope.lookup("HTTP_PROXY"), None);
        assert!(!scope.args().contains_key("HTTP_PROXY"));
        assert_eq!(scope.lookup("NOT_DECLARED"), None);
        assert_eq!(
            scope.env(),
            vec!["BASE=0", "E=2"],
            "ARGs never reach the image env"
        );
    }

    #[test]
    fn unused_build_args_are_reported() {
        let file = parse("ARG A\nFROM x\nARG B=1\nFROM y\nARG C D\n").unwrap();
        let build_args = map(&[
            ("A", "1"),
            ("B", "2"),
            ("D", "3"),
            ("TYPO", "4"),
            ("HTTP_PROXY", "p"),
            ("TARGETARCH", "amd64"),
        ]);
        assert_eq!(
            Scope::unused_build_args(&file, &build_args),
            vec!["TYPO".to_string()]
        );
    }

    #[test]
    fn expansion_errors_surface() {
        let file = parse("ARG A=\"${B:?B is required}\"\nFROM x\n").unwrap();
        let e =
            Scope::global(&file.global_args, &BTreeMap::new(), &BTreeMap::new(), '\\').unwrap_err();
        assert_eq!(e.message, "B: B is required");
        let ok = Scope::global(
            &file.global_args,
            &map(&[("A", "given")]),
            &BTreeMap::new(),
            '\\',
        );
        assert_eq!(ok.unwrap().lookup("A").as_deref(), Some("given"));
    }
}
