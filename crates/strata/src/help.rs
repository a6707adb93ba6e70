//! The `Examples:` sections at the end of the main commands' `--help` (and of their man pages).

pub const BUILD: &str = "\
Examples:
  # Build ./Containerfile (or ./Dockerfile) into the local store
  strata build -t localhost/app:1 .
  # Build into an OCI layout and run it with podman (no archive in between)
  strata build -o oci:/tmp/app:1 . && podman run --rm oci:/tmp/app:1
  # Another Containerfile, a build argument, the result in an OCI layout directory
  strata build -f Containerfile.prod --build-arg VERSION=2 -o oci:out:app .
  # One index for two platforms, pushed to a registry
  strata build --platform linux/amd64,linux/arm64 -t registry.example.com/app:1 --push .
  # Linux from ./Dockerfile, each Windows release from ./Dockerfile.windows on its own base
  strata build --platform linux/amd64,windows/amd64:10.0.17763,windows/amd64:10.0.20348 \\
      -f Dockerfile -f windows=Dockerfile.windows \\
      --build-arg windows/amd64:10.0.17763=WINBASE=1809 \\
      --build-arg windows/amd64:10.0.20348=WINBASE=ltsc2022 -t registry.example.com/app:1 --push .";

pub const COPY: &str = "\
Examples:
  # This host's image of a registry index into an OCI layout directory
  strata copy docker://docker.io/library/alpine:3.20 oci:alpine:3.20
  # Every platform of an index, registry to registry
  strata copy --all docker://quay.io/org/app:1 docker://registry.example.com/app:1
  # From the local store to a plain-HTTP registry on this machine
  strata copy --tls-verify=false localhost/app:1 docker://localhost:5000/app:1
  # Into a tar that `podman load` and `docker load` read
  strata copy oci:alpine:3.20 docker-archive:alpine.tar:alpine:3.20";

pub const INSPECT: &str = "\
Examples:
  strata inspect docker://docker.io/library/alpine:3.20
  strata inspect --platform linux/arm64 --format json docker://docker.io/library/alpine:3.20
  strata inspect --config oci:out:app | jq .config.Env
  strata inspect --raw localhost/app:1";

pub const MANIFEST: &str = "\
Examples:
  # A list of two single-platform images (platforms are read from their configs)
  strata manifest create registry.example.com/app:1 \\
      docker://registry.example.com/app:1-amd64 docker://registry.example.com/app:1-arm64
  strata manifest annotate registry.example.com/app:1 linux/arm64 --variant v8
  strata manifest inspect registry.example.com/app:1
  # Push the list and every image in it
  strata manifest push registry.example.com/app:1";

pub const UNPACK: &str = "\
Examples:
  # A runtime bundle that runc runs
  strata unpack oci:alpine:3.20 bundle
  runc run -b bundle ctr1
  # The arm64 image of an index, unprivileged (as umoci --rootless)
  strata unpack --rootless --platform linux/arm64 docker://docker.io/library/alpine:3.20 alpine-arm64";

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use crate::cli::Cli;

    /// Every argument of every command, with the command path it belongs to.
    fn arguments(command: &clap::Command, path: &str, out: &mut Vec<(String, String)>) {
        for argument in command.get_arguments() {
            let has_help = argument.get_help().is_some() || argument.get_long_help().is_some();
            if !has_help {
                out.push((path.to_owned(), argument.get_id().to_string()));
            }
        }
        for sub in command.get_subcommands() {
            arguments(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }

    /// A flag without a help line is invisible in `--help`, the man pages and the shell
    /// completions: every new flag must say what it does.
    #[test]
    fn every_argument_of_every_command_has_help() {
        let mut command = Cli::command();
        command.build();
        let mut missing = Vec::new();
        arguments(&command, "strata", &mut missing);
        assert!(
            missing.is_empty(),
            "arguments without a help line (add a /// doc comment):\n{}",
            missing
                .iter()
                .map(|(path, id)| format!("  {path}: {id}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    /// Every subcommand has an about line (it is the man page's NAME and the completion's
    /// description).
    #[test]
    fn every_command_has_an_about_line() {
        fn walk(command: &clap::Command, path: &str, out: &mut Vec<String>) {
            for sub in command.get_subcommands() {
                let sub_path = format!("{path} {}", sub.get_name());
                if sub.get_about().is_none() {
                    out.push(sub_path.clone());
                }
                walk(sub, &sub_path, out);
            }
        }
        let mut command = Cli::command();
        command.build();
        let mut missing = Vec::new();
        walk(&command, "strata", &mut missing);
        assert!(missing.is_empty(), "commands without about: {missing:?}");
    }
}
